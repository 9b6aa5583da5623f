//! The virglrenderer renderer: the device's [`Renderer`] trait on the safe `virglrenderer`
//! crate (which wraps libvirglrenderer). No FFI here: only the crate's typed API.
//!
//! * 2D resources are `PIPE_TEXTURE_2D` render targets (row 0 on top), filled from the guest
//!   backing with `transfer_write` (stride = resource width * 4, as the 2D protocol says).
//! * 3D: contexts (VIRGL2 by default, or the CONTEXT_INIT capset), attach/detach, SUBMIT_3D,
//!   3D transfers in both directions, capsets VIRGL and VIRGL2, and VENUS (4) when the daemon
//!   initialised the library with `RendererFlags::VENUS` (see `--venus`). Only capsets whose data
//!   passes [`capset_unusable`] at start-up are offered: Debian 12's 0.10.4 fills the Venus
//!   capset with wire format version 0, which Mesa's Venus driver rejects, and 1.x without its
//!   render server reports a Venus capset but leaves the data zero.
//! * Fences: the global timeline maps the guest's 64-bit fence ids onto the library's 32-bit
//!   global fences (an internal sequence number, completed in order); per-context fences
//!   (ring 0 of virgl contexts) keep the guest's 64-bit ids.
//! * Scanout: a dmabuf export is attempted; on a software rasterizer (Mesa llvmpipe) the crate
//!   refuses it with a typed error and the device reads the pixels back instead
//!   (`transfer_read` presents rows top-down for every resource, so no flip is needed).
//! * Blobs: `BLOB_MEM_GUEST` blobs (their scanouts read from the guest pages) and host blobs
//!   (`BLOB_MEM_HOST3D`, `BLOB_MEM_HOST3D_GUEST`; `blob_id` names a context object: a virgl
//!   resource made with `VIRGL_CCMD_PIPE_RESOURCE_CREATE`, or a Venus `VkDeviceMemory`).
//!   RESOURCE_MAP_BLOB exports the blob as an fd (`export_blob`), which the device hands to the
//!   frontend; the library can export only what it allocated as an fd: Venus memory, GBM
//!   buffers on a render node. A GL buffer on Mesa llvmpipe (no render node) has no fd:
//!   `virgl_resource_export_fd` finds no fd of its own and vrend's `export_fd` callback
//!   exports GBM-allocated buffers only, so the library answers EINVAL and MAP_BLOB fails with
//!   ERR_UNSPEC.
//!
//! Contexts: a [`RenderContext`] holds the crate's `Context` (dropping it destroys the library's
//! context) and a weak handle on what the renderer shares with its contexts (the library and the
//! resource table), so that it attaches, transfers and creates blobs on the renderer's
//! resources. Neither is `Send`: both stay on the thread that initialised the library.
//!
//! Guest backing: a [`GuestBacking`] (which keeps the guest memory regions mapped through its
//! `GuestMemoryMmap` clone) is handed to the library through [`GuestPages`], whose
//! `BackingMemory` implementation states that contract; the resource owns it while attached.

use std::cell::{RefCell, RefMut};
use std::collections::{HashMap, VecDeque};
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::rc::{Rc, Weak};

use log::{debug, warn};
use virglrenderer::{
    BackingMemory, BlobMem, Context, Error as VirglError, Fence, RendererFlags, Resource,
    VirglRenderer,
};

use super::formats::{PixelFormat, BYTES_PER_PIXEL};
use super::readback::{check_out_len, BlobImage};
use super::software::SoftwareRenderer;
use super::{
    BlobHandleKind, BlobScanoutLayout, CapsetInfo, CheckedTransfer2d, CheckedTransfer3d,
    CreateBlob, Dmabuf, ExportedBlob, FenceId, GuestBacking, Rect, RenderContext, Renderer,
    RendererCapabilities, RendererError, ResourceCreate3d, Result, Transfer3d,
};

/// Most global fences waiting for completion at once: the device asks for a fence only for an
/// entry it holds, and holds at most this many.
use crate::limits::MAX_HELD_FENCES as MAX_PENDING_GLOBAL_FENCES;

/// Guest pages handed to libvirglrenderer as a resource's backing.
pub struct GuestPages(GuestBacking);

// SAFETY: `GuestBacking::host_ranges` returns host addresses inside the mapped regions of the
// `GuestMemoryMmap` the backing holds a clone of; those regions are reference counted and stay
// mapped while this value (and so the clone) lives, wherever it is moved, and the library
// holds the value (as a resource's backing) for as long as it may touch the ranges. The ranges
// are guest memory, which the guest may change at any time: the library must treat them as
// shared memory, and does not only during transfers: Venus reads command streams and writes
// replies in guest-backed blobs asynchronously, from its own threads (1.x: the render server).
unsafe impl BackingMemory for GuestPages {
    fn ranges(&mut self) -> Vec<virglrenderer::HostRange> {
        let ranges = match self.0.host_ranges() {
            Ok(r) => r,
            Err(e) => {
                // Cannot happen for a validated backing; an empty list makes transfers fail
                // the library's bounds check instead of touching memory.
                warn!("guest backing without host ranges: {e}");
                return Vec::new();
            }
        };
        ranges
            .into_iter()
            .filter_map(|r| {
                let ptr = NonNull::new(r.addr)?;
                // SAFETY: `ptr..ptr + len` lies inside one mapped guest memory region that
                // outlives `self` (see the impl's comment).
                Some(unsafe { virglrenderer::HostRange::new(ptr, r.len) })
            })
            .collect()
    }
}

fn map_err(e: VirglError) -> RendererError {
    match e {
        VirglError::ResourceIdInUse(id) | VirglError::NotBlob(id) | VirglError::IsBlob(id) => {
            RendererError::InvalidResourceId(id)
        }
        VirglError::ContextIdInUse(id) => RendererError::InvalidContextId(id),
        VirglError::DmabufUnsupported(why) => {
            debug!("virglrenderer: {why}");
            RendererError::Unsupported("dmabuf export on this GL renderer")
        }
        VirglError::Library { errno, .. } if errno.0 == libc::ENOMEM => {
            RendererError::OutOfMemory(e.to_string())
        }
        VirglError::Library { .. }
        | VirglError::Init { .. }
        | VirglError::AlreadyInitialized
        | VirglError::UnknownHandleType(_) => RendererError::Library(e.to_string()),
        other => RendererError::InvalidParameter(other.to_string()),
    }
}

/// A resource and, for guest blobs, the guest pages the scanout is read from.
struct VirglResource {
    res: Resource,
    /// A second handle on the pages of a `BLOB_MEM_GUEST` blob (for SET_SCANOUT_BLOB).
    blob_pages: Option<GuestBacking>,
    /// The guest's `VIRTIO_GPU_FORMAT_*` of a 2D resource the library holds under a substitute
    /// format of the same byte layout (see [`substitute_2d_format`]); `None` otherwise.
    guest_format: Option<u32>,
}

/// A format with the same byte layout for a 2D format the library may not know: the "X"
/// (padding) formats as their alpha twins. Mesa's GL core profile (llvmpipe) has no
/// X8B8G8R8_UNORM (virglrenderer logs "unknown format is 68"); transfers copy the bytes
/// unchanged and the read-back converts with the guest's format, so the padding byte never
/// becomes alpha.
fn substitute_2d_format(format: u32) -> Option<u32> {
    use crate::protocol::{
        VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM, VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM,
        VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
        VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM,
        VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM, VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM,
    };
    match format {
        VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM => Some(VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM),
        VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM => Some(VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM),
        VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM => Some(VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM),
        VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM => Some(VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM),
        _ => None,
    }
}

/// The virglrenderer [`Renderer`]; its contexts are `VirglContext`s.
pub struct VirglGpuRenderer {
    shared: Rc<Shared>,
    /// 2D resources that no 3D work has used yet, held on the host like the software renderer
    /// does (see [`Renderer::prepare_for_3d`]): their transfers are copies in host memory and
    /// their flushes lend or copy host rows, with no GL upload and no `glReadPixels`. The first
    /// CTX_ATTACH_RESOURCE or 3D transfer moves one into the library ([`Self::promote`]).
    host_2d: SoftwareRenderer,
    /// Global fences in creation order: (library sequence number, the guest's fence).
    global_pending: VecDeque<(u32, FenceId)>,
    next_global_seq: u32,
    /// The capsets offered to the guest: the library's, less those that failed the start-up
    /// check.
    capsets: Vec<CapsetInfo>,
}

/// [`capset_unusable`]'s answer for a Venus capset of wire format version 0.
pub const VENUS_WIRE_FORMAT_0: &str = "Venus wire format version 0, which current Mesa Venus \
    drivers reject (libvirglrenderer 1.0 and newer speak version 1)";

/// How [`VirglGpuRenderer::with_options`] sets the library up.
#[derive(Debug, Default)]
pub struct VirglOptions {
    /// `virgl_renderer_init` flags.
    pub flags: RendererFlags,
    /// A DRM render node the library takes over (`--render-node`); without it the library
    /// picks one itself, or renders on the CPU.
    pub render_node: Option<std::os::fd::OwnedFd>,
    /// Offer a Venus capset of wire format version 0 anyway (`--venus on` on libraries older
    /// than 1.0, for guests whose Venus driver predates wire format 1).
    pub venus_wire_format_0: bool,
}

/// Why the data of capset `id` must not be offered to a guest, or `None` when it is usable.
///
/// A capset the library lists but leaves unfilled (all zero) is refused, and Venus needs a
/// non-zero wire format version (its first word): Mesa's Venus driver refuses version 0
/// ("Unsupported wire format version 0"), which is what libvirglrenderer before 1.0 reports.
pub fn capset_unusable(id: u32, data: &[u8]) -> Option<&'static str> {
    if data.iter().all(|&b| b == 0) {
        return Some("the library left the capset data unfilled (all zero)");
    }
    if id == virglrenderer::CAPSET_VENUS {
        let wire = data
            .get(..4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .unwrap_or(0);
        if wire == 0 {
            return Some(VENUS_WIRE_FORMAT_0);
        }
    }
    None
}

impl VirglGpuRenderer {
    /// The flags used by default: headless EGL (works with Mesa llvmpipe and no `/dev/dri`) and
    /// a fence thread with a poll fd for the event loop.
    pub fn default_flags() -> RendererFlags {
        RendererFlags::surfaceless() | RendererFlags::THREAD_SYNC
    }

    /// Initializes libvirglrenderer on the calling thread (which must be the device's GPU
    /// thread: the value is not `Send`).
    pub fn new(flags: RendererFlags) -> std::result::Result<Self, VirglError> {
        Self::with_options(VirglOptions {
            flags,
            ..VirglOptions::default()
        })
    }

    /// Like [`new`](Self::new), with the choices of [`VirglOptions`].
    pub fn with_options(options: VirglOptions) -> std::result::Result<Self, VirglError> {
        let flags = options.flags;
        let renderer = match options.render_node {
            Some(node) => VirglRenderer::init_with_render_node(flags, node)?,
            None => VirglRenderer::init(flags)?,
        };
        log::info!(
            "virglrenderer {} initialized (flags {:#x}, software GL: {})",
            virglrenderer::LIBRARY_VERSION,
            flags.bits(),
            renderer.is_software()
        );
        let mut capsets = Vec::new();
        for c in renderer.capsets() {
            let verdict = match renderer.capset(c.capset_id, c.max_version) {
                Ok(data) => match capset_unusable(c.capset_id, &data) {
                    Some(VENUS_WIRE_FORMAT_0) if options.venus_wire_format_0 => {
                        warn!(
                            "Venus offered with wire format version 0 as asked: only guests \
                             whose Venus driver predates wire format 1 can use it"
                        );
                        None
                    }
                    verdict => verdict,
                },
                Err(_) => Some("the library could not fill it"),
            };
            match verdict {
                None => capsets.push(CapsetInfo {
                    id: c.capset_id,
                    max_version: c.max_version,
                    max_size: c.max_size,
                }),
                Some(why) => warn!("capset {} not offered to the guest: {why}", c.capset_id),
            }
        }
        log::info!(
            "capsets offered: {:?}",
            capsets.iter().map(|c| c.id).collect::<Vec<_>>()
        );
        Ok(VirglGpuRenderer {
            shared: Rc::new(Shared {
                renderer,
                resources: RefCell::new(HashMap::new()),
            }),
            host_2d: SoftwareRenderer::new(),
            global_pending: VecDeque::new(),
            next_global_seq: 1,
            capsets,
        })
    }

    /// Moves 2D resource `id` from the host into the library: a texture of its format (or a
    /// substitute of the same byte layout), its pixels uploaded, its backing attached. Nothing
    /// to do for a resource the library holds already.
    fn promote(&mut self, id: u32) -> Result<()> {
        let Some(image) = self.host_2d.take_image(id) else {
            return Ok(());
        };
        debug!("resource {id}: first 3D use, moved into the library");
        let (width, height) = (image.width, image.height);
        let renderer = &self.shared.renderer;
        let (res, guest_format) = match renderer.create_resource_2d(id, image.format, width, height)
        {
            Ok(res) => (res, None),
            Err(e) => {
                let Some(twin) = substitute_2d_format(image.format) else {
                    return Err(map_err(e));
                };
                debug!(
                    "2D format {} refused ({e}); holding resource {id} as {twin}",
                    image.format
                );
                let res = renderer
                    .create_resource_2d(id, twin, width, height)
                    .map_err(map_err)?;
                (res, Some(image.format))
            }
        };
        if width > 0 && height > 0 {
            let stride = width
                .checked_mul(BYTES_PER_PIXEL)
                .ok_or_else(|| RendererError::InvalidParameter("row overflows".into()))?;
            let whole = virglrenderer::Transfer {
                stride,
                ..virglrenderer::Transfer::rect_2d(
                    virglrenderer::Rect {
                        x: 0,
                        y: 0,
                        width,
                        height,
                    },
                    0,
                )
            };
            res.write_from(None, &whole, &image.pixels)
                .map_err(map_err)?;
        }
        if let Some(backing) = image.backing {
            res.attach_backing(Box::new(GuestPages(backing)))
                .map_err(map_err)?;
        }
        self.shared.insert_resource(id, res, None, guest_format)
    }

    /// Whether capset `id` passed the start-up check and is offered to the guest.
    pub fn offers_capset(&self, id: u32) -> bool {
        self.capsets.iter().any(|c| c.id == id)
    }
}

/// What the renderer and its contexts share: the library and the resource table (a context
/// attaches, transfers and creates blobs on the renderer's resources).
struct Shared {
    renderer: VirglRenderer,
    // Declared after `renderer`, but handles keep the library alive on their own, so the
    // drop order does not matter for safety.
    resources: RefCell<HashMap<u32, VirglResource>>,
}

impl Shared {
    /// Calls `f` with resource `id`.
    fn with_resource<T>(&self, id: u32, f: impl FnOnce(&VirglResource) -> Result<T>) -> Result<T> {
        let resources = self.resources.try_borrow().map_err(|_| busy())?;
        f(resources
            .get(&id)
            .ok_or(RendererError::InvalidResourceId(id))?)
    }

    /// The resource table, to change it.
    fn resources_mut(&self) -> Result<RefMut<'_, HashMap<u32, VirglResource>>> {
        self.resources.try_borrow_mut().map_err(|_| busy())
    }

    fn insert_resource(
        &self,
        id: u32,
        res: Resource,
        blob_pages: Option<GuestBacking>,
        guest_format: Option<u32>,
    ) -> Result<()> {
        self.resources_mut()?.insert(
            id,
            VirglResource {
                res,
                blob_pages,
                guest_format,
            },
        );
        Ok(())
    }

    /// A 3D transfer of resource `id`, in `ctx` or outside any context.
    fn transfer_3d(
        &self,
        ctx: Option<&Context>,
        id: u32,
        t: &Transfer3d,
        to_host: bool,
    ) -> Result<()> {
        self.with_resource(id, |r| {
            if to_host {
                r.res.transfer_write(ctx, &transfer(t)).map_err(map_err)
            } else {
                r.res.transfer_read(ctx, &transfer(t)).map_err(map_err)
            }
        })
    }

    /// RESOURCE_CREATE_BLOB, in `ctx` or outside any context.
    fn create_blob(
        &self,
        ctx: Option<&Context>,
        id: u32,
        args: &CreateBlob,
        backing: Option<GuestBacking>,
    ) -> Result<()> {
        let mem = BlobMem::from_raw(args.blob_mem).ok_or_else(|| {
            RendererError::InvalidParameter(format!("blob_mem {}", args.blob_mem))
        })?;
        let blob_pages = match mem {
            BlobMem::Guest => backing.clone(),
            _ => None,
        };
        let backing = backing.map(|b| Box::new(GuestPages(b)) as Box<dyn BackingMemory>);
        let create = virglrenderer::BlobCreate {
            mem,
            flags: args.blob_flags,
            blob_id: args.blob_id,
            size: args.size,
        };
        let res = self
            .renderer
            .create_blob(id, ctx, &create, backing)
            .map_err(map_err)?;
        self.insert_resource(id, res, blob_pages, None)
    }
}

/// The resource table is borrowed already: a call into the adapter from inside the adapter,
/// which the device never makes.
fn busy() -> RendererError {
    RendererError::Library("virglrenderer adapter re-entered".into())
}

/// The `VIRTIO_GPU_FORMAT_*` the guest gave a 2D/3D resource.
fn guest_format(r: &VirglResource, args: &virglrenderer::ResourceCreate3d) -> u32 {
    r.guest_format.unwrap_or(args.format)
}

fn transfer(t: &Transfer3d) -> virglrenderer::Transfer {
    virglrenderer::Transfer {
        bbox: virglrenderer::Box3d {
            x: t.box3d.x,
            y: t.box3d.y,
            z: t.box3d.z,
            w: t.box3d.w,
            h: t.box3d.h,
            d: t.box3d.d,
        },
        level: t.level,
        stride: t.stride,
        layer_stride: t.layer_stride,
        offset: t.offset,
    }
}

/// A virglrenderer context: the library's context handle (dropping it destroys the context)
/// and the renderer's shared state, which it does not keep alive.
struct VirglContext {
    ctx: Context,
    shared: Weak<Shared>,
}

impl VirglContext {
    fn shared(&self) -> Result<Rc<Shared>> {
        super::shared_of(&self.shared, self.ctx.id())
    }
}

impl RenderContext for VirglContext {
    fn attach_resource(&mut self, id: u32) -> Result<()> {
        self.shared()?
            .with_resource(id, |r| self.ctx.attach(&r.res).map_err(map_err))
    }

    fn detach_resource(&mut self, id: u32) -> Result<()> {
        self.shared()?
            .with_resource(id, |r| self.ctx.detach(&r.res).map_err(map_err))
    }

    fn submit(&mut self, commands: &[u8]) -> Result<()> {
        self.ctx.submit_bytes(commands).map_err(map_err)
    }

    fn create_fence(&mut self, ring_idx: u8, fence_id: u64) -> Result<()> {
        self.ctx
            .create_fence(u32::from(ring_idx), fence_id, false)
            .map_err(map_err)
    }

    fn transfer_to_host_3d(&mut self, id: u32, t: &CheckedTransfer3d) -> Result<()> {
        self.shared()?
            .transfer_3d(Some(&self.ctx), id, t.get(), true)
    }

    fn transfer_from_host_3d(&mut self, id: u32, t: &CheckedTransfer3d) -> Result<()> {
        self.shared()?
            .transfer_3d(Some(&self.ctx), id, t.get(), false)
    }

    fn create_blob(
        &mut self,
        id: u32,
        args: &CreateBlob,
        backing: Option<GuestBacking>,
    ) -> Result<()> {
        self.shared()?
            .create_blob(Some(&self.ctx), id, args, backing)
    }
}

impl Renderer for VirglGpuRenderer {
    fn name(&self) -> &'static str {
        "virglrenderer"
    }

    fn capabilities(&self) -> RendererCapabilities {
        RendererCapabilities {
            three_d: true,
            context_init: true,
            blob_guest: true,
            blob_host: true,
        }
    }

    fn capsets(&self) -> Vec<CapsetInfo> {
        self.capsets.clone()
    }

    fn capset(&mut self, id: u32, version: u32) -> Result<Vec<u8>> {
        if !self.offers_capset(id) {
            return Err(RendererError::InvalidParameter(format!(
                "capset {id} is not offered"
            )));
        }
        self.shared.renderer.capset(id, version).map_err(map_err)
    }

    fn resource_create_2d(&mut self, id: u32, format: u32, width: u32, height: u32) -> Result<()> {
        // On the host until 3D work uses it (`prepare_for_3d`).
        if self
            .shared
            .resources
            .try_borrow()
            .map_err(|_| busy())?
            .contains_key(&id)
        {
            return Err(RendererError::InvalidResourceId(id));
        }
        self.host_2d.resource_create_2d(id, format, width, height)
    }

    fn resource_create_3d(&mut self, id: u32, args: &ResourceCreate3d) -> Result<()> {
        let args = virglrenderer::ResourceCreate3d {
            target: args.target,
            format: args.format,
            bind: args.bind,
            width: args.width,
            height: args.height,
            depth: args.depth,
            array_size: args.array_size,
            last_level: args.last_level,
            nr_samples: args.nr_samples,
            flags: args.flags,
        };
        let res = self
            .shared
            .renderer
            .create_resource(id, &args)
            .map_err(map_err)?;
        self.shared.insert_resource(id, res, None, None)
    }

    fn resource_unref(&mut self, id: u32) -> Result<()> {
        if self.host_2d.take_image(id).is_some() {
            return Ok(());
        }
        // Dropping the handle detaches the backing, unrefs the resource (the library detaches
        // it from its contexts), then drops the pages.
        let removed = self.shared.resources_mut()?.remove(&id);
        removed
            .map(drop)
            .ok_or(RendererError::InvalidResourceId(id))
    }

    fn attach_backing(&mut self, id: u32, backing: GuestBacking) -> Result<()> {
        if self.host_2d.holds(id) {
            return self.host_2d.attach_backing(id, backing);
        }
        self.shared.with_resource(id, |r| {
            r.res
                .attach_backing(Box::new(GuestPages(backing)))
                .map_err(map_err)
        })
    }

    fn detach_backing(&mut self, id: u32) -> Result<()> {
        if self.host_2d.holds(id) {
            return self.host_2d.detach_backing(id);
        }
        self.shared.with_resource(id, |r| {
            if r.res.detach_backing().is_none() {
                debug!("resource {id}: detach without backing");
            }
            Ok(())
        })
    }

    fn transfer_to_host_2d(&mut self, id: u32, t: &CheckedTransfer2d) -> Result<()> {
        if self.host_2d.holds(id) {
            return self.host_2d.transfer_to_host_2d(id, t);
        }
        let rect = t.rect();
        let transfer = virglrenderer::Transfer {
            stride: t.stride(),
            ..virglrenderer::Transfer::rect_2d(
                virglrenderer::Rect {
                    x: rect.x,
                    y: rect.y,
                    width: rect.width,
                    height: rect.height,
                },
                t.offset(),
            )
        };
        self.shared.with_resource(id, |r| {
            r.res.transfer_write(None, &transfer).map_err(map_err)
        })
    }

    fn prepare_for_3d(&mut self, id: u32) -> Result<()> {
        self.promote(id)
    }

    fn transfer_to_host_3d(&mut self, id: u32, t: &CheckedTransfer3d) -> Result<()> {
        self.shared.transfer_3d(None, id, t.get(), true)
    }

    fn transfer_from_host_3d(&mut self, id: u32, t: &CheckedTransfer3d) -> Result<()> {
        self.shared.transfer_3d(None, id, t.get(), false)
    }

    fn create_context(
        &mut self,
        ctx_id: u32,
        capset_id: u32,
        name: &str,
    ) -> Result<Box<dyn RenderContext>> {
        if capset_id != 0 && !self.offers_capset(capset_id) {
            return Err(RendererError::InvalidParameter(format!(
                "context capset {capset_id} is not offered"
            )));
        }
        let capset = (capset_id != 0).then_some(capset_id);
        let name = name.as_bytes();
        let name = &name[..name.len().min(virglrenderer::MAX_CONTEXT_NAME_LEN)];
        // The crate refuses an id in use (ContextIdInUse).
        let ctx = self
            .shared
            .renderer
            .create_context(ctx_id, name, capset)
            .map_err(map_err)?;
        Ok(Box::new(VirglContext {
            ctx,
            shared: Rc::downgrade(&self.shared),
        }))
    }

    fn create_fence(&mut self, ctx_id: u32, fence_id: u64) -> Result<()> {
        if self.global_pending.len() >= MAX_PENDING_GLOBAL_FENCES {
            return Err(RendererError::OutOfMemory(format!(
                "{MAX_PENDING_GLOBAL_FENCES} global fences pending"
            )));
        }
        let seq = self.next_global_seq;
        // Sequence numbers wrap; 0 is skipped so it never names a fence.
        self.next_global_seq = seq.wrapping_add(1).max(1);
        self.shared.renderer.create_fence(seq).map_err(map_err)?;
        self.global_pending.push_back((
            seq,
            FenceId {
                ctx_id,
                ring_idx: None,
                id: fence_id,
            },
        ));
        Ok(())
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.shared.renderer.poll_fd()
    }

    fn poll(&mut self) -> Vec<FenceId> {
        let mut done = Vec::new();
        for f in self.shared.renderer.poll() {
            match f {
                Fence::Global { fence_id } => {
                    // Completing a global fence completes every earlier one.
                    if self.global_pending.iter().any(|(s, _)| *s == fence_id) {
                        while let Some((seq, fence)) = self.global_pending.pop_front() {
                            done.push(fence);
                            if seq == fence_id {
                                break;
                            }
                        }
                    } else {
                        debug!("completed global fence {fence_id} is not pending");
                    }
                }
                Fence::Context {
                    ctx_id,
                    ring_idx,
                    fence_id,
                } => match u8::try_from(ring_idx) {
                    Ok(ring) => done.push(FenceId {
                        ctx_id,
                        ring_idx: Some(ring),
                        id: fence_id,
                    }),
                    Err(_) => warn!("context {ctx_id}: fence on ring {ring_idx} ignored"),
                },
            }
        }
        done
    }

    fn create_blob(
        &mut self,
        id: u32,
        args: &CreateBlob,
        backing: Option<GuestBacking>,
    ) -> Result<()> {
        self.shared.create_blob(None, id, args, backing)
    }

    fn export_blob(&mut self, id: u32) -> Result<ExportedBlob> {
        let h = self
            .shared
            .with_resource(id, |r| r.res.export_blob().map_err(map_err))?;
        let kind = match h.kind {
            virglrenderer::HandleKind::Dmabuf => BlobHandleKind::Dmabuf,
            virglrenderer::HandleKind::Opaque => BlobHandleKind::OpaqueFd,
            virglrenderer::HandleKind::Shm => BlobHandleKind::Shm,
        };
        Ok(ExportedBlob::new(h.fd, kind))
    }

    fn map_info(&mut self, id: u32) -> Result<u32> {
        self.shared
            .with_resource(id, |r| r.res.map_info().map_err(map_err))
    }

    fn read_pixels(&mut self, id: u32, rect: Rect, out: &mut [u8]) -> Result<()> {
        if self.host_2d.holds(id) {
            return self.host_2d.read_pixels(id, rect, out);
        }
        self.shared.with_resource(id, |r| {
            let args = r.res.create_args().ok_or_else(|| {
                RendererError::InvalidParameter(format!("resource {id} is a blob"))
            })?;
            let guest_format = guest_format(r, args);
            let format = PixelFormat::from_virtio(guest_format).ok_or_else(|| {
                RendererError::InvalidParameter(format!("read-back of format {guest_format}"))
            })?;
            let row = check_out_len(rect, out)?;
            if row == 0 {
                return Ok(());
            }
            // `row` is width * 4 <= out.len(); the crate checks the rectangle against the
            // resource.
            let stride = u32::try_from(row)
                .map_err(|_| RendererError::InvalidParameter("row too long".into()))?;
            let region = virglrenderer::Rect {
                x: rect.x,
                y: rect.y,
                width: rect.width,
                height: rect.height,
            };
            // Read in the resource's byte order straight into `out`, then convert there
            // (nothing to do for B8G8R8A8; alpha forced to 0xff for the X formats).
            r.res.read_pixels(region, out, stride).map_err(map_err)?;
            format.to_argb8888_in_place(out);
            Ok(())
        })
    }

    fn read_blob_pixels(
        &mut self,
        id: u32,
        layout: &BlobScanoutLayout,
        rect: Rect,
        out: &mut [u8],
    ) -> Result<()> {
        self.shared.with_resource(id, |r| {
            let size = r.res.blob_args().map_or(0, |a| a.size);
            let Some(image) = BlobImage::check(layout, rect, out, size)? else {
                return Ok(());
            };
            if let Some(pages) = &r.blob_pages {
                return image.read(out, |at, row| pages.read_at(at, row));
            }
            // A host blob: map it into this process for the read-back (a persistent GL buffer
            // or a shared-memory/dmabuf fd; the library refuses what it cannot map) and unmap
            // again. The guest's own mapping through the host-visible region is a separate one.
            let mapped = r.res.map().map_err(map_err)?;
            let read = if mapped < size {
                Err(RendererError::Library(format!(
                    "blob {id} maps {mapped} of its {size} bytes"
                )))
            } else {
                image.read(out, |at, row| r.res.read_mapped(at, row).map_err(map_err))
            };
            if let Err(e) = r.res.unmap() {
                warn!("blob {id}: unmap after read-back: {e}");
            }
            read
        })
    }

    fn scanout_pixels(&self, id: u32, rect: Rect) -> Option<&[u8]> {
        // Rows of a resource held on the host are lent as the software renderer lends them.
        self.host_2d.scanout_pixels(id, rect)
    }

    fn export_dmabuf(&mut self, id: u32) -> Result<Dmabuf> {
        if self.host_2d.holds(id) {
            return Err(RendererError::Unsupported(
                "dmabuf export of a host-held 2D resource",
            ));
        }
        self.shared.with_resource(id, |r| {
            let d = r.res.export_dmabuf().map_err(map_err)?;
            let flags = if r.res.is_blob() {
                0
            } else {
                r.res.info().map_err(map_err)?.flags
            };
            let fourcc = match r.guest_format.and_then(PixelFormat::from_virtio) {
                Some(guest) => guest.fourcc as u32,
                None => d.fourcc.map_or(0, |f| f as u32),
            };
            Ok(Dmabuf {
                fd: d.fd,
                width: d.width,
                height: d.height,
                stride: d.stride,
                fourcc,
                modifier: d.modifier,
                flags,
            })
        })
    }

    fn reset(&mut self) {
        self.host_2d.reset();
        // The device dropped every context already (they went before this call).
        match self.shared.resources_mut() {
            Ok(mut resources) => {
                if !resources.is_empty() {
                    warn!(
                        "virglrenderer reset with {} resources left",
                        resources.len()
                    );
                }
                resources.clear();
            }
            Err(e) => warn!("reset: {e}"),
        }
        self.global_pending.clear();
        // Fences the library reports from before the reset are dropped.
        let stale = self.shared.renderer.poll();
        if !stale.is_empty() {
            debug!("dropped {} fences completed across a reset", stale.len());
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against the real libvirglrenderer (Mesa llvmpipe, surfaceless EGL, no GPU needed). The
    //! library is process-global: each test holds `LIBRARY` so they also work under
    //! `cargo test`'s threads (nextest runs them in separate processes anyway).

    use std::sync::Mutex;

    use virglrenderer::format::{BIND_RENDER_TARGET, BIND_SAMPLER_VIEW, PIPE_TEXTURE_2D};
    use virglrenderer::protocol::{CommandBuffer, PIPE_CLEAR_COLOR0};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::super::{BackingEntry, ResourceShape};
    use super::*;

    /// TRANSFER_TO_HOST_2D as the device runs it on a `w` x `h` 2D resource: the validation
    /// step's check (its backing is whole when attached), then the renderer.
    fn xfer(
        r: &mut VirglGpuRenderer,
        id: u32,
        rect: Rect,
        offset: u64,
        (w, h): (u32, u32),
    ) -> Result<()> {
        let backing = match r.host_2d.holds(id) {
            true => r.host_2d.backing_len(id),
            false => r
                .shared
                .with_resource(id, |e| Ok(e.res.has_backing().then(|| e.res.backing_len())))?,
        };
        let shape = ResourceShape::Plain2d {
            width: w,
            height: h,
        };
        let t = CheckedTransfer2d::check(rect, offset, shape, backing)
            .map_err(RendererError::InvalidParameter)?;
        r.transfer_to_host_2d(id, &t)
    }
    use crate::protocol::{
        Box3d, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
        VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM,
    };

    #[test]
    fn capset_check_refuses_unfilled_data_and_venus_wire_format_0() {
        use virglrenderer::{CAPSET_VENUS, CAPSET_VIRGL2};
        assert!(capset_unusable(CAPSET_VIRGL2, &[0; 16]).is_some());
        assert!(capset_unusable(CAPSET_VIRGL2, &[0, 0, 1, 0]).is_none());
        // Venus: the first little-endian word is the wire format version.
        let mut venus = [0u8; 160];
        venus[4] = 0xe4; // vk_xml_version filled, wire format 0 (what 0.10.4 reports)
        assert_eq!(
            capset_unusable(CAPSET_VENUS, &venus),
            Some(VENUS_WIRE_FORMAT_0)
        );
        venus[0] = 1;
        assert_eq!(capset_unusable(CAPSET_VENUS, &venus), None);
        assert!(capset_unusable(CAPSET_VENUS, &[]).is_some());
        assert!(capset_unusable(CAPSET_VENUS, &[0, 0, 0]).is_some());
    }

    static LIBRARY: Mutex<()> = Mutex::new(());

    fn with_renderer(f: impl FnOnce(&mut VirglGpuRenderer)) {
        let _guard = LIBRARY.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = VirglGpuRenderer::new(VirglGpuRenderer::default_flags()).unwrap();
        f(&mut r);
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 3) as u8).collect()
    }

    fn wait_for(r: &mut VirglGpuRenderer, want: &[FenceId]) -> Vec<FenceId> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut got = Vec::new();
        while !want.iter().all(|w| got.contains(w)) {
            assert!(std::time::Instant::now() < deadline, "fences {got:?}");
            got.extend(r.poll());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        got
    }

    #[test]
    fn two_d_upload_and_readback_through_guest_memory() {
        with_renderer(|r| {
            let (w, h) = (37u32, 23u32);
            let m = mem();
            let len = (w * h * 4) as usize;
            let data = pattern(len);
            // The image lies in two guest ranges.
            let split = 1001usize;
            m.write_slice(&data[..split], GuestAddress(0x1000)).unwrap();
            m.write_slice(&data[split..], GuestAddress(0x20_0000))
                .unwrap();
            let backing = GuestBacking::new(
                m.clone(),
                vec![
                    BackingEntry {
                        addr: 0x1000,
                        len: split as u32,
                    },
                    BackingEntry {
                        addr: 0x20_0000,
                        len: (len - split) as u32,
                    },
                ],
            )
            .unwrap();
            r.resource_create_2d(1, VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, w, h)
                .unwrap();
            r.attach_backing(1, backing).unwrap();
            xfer(r, 1, Rect::new(0, 0, w, h), 0, (w, h)).unwrap();

            let mut out = vec![0u8; len];
            r.read_pixels(1, Rect::new(0, 0, w, h), &mut out).unwrap();
            // R8G8B8A8 in memory -> B, G, R, A out.
            for (i, (s, d)) in data.chunks_exact(4).zip(out.chunks_exact(4)).enumerate() {
                assert_eq!(d, [s[2], s[1], s[0], s[3]], "pixel {i}");
            }
            // So far on the host: the library has no such resource, rows are lent.
            assert!(r.shared.with_resource(1, |_| Ok(())).is_err());
            assert!(
                r.scanout_pixels(1, Rect::new(0, 0, w, h)).is_none(),
                "not x8r8g8b8"
            );

            // First 3D use: into the library, the pixels uploaded (read back below through GL:
            // every pixel outside the damaged rectangle comes from that upload).
            r.prepare_for_3d(1).unwrap();
            assert!(r.shared.with_resource(1, |_| Ok(())).is_ok());
            assert!(!r.host_2d.holds(1));
            r.read_pixels(1, Rect::new(0, 0, w, h), &mut out).unwrap();
            for (i, (s, d)) in data.chunks_exact(4).zip(out.chunks_exact(4)).enumerate() {
                assert_eq!(d, [s[2], s[1], s[0], s[3]], "pixel {i} after the upload");
            }

            // A damaged sub-rectangle: row i at offset + i * (width * 4) in the backing.
            let sub = Rect::new(5, 3, 4, 2);
            let offset = u64::from((sub.y * w + sub.x) * 4);
            let new = vec![0x5au8; len];
            m.write_slice(&new[..split], GuestAddress(0x1000)).unwrap();
            m.write_slice(&new[split..], GuestAddress(0x20_0000))
                .unwrap();
            xfer(r, 1, sub, offset, (w, h)).unwrap();
            r.read_pixels(1, Rect::new(0, 0, w, h), &mut out).unwrap();
            for y in 0..h {
                for x in 0..w {
                    let i = ((y * w + x) * 4) as usize;
                    let inside =
                        x >= sub.x && x < sub.x + sub.width && y >= sub.y && y < sub.y + sub.height;
                    let s = if inside {
                        &new[i..i + 4]
                    } else {
                        &data[i..i + 4]
                    };
                    assert_eq!(&out[i..i + 4], [s[2], s[1], s[0], s[3]], "({x},{y})");
                }
            }

            // Bad sizes are refused.
            assert!(r
                .read_pixels(1, Rect::new(0, 0, w, h), &mut out[..8])
                .is_err());
            assert!(r
                .read_pixels(1, Rect::new(w, 0, 1, 1), &mut [0u8; 4])
                .is_err());
            assert!(matches!(
                r.resource_create_2d(1, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 4, 4),
                Err(RendererError::InvalidResourceId(1))
            ));
            assert!(r.resource_create_2d(2, 9999, 4, 4).is_err());
            // Detach + unref.
            r.detach_backing(1).unwrap();
            assert!(xfer(r, 1, Rect::new(0, 0, w, h), 0, (w, h)).is_err());
            r.resource_unref(1).unwrap();
            assert!(matches!(
                r.resource_unref(1),
                Err(RendererError::InvalidResourceId(1))
            ));
        });
    }

    #[test]
    fn three_d_clear_fences_and_no_dmabuf_on_llvmpipe() {
        with_renderer(|r| {
            let caps = r.capsets();
            assert!(caps.iter().any(|c| c.id == 2 && c.max_version == 2));
            assert!(r.capset(2, 2).unwrap().len() > 1000);

            let mut ctx = r.create_context(1, 0, "test").unwrap();
            assert!(matches!(
                r.create_context(1, 0, "dup"),
                Err(RendererError::InvalidContextId(1))
            ));
            let args = ResourceCreate3d {
                target: PIPE_TEXTURE_2D,
                format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
                bind: BIND_RENDER_TARGET | BIND_SAMPLER_VIEW,
                width: 40,
                height: 30,
                depth: 1,
                array_size: 1,
                last_level: 0,
                nr_samples: 0,
                flags: 0,
            };
            r.resource_create_3d(5, &args).unwrap();
            ctx.attach_resource(5).unwrap();
            assert!(matches!(
                ctx.attach_resource(6),
                Err(RendererError::InvalidResourceId(6))
            ));
            let mut cmd = CommandBuffer::new();
            cmd.create_surface(1, 5, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 0, 0, 0)
                .set_framebuffer_state(0, &[1])
                .clear(PIPE_CLEAR_COLOR0, [1.0, 0.0, 0.0, 1.0], 1.0, 0);
            ctx.submit(&cmd.to_bytes()).unwrap();
            assert!(ctx.submit(&[1, 2, 3]).is_err());

            // Global fences with 64-bit guest ids, and a context fence.
            let g1 = FenceId {
                ctx_id: 1,
                ring_idx: None,
                id: (1 << 40) + 1,
            };
            let g2 = FenceId {
                ctx_id: 1,
                ring_idx: None,
                id: (1 << 40) + 2,
            };
            let c1 = FenceId {
                ctx_id: 1,
                ring_idx: Some(0),
                id: 7,
            };
            r.create_fence(1, g1.id).unwrap();
            ctx.create_fence(0, c1.id).unwrap();
            r.create_fence(1, g2.id).unwrap();
            // Virgl (GL) contexts have ring 0 only.
            assert!(ctx.create_fence(1, 8).is_err());
            let got = wait_for(r, &[g1, g2, c1]);
            let globals: Vec<_> = got.iter().filter(|f| f.ring_idx.is_none()).collect();
            assert_eq!(globals, vec![&g1, &g2]);
            assert!(r.poll_fd().is_some());

            // Read-back of the cleared target (TRANSFER_FROM_HOST_3D path too).
            let mut px = vec![0u8; 40 * 30 * 4];
            r.read_pixels(5, Rect::new(0, 0, 40, 30), &mut px).unwrap();
            assert!(px.chunks_exact(4).all(|p| p == [0, 0, 255, 255]));
            let m = mem();
            r.attach_backing(
                5,
                GuestBacking::new(
                    m.clone(),
                    vec![BackingEntry {
                        addr: 0,
                        len: 40 * 30 * 4,
                    }],
                )
                .unwrap(),
            )
            .unwrap();
            let t = Transfer3d {
                box3d: Box3d {
                    x: 0,
                    y: 0,
                    z: 0,
                    w: 40,
                    h: 30,
                    d: 1,
                },
                ..Default::default()
            };
            let t = CheckedTransfer3d::check(&t, ResourceShape::Texture(&args), Some(40 * 30 * 4))
                .unwrap();
            ctx.transfer_from_host_3d(5, &t).unwrap();
            let mut g = [0u8; 4];
            m.read_slice(&mut g, GuestAddress(4 * 40 * 29)).unwrap();
            assert_eq!(&g[..3], [0, 0, 255]);

            // No dmabuf on a software rasterizer: Unsupported, so the device reads pixels back.
            assert!(matches!(
                r.export_dmabuf(5),
                Err(RendererError::Unsupported(_))
            ));
            // Outside any context (ctx 0) too.
            m.write_slice(&[0u8; 4], GuestAddress(4 * 40 * 29)).unwrap();
            r.transfer_from_host_3d(5, &t).unwrap();
            m.read_slice(&mut g, GuestAddress(4 * 40 * 29)).unwrap();
            assert_eq!(&g[..3], [0, 0, 255]);

            // The device drops its contexts, then resets: everything is gone, ids can be reused.
            drop(ctx);
            r.reset();
            let _again = r.create_context(1, 0, "again").unwrap();
            r.resource_create_3d(5, &args).unwrap();
        });
    }

    #[test]
    fn a_context_left_after_its_renderer_fails_its_calls_and_drops_cleanly() {
        let _guard = LIBRARY.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = VirglGpuRenderer::new(VirglGpuRenderer::default_flags()).unwrap();
        let mut ctx = r.create_context(1, 0, "orphan").unwrap();
        r.resource_create_2d(1, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 4, 4)
            .unwrap();
        r.prepare_for_3d(1).unwrap();
        ctx.attach_resource(1).unwrap();
        // The device never does this (it drops contexts first); the context's handle keeps the
        // library alive, and what needs the renderer's resources is refused.
        drop(r);
        assert!(matches!(
            ctx.attach_resource(1),
            Err(RendererError::Library(_))
        ));
        drop(ctx);
        // The library was cleaned up with the last handle: it initialises again.
        let mut r = VirglGpuRenderer::new(VirglGpuRenderer::default_flags()).unwrap();
        let _ctx = r.create_context(1, 0, "again").unwrap();
    }

    #[test]
    fn guest_blob_scanout_reads_guest_pages() {
        with_renderer(|r| {
            let m = mem();
            let (w, h) = (8u32, 4u32);
            let stride = 64u32;
            let size = u64::from(stride * h);
            let data = pattern(size as usize);
            m.write_slice(&data, GuestAddress(0x3000)).unwrap();
            let backing = GuestBacking::new(
                m.clone(),
                vec![BackingEntry {
                    addr: 0x3000,
                    len: size as u32,
                }],
            )
            .unwrap();
            let args = CreateBlob {
                blob_mem: 1,
                blob_flags: 0,
                blob_id: 0,
                size,
            };
            r.create_blob(3, &args, Some(backing)).unwrap();
            let layout = BlobScanoutLayout {
                width: w,
                height: h,
                format: VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM,
                strides: [stride, 0, 0, 0],
                offsets: [0; 4],
            };
            let mut out = vec![0u8; (w * h * 4) as usize];
            r.read_blob_pixels(3, &layout, Rect::new(0, 0, w, h), &mut out)
                .unwrap();
            for y in 0..h as usize {
                let s = y * stride as usize;
                let d = y * (w as usize) * 4;
                assert_eq!(&out[d..d + w as usize * 4], &data[s..s + w as usize * 4]);
            }
            // An image beyond the blob is refused.
            let bad = BlobScanoutLayout {
                height: h + 1,
                ..layout
            };
            assert!(r
                .read_blob_pixels(3, &bad, Rect::new(0, 0, 1, 1), &mut [0u8; 4])
                .is_err());
            r.resource_unref(3).unwrap();
        });
    }
}
