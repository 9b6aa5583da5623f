//! Safe binding to `libgfxstream_backend`, the gfxstream host renderer (the host side of
//! virtio-gpu's gfxstream capsets: Vulkan 3, GLES 8, composer 9).
//!
//! # Where the library is missing
//!
//! The library is not packaged by the distributions this project targets. When pkg-config does
//! not find `gfxstream_backend` at build time, `gfxstream-sys` has no bindings and this crate is
//! an **empty shell**: it holds only this documentation and [`LIBRARY_FOUND`]` == false`, the
//! build prints a `cargo:warning`, and the tests in `tests/` compile to ignored tests whose
//! reason says the library was not found (nextest counts them as skipped). With the cargo feature
//! `required` a missing library fails the build instead; the daemon's `gfxstream` feature turns
//! it on. To build with the library, install it (see `gfxstream-sys`) and set `PKG_CONFIG_PATH`
//! (and `LD_LIBRARY_PATH` to run).
//!
//! # The library's rules, and how this crate keeps them
//!
//! - **One instance per process, ever.** [`Gfxstream::init`] succeeds once per process; a second
//!   call gets [`Error::AlreadyInitialized`], also after the first instance was dropped (the
//!   library cannot re-initialise after teardown). The library is torn down when the
//!   [`Gfxstream`] and every [`Context`] and [`Resource`] are dropped.
//! - **No locking in the library.** Every call goes through one mutex shared by all handles.
//! - **Fences arrive by callback**, on library threads or inline inside
//!   [`Gfxstream::create_fence`], with a library lock held. The callback only records the
//!   completion and signals [`Gfxstream::fence_fd`]; [`Gfxstream::completed_fences`] collects
//!   them. Nothing is called back into the library from the callback.
//! - **Init can block forever** when no usable EGL display exists. Init refuses the GLX path
//!   without `DISPLAY`, and runs on a watchdog thread: [`Error::InitTimedOut`] instead of a hang.
//!   On a headless Mesa host, set `EGL_PLATFORM=surfaceless` and use
//!   `RendererFlags::USE_EGL | RendererFlags::USE_GLES`.
//! - **Return codes are inconsistent** (-EINVAL, +EINVAL, +ENOENT, and success on failure): every
//!   code is normalised into [`Error::Library`], ids are tracked so that duplicates (which the
//!   library silently replaces) and zero ids are refused, blob creation is verified after the
//!   fact, and guest commands are length-checked before the library copies a whole struct out of
//!   them.
//! - **No raw pointers in the API**: backings are owned [`BackingMemory`] values, mappings are
//!   [`Mapping`]s with bounds-checked reads and writes, exported blobs are [`OwnedFd`]s with
//!   their [`HandleKind`].
//!
//! Not bound: `stream_renderer_export_fence` (in no installed header), resource import,
//! `gfxstream_backend_setup_window` and the shared EGL context calls.
//!
//! [`OwnedFd`]: std::os::fd::OwnedFd

// In the empty shell the items the docs above link to do not exist.
#![cfg_attr(not(gfxstream_found), allow(rustdoc::broken_intra_doc_links))]

/// Whether this build has the library (pkg-config found `gfxstream_backend` at build time).
pub const LIBRARY_FOUND: bool = cfg!(gfxstream_found);

#[cfg(gfxstream_found)]
mod context;
#[cfg(gfxstream_found)]
mod error;
#[cfg(gfxstream_found)]
mod fence;
#[cfg(gfxstream_found)]
mod protocol;
#[cfg(gfxstream_found)]
mod renderer;
#[cfg(gfxstream_found)]
mod resource;

#[cfg(gfxstream_found)]
pub use context::Context;
#[cfg(gfxstream_found)]
pub use error::{Error, Result};
#[cfg(gfxstream_found)]
pub use fence::{CompletedFence, FenceRing};
#[cfg(gfxstream_found)]
pub use protocol::{
    bind, command_size, format, opcode, target, validate_command, Capset, RendererFlags,
    MAX_BACKING_BYTES, MAX_BACKING_ENTRIES, MAX_BLOB_SIZE, MAX_CAPSET_SIZE, MAX_CONTEXT_NAME,
    MAX_DIMENSION, MAX_RING_IDX, MAX_SUBMIT_BYTES,
};
#[cfg(gfxstream_found)]
pub use renderer::{CapsetInfo, Gfxstream, InitOptions, DEFAULT_INIT_TIMEOUT};
#[cfg(gfxstream_found)]
pub use resource::{
    blob_flags, BackingMemory, BlobArgs, BlobMem, ExportedBlob, HandleKind, MapCaching, Mapping,
    Resource, ResourceCreateArgs, ResourceInfo, TransferBox, VulkanInfo,
};
