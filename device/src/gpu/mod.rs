//! The virtio-gpu device: resources, scanouts, contexts, the cursor and fences.
//!
//! [`VirtioGpu::process_chain`] takes one descriptor chain, has `protocol` decode it into a
//! validated [`GpuCommand`], checks it against the device state and the bounds of
//! [`GpuConfig`], runs it on the [`Renderer`] and tells the [`Display`] what changed, then writes
//! the response. Every guest-reachable failure is an error response and a `log` line.
//!
//! # Decisions
//!
//! * **Queues.** Cursor commands (UPDATE_CURSOR, MOVE_CURSOR) are executed on the cursor queue
//!   only, everything else on the control queue only; a command on the other queue is answered
//!   ERR_UNSPEC (QEMU ignores them). Cursor-queue buffers need no writable part (the Linux driver
//!   gives none); the entry is then published with length 0.
//! * **Fences.** A command with `VIRTIO_GPU_FLAG_FENCE` (successful or not) gets a renderer fence
//!   on its timeline: `(ctx_id, ring_idx)` with `VIRTIO_GPU_FLAG_INFO_RING_IDX`, else the global
//!   timeline. Its response is written at once but the used entry is held until the renderer
//!   reports a fence with an id `>=` on that timeline (the spec's rule), so an error never
//!   overtakes earlier fenced work. Only when the renderer refuses the fence is the entry
//!   published at once. Destroying a context releases the entries held on its rings.
//! * **Host memory.** Every resource's host memory (2D: `w * h * 4`; 3D: an estimate of
//!   `w * h * depth * layers * 4`; host blobs: their size) is reserved against
//!   [`GpuConfig::max_hostmem`] before the renderer allocates anything; exceeding it is
//!   ERR_OUT_OF_MEMORY. Guest blobs use guest memory and cost nothing here.
//! * **Backing errors.** A backing entry outside guest memory is ERR_INVALID_PARAMETER (QEMU says
//!   ERR_UNSPEC; the guest did pass a bad parameter).
//! * **Blob mapping.** RESOURCE_MAP_BLOB needs the host-visible shared memory region
//!   (`VIRTIO_GPU_SHM_ID_HOST_VISIBLE`, [`GpuConfig::host_visible_size`] bytes) and a
//!   [`SharedMemoryMapper`] (the backend installs one when the frontend gave a backend-request
//!   channel). The blob must be a host blob (HOST3D or HOST3D_GUEST) created with
//!   BLOB_FLAG_USE_MAPPABLE and not mapped yet; the offset must be page aligned, and the mapping
//!   (the blob's size rounded up to a page) must lie inside the region without overlapping a
//!   live one (else ERR_INVALID_PARAMETER). The renderer exports the blob as an fd, the mapper
//!   asks the frontend to map it (SHMEM_MAP) and the guest gets the renderer's map_info
//!   (OK_MAP_INFO). No region, no mapper, an export the renderer cannot do, or a frontend that
//!   refuses the mapping: ERR_UNSPEC. UNMAP_BLOB, unref of a mapped blob and a guest reset send
//!   SHMEM_UNMAP; a disconnect forgets the mappings (the frontend's region went with it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd};

use log::{debug, warn};
use virtio_queue::{DescriptorChain, Writer};
use vm_memory::GuestMemoryMmap;

use crate::display::{Display, DisplayMode, DmabufScanout, CURSOR_SIZE};
use crate::protocol::{
    self, CtrlHeader, CursorCommand, DisplayInfoEntry, ErrorCode, GpuCommand, Rect, Response,
    CTRL_HDR_SIZE, EDID_BLOB_SIZE, MAX_CAPSET_SIZE, VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE,
    VIRTIO_GPU_BLOB_MEM_GUEST, VIRTIO_GPU_BLOB_MEM_HOST3D, VIRTIO_GPU_BLOB_MEM_HOST3D_GUEST,
    VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK, VIRTIO_GPU_F_CONTEXT_INIT, VIRTIO_GPU_F_EDID,
    VIRTIO_GPU_F_RESOURCE_BLOB, VIRTIO_GPU_F_RESOURCE_UUID, VIRTIO_GPU_F_VIRGL,
    VIRTIO_GPU_MAP_CACHE_MASK, VIRTIO_GPU_MAX_SCANOUTS,
};
use crate::renderer::software::{PixelFormat, BYTES_PER_PIXEL};
use crate::renderer::{
    BackingError, BlobHandleKind, BlobScanoutLayout, CapsetInfo, CreateBlob, FenceId, GuestBacking,
    Renderer, RendererCapabilities, RendererError,
};

/// Largest scanout width or height in pixels. A flush of a whole scanout builds one pixel buffer
/// of `width * height * 4` bytes for the display, so this bounds that buffer (16384 x 16384 is
/// 1 GiB; real modes stay far below).
pub const MAX_SCANOUT_DIMENSION: u32 = 16384;

/// Rejected guest requests logged at `warn` level per device; later ones go to `debug`. A
/// hostile guest can send errors at queue speed, which must not fill the host's disk.
pub const GUEST_ERROR_WARN_LIMIT: u64 = 1000;

/// Most blobs mapped into the host-visible region at once; one more is ERR_OUT_OF_MEMORY. Each
/// is a mapping in the frontend's process (QEMU's region is a memory region per mapping), so the
/// guest must not create them without bound.
pub const MAX_BLOB_MAPPINGS: usize = 16384;

/// Most fenced entries held at once, waiting for their fences. A driver cannot have more
/// chains outstanding than its queues hold (2 queues of at most 32768 descriptors), so more
/// means the guest made descriptors available again that the device still holds; each would
/// cost host memory until a fence that may never complete. A fenced command beyond this bound
/// is answered at once (logged), like one whose fence the renderer refuses.
pub const MAX_HELD_FENCES: usize = 2 * 32768;

/// The largest flush buffer kept between flushes: 64 MiB, two 3840x2160 frames of 4 bytes a
/// pixel. A flush needing more (up to `MAX_SCANOUT_DIMENSION^2 * 4`) frees it afterwards.
pub const FLUSH_BUFFER_KEEP_BYTES: usize = 64 << 20;

/// Alignment of RESOURCE_MAP_BLOB offsets and of mapping lengths, in bytes, when the host's page
/// size cannot be read. The device uses the host page size (`sysconf(_SC_PAGESIZE)`): the
/// frontend maps the blob with `mmap(MAP_FIXED)`, which needs page-aligned addresses.
pub const DEFAULT_MAP_ALIGNMENT: u64 = 4096;

/// Host memory released by RESOURCE_UNREF (as accounted against `max_hostmem`) after which the
/// C heap's free memory is handed back to the system (see `HeapTrimmer`).
pub const TRIM_AFTER_RELEASED_BYTES: u64 = 64 << 20;

/// Shortest time between two hand-backs of free heap memory (`HeapTrimmer`): a guest that
/// destroys contexts in a loop costs at most one `malloc_trim` a second.
pub const TRIM_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Hands the C heap's free memory back to the system after large releases.
///
/// glibc's `free` keeps freed memory in its arenas (the GL driver's textures, shader variants
/// and per-context state are freed there when a guest destroys resources and contexts), so
/// the process's RSS stays at its high-water mark: measured with llvmpipe, a 10,000-command
/// 3D storm left 216 MiB of anonymous RSS after every resource and context was gone, of which
/// `malloc_trim(0)` returned 170 MiB; the live heap (valgrind) was the same after 1,500 and
/// 6,000 commands, i.e. nothing leaked. So after a guest reset, a context destroy, or once
/// [`TRIM_AFTER_RELEASED_BYTES`] of resources were unreferenced, the device trims the heap, at
/// most once per [`TRIM_MIN_INTERVAL`] (QEMU trims the same way after RCU frees).
#[derive(Debug, Default)]
struct HeapTrimmer {
    /// Host memory of resources unreferenced since the last trim.
    released: u64,
    /// Whether a context was destroyed (or the device reset) since the last trim.
    dirty: bool,
    /// When the heap was last trimmed.
    last: Option<std::time::Instant>,
}

impl HeapTrimmer {
    /// Records `bytes` of resources released.
    fn released(&mut self, bytes: u64) {
        self.released = self.released.saturating_add(bytes);
        if self.released >= TRIM_AFTER_RELEASED_BYTES {
            self.dirty = true;
        }
    }

    /// Trims the heap if something large was freed and the last trim is old enough; returns
    /// whether it trimmed.
    fn maybe_trim(&mut self) -> bool {
        if !self.dirty || self.last.is_some_and(|t| t.elapsed() < TRIM_MIN_INTERVAL) {
            return false;
        }
        self.dirty = false;
        self.released = 0;
        self.last = Some(std::time::Instant::now());
        release_free_heap();
        true
    }
}

/// Returns the C heap's free memory to the system (glibc's `malloc_trim`; elsewhere nothing).
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of the allocator's arenas; it takes no
        // pointers and is thread safe (it locks each arena).
        let trimmed = unsafe { libc::malloc_trim(0) };
        debug!("heap trimmed (memory returned: {})", trimmed != 0);
    }
}

/// The host-visible shared memory region as the device reaches it: the backend implements it
/// over vhost-user's backend-request channel (SHMEM_MAP / SHMEM_UNMAP to the frontend, which
/// maps the fd into the region it exposes to the guest). `gpu.rs` never talks vhost-user itself;
/// tests use recording doubles.
///
/// Offsets and lengths are checked by the device (inside the region, page aligned, no overlap)
/// before a call.
pub trait SharedMemoryMapper {
    /// Maps `len` bytes of `fd` from `fd_offset` at `shm_offset` of the host-visible region.
    /// Returns once the frontend has mapped it (or refused).
    fn map(
        &mut self,
        fd: BorrowedFd<'_>,
        fd_offset: u64,
        shm_offset: u64,
        len: u64,
        writable: bool,
    ) -> std::io::Result<()>;
    /// Removes the mapping at `shm_offset` of `len` bytes.
    fn unmap(&mut self, shm_offset: u64, len: u64) -> std::io::Result<()>;
}

/// Device configuration (bounds and defaults).
#[derive(Clone, Debug)]
pub struct GpuConfig {
    /// Number of scanouts, 1..=16 (clamped).
    pub num_scanouts: u32,
    /// Most host memory all resources together may use, in bytes (`--max-hostmem`).
    pub max_hostmem: u64,
    /// Most resources alive at once; more is ERR_OUT_OF_MEMORY.
    pub max_resources: usize,
    /// Most contexts alive at once; more is ERR_OUT_OF_MEMORY.
    pub max_contexts: usize,
    /// Offer `VIRTIO_GPU_F_EDID` (GET_EDID).
    pub edid: bool,
    /// Width of scanout 0 when the display cannot tell.
    pub default_width: u32,
    /// Height of scanout 0 when the display cannot tell.
    pub default_height: u32,
    /// Size of the host-visible shared memory region in bytes (`--hostmem`); 0: none, and
    /// RESOURCE_MAP_BLOB is refused.
    pub host_visible_size: u64,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            num_scanouts: 1,
            max_hostmem: 256 << 20,
            max_resources: 16384,
            max_contexts: 1024,
            edid: true,
            default_width: 1024,
            default_height: 768,
            host_visible_size: 0,
        }
    }
}

/// Which virtqueue a chain came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// Queue 0, controlq.
    Control,
    /// Queue 1, cursorq.
    Cursor,
}

/// A used-ring entry to publish: the chain's head index and the bytes written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedEntry {
    /// The queue.
    pub queue: QueueKind,
    /// Head descriptor index of the chain.
    pub head_index: u16,
    /// Bytes written into the chain's writable part.
    pub len: u32,
}

/// Why a command failed; each maps to a `VIRTIO_GPU_RESP_ERR_*` ([`GpuError::error_code`]).
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No resource with this id (or id 0, or an existing id on create).
    #[error("invalid resource id {0}")]
    InvalidResourceId(u32),
    /// No context with this id (or an existing id on create).
    #[error("invalid context id {0}")]
    InvalidContextId(u32),
    /// Scanout id >= the number of scanouts.
    #[error("invalid scanout id {0}")]
    InvalidScanoutId(u32),
    /// A value the command cannot take.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// `max_resources` resources exist already.
    #[error("resource limit of {0} reached")]
    TooManyResources(usize),
    /// `max_contexts` contexts exist already.
    #[error("context limit of {0} reached")]
    TooManyContexts(usize),
    /// The resource would exceed `max_hostmem`.
    #[error("host memory limit: {requested} bytes requested, {used} of {max} in use")]
    HostMemory {
        /// Bytes asked for.
        requested: u64,
        /// Bytes in use.
        used: u64,
        /// The limit.
        max: u64,
    },
    /// The command belongs to a feature this device does not offer.
    #[error("{0} is not offered by this device")]
    NotOffered(&'static str),
    /// The command arrived on the other queue.
    #[error("{0} on the wrong queue")]
    WrongQueue(&'static str),
    /// The response does not fit the chain's writable part.
    #[error("response of {needed} bytes does not fit {available}")]
    ResponseTooLarge {
        /// Bytes the response needs.
        needed: usize,
        /// Writable bytes.
        available: usize,
    },
    /// A backing could not be built.
    #[error("backing: {0}")]
    Backing(#[from] BackingError),
    /// The renderer refused.
    #[error("renderer: {0}")]
    Renderer(#[from] RendererError),
}

impl GpuError {
    /// The error response for this failure.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            GpuError::InvalidResourceId(_) => ErrorCode::InvalidResourceId,
            GpuError::InvalidContextId(_) => ErrorCode::InvalidContextId,
            GpuError::InvalidScanoutId(_) => ErrorCode::InvalidScanoutId,
            GpuError::InvalidParameter(_) | GpuError::Backing(_) => ErrorCode::InvalidParameter,
            GpuError::TooManyResources(_)
            | GpuError::TooManyContexts(_)
            | GpuError::HostMemory { .. } => ErrorCode::OutOfMemory,
            GpuError::NotOffered(_)
            | GpuError::WrongQueue(_)
            | GpuError::ResponseTooLarge { .. } => ErrorCode::Unspec,
            GpuError::Renderer(e) => match e {
                RendererError::Unsupported(_) | RendererError::Library(_) => ErrorCode::Unspec,
                RendererError::OutOfMemory(_) => ErrorCode::OutOfMemory,
                RendererError::InvalidResourceId(_) => ErrorCode::InvalidResourceId,
                RendererError::InvalidContextId(_) => ErrorCode::InvalidContextId,
                RendererError::InvalidParameter(_) | RendererError::GuestMemory(_) => {
                    ErrorCode::InvalidParameter
                }
            },
        }
    }
}

type GpuResult<T> = std::result::Result<T, GpuError>;

/// What the device knows about one resource.
#[derive(Debug)]
struct ResourceState {
    width: u32,
    height: u32,
    /// Host memory reserved for it.
    hostmem: u64,
    /// Size of a blob resource, `None` for 2D/3D resources.
    blob_size: Option<u64>,
    /// `VIRTIO_GPU_BLOB_MEM_*` and `VIRTIO_GPU_BLOB_FLAG_*` of a blob (0 otherwise).
    blob_mem: u32,
    blob_flags: u32,
    /// Offset in the host-visible region while the blob is mapped (RESOURCE_MAP_BLOB).
    mapped_at: Option<u64>,
    uuid: Option<[u8; 16]>,
}

/// One live mapping in the host-visible region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlobMap {
    resource_id: u32,
    /// Length in bytes (page aligned).
    len: u64,
}

/// What one scanout shows.
#[derive(Clone, Copy, Debug, Default)]
struct ScanoutState {
    /// 0: disabled.
    resource_id: u32,
    /// The part of the resource (or blob image) shown.
    rect: Rect,
    /// For SET_SCANOUT_BLOB: where the image lies in the blob.
    blob: Option<BlobScanoutLayout>,
    /// The display got a dmabuf for it: flushes are DMABUF_UPDATEs.
    dmabuf: bool,
}

#[derive(Debug)]
struct ContextState {
    resources: HashSet<u32>,
}

/// A fence timeline: `(ctx_id, Some(ring))`, or `(0, None)` for the global one.
type TimelineKey = (u32, Option<u8>);

fn timeline(fence: &FenceId) -> TimelineKey {
    match fence.ring_idx {
        Some(r) => (fence.ctx_id, Some(r)),
        None => (0, None),
    }
}

#[derive(Debug)]
struct HeldEntry {
    fence_id: u64,
    entry: UsedEntry,
}

/// The virtio-gpu device.
pub struct VirtioGpu {
    renderer: Box<dyn Renderer>,
    config: GpuConfig,
    caps: RendererCapabilities,
    /// The capsets offered (renderer's, bounded by MAX_CAPSET_SIZE).
    capsets: Vec<CapsetInfo>,
    resources: HashMap<u32, ResourceState>,
    scanouts: Vec<ScanoutState>,
    contexts: HashMap<u32, ContextState>,
    /// Last known scanout layout (from the display or the defaults).
    modes: Vec<DisplayMode>,
    hostmem_used: u64,
    /// Fenced entries not yet published, per timeline, in arrival order.
    pending: HashMap<TimelineKey, Vec<HeldEntry>>,
    /// Entries released by a completion, waiting for `poll_fences`.
    ready: Vec<UsedEntry>,
    uuid_keys: std::collections::hash_map::RandomState,
    uuid_counter: u64,
    /// Rejected guest requests so far (for log rate limiting).
    guest_errors: u64,
    /// The host-visible region's mapper, while the frontend gave one.
    shm: Option<Box<dyn SharedMemoryMapper>>,
    /// Live mappings in the host-visible region: offset -> mapping.
    blob_maps: BTreeMap<u64, BlobMap>,
    /// Alignment of map offsets and lengths (the host page size).
    map_alignment: u64,
    /// Pixels read back for the display, reused from flush to flush.
    flush_buffer: FlushBuffer,
    /// Hands freed heap memory back after large releases.
    trimmer: HeapTrimmer,
}

/// A flush's pixels that are kept (grown fallibly, never zeroed again) from one flush to the
/// next, so that a flush neither allocates nor clears memory; one larger than
/// [`FLUSH_BUFFER_KEEP_BYTES`] is freed after its flush.
#[derive(Default)]
struct FlushBuffer(Vec<u8>);

impl FlushBuffer {
    /// `len` bytes of the buffer (whatever an earlier flush left there).
    fn get(&mut self, len: usize) -> Result<&mut [u8], std::collections::TryReserveError> {
        if self.0.len() < len {
            self.0.try_reserve_exact(len - self.0.len())?;
            self.0.resize(len, 0);
        }
        Ok(&mut self.0[..len])
    }

    /// Frees the buffer if it grew beyond [`FLUSH_BUFFER_KEEP_BYTES`].
    fn trim(&mut self) {
        if self.0.len() > FLUSH_BUFFER_KEEP_BYTES {
            self.0 = Vec::new();
        }
    }
}

impl VirtioGpu {
    /// A device on `renderer` with `config`.
    pub fn new(renderer: Box<dyn Renderer>, mut config: GpuConfig) -> Self {
        config.num_scanouts = config.num_scanouts.clamp(1, VIRTIO_GPU_MAX_SCANOUTS);
        let caps = renderer.capabilities();
        let capsets = if caps.three_d {
            renderer
                .capsets()
                .into_iter()
                .filter(|c| {
                    let ok = c.max_size <= MAX_CAPSET_SIZE;
                    if !ok {
                        warn!(
                            "capset {} of {} bytes exceeds MAX_CAPSET_SIZE, not offered",
                            c.id, c.max_size
                        );
                    }
                    ok
                })
                .collect()
        } else {
            Vec::new()
        };
        let modes = default_modes(&config);
        VirtioGpu {
            scanouts: vec![ScanoutState::default(); config.num_scanouts as usize],
            renderer,
            caps,
            capsets,
            resources: HashMap::new(),
            contexts: HashMap::new(),
            modes,
            hostmem_used: 0,
            pending: HashMap::new(),
            ready: Vec::new(),
            uuid_keys: Default::default(),
            uuid_counter: 0,
            guest_errors: 0,
            shm: None,
            blob_maps: BTreeMap::new(),
            map_alignment: host_page_size(),
            flush_buffer: FlushBuffer::default(),
            trimmer: HeapTrimmer::default(),
            config,
        }
    }

    /// VIRTIO_GPU_F_* bits this device offers (what the renderer really supports).
    pub fn device_features(&self) -> u64 {
        let mut f = 1u64 << VIRTIO_GPU_F_RESOURCE_UUID;
        if self.config.edid {
            f |= 1 << VIRTIO_GPU_F_EDID;
        }
        if self.caps.three_d {
            f |= 1 << VIRTIO_GPU_F_VIRGL;
            if self.caps.context_init {
                f |= 1 << VIRTIO_GPU_F_CONTEXT_INIT;
            }
        }
        if self.caps.blob_guest {
            f |= 1 << VIRTIO_GPU_F_RESOURCE_BLOB;
        }
        f
    }

    /// The virtio-gpu config space (virtio_gpu_config, little endian bytes).
    pub fn config_space(&self) -> Vec<u8> {
        // At most a handful of capsets; the count fits u32.
        protocol::encode_config(self.config.num_scanouts, self.capsets.len() as u32, 0)
    }

    /// Decode, validate and execute one chain; the response is written into the chain's
    /// writable descriptors at once. Returns Some(entry) to publish now, or None when the
    /// command carries a fence that has not completed yet (published later by `poll_fences`).
    pub fn process_chain<M>(
        &mut self,
        queue: QueueKind,
        chain: DescriptorChain<M>,
        display: &mut dyn Display,
    ) -> Option<UsedEntry>
    where
        M: Deref<Target = GuestMemoryMmap> + Clone,
    {
        let head_index = chain.head_index();
        let mem = chain.memory();
        let entry = |len| UsedEntry {
            queue,
            head_index,
            len,
        };
        let (mut reader, mut writer) = match protocol::split_chain(&chain, mem) {
            Ok(rw) => rw,
            Err(e) => {
                self.guest_error(format_args!("{queue:?} chain {head_index}: {e}"));
                return Some(entry(0));
            }
        };
        let header = match protocol::decode_header(&mut reader) {
            Ok(h) => h,
            Err(e) => {
                self.guest_error(format_args!("{queue:?} chain {head_index}: {e}"));
                let len = write_response(&mut writer, &Response::Err(e.error_code()), None);
                return Some(entry(len));
            }
        };
        let response = match protocol::decode_command(&header, &mut reader) {
            Err(e) => {
                self.guest_error(format_args!("{queue:?} command {:#x}: {e}", header.type_));
                Response::Err(e.error_code())
            }
            Ok(cmd) => {
                let name = cmd.name();
                debug!("{queue:?} {name} {header:?}");
                match self.execute(queue, &header, cmd, mem, display, writer.available_bytes()) {
                    Ok(r) => r,
                    Err(e) => {
                        self.guest_error(format_args!("{name}: {e}"));
                        Response::Err(e.error_code())
                    }
                }
            }
        };
        let len = write_response(&mut writer, &response, Some(&header));
        let used = entry(len);
        if header.is_fenced() {
            self.hold_fenced(&header, used)
        } else {
            Some(used)
        }
    }

    /// The renderer's fence poll fd (register it in the epoll loop), if it has one.
    pub fn fence_poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.renderer.poll_fd()
    }

    /// Let the renderer process completions and return every held entry whose fence has
    /// completed (all entries with id <= completed id on the same (ctx, ring) timeline).
    pub fn poll_fences(&mut self) -> Vec<UsedEntry> {
        self.collect_completions();
        std::mem::take(&mut self.ready)
    }

    /// Guest reset / frontend disconnect: drop every resource, context, scanout and pending
    /// fence.
    pub fn reset(&mut self) {
        self.unmap_all();
        for (id, _) in self.resources.drain() {
            if let Err(e) = self.renderer.resource_unref(id) {
                debug!("reset: unref {id}: {e}");
            }
        }
        for (id, _) in self.contexts.drain() {
            if let Err(e) = self.renderer.context_destroy(id) {
                debug!("reset: destroy context {id}: {e}");
            }
        }
        self.renderer.reset();
        self.scanouts = vec![ScanoutState::default(); self.config.num_scanouts as usize];
        self.modes = default_modes(&self.config);
        self.hostmem_used = 0;
        self.pending.clear();
        self.ready.clear();
        self.flush_buffer = FlushBuffer::default();
        self.trimmer.dirty = true;
        self.trimmer.last = None;
        self.trimmer.maybe_trim();
    }

    /// Installs (or, with `None`, removes) the host-visible region's mapper: the backend calls
    /// it when the frontend hands over a backend-request channel and when the connection ends.
    /// Mappings made through an earlier mapper are forgotten (its frontend and region are gone);
    /// the blobs stay and may be mapped again.
    pub fn set_shared_memory(&mut self, mapper: Option<Box<dyn SharedMemoryMapper>>) {
        if !self.blob_maps.is_empty() {
            debug!(
                "forgetting {} blob mapping(s) of the previous region",
                self.blob_maps.len()
            );
        }
        self.blob_maps.clear();
        for r in self.resources.values_mut() {
            r.mapped_at = None;
        }
        self.shm = mapper;
    }

    /// Size of the host-visible shared memory region (0: none).
    pub fn host_visible_size(&self) -> u64 {
        self.config.host_visible_size
    }

    /// Whether RESOURCE_MAP_BLOB can work now: a region and a mapper.
    pub fn host_visible_region(&self) -> bool {
        self.config.host_visible_size > 0 && self.shm.is_some()
    }

    /// Asks the frontend to unmap every live mapping (guest reset) and forgets them.
    fn unmap_all(&mut self) {
        let maps = std::mem::take(&mut self.blob_maps);
        for (offset, m) in maps {
            if let Some(r) = self.resources.get_mut(&m.resource_id) {
                r.mapped_at = None;
            }
            if let Some(shm) = self.shm.as_mut() {
                if let Err(e) = shm.unmap(offset, m.len) {
                    warn!(
                        "reset: SHMEM_UNMAP of blob {} at {offset:#x}: {e}",
                        m.resource_id
                    );
                }
            }
        }
    }

    /// Logs a rejected guest request: at `warn` for the first [`GUEST_ERROR_WARN_LIMIT`], then
    /// at `debug`, so that a guest cannot flood the host's logs.
    fn guest_error(&mut self, msg: std::fmt::Arguments<'_>) {
        self.guest_errors = self.guest_errors.saturating_add(1);
        match self.guest_errors.cmp(&GUEST_ERROR_WARN_LIMIT) {
            std::cmp::Ordering::Less => warn!("{msg}"),
            std::cmp::Ordering::Equal => {
                warn!("{msg} (further guest errors are logged at debug level)")
            }
            std::cmp::Ordering::Greater => debug!("{msg}"),
        }
    }

    fn hold_fenced(&mut self, header: &CtrlHeader, used: UsedEntry) -> Option<UsedEntry> {
        let fence = FenceId {
            ctx_id: header.ctx_id,
            ring_idx: header.ring(),
            id: header.fence_id,
        };
        if fence.ring_idx.is_some_and(|r| r >= protocol::MAX_RINGS) {
            // Already answered ERR_INVALID_PARAMETER; there is no such timeline to wait on.
            return Some(used);
        }
        let held: usize = self.pending.values().map(Vec::len).sum();
        if held >= MAX_HELD_FENCES {
            self.guest_error(format_args!(
                "fence {fence:?}: {held} fenced commands already held (more than the queues \
                 hold); answering at once"
            ));
            return Some(used);
        }
        if let Err(e) = self.renderer.create_fence(fence) {
            warn!("fence {fence:?} refused ({e}); answering at once");
            return Some(used);
        }
        self.pending
            .entry(timeline(&fence))
            .or_default()
            .push(HeldEntry {
                fence_id: fence.id,
                entry: used,
            });
        self.collect_completions();
        let pos = self.ready.iter().position(|e| *e == used)?;
        Some(self.ready.remove(pos))
    }

    fn collect_completions(&mut self) {
        for done in self.renderer.poll() {
            let key = timeline(&done);
            if let Some(list) = self.pending.get_mut(&key) {
                let ready = &mut self.ready;
                list.retain(|h| {
                    if h.fence_id <= done.id {
                        ready.push(h.entry);
                        false
                    } else {
                        true
                    }
                });
                if list.is_empty() {
                    self.pending.remove(&key);
                }
            }
        }
    }

    fn check_scanout(&self, scanout_id: u32) -> GpuResult<usize> {
        if scanout_id < self.config.num_scanouts {
            Ok(scanout_id as usize)
        } else {
            Err(GpuError::InvalidScanoutId(scanout_id))
        }
    }

    fn resource(&self, id: u32) -> GpuResult<&ResourceState> {
        self.resources
            .get(&id)
            .ok_or(GpuError::InvalidResourceId(id))
    }

    fn check_context(&self, ctx_id: u32) -> GpuResult<()> {
        if self.contexts.contains_key(&ctx_id) {
            Ok(())
        } else {
            Err(GpuError::InvalidContextId(ctx_id))
        }
    }

    /// Checks that a new resource `id` may be created and reserves `hostmem` bytes.
    fn reserve_resource(&mut self, id: u32, hostmem: u64) -> GpuResult<()> {
        if id == 0 || self.resources.contains_key(&id) {
            return Err(GpuError::InvalidResourceId(id));
        }
        if self.resources.len() >= self.config.max_resources {
            return Err(GpuError::TooManyResources(self.config.max_resources));
        }
        match self.hostmem_used.checked_add(hostmem) {
            Some(total) if total <= self.config.max_hostmem => {
                self.hostmem_used = total;
                Ok(())
            }
            _ => Err(GpuError::HostMemory {
                requested: hostmem,
                used: self.hostmem_used,
                max: self.config.max_hostmem,
            }),
        }
    }

    fn release_hostmem(&mut self, bytes: u64) {
        self.hostmem_used = self.hostmem_used.saturating_sub(bytes);
    }

    fn execute(
        &mut self,
        queue: QueueKind,
        header: &CtrlHeader,
        cmd: GpuCommand,
        mem: &GuestMemoryMmap,
        display: &mut dyn Display,
        writable: usize,
    ) -> GpuResult<Response> {
        let on_cursor_queue = queue == QueueKind::Cursor;
        if cmd.is_cursor() != on_cursor_queue {
            return Err(GpuError::WrongQueue(cmd.name()));
        }
        // Cursor-queue buffers may have no writable part at all; anything else must be able to
        // take its response, checked before the command has any effect.
        let needed = cmd.response_size();
        if writable < needed && !(on_cursor_queue && writable == 0) {
            return Err(GpuError::ResponseTooLarge {
                needed,
                available: writable,
            });
        }
        match cmd {
            GpuCommand::GetDisplayInfo => Ok(self.display_info(display)),
            GpuCommand::ResourceCreate2d {
                resource_id,
                format,
                width,
                height,
            } => self.resource_create_2d(resource_id, format, width, height),
            GpuCommand::ResourceUnref { resource_id } => self.resource_unref(resource_id, display),
            GpuCommand::SetScanout {
                scanout_id,
                resource_id,
                rect,
            } => self.set_scanout(scanout_id, resource_id, rect, display),
            GpuCommand::ResourceFlush { resource_id, rect } => {
                self.resource_flush(resource_id, rect, display)
            }
            GpuCommand::TransferToHost2d {
                resource_id,
                rect,
                offset,
            } => {
                let res = self.resource(resource_id)?;
                if res.blob_size.is_some() {
                    return Err(GpuError::InvalidParameter(format!(
                        "TRANSFER_TO_HOST_2D on blob {resource_id}"
                    )));
                }
                if !rect.is_inside(res.width, res.height) {
                    return Err(GpuError::InvalidParameter(format!(
                        "{rect:?} outside {}x{}",
                        res.width, res.height
                    )));
                }
                self.renderer
                    .transfer_to_host_2d(resource_id, rect, offset)?;
                Ok(Response::OkNoData)
            }
            GpuCommand::ResourceAttachBacking {
                resource_id,
                entries,
            } => {
                self.resource(resource_id)?;
                let backing = GuestBacking::new(mem.clone(), entries)?;
                self.renderer.attach_backing(resource_id, backing)?;
                Ok(Response::OkNoData)
            }
            GpuCommand::ResourceDetachBacking { resource_id } => {
                self.resource(resource_id)?;
                self.renderer.detach_backing(resource_id)?;
                Ok(Response::OkNoData)
            }
            GpuCommand::GetCapsetInfo { index } => {
                let c = usize::try_from(index)
                    .ok()
                    .and_then(|i| self.capsets.get(i))
                    .ok_or_else(|| GpuError::InvalidParameter(format!("capset index {index}")))?;
                Ok(Response::OkCapsetInfo {
                    id: c.id,
                    max_version: c.max_version,
                    max_size: c.max_size,
                })
            }
            GpuCommand::GetCapset { capset_id, version } => {
                let c = *self
                    .capsets
                    .iter()
                    .find(|c| c.id == capset_id)
                    .ok_or_else(|| GpuError::InvalidParameter(format!("capset {capset_id}")))?;
                if version > c.max_version {
                    return Err(GpuError::InvalidParameter(format!(
                        "capset {capset_id} version {version} > {}",
                        c.max_version
                    )));
                }
                let data = self.renderer.capset(capset_id, version)?;
                if data.len() > c.max_size as usize {
                    return Err(GpuError::Renderer(RendererError::Library(format!(
                        "capset {capset_id} of {} bytes exceeds its max_size {}",
                        data.len(),
                        c.max_size
                    ))));
                }
                let needed = CTRL_HDR_SIZE + data.len();
                if needed > writable {
                    return Err(GpuError::ResponseTooLarge {
                        needed,
                        available: writable,
                    });
                }
                Ok(Response::OkCapset(data))
            }
            GpuCommand::GetEdid { scanout_id } => self.get_edid(scanout_id, display),
            GpuCommand::ResourceAssignUuid { resource_id } => {
                self.resource(resource_id)?;
                let fresh = self.new_uuid(resource_id);
                let res = self
                    .resources
                    .get_mut(&resource_id)
                    .ok_or(GpuError::InvalidResourceId(resource_id))?;
                Ok(Response::OkResourceUuid(*res.uuid.get_or_insert(fresh)))
            }
            GpuCommand::ResourceCreateBlob {
                resource_id,
                blob_mem,
                blob_flags,
                blob_id,
                size,
                entries,
            } => self.create_blob(
                header.ctx_id,
                resource_id,
                CreateBlob {
                    blob_mem,
                    blob_flags,
                    blob_id,
                    size,
                },
                entries,
                mem,
            ),
            GpuCommand::SetScanoutBlob {
                scanout_id,
                resource_id,
                rect,
                width,
                height,
                format,
                strides,
                offsets,
            } => self.set_scanout_blob(
                scanout_id,
                resource_id,
                rect,
                BlobScanoutLayout {
                    width,
                    height,
                    format,
                    strides,
                    offsets,
                },
                display,
            ),
            GpuCommand::CtxCreate {
                context_init,
                debug_name,
            } => self.ctx_create(header.ctx_id, context_init, &debug_name),
            GpuCommand::CtxDestroy => {
                self.require_3d("CTX_DESTROY")?;
                self.check_context(header.ctx_id)?;
                self.contexts.remove(&header.ctx_id);
                // The context's rings cannot complete any more: answer what they hold.
                let ctx = header.ctx_id;
                let keys: Vec<TimelineKey> = self
                    .pending
                    .keys()
                    .filter(|(c, r)| *c == ctx && r.is_some())
                    .copied()
                    .collect();
                for k in keys {
                    if let Some(list) = self.pending.remove(&k) {
                        self.ready.extend(list.into_iter().map(|h| h.entry));
                    }
                }
                self.renderer.context_destroy(ctx)?;
                self.trimmer.dirty = true;
                self.trimmer.maybe_trim();
                Ok(Response::OkNoData)
            }
            GpuCommand::CtxAttachResource { resource_id } => {
                self.require_3d("CTX_ATTACH_RESOURCE")?;
                self.check_context(header.ctx_id)?;
                self.resource(resource_id)?;
                self.renderer
                    .context_attach_resource(header.ctx_id, resource_id)?;
                if let Some(c) = self.contexts.get_mut(&header.ctx_id) {
                    c.resources.insert(resource_id);
                }
                Ok(Response::OkNoData)
            }
            GpuCommand::CtxDetachResource { resource_id } => {
                self.require_3d("CTX_DETACH_RESOURCE")?;
                self.check_context(header.ctx_id)?;
                self.resource(resource_id)?;
                self.renderer
                    .context_detach_resource(header.ctx_id, resource_id)?;
                if let Some(c) = self.contexts.get_mut(&header.ctx_id) {
                    c.resources.remove(&resource_id);
                }
                Ok(Response::OkNoData)
            }
            GpuCommand::ResourceCreate3d { resource_id, args } => {
                self.require_3d("RESOURCE_CREATE_3D")?;
                // An estimate: 4 bytes per texel of every layer, mip levels and samples aside.
                let hostmem = u64::from(args.width)
                    .checked_mul(u64::from(args.height))
                    .and_then(|v| v.checked_mul(u64::from(args.depth.max(1))))
                    .and_then(|v| v.checked_mul(u64::from(args.array_size.max(1))))
                    .and_then(|v| v.checked_mul(u64::from(BYTES_PER_PIXEL)))
                    .unwrap_or(u64::MAX);
                self.reserve_resource(resource_id, hostmem)?;
                if let Err(e) = self.renderer.resource_create_3d(resource_id, &args) {
                    self.release_hostmem(hostmem);
                    return Err(e.into());
                }
                self.resources.insert(
                    resource_id,
                    ResourceState {
                        width: args.width,
                        height: args.height,
                        hostmem,
                        blob_size: None,
                        blob_mem: 0,
                        blob_flags: 0,
                        mapped_at: None,
                        uuid: None,
                    },
                );
                Ok(Response::OkNoData)
            }
            GpuCommand::TransferToHost3d {
                resource_id,
                transfer,
            } => {
                self.require_3d("TRANSFER_TO_HOST_3D")?;
                self.check_transfer_ctx(header.ctx_id)?;
                self.resource(resource_id)?;
                self.renderer
                    .transfer_to_host_3d(header.ctx_id, resource_id, &transfer)?;
                Ok(Response::OkNoData)
            }
            GpuCommand::TransferFromHost3d {
                resource_id,
                transfer,
            } => {
                self.require_3d("TRANSFER_FROM_HOST_3D")?;
                self.check_transfer_ctx(header.ctx_id)?;
                self.resource(resource_id)?;
                self.renderer
                    .transfer_from_host_3d(header.ctx_id, resource_id, &transfer)?;
                Ok(Response::OkNoData)
            }
            GpuCommand::Submit3d { commands } => {
                self.require_3d("SUBMIT_3D")?;
                self.check_context(header.ctx_id)?;
                self.renderer.submit(header.ctx_id, &commands)?;
                Ok(Response::OkNoData)
            }
            GpuCommand::ResourceMapBlob {
                resource_id,
                offset,
            } => self.map_blob(resource_id, offset),
            GpuCommand::ResourceUnmapBlob { resource_id } => self.unmap_blob(resource_id),
            GpuCommand::UpdateCursor(c) => self.update_cursor(&c, display),
            GpuCommand::MoveCursor(c) => {
                self.check_scanout(c.scanout_id)?;
                display.cursor_move(c.scanout_id, c.x, c.y);
                Ok(Response::OkNoData)
            }
        }
    }

    fn require_3d(&self, what: &'static str) -> GpuResult<()> {
        if self.caps.three_d {
            Ok(())
        } else {
            Err(GpuError::NotOffered(what))
        }
    }

    fn require_blob(&self, what: &'static str) -> GpuResult<()> {
        if self.caps.blob_guest {
            Ok(())
        } else {
            Err(GpuError::NotOffered(what))
        }
    }

    /// 3D transfers may name context 0 (no context); any other must exist.
    fn check_transfer_ctx(&self, ctx_id: u32) -> GpuResult<()> {
        if ctx_id == 0 {
            Ok(())
        } else {
            self.check_context(ctx_id)
        }
    }

    fn display_info(&mut self, display: &mut dyn Display) -> Response {
        if let Some(modes) = display.display_info() {
            let n = self.config.num_scanouts as usize;
            let mut new = modes;
            new.truncate(n);
            new.resize(n, DisplayMode::default());
            self.modes = new;
        }
        Response::OkDisplayInfo(
            self.modes
                .iter()
                .map(|m| DisplayInfoEntry {
                    rect: Rect::new(m.x, m.y, m.width, m.height),
                    enabled: m.enabled,
                })
                .collect(),
        )
    }

    fn get_edid(&mut self, scanout_id: u32, display: &mut dyn Display) -> GpuResult<Response> {
        if !self.config.edid {
            return Err(GpuError::NotOffered("GET_EDID"));
        }
        let idx = self.check_scanout(scanout_id)?;
        if let Some(blob) = display.edid(scanout_id).filter(|b| !b.is_empty()) {
            if blob.len() > EDID_BLOB_SIZE {
                warn!(
                    "display EDID of {} bytes truncated to {EDID_BLOB_SIZE}",
                    blob.len()
                );
            }
            return Ok(Response::OkEdid(blob));
        }
        let (w, h) = match self.modes.get(idx) {
            Some(m) if m.width > 0 && m.height > 0 => (m.width, m.height),
            _ => (self.config.default_width, self.config.default_height),
        };
        Ok(Response::OkEdid(generate_edid(w, h).to_vec()))
    }

    fn new_uuid(&mut self, resource_id: u32) -> [u8; 16] {
        // Random per device instance (RandomState's keys), unique per call (counter).
        self.uuid_counter = self.uuid_counter.wrapping_add(1);
        let mut out = [0u8; 16];
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            let mut h = self.uuid_keys.build_hasher();
            h.write_u32(resource_id);
            h.write_u64(self.uuid_counter);
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        // RFC 4122 version 4, variant 1.
        out[6] = (out[6] & 0x0f) | 0x40;
        out[8] = (out[8] & 0x3f) | 0x80;
        out
    }

    fn resource_create_2d(
        &mut self,
        id: u32,
        format: u32,
        width: u32,
        height: u32,
    ) -> GpuResult<Response> {
        if PixelFormat::from_virtio(format).is_none() {
            return Err(GpuError::InvalidParameter(format!("format {format}")));
        }
        if width == 0 || height == 0 {
            return Err(GpuError::InvalidParameter(format!("size {width}x{height}")));
        }
        // Cannot overflow: u32 * u32 * 4 < 2^66... so check it.
        let hostmem = u64::from(width)
            .checked_mul(u64::from(height))
            .and_then(|v| v.checked_mul(u64::from(BYTES_PER_PIXEL)))
            .unwrap_or(u64::MAX);
        self.reserve_resource(id, hostmem)?;
        if let Err(e) = self.renderer.resource_create_2d(id, format, width, height) {
            self.release_hostmem(hostmem);
            return Err(e.into());
        }
        self.resources.insert(
            id,
            ResourceState {
                width,
                height,
                hostmem,
                blob_size: None,
                blob_mem: 0,
                blob_flags: 0,
                mapped_at: None,
                uuid: None,
            },
        );
        Ok(Response::OkNoData)
    }

    fn disable_scanout(&mut self, idx: usize, display: &mut dyn Display) {
        if let Some(s) = self.scanouts.get_mut(idx) {
            *s = ScanoutState::default();
            // idx < num_scanouts <= 16.
            display.scanout(idx as u32, 0, 0);
        }
    }

    fn resource_unref(&mut self, id: u32, display: &mut dyn Display) -> GpuResult<Response> {
        if self.resource(id)?.mapped_at.is_some() {
            debug!("unref of mapped blob {id}: unmapping it first");
            if let Err(e) = self.unmap_blob(id) {
                warn!("unref of blob {id}: unmap: {e}");
            }
        }
        let showing: Vec<usize> = self
            .scanouts
            .iter()
            .enumerate()
            .filter(|(_, s)| s.resource_id == id)
            .map(|(i, _)| i)
            .collect();
        for i in showing {
            debug!("scanout {i} loses resource {id}");
            self.disable_scanout(i, display);
        }
        for c in self.contexts.values_mut() {
            c.resources.remove(&id);
        }
        let res = self.resources.remove(&id);
        if let Some(r) = &res {
            self.release_hostmem(r.hostmem);
        }
        self.renderer.resource_unref(id)?;
        if let Some(r) = &res {
            self.trimmer.released(r.hostmem);
            self.trimmer.maybe_trim();
        }
        Ok(Response::OkNoData)
    }

    fn set_scanout(
        &mut self,
        scanout_id: u32,
        resource_id: u32,
        rect: Rect,
        display: &mut dyn Display,
    ) -> GpuResult<Response> {
        let idx = self.check_scanout(scanout_id)?;
        if resource_id == 0 {
            self.disable_scanout(idx, display);
            return Ok(Response::OkNoData);
        }
        let res = self.resource(resource_id)?;
        if res.blob_size.is_some() {
            return Err(GpuError::InvalidParameter(format!(
                "SET_SCANOUT with blob {resource_id} (use SET_SCANOUT_BLOB)"
            )));
        }
        check_scanout_rect(rect, res.width, res.height)?;
        let mut state = ScanoutState {
            resource_id,
            rect,
            blob: None,
            dmabuf: false,
        };
        if display.supports_dmabuf() {
            match self.renderer.export_dmabuf(resource_id) {
                Ok(d) => {
                    display.dmabuf_scanout(
                        scanout_id,
                        &DmabufScanout {
                            fd: d.fd.as_fd(),
                            x: rect.x,
                            y: rect.y,
                            width: rect.width,
                            height: rect.height,
                            fd_width: d.width,
                            fd_height: d.height,
                            fd_stride: d.stride,
                            fd_flags: d.flags,
                            fourcc: d.fourcc,
                            modifier: d.modifier,
                        },
                    );
                    state.dmabuf = true;
                }
                Err(e) => debug!("resource {resource_id}: no dmabuf ({e}), sending pixels"),
            }
        }
        if !state.dmabuf {
            display.scanout(scanout_id, rect.width, rect.height);
        }
        self.scanouts[idx] = state;
        Ok(Response::OkNoData)
    }

    fn set_scanout_blob(
        &mut self,
        scanout_id: u32,
        resource_id: u32,
        rect: Rect,
        layout: BlobScanoutLayout,
        display: &mut dyn Display,
    ) -> GpuResult<Response> {
        self.require_blob("SET_SCANOUT_BLOB")?;
        let idx = self.check_scanout(scanout_id)?;
        if resource_id == 0 {
            self.disable_scanout(idx, display);
            return Ok(Response::OkNoData);
        }
        let res = self.resource(resource_id)?;
        let size = res.blob_size.ok_or_else(|| {
            GpuError::InvalidParameter(format!("resource {resource_id} is not a blob"))
        })?;
        let host_blob = res.blob_mem != VIRTIO_GPU_BLOB_MEM_GUEST;
        let Some(pixel_format) = PixelFormat::from_virtio(layout.format) else {
            return Err(GpuError::InvalidParameter(format!(
                "format {}",
                layout.format
            )));
        };
        check_scanout_rect(rect, layout.width, layout.height)?;
        let row = u64::from(layout.width) * u64::from(BYTES_PER_PIXEL);
        let stride = u64::from(layout.strides[0]);
        let end = stride
            .checked_mul(u64::from(layout.height - 1))
            .and_then(|v| v.checked_add(u64::from(layout.offsets[0])))
            .and_then(|v| v.checked_add(row));
        if stride < row || !matches!(end, Some(e) if e <= size) {
            return Err(GpuError::InvalidParameter(format!(
                "blob image {layout:?} does not fit blob {resource_id} of {size} bytes"
            )));
        }
        // A host blob that exports as a dmabuf goes to the display as one (zero copy; the
        // display message has no offset, so the image must start the buffer); anything else is
        // read back at each flush (guest pages, or the renderer's mapping of a host blob).
        let mut dmabuf = false;
        if host_blob && layout.offsets[0] == 0 && display.supports_dmabuf() {
            match self.renderer.export_blob(resource_id) {
                Ok(e) if e.kind == BlobHandleKind::Dmabuf => {
                    display.dmabuf_scanout(
                        scanout_id,
                        &DmabufScanout {
                            fd: e.fd.as_fd(),
                            x: rect.x,
                            y: rect.y,
                            width: rect.width,
                            height: rect.height,
                            fd_width: layout.width,
                            fd_height: layout.height,
                            fd_stride: layout.strides[0],
                            fd_flags: 0,
                            fourcc: pixel_format.fourcc as u32,
                            modifier: None,
                        },
                    );
                    dmabuf = true;
                }
                Ok(e) => debug!(
                    "blob {resource_id} exports as {:?}, not a dmabuf: reading it back",
                    e.kind
                ),
                Err(e) => debug!("blob {resource_id}: no dmabuf ({e}), reading it back"),
            }
        }
        if !dmabuf {
            display.scanout(scanout_id, rect.width, rect.height);
        }
        self.scanouts[idx] = ScanoutState {
            resource_id,
            rect,
            blob: Some(layout),
            dmabuf,
        };
        Ok(Response::OkNoData)
    }

    fn resource_flush(
        &mut self,
        resource_id: u32,
        rect: Rect,
        display: &mut dyn Display,
    ) -> GpuResult<Response> {
        let res = self.resource(resource_id)?;
        if res.blob_size.is_none() && !rect.is_inside(res.width, res.height) {
            return Err(GpuError::InvalidParameter(format!(
                "flush {rect:?} outside {}x{}",
                res.width, res.height
            )));
        }
        let mut first_error = None;
        let Self {
            renderer,
            scanouts,
            flush_buffer,
            ..
        } = self;
        for (i, s) in scanouts.iter().enumerate() {
            if s.resource_id != resource_id {
                continue;
            }
            let Some(damage) = rect.intersect(&s.rect) else {
                continue;
            };
            // i < 16; damage lies inside the scanout rect.
            let (sid, dx, dy) = (i as u32, damage.x - s.rect.x, damage.y - s.rect.y);
            if s.dmabuf {
                display.dmabuf_update(sid, dx, dy, damage.width, damage.height);
                continue;
            }
            if s.blob.is_none() {
                // Rows the renderer holds as display pixels already go out without a copy.
                if let Some(rows) = renderer.scanout_pixels(resource_id, damage) {
                    display.update(sid, dx, dy, damage.width, damage.height, rows);
                    continue;
                }
            }
            // Bounded by MAX_SCANOUT_DIMENSION^2 * 4 (and by the resource, itself bounded by
            // max_hostmem or guest memory); still allocated fallibly.
            let len = damage.width as usize * damage.height as usize * BYTES_PER_PIXEL as usize;
            let pixels = match flush_buffer.get(len) {
                Ok(p) => p,
                Err(e) => {
                    warn!("flush of resource {resource_id}: {len} bytes: {e}");
                    first_error.get_or_insert(RendererError::OutOfMemory(format!("{len} bytes")));
                    continue;
                }
            };
            let read = match &s.blob {
                Some(layout) => renderer.read_blob_pixels(resource_id, layout, damage, pixels),
                None => renderer.read_pixels(resource_id, damage, pixels),
            };
            match read {
                Ok(()) => display.update(sid, dx, dy, damage.width, damage.height, pixels),
                Err(e) => {
                    warn!("flush of resource {resource_id} on scanout {i}: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        flush_buffer.trim();
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(Response::OkNoData),
        }
    }

    fn create_blob(
        &mut self,
        ctx_id: u32,
        resource_id: u32,
        args: CreateBlob,
        entries: Vec<protocol::MemEntry>,
        mem: &GuestMemoryMmap,
    ) -> GpuResult<Response> {
        self.require_blob("RESOURCE_CREATE_BLOB")?;
        if args.size == 0 {
            return Err(GpuError::InvalidParameter("blob of size 0".into()));
        }
        let (hostmem, backing) = match args.blob_mem {
            VIRTIO_GPU_BLOB_MEM_GUEST => (0, Some(GuestBacking::new(mem.clone(), entries)?)),
            VIRTIO_GPU_BLOB_MEM_HOST3D | VIRTIO_GPU_BLOB_MEM_HOST3D_GUEST => {
                if !self.caps.blob_host {
                    return Err(GpuError::NotOffered("host blobs"));
                }
                self.check_context(ctx_id)?;
                if args.blob_mem == VIRTIO_GPU_BLOB_MEM_HOST3D {
                    if !entries.is_empty() {
                        debug!(
                            "HOST3D blob {resource_id}: {} entries ignored",
                            entries.len()
                        );
                    }
                    (args.size, None)
                } else {
                    (args.size, Some(GuestBacking::new(mem.clone(), entries)?))
                }
            }
            other => return Err(GpuError::InvalidParameter(format!("blob_mem {other}"))),
        };
        if let Some(b) = &backing {
            if b.len() < args.size {
                return Err(GpuError::InvalidParameter(format!(
                    "blob {resource_id} of {} bytes with {} bytes of backing",
                    args.size,
                    b.len()
                )));
            }
        }
        self.reserve_resource(resource_id, hostmem)?;
        if let Err(e) = self
            .renderer
            .create_blob(resource_id, ctx_id, &args, backing)
        {
            self.release_hostmem(hostmem);
            return Err(e.into());
        }
        self.resources.insert(
            resource_id,
            ResourceState {
                width: 0,
                height: 0,
                hostmem,
                blob_size: Some(args.size),
                blob_mem: args.blob_mem,
                blob_flags: args.blob_flags,
                mapped_at: None,
                uuid: None,
            },
        );
        Ok(Response::OkNoData)
    }

    fn map_blob(&mut self, resource_id: u32, offset: u64) -> GpuResult<Response> {
        self.require_blob("RESOURCE_MAP_BLOB")?;
        let res = self.resource(resource_id)?;
        let size = res.blob_size.ok_or_else(|| {
            GpuError::InvalidParameter(format!("resource {resource_id} is not a blob"))
        })?;
        if res.blob_mem == VIRTIO_GPU_BLOB_MEM_GUEST {
            return Err(GpuError::InvalidParameter(format!(
                "blob {resource_id} is a guest blob (guest memory is mapped by the guest)"
            )));
        }
        if res.blob_flags & VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE == 0 {
            return Err(GpuError::InvalidParameter(format!(
                "blob {resource_id} was not created MAPPABLE"
            )));
        }
        if let Some(at) = res.mapped_at {
            return Err(GpuError::InvalidParameter(format!(
                "blob {resource_id} is already mapped at {at:#x}"
            )));
        }
        if !self.host_visible_region() {
            return Err(GpuError::NotOffered(
                "blob mapping (no host-visible shared memory region)",
            ));
        }
        let region = self.config.host_visible_size;
        let align = self.map_alignment;
        if offset % align != 0 {
            return Err(GpuError::InvalidParameter(format!(
                "map offset {offset:#x} is not aligned to {align:#x}"
            )));
        }
        let len = size
            .checked_next_multiple_of(align)
            .filter(|&l| l <= region)
            .ok_or_else(|| {
                GpuError::InvalidParameter(format!(
                    "blob {resource_id} of {size} bytes does not fit the {region}-byte region"
                ))
            })?;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= region)
            .ok_or_else(|| {
                GpuError::InvalidParameter(format!(
                    "mapping {offset:#x}+{len:#x} outside the {region:#x}-byte region"
                ))
            })?;
        // The live mapping starting last before `end` is the only one that can overlap.
        if let Some((&at, m)) = self.blob_maps.range(..end).next_back() {
            if at + m.len > offset {
                return Err(GpuError::InvalidParameter(format!(
                    "mapping {offset:#x}+{len:#x} overlaps blob {} at {at:#x}+{:#x}",
                    m.resource_id, m.len
                )));
            }
        }
        if self.blob_maps.len() >= MAX_BLOB_MAPPINGS {
            return Err(GpuError::Renderer(RendererError::OutOfMemory(format!(
                "{MAX_BLOB_MAPPINGS} blobs mapped"
            ))));
        }
        let map_info = self.renderer.map_info(resource_id)? & VIRTIO_GPU_MAP_CACHE_MASK;
        let exported = self.renderer.export_blob(resource_id)?;
        debug!(
            "blob {resource_id}: exported as {:?} (memory at {:#x}), mapping {len:#x} bytes at \
             {offset:#x}",
            exported.kind, exported.offset
        );
        // The memory of a host driver's handle can start after a header (export.rs): the
        // mapping starts there, page-aligned as mmap needs, and the file must cover it.
        let fd_end = (exported.offset % host_page_size() == 0)
            .then(|| exported.offset.checked_add(len))
            .flatten()
            .ok_or_else(|| {
                GpuError::Renderer(RendererError::Library(format!(
                    "blob {resource_id}: its memory starts at {:#x}, not page-aligned",
                    exported.offset
                )))
            })?;
        check_export_covers(exported.fd.as_fd(), fd_end).map_err(|e| {
            GpuError::Renderer(RendererError::Library(format!(
                "blob {resource_id}: exported handle does not cover the mapping: {e}"
            )))
        })?;
        let shm = self
            .shm
            .as_mut()
            .ok_or(GpuError::NotOffered("blob mapping (no mapper)"))?;
        shm.map(exported.fd.as_fd(), exported.offset, offset, len, true)
            .map_err(|e| {
                GpuError::Renderer(RendererError::Library(format!(
                    "the frontend did not map blob {resource_id}: {e}"
                )))
            })?;
        self.blob_maps.insert(offset, BlobMap { resource_id, len });
        if let Some(r) = self.resources.get_mut(&resource_id) {
            r.mapped_at = Some(offset);
        }
        Ok(Response::OkMapInfo(map_info))
    }

    fn unmap_blob(&mut self, resource_id: u32) -> GpuResult<Response> {
        self.require_blob("RESOURCE_UNMAP_BLOB")?;
        let res = self.resource(resource_id)?;
        if res.blob_size.is_none() {
            return Err(GpuError::InvalidParameter(format!(
                "resource {resource_id} is not a blob"
            )));
        }
        let offset = res.mapped_at.ok_or_else(|| {
            GpuError::InvalidParameter(format!("blob {resource_id} is not mapped"))
        })?;
        if let Some(r) = self.resources.get_mut(&resource_id) {
            r.mapped_at = None;
        }
        let Some(m) = self.blob_maps.remove(&offset) else {
            return Ok(Response::OkNoData);
        };
        if let Some(shm) = self.shm.as_mut() {
            shm.unmap(offset, m.len).map_err(|e| {
                GpuError::Renderer(RendererError::Library(format!(
                    "the frontend did not unmap blob {resource_id}: {e}"
                )))
            })?;
        }
        Ok(Response::OkNoData)
    }

    fn ctx_create(&mut self, ctx_id: u32, context_init: u32, name: &str) -> GpuResult<Response> {
        self.require_3d("CTX_CREATE")?;
        if ctx_id == 0 || self.contexts.contains_key(&ctx_id) {
            return Err(GpuError::InvalidContextId(ctx_id));
        }
        if self.contexts.len() >= self.config.max_contexts {
            return Err(GpuError::TooManyContexts(self.config.max_contexts));
        }
        let capset_id = context_init & VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK;
        if context_init & !VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK != 0 {
            debug!("CTX_CREATE: reserved context_init bits {context_init:#x} ignored");
        }
        if capset_id != 0 {
            if !self.caps.context_init {
                return Err(GpuError::InvalidParameter(
                    "context_init without CONTEXT_INIT".into(),
                ));
            }
            if !self.capsets.iter().any(|c| c.id == capset_id) {
                return Err(GpuError::InvalidParameter(format!(
                    "context with unknown capset {capset_id}"
                )));
            }
        }
        self.renderer.context_create(ctx_id, capset_id, name)?;
        self.contexts.insert(
            ctx_id,
            ContextState {
                resources: HashSet::new(),
            },
        );
        Ok(Response::OkNoData)
    }

    fn update_cursor(
        &mut self,
        c: &CursorCommand,
        display: &mut dyn Display,
    ) -> GpuResult<Response> {
        self.check_scanout(c.scanout_id)?;
        if c.resource_id == 0 {
            display.cursor_hide(c.scanout_id, c.x, c.y);
            return Ok(Response::OkNoData);
        }
        let res = self.resource(c.resource_id)?;
        if res.blob_size.is_some() {
            return Err(GpuError::InvalidParameter(format!(
                "cursor resource {} is a blob",
                c.resource_id
            )));
        }
        // The spec fixes 64x64; a smaller resource is shown padded with transparent pixels. A
        // 3D resource can have no pixels at all (a PIPE_BUFFER of width 0).
        let w = res.width.min(CURSOR_SIZE);
        let h = res.height.min(CURSOR_SIZE);
        if w == 0 || h == 0 {
            return Err(GpuError::InvalidParameter(format!(
                "cursor resource {} has no pixels ({}x{})",
                c.resource_id, res.width, res.height
            )));
        }
        let mut argb = vec![0u8; (w * h * BYTES_PER_PIXEL) as usize];
        self.renderer
            .read_pixels(c.resource_id, Rect::new(0, 0, w, h), &mut argb)?;
        let mut image = Box::new([0u32; (CURSOR_SIZE * CURSOR_SIZE) as usize]);
        for (y, row) in argb
            .chunks_exact((w * BYTES_PER_PIXEL) as usize)
            .enumerate()
        {
            for (x, p) in row.chunks_exact(4).enumerate() {
                image[y * CURSOR_SIZE as usize + x] = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            }
        }
        display.cursor_update(c.scanout_id, c.x, c.y, c.hot_x, c.hot_y, &image);
        Ok(Response::OkNoData)
    }
}

/// Refuses to hand the frontend a shared-memory file smaller than the mapping it is asked to make:
/// pages past the end of a memfd/shm file would fault (SIGBUS) in the frontend when the guest
/// touches them. The guest's blob size is checked by the renderer library; this does not rely on
/// it. Handles that are not regular files (dmabufs, devices) have no meaningful size and pass.
fn check_export_covers(fd: BorrowedFd<'_>, len: u64) -> std::io::Result<()> {
    let meta = std::fs::File::from(fd.try_clone_to_owned()?).metadata()?;
    if meta.is_file() {
        let covered = meta
            .len()
            .checked_next_multiple_of(4096)
            .unwrap_or(u64::MAX);
        if covered < len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("file of {} bytes, mapping of {len} bytes", meta.len()),
            ));
        }
    }
    Ok(())
}

/// The host's page size, [`DEFAULT_MAP_ALIGNMENT`] if it cannot be read.
fn host_page_size() -> u64 {
    // SAFETY: sysconf only reads a system value.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(v)
        .ok()
        .filter(|v| v.is_power_of_two())
        .unwrap_or(DEFAULT_MAP_ALIGNMENT)
}

/// A scanout rectangle must be non-empty, inside the image and at most
/// [`MAX_SCANOUT_DIMENSION`] on each side.
fn check_scanout_rect(rect: Rect, width: u32, height: u32) -> GpuResult<()> {
    if rect.is_empty()
        || !rect.is_inside(width, height)
        || rect.width > MAX_SCANOUT_DIMENSION
        || rect.height > MAX_SCANOUT_DIMENSION
    {
        return Err(GpuError::InvalidParameter(format!(
            "scanout {rect:?} in a {width}x{height} image"
        )));
    }
    Ok(())
}

fn default_modes(config: &GpuConfig) -> Vec<DisplayMode> {
    (0..config.num_scanouts)
        .map(|i| {
            if i == 0 {
                DisplayMode {
                    x: 0,
                    y: 0,
                    width: config.default_width,
                    height: config.default_height,
                    enabled: true,
                }
            } else {
                DisplayMode::default()
            }
        })
        .collect()
}

/// Writes `response` (with `request`'s fence info) into the writable part and returns the bytes
/// written. A response that does not fit becomes an ERR_UNSPEC header if one fits, else nothing.
fn write_response(
    writer: &mut Writer<'_>,
    response: &Response,
    request: Option<&CtrlHeader>,
) -> u32 {
    let mut bytes = response.encode(request);
    if bytes.len() > writer.available_bytes() {
        warn!(
            "response of {} bytes does not fit the {}-byte buffer",
            bytes.len(),
            writer.available_bytes()
        );
        bytes = Response::Err(ErrorCode::Unspec).encode(request);
        if bytes.len() > writer.available_bytes() {
            return 0;
        }
    }
    match writer.write_all(&bytes) {
        // At most 24 + MAX_CAPSET_SIZE bytes.
        Ok(()) => bytes.len() as u32,
        Err(e) => {
            warn!("writing the response failed: {e}");
            0
        }
    }
}

/// A valid 128-byte EDID 1.4 base block for a `width` x `height` 60 Hz mode: one detailed
/// timing (reduced blanking), range limits, a monitor name, the checksum. Sizes beyond what a
/// detailed timing can say (4095) are clamped.
pub fn generate_edid(width: u32, height: u32) -> [u8; 128] {
    let w = width.clamp(1, 4095);
    let h = height.clamp(1, 4095);
    let mut e = [0u8; 128];
    e[0..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "VUG" (5-bit letters, big endian), product 0x1234, serial 1.
    let id: u16 =
        ((u16::from(b'V' - b'@')) << 10) | ((u16::from(b'U' - b'@')) << 5) | u16::from(b'G' - b'@');
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&0x1234u16.to_le_bytes());
    e[12..16].copy_from_slice(&1u32.to_le_bytes());
    e[16] = 1; // week
    e[17] = 34; // year of manufacture: 2024 - 1990
    e[18] = 1; // EDID version 1
    e[19] = 4; // revision 4
    e[20] = 0xa5; // digital, 8 bits per colour, DisplayPort
                  // Image size in cm at ~96 dpi.
    e[21] = (w * 254 / 96 / 100).clamp(1, 255) as u8;
    e[22] = (h * 254 / 96 / 100).clamp(1, 255) as u8;
    e[23] = 120; // gamma 2.2
    e[24] = 0x06; // RGB 4:4:4, sRGB default, preferred timing is native
                  // sRGB chromaticity.
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // No established timings; standard timings unused (0x01 0x01).
    for i in 0..8 {
        e[38 + 2 * i] = 0x01;
        e[39 + 2 * i] = 0x01;
    }
    // Detailed timing descriptor, CVT reduced-blanking-like.
    let (hblank, hfp, hsync) = (160u32, 48u32, 32u32);
    let (vblank, vfp, vsync) = (35u32, 3u32, 6u32);
    let htotal = u64::from(w + hblank);
    let vtotal = u64::from(h + vblank);
    let clock_10khz = (htotal * vtotal * 60)
        .div_ceil(10_000)
        .min(u64::from(u16::MAX)) as u16;
    let hmm = (w * 254 / 960).min(4095);
    let vmm = (h * 254 / 960).min(4095);
    let d = &mut e[54..72];
    d[0..2].copy_from_slice(&clock_10khz.to_le_bytes());
    d[2] = (w & 0xff) as u8;
    d[3] = (hblank & 0xff) as u8;
    d[4] = (((w >> 8) & 0xf) << 4 | ((hblank >> 8) & 0xf)) as u8;
    d[5] = (h & 0xff) as u8;
    d[6] = (vblank & 0xff) as u8;
    d[7] = (((h >> 8) & 0xf) << 4 | ((vblank >> 8) & 0xf)) as u8;
    d[8] = (hfp & 0xff) as u8;
    d[9] = (hsync & 0xff) as u8;
    d[10] = (((vfp & 0xf) << 4) | (vsync & 0xf)) as u8;
    d[11] = (((hfp >> 8) & 3) << 6
        | ((hsync >> 8) & 3) << 4
        | ((vfp >> 4) & 3) << 2
        | ((vsync >> 4) & 3)) as u8;
    d[12] = (hmm & 0xff) as u8;
    d[13] = (vmm & 0xff) as u8;
    d[14] = (((hmm >> 8) & 0xf) << 4 | ((vmm >> 8) & 0xf)) as u8;
    d[17] = 0x1e; // digital separate sync, +hsync +vsync
                  // Range limits: 50-75 Hz, 30-255 kHz, 2550 MHz max, no timing formula.
    e[72..90].copy_from_slice(&[
        0, 0, 0, 0xfd, 0, 50, 75, 30, 255, 255, 0x01, 0x0a, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    ]);
    // Monitor name.
    e[90..95].copy_from_slice(&[0, 0, 0, 0xfc, 0]);
    e[95..108].copy_from_slice(b"vhost-gpu\n   ");
    // Dummy descriptor.
    e[108..113].copy_from_slice(&[0, 0, 0, 0x10, 0]);
    e[126] = 0; // no extensions
    let sum = e[..127].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT, QueueT};
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::protocol::tests::{hdr, le32s, test_mem, WRITE};
    use crate::protocol::*;
    use crate::renderer::software::SoftwareRenderer;
    use crate::renderer::{CapsetInfo, ExportedBlob, ResourceInfo};
    use drm_fourcc::DrmFourcc;

    // ---- test doubles ---------------------------------------------------------------------

    /// One call the device made on the display.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Call {
        Scanout(u32, u32, u32),
        Update(u32, u32, u32, u32, u32, Vec<u8>),
        DmabufScanout(u32, u32, u32, u32, u32),
        DmabufUpdate(u32, u32, u32, u32, u32),
        CursorUpdate(u32, u32, u32, u32, u32, Vec<u32>),
        CursorMove(u32, u32, u32),
        CursorHide(u32, u32, u32),
    }

    /// A display that records what the device tells it.
    #[derive(Default)]
    struct RecordingDisplay {
        calls: Vec<Call>,
        modes: Option<Vec<DisplayMode>>,
        edid: Option<Vec<u8>>,
        dmabuf: bool,
    }

    impl Display for RecordingDisplay {
        fn display_info(&mut self) -> Option<Vec<DisplayMode>> {
            self.modes.clone()
        }
        fn edid(&mut self, _scanout_id: u32) -> Option<Vec<u8>> {
            self.edid.clone()
        }
        fn scanout(&mut self, scanout_id: u32, width: u32, height: u32) {
            self.calls.push(Call::Scanout(scanout_id, width, height));
        }
        fn update(&mut self, s: u32, x: u32, y: u32, w: u32, h: u32, pixels: &[u8]) {
            // The display is x8r8g8b8: the fourth byte of a pixel means nothing to it (rows of a
            // B8G8R8X8 resource go out with the guest's byte there), so it is recorded as 0xff.
            let mut pixels = pixels.to_vec();
            for p in pixels.chunks_exact_mut(4) {
                p[3] = 0xff;
            }
            self.calls.push(Call::Update(s, x, y, w, h, pixels));
        }
        fn supports_dmabuf(&self) -> bool {
            self.dmabuf
        }
        fn dmabuf_scanout(&mut self, scanout_id: u32, scanout: &DmabufScanout<'_>) {
            assert_eq!(
                (scanout.fd_width, scanout.fd_height, scanout.fd_stride),
                (16, 8, 64)
            );
            assert_eq!(scanout.fourcc, DrmFourcc::Xrgb8888 as u32);
            self.calls.push(Call::DmabufScanout(
                scanout_id,
                scanout.x,
                scanout.y,
                scanout.width,
                scanout.height,
            ));
        }
        fn dmabuf_update(&mut self, s: u32, x: u32, y: u32, w: u32, h: u32) {
            self.calls.push(Call::DmabufUpdate(s, x, y, w, h));
        }
        fn cursor_update(
            &mut self,
            s: u32,
            x: u32,
            y: u32,
            hot_x: u32,
            hot_y: u32,
            image: &[u32; (CURSOR_SIZE * CURSOR_SIZE) as usize],
        ) {
            self.calls
                .push(Call::CursorUpdate(s, x, y, hot_x, hot_y, image.to_vec()));
        }
        fn cursor_move(&mut self, s: u32, x: u32, y: u32) {
            self.calls.push(Call::CursorMove(s, x, y));
        }
        fn cursor_hide(&mut self, s: u32, x: u32, y: u32) {
            self.calls.push(Call::CursorHide(s, x, y));
        }
    }

    /// What the 3D test double saw, and the fences the test completes by hand.
    #[derive(Default)]
    struct DoubleLog {
        fences: Vec<FenceId>,
        complete: Vec<FenceId>,
        refuse_fences: bool,
        contexts: Vec<(u32, u32, String)>,
        submits: Vec<(u32, Vec<u8>)>,
    }

    /// A test double: the software renderer for 2D plus fake 3D (contexts, submits, one capset)
    /// whose fences complete only when the test pushes them into `complete`.
    struct ManualFenceRenderer {
        inner: SoftwareRenderer,
        log: Rc<RefCell<DoubleLog>>,
    }

    impl Renderer for ManualFenceRenderer {
        fn name(&self) -> &'static str {
            "manual-fence test double"
        }
        fn capabilities(&self) -> RendererCapabilities {
            RendererCapabilities {
                three_d: true,
                context_init: true,
                blob_guest: true,
                blob_host: false,
            }
        }
        fn capsets(&self) -> Vec<CapsetInfo> {
            vec![
                CapsetInfo {
                    id: VIRTIO_GPU_CAPSET_VIRGL2,
                    max_version: 2,
                    max_size: 8,
                },
                CapsetInfo {
                    id: VIRTIO_GPU_CAPSET_VENUS,
                    max_version: 0,
                    max_size: MAX_CAPSET_SIZE + 1,
                },
            ]
        }
        fn capset(&mut self, id: u32, version: u32) -> crate::renderer::Result<Vec<u8>> {
            Ok(vec![
                id as u8,
                version as u8,
                0xaa,
                0xbb,
                0xcc,
                0xdd,
                0xee,
                0xff,
            ])
        }
        fn resource_create_2d(
            &mut self,
            id: u32,
            format: u32,
            width: u32,
            height: u32,
        ) -> crate::renderer::Result<()> {
            self.inner.resource_create_2d(id, format, width, height)
        }
        fn resource_unref(&mut self, id: u32) -> crate::renderer::Result<()> {
            self.inner.resource_unref(id)
        }
        fn attach_backing(&mut self, id: u32, b: GuestBacking) -> crate::renderer::Result<()> {
            self.inner.attach_backing(id, b)
        }
        fn detach_backing(&mut self, id: u32) -> crate::renderer::Result<()> {
            self.inner.detach_backing(id)
        }
        fn transfer_to_host_2d(
            &mut self,
            id: u32,
            rect: Rect,
            offset: u64,
        ) -> crate::renderer::Result<()> {
            self.inner.transfer_to_host_2d(id, rect, offset)
        }
        fn context_create(
            &mut self,
            ctx_id: u32,
            capset_id: u32,
            name: &str,
        ) -> crate::renderer::Result<()> {
            self.log
                .borrow_mut()
                .contexts
                .push((ctx_id, capset_id, name.to_string()));
            Ok(())
        }
        fn context_destroy(&mut self, _ctx_id: u32) -> crate::renderer::Result<()> {
            Ok(())
        }
        fn submit(&mut self, ctx_id: u32, commands: &[u8]) -> crate::renderer::Result<()> {
            self.log
                .borrow_mut()
                .submits
                .push((ctx_id, commands.to_vec()));
            Ok(())
        }
        fn create_fence(&mut self, fence: FenceId) -> crate::renderer::Result<()> {
            let mut log = self.log.borrow_mut();
            if log.refuse_fences {
                return Err(RendererError::Library("refused".into()));
            }
            log.fences.push(fence);
            Ok(())
        }
        fn poll(&mut self) -> Vec<FenceId> {
            std::mem::take(&mut self.log.borrow_mut().complete)
        }
        fn resource_info(&self, id: u32) -> crate::renderer::Result<ResourceInfo> {
            self.inner.resource_info(id)
        }
        fn read_pixels(
            &mut self,
            id: u32,
            rect: Rect,
            out: &mut [u8],
        ) -> crate::renderer::Result<()> {
            self.inner.read_pixels(id, rect, out)
        }
        fn export_dmabuf(&mut self, id: u32) -> crate::renderer::Result<crate::renderer::Dmabuf> {
            // Resource 77 "exports" (any fd stands in for the dmabuf); the others cannot.
            if id != 77 {
                return Err(RendererError::Unsupported("dmabuf export"));
            }
            let file = std::fs::File::open("/dev/null")
                .map_err(|e| RendererError::Library(e.to_string()))?;
            Ok(crate::renderer::Dmabuf {
                fd: file.into(),
                width: 16,
                height: 8,
                stride: 64,
                fourcc: DrmFourcc::Xrgb8888 as u32,
                modifier: None,
                flags: 0,
            })
        }
    }

    // ---- harness --------------------------------------------------------------------------

    const QUEUE_SIZE: u16 = 256;
    const REQ_BASE: u64 = 0x10_0000;
    const RESP_BASE: u64 = 0x40_0000;
    /// Guest pages for backings.
    const DATA_BASE: u64 = 0x80_0000;

    struct Harness {
        mem: GuestMemoryMmap,
        next: u16,
        display: RecordingDisplay,
        gpu: VirtioGpu,
    }

    struct Reply {
        used: Option<UsedEntry>,
        head: u16,
        resp_addr: u64,
    }

    impl Harness {
        fn new(renderer: Box<dyn Renderer>, config: GpuConfig) -> Self {
            Harness {
                mem: test_mem(),
                next: 0,
                display: RecordingDisplay::default(),
                gpu: VirtioGpu::new(renderer, config),
            }
        }

        fn software() -> Self {
            Self::new(Box::new(SoftwareRenderer::new()), GpuConfig::default())
        }

        fn manual(config: GpuConfig) -> (Self, Rc<RefCell<DoubleLog>>) {
            let log = Rc::new(RefCell::new(DoubleLog::default()));
            let r = ManualFenceRenderer {
                inner: SoftwareRenderer::new(),
                log: log.clone(),
            };
            (Self::new(Box::new(r), config), log)
        }

        /// Sends `request` on `queue` with a writable buffer of `resp_len` bytes (none if 0).
        fn send_on(&mut self, queue: QueueKind, request: &[u8], resp_len: u32) -> Reply {
            // Each chain goes into a fresh mock queue, so slots can be reused.
            let k = self.next;
            self.next = (self.next + 1) % (QUEUE_SIZE / 2);
            let req_addr = REQ_BASE + u64::from(k) * 0x2000;
            let resp_addr = RESP_BASE + u64::from(k) * 0x2000;
            self.mem
                .write_slice(request, GuestAddress(req_addr))
                .unwrap();
            // Fill the response buffer with garbage to see what is written.
            self.mem
                .write_slice(&vec![0xcc; resp_len as usize], GuestAddress(resp_addr))
                .unwrap();
            let head = 2 * k;
            let mut descs = vec![RawDescriptor::from(SplitDescriptor::new(
                req_addr,
                request.len() as u32,
                if resp_len > 0 {
                    virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16
                } else {
                    0
                },
                head + 1,
            ))];
            if resp_len > 0 {
                descs.push(RawDescriptor::from(SplitDescriptor::new(
                    resp_addr, resp_len, WRITE, 0,
                )));
            }
            let mut q = MockSplitQueue::new(&self.mem, QUEUE_SIZE);
            // Only this chain is made available (one avail entry per fresh mock queue).
            q.add_desc_chains(&descs, head).unwrap();
            let _ = &mut q;
            let mut queue_obj: Queue = q.create_queue().unwrap();
            let chain = queue_obj.iter(&self.mem).unwrap().next().unwrap();
            assert_eq!(chain.head_index(), head);
            let used = self.gpu.process_chain(queue, chain, &mut self.display);
            Reply {
                used,
                head,
                resp_addr,
            }
        }

        fn send(&mut self, request: &[u8]) -> Reply {
            self.send_on(QueueKind::Control, request, 2048)
        }

        fn resp(&self, r: &Reply, len: usize) -> Vec<u8> {
            let mut v = vec![0u8; len];
            self.mem
                .read_slice(&mut v, GuestAddress(r.resp_addr))
                .unwrap();
            v
        }

        fn resp_type(&self, r: &Reply) -> u32 {
            u32::from_le_bytes(self.resp(r, 4).try_into().unwrap())
        }

        /// Sends and returns the response type, asserting the entry is published at once.
        fn cmd(&mut self, request: &[u8]) -> u32 {
            let r = self.send(request);
            let used = r.used.expect("unfenced command published at once");
            assert_eq!(used.head_index, r.head);
            assert!(used.len >= 24);
            self.resp_type(&r)
        }

        fn create_2d(&mut self, id: u32, format: u32, w: u32, h: u32) -> u32 {
            self.cmd(&req(
                VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
                &le32s(&[id, format, w, h]),
            ))
        }

        fn attach(&mut self, id: u32, entries: &[(u64, u32)]) -> u32 {
            let mut b = le32s(&[id, entries.len() as u32]);
            for (a, l) in entries {
                b.extend_from_slice(&a.to_le_bytes());
                b.extend_from_slice(&le32s(&[*l, 0]));
            }
            self.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, &b))
        }

        fn transfer(&mut self, id: u32, r: Rect, offset: u64) -> u32 {
            let mut b = le32s(&[r.x, r.y, r.width, r.height]);
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(&le32s(&[id, 0]));
            self.cmd(&req(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D, &b))
        }

        fn set_scanout(&mut self, scanout: u32, id: u32, r: Rect) -> u32 {
            self.cmd(&req(
                VIRTIO_GPU_CMD_SET_SCANOUT,
                &le32s(&[r.x, r.y, r.width, r.height, scanout, id]),
            ))
        }

        fn flush(&mut self, id: u32, r: Rect) -> u32 {
            self.cmd(&req(
                VIRTIO_GPU_CMD_RESOURCE_FLUSH,
                &le32s(&[r.x, r.y, r.width, r.height, id, 0]),
            ))
        }
    }

    fn req(type_: u32, body: &[u8]) -> Vec<u8> {
        let mut v = hdr(type_, 0, 0, 0, 0);
        v.extend_from_slice(body);
        v
    }

    fn fenced(type_: u32, body: &[u8], fence: u64, ctx: u32, ring: Option<u8>) -> Vec<u8> {
        let mut flags = VIRTIO_GPU_FLAG_FENCE;
        if ring.is_some() {
            flags |= VIRTIO_GPU_FLAG_INFO_RING_IDX;
        }
        let mut v = hdr(type_, flags, fence, ctx, ring.unwrap_or(0));
        v.extend_from_slice(body);
        v
    }

    /// Pixel (x, y) of the guest image used below: B, G, R, X bytes.
    fn px(x: u32, y: u32) -> [u8; 4] {
        [x as u8, y as u8, (x ^ y) as u8, 0x77]
    }

    /// Writes a w x h B8G8R8X8 image (stride w*4) at DATA_BASE.
    fn write_image(h: &Harness, w: u32, ht: u32) {
        for y in 0..ht {
            for x in 0..w {
                h.mem
                    .write_slice(
                        &px(x, y),
                        GuestAddress(DATA_BASE + u64::from((y * w + x) * 4)),
                    )
                    .unwrap();
            }
        }
    }

    /// The XRGB8888 bytes the display must get for rect `r` of that image.
    fn expected(r: Rect) -> Vec<u8> {
        let mut v = Vec::new();
        for y in r.y..r.y + r.height {
            for x in r.x..r.x + r.width {
                let p = px(x, y);
                v.extend_from_slice(&[p[0], p[1], p[2], 0xff]);
            }
        }
        v
    }

    // ---- tests ----------------------------------------------------------------------------

    #[test]
    fn features_and_config_follow_the_renderer() {
        let h = Harness::software();
        let f = h.gpu.device_features();
        assert_eq!(
            f,
            (1 << VIRTIO_GPU_F_EDID)
                | (1 << VIRTIO_GPU_F_RESOURCE_UUID)
                | (1 << VIRTIO_GPU_F_RESOURCE_BLOB)
        );
        assert_eq!(h.gpu.config_space(), le32s(&[0, 0, 1, 0, 0]));
        let (m, _) = Harness::manual(GpuConfig {
            num_scanouts: 40,
            edid: false,
            ..Default::default()
        });
        let f = m.gpu.device_features();
        assert_eq!(
            f,
            (1 << VIRTIO_GPU_F_VIRGL)
                | (1 << VIRTIO_GPU_F_CONTEXT_INIT)
                | (1 << VIRTIO_GPU_F_RESOURCE_UUID)
                | (1 << VIRTIO_GPU_F_RESOURCE_BLOB)
        );
        // 16 scanouts at most; the oversized capset is not offered.
        assert_eq!(m.gpu.config_space(), le32s(&[0, 0, 16, 1, 0]));
    }

    #[test]
    fn create_attach_transfer_scanout_flush_sends_exactly_the_damage() {
        let mut h = Harness::software();
        let (w, ht) = (9u32, 6u32);
        write_image(&h, w, ht);
        assert_eq!(
            h.create_2d(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, w, ht),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        // Backing in two pieces.
        let half = w * ht * 2;
        assert_eq!(
            h.attach(1, &[(DATA_BASE, half), (DATA_BASE + u64::from(half), half)]),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(
            h.transfer(1, Rect::new(0, 0, w, ht), 0),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        // Show the sub-rectangle (2,1) 6x4 of the resource on scanout 0.
        let sr = Rect::new(2, 1, 6, 4);
        assert_eq!(h.set_scanout(0, 1, sr), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.display.calls, vec![Call::Scanout(0, 6, 4)]);
        h.display.calls.clear();
        // Flush (0,0) 4x3: the damage is its intersection with the scanout, (2,1) 2x2,
        // reported relative to the scanout at (0,0).
        assert_eq!(h.flush(1, Rect::new(0, 0, 4, 3)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.display.calls,
            vec![Call::Update(0, 0, 0, 2, 2, expected(Rect::new(2, 1, 2, 2)))]
        );
        h.display.calls.clear();
        // A flush outside the scanout sends nothing; one inside sends just that.
        assert_eq!(h.flush(1, Rect::new(8, 0, 1, 6)), VIRTIO_GPU_RESP_OK_NODATA);
        assert!(h.display.calls.is_empty());
        assert_eq!(h.flush(1, Rect::new(5, 3, 3, 3)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.display.calls,
            vec![Call::Update(0, 3, 2, 3, 2, expected(Rect::new(5, 3, 3, 2)))]
        );
        h.display.calls.clear();
        // A flush of a rectangle outside the resource is refused.
        assert_eq!(
            h.flush(1, Rect::new(0, 0, w + 1, 1)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // Unref disables the scanout showing it.
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[1, 0]))),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.display.calls, vec![Call::Scanout(0, 0, 0)]);
        assert_eq!(
            h.flush(1, Rect::new(0, 0, 1, 1)),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
    }

    #[test]
    fn partial_transfer_updates_only_its_rectangle() {
        let mut h = Harness::software();
        let (w, ht) = (5u32, 4u32);
        write_image(&h, w, ht);
        h.create_2d(3, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, w, ht);
        h.attach(3, &[(DATA_BASE, w * ht * 4)]);
        let r = Rect::new(1, 2, 3, 1);
        assert_eq!(
            h.transfer(3, r, u64::from((2 * w + 1) * 4)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        h.set_scanout(0, 3, Rect::new(0, 0, w, ht));
        h.display.calls.clear();
        h.flush(3, Rect::new(0, 0, w, ht));
        let mut want = vec![0u8; (w * ht * 4) as usize];
        for y in 0..ht {
            for x in 0..w {
                let i = ((y * w + x) * 4) as usize;
                let p = if y == 2 && (1..4).contains(&x) {
                    let p = px(x, y);
                    [p[0], p[1], p[2], 0xff]
                } else {
                    [0, 0, 0, 0xff]
                };
                want[i..i + 4].copy_from_slice(&p);
            }
        }
        assert_eq!(h.display.calls, vec![Call::Update(0, 0, 0, w, ht, want)]);
    }

    #[test]
    fn flushes_of_any_size_after_each_other_are_exact() {
        // Whole rows (lent by the renderer) and partial rows (read into the reused flush
        // buffer), large then small then large: no stale bytes of an earlier flush show.
        let mut h = Harness::software();
        let (w, ht) = (9u32, 7u32);
        write_image(&h, w, ht);
        h.create_2d(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, w, ht);
        h.attach(1, &[(DATA_BASE, w * ht * 4)]);
        assert_eq!(
            h.transfer(1, Rect::new(0, 0, w, ht), 0),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        h.set_scanout(0, 1, Rect::new(0, 0, w, ht));
        for r in [
            Rect::new(0, 0, w, ht),
            Rect::new(1, 1, 7, 5),
            Rect::new(3, 2, 2, 1),
            Rect::new(0, 4, w, 2),
            Rect::new(0, 0, w - 1, ht),
            Rect::new(8, 6, 1, 1),
        ] {
            h.display.calls.clear();
            assert_eq!(h.flush(1, r), VIRTIO_GPU_RESP_OK_NODATA);
            assert_eq!(
                h.display.calls,
                vec![Call::Update(0, r.x, r.y, r.width, r.height, expected(r))],
                "{r:?}"
            );
        }
    }

    #[test]
    fn flush_buffer_is_reused_and_freed_when_large() {
        let mut b = FlushBuffer::default();
        b.get(64).unwrap().fill(7);
        let p = b.0.as_ptr();
        assert_eq!(b.get(16).unwrap().len(), 16);
        b.trim();
        assert_eq!((b.0.as_ptr(), b.0.len()), (p, 64), "kept, not reallocated");
        assert_eq!(
            b.get(FLUSH_BUFFER_KEEP_BYTES + 4).unwrap().len(),
            FLUSH_BUFFER_KEEP_BYTES + 4
        );
        b.trim();
        assert_eq!(b.0.capacity(), 0, "a buffer over the limit is freed");
    }

    #[test]
    fn heap_trims_after_large_releases_at_most_once_per_interval() {
        let mut t = HeapTrimmer::default();
        assert!(!t.maybe_trim(), "nothing freed yet");
        t.released(TRIM_AFTER_RELEASED_BYTES - 1);
        assert!(!t.maybe_trim(), "below the threshold");
        t.released(1);
        assert!(t.maybe_trim(), "threshold reached");
        assert_eq!(t.released, 0);
        // Right after a trim: a destroyed context waits for the interval.
        t.dirty = true;
        assert!(!t.maybe_trim(), "within TRIM_MIN_INTERVAL");
        assert!(t.dirty, "still owed");
        t.last = Some(std::time::Instant::now() - TRIM_MIN_INTERVAL);
        assert!(t.maybe_trim(), "after the interval");
        assert!(!t.maybe_trim(), "nothing new freed");
        // Released bytes saturate instead of overflowing.
        t.released(u64::MAX);
        t.released(u64::MAX);
        assert_eq!(t.released, u64::MAX);
    }

    #[test]
    fn resource_errors() {
        let mut h = Harness::software();
        // id 0, bad format, zero size, duplicate.
        assert_eq!(
            h.create_2d(0, 1, 4, 4),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            h.create_2d(1, 77, 4, 4),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.create_2d(1, 1, 0, 4),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(h.create_2d(1, 1, 4, 4), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.create_2d(1, 1, 4, 4),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        // Unknown resources everywhere.
        assert_eq!(
            h.attach(9, &[(DATA_BASE, 64)]),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            h.transfer(9, Rect::new(0, 0, 1, 1), 0),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            h.set_scanout(0, 9, Rect::new(0, 0, 1, 1)),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[9, 0]))),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            h.cmd(&req(
                VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING,
                &le32s(&[9, 0])
            )),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        // Transfer without backing, rects outside, overflowing rects.
        assert_eq!(
            h.transfer(1, Rect::new(0, 0, 4, 4), 0),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // Backing outside guest memory.
        assert_eq!(
            h.attach(1, &[(0xffff_ffff_0000, 64)]),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(h.attach(1, &[(DATA_BASE, 64)]), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.transfer(1, Rect::new(u32::MAX, 0, 2, 1), 0),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.transfer(1, Rect::new(0, 0, 4, 4), 1),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // Scanout checks.
        assert_eq!(
            h.set_scanout(1, 1, Rect::new(0, 0, 4, 4)),
            VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID
        );
        assert_eq!(
            h.set_scanout(0, 1, Rect::new(1, 0, 4, 4)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.set_scanout(0, 1, Rect::new(0, 0, 0, 4)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // SET_SCANOUT with resource 0 disables.
        assert_eq!(
            h.set_scanout(0, 0, Rect::default()),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.display.calls.last(), Some(&Call::Scanout(0, 0, 0)));
        // 3D commands are not offered by the software renderer.
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_SUBMIT_3D, &le32s(&[0, 0]))),
            VIRTIO_GPU_RESP_ERR_UNSPEC
        );
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_GET_CAPSET_INFO, &le32s(&[0, 0]))),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // Unknown and malformed commands.
        assert_eq!(h.cmd(&req(0x0777, &[])), VIRTIO_GPU_RESP_ERR_UNSPEC);
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, &le32s(&[1, 2]))),
            VIRTIO_GPU_RESP_ERR_UNSPEC
        );
    }

    #[test]
    fn host_memory_and_resource_count_are_bounded() {
        let mut h = Harness::new(
            Box::new(SoftwareRenderer::new()),
            GpuConfig {
                max_hostmem: 64 * 64 * 4 + 100,
                max_resources: 3,
                ..Default::default()
            },
        );
        assert_eq!(h.create_2d(1, 1, 64, 64), VIRTIO_GPU_RESP_OK_NODATA);
        // 100 bytes are left: 5x5x4 fits exactly, 6x6x4 does not.
        assert_eq!(h.create_2d(2, 1, 6, 6), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        // A size whose allocation would be absurd is refused by accounting, not by the allocator.
        assert_eq!(
            h.create_2d(2, 1, u32::MAX, u32::MAX),
            VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY
        );
        assert_eq!(h.create_2d(2, 1, 5, 5), VIRTIO_GPU_RESP_OK_NODATA);
        // Freeing gives the memory back.
        h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[1, 0])));
        assert_eq!(h.create_2d(3, 1, 64, 64), VIRTIO_GPU_RESP_OK_NODATA);
        // Resource count: guest blobs cost no host memory but count.
        write_image(&h, 2, 2);
        let blob = |id: u32| {
            let mut b = le32s(&[id, VIRTIO_GPU_BLOB_MEM_GUEST, 0, 1]);
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&16u64.to_le_bytes());
            b.extend_from_slice(&DATA_BASE.to_le_bytes());
            b.extend_from_slice(&le32s(&[16, 0]));
            req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &b)
        };
        assert_eq!(h.cmd(&blob(4)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.cmd(&blob(5)), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[2, 0])));
        assert_eq!(h.cmd(&blob(5)), VIRTIO_GPU_RESP_OK_NODATA);
        // Reset frees everything.
        h.gpu.reset();
        assert_eq!(h.create_2d(1, 1, 64, 64), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.create_2d(2, 1, 5, 5), VIRTIO_GPU_RESP_OK_NODATA);
    }

    #[test]
    fn response_buffer_checks() {
        let mut h = Harness::software();
        // GET_DISPLAY_INFO needs 408 bytes: with 100 it gets an ERR_UNSPEC header only.
        let r = h.send_on(
            QueueKind::Control,
            &req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[]),
            100,
        );
        assert_eq!(r.used.unwrap().len, 24);
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_UNSPEC);
        // With less than a header nothing is written, the chain is still returned.
        let r = h.send_on(
            QueueKind::Control,
            &req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[]),
            10,
        );
        assert_eq!(r.used.unwrap().len, 0);
        assert_eq!(h.resp(&r, 10), vec![0xcc; 10]);
        // No effect happens when the response cannot be delivered.
        let r = h.send_on(
            QueueKind::Control,
            &req(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, &le32s(&[1, 1, 4, 4])),
            0,
        );
        assert_eq!(r.used.unwrap().len, 0);
        assert_eq!(h.create_2d(1, 1, 4, 4), VIRTIO_GPU_RESP_OK_NODATA);
        // A short header.
        let r = h.send(&[0u8; 10]);
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_UNSPEC);
    }

    #[test]
    fn display_info_and_edid() {
        let mut h = Harness::software();
        let r = h.send(&req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[]));
        assert_eq!(r.used.unwrap().len, 408);
        let d = h.resp(&r, 408);
        assert_eq!(&d[0..4], &VIRTIO_GPU_RESP_OK_DISPLAY_INFO.to_le_bytes());
        assert_eq!(&d[24..48], &le32s(&[0, 0, 1024, 768, 1, 0])[..]);
        assert!(d[48..].iter().all(|&b| b == 0));
        // From the display when it can tell.
        h.display.modes = Some(vec![DisplayMode {
            x: 0,
            y: 0,
            width: 1920,
            height: 1080,
            enabled: true,
        }]);
        let r = h.send(&req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[]));
        assert_eq!(
            &h.resp(&r, 48)[24..48],
            &le32s(&[0, 0, 1920, 1080, 1, 0])[..]
        );
        // Generated EDID for that mode.
        let r = h.send(&req(VIRTIO_GPU_CMD_GET_EDID, &le32s(&[0, 0])));
        let e = h.resp(&r, 1056);
        assert_eq!(&e[0..4], &VIRTIO_GPU_RESP_OK_EDID.to_le_bytes());
        assert_eq!(&e[24..28], &128u32.to_le_bytes());
        let edid = &e[32..160];
        assert_eq!(edid, &generate_edid(1920, 1080)[..]);
        // The display's EDID wins.
        h.display.edid = Some(vec![1, 2, 3]);
        let r = h.send(&req(VIRTIO_GPU_CMD_GET_EDID, &le32s(&[0, 0])));
        assert_eq!(&h.resp(&r, 35)[24..35], &[3, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_GET_EDID, &le32s(&[1, 0]))),
            VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID
        );
    }

    #[test]
    fn dmabuf_scanouts_get_dmabuf_updates() {
        let (mut h, _) = Harness::manual(GpuConfig {
            num_scanouts: 2,
            ..Default::default()
        });
        h.display.dmabuf = true;
        h.create_2d(77, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 16, 8);
        h.create_2d(5, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 16, 8);
        assert_eq!(
            h.set_scanout(1, 77, Rect::new(2, 0, 10, 8)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        // Resource 5 cannot be exported: scanout 0 falls back to pixels.
        assert_eq!(
            h.set_scanout(0, 5, Rect::new(0, 0, 16, 8)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(
            h.display.calls,
            vec![Call::DmabufScanout(1, 2, 0, 10, 8), Call::Scanout(0, 16, 8)]
        );
        h.display.calls.clear();
        assert_eq!(
            h.flush(77, Rect::new(0, 1, 4, 2)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.flush(5, Rect::new(0, 0, 1, 1)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.display.calls,
            vec![
                Call::DmabufUpdate(1, 0, 1, 2, 2),
                Call::Update(0, 0, 0, 1, 1, vec![0, 0, 0, 0xff])
            ]
        );
        // A display without dmabuf support never gets one.
        h.display.dmabuf = false;
        h.display.calls.clear();
        h.set_scanout(1, 77, Rect::new(0, 0, 16, 8));
        assert_eq!(h.display.calls, vec![Call::Scanout(1, 16, 8)]);
    }

    #[test]
    fn edid_not_offered_is_refused() {
        let mut h = Harness::new(
            Box::new(SoftwareRenderer::new()),
            GpuConfig {
                edid: false,
                ..Default::default()
            },
        );
        assert_eq!(h.gpu.device_features() & (1 << VIRTIO_GPU_F_EDID), 0);
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_GET_EDID, &le32s(&[0, 0]))),
            VIRTIO_GPU_RESP_ERR_UNSPEC
        );
    }

    #[test]
    fn bad_ring_index_is_answered_at_once() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        let r = h.send(&hdr(
            VIRTIO_GPU_CMD_GET_DISPLAY_INFO,
            VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
            1,
            1,
            200,
        ));
        assert!(r.used.is_some());
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert!(log.borrow().fences.is_empty());
    }

    /// xorshift64*: a small deterministic generator for the robustness test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// A u32 biased towards values that hit existing state (small ids, sizes, the data
        /// area) and edge cases.
        fn word(&mut self) -> u32 {
            match self.below(10) {
                0..=3 => self.below(5) as u32,
                4 | 5 => self.below(80) as u32,
                6 => [u32::MAX, u32::MAX - 3, 1 << 31, 64][self.below(4) as usize],
                7 => DATA_BASE as u32 + (self.below(64) as u32) * 0x100,
                8 => [1, 2, 3, 4, 67, 68, 121, 134][self.below(8) as usize],
                _ => self.next() as u32,
            }
        }
    }

    /// A body for command `t` whose fields are mostly in range: small resource ids, valid
    /// formats, small rectangles, backing in the data area. Random otherwise.
    fn plausible_body(rng: &mut Rng, t: u32) -> Vec<u8> {
        let id = |rng: &mut Rng| 1 + rng.below(4) as u32;
        let small = |rng: &mut Rng| rng.below(8) as u32;
        let size = |rng: &mut Rng| 1 + rng.below(16) as u32;
        let big = |rng: &mut Rng| 16 + rng.below(49) as u32;
        let mut w: Vec<u32> = match t {
            VIRTIO_GPU_CMD_RESOURCE_CREATE_2D => {
                vec![
                    id(rng),
                    [1, 2, 3, 4, 67, 68, 121, 134][rng.below(8) as usize],
                    big(rng),
                    big(rng),
                ]
            }
            VIRTIO_GPU_CMD_SET_SCANOUT => {
                vec![
                    small(rng),
                    small(rng),
                    size(rng),
                    size(rng),
                    rng.below(3) as u32,
                    rng.below(7) as u32,
                ]
            }
            VIRTIO_GPU_CMD_RESOURCE_FLUSH => {
                vec![small(rng), small(rng), size(rng), size(rng), id(rng), 0]
            }
            VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D => {
                vec![
                    small(rng),
                    small(rng),
                    size(rng),
                    size(rng),
                    rng.below(256) as u32,
                    0,
                    id(rng),
                    0,
                ]
            }
            VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING | VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB => {
                let n = rng.below(4) as u32;
                let mut v = if t == VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING {
                    vec![id(rng), n]
                } else {
                    vec![
                        id(rng),
                        1 + rng.below(3) as u32,
                        rng.below(8) as u32,
                        n,
                        rng.below(3) as u32,
                        0,
                    ]
                    .into_iter()
                    .chain([rng.below(0x8000) as u32, 0])
                    .collect()
                };
                for _ in 0..n {
                    v.extend([
                        DATA_BASE as u32 + rng.below(64) as u32 * 0x1000,
                        0,
                        0x4000 - rng.below(2) as u32 * 0x2000,
                        0,
                    ]);
                }
                v
            }
            VIRTIO_GPU_CMD_SET_SCANOUT_BLOB => {
                let (iw, ih) = (size(rng), size(rng));
                vec![
                    small(rng),
                    small(rng),
                    size(rng),
                    size(rng),
                    rng.below(3) as u32,
                    id(rng),
                    iw,
                    ih,
                    [1, 2, 3, 4, 67, 68, 121, 134][rng.below(8) as usize],
                    0,
                    iw * 4 + rng.below(16) as u32,
                    0,
                    0,
                    0,
                    rng.below(64) as u32,
                    0,
                    0,
                    0,
                ]
            }
            VIRTIO_GPU_CMD_CTX_CREATE => {
                let mut v = vec![rng.below(70) as u32, [0, 2, 4, 9][rng.below(4) as usize]];
                v.extend([0x6f6c_6c65; 16]);
                v
            }
            VIRTIO_GPU_CMD_RESOURCE_CREATE_3D => {
                vec![id(rng), 2, 1, 8, big(rng), big(rng), 1, 1, 0, 0, 0, 0]
            }
            VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D | VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D => {
                vec![0, 0, 0, size(rng), size(rng), 1, 0, 0, id(rng), 0, 0, 0]
            }
            VIRTIO_GPU_CMD_SUBMIT_3D => {
                let n = rng.below(5) as u32 * 4;
                let mut v = vec![n, 0];
                v.extend((0..n / 4).map(|_| rng.word()));
                v
            }
            VIRTIO_GPU_CMD_UPDATE_CURSOR | VIRTIO_GPU_CMD_MOVE_CURSOR => {
                vec![
                    rng.below(3) as u32,
                    small(rng),
                    small(rng),
                    0,
                    rng.below(7) as u32,
                    3,
                    3,
                    0,
                ]
            }
            VIRTIO_GPU_CMD_GET_CAPSET => vec![rng.below(5) as u32, rng.below(3) as u32],
            _ => vec![rng.below(7) as u32, 0, rng.word(), rng.word()],
        };
        if rng.below(8) == 0 {
            let i = rng.below(w.len().max(1) as u64) as usize;
            if let Some(x) = w.get_mut(i) {
                *x = rng.word();
            }
        }
        w.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Thousands of random, mostly almost-valid requests on both queues with a 2D and a 3D
    /// renderer: every chain must come back (at once or through `poll_fences`) with a
    /// well-formed response, and nothing may panic.
    #[test]
    fn random_requests_never_panic() {
        const TYPES: [u32; 28] = [
            VIRTIO_GPU_CMD_GET_DISPLAY_INFO,
            VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
            VIRTIO_GPU_CMD_RESOURCE_UNREF,
            VIRTIO_GPU_CMD_SET_SCANOUT,
            VIRTIO_GPU_CMD_RESOURCE_FLUSH,
            VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D,
            VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING,
            VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING,
            VIRTIO_GPU_CMD_GET_CAPSET_INFO,
            VIRTIO_GPU_CMD_GET_CAPSET,
            VIRTIO_GPU_CMD_GET_EDID,
            VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID,
            VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB,
            VIRTIO_GPU_CMD_SET_SCANOUT_BLOB,
            VIRTIO_GPU_CMD_CTX_CREATE,
            VIRTIO_GPU_CMD_CTX_DESTROY,
            VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE,
            VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE,
            VIRTIO_GPU_CMD_RESOURCE_CREATE_3D,
            VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D,
            VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D,
            VIRTIO_GPU_CMD_SUBMIT_3D,
            VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB,
            VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB,
            VIRTIO_GPU_CMD_UPDATE_CURSOR,
            VIRTIO_GPU_CMD_MOVE_CURSOR,
            0x0999,
            VIRTIO_GPU_RESP_OK_NODATA,
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..2 {
            let (mut h, log) = Harness::manual(GpuConfig {
                num_scanouts: 2,
                max_hostmem: 1 << 20,
                max_resources: 8,
                max_contexts: 4,
                ..Default::default()
            });
            if round == 0 {
                h = Harness::software();
            }
            // Some pixels to transfer.
            write_image(&h, 64, 64);
            let mut held = 0usize;
            let mut answered = 0usize;
            let mut ok = 0usize;
            let mut ok_types = HashMap::new();
            for _ in 0..3000 {
                // Half of the time one of the commands that build up 2D state.
                let t = if rng.below(2) == 0 {
                    TYPES[rng.below(TYPES.len() as u64) as usize]
                } else {
                    [
                        VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
                        VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING,
                        VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D,
                        VIRTIO_GPU_CMD_SET_SCANOUT,
                        VIRTIO_GPU_CMD_RESOURCE_FLUSH,
                        VIRTIO_GPU_CMD_UPDATE_CURSOR,
                        VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB,
                        VIRTIO_GPU_CMD_SET_SCANOUT_BLOB,
                    ][rng.below(8) as usize]
                };
                let flags = match rng.below(10) {
                    0 | 1 => VIRTIO_GPU_FLAG_FENCE,
                    2 => VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
                    3 => rng.word(),
                    _ => 0,
                };
                let mut request = hdr(
                    t,
                    flags,
                    rng.below(64),
                    rng.below(4) as u32,
                    rng.below(70) as u8,
                );
                if rng.below(8) == 0 {
                    // Arbitrary words.
                    for _ in 0..rng.below(30) {
                        request.extend_from_slice(&rng.word().to_le_bytes());
                    }
                } else {
                    request.extend_from_slice(&plausible_body(&mut rng, t));
                }
                if rng.below(20) == 0 {
                    request.truncate(rng.below(request.len() as u64 + 1) as usize);
                }
                let cursor_cmd =
                    t == VIRTIO_GPU_CMD_UPDATE_CURSOR || t == VIRTIO_GPU_CMD_MOVE_CURSOR;
                let queue = if cursor_cmd != (rng.below(10) == 0) {
                    QueueKind::Cursor
                } else {
                    QueueKind::Control
                };
                let resp_len = if rng.below(10) == 0 {
                    [0u32, 10, 24, 32, 408][rng.below(5) as usize]
                } else {
                    2048
                };
                let r = h.send_on(queue, &request, resp_len);
                match r.used {
                    Some(used) => {
                        answered += 1;
                        assert_eq!(used.head_index, r.head);
                        assert!(used.len as usize <= resp_len as usize);
                        if used.len >= 24 {
                            let ty = h.resp_type(&r);
                            if ty < VIRTIO_GPU_RESP_ERR_UNSPEC {
                                ok += 1;
                                *ok_types.entry(t).or_insert(0u32) += 1;
                            }
                            assert!(
                                (VIRTIO_GPU_RESP_OK_NODATA..=VIRTIO_GPU_RESP_OK_MAP_INFO)
                                    .contains(&ty)
                                    || (VIRTIO_GPU_RESP_ERR_UNSPEC
                                        ..=VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER)
                                        .contains(&ty),
                                "response type {ty:#x}"
                            );
                        }
                    }
                    None => held += 1,
                }
                if rng.below(8) == 0 {
                    let fences = std::mem::take(&mut log.borrow_mut().fences);
                    log.borrow_mut().complete.extend(fences);
                }
                answered += h.gpu.poll_fences().len();
                if rng.below(500) == 0 {
                    h.gpu.reset();
                }
            }
            // Completing every fence left answers everything still held: nothing is stuck.
            let fences = std::mem::take(&mut log.borrow_mut().fences);
            log.borrow_mut().complete.extend(fences);
            answered += h.gpu.poll_fences().len();
            assert!(h.gpu.pending.is_empty() && h.gpu.ready.is_empty());
            if round == 0 {
                // The software renderer completes every fence at once.
                assert_eq!((held, answered), (0, 3000));
            }
            // Many commands must have succeeded, or the test exercised only error paths.
            eprintln!("round {round}: {ok} successes, per command type {ok_types:x?}");
            assert!(ok > 300, "only {ok} successful commands");
            h.gpu.reset();
        }
    }

    #[test]
    fn generated_edid_is_valid() {
        for (w, hh) in [
            (1024, 768),
            (1920, 1080),
            (3840, 2160),
            (640, 480),
            (20000, 1),
        ] {
            let e = generate_edid(w, hh);
            assert_eq!(&e[0..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
            assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            assert_eq!((e[18], e[19]), (1, 4));
            let d = &e[54..72];
            let hact = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
            let vact = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
            assert_eq!((hact, vact), (w.min(4095), hh.min(4095)));
            assert!(u16::from_le_bytes([d[0], d[1]]) > 0);
        }
    }

    #[test]
    fn uuid_is_stable_per_resource_and_v4() {
        let mut h = Harness::software();
        h.create_2d(1, 1, 4, 4);
        h.create_2d(2, 1, 4, 4);
        let uuid = |h: &mut Harness, id: u32| {
            let r = h.send(&req(VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID, &le32s(&[id, 0])));
            let v = h.resp(&r, 40);
            assert_eq!(&v[0..4], &VIRTIO_GPU_RESP_OK_RESOURCE_UUID.to_le_bytes());
            v[24..40].to_vec()
        };
        let a = uuid(&mut h, 1);
        assert_eq!(a, uuid(&mut h, 1));
        let b = uuid(&mut h, 2);
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 2);
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID, &le32s(&[7, 0]))),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
    }

    #[test]
    fn cursor_commands() {
        let mut h = Harness::software();
        // A 64x64 cursor image: pixel i = B,G,R,A of i.
        for i in 0..64u32 * 64 {
            h.mem
                .write_slice(&i.to_le_bytes(), GuestAddress(DATA_BASE + u64::from(i) * 4))
                .unwrap();
        }
        h.create_2d(5, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 64, 64);
        h.attach(5, &[(DATA_BASE, 64 * 64 * 4)]);
        h.transfer(5, Rect::new(0, 0, 64, 64), 0);
        let cur = |res: u32| le32s(&[0, 100, 200, 0, res, 3, 4, 0]);
        // On the cursor queue without a writable buffer, as Linux sends it.
        let r = h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_UPDATE_CURSOR, &cur(5)),
            0,
        );
        assert_eq!(r.used.unwrap().len, 0);
        let image: Vec<u32> = (0..64 * 64).collect();
        assert_eq!(
            h.display.calls,
            vec![Call::CursorUpdate(0, 100, 200, 3, 4, image)]
        );
        h.display.calls.clear();
        h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_MOVE_CURSOR, &cur(0)),
            24,
        );
        h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_UPDATE_CURSOR, &cur(0)),
            24,
        );
        assert_eq!(
            h.display.calls,
            vec![Call::CursorMove(0, 100, 200), Call::CursorHide(0, 100, 200)]
        );
        h.display.calls.clear();
        // A cursor command on the control queue is refused, and nothing happens.
        let r = h.send(&req(VIRTIO_GPU_CMD_MOVE_CURSOR, &cur(0)));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_UNSPEC);
        // A control command on the cursor queue too.
        let r = h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[]),
            408,
        );
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_UNSPEC);
        // Bad scanout and bad resource.
        let mut bad = cur(5);
        bad[0] = 3;
        let r = h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_MOVE_CURSOR, &bad),
            24,
        );
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
        let r = h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_UPDATE_CURSOR, &cur(9)),
            24,
        );
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        assert!(h.display.calls.is_empty());
        // A smaller cursor resource is padded with transparent pixels.
        h.create_2d(6, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 2, 1);
        h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_UPDATE_CURSOR, &cur(6)),
            0,
        );
        match &h.display.calls[..] {
            [Call::CursorUpdate(_, _, _, _, _, img)] => assert!(img.iter().all(|&p| p == 0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn guest_blob_scanout_reads_guest_memory() {
        let mut h = Harness::software();
        let (w, ht) = (4u32, 3u32);
        let stride = w * 4 + 8;
        // The image at DATA_BASE + 16 with a padded stride.
        for y in 0..ht {
            for x in 0..w {
                h.mem
                    .write_slice(
                        &px(x, y),
                        GuestAddress(DATA_BASE + 16 + u64::from(y * stride + x * 4)),
                    )
                    .unwrap();
            }
        }
        let size = u64::from(16 + stride * ht);
        let mut b = le32s(&[7, VIRTIO_GPU_BLOB_MEM_GUEST, 0, 1]);
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&DATA_BASE.to_le_bytes());
        b.extend_from_slice(&le32s(&[size as u32, 0]));
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &b)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        let sb = |rect: Rect, stride: u32| {
            req(
                VIRTIO_GPU_CMD_SET_SCANOUT_BLOB,
                &le32s(&[
                    rect.x,
                    rect.y,
                    rect.width,
                    rect.height,
                    0,
                    7,
                    w,
                    ht,
                    VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
                    0,
                    stride,
                    0,
                    0,
                    0,
                    16,
                    0,
                    0,
                    0,
                ]),
            )
        };
        assert_eq!(
            h.cmd(&sb(Rect::new(0, 0, w, ht), stride)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.display.calls, vec![Call::Scanout(0, w, ht)]);
        h.display.calls.clear();
        assert_eq!(h.flush(7, Rect::new(1, 1, 2, 2)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.display.calls,
            vec![Call::Update(0, 1, 1, 2, 2, expected(Rect::new(1, 1, 2, 2)))]
        );
        // Layouts that do not fit the blob are refused.
        assert_eq!(
            h.cmd(&sb(Rect::new(0, 0, w, ht), stride + 8)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.cmd(&sb(Rect::new(0, 0, w, ht), w * 4 - 1)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.cmd(&sb(Rect::new(1, 0, w, ht), stride)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // A guest blob is guest memory: the guest maps it itself, RESOURCE_MAP_BLOB refuses it.
        let mut mb = le32s(&[7, 0]);
        mb.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB, &mb)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // A blob bigger than its backing, an unknown blob_mem, host blobs without 3D.
        let mut big = le32s(&[8, VIRTIO_GPU_BLOB_MEM_GUEST, 0, 1]);
        big.extend_from_slice(&0u64.to_le_bytes());
        big.extend_from_slice(&(size + 1).to_le_bytes());
        big.extend_from_slice(&DATA_BASE.to_le_bytes());
        big.extend_from_slice(&le32s(&[size as u32, 0]));
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &big)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        let mut odd = le32s(&[8, 9, 0, 0]);
        odd.extend_from_slice(&[0u8; 16]);
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &odd)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        let mut host = le32s(&[8, VIRTIO_GPU_BLOB_MEM_HOST3D, 0, 0]);
        host.extend_from_slice(&1u64.to_le_bytes());
        host.extend_from_slice(&4096u64.to_le_bytes());
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &host)),
            VIRTIO_GPU_RESP_ERR_UNSPEC
        );
    }

    #[test]
    fn fenced_commands_wait_for_their_fence() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        let dinfo = |fence| fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], fence, 0, None);
        let a = h.send(&dinfo(1));
        let b = h.send(&dinfo(2));
        let c = h.send(&dinfo(3));
        assert!(a.used.is_none() && b.used.is_none() && c.used.is_none());
        // The response is already written, with the fence info.
        let ra = h.resp(&a, 24);
        assert_eq!(
            ra,
            hdr(
                VIRTIO_GPU_RESP_OK_DISPLAY_INFO,
                VIRTIO_GPU_FLAG_FENCE,
                1,
                0,
                0
            )
        );
        assert_eq!(log.borrow().fences.len(), 3);
        assert!(h.gpu.poll_fences().is_empty());
        // Completing fence 2 releases 1 and 2 (id <= 2), not 3.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 2,
        });
        let released: Vec<u16> = h.gpu.poll_fences().iter().map(|e| e.head_index).collect();
        assert_eq!(released, vec![a.head, b.head]);
        assert!(h.gpu.poll_fences().is_empty());
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 3,
        });
        let released = h.gpu.poll_fences();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].head_index, c.head);
        assert_eq!(released[0].len, 408);
    }

    #[test]
    fn rings_are_independent_timelines() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        let mut cc = le32s(&[4, VIRTIO_GPU_CAPSET_VIRGL2]);
        cc.extend_from_slice(&[0u8; 64]);
        cc[8..12].copy_from_slice(b"test");
        let mut create = hdr(VIRTIO_GPU_CMD_CTX_CREATE, 0, 0, 1, 0);
        create.extend_from_slice(&cc);
        assert_eq!(h.cmd(&create), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            log.borrow().contexts,
            vec![(1, VIRTIO_GPU_CAPSET_VIRGL2, "test".to_string())]
        );
        let submit = |fence, ring| {
            let mut b = le32s(&[4, 0]);
            b.extend_from_slice(&[1, 2, 3, 4]);
            fenced(VIRTIO_GPU_CMD_SUBMIT_3D, &b, fence, 1, Some(ring))
        };
        let r0 = h.send(&submit(10, 0));
        let r1 = h.send(&submit(5, 1));
        let g = h.send(&fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], 10, 1, None));
        assert!(r0.used.is_none() && r1.used.is_none() && g.used.is_none());
        assert_eq!(
            log.borrow().fences,
            vec![
                FenceId {
                    ctx_id: 1,
                    ring_idx: Some(0),
                    id: 10
                },
                FenceId {
                    ctx_id: 1,
                    ring_idx: Some(1),
                    id: 5
                },
                FenceId {
                    ctx_id: 1,
                    ring_idx: None,
                    id: 10
                },
            ]
        );
        assert_eq!(log.borrow().submits, vec![(1, vec![1, 2, 3, 4]); 2]);
        // The response header carries the ring.
        assert_eq!(
            h.resp(&r1, 24),
            hdr(
                VIRTIO_GPU_RESP_OK_NODATA,
                VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
                5,
                1,
                1
            )
        );
        // Ring 1 at 100 does not release ring 0 or the global timeline.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 1,
            ring_idx: Some(1),
            id: 100,
        });
        let rel = h.gpu.poll_fences();
        assert_eq!(
            rel.iter().map(|e| e.head_index).collect::<Vec<_>>(),
            vec![r1.head]
        );
        // Another context's ring 0 does not release context 1's ring 0.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 2,
            ring_idx: Some(0),
            id: 100,
        });
        assert!(h.gpu.poll_fences().is_empty());
        // Global completion releases the global entry only.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 10,
        });
        assert_eq!(
            h.gpu
                .poll_fences()
                .iter()
                .map(|e| e.head_index)
                .collect::<Vec<_>>(),
            vec![g.head]
        );
        // Destroying the context answers what its rings still hold.
        let destroy = hdr(VIRTIO_GPU_CMD_CTX_DESTROY, 0, 0, 1, 0);
        assert_eq!(h.cmd(&destroy), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.gpu
                .poll_fences()
                .iter()
                .map(|e| e.head_index)
                .collect::<Vec<_>>(),
            vec![r0.head]
        );
    }

    #[test]
    fn held_fences_are_bounded() {
        // A guest re-posting descriptors the device still holds, with fences that never
        // complete: the held entries stop at MAX_HELD_FENCES, later ones are answered at once.
        let (mut h, log) = Harness::manual(GpuConfig::default());
        let dinfo = |fence| fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], fence, 0, None);
        for fence in 0..MAX_HELD_FENCES as u64 {
            let r = h.send_on(QueueKind::Control, &dinfo(fence), 408);
            assert!(r.used.is_none(), "fenced command {fence} held");
        }
        let extra = h.send_on(QueueKind::Control, &dinfo(u64::MAX), 408);
        let used = extra.used.expect("answered at once beyond MAX_HELD_FENCES");
        assert_eq!((used.head_index, used.len), (extra.head, 408));
        assert_eq!(h.resp_type(&extra), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
        assert_eq!(log.borrow().fences.len(), MAX_HELD_FENCES);
        // Completing them releases every held entry; then fences are held again.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: u64::MAX,
        });
        assert_eq!(h.gpu.poll_fences().len(), MAX_HELD_FENCES);
        assert!(h.send_on(QueueKind::Control, &dinfo(1), 408).used.is_none());
    }

    #[test]
    fn fence_completed_immediately_is_published_at_once() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        // Pre-complete fence 7 on the global timeline: the renderer reports it at the first poll.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 7,
        });
        let r = h.send(&fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], 7, 0, None));
        assert_eq!(r.used.unwrap().head_index, r.head);
        // Software renderer: every fenced command completes at once.
        let mut s = Harness::software();
        let r = s.send(&fenced(
            VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
            &le32s(&[1, 1, 4, 4]),
            1,
            0,
            None,
        ));
        assert_eq!(r.used.unwrap().len, 24);
        assert_eq!(
            s.resp(&r, 24),
            hdr(VIRTIO_GPU_RESP_OK_NODATA, VIRTIO_GPU_FLAG_FENCE, 1, 0, 0)
        );
        // A refused fence is answered at once too.
        log.borrow_mut().refuse_fences = true;
        let r = h.send(&fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], 8, 0, None));
        assert!(r.used.is_some());
    }

    #[test]
    fn failed_fenced_command_waits_for_earlier_work() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        let a = h.send(&fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], 1, 0, None));
        // A bad command with fence 2: error response, held until fence 2 completes.
        let b = h.send(&fenced(
            VIRTIO_GPU_CMD_RESOURCE_FLUSH,
            &le32s(&[0, 0, 1, 1, 99, 0]),
            2,
            0,
            None,
        ));
        assert!(a.used.is_none() && b.used.is_none());
        assert_eq!(h.resp_type(&b), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 2,
        });
        assert_eq!(h.gpu.poll_fences().len(), 2);
    }

    #[test]
    fn contexts_and_capsets() {
        let (mut h, log) = Harness::manual(GpuConfig {
            max_contexts: 2,
            ..Default::default()
        });
        // Capset 0 is VIRGL2; the oversized VENUS capset is not offered.
        let r = h.send(&req(VIRTIO_GPU_CMD_GET_CAPSET_INFO, &le32s(&[0, 0])));
        assert_eq!(
            h.resp(&r, 40)[24..],
            le32s(&[VIRTIO_GPU_CAPSET_VIRGL2, 2, 8, 0])[..]
        );
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_GET_CAPSET_INFO, &le32s(&[1, 0]))),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        let r = h.send(&req(
            VIRTIO_GPU_CMD_GET_CAPSET,
            &le32s(&[VIRTIO_GPU_CAPSET_VIRGL2, 2]),
        ));
        assert_eq!(r.used.unwrap().len, 32);
        assert_eq!(
            h.resp(&r, 32)[24..],
            [2, 2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]
        );
        assert_eq!(
            h.cmd(&req(
                VIRTIO_GPU_CMD_GET_CAPSET,
                &le32s(&[VIRTIO_GPU_CAPSET_VIRGL2, 3])
            )),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.cmd(&req(
                VIRTIO_GPU_CMD_GET_CAPSET,
                &le32s(&[VIRTIO_GPU_CAPSET_VENUS, 0])
            )),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // Capset data that does not fit the response buffer.
        let r = h.send_on(
            QueueKind::Control,
            &req(
                VIRTIO_GPU_CMD_GET_CAPSET,
                &le32s(&[VIRTIO_GPU_CAPSET_VIRGL2, 2]),
            ),
            30,
        );
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_UNSPEC);
        let ctx = |id: u32, init: u32| {
            let mut v = hdr(VIRTIO_GPU_CMD_CTX_CREATE, 0, 0, id, 0);
            v.extend_from_slice(&le32s(&[0, init]));
            v.extend_from_slice(&[0u8; 64]);
            v
        };
        assert_eq!(h.cmd(&ctx(0, 0)), VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
        assert_eq!(h.cmd(&ctx(1, 0)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.cmd(&ctx(1, 0)), VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
        assert_eq!(h.cmd(&ctx(2, 99)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(h.cmd(&ctx(2, 0)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.cmd(&ctx(3, 0)), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        assert_eq!(log.borrow().contexts.len(), 2);
        // Unknown contexts.
        let mut s = hdr(VIRTIO_GPU_CMD_SUBMIT_3D, 0, 0, 9, 0);
        s.extend_from_slice(&le32s(&[0, 0]));
        assert_eq!(h.cmd(&s), VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
        assert_eq!(
            h.cmd(&hdr(VIRTIO_GPU_CMD_CTX_DESTROY, 0, 0, 9, 0)),
            VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID
        );
        let mut at = hdr(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 0, 0, 1, 0);
        at.extend_from_slice(&le32s(&[42, 0]));
        assert_eq!(h.cmd(&at), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        // Oversized submit.
        let mut s = hdr(VIRTIO_GPU_CMD_SUBMIT_3D, 0, 0, 1, 0);
        s.extend_from_slice(&le32s(&[MAX_SUBMIT_3D_SIZE + 4, 0]));
        assert_eq!(h.cmd(&s), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        // After a reset the contexts are gone.
        h.gpu.reset();
        assert_eq!(
            h.cmd(&hdr(VIRTIO_GPU_CMD_CTX_DESTROY, 0, 0, 1, 0)),
            VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID
        );
    }

    #[test]
    fn broken_chains_are_returned_without_panicking() {
        let mut h = Harness::software();
        let r = h.send_on(QueueKind::Control, &[], 0);
        assert_eq!(r.used.unwrap().len, 0);
        // A request whose descriptor points outside guest memory.
        let mem = h.mem.clone();
        let mut q = MockSplitQueue::new(&mem, 16);
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(
                0x7fff_0000_0000,
                24,
                virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16,
                1,
            )),
            RawDescriptor::from(SplitDescriptor::new(RESP_BASE, 24, WRITE, 0)),
        ];
        q.add_desc_chains(&descs, 0).unwrap();
        let _ = &mut q;
        let mut queue_obj: Queue = q.create_queue().unwrap();
        let chain = queue_obj.iter(&mem).unwrap().next().unwrap();
        let used = h
            .gpu
            .process_chain(QueueKind::Control, chain, &mut h.display);
        assert_eq!(used.unwrap().len, 0);
        let _ = QueueT::size(&queue_obj);
    }

    // ---- host blobs and the host-visible region ---------------------------------------------

    /// What the recording mapper was asked.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum ShmCall {
        Map {
            offset: u64,
            len: u64,
            writable: bool,
        },
        Unmap {
            offset: u64,
            len: u64,
        },
    }

    #[derive(Default)]
    struct ShmLog {
        calls: Vec<ShmCall>,
        /// The descriptor offset of each map call.
        fd_offsets: Vec<u64>,
        refuse: bool,
    }

    struct RecordingMapper(Rc<RefCell<ShmLog>>);

    impl SharedMemoryMapper for RecordingMapper {
        fn map(
            &mut self,
            _fd: BorrowedFd<'_>,
            fd_offset: u64,
            shm_offset: u64,
            len: u64,
            writable: bool,
        ) -> std::io::Result<()> {
            let mut log = self.0.borrow_mut();
            if log.refuse {
                return Err(std::io::Error::other("refused by the test"));
            }
            log.fd_offsets.push(fd_offset);
            log.calls.push(ShmCall::Map {
                offset: shm_offset,
                len,
                writable,
            });
            Ok(())
        }
        fn unmap(&mut self, shm_offset: u64, len: u64) -> std::io::Result<()> {
            self.0.borrow_mut().calls.push(ShmCall::Unmap {
                offset: shm_offset,
                len,
            });
            Ok(())
        }
    }

    /// Map info the double reports: CACHED plus a bit outside the cache mask.
    const DOUBLE_MAP_INFO: u32 = VIRTIO_GPU_MAP_CACHE_CACHED | 0x100;
    /// A host blob the double cannot export.
    const NO_EXPORT: u32 = 66;
    /// A host blob the double exports as a dmabuf (the others as shared memory).
    const DMABUF_BLOB: u32 = 88;
    /// Host blobs (this id and the next) the double exports as a 4 KiB regular file, whatever
    /// the blob's size.
    const SHORT_FILE_BLOB: u32 = 99;
    /// A host blob the double exports as an opaque fd laid out like the memory files of Mesa's
    /// lavapipe: 8 KiB of memory after a 4 KiB header.
    const MESA_FILE_BLOB: u32 = 77;

    /// Host blobs that export as an fd (a memfd), except [`NO_EXPORT`].
    struct HostBlobRenderer {
        inner: SoftwareRenderer,
        blobs: HashSet<u32>,
    }

    impl Renderer for HostBlobRenderer {
        fn name(&self) -> &'static str {
            "host-blob test double"
        }
        fn capabilities(&self) -> RendererCapabilities {
            RendererCapabilities {
                three_d: true,
                context_init: true,
                blob_guest: true,
                blob_host: true,
            }
        }
        fn resource_create_2d(
            &mut self,
            id: u32,
            f: u32,
            w: u32,
            h: u32,
        ) -> crate::renderer::Result<()> {
            self.inner.resource_create_2d(id, f, w, h)
        }
        fn resource_unref(&mut self, id: u32) -> crate::renderer::Result<()> {
            if self.blobs.remove(&id) {
                return Ok(());
            }
            self.inner.resource_unref(id)
        }
        fn attach_backing(&mut self, id: u32, b: GuestBacking) -> crate::renderer::Result<()> {
            self.inner.attach_backing(id, b)
        }
        fn detach_backing(&mut self, id: u32) -> crate::renderer::Result<()> {
            self.inner.detach_backing(id)
        }
        fn transfer_to_host_2d(&mut self, id: u32, r: Rect, o: u64) -> crate::renderer::Result<()> {
            self.inner.transfer_to_host_2d(id, r, o)
        }
        fn context_create(&mut self, _: u32, _: u32, _: &str) -> crate::renderer::Result<()> {
            Ok(())
        }
        fn context_destroy(&mut self, _: u32) -> crate::renderer::Result<()> {
            Ok(())
        }
        fn create_fence(&mut self, _: FenceId) -> crate::renderer::Result<()> {
            Ok(())
        }
        fn poll(&mut self) -> Vec<FenceId> {
            Vec::new()
        }
        fn create_blob(
            &mut self,
            id: u32,
            _ctx: u32,
            _args: &CreateBlob,
            _backing: Option<GuestBacking>,
        ) -> crate::renderer::Result<()> {
            self.blobs.insert(id);
            Ok(())
        }
        fn export_blob(&mut self, id: u32) -> crate::renderer::Result<ExportedBlob> {
            if id == NO_EXPORT || !self.blobs.contains(&id) {
                return Err(RendererError::Library("no fd for this blob".into()));
            }
            if id == MESA_FILE_BLOB {
                return crate::renderer::export::test_files::mesa_memory_file(8192, 4096)
                    .map(|f| ExportedBlob::new(f.into(), BlobHandleKind::OpaqueFd))
                    .map_err(|e| RendererError::Library(e.to_string()));
            }
            let file = if id == SHORT_FILE_BLOB || id == SHORT_FILE_BLOB + 1 {
                let path = std::env::temp_dir()
                    .join(format!("vugpu-short-blob-{}-{id}", std::process::id()));
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(|e| RendererError::Library(e.to_string()))?;
                let _ = std::fs::remove_file(&path);
                f.set_len(4096)
                    .map_err(|e| RendererError::Library(e.to_string()))?;
                f
            } else {
                std::fs::File::open("/dev/null")
                    .map_err(|e| RendererError::Library(e.to_string()))?
            };
            Ok(ExportedBlob::new(
                file.into(),
                if id == DMABUF_BLOB {
                    BlobHandleKind::Dmabuf
                } else {
                    BlobHandleKind::Shm
                },
            ))
        }
        fn map_info(&mut self, _id: u32) -> crate::renderer::Result<u32> {
            Ok(DOUBLE_MAP_INFO)
        }
        fn resource_info(&self, id: u32) -> crate::renderer::Result<ResourceInfo> {
            self.inner.resource_info(id)
        }
        fn read_pixels(&mut self, id: u32, r: Rect, o: &mut [u8]) -> crate::renderer::Result<()> {
            self.inner.read_pixels(id, r, o)
        }
    }

    const REGION: u64 = 1 << 20;

    fn host_blob_harness(region: u64) -> (Harness, Rc<RefCell<ShmLog>>) {
        let r = HostBlobRenderer {
            inner: SoftwareRenderer::new(),
            blobs: HashSet::new(),
        };
        let config = GpuConfig {
            host_visible_size: region,
            ..GpuConfig::default()
        };
        let mut h = Harness::new(Box::new(r), config);
        // The tests assume 4 KiB pages.
        h.gpu.map_alignment = 4096;
        let mut name = [0u8; 64];
        name[..4].copy_from_slice(b"test");
        let mut body = le32s(&[4, 0]);
        body.extend_from_slice(&name);
        let mut ctx = hdr(VIRTIO_GPU_CMD_CTX_CREATE, 0, 0, 1, 0);
        ctx.extend_from_slice(&body);
        assert_eq!(h.cmd(&ctx), VIRTIO_GPU_RESP_OK_NODATA);
        (h, Rc::new(RefCell::new(ShmLog::default())))
    }

    fn install(h: &mut Harness, log: &Rc<RefCell<ShmLog>>) {
        h.gpu
            .set_shared_memory(Some(Box::new(RecordingMapper(log.clone()))));
    }

    fn create_blob_cmd(
        id: u32,
        mem: u32,
        flags: u32,
        size: u64,
        entries: &[(u64, u32)],
    ) -> Vec<u8> {
        let mut v = hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, 0, 0, 1, 0);
        v.extend_from_slice(&le32s(&[id, mem, flags, entries.len() as u32]));
        v.extend_from_slice(&u64::from(id).to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        for (a, l) in entries {
            v.extend_from_slice(&a.to_le_bytes());
            v.extend_from_slice(&le32s(&[*l, 0]));
        }
        v
    }

    fn map_cmd(id: u32, offset: u64) -> Vec<u8> {
        let mut b = le32s(&[id, 0]);
        b.extend_from_slice(&offset.to_le_bytes());
        req(VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB, &b)
    }

    fn unmap_cmd(id: u32) -> Vec<u8> {
        req(VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB, &le32s(&[id, 0]))
    }

    const MAPPABLE: u32 = VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE;

    #[test]
    fn map_blob_checks_the_region_and_maps_through_the_mapper() {
        let (mut h, log) = host_blob_harness(REGION);
        let ok = VIRTIO_GPU_RESP_OK_NODATA;
        let inval = VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
        assert_eq!(
            h.cmd(&create_blob_cmd(
                10,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                5000,
                &[]
            )),
            ok
        );
        // No mapper yet (no backend-request channel): ERR_UNSPEC, nothing asked.
        assert_eq!(h.cmd(&map_cmd(10, 0x1000)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        install(&mut h, &log);
        assert!(h.gpu.host_visible_region());
        // Blobs that cannot be mapped.
        assert_eq!(
            h.cmd(&create_blob_cmd(
                11,
                VIRTIO_GPU_BLOB_MEM_GUEST,
                MAPPABLE,
                4096,
                &[(DATA_BASE, 4096)]
            )),
            ok
        );
        assert_eq!(
            h.cmd(&create_blob_cmd(
                12,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                0,
                4096,
                &[]
            )),
            ok
        );
        assert_eq!(h.create_2d(14, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4), ok);
        assert_eq!(h.cmd(&map_cmd(11, 0)), inval, "guest blob");
        assert_eq!(h.cmd(&map_cmd(12, 0)), inval, "not MAPPABLE");
        assert_eq!(h.cmd(&map_cmd(14, 0)), inval, "not a blob");
        assert_eq!(
            h.cmd(&map_cmd(999, 0)),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        // Bad offsets: unaligned, past the end, overflowing.
        assert_eq!(h.cmd(&map_cmd(10, 0x800)), inval);
        assert_eq!(
            h.cmd(&map_cmd(10, REGION - 0x1000)),
            inval,
            "8 KiB at the last page"
        );
        assert_eq!(h.cmd(&map_cmd(10, REGION)), inval);
        assert_eq!(h.cmd(&map_cmd(10, !0xfff)), inval);
        assert!(log.borrow().calls.is_empty());
        // A good one: the size rounded up to pages, map info masked to the cache type.
        let r = h.send(&map_cmd(10, 0x1000));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        let body = h.resp(&r, 32);
        assert_eq!(
            u32::from_le_bytes(body[24..28].try_into().unwrap()),
            VIRTIO_GPU_MAP_CACHE_CACHED
        );
        assert_eq!(
            log.borrow().calls,
            vec![ShmCall::Map {
                offset: 0x1000,
                len: 0x2000,
                writable: true
            }]
        );
        assert_eq!(h.cmd(&map_cmd(10, 0x8000)), inval, "already mapped");
        // Overlaps with 0x1000..0x3000 are refused; neighbours are fine.
        assert_eq!(
            h.cmd(&create_blob_cmd(
                13,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                4096,
                &[]
            )),
            ok
        );
        assert_eq!(h.cmd(&map_cmd(13, 0x2000)), inval, "inside");
        assert_eq!(
            h.cmd(&create_blob_cmd(
                15,
                VIRTIO_GPU_BLOB_MEM_HOST3D_GUEST,
                MAPPABLE,
                0x4000,
                &[(DATA_BASE, 0x4000)]
            )),
            ok
        );
        assert_eq!(h.cmd(&map_cmd(15, 0)), inval, "covers it");
        let r = h.send(&map_cmd(13, 0));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        let r = h.send(&map_cmd(15, 0x3000));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        // Unmap, and unmap again.
        log.borrow_mut().calls.clear();
        assert_eq!(h.cmd(&unmap_cmd(10)), ok);
        assert_eq!(h.cmd(&unmap_cmd(10)), inval);
        assert_eq!(h.cmd(&unmap_cmd(12)), inval);
        assert_eq!(
            log.borrow().calls,
            vec![ShmCall::Unmap {
                offset: 0x1000,
                len: 0x2000
            }]
        );
        // The freed range can be used again.
        let r = h.send(&map_cmd(10, 0x1000));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        // Unref of a mapped blob unmaps it first.
        log.borrow_mut().calls.clear();
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[13, 0]))),
            ok
        );
        assert_eq!(
            log.borrow().calls,
            vec![ShmCall::Unmap {
                offset: 0,
                len: 0x1000
            }]
        );
        // A guest reset unmaps what is left.
        log.borrow_mut().calls.clear();
        h.gpu.reset();
        let mut calls = log.borrow().calls.clone();
        calls.sort_by_key(|c| match c {
            ShmCall::Map { offset, .. } | ShmCall::Unmap { offset, .. } => *offset,
        });
        assert_eq!(
            calls,
            vec![
                ShmCall::Unmap {
                    offset: 0x1000,
                    len: 0x2000
                },
                ShmCall::Unmap {
                    offset: 0x3000,
                    len: 0x4000
                }
            ]
        );
    }

    /// A host driver's handle whose memory starts after a header (lavapipe's exported Vulkan
    /// memory) is mapped from there: mapped from 0, the guest saw its memory 4 KiB off.
    #[test]
    fn a_driver_handle_is_mapped_from_where_its_memory_starts() {
        let (mut h, log) = host_blob_harness(REGION);
        install(&mut h, &log);
        assert_eq!(
            h.cmd(&create_blob_cmd(
                MESA_FILE_BLOB,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                8192,
                &[]
            )),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        let r = h.send(&map_cmd(MESA_FILE_BLOB, 0x2000));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        assert_eq!(log.borrow().fd_offsets, vec![4096]);
        assert_eq!(
            log.borrow().calls,
            vec![ShmCall::Map {
                offset: 0x2000,
                len: 8192,
                writable: true
            }]
        );
    }

    #[test]
    fn an_exported_file_shorter_than_the_mapping_is_not_mapped() {
        let (mut h, log) = host_blob_harness(REGION);
        install(&mut h, &log);
        // The blob claims 64 KiB; the renderer hands out a 4 KiB file: the frontend would fault
        // on the pages past its end, so nothing is sent to it.
        assert_eq!(
            h.cmd(&create_blob_cmd(
                SHORT_FILE_BLOB,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                65536,
                &[]
            )),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(
            h.cmd(&map_cmd(SHORT_FILE_BLOB, 0)),
            VIRTIO_GPU_RESP_ERR_UNSPEC
        );
        assert!(log.borrow().calls.is_empty());
        // A blob the file covers maps.
        assert_eq!(
            h.cmd(&create_blob_cmd(
                SHORT_FILE_BLOB + 1,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                4096,
                &[]
            )),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        let r = h.send(&map_cmd(SHORT_FILE_BLOB + 1, 0));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
    }

    #[test]
    fn failed_exports_and_refused_maps_leave_no_mapping() {
        let (mut h, log) = host_blob_harness(REGION);
        install(&mut h, &log);
        let ok = VIRTIO_GPU_RESP_OK_NODATA;
        assert_eq!(
            h.cmd(&create_blob_cmd(
                NO_EXPORT,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                4096,
                &[]
            )),
            ok
        );
        assert_eq!(
            h.cmd(&create_blob_cmd(
                20,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                4096,
                &[]
            )),
            ok
        );
        assert_eq!(h.cmd(&map_cmd(NO_EXPORT, 0)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        log.borrow_mut().refuse = true;
        assert_eq!(h.cmd(&map_cmd(20, 0)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        log.borrow_mut().refuse = false;
        assert!(log.borrow().calls.is_empty());
        // Offset 0 is still free, and the refused blob is not mapped.
        assert_eq!(h.cmd(&unmap_cmd(20)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        let r = h.send(&map_cmd(20, 0));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        // A new connection's mapper starts empty: the mapping is forgotten, not unmapped.
        log.borrow_mut().calls.clear();
        h.gpu.set_shared_memory(None);
        assert!(!h.gpu.host_visible_region());
        assert_eq!(h.cmd(&map_cmd(20, 0)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        install(&mut h, &log);
        let r = h.send(&map_cmd(20, 0));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        assert_eq!(log.borrow().calls.len(), 1);
    }

    #[test]
    fn no_region_no_mapping() {
        let (mut h, log) = host_blob_harness(0);
        install(&mut h, &log);
        assert!(!h.gpu.host_visible_region());
        assert_eq!(
            h.cmd(&create_blob_cmd(
                10,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                4096,
                &[]
            )),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.cmd(&map_cmd(10, 0)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        assert!(log.borrow().calls.is_empty());
    }

    #[test]
    fn host_blob_scanout_uses_the_dmabuf_when_it_is_one() {
        let (mut h, _log) = host_blob_harness(REGION);
        h.display.dmabuf = true;
        let ok = VIRTIO_GPU_RESP_OK_NODATA;
        for id in [DMABUF_BLOB, 10] {
            assert_eq!(
                h.cmd(&create_blob_cmd(
                    id,
                    VIRTIO_GPU_BLOB_MEM_HOST3D,
                    0,
                    512,
                    &[]
                )),
                ok
            );
        }
        let sb = |id: u32, r: Rect| {
            let mut b = le32s(&[r.x, r.y, r.width, r.height, 0, id, 16, 8]);
            b.extend_from_slice(&le32s(&[VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 0]));
            b.extend_from_slice(&le32s(&[64, 0, 0, 0, 0, 0, 0, 0]));
            req(VIRTIO_GPU_CMD_SET_SCANOUT_BLOB, &b)
        };
        assert_eq!(h.cmd(&sb(DMABUF_BLOB, Rect::new(2, 1, 8, 4))), ok);
        assert_eq!(h.display.calls, vec![Call::DmabufScanout(0, 2, 1, 8, 4)]);
        h.display.calls.clear();
        assert_eq!(h.flush(DMABUF_BLOB, Rect::new(0, 0, 16, 8)), ok);
        assert_eq!(h.display.calls, vec![Call::DmabufUpdate(0, 0, 0, 8, 4)]);
        // A blob exported as shared memory is read back instead.
        h.display.calls.clear();
        assert_eq!(h.cmd(&sb(10, Rect::new(0, 0, 16, 8))), ok);
        assert_eq!(h.display.calls, vec![Call::Scanout(0, 16, 8)]);
    }
}
