//! Raw FFI bindings to `libgfxstream_backend`, the gfxstream host renderer.
//!
//! # Two shapes
//!
//! The library is not packaged by the distributions this project targets, so this crate builds in
//! one of two shapes, chosen by its build script:
//!
//! - **Library found** (pkg-config finds `gfxstream_backend` and its headers have the 2025 API):
//!   the bindings are generated at build time by bindgen from the installed
//!   `virtio-gpu-gfxstream-renderer-unstable.h` (which includes the stable header), restricted to
//!   `stream_renderer_*`, `gfxstream_backend_*`, `STREAM_*` and `RendererFlags`. The build script
//!   sets the cfg `gfxstream_found` for this crate and publishes `DEP_GFXSTREAM_BACKEND_FOUND=1`
//!   to dependents (the `gfxstream` crate re-emits the cfg from it).
//! - **Library not found**: the crate is an empty shell (only this documentation and
//!   [`LIBRARY_FOUND`]` == false`), the build prints a `cargo:warning` saying so and publishes
//!   `DEP_GFXSTREAM_BACKEND_FOUND=0`. The workspace then builds and tests without gfxstream.
//!
//! With the cargo feature `required` a missing library fails the build with a message instead
//! (the daemon's `gfxstream` feature turns it on, so that a daemon built with gfxstream really has
//! it).
//!
//! Header quirks handled by the build script: the unstable header includes
//! `"gfxstream/virtio-gpu-gfxstream-renderer.h"` while the `.pc` file only adds
//! `-I${includedir}/gfxstream` (so `-I${includedir}` is added), and it uses `bool` without
//! including `<stdbool.h>` (so `-include stdbool.h` is passed to clang).
//!
//! Not bound: `stream_renderer_export_fence` and `gfxstream_backend_set_screen_mask` are exported
//! by the library but declared in no installed header; `stream_renderer_set_service_ops` is
//! declared in an uninstalled header and not defined.
//!
//! Everything here is `unsafe` to use; the `gfxstream` crate is the safe binding.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(missing_docs, clippy::all, clippy::undocumented_unsafe_blocks)]
// bindgen's generated code is not ours to lint.
#![allow(clippy::multiple_unsafe_ops_per_block)]

/// Whether this build has the bindings (pkg-config found a usable `gfxstream_backend`).
pub const LIBRARY_FOUND: bool = cfg!(gfxstream_found);

#[cfg(gfxstream_found)]
pub use libc::iovec;

#[cfg(gfxstream_found)]
include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
