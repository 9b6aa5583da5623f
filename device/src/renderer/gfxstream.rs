//! The gfxstream renderer, on the `gfxstream` crate (→ `gfxstream-sys` → libgfxstream_backend).
//!
//! Compiled only with the cargo feature `gfxstream` (off by default: the library is not
//! packaged, and the feature makes the build fail with a clear message where pkg-config does not
//! find it).
//!
//! - **3D**: contexts with the gfxstream capsets (Vulkan 3, GLES 8, composer 9), SUBMIT_3D
//!   (commands are length-checked by the `gfxstream` crate before the library reads them), 3D
//!   resources and transfers. gfxstream ignores a transfer's `offset`, `stride` and `level`: it
//!   copies the linear span of the box from/to the backing as if the backing were the whole
//!   image (as crosvm's gfxstream path does).
//! - **2D**: RESOURCE_CREATE_2D makes a GL colour buffer in the four formats gfxstream and
//!   virtio-gpu share (B8G8R8A8, B8G8R8X8, R8G8B8A8, R8G8B8X8: the values are the same in both
//!   enums). TRANSFER_TO_HOST_2D honours the guest's `offset`: when it is not the linear position
//!   of the rectangle, the rows are gathered into a staging image first.
//! - **Display**: gfxstream exports no dmabuf of a colour buffer here, so the device reads the
//!   damage back through [`Renderer::read_pixels`] (a `transfer_read` of the colour buffer).
//! - **Blobs**: `BLOB_MEM_HOST3D` blobs are the library's (ring blobs with blob id 0, or the
//!   objects a context's commands prepared); `BLOB_MEM_GUEST` blobs are guest pages the library
//!   never needs, kept (and scanned out) by an inner [`SoftwareRenderer`].
//!   `BLOB_MEM_HOST3D_GUEST` is not supported by gfxstream. With a host-visible region the
//!   daemon initialises the library with external blobs, so host blobs are shared memory that
//!   exports as an fd for RESOURCE_MAP_BLOB; with Vulkan, system blobs are added, so that
//!   host-visible Vulkan memory is such shared memory too rather than the host driver's own
//!   handle (lavapipe's starts its memory 4 KiB into the file). The library hands an fd over
//!   once, so the renderer keeps it and gives each later export a duplicate. SET_SCANOUT_BLOB
//!   of a host blob is read back through that handle (external blobs) or an in-process map (the
//!   others).
//! - **2D formats gfxstream lacks** (A8R8G8B8, X8R8G8B8, A8B8G8R8, X8B8G8R8) are held by the
//!   same inner software renderer: they display, but no gfxstream context can use them.
//! - **Fences**: the library signals completions on its own threads; they are collected through
//!   the crate's eventfd ([`Renderer::poll_fd`]).
//! - **Contexts**: a [`RenderContext`] holds the crate's `Context` (dropping it destroys the
//!   library's context) and a weak handle on what the renderer shares with its contexts (the
//!   library, the resources, the pending fences). Neither is `Send`: both stay on the GPU thread.
//!
//! The library can be initialised once per process: [`GfxstreamRenderer::new`] fails with
//! `gfxstream::Error::AlreadyInitialized` on a second call. On a headless Mesa host, set
//! `EGL_PLATFORM=surfaceless` before calling it (the library blocks in init otherwise; the
//! crate's watchdog turns that into an error).

use std::cell::{RefCell, RefMut};
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::rc::{Rc, Weak};

use ::gfxstream::{
    bind, target, BackingMemory, BlobArgs, BlobMem, Capset, Context, FenceRing, Gfxstream,
    HandleKind, InitOptions, RendererFlags, Resource, ResourceCreateArgs, TransferBox,
};
use log::{debug, warn};

use super::fence_seq::FenceSeq;
use super::formats::{PixelFormat, BYTES_PER_PIXEL};
use super::readback::{check_out_len, copy_rect_to_xrgb, BlobImage};
use super::software::SoftwareRenderer;
use super::{
    BlobHandleKind, BlobScanoutLayout, CapsetInfo, CheckedTransfer2d, CheckedTransfer3d,
    CreateBlob, ExportedBlob, FenceId, GuestBacking, Rect, RenderContext, Renderer,
    RendererCapabilities, RendererError, ResourceCreate3d, Result, Transfer3d,
};
use crate::protocol::{
    VIRTIO_GPU_BLOB_MEM_GUEST, VIRTIO_GPU_BLOB_MEM_HOST3D, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM,
    VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM,
    VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM,
};

/// Turns a `gfxstream` error into the device's.
fn map_err(e: ::gfxstream::Error) -> RendererError {
    use ::gfxstream::Error as E;
    match e {
        E::ZeroId(_) | E::ResourceExists(_) => RendererError::InvalidParameter(e.to_string()),
        E::ContextExists(id) | E::UnknownContext(id) => RendererError::InvalidContextId(id),
        E::InvalidDimensions { .. }
        | E::BoxOutOfBounds { .. }
        | E::WrongResourceKind { .. }
        | E::NoBacking(_)
        | E::BackingTooSmall { .. }
        | E::InvalidBacking { .. }
        | E::BadCommandLength { .. }
        | E::UnknownCommand(_)
        | E::InvalidRingIndex(_)
        | E::NameTooLong(_)
        | E::UnsupportedCapset(_)
        | E::InvalidBlob { .. }
        | E::MappingOutOfBounds { .. }
        | E::NulByte(_) => RendererError::InvalidParameter(e.to_string()),
        other => RendererError::Library(other.to_string()),
    }
}

/// Guest pages handed to the library as a resource's backing.
struct GuestPages {
    /// Keeps the guest memory regions mapped.
    _backing: GuestBacking,
    /// The host ranges of `_backing`, computed once.
    ranges: Vec<(NonNull<u8>, usize)>,
}

impl GuestPages {
    fn new(backing: GuestBacking) -> Result<GuestPages> {
        let ranges = backing
            .host_ranges()?
            .into_iter()
            .filter_map(|r| NonNull::new(r.addr).map(|p| (p, r.len)))
            .collect();
        Ok(GuestPages {
            _backing: backing,
            ranges,
        })
    }
}

// SAFETY: the pointers address guest memory mapped by the `GuestBacking` this value owns (its
// `GuestMemoryMmap` clone holds the regions), which has no thread affinity.
unsafe impl Send for GuestPages {}

// SAFETY: every range was checked by `GuestBacking::new` to lie inside guest memory, and stays
// mapped (at the same address) as long as `_backing` lives, i.e. as long as this value. Guest
// memory is shared with the guest by design: the library copies from/to it like any device.
unsafe impl BackingMemory for GuestPages {
    fn regions(&mut self) -> Vec<(NonNull<u8>, usize)> {
        self.ranges.clone()
    }
}

/// A resource the library holds.
struct LibraryResource {
    res: Resource,
    /// Width and height (0 for blobs).
    width: u32,
    height: u32,
    /// The pixel layout for scanout (`None`: not readable as RGB, or a blob).
    format: Option<PixelFormat>,
    /// A clone of the attached backing (for 2D transfers at an arbitrary offset).
    backing: Option<GuestBacking>,
    /// The blob's handle once exported: the library hands it over only once, so later exports
    /// (a second RESOURCE_MAP_BLOB after an unmap) get a duplicate of this one.
    exported: Option<(OwnedFd, BlobHandleKind)>,
}

/// The gfxstream renderer; its contexts are `GfxstreamContext`s.
pub struct GfxstreamRenderer {
    shared: Rc<Shared>,
    capsets: Vec<CapsetInfo>,
}

/// What the renderer and its contexts share: the library, and the state a context works on
/// (it attaches the renderer's resources, creates blobs and fences).
struct Shared {
    gfx: Gfxstream,
    state: RefCell<State>,
}

/// The renderer's resources and pending fences.
struct State {
    resources: HashMap<u32, LibraryResource>,
    /// Resources the library is not needed for, held by `soft`: `BLOB_MEM_GUEST` blobs, and 2D
    /// resources in the virtio formats gfxstream has no colour buffer for.
    soft_ids: HashSet<u32>,
    soft: SoftwareRenderer,
    /// The guest's pending fences and the library ids they were created with.
    fences: FenceSeq,
}

impl GfxstreamRenderer {
    /// Initialises libgfxstream_backend with `options` (for a headless host:
    /// `InitOptions::default()`, EGL + GLES + Vulkan, with `EGL_PLATFORM=surfaceless` in the
    /// environment).
    ///
    /// External blobs with Vulkan get system blobs too, so that host-visible Vulkan memory is
    /// exported as the library's own shared memory, which maps from offset 0 (the host driver's
    /// handle need not: lavapipe's starts its memory 4 KiB into its file).
    pub fn new(options: &InitOptions) -> std::result::Result<Self, ::gfxstream::Error> {
        let gfx = Gfxstream::init(&with_system_blobs(options))?;
        // Only what the library serves as initialised (no Vulkan capset without USE_VK).
        let capsets = Capset::ALL
            .iter()
            .filter_map(|&c| gfx.capset_info(c))
            .map(|i| CapsetInfo {
                id: i.capset.id(),
                max_version: i.max_version,
                max_size: i.max_size,
            })
            .collect();
        Ok(GfxstreamRenderer {
            shared: Rc::new(Shared {
                gfx,
                state: RefCell::new(State {
                    resources: HashMap::new(),
                    soft_ids: HashSet::new(),
                    soft: SoftwareRenderer::new(),
                    fences: FenceSeq::default(),
                }),
            }),
            capsets,
        })
    }
}

impl Shared {
    /// The shared state, to use or change it.
    fn state(&self) -> Result<RefMut<'_, State>> {
        self.state.try_borrow_mut().map_err(|_| {
            // A call into the adapter from inside the adapter, which the device never makes.
            RendererError::Library("gfxstream adapter re-entered".into())
        })
    }

    /// Creates `fence` in the library, on the global timeline or a context's ring.
    fn create_fence(&self, fence: FenceId) -> Result<()> {
        let ring = match fence.ring_idx {
            Some(ring_idx) => FenceRing::Context {
                ctx_id: fence.ctx_id,
                ring_idx,
            },
            None => FenceRing::Global,
        };
        let mut state = self.state()?;
        // The library is handed an id of ours (FenceSeq): its completions arrive from its own
        // threads, and one of the previous guest's may come after a reset.
        let id = state.fences.issue(fence);
        self.gfx.create_fence(ring, id).map_err(|e| {
            state.fences.withdraw(fence);
            map_err(e)
        })
    }

    /// A 3D transfer of resource `id` (in context `ctx_id`, which gfxstream does not use).
    fn transfer_3d(&self, ctx_id: u32, id: u32, t: &Transfer3d, to_host: bool) -> Result<()> {
        let state = self.state()?;
        let entry = state.resource(id)?;
        let bx = transfer_box_3d(t);
        if to_host {
            debug!(
                "ctx {ctx_id}: 3D transfer to resource {id} (offset {}, stride {}, level {} are \
                 ignored by gfxstream)",
                t.offset, t.stride, t.level
            );
            entry
                .res
                .transfer_write(&bx, t.offset, None)
                .map_err(map_err)
        } else {
            debug!("ctx {ctx_id}: 3D transfer from resource {id}");
            entry
                .res
                .transfer_read(&bx, t.offset, None)
                .map_err(map_err)
        }
    }

    /// RESOURCE_CREATE_BLOB: host blobs are made by context `ctx`, guest blobs (in a context or
    /// not) by the inner software renderer.
    fn create_blob(
        &self,
        ctx: Option<&Context>,
        id: u32,
        args: &CreateBlob,
        backing: Option<GuestBacking>,
    ) -> Result<()> {
        let mut state = self.state()?;
        if state.resources.contains_key(&id) || state.soft_ids.contains(&id) {
            return Err(RendererError::InvalidResourceId(id));
        }
        match args.blob_mem {
            VIRTIO_GPU_BLOB_MEM_GUEST => {
                state.soft.create_blob(id, args, backing)?;
                state.soft_ids.insert(id);
                Ok(())
            }
            VIRTIO_GPU_BLOB_MEM_HOST3D => {
                let ctx = ctx.ok_or(RendererError::InvalidContextId(0))?;
                let blob = BlobArgs {
                    mem: BlobMem::Host3d,
                    // VIRTIO_GPU_BLOB_FLAG_* and STREAM_BLOB_FLAG_* share their values; the
                    // crate refuses the unknown ones.
                    flags: args.blob_flags,
                    blob_id: args.blob_id,
                    size: args.size,
                };
                let res = ctx.create_blob(id, &blob).map_err(map_err)?;
                state.insert(
                    id,
                    LibraryResource {
                        res,
                        width: 0,
                        height: 0,
                        format: None,
                        backing: None,
                        exported: None,
                    },
                )
            }
            _ => Err(RendererError::Unsupported("BLOB_MEM_HOST3D_GUEST blobs")),
        }
    }
}

impl State {
    fn resource(&self, id: u32) -> Result<&LibraryResource> {
        self.resources
            .get(&id)
            .ok_or(RendererError::InvalidResourceId(id))
    }

    fn insert(&mut self, id: u32, res: LibraryResource) -> Result<()> {
        if self.resources.contains_key(&id) || self.soft_ids.contains(&id) {
            return Err(RendererError::InvalidResourceId(id));
        }
        self.resources.insert(id, res);
        Ok(())
    }
}

/// A gfxstream context: the library's context handle (dropping it destroys the context) and the
/// renderer's shared state, which it does not keep alive.
struct GfxstreamContext {
    ctx: Context,
    shared: Weak<Shared>,
}

impl GfxstreamContext {
    fn shared(&self) -> Result<Rc<Shared>> {
        super::shared_of(&self.shared, self.ctx.id())
    }
}

impl RenderContext for GfxstreamContext {
    fn attach_resource(&mut self, id: u32) -> Result<()> {
        let shared = self.shared()?;
        let state = shared.state()?;
        if state.soft_ids.contains(&id) {
            // The library has no such resource: nothing to attach.
            return Ok(());
        }
        self.ctx.attach_resource(&state.resource(id)?.res);
        Ok(())
    }

    fn detach_resource(&mut self, id: u32) -> Result<()> {
        let shared = self.shared()?;
        let state = shared.state()?;
        if state.soft_ids.contains(&id) {
            return Ok(());
        }
        self.ctx.detach_resource(&state.resource(id)?.res);
        Ok(())
    }

    fn submit(&mut self, commands: &[u8]) -> Result<()> {
        self.ctx.submit(commands).map_err(map_err)
    }

    fn create_fence(&mut self, ring_idx: u8, fence_id: u64) -> Result<()> {
        self.shared()?.create_fence(FenceId {
            ctx_id: self.ctx.id(),
            ring_idx: Some(ring_idx),
            id: fence_id,
        })
    }

    fn transfer_to_host_3d(&mut self, id: u32, t: &CheckedTransfer3d) -> Result<()> {
        self.shared()?.transfer_3d(self.ctx.id(), id, t.get(), true)
    }

    fn transfer_from_host_3d(&mut self, id: u32, t: &CheckedTransfer3d) -> Result<()> {
        self.shared()?
            .transfer_3d(self.ctx.id(), id, t.get(), false)
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

/// `options`, with [`RendererFlags::USE_SYSTEM_BLOB`] added where external blobs and Vulkan are
/// both on.
///
/// External blobs exist here so that a host blob reaches the frontend as a descriptor it maps
/// from offset 0 (RESOURCE_MAP_BLOB → SHMEM_MAP). Without system blobs, gfxstream exports
/// host-visible Vulkan memory as whatever the host Vulkan driver hands out, which need not be
/// that: lavapipe gives its own memfd, whose memory starts after a 4 KiB header (mapped from 0,
/// the guest reads and writes 4 KiB off, and can overwrite the header, which lavapipe reads
/// back when it frees the memory), and an opaque fd (what gfxstream exports where it keeps
/// dma-buf off, e.g. on NVIDIA) is not promised to be mappable at all. With system blobs,
/// gfxstream allocates that memory itself as a memfd, imports it into the driver as host memory
/// (`VK_EXT_external_memory_host`), and exports the memfd.
fn with_system_blobs(options: &InitOptions) -> InitOptions {
    let mut options = options.clone();
    if options.flags.contains(RendererFlags::USE_EXTERNAL_BLOB)
        && options.flags.contains(RendererFlags::USE_VK)
    {
        options.flags = options.flags | RendererFlags::USE_SYSTEM_BLOB;
    }
    options
}

/// The handle of blob `entry` (resource `id`), exported from the library on first use and kept:
/// the library hands it over only once.
fn exported_handle(
    entry: Option<&mut LibraryResource>,
    id: u32,
) -> Result<(BorrowedFd<'_>, BlobHandleKind)> {
    let entry = entry.ok_or(RendererError::InvalidResourceId(id))?;
    if entry.exported.is_none() {
        let exported = entry.res.export().map_err(map_err)?;
        let kind = match exported.kind {
            HandleKind::Dmabuf => BlobHandleKind::Dmabuf,
            HandleKind::OpaqueFd => BlobHandleKind::OpaqueFd,
            HandleKind::Shm => BlobHandleKind::Shm,
            HandleKind::Other(t) => {
                return Err(RendererError::Library(format!(
                    "blob {id} exported as unknown handle type {t:#x}"
                )))
            }
        };
        entry.exported = Some((exported.fd, kind));
    }
    let (fd, kind) = entry
        .exported
        .as_ref()
        .ok_or_else(|| RendererError::Library(format!("blob {id}: no exported handle")))?;
    Ok((fd.as_fd(), *kind))
}

fn transfer_box(rect: Rect) -> TransferBox {
    TransferBox {
        x: rect.x,
        y: rect.y,
        z: 0,
        w: rect.width,
        h: rect.height,
        d: 1,
    }
}

/// The library's box for a guest's 3D transfer.
fn transfer_box_3d(t: &Transfer3d) -> TransferBox {
    TransferBox {
        x: t.box3d.x,
        y: t.box3d.y,
        z: t.box3d.z,
        w: t.box3d.w,
        h: t.box3d.h,
        d: t.box3d.d,
    }
}

/// The bytes of a `width`×`height` image of 4-byte pixels, as a usize.
fn image_len(width: u32, height: u32) -> Result<usize> {
    u64::from(width)
        .checked_mul(u64::from(height))
        .and_then(|p| p.checked_mul(u64::from(BYTES_PER_PIXEL)))
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| RendererError::OutOfMemory(format!("{width}x{height}")))
}

impl Renderer for GfxstreamRenderer {
    fn name(&self) -> &'static str {
        "gfxstream"
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
        let gfx = &self.shared.gfx;
        let capset = Capset::from_id(id)
            .filter(|&c| gfx.serves(c))
            .ok_or_else(|| RendererError::InvalidParameter(format!("capset {id}")))?;
        gfx.capset(capset, version).map_err(map_err)
    }

    fn resource_create_2d(&mut self, id: u32, format: u32, width: u32, height: u32) -> Result<()> {
        // These four have the same value in virtio-gpu's and virgl's enums, and gfxstream knows
        // them; the other virtio 2D formats have no gfxstream colour-buffer format.
        let known = matches!(
            format,
            VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM
                | VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM
                | VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM
                | VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM
        );
        let mut state = self.shared.state()?;
        if state.resources.contains_key(&id) || state.soft_ids.contains(&id) {
            return Err(RendererError::InvalidResourceId(id));
        }
        let pixel_format = match PixelFormat::from_virtio(format) {
            Some(f) if known => f,
            _ => {
                // A 2D-only format (A8R8G8B8, X8R8G8B8, A8B8G8R8, X8B8G8R8), or none: the
                // software renderer holds (or refuses) it; no gfxstream context can use it.
                state.soft.resource_create_2d(id, format, width, height)?;
                state.soft_ids.insert(id);
                return Ok(());
            }
        };
        let args = ResourceCreateArgs {
            target: target::PIPE_TEXTURE_2D,
            format,
            bind: bind::RENDER_TARGET | bind::SAMPLER_VIEW | bind::SCANOUT,
            width,
            height,
            depth: 1,
            array_size: 1,
            ..ResourceCreateArgs::default()
        };
        let res = self
            .shared
            .gfx
            .create_resource(id, &args)
            .map_err(map_err)?;
        state.insert(
            id,
            LibraryResource {
                res,
                width,
                height,
                format: Some(pixel_format),
                backing: None,
                exported: None,
            },
        )
    }

    fn resource_create_3d(&mut self, id: u32, a: &ResourceCreate3d) -> Result<()> {
        let mut state = self.shared.state()?;
        if state.resources.contains_key(&id) || state.soft_ids.contains(&id) {
            return Err(RendererError::InvalidResourceId(id));
        }
        let args = ResourceCreateArgs {
            target: a.target,
            format: a.format,
            bind: a.bind,
            width: a.width,
            height: a.height,
            depth: a.depth,
            array_size: a.array_size,
            last_level: a.last_level,
            nr_samples: a.nr_samples,
            flags: a.flags,
        };
        let res = self
            .shared
            .gfx
            .create_resource(id, &args)
            .map_err(map_err)?;
        // The RGB formats virgl and virtio-gpu share can be scanned out by read-back.
        let format = PixelFormat::from_virtio(a.format).filter(|_| {
            matches!(
                a.format,
                VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM
                    | VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM
                    | VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM
                    | VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM
            ) && a.target == target::PIPE_TEXTURE_2D
        });
        state.insert(
            id,
            LibraryResource {
                res,
                width: a.width,
                height: a.height,
                format,
                backing: None,
                exported: None,
            },
        )
    }

    fn resource_unref(&mut self, id: u32) -> Result<()> {
        let mut state = self.shared.state()?;
        if state.soft_ids.remove(&id) {
            return state.soft.resource_unref(id);
        }
        // Dropping the handle unrefs it in the library, then drops the backing.
        state
            .resources
            .remove(&id)
            .map(drop)
            .ok_or(RendererError::InvalidResourceId(id))
    }

    fn attach_backing(&mut self, id: u32, backing: GuestBacking) -> Result<()> {
        let mut state = self.shared.state()?;
        if state.soft_ids.contains(&id) {
            return state.soft.attach_backing(id, backing);
        }
        let entry = state
            .resources
            .get_mut(&id)
            .ok_or(RendererError::InvalidResourceId(id))?;
        if entry.backing.is_some() {
            return Err(RendererError::InvalidParameter(format!(
                "resource {id} already has a backing"
            )));
        }
        let pages = GuestPages::new(backing.clone())?;
        entry.res.attach_backing(Box::new(pages)).map_err(map_err)?;
        entry.backing = Some(backing);
        Ok(())
    }

    fn attach_backing_copies(&self) -> bool {
        // stream_renderer_resource_attach_iov allocates and zero-fills a linear staging copy of
        // the whole backing (`gfxstream::MAX_BACKING_BYTES` at most). The 2D resources served by
        // the software renderer have none: charging them too over-counts, on the safe side.
        true
    }

    fn detach_backing(&mut self, id: u32) -> Result<()> {
        let mut state = self.shared.state()?;
        if state.soft_ids.contains(&id) {
            return state.soft.detach_backing(id);
        }
        let entry = state
            .resources
            .get_mut(&id)
            .ok_or(RendererError::InvalidResourceId(id))?;
        entry.res.detach_backing();
        entry.backing = None;
        Ok(())
    }

    fn transfer_to_host_2d(&mut self, id: u32, t: &CheckedTransfer2d) -> Result<()> {
        let mut state = self.shared.state()?;
        if state.soft_ids.contains(&id) {
            return state.soft.transfer_to_host_2d(id, t);
        }
        // Inside the resource and the backing: the device checked both (CheckedTransfer2d).
        let (rect, offset) = (t.rect(), t.offset());
        let entry = state.resource(id)?;
        if entry.format.is_none() {
            return Err(RendererError::InvalidParameter(format!(
                "TRANSFER_TO_HOST_2D on resource {id}, which is not a 2D image"
            )));
        }
        if rect.is_empty() {
            return Ok(());
        }
        let backing = entry.backing.as_ref().ok_or_else(|| {
            RendererError::InvalidParameter(format!("resource {id} has no backing"))
        })?;
        let bpp = u64::from(BYTES_PER_PIXEL);
        let stride = u64::from(entry.width) * bpp;
        let linear = u64::from(rect.y) * stride + u64::from(rect.x) * bpp;
        let bx = transfer_box(rect);
        // The library copies the box's whole linear span from the backing: the rectangle's
        // rows and, between them, the pixels left and right of it. That is the rectangle
        // exactly only for one row or full-width rows at their linear offset.
        let span_is_rect = rect.height == 1 || (rect.x == 0 && rect.width == entry.width);
        if offset == linear && span_is_rect {
            return entry.res.transfer_write(&bx, 0, None).map_err(map_err);
        }
        // Otherwise gather the guest's rows (at `offset + i * stride`) into a linear image that
        // starts from the current contents, so that the pixels outside the rectangle stay as
        // they are.
        debug!("resource {id}: 2D transfer of {rect:?} at offset {offset}: staging copy");
        let row_len = u64::from(rect.width) * bpp;
        let mut staging = vec![0u8; image_len(entry.width, entry.height)?];
        entry
            .res
            .transfer_read(&bx, 0, Some(&mut staging))
            .map_err(map_err)?;
        // All positions are inside the image (rect is inside the resource).
        let row = row_len as usize;
        for i in 0..u64::from(rect.height) {
            let dst = (linear + i * stride) as usize;
            let dst_row = staging
                .get_mut(dst..dst + row)
                .ok_or_else(|| RendererError::InvalidParameter("row outside image".into()))?;
            backing.read_at(offset + i * stride, dst_row)?;
        }
        entry
            .res
            .transfer_write(&bx, 0, Some(&staging))
            .map_err(map_err)
    }

    fn transfer_to_host_3d(&mut self, id: u32, t: &CheckedTransfer3d) -> Result<()> {
        self.shared.transfer_3d(0, id, t.get(), true)
    }

    fn transfer_from_host_3d(&mut self, id: u32, t: &CheckedTransfer3d) -> Result<()> {
        self.shared.transfer_3d(0, id, t.get(), false)
    }

    fn create_context(
        &mut self,
        ctx_id: u32,
        capset_id: u32,
        name: &str,
    ) -> Result<Box<dyn RenderContext>> {
        let capset = match capset_id {
            0 => None,
            id => Some(Capset::from_id(id).ok_or_else(|| {
                RendererError::InvalidParameter(format!("capset {id} is not a gfxstream capset"))
            })?),
        };
        // The guest's debug name holds at most 64 bytes, but lossy UTF-8 decoding can make it
        // longer; the library takes at most 64: cut it at a character boundary.
        let mut end = name.len().min(gfxstream::MAX_CONTEXT_NAME);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        // The crate refuses an id in use (ContextExists).
        let ctx = self
            .shared
            .gfx
            .create_context(ctx_id, &name[..end], capset)
            .map_err(map_err)?;
        Ok(Box::new(GfxstreamContext {
            ctx,
            shared: Rc::downgrade(&self.shared),
        }))
    }

    fn create_fence(&mut self, ctx_id: u32, fence_id: u64) -> Result<()> {
        self.shared.create_fence(FenceId {
            ctx_id,
            ring_idx: None,
            id: fence_id,
        })
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.shared.gfx.fence_fd())
    }

    fn poll(&mut self) -> Vec<FenceId> {
        let mut state = match self.shared.state() {
            Ok(state) => state,
            Err(e) => {
                warn!("poll: {e}");
                return Vec::new();
            }
        };
        let mut done = Vec::new();
        for f in self.shared.gfx.completed_fences() {
            let (ctx_id, ring_idx) = match f.ring {
                FenceRing::Global => (0, None),
                FenceRing::Context { ctx_id, ring_idx } => (ctx_id, Some(ring_idx)),
            };
            let released = state.fences.complete(ctx_id, ring_idx, f.fence_id);
            if released.is_empty() {
                debug!(
                    "completed fence {} ({:?}) is not pending",
                    f.fence_id, f.ring
                );
            }
            done.extend(released);
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
        let mut state = self.shared.state()?;
        let (fd, kind) = exported_handle(state.resources.get_mut(&id), id)?;
        let fd = fd
            .try_clone_to_owned()
            .map_err(|e| RendererError::Library(format!("blob {id}: dup of its handle: {e}")))?;
        Ok(ExportedBlob::new(fd, kind))
    }

    fn map_info(&mut self, id: u32) -> Result<u32> {
        let state = self.shared.state()?;
        let caching = state.resource(id)?.res.map_caching().map_err(map_err)?;
        Ok(caching.map_info())
    }

    fn read_pixels(&mut self, id: u32, rect: Rect, out: &mut [u8]) -> Result<()> {
        let mut state = self.shared.state()?;
        if state.soft_ids.contains(&id) {
            return state.soft.read_pixels(id, rect, out);
        }
        let entry = state
            .resources
            .get_mut(&id)
            .ok_or(RendererError::InvalidResourceId(id))?;
        let format = entry.format.ok_or_else(|| {
            RendererError::InvalidParameter(format!("resource {id} is not an RGB image"))
        })?;
        if !rect.is_inside(entry.width, entry.height) {
            return Err(RendererError::InvalidParameter(format!(
                "{rect:?} outside {}x{}",
                entry.width, entry.height
            )));
        }
        let row = check_out_len(rect, out)?;
        if row == 0 {
            return Ok(());
        }
        let len = image_len(entry.width, entry.height)?;
        let mut image = vec![0u8; len];
        let bx = transfer_box(rect);
        if entry.res.has_backing() {
            entry
                .res
                .transfer_read(&bx, 0, Some(&mut image))
                .map_err(map_err)?;
        } else {
            // The library reads a colour buffer through a staging copy sized by the backing:
            // lend it a host one for the read.
            entry
                .res
                .attach_backing(Box::new(vec![0u8; len]))
                .map_err(map_err)?;
            let read = entry.res.transfer_read(&bx, 0, Some(&mut image));
            entry.res.detach_backing();
            read.map_err(map_err)?;
        }
        copy_rect_to_xrgb(&format, &image, entry.width, rect, row, out)
    }

    fn read_blob_pixels(
        &mut self,
        id: u32,
        layout: &BlobScanoutLayout,
        rect: Rect,
        out: &mut [u8],
    ) -> Result<()> {
        let mut guard = self.shared.state()?;
        let state = &mut *guard;
        if state.soft_ids.contains(&id) {
            return state.soft.read_blob_pixels(id, layout, rect, out);
        }
        let size =
            state.resource(id)?.res.blob_size().ok_or_else(|| {
                RendererError::InvalidParameter(format!("resource {id} is no blob"))
            })?;
        let Some(image) = BlobImage::check(layout, rect, out, size)? else {
            return Ok(());
        };
        // External blobs are shared memory: read through the renderer's own handle (the guest's
        // mapping in the host-visible region is another mapping of the same memory). Other
        // host blobs map in-process; a blob that does neither cannot be scanned out.
        let handle = exported_handle(state.resources.get_mut(&id), id).and_then(|(fd, kind)| {
            let fd = fd.try_clone_to_owned().map_err(|e| {
                RendererError::Library(format!("blob {id}: dup of its handle: {e}"))
            })?;
            Ok((fd, kind))
        });
        match handle {
            Ok((fd, BlobHandleKind::Shm)) => {
                let file = std::fs::File::from(fd);
                image.read(out, |at, row| {
                    std::os::unix::fs::FileExt::read_exact_at(&file, row, at)
                        .map_err(|e| RendererError::Library(format!("blob {id}: read: {e}")))
                })
            }
            exported => {
                let map = state.resource(id)?.res.map().map_err(|e| {
                    RendererError::Library(format!(
                        "blob {id} can neither be read through its handle ({:?}) nor mapped: {e}",
                        exported.map(|(_, k)| k)
                    ))
                })?;
                image.read(out, |at, row| map.read(at, row).map_err(map_err))
            }
        }
    }

    fn reset(&mut self) {
        // The device dropped every context already (they went before this call).
        let mut state = match self.shared.state() {
            Ok(state) => state,
            Err(e) => {
                warn!("reset: {e}");
                return;
            }
        };
        if !state.resources.is_empty() {
            warn!(
                "gfxstream renderer reset with {} resources left",
                state.resources.len()
            );
        }
        state.resources.clear();
        // Completions already in the library's table are dropped; later ones of the previous
        // guest name no pending fence (FenceSeq).
        let stale = self.shared.gfx.completed_fences();
        if !stale.is_empty() {
            debug!("dropped {} fences completed across a reset", stale.len());
        }
        state.fences.clear();
        state.soft_ids.clear();
        state.soft.reset();
    }
}

/// These tests initialise the library, once per process: run them under cargo-nextest, with
/// `PKG_CONFIG_PATH`/`LD_LIBRARY_PATH` pointing at libgfxstream_backend (the `gfxstream` feature
/// needs it to build at all).
#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::*;
    use crate::renderer::{BackingEntry, ResourceShape};

    fn renderer() -> GfxstreamRenderer {
        if std::env::var_os("EGL_PLATFORM").is_none() {
            std::env::set_var("EGL_PLATFORM", "surfaceless");
        }
        GfxstreamRenderer::new(&InitOptions::default()).expect("gfxstream init")
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// Pixel (x, y) of the test image in B8G8R8X8 byte order.
    fn px(x: u32, y: u32) -> [u8; 4] {
        [x as u8, y as u8, (x * 3 + y) as u8, 0x55]
    }

    #[test]
    fn a_long_lossy_context_name_is_cut_at_a_character_boundary() {
        let mut r = renderer();
        // 64 invalid bytes decode to 64 U+FFFD (192 bytes); 3-byte characters do not divide 64.
        let name = String::from_utf8_lossy(&[0xff; 64]).into_owned();
        assert!(name.len() > gfxstream::MAX_CONTEXT_NAME);
        let ctx = r
            .create_context(1, 0, &name)
            .expect("context with a cut name");
        drop(ctx);
    }

    #[test]
    fn two_d_resource_round_trips_through_guest_memory() {
        let mut r = renderer();
        let (w, h) = (16u32, 8u32);
        r.resource_create_2d(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, w, h)
            .expect("create");
        let m = mem();
        let base = 0x1000u64;
        for y in 0..h {
            for x in 0..w {
                let at = base + u64::from((y * w + x) * 4);
                m.write_slice(&px(x, y), GuestAddress(at)).unwrap();
            }
        }
        let backing = GuestBacking::new(
            m.clone(),
            vec![BackingEntry {
                addr: base,
                len: w * h * 4,
            }],
        )
        .unwrap();
        r.attach_backing(1, backing).expect("attach");
        let whole = u64::from(w * h * 4);
        // As the device runs it: the validation step's check, then the renderer.
        let checked = |rect: Rect, offset: u64| {
            let shape = ResourceShape::Plain2d {
                width: w,
                height: h,
            };
            CheckedTransfer2d::check(rect, offset, shape, Some(whole))
        };
        r.transfer_to_host_2d(1, &checked(Rect::new(0, 0, w, h), 0).unwrap())
            .expect("transfer");

        let mut out = vec![0u8; (w * h * 4) as usize];
        r.read_pixels(1, Rect::new(0, 0, w, h), &mut out)
            .expect("read");
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 4) as usize;
                let p = px(x, y);
                // XRGB8888 out: B, G, R, 0xff.
                assert_eq!(&out[i..i + 4], &[p[0], p[1], p[2], 0xff], "pixel {x},{y}");
            }
        }

        // A transfer whose offset is not the rectangle's linear position: rows are taken from
        // `offset + i * stride`, and the pixels around the rectangle stay as they were.
        let marker = [0xaa, 0xbb, 0xcc, 0x00];
        for y in 0..3u32 {
            for x in 0..4u32 {
                let at = base + u64::from((y * w + x) * 4);
                m.write_slice(&marker, GuestAddress(at)).unwrap();
            }
        }
        r.transfer_to_host_2d(1, &checked(Rect::new(5, 2, 4, 3), 0).unwrap())
            .expect("offset transfer");
        let mut out = vec![0u8; (w * h * 4) as usize];
        r.read_pixels(1, Rect::new(0, 0, w, h), &mut out)
            .expect("read");
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 4) as usize;
                let inside = (5..9).contains(&x) && (2..5).contains(&y);
                let want = if inside {
                    [0xaa, 0xbb, 0xcc, 0xff]
                } else {
                    let p = px(x, y);
                    [p[0], p[1], p[2], 0xff]
                };
                assert_eq!(&out[i..i + 4], &want, "pixel {x},{y}");
            }
        }

        // A sub-rectangle read.
        let mut part = vec![0u8; 2 * 2 * 4];
        r.read_pixels(1, Rect::new(6, 3, 2, 2), &mut part)
            .expect("read part");
        assert_eq!(&part[..4], &[0xaa, 0xbb, 0xcc, 0xff]);

        // Bad input is refused with a device error, not a crash.
        assert!(r
            .read_pixels(1, Rect::new(15, 0, 2, 1), &mut [0; 8])
            .is_err());
        assert!(checked(Rect::new(0, 0, w, h), 64).is_err());
        // A format gfxstream lacks is held by the software renderer, and still displays.
        r.resource_create_2d(2, crate::protocol::VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM, 4, 4)
            .expect("2D-only format");
        r.read_pixels(2, Rect::new(0, 0, 4, 4), &mut [0; 64])
            .expect("read the 4x4 2D-only resource");
        assert!(r.resource_create_2d(3, 0x7777, 4, 4).is_err());
        r.resource_unref(2).expect("unref 2D-only resource");
        assert!(r
            .resource_create_2d(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4)
            .is_err());
        r.resource_unref(1).expect("unref");
        assert!(r.resource_unref(1).is_err());
    }

    #[test]
    fn capsets_contexts_and_fences() {
        let mut r = renderer();
        let ids: Vec<(u32, u32)> = r.capsets().iter().map(|c| (c.id, c.max_size)).collect();
        assert_eq!(ids, vec![(3, 104), (8, 16), (9, 16)]);
        assert_eq!(r.capset(8, 0).unwrap().len(), 16);
        assert!(r.capset(1, 0).is_err());

        let mut ctx = r.create_context(1, 8, "gles").expect("context");
        assert!(r.create_context(2, 1, "virgl").is_err());
        assert!(matches!(
            r.create_context(1, 8, "again"),
            Err(RendererError::InvalidContextId(1))
        ));

        r.create_fence(1, 3).unwrap();
        ctx.create_fence(0, 9).unwrap();
        assert!(r.poll_fd().is_some());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < 2 && Instant::now() < deadline {
            got.extend(r.poll());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(got.contains(&FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 3
        }));
        assert!(got.contains(&FenceId {
            ctx_id: 1,
            ring_idx: Some(0),
            id: 9
        }));
        // Dropping the context destroys it: its id can be used again.
        drop(ctx);
        let _again = r.create_context(1, 8, "again").expect("context again");
    }

    #[test]
    fn external_host_blob_exports_again_as_the_same_memory() {
        use std::fs::File;
        use std::os::unix::fs::{FileExt, MetadataExt};
        if std::env::var_os("EGL_PLATFORM").is_none() {
            std::env::set_var("EGL_PLATFORM", "surfaceless");
        }
        let defaults = InitOptions::default();
        let options = InitOptions {
            flags: defaults.flags | ::gfxstream::RendererFlags::USE_EXTERNAL_BLOB,
            ..defaults
        };
        let mut r = GfxstreamRenderer::new(&options).expect("gfxstream init");
        // Vulkan memory is then the library's shared memory too, not the host driver's handle.
        assert!(r
            .shared
            .gfx
            .flags()
            .contains(RendererFlags::USE_SYSTEM_BLOB));
        let mut ctx = r.create_context(1, 8, "blobs").expect("context");
        let host = CreateBlob {
            blob_mem: VIRTIO_GPU_BLOB_MEM_HOST3D,
            blob_flags: 1,
            blob_id: 0,
            size: 8192,
        };
        ctx.create_blob(5, &host, None).expect("host blob");
        let first = r.export_blob(5).expect("first export");
        // The library hands its handle over once; the renderer's second export is a duplicate.
        let second = r.export_blob(5).expect("second export");
        assert_eq!(
            (first.kind, second.kind),
            (BlobHandleKind::Shm, BlobHandleKind::Shm)
        );
        let (a, b) = (File::from(first.fd), File::from(second.fd));
        let (ma, mb) = (a.metadata().unwrap(), b.metadata().unwrap());
        assert_eq!((ma.dev(), ma.ino()), (mb.dev(), mb.ino()));
        assert!(ma.len() >= 8192);
        a.write_all_at(&[1, 2, 3, 4], 4000).unwrap();
        let mut back = [0u8; 4];
        b.read_exact_at(&mut back, 4000).unwrap();
        assert_eq!(back, [1, 2, 3, 4]);
        // The scanout read-back goes through the same memory.
        let layout = BlobScanoutLayout {
            width: 2,
            height: 2,
            format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
            strides: [16, 0, 0, 0],
            offsets: [4000, 0, 0, 0],
        };
        a.write_all_at(&[9, 8, 7, 0, 6, 5, 4, 0], 4016).unwrap();
        let mut out = [0u8; 16];
        r.read_blob_pixels(5, &layout, Rect::new(0, 0, 2, 2), &mut out)
            .expect("read-back");
        assert_eq!(&out[..3], &[1, 2, 3]);
        assert_eq!(&out[8..11], &[9, 8, 7]);
        assert_eq!(&out[12..15], &[6, 5, 4]);
        let beyond = BlobScanoutLayout {
            offsets: [8192 - 16, 0, 0, 0],
            ..layout
        };
        assert!(matches!(
            r.read_blob_pixels(5, &beyond, Rect::new(0, 0, 2, 2), &mut out),
            Err(RendererError::InvalidParameter(_))
        ));
        assert!(matches!(
            r.export_blob(9),
            Err(RendererError::InvalidResourceId(9))
        ));
    }

    #[test]
    fn external_blobs_with_vulkan_get_system_blobs() {
        let defaults = InitOptions::default();
        let external = InitOptions {
            flags: defaults.flags | RendererFlags::USE_EXTERNAL_BLOB,
            ..defaults.clone()
        };
        assert_eq!(
            with_system_blobs(&external).flags,
            external.flags | RendererFlags::USE_SYSTEM_BLOB
        );
        // Without external blobs, or without Vulkan (no Vulkan memory), nothing changes.
        assert_eq!(with_system_blobs(&defaults).flags, defaults.flags);
        let gles = RendererFlags::USE_EGL | RendererFlags::USE_GLES;
        let gles_external = InitOptions {
            flags: gles | RendererFlags::USE_EXTERNAL_BLOB,
            ..defaults
        };
        assert_eq!(with_system_blobs(&gles_external).flags, gles_external.flags);
        assert!(with_system_blobs(&external).flags.validate().is_ok());
    }

    #[test]
    fn host_and_soft() {
        let mut r = renderer();
        let mut ctx = r.create_context(1, 8, "blobs").expect("context");
        let host = CreateBlob {
            blob_mem: VIRTIO_GPU_BLOB_MEM_HOST3D,
            blob_flags: 1,
            blob_id: 0,
            size: 4096,
        };
        ctx.create_blob(5, &host, None).expect("host blob");
        assert_eq!(
            r.map_info(5).unwrap(),
            crate::protocol::VIRTIO_GPU_MAP_CACHE_CACHED
        );
        // A host blob outside any context is refused.
        assert!(matches!(
            r.create_blob(6, &host, None),
            Err(RendererError::InvalidContextId(0))
        ));
        // Not exportable without external blobs: the scanout read-back maps it in-process.
        assert!(r.export_blob(5).is_err());
        r.shared.state.borrow().resources[&5]
            .res
            .map()
            .expect("map")
            .write(64, &[1, 2, 3, 0, 4, 5, 6, 0])
            .expect("write");
        let layout = BlobScanoutLayout {
            width: 2,
            height: 1,
            format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
            strides: [8, 0, 0, 0],
            offsets: [64, 0, 0, 0],
        };
        let mut out = [0u8; 8];
        r.read_blob_pixels(5, &layout, Rect::new(0, 0, 2, 1), &mut out)
            .expect("read-back");
        assert_eq!(
            (&out[..3], &out[4..7]),
            (&[1u8, 2, 3][..], &[4u8, 5, 6][..])
        );
        // A blob id no context prepared: the library "succeeds", the adapter notices.
        let missing = CreateBlob {
            blob_id: 77,
            ..host
        };
        assert!(ctx.create_blob(6, &missing, None).is_err());

        let m = mem();
        let (w, h) = (4u32, 2u32);
        for i in 0..w * h {
            m.write_slice(&[i as u8, 0, 0, 0], GuestAddress(0x2000 + u64::from(i) * 4))
                .unwrap();
        }
        let guest = CreateBlob {
            blob_mem: VIRTIO_GPU_BLOB_MEM_GUEST,
            blob_flags: 0,
            blob_id: 0,
            size: u64::from(w * h * 4),
        };
        let backing = GuestBacking::new(
            m,
            vec![BackingEntry {
                addr: 0x2000,
                len: w * h * 4,
            }],
        )
        .unwrap();
        r.create_blob(7, &guest, Some(backing)).expect("guest blob");
        let layout = BlobScanoutLayout {
            width: w,
            height: h,
            format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
            strides: [w * 4, 0, 0, 0],
            offsets: [0; 4],
        };
        let mut out = vec![0u8; (w * h * 4) as usize];
        r.read_blob_pixels(7, &layout, Rect::new(0, 0, w, h), &mut out)
            .expect("guest blob scanout");
        assert_eq!(&out[4..8], &[1, 0, 0, 0xff]);
        r.resource_unref(7).expect("unref guest blob");
        r.resource_unref(5).expect("unref host blob");
    }
}
