//! Generates the libgfxstream_backend bindings from the installed headers (see `build-support`),
//! or builds an empty shell when the library is not installed (see the crate docs).

use std::env;
use std::path::PathBuf;

use build_support::{
    emit_version_cfgs, generate_bindings_with_args, pkg_config_variable, probe, Error, LibrarySpec,
    Probe,
};

/// How libgfxstream_backend is found and bound.
///
/// The unstable header includes the stable one, so binding it gives both. `struct iovec` comes
/// from libc (re-exported by the crate).
const SPEC: LibrarySpec = LibrarySpec {
    pkg_config_name: "gfxstream_backend",
    min_version: "0.1.2",
    // No distribution this project targets packages it: see `BUILD_HINT`.
    packages: &[],
    header: "virtio-gpu-gfxstream-renderer-unstable.h",
    allowlist: &[
        "stream_renderer_.*",
        "gfxstream_backend_.*",
        "STREAM_.*",
        "RendererFlags",
    ],
    blocklist: &["iovec"],
    defines: &["GFXSTREAM_UNSTABLE=1"],
    // The library's version has been 0.1.2 since 2023 although its API changed: no version cfgs.
    // The API is detected from the header instead (see `API_MARKER`).
    version_cfgs: &[],
};

/// A symbol that only the API this crate binds has (added Dec 2024, together with the
/// renumbered `STREAM_HANDLE_TYPE_*` constants). Headers without it are the 0.1.2-era API.
const API_MARKER: &str = "stream_renderer_import_resource";

/// How to get the library, printed when it is missing.
const BUILD_HINT: &str = "libgfxstream_backend is not packaged: build google/gfxstream with \
    `meson setup -Dgfxstream-build=host`, install it, and add its `lib/<arch>/pkgconfig` directory \
    to PKG_CONFIG_PATH (and its lib directory to LD_LIBRARY_PATH to run)";

/// The cfg set for this crate (and re-exported by the `gfxstream` crate) when bindings exist.
const FOUND_CFG: &str = "gfxstream_found";

fn main() {
    println!("cargo::rustc-check-cfg=cfg({FOUND_CFG})");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let required = env::var_os("CARGO_FEATURE_REQUIRED").is_some();
    match build() {
        Ok(probe) => {
            println!("cargo::rustc-cfg={FOUND_CFG}");
            println!("cargo::metadata=FOUND=1");
            emit_version_cfgs(&SPEC, &probe);
        }
        Err(e) => {
            // cargo shows only the first line of a warning: keep it on one, and short.
            let e = match e {
                Error::LibraryNotFound { .. } => {
                    "pkg-config did not find `gfxstream_backend`".to_string()
                }
                other => other
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            if required {
                eprintln!("error: {BUILD_HINT}. {e}");
                println!("cargo:warning=gfxstream-sys (feature `required`): {BUILD_HINT}. {e}");
                std::process::exit(1);
            }
            // Not an error: the workspace must build where the library is not installed. The
            // warning is what a CI log shows; the gfxstream tests are reported as skipped.
            println!(
                "cargo:warning=gfxstream-sys: building WITHOUT gfxstream (empty shell; its tests \
                 are skipped). {BUILD_HINT}. {e}"
            );
            println!("cargo::metadata=FOUND=0");
        }
    }
}

/// Probes the library and writes `$OUT_DIR/bindings.rs`.
fn build() -> Result<Probe, Error> {
    let probe = probe(&SPEC)?;
    // Quirk 1: the unstable header includes "gfxstream/virtio-gpu-gfxstream-renderer.h" but the
    // .pc file only adds `-I${includedir}/gfxstream`: add `${includedir}` itself.
    let includedir = pkg_config_variable(&SPEC, "includedir")?;
    // Quirk 2: the unstable header uses `bool` without including <stdbool.h> (C mode).
    let args = vec![
        format!("-I{includedir}"),
        "-include".to_string(),
        "stdbool.h".to_string(),
    ];
    let header = build_support::find_header(&SPEC, &probe)?;
    let text = std::fs::read_to_string(&header).map_err(Error::Io)?;
    let stable = header.with_file_name("virtio-gpu-gfxstream-renderer.h");
    let stable_text = std::fs::read_to_string(&stable).unwrap_or_default();
    if !text.contains(API_MARKER) || !stable_text.contains("STREAM_HANDLE_TYPE_MEM_SHM") {
        return Err(Error::Bindgen(format!(
            "{} is the 0.1.2-era API (no `{API_MARKER}`, old handle-type numbering); \
             these bindings need a google/gfxstream tree from 2025 or later",
            header.display()
        )));
    }
    println!("cargo:rerun-if-changed={}", stable.display());
    let out_dir = env::var_os("OUT_DIR").ok_or(Error::MissingEnv("OUT_DIR"))?;
    let out = PathBuf::from(out_dir).join("bindings.rs");
    generate_bindings_with_args(&SPEC, &probe, &out, &args)?;
    Ok(probe)
}
