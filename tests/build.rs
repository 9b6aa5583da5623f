//! Sets the cfg `gfxstream_found` when `gfxstream-sys` found libgfxstream_backend (published as
//! `DEP_GFXSTREAM_BACKEND_FOUND`): `tests/gfxstream.rs` then runs against a daemon built with
//! `--features gfxstream`; otherwise its tests are compiled as ignored (reported as skipped).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(gfxstream_found)");
    println!("cargo:rerun-if-env-changed=DEP_GFXSTREAM_BACKEND_FOUND");
    if std::env::var("DEP_GFXSTREAM_BACKEND_FOUND").as_deref() == Ok("1") {
        println!("cargo::rustc-cfg=gfxstream_found");
    }
}
