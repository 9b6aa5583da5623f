//! Raw FFI bindings to libvirglrenderer.
//!
//! The bindings are generated at build time by bindgen from the header that is installed
//! (`virgl/virglrenderer.h`, found with pkg-config), with `VIRGL_RENDERER_UNSTABLE_APIS`
//! defined, so they always match the library being linked. Only the library's own symbols
//! (`virgl_*`, `VIRGL_*`) are kept.
//!
//! Version cfgs: the build script sets `virgl_1_0` (installed library >= 1.0.0) and `virgl_1_1`
//! (>= 1.1.0) for this crate and publishes them to dependents as `DEP_VIRGLRENDERER_CFGS`
//! (comma separated), `DEP_VIRGLRENDERER_ALL_CFGS` and `DEP_VIRGLRENDERER_VERSION`; a dependent
//! re-emits them with `build_support::reexport_version_cfgs("virglrenderer")`.
//!
//! Everything here is `unsafe` to use; the `virglrenderer` crate is the safe binding.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(
    missing_docs,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

pub use libc::iovec;

/// `struct virgl_box` (declared but not defined by `virglrenderer.h`; the layout is the one of
/// virglrenderer's `virgl_hw.h`): a 3D box of a resource, in texels.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct virgl_box {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Front edge (layer or depth slice).
    pub z: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
    /// Depth.
    pub d: u32,
}

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
