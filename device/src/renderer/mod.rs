//! The seam between the device state (`gpu/`) and a renderer, in two parts: [`Renderer`], the
//! device-level part (capabilities, capsets, resources and their backing, 2D transfers, the
//! global fence timeline and completions, blobs, exports, read-backs, reset), and
//! [`RenderContext`], one object per rendering context, made by [`Renderer::create_context`] and
//! owned by the device (resources attached to it, SUBMIT_3D, its 3D transfers, fences on its
//! rings and blobs made in it). The pixel formats every renderer shares are in [`formats`], the
//! display read-back code in [`readback`].
//!
//! The device validates every guest value it can (ids, rectangles against the resource size,
//! counts, sizes) before it calls a renderer; a renderer still checks what only it can know
//! (backing large enough for a transfer, a format it supports) and answers with a typed
//! [`RendererError`], which the device turns into a `VIRTIO_GPU_RESP_ERR_*`.
//!
//! Neither a renderer nor a context is required to be `Send`: the daemon runs the whole
//! `VirtioGpu` on one dedicated thread, because virglrenderer's GL context is thread-affine.
//!
//! Optional parts (3D, contexts, blobs, dmabuf export) have default methods that answer
//! [`RendererError::Unsupported`]; the device only offers the feature bits that
//! [`Renderer::capabilities`] claims, so a guest reaching a default method gets an error
//! response, never a crash.

pub use checked::{CheckedTransfer2d, CheckedTransfer3d, ResourceShape};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryError,
    GuestMemoryMmap, GuestMemoryRegion, Permissions,
};

pub use crate::protocol::{Box3d, Rect};

pub mod checked;
pub mod export;
pub mod fence_seq;
pub mod formats;
#[cfg(feature = "gfxstream")]
pub mod gfxstream;
pub mod readback;
pub mod software;
#[cfg(feature = "virglrenderer")]
pub mod virgl;

/// What went wrong in a renderer. The device maps each variant to a `VIRTIO_GPU_RESP_ERR_*`
/// (see [`GpuError::error_code`](crate::gpu::GpuError::error_code)): `Unsupported` and `Library`
/// to ERR_UNSPEC, `OutOfMemory` to ERR_OUT_OF_MEMORY, the `Invalid*` variants to their
/// namesakes, `GuestMemory` to ERR_INVALID_PARAMETER.
#[derive(Debug, thiserror::Error)]
pub enum RendererError {
    /// The renderer does not implement this operation.
    #[error("{0} is not supported by this renderer")]
    Unsupported(&'static str),
    /// The renderer could not get the host memory the operation needs.
    #[error("out of host memory: {0}")]
    OutOfMemory(String),
    /// The renderer does not know this resource id (or it is of the wrong kind).
    #[error("invalid resource id {0}")]
    InvalidResourceId(u32),
    /// The renderer does not know this context id.
    #[error("invalid context id {0}")]
    InvalidContextId(u32),
    /// A parameter the renderer cannot accept (format, size, a backing too small...).
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// A guest memory access failed (range outside guest memory).
    #[error("guest memory access failed: {0}")]
    GuestMemory(#[from] GuestMemoryError),
    /// The underlying library reported an error.
    #[error("renderer library error: {0}")]
    Library(String),
}

/// Result of a renderer operation.
pub type Result<T> = std::result::Result<T, RendererError>;

/// What a renderer implements; the device derives the `VIRTIO_GPU_F_*` bits it offers from it
/// ("a bit is offered only if every command it enables is implemented").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RendererCapabilities {
    /// 3D: contexts, CREATE_3D, 3D transfers, SUBMIT_3D, capsets (`VIRTIO_GPU_F_VIRGL`).
    pub three_d: bool,
    /// Contexts created with a capset id (`VIRTIO_GPU_F_CONTEXT_INIT`, needs `three_d`).
    pub context_init: bool,
    /// `BLOB_MEM_GUEST` blobs and SET_SCANOUT_BLOB on them (`VIRTIO_GPU_F_RESOURCE_BLOB`).
    pub blob_guest: bool,
    /// `BLOB_MEM_HOST3D` / `BLOB_MEM_HOST3D_GUEST` blobs (needs `three_d`).
    pub blob_host: bool,
}

/// One capability set the renderer offers (GET_CAPSET_INFO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapsetInfo {
    /// `VIRTIO_GPU_CAPSET_*`.
    pub id: u32,
    /// The highest version the renderer knows.
    pub max_version: u32,
    /// The largest size of the capset data in bytes.
    pub max_size: u32,
}

/// Arguments of RESOURCE_CREATE_3D (the guest's gallium-style resource description).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceCreate3d {
    /// Gallium `pipe_texture_target`.
    pub target: u32,
    /// Gallium/virgl format.
    pub format: u32,
    /// Gallium bind flags.
    pub bind: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Depth.
    pub depth: u32,
    /// Number of array layers.
    pub array_size: u32,
    /// Last mip level.
    pub last_level: u32,
    /// Number of samples.
    pub nr_samples: u32,
    /// `VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP` and friends.
    pub flags: u32,
}

/// Arguments of TRANSFER_TO_HOST_3D / TRANSFER_FROM_HOST_3D.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer3d {
    /// The box to transfer.
    pub box3d: Box3d,
    /// Byte offset into the backing.
    pub offset: u64,
    /// Mip level.
    pub level: u32,
    /// Stride of the backing in bytes (0: the renderer's default).
    pub stride: u32,
    /// Layer stride of the backing in bytes (0: the renderer's default).
    pub layer_stride: u32,
}

/// Arguments of RESOURCE_CREATE_BLOB (besides the resource id, the context and the backing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreateBlob {
    /// `VIRTIO_GPU_BLOB_MEM_*`.
    pub blob_mem: u32,
    /// `VIRTIO_GPU_BLOB_FLAG_*`.
    pub blob_flags: u32,
    /// Context-local object id for host blobs (0 for guest blobs).
    pub blob_id: u64,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// How a blob resource lays out a scanout image (SET_SCANOUT_BLOB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobScanoutLayout {
    /// Width of the image in pixels.
    pub width: u32,
    /// Height of the image in pixels.
    pub height: u32,
    /// `VIRTIO_GPU_FORMAT_*`.
    pub format: u32,
    /// Per-plane strides in bytes (only plane 0 is used for the single-plane RGB formats).
    pub strides: [u32; 4],
    /// Per-plane offsets in bytes into the blob.
    pub offsets: [u32; 4],
}

/// A resource exported as a dmabuf, for a zero-copy scanout.
#[derive(Debug)]
pub struct Dmabuf {
    /// The dmabuf.
    pub fd: OwnedFd,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Stride in bytes.
    pub stride: u32,
    /// DRM fourcc.
    pub fourcc: u32,
    /// DRM format modifier, when known.
    pub modifier: Option<u64>,
    /// `VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP` and friends.
    pub flags: u32,
}

/// The kind of handle a blob was exported as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobHandleKind {
    /// A Linux dmabuf.
    Dmabuf,
    /// An opaque fd (e.g. a Vulkan opaque fd).
    OpaqueFd,
    /// A shared-memory fd (memfd), mappable with mmap.
    Shm,
}

/// A blob exported as a file descriptor.
#[derive(Debug)]
pub struct ExportedBlob {
    /// The handle.
    pub fd: OwnedFd,
    /// What the handle is.
    pub kind: BlobHandleKind,
    /// Where the blob's memory starts in the descriptor ([`export::memory_offset`]): mappings
    /// of the blob start there.
    pub offset: u64,
}

impl ExportedBlob {
    /// `fd` of `kind`, with the offset its memory starts at found by [`export::memory_offset`].
    pub fn new(fd: OwnedFd, kind: BlobHandleKind) -> Self {
        let offset = export::memory_offset(fd.as_fd(), kind);
        ExportedBlob { fd, kind, offset }
    }
}

/// A completed fence as [`Renderer::poll`] reports it: a point on a (context, ring) timeline.
///
/// `ring_idx: None` is the device-global timeline (a fence without
/// `VIRTIO_GPU_FLAG_INFO_RING_IDX`), whatever `ctx_id` says. Ids are the guest's `fence_id`,
/// full 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FenceId {
    /// The context the fenced command belongs to (0: none).
    pub ctx_id: u32,
    /// The ring of the context, `None` for the global timeline.
    pub ring_idx: Option<u8>,
    /// The guest's fence id (a sequence number on the timeline).
    pub id: u64,
}

/// One contiguous piece of guest backing (a validated `virtio_gpu_mem_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackingEntry {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// A contiguous range of host virtual memory backing part of a [`GuestBacking`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostRange {
    /// Start in this process's address space.
    pub addr: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

/// Errors of building a [`GuestBacking`].
#[derive(Debug, thiserror::Error)]
pub enum BackingError {
    /// An entry does not lie inside guest memory.
    #[error("backing entry {index} ({addr:#x}, {len} bytes) is outside guest memory")]
    OutsideGuestMemory {
        /// Index of the entry.
        index: usize,
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The entries add up to more than `u64::MAX` bytes.
    #[error("backing length overflows")]
    Overflow,
}

/// The guest pages backing a resource: a validated list of guest ranges plus a clone of the
/// guest memory map.
///
/// The clone keeps the mapped regions alive (they are `Arc`s), so the pages stay mapped even
/// when the frontend replaces the memory table (SET_MEM_TABLE) while a resource is attached.
/// Every entry was checked to lie inside guest memory when the backing was built; reads and
/// writes go through `vm-memory`'s checked accessors.
#[derive(Clone, Debug)]
pub struct GuestBacking {
    mem: GuestMemoryMmap,
    entries: Vec<BackingEntry>,
    /// `starts[i]`: byte offset of entry `i` within the backing (prefix sums of the lengths).
    starts: Vec<u64>,
    len: u64,
}

impl GuestBacking {
    /// Validates `entries` against `mem` (every range inside guest memory, total length without
    /// overflow) and keeps a clone of `mem`.
    pub fn new(
        mem: GuestMemoryMmap,
        entries: Vec<BackingEntry>,
    ) -> std::result::Result<Self, BackingError> {
        let mut starts = Vec::with_capacity(entries.len());
        let mut len: u64 = 0;
        for (index, e) in entries.iter().enumerate() {
            let in_memory = usize::try_from(e.len).is_ok_and(|l| {
                GuestMemory::check_range(&mem, GuestAddress(e.addr), l, Permissions::ReadWrite)
            });
            if !in_memory {
                return Err(BackingError::OutsideGuestMemory {
                    index,
                    addr: e.addr,
                    len: e.len,
                });
            }
            starts.push(len);
            len = len
                .checked_add(u64::from(e.len))
                .ok_or(BackingError::Overflow)?;
        }
        Ok(GuestBacking {
            mem,
            entries,
            starts,
            len,
        })
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the backing has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The validated entries.
    pub fn entries(&self) -> &[BackingEntry] {
        &self.entries
    }

    /// The guest memory this backing refers to.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Calls `f(guest_addr, chunk_len, pos_in_request)` for every contiguous guest piece of the
    /// backing bytes `offset..offset + count`.
    fn for_each_piece(
        &self,
        offset: u64,
        count: usize,
        mut f: impl FnMut(GuestAddress, usize, usize) -> Result<()>,
    ) -> Result<()> {
        let count_u64 = u64::try_from(count)
            .map_err(|_| RendererError::InvalidParameter("access too large".into()))?;
        let end = offset
            .checked_add(count_u64)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| {
                RendererError::InvalidParameter(format!(
                    "backing access {offset}+{count} beyond its {} bytes",
                    self.len
                ))
            })?;
        if count == 0 {
            return Ok(());
        }
        // The entry holding `offset`: the last one starting at or before it.
        let mut idx = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let mut pos = offset;
        let mut done = 0usize;
        while pos < end {
            let (entry, start) = match (self.entries.get(idx), self.starts.get(idx)) {
                (Some(e), Some(&s)) => (e, s),
                _ => {
                    return Err(RendererError::InvalidParameter(
                        "backing access past the last entry".into(),
                    ))
                }
            };
            let within = pos - start;
            let entry_end = start + u64::from(entry.len);
            let chunk = entry_end.min(end) - pos;
            if chunk > 0 {
                let addr = GuestAddress(entry.addr)
                    .checked_add(within)
                    .ok_or_else(|| RendererError::InvalidParameter("address overflow".into()))?;
                // chunk <= count, which is a usize.
                let chunk_usize = chunk as usize;
                f(addr, chunk_usize, done)?;
                done += chunk_usize;
                pos += chunk;
            }
            idx += 1;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at byte `offset` of the backing.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.for_each_piece(offset, buf.len(), |addr, len, at| {
            let dst = buf
                .get_mut(at..at + len)
                .ok_or_else(|| RendererError::InvalidParameter("read split".into()))?;
            self.mem.read_slice(dst, addr)?;
            Ok(())
        })
    }

    /// Writes `buf` at byte `offset` of the backing.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.for_each_piece(offset, buf.len(), |addr, len, at| {
            let src = buf
                .get(at..at + len)
                .ok_or_else(|| RendererError::InvalidParameter("write split".into()))?;
            self.mem.write_slice(src, addr)?;
            Ok(())
        })
    }

    /// The host address ranges of the backing, in order, split where guest memory regions end.
    ///
    /// The pointers stay valid as long as this `GuestBacking` (or a clone) lives: it holds the
    /// regions' mappings. They point at guest memory, which the guest may change at any time,
    /// so a user must treat the bytes as volatile (the virglrenderer adapter hands them to the
    /// library under the crate's backing contract).
    pub fn host_ranges(&self) -> Result<Vec<HostRange>> {
        let mut ranges = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let mut addr = GuestAddress(e.addr);
            let mut left = u64::from(e.len);
            while left > 0 {
                let region = GuestMemoryBackend::find_region(&self.mem, addr).ok_or(
                    RendererError::GuestMemory(GuestMemoryError::InvalidGuestAddress(addr)),
                )?;
                let region_off = addr.0 - region.start_addr().0;
                let in_region = (region.len() - region_off).min(left);
                let host = GuestMemoryBackend::get_host_address(&self.mem, addr)?;
                // in_region <= e.len, a u32.
                ranges.push(HostRange {
                    addr: host,
                    len: in_region as usize,
                });
                left -= in_region;
                addr = GuestAddress(addr.0 + in_region);
            }
        }
        Ok(ranges)
    }
}

/// The device-level half of a renderer: what it offers, the resources (their pixels or GPU
/// objects, backing, 2D transfers, blobs, exports, read-backs), the device-global fence timeline
/// and completions, and the contexts it makes ([`Renderer::create_context`]).
///
/// Resource ids are the guest's; the device has already checked that a resource id passed to
/// any method other than the `*_create*` ones exists, and that rectangles lie inside the
/// resource.
///
/// # Contexts and their lifetime
///
/// A context is an object of its own, a [`RenderContext`], which the device keeps in its context
/// table (`gpu/contexts.rs`) and which destroys the library's context when dropped. Adapters of
/// C libraries give it the library's context handle and a shared handle on their own state, so
/// it stays on the GPU thread (neither trait is `Send`). The device drops every context before
/// it calls [`Renderer::reset`] and before it drops the renderer (`Drop for VirtioGpu`): no
/// context outlives its renderer. An adapter must still be safe if one did (its calls then
/// fail): the safe crates' handles keep their library alive on their own.
pub trait Renderer {
    /// A short name for logs and `--renderer` ("software", "virglrenderer"...).
    fn name(&self) -> &'static str;

    /// What this renderer implements.
    fn capabilities(&self) -> RendererCapabilities;

    /// The capability sets offered to the guest, in GET_CAPSET_INFO index order.
    fn capsets(&self) -> Vec<CapsetInfo> {
        Vec::new()
    }

    /// The data of capset `id` at `version` (at most the `max_size` announced).
    fn capset(&mut self, id: u32, version: u32) -> Result<Vec<u8>> {
        let _ = (id, version);
        Err(RendererError::Unsupported("capsets"))
    }

    /// Creates a 2D resource of `VIRTIO_GPU_FORMAT_*` `format`.
    fn resource_create_2d(&mut self, id: u32, format: u32, width: u32, height: u32) -> Result<()>;

    /// Creates a 3D resource.
    fn resource_create_3d(&mut self, id: u32, args: &ResourceCreate3d) -> Result<()> {
        let _ = (id, args);
        Err(RendererError::Unsupported("3D resources"))
    }

    /// Destroys a resource (its backing goes with it, and the contexts it was attached to lose
    /// it).
    fn resource_unref(&mut self, id: u32) -> Result<()>;

    /// Attaches guest pages as the resource's backing.
    fn attach_backing(&mut self, id: u32, backing: GuestBacking) -> Result<()>;

    /// Detaches the resource's backing.
    fn detach_backing(&mut self, id: u32) -> Result<()>;

    /// Whether [`Renderer::attach_backing`] makes the renderer's library allocate a host copy
    /// as long as the backing (gfxstream zero-fills a staging buffer of the backing's size):
    /// the device then charges that copy to the host memory budget. Default: no copy.
    fn attach_backing_copies(&self) -> bool {
        false
    }

    /// Copies the transfer's rectangle of the resource from its backing: row `i` of the
    /// rectangle starts at backing byte `offset + i * stride`, where `stride = width * 4`. The
    /// device checked the rectangle against the resource and the bytes against the backing
    /// ([`CheckedTransfer2d`]): a renderer does not check them again.
    fn transfer_to_host_2d(&mut self, id: u32, transfer: &CheckedTransfer2d) -> Result<()>;

    /// The device is about to hand resource `id` to 3D work (CTX_ATTACH_RESOURCE, a 3D
    /// transfer): a renderer that keeps 2D resources on the host until then (virgl: no GL
    /// texture, no read-back per flush) moves it into its library now. Default: nothing to do.
    fn prepare_for_3d(&mut self, id: u32) -> Result<()> {
        let _ = id;
        Ok(())
    }

    /// TRANSFER_TO_HOST_3D outside any context (the command's `ctx_id` is 0); in a context:
    /// [`RenderContext::transfer_to_host_3d`].
    fn transfer_to_host_3d(&mut self, id: u32, transfer: &CheckedTransfer3d) -> Result<()> {
        let _ = (id, transfer);
        Err(RendererError::Unsupported("3D transfers"))
    }

    /// TRANSFER_FROM_HOST_3D outside any context; in a context:
    /// [`RenderContext::transfer_from_host_3d`].
    fn transfer_from_host_3d(&mut self, id: u32, transfer: &CheckedTransfer3d) -> Result<()> {
        let _ = (id, transfer);
        Err(RendererError::Unsupported("3D transfers"))
    }

    /// Creates context `ctx_id` (the guest's id, unique while the context lives); `capset_id` is
    /// the CONTEXT_INIT capset (0: the renderer's default). The device owns the returned object;
    /// dropping it destroys the context.
    fn create_context(
        &mut self,
        ctx_id: u32,
        capset_id: u32,
        name: &str,
    ) -> Result<Box<dyn RenderContext>> {
        let _ = (ctx_id, capset_id, name);
        Err(RendererError::Unsupported("contexts"))
    }

    /// Creates fence `fence_id` on the device-global timeline (a fence without
    /// `VIRTIO_GPU_FLAG_INFO_RING_IDX`); it completes once all work submitted before it has.
    /// `ctx_id` is the context the fenced command named (0: none), which a renderer may ignore
    /// (virglrenderer's global fences do). Fences on a context's rings:
    /// [`RenderContext::create_fence`].
    fn create_fence(&mut self, ctx_id: u32, fence_id: u64) -> Result<()>;

    /// A file descriptor that becomes readable when fences may have completed, if the renderer
    /// has one. Without one, the device polls after every command.
    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Processes completions and returns the fences completed since the last call, on every
    /// timeline (the global one and the contexts' rings). A returned fence means that every
    /// fence with an id `<=` its id on the same timeline is complete.
    fn poll(&mut self) -> Vec<FenceId>;

    /// Creates a blob resource outside any context: a `BLOB_MEM_GUEST` blob, `backing` holding
    /// its guest pages. Blobs of a context: [`RenderContext::create_blob`].
    fn create_blob(
        &mut self,
        id: u32,
        args: &CreateBlob,
        backing: Option<GuestBacking>,
    ) -> Result<()> {
        let _ = (id, args, backing);
        Err(RendererError::Unsupported("blob resources"))
    }

    /// Exports a blob as a file descriptor (to map it into the guest through the frontend,
    /// RESOURCE_MAP_BLOB).
    fn export_blob(&mut self, id: u32) -> Result<ExportedBlob> {
        let _ = id;
        Err(RendererError::Unsupported("blob export"))
    }

    /// The `VIRTIO_GPU_MAP_CACHE_*` of a mappable blob.
    fn map_info(&mut self, id: u32) -> Result<u32> {
        let _ = id;
        Err(RendererError::Unsupported("blob mapping"))
    }

    /// Reads `rect` of the resource into `out` as tightly packed little-endian ARGB8888 words
    /// (bytes B, G, R, A; A = 0xff for formats without alpha). This is XRGB8888 for the display
    /// and ARGB8888 for cursors. `out.len()` must be `rect.width * rect.height * 4`.
    fn read_pixels(&mut self, id: u32, rect: Rect, out: &mut [u8]) -> Result<()>;

    /// Lends `rect` of a 2D resource as display pixels without a copy, when the resource already
    /// holds them as the display wants them: `x8r8g8b8` bytes (B8G8R8A8 or B8G8R8X8; the X
    /// byte is the guest's, which an `x8r8g8b8` display ignores) and `rect` spanning whole rows,
    /// so that its rows are one tightly packed run of `rect.width * rect.height * 4` bytes.
    /// `None` in every other case (also an unknown resource or a `rect` outside it); the device
    /// then reads the pixels with [`Renderer::read_pixels`].
    fn scanout_pixels(&self, id: u32, rect: Rect) -> Option<&[u8]> {
        let _ = (id, rect);
        None
    }

    /// Like [`Renderer::read_pixels`], for a blob resource shown with SET_SCANOUT_BLOB:
    /// `layout` says where the image lies in the blob; `rect` is inside the image. Adapters read
    /// through [`readback::BlobImage`].
    fn read_blob_pixels(
        &mut self,
        id: u32,
        layout: &BlobScanoutLayout,
        rect: Rect,
        out: &mut [u8],
    ) -> Result<()> {
        let _ = (id, layout, rect, out);
        Err(RendererError::Unsupported("blob scanout"))
    }

    /// Exports a resource as a dmabuf for a zero-copy scanout; renderers that cannot answer
    /// [`RendererError::Unsupported`] and the device falls back to [`Renderer::read_pixels`].
    fn export_dmabuf(&mut self, id: u32) -> Result<Dmabuf> {
        let _ = id;
        Err(RendererError::Unsupported("dmabuf export"))
    }

    /// Drops every resource and pending fence (guest reset). The device has unref'd every
    /// resource it knows and dropped every context before calling this.
    fn reset(&mut self) {}
}

/// The adapter state a context shares with its renderer, while the renderer lives: contexts
/// hold a `Weak` of it, so that a context the device kept past its renderer fails its calls
/// instead of keeping the renderer's resources alive.
pub(crate) fn shared_of<T>(shared: &std::rc::Weak<T>, ctx_id: u32) -> Result<std::rc::Rc<T>> {
    shared
        .upgrade()
        .ok_or_else(|| RendererError::Library(format!("context {ctx_id}: the renderer is gone")))
}

/// One rendering context (CTX_CREATE), made by [`Renderer::create_context`] and owned by the
/// device's context table; dropping it destroys the context (CTX_DESTROY, reset).
///
/// Resource ids are the guest's, and the device has checked that they exist; the methods act in
/// this context only.
pub trait RenderContext {
    /// Makes a resource visible to the context (CTX_ATTACH_RESOURCE).
    fn attach_resource(&mut self, id: u32) -> Result<()>;

    /// Removes a resource from the context (CTX_DETACH_RESOURCE).
    fn detach_resource(&mut self, id: u32) -> Result<()>;

    /// Executes a command stream (SUBMIT_3D).
    fn submit(&mut self, commands: &[u8]) -> Result<()>;

    /// Creates fence `fence_id` on ring `ring_idx` of the context; [`Renderer::poll`] reports
    /// its completion (as a [`FenceId`] naming this context and ring).
    fn create_fence(&mut self, ring_idx: u8, fence_id: u64) -> Result<()>;

    /// TRANSFER_TO_HOST_3D in this context.
    fn transfer_to_host_3d(&mut self, id: u32, transfer: &CheckedTransfer3d) -> Result<()> {
        let _ = (id, transfer);
        Err(RendererError::Unsupported("3D transfers"))
    }

    /// TRANSFER_FROM_HOST_3D in this context.
    fn transfer_from_host_3d(&mut self, id: u32, transfer: &CheckedTransfer3d) -> Result<()> {
        let _ = (id, transfer);
        Err(RendererError::Unsupported("3D transfers"))
    }

    /// Creates a blob resource in this context: a host blob (`BLOB_MEM_HOST3D`, `blob_id`
    /// names an object of the context; `backing` is `None`), a `BLOB_MEM_HOST3D_GUEST` blob
    /// (with `backing`), or a guest blob whose command named this context.
    fn create_blob(
        &mut self,
        id: u32,
        args: &CreateBlob,
        backing: Option<GuestBacking>,
    ) -> Result<()> {
        let _ = (id, args, backing);
        Err(RendererError::Unsupported("blob resources"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x20000), 0x10000),
        ])
        .unwrap()
    }

    #[test]
    fn backing_rejects_ranges_outside_memory() {
        let m = mem();
        let err = GuestBacking::new(
            m.clone(),
            vec![
                BackingEntry { addr: 0, len: 16 },
                BackingEntry {
                    addr: 0xfff0,
                    len: 0x20,
                },
            ],
        )
        .unwrap_err();
        assert!(matches!(
            err,
            BackingError::OutsideGuestMemory { index: 1, .. }
        ));
        assert!(GuestBacking::new(
            m,
            vec![BackingEntry {
                addr: u64::MAX - 4,
                len: 16
            }]
        )
        .is_err());
    }

    #[test]
    fn backing_reads_and_writes_across_entries() {
        let m = mem();
        let b = GuestBacking::new(
            m.clone(),
            vec![
                BackingEntry {
                    addr: 0x1000,
                    len: 3,
                },
                BackingEntry {
                    addr: 0x20000,
                    len: 5,
                },
                BackingEntry {
                    addr: 0x500,
                    len: 4,
                },
            ],
        )
        .unwrap();
        assert_eq!(b.len(), 12);
        let data: Vec<u8> = (1..=12).collect();
        b.write_at(0, &data).unwrap();
        let mut out = [0u8; 6];
        b.read_at(2, &mut out).unwrap();
        assert_eq!(out, [3, 4, 5, 6, 7, 8]);
        let mut g = [0u8; 4];
        m.read_slice(&mut g, GuestAddress(0x500)).unwrap();
        assert_eq!(g, [9, 10, 11, 12]);
        // Past the end is refused, not truncated.
        assert!(b.read_at(10, &mut [0u8; 3]).is_err());
        assert!(b.read_at(u64::MAX, &mut [0u8; 1]).is_err());
        // Zero-length entries are skipped.
        let z = GuestBacking::new(
            m,
            vec![
                BackingEntry { addr: 0, len: 0 },
                BackingEntry { addr: 0x10, len: 2 },
            ],
        )
        .unwrap();
        z.write_at(0, &[7, 8]).unwrap();
        let mut o = [0u8; 2];
        z.read_at(0, &mut o).unwrap();
        assert_eq!(o, [7, 8]);
    }

    #[test]
    fn host_ranges_split_at_region_boundaries() {
        // Two adjacent regions: one entry spanning both is valid and yields two host ranges.
        let m = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x10000), 0x10000),
        ])
        .unwrap();
        let b = GuestBacking::new(
            m.clone(),
            vec![BackingEntry {
                addr: 0xff00,
                len: 0x200,
            }],
        )
        .unwrap();
        let r = b.host_ranges().unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].len, r[1].len), (0x100, 0x100));
        assert_eq!(
            r[1].addr,
            GuestMemoryBackend::get_host_address(&m, GuestAddress(0x10000)).unwrap()
        );
        // Reads across the region boundary see both regions.
        m.write_slice(&[1, 2, 3, 4], GuestAddress(0xfffe)).unwrap();
        let mut out = [0u8; 4];
        b.read_at(0xfe, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4]);
    }

    #[test]
    fn host_ranges_match_guest_memory() {
        let m = mem();
        let b = GuestBacking::new(
            m.clone(),
            vec![BackingEntry {
                addr: 0x2000,
                len: 0x100,
            }],
        )
        .unwrap();
        let r = b.host_ranges().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].len, 0x100);
        assert_eq!(
            r[0].addr,
            GuestMemoryBackend::get_host_address(&m, GuestAddress(0x2000)).unwrap()
        );
    }
}
