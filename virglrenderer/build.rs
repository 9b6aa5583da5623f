//! Re-exports the libvirglrenderer version cfgs (`virgl_1_0`, ...) found by `virglrenderer-sys`.

fn main() {
    match build_support::reexport_version_cfgs("virglrenderer") {
        Ok(version) => println!("cargo:rustc-env=VIRGLRENDERER_LIBRARY_VERSION={version}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
