//! Safe, typed binding to libvirglrenderer, the virgl (OpenGL) and Venus renderer used by
//! virtio-gpu devices.
//!
//! * [`VirglRenderer`]: the library instance. One per process (a second
//!   [`init`](VirglRenderer::init) while one lives returns [`Error::AlreadyInitialized`]);
//!   re-initialization after everything was dropped works. It is `!Send`/`!Sync`: the library's
//!   GL context is current on the thread that initialized it.
//! * [`Context`] and [`Resource`]: RAII handles with caller-chosen ids (the guest chooses them),
//!   checked for collisions. They keep the library alive, so no handle can outlive it.
//! * Backing memory is owned by the resource it is attached to ([`BackingMemory`]), so guest
//!   pages outlive the attachment by construction.
//! * Fences, global ([`VirglRenderer::create_fence`]) and per context
//!   ([`Context::create_fence`]), are queued by the library's callbacks (which never unwind
//!   into C) and drained with [`VirglRenderer::poll`]; with
//!   [`RendererFlags::THREAD_SYNC`] there is a [`poll_fd`](VirglRenderer::poll_fd) to wait on.
//! * Scanout: [`Resource::export_dmabuf`] (a typed error on software rasterizers) or
//!   [`Resource::read_pixels`] (works everywhere).
//! * [`protocol::CommandBuffer`] encodes the few virgl commands needed to clear a render target.
//!
//! APIs of libvirglrenderer 1.x are compiled in only when the installed library has them
//! (cfg `virgl_1_0`, set by the build script from the installed version).
//!
//! # Example
//!
//! Clear a render target to a colour with a real virgl command stream and read it back
//! (headless: surfaceless EGL, works on Mesa llvmpipe without `/dev/dri`):
//!
//! ```
//! use virglrenderer::format::{B8G8R8X8_UNORM, PIPE_TEXTURE_2D};
//! use virglrenderer::protocol::{CommandBuffer, PIPE_CLEAR_COLOR0};
//! use virglrenderer::{Rect, RendererFlags, ResourceCreate3d, VirglRenderer};
//!
//! # fn main() -> Result<(), virglrenderer::Error> {
//! let renderer = VirglRenderer::init(RendererFlags::surfaceless())?;
//! let ctx = renderer.create_context(1, b"example", None)?;
//! let target = renderer.create_resource(1, &ResourceCreate3d::texture_2d(B8G8R8X8_UNORM, 64, 64))?;
//! ctx.attach(&target)?;
//!
//! let mut cmd = CommandBuffer::new();
//! cmd.create_surface(1, target.id(), B8G8R8X8_UNORM, 0, 0, 0)
//!     .set_framebuffer_state(0, &[1])
//!     .clear(PIPE_CLEAR_COLOR0, [0.2, 0.4, 0.8, 1.0], 1.0, 0);
//! ctx.submit(cmd.words())?;
//!
//! let mut pixels = vec![0u8; 64 * 64 * 4];
//! target.read_pixels(Rect { x: 0, y: 0, width: 64, height: 64 }, &mut pixels, 64 * 4)?;
//! assert_eq!(&pixels[..4], &[204, 102, 51, 255]); // B, G, R, X
//! # Ok(())
//! # }
//! ```

//! # Thread affinity
//!
//! The renderer and its handles cannot be sent to another thread:
//!
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<virglrenderer::VirglRenderer>();
//! ```
//!
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<virglrenderer::Resource>();
//! ```
//!
//! ```compile_fail
//! fn assert_sync<T: Sync>() {}
//! assert_sync::<virglrenderer::Context>();
//! ```

mod backing;
mod context;
mod error;
pub mod format;
pub mod protocol;
mod renderer;
mod resource;

pub use backing::{BackingMemory, HostRange, ScatteredBuffers};
pub use context::{Context, MAX_RING_IDX, MAX_SUBMIT_WORDS};
pub use drm_fourcc::DrmFourcc;
pub use error::{Errno, Error, Result};
pub use renderer::{
    CapsetInfo, Fence, RendererFlags, VirglRenderer, CAPSET_DRM, CAPSET_VENUS, CAPSET_VIRGL,
    CAPSET_VIRGL2, MAX_BACKING_RANGES, MAX_CAPSET_SIZE, MAX_CONTEXT_NAME_LEN,
};
pub use resource::{
    BlobCreate, BlobMem, Box3d, Dmabuf, ExportedHandle, HandleKind, MapCaching, Rect, Resource,
    ResourceCreate3d, ResourceInfo, Transfer, BLOB_FLAG_USE_CROSS_DEVICE, BLOB_FLAG_USE_MAPPABLE,
    BLOB_FLAG_USE_SHAREABLE,
};

/// The version of the libvirglrenderer this crate was built against (from pkg-config).
pub const LIBRARY_VERSION: &str = env!("VIRGLRENDERER_LIBRARY_VERSION");

/// Whether that library is 1.0 or newer. Upstream calls Venus experimental before 1.0 (and
/// 0.10's Venus speaks wire format 0, which current Mesa refuses); 1.x builds such as Debian's
/// run Venus in the render server ([`RendererFlags::RENDER_SERVER`], whose binary the library
/// finds through `RENDER_SERVER_EXEC_PATH` or its built-in path).
pub const LIBRARY_AT_LEAST_1_0: bool = cfg!(virgl_1_0);
