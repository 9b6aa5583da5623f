//! Generates the libvirglrenderer bindings from the installed header (see `build-support`).

use build_support::{build_sys, LibrarySpec, VersionCfg};

/// How libvirglrenderer is found, bound and versioned.
const SPEC: LibrarySpec = LibrarySpec {
    pkg_config_name: "virglrenderer",
    min_version: "0.10.0",
    packages: &[
        ("Debian/Ubuntu", "libvirglrenderer-dev"),
        ("Fedora", "virglrenderer-devel"),
    ],
    header: "virgl/virglrenderer.h",
    allowlist: &["virgl_.*", "VIRGL_.*"],
    // `struct iovec` comes from libc (re-exported by the crate); the deprecated va_list debug
    // callback would drag glibc's va_list internals in.
    blocklist: &[
        "iovec",
        "virgl_box",
        "virgl_set_debug_callback",
        "virgl_debug_callback_type",
        "va_list",
        "__builtin_va_list",
        "__va_list_tag",
    ],
    defines: &["VIRGL_RENDERER_UNSTABLE_APIS"],
    version_cfgs: &[
        VersionCfg {
            name: "virgl_1_0",
            version: (1, 0, 0),
        },
        VersionCfg {
            name: "virgl_1_1",
            version: (1, 1, 0),
        },
    ],
};

fn main() {
    build_sys(&SPEC);
}
