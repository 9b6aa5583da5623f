//! Shared build-script code for the `-sys` crates of this workspace.
//!
//! A `-sys` crate describes the system library it binds in a [`LibrarySpec`] and calls
//! [`build_sys`] from its `build.rs`. That:
//!
//! 1. probes the library with pkg-config ([`probe`]); when it is missing the build fails with a
//!    message that names the distribution packages to install (the spec lists them);
//! 2. generates Rust bindings from the *installed* header with bindgen ([`generate_bindings`]),
//!    restricted by an allowlist to the library's own functions, types and constants (no glibc
//!    macros or types leak into the bindings), so they always match the library being linked;
//! 3. derives version cfgs from the installed library's version ([`emit_version_cfgs`]): for every
//!    [`VersionCfg`] threshold that the installed version reaches, `cargo:rustc-cfg=<name>` is
//!    emitted (each name is declared with `cargo::rustc-check-cfg`), and the list is published to
//!    dependents as `cargo:metadata` (`DEP_<LINKS>_CFGS`, `DEP_<LINKS>_VERSION`).
//!
//! A safe crate on top of the `-sys` crate calls [`reexport_version_cfgs`] from its own
//! `build.rs`, so that its code can be compiled with `#[cfg(virgl_1_0)]` and similar: APIs newer
//! than the installed library are compiled out instead of failing at link time.
//!
//! ```no_run
//! // build.rs of a -sys crate
//! use build_support::{build_sys, LibrarySpec, VersionCfg};
//!
//! const SPEC: LibrarySpec = LibrarySpec {
//!     pkg_config_name: "virglrenderer",
//!     min_version: "0.10.0",
//!     packages: &[("Debian/Ubuntu", "libvirglrenderer-dev"), ("Fedora", "virglrenderer-devel")],
//!     header: "virgl/virglrenderer.h",
//!     allowlist: &["virgl_.*", "VIRGL_.*"],
//!     blocklist: &[],
//!     defines: &["VIRGL_RENDERER_UNSTABLE_APIS"],
//!     version_cfgs: &[VersionCfg { name: "virgl_1_0", version: (1, 0, 0) }],
//! };
//!
//! fn main() {
//!     build_sys(&SPEC);
//! }
//! ```

use std::env;
use std::fmt;
use std::path::{Path, PathBuf};

/// A library version threshold that turns into a Rust cfg when the installed library reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionCfg {
    /// The cfg name, e.g. `virgl_1_0`. Must be a valid Rust identifier.
    pub name: &'static str,
    /// The minimum `(major, minor, patch)` version for which the cfg is set.
    pub version: (u32, u32, u32),
}

/// Everything a `-sys` build script needs to know about the system library it binds.
#[derive(Debug, Clone, Copy)]
pub struct LibrarySpec {
    /// The pkg-config module name (`virglrenderer`).
    pub pkg_config_name: &'static str,
    /// The oldest version the bindings support (`"0.10.0"`).
    pub min_version: &'static str,
    /// `(distribution, package)` pairs named in the error when the library is missing.
    pub packages: &'static [(&'static str, &'static str)],
    /// The header to bind, relative to one of the library's include directories
    /// (`virgl/virglrenderer.h`).
    pub header: &'static str,
    /// Regexes of the functions, types and variables to keep (`virgl_.*`, `VIRGL_.*`).
    pub allowlist: &'static [&'static str],
    /// Regexes of items to leave out even when the allowlist matches them.
    pub blocklist: &'static [&'static str],
    /// Preprocessor symbols defined when parsing the header (`VIRGL_RENDERER_UNSTABLE_APIS`).
    pub defines: &'static [&'static str],
    /// Version thresholds that become cfgs.
    pub version_cfgs: &'static [VersionCfg],
}

/// What pkg-config found.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The installed version as pkg-config reports it (`0.10.4`).
    pub version: String,
    /// The installed version, parsed.
    pub parsed_version: (u32, u32, u32),
    /// Include directories of the library.
    pub include_paths: Vec<PathBuf>,
}

/// Errors of the build-support helpers.
#[derive(Debug)]
pub enum Error {
    /// pkg-config did not find the library (or found one that is too old).
    LibraryNotFound {
        /// The pkg-config module name.
        name: &'static str,
        /// The minimum version asked for.
        min_version: &'static str,
        /// Packages that provide it.
        packages: &'static [(&'static str, &'static str)],
        /// pkg-config's own message.
        detail: String,
    },
    /// pkg-config reported a version string that is not `major.minor[.patch]`.
    BadVersion(String),
    /// The header was not found in any include directory of the library.
    HeaderNotFound {
        /// The header asked for.
        header: &'static str,
        /// The directories searched.
        searched: Vec<PathBuf>,
    },
    /// bindgen failed to parse the header.
    Bindgen(String),
    /// Writing the generated bindings failed.
    Io(std::io::Error),
    /// An environment variable cargo always sets is missing.
    MissingEnv(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LibraryNotFound {
                name,
                min_version,
                packages,
                detail,
            } => {
                write!(
                    f,
                    "the system library `{name}` (>= {min_version}) was not found by pkg-config. \
                     Install its development package"
                )?;
                let mut first = true;
                for (distro, package) in packages.iter() {
                    let sep = if first { ": " } else { ", " };
                    first = false;
                    write!(f, "{sep}`{package}` on {distro}")?;
                }
                write!(
                    f,
                    ". (If it is installed in a non-standard prefix, set PKG_CONFIG_PATH.) \
                     pkg-config said: {detail}"
                )
            }
            Error::BadVersion(v) => write!(f, "unparsable library version `{v}`"),
            Error::HeaderNotFound { header, searched } => {
                write!(f, "header `{header}` not found (tried {searched:?})")
            }
            Error::Bindgen(e) => write!(f, "bindgen failed: {e}"),
            Error::Io(e) => write!(f, "writing bindings failed: {e}"),
            Error::MissingEnv(v) => write!(f, "environment variable {v} is not set"),
        }
    }
}

impl std::error::Error for Error {}

/// Parses `major.minor[.patch]` (trailing non-digit suffixes such as `-rc1` are ignored).
pub fn parse_version(version: &str) -> Result<(u32, u32, u32), Error> {
    let mut parts = version.trim().split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>()
    });
    let bad = || Error::BadVersion(version.to_string());
    let major = parts.next().ok_or_else(bad)?.map_err(|_| bad())?;
    let minor = parts.next().ok_or_else(bad)?.map_err(|_| bad())?;
    let patch = match parts.next() {
        Some(p) => p.map_err(|_| bad())?,
        None => 0,
    };
    Ok((major, minor, patch))
}

/// Probes the library with pkg-config and emits the link directives.
pub fn probe(spec: &LibrarySpec) -> Result<Probe, Error> {
    let lib = pkg_config::Config::new()
        .atleast_version(spec.min_version)
        .probe(spec.pkg_config_name)
        .map_err(|e| Error::LibraryNotFound {
            name: spec.pkg_config_name,
            min_version: spec.min_version,
            packages: spec.packages,
            detail: e.to_string(),
        })?;
    let parsed_version = parse_version(&lib.version)?;
    Ok(Probe {
        version: lib.version,
        parsed_version,
        include_paths: lib.include_paths,
    })
}

/// Finds the spec's header. The library's own include directories come first (pkg-config
/// often names `<prefix>/include/<subdir>`, so `header`, its file name, and `header` relative
/// to the parent directory are tried in each); the usual system directories are the fallback,
/// which pkg-config leaves out of its flags.
pub fn find_header(spec: &LibrarySpec, probe: &Probe) -> Result<PathBuf, Error> {
    let header = Path::new(spec.header);
    let mut candidates: Vec<PathBuf> = Vec::new();
    for dir in &probe.include_paths {
        candidates.push(dir.join(header));
        if let Some(name) = header.file_name() {
            candidates.push(dir.join(name));
        }
        if let Some(parent) = dir.parent() {
            candidates.push(parent.join(header));
        }
    }
    for dir in ["/usr/local/include", "/usr/include"] {
        candidates.push(Path::new(dir).join(header));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(Error::HeaderNotFound {
            header: spec.header,
            searched: candidates,
        }),
    }
}

/// Generates bindings for the spec's header into `out`.
pub fn generate_bindings(spec: &LibrarySpec, probe: &Probe, out: &Path) -> Result<(), Error> {
    generate_bindings_with_args(spec, probe, out, &[])
}

/// Reads a variable of the library's pkg-config file (`includedir`, `libdir`, ...).
pub fn pkg_config_variable(spec: &LibrarySpec, variable: &str) -> Result<String, Error> {
    pkg_config::get_variable(spec.pkg_config_name, variable).map_err(|e| Error::LibraryNotFound {
        name: spec.pkg_config_name,
        min_version: spec.min_version,
        packages: spec.packages,
        detail: e.to_string(),
    })
}

/// Like [`generate_bindings`], with extra clang arguments for headers that need them: an
/// additional `-I<dir>` when the header includes a path the `.pc` file does not cover, or
/// `-include stdbool.h` for a C header that uses `bool` without including `<stdbool.h>`.
pub fn generate_bindings_with_args(
    spec: &LibrarySpec,
    probe: &Probe,
    out: &Path,
    extra_clang_args: &[String],
) -> Result<(), Error> {
    let header = find_header(spec, probe)?;
    println!("cargo:rerun-if-changed={}", header.display());
    let mut builder = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .use_core()
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .generate_comments(true)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for dir in &probe.include_paths {
        builder = builder.clang_arg(format!("-I{}", dir.display()));
    }
    for define in spec.defines {
        builder = builder.clang_arg(format!("-D{define}"));
    }
    builder = builder.clang_args(extra_clang_args);
    for pattern in spec.allowlist {
        builder = builder
            .allowlist_function(pattern)
            .allowlist_type(pattern)
            .allowlist_var(pattern);
    }
    for pattern in spec.blocklist {
        builder = builder
            .blocklist_function(pattern)
            .blocklist_type(pattern)
            .blocklist_item(pattern);
    }
    let bindings = builder
        .generate()
        .map_err(|e| Error::Bindgen(e.to_string()))?;
    bindings.write_to_file(out).map_err(Error::Io)
}

/// The cfg names of `spec` that the probed version reaches.
pub fn enabled_cfgs(spec: &LibrarySpec, version: (u32, u32, u32)) -> Vec<&'static str> {
    spec.version_cfgs
        .iter()
        .filter(|c| version >= c.version)
        .map(|c| c.name)
        .collect()
}

/// Declares every version cfg (`cargo::rustc-check-cfg`), sets those the installed version
/// reaches, and publishes them to dependents as `DEP_<LINKS>_CFGS` (comma separated),
/// `DEP_<LINKS>_ALL_CFGS` and `DEP_<LINKS>_VERSION`.
pub fn emit_version_cfgs(spec: &LibrarySpec, probe: &Probe) {
    let all: Vec<&str> = spec.version_cfgs.iter().map(|c| c.name).collect();
    let enabled = enabled_cfgs(spec, probe.parsed_version);
    for name in &all {
        println!("cargo::rustc-check-cfg=cfg({name})");
    }
    for name in &enabled {
        println!("cargo::rustc-cfg={name}");
    }
    println!("cargo::metadata=VERSION={}", probe.version);
    println!("cargo::metadata=CFGS={}", enabled.join(","));
    println!("cargo::metadata=ALL_CFGS={}", all.join(","));
}

/// For a crate that depends on a `-sys` crate with `links = "<links>"`: re-emits the version
/// cfgs published by [`emit_version_cfgs`] (read from `DEP_<LINKS>_CFGS`/`_ALL_CFGS`), so the
/// crate can use `#[cfg(<name>)]`. Returns the installed library version.
pub fn reexport_version_cfgs(links: &str) -> Result<String, Error> {
    let key = links.to_ascii_uppercase().replace('-', "_");
    let read = |suffix: &str| {
        let var = format!("DEP_{key}_{suffix}");
        println!("cargo:rerun-if-env-changed={var}");
        env::var(var)
    };
    let all = read("ALL_CFGS").map_err(|_| Error::MissingEnv("DEP_<LINKS>_ALL_CFGS"))?;
    let enabled = read("CFGS").map_err(|_| Error::MissingEnv("DEP_<LINKS>_CFGS"))?;
    let version = read("VERSION").map_err(|_| Error::MissingEnv("DEP_<LINKS>_VERSION"))?;
    for name in all.split(',').filter(|s| !s.is_empty()) {
        println!("cargo::rustc-check-cfg=cfg({name})");
    }
    for name in enabled.split(',').filter(|s| !s.is_empty()) {
        println!("cargo::rustc-cfg={name}");
    }
    Ok(version)
}

/// Runs the whole `-sys` build: probe, bindings into `$OUT_DIR/bindings.rs`, version cfgs.
/// On error it prints the error for cargo and exits the build script with status 1.
pub fn build_sys(spec: &LibrarySpec) -> Probe {
    match try_build_sys(spec) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            println!("cargo:warning={e}");
            std::process::exit(1);
        }
    }
}

/// Fallible version of [`build_sys`].
pub fn try_build_sys(spec: &LibrarySpec) -> Result<Probe, Error> {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let probe = probe(spec)?;
    let out_dir = env::var_os("OUT_DIR").ok_or(Error::MissingEnv("OUT_DIR"))?;
    let out = PathBuf::from(out_dir).join("bindings.rs");
    generate_bindings(spec, &probe, &out)?;
    emit_version_cfgs(spec, &probe);
    Ok(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: LibrarySpec = LibrarySpec {
        pkg_config_name: "definitely-not-a-library-xyz",
        min_version: "1.0",
        packages: &[("Debian", "libxyz-dev"), ("Fedora", "xyz-devel")],
        header: "xyz.h",
        allowlist: &["xyz_.*"],
        blocklist: &[],
        defines: &[],
        version_cfgs: &[
            VersionCfg {
                name: "xyz_1_0",
                version: (1, 0, 0),
            },
            VersionCfg {
                name: "xyz_1_2",
                version: (1, 2, 0),
            },
        ],
    };

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("0.10.4").unwrap(), (0, 10, 4));
        assert_eq!(parse_version("1.1").unwrap(), (1, 1, 0));
        assert_eq!(parse_version("1.3.0-rc1").unwrap(), (1, 3, 0));
        assert!(parse_version("abc").is_err());
        assert!(parse_version("1").is_err());
    }

    #[test]
    fn cfgs_follow_version() {
        assert!(enabled_cfgs(&SPEC, (0, 10, 4)).is_empty());
        assert_eq!(enabled_cfgs(&SPEC, (1, 0, 0)), vec!["xyz_1_0"]);
        assert_eq!(enabled_cfgs(&SPEC, (1, 3, 0)), vec!["xyz_1_0", "xyz_1_2"]);
    }

    #[test]
    fn missing_library_names_packages() {
        let err = probe(&SPEC).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`libxyz-dev` on Debian"), "{msg}");
        assert!(msg.contains("`xyz-devel` on Fedora"), "{msg}");
        assert!(msg.contains("definitely-not-a-library-xyz"), "{msg}");
    }
}
