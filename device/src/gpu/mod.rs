//! The virtio-gpu device: resources, scanouts, contexts, the cursor and fences.
//!
//! [`VirtioGpu::process_chain`] takes one descriptor chain, has `protocol` decode it into a
//! validated [`GpuCommand`], checks it against the device state and the bounds of
//! [`GpuConfig`], runs it on the [`Renderer`] and tells the [`Display`] what changed, then writes
//! the response. Every guest-reachable failure is an error response and a `log` line.
//!
//! # Rooms
//!
//! This file holds the device's state ([`VirtioGpu`]), its configuration and errors, the chain
//! processing, a thin dispatcher (`execute`: one method call per command), the reset and the
//! checks every room shares. Each command is carried out in the room of its concern:
//!
//! | guest command | room |
//! |---|---|
//! | every command, before it runs: queue, negotiated features, response size; transfers' checked arguments | `validate.rs` |
//! | GET_DISPLAY_INFO, SET_SCANOUT, SET_SCANOUT_BLOB, RESOURCE_FLUSH | `scanout.rs` |
//! | RESOURCE_CREATE_2D, RESOURCE_CREATE_3D, RESOURCE_UNREF | `resources.rs` |
//! | RESOURCE_ATTACH_BACKING, RESOURCE_DETACH_BACKING | `resources.rs` |
//! | TRANSFER_TO_HOST_2D, TRANSFER_TO_HOST_3D, TRANSFER_FROM_HOST_3D | `resources.rs` |
//! | RESOURCE_ASSIGN_UUID | `resources.rs` |
//! | RESOURCE_CREATE_BLOB, RESOURCE_MAP_BLOB, RESOURCE_UNMAP_BLOB | `blob.rs` |
//! | CTX_CREATE, CTX_DESTROY, CTX_ATTACH_RESOURCE, CTX_DETACH_RESOURCE, SUBMIT_3D | `contexts.rs` |
//! | GET_CAPSET_INFO, GET_CAPSET | `contexts.rs` |
//! | GET_EDID | `edid.rs` |
//! | UPDATE_CURSOR, MOVE_CURSOR (cursor queue) | `cursor.rs` |
//! | any command with `VIRTIO_GPU_FLAG_FENCE` (after it ran) | `fences.rs` |
//!
//! Besides: `blob.rs` also has the [`SharedMemoryMapper`] and the host-visible region's
//! mappings, `fences.rs` the fence poll fd and [`VirtioGpu::poll_fences`], `budget.rs` the host
//! memory budget every guest-driven allocation is charged to (`--max-hostmem`: what is counted,
//! at what size, and what cannot be), `trim.rs` the hand-back of freed heap memory, and
//! `test_support.rs` (tests only) the harness and test doubles the rooms' tests share. Each
//! room's tests sit at its end.
//!
//! # Decisions
//!
//! * **Queues.** Cursor commands (UPDATE_CURSOR, MOVE_CURSOR) are executed on the cursor queue
//!   only, everything else on the control queue only; a command on the other queue is answered
//!   ERR_UNSPEC (QEMU ignores them). Cursor-queue buffers need no writable part (the Linux driver
//!   gives none); the entry is then published with length 0.
//!
//! The other decisions are documented where they are carried out: fences in `fences.rs`, host
//! memory in `budget.rs` and `resources.rs`, backing errors in `resources.rs`, blob mapping in
//! `blob.rs`.

mod blob;
mod budget;
mod contexts;
mod cursor;
mod edid;
mod fences;
mod resources;
mod scanout;
#[cfg(test)]
pub(crate) mod test_support;
mod trim;
mod validate;
mod virgl_stream;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::ops::Deref;

use log::{debug, warn};
use virtio_queue::{DescriptorChain, Writer};
use vm_memory::GuestMemoryMmap;

pub use self::blob::{SharedMemoryMapper, DEFAULT_MAP_ALIGNMENT, MAX_BLOB_MAPPINGS};
pub use self::budget::{OverBudget, Use as BudgetUse};
pub use self::edid::generate_edid;
pub use self::fences::MAX_HELD_FENCES;
pub use self::scanout::{FLUSH_BUFFER_KEEP_BYTES, MAX_SCANOUT_DIMENSION};
pub use self::trim::{TRIM_AFTER_RELEASED_BYTES, TRIM_MIN_INTERVAL};

use self::blob::{host_page_size, BlobMap};
use self::budget::{Charge, HostBudget};
use self::contexts::{offered_capsets, ContextState};
use self::fences::{HeldEntry, TimelineKey};
use self::resources::ResourceState;
use self::scanout::{default_modes, FlushBuffer, ScanoutState};
use self::trim::HeapTrimmer;
use crate::display::{Display, DisplayMode};
use crate::limits;
use crate::log_limit::{suppressed_note, LogLimiter};
use crate::protocol::{
    self, CtrlHeader, ErrorCode, GpuCommand, Response, VIRTIO_GPU_F_CONTEXT_INIT,
    VIRTIO_GPU_F_EDID, VIRTIO_GPU_F_RESOURCE_BLOB, VIRTIO_GPU_F_RESOURCE_UUID, VIRTIO_GPU_F_VIRGL,
    VIRTIO_GPU_MAX_SCANOUTS,
};
use crate::renderer::{
    BackingError, BlobScanoutLayout, CapsetInfo, CreateBlob, Renderer, RendererCapabilities,
    RendererError,
};

/// Device configuration (bounds and defaults).
#[derive(Clone, Debug)]
pub struct GpuConfig {
    /// Number of scanouts, 1..=16 (clamped).
    pub num_scanouts: u32,
    /// The host memory budget in bytes (`--max-hostmem`): what the guest can make the host
    /// allocate, charged at its real size (`gpu/budget.rs` says what is counted).
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
            max_hostmem: limits::DEFAULT_MAX_HOSTMEM,
            max_resources: limits::DEFAULT_MAX_RESOURCES,
            max_contexts: limits::DEFAULT_MAX_CONTEXTS,
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
    /// The allocation would exceed the host memory budget (`max_hostmem`).
    #[error(transparent)]
    HostMemory(#[from] OverBudget),
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
            | GpuError::HostMemory(_) => ErrorCode::OutOfMemory,
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

/// The virtio-gpu device.
pub struct VirtioGpu {
    renderer: Box<dyn Renderer>,
    config: GpuConfig,
    caps: RendererCapabilities,
    /// The `VIRTIO_GPU_F_*` bits the frontend acked (SET_FEATURES); until it does, everything
    /// offered. A command of a feature that was not negotiated is refused.
    acked: Option<u64>,
    /// The capsets offered (renderer's, bounded by MAX_CAPSET_SIZE).
    capsets: Vec<CapsetInfo>,
    resources: HashMap<u32, ResourceState>,
    scanouts: Vec<ScanoutState>,
    /// The contexts, each owning the renderer's context; dropped before the renderer (see
    /// `Drop`) and before every `Renderer::reset`.
    contexts: HashMap<u32, ContextState>,
    /// Last known scanout layout (from the display or the defaults).
    modes: Vec<DisplayMode>,
    /// What the guest made the host allocate, against `config.max_hostmem`.
    budget: HostBudget,
    /// Fenced entries not yet published, per timeline, in arrival order.
    pending: HashMap<TimelineKey, Vec<HeldEntry>>,
    /// Entries released by a completion, waiting for `poll_fences`.
    ready: Vec<UsedEntry>,
    uuid_keys: std::collections::hash_map::RandomState,
    uuid_counter: u64,
    /// Rejected guest requests so far (for log rate limiting).
    guest_log: LogLimiter,
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

impl Drop for VirtioGpu {
    /// Drops the contexts before the renderer (a field dropped later): each destroys its
    /// context in the renderer, which must still be there.
    fn drop(&mut self) {
        self.contexts.clear();
    }
}

impl VirtioGpu {
    /// A device on `renderer` with `config`.
    pub fn new(renderer: Box<dyn Renderer>, mut config: GpuConfig) -> Self {
        config.num_scanouts = config.num_scanouts.clamp(1, VIRTIO_GPU_MAX_SCANOUTS);
        let caps = renderer.capabilities();
        let capsets = offered_capsets(renderer.as_ref(), &caps);
        let modes = default_modes(&config);
        VirtioGpu {
            scanouts: vec![ScanoutState::default(); config.num_scanouts as usize],
            renderer,
            caps,
            acked: None,
            capsets,
            resources: HashMap::new(),
            contexts: HashMap::new(),
            modes,
            budget: HostBudget::new(config.max_hostmem),
            pending: HashMap::new(),
            ready: Vec::new(),
            uuid_keys: Default::default(),
            uuid_counter: 0,
            guest_log: LogLimiter::default(),
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

    /// The frontend acked `features` (SET_FEATURES): from now on only the `VIRTIO_GPU_F_*`
    /// bits both offered and acked are served.
    pub fn set_acked_features(&mut self, features: u64) {
        self.acked = Some(features);
    }

    /// Whether feature `bit` (`VIRTIO_GPU_F_*`) was offered and acked.
    fn negotiated(&self, bit: u32) -> bool {
        let offered = self.device_features();
        offered & self.acked.unwrap_or(offered) & (1 << bit) != 0
    }

    /// Checks that feature `bit` was negotiated for command `what`.
    fn require(&self, bit: u32, what: &'static str) -> GpuResult<()> {
        if self.negotiated(bit) {
            Ok(())
        } else {
            Err(GpuError::NotOffered(what))
        }
    }

    /// The virtio-gpu config space (virtio_gpu_config, little endian bytes).
    pub fn config_space(&self) -> Vec<u8> {
        // At most a handful of capsets; the count fits u32.
        protocol::encode_config(self.config.num_scanouts, self.capsets.len() as u32, 0)
    }

    /// Decode, validate and execute one chain; the response is written into the chain's
    /// writable descriptors at once. Returns Some(entry) to publish now, or None when the
    /// command carries a fence that has not completed yet (published later by `poll_fences`).
    ///
    /// The memory is a `GuestMemoryMmap<()>` (the backend's `type Bitmap = ()`); the backend's
    /// `GuestMemoryLoadGuard` and a plain `&GuestMemoryMmap` both qualify as `M`.
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
        // A fenced command's held entry is charged before the command runs: refused, the
        // command does not run (ERR_OUT_OF_MEMORY) and is answered at once.
        let fence_charge;
        let response = match protocol::decode_command(&header, &mut reader) {
            Err(e) => {
                self.guest_error(format_args!("{queue:?} command {:#x}: {e}", header.type_));
                fence_charge = self.charge_fence(&header, false);
                Response::Err(e.error_code())
            }
            Ok(cmd) => {
                let name = cmd.name();
                debug!("{queue:?} {name} {header:?}");
                fence_charge = self.charge_fence(&header, frees_memory(&cmd));
                let result = match &fence_charge {
                    Err(e) => Err(GpuError::HostMemory(*e)),
                    Ok(_) => {
                        self.execute(queue, &header, cmd, mem, display, writer.available_bytes())
                    }
                };
                match result {
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
        match fence_charge {
            Ok(charge) if header.is_fenced() => self.hold_fenced(&header, used, charge),
            _ => Some(used),
        }
    }

    /// Runs one decoded command: the validation step first (its queue, the negotiated features,
    /// that its response fits: [`validate`]), then the one method that carries it out, in the room of its concern (the table in
    /// the module doc).
    fn execute(
        &mut self,
        queue: QueueKind,
        header: &CtrlHeader,
        cmd: GpuCommand,
        mem: &GuestMemoryMmap,
        display: &mut dyn Display,
        writable: usize,
    ) -> GpuResult<Response> {
        self.validate(queue, header, &cmd, writable)?;
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
            } => self.transfer_to_host_2d(resource_id, rect, offset),
            GpuCommand::ResourceAttachBacking {
                resource_id,
                entries,
            } => self.attach_backing(resource_id, entries, mem),
            GpuCommand::ResourceDetachBacking { resource_id } => self.detach_backing(resource_id),
            GpuCommand::GetCapsetInfo { index } => self.get_capset_info(index),
            GpuCommand::GetCapset { capset_id, version } => {
                self.get_capset(capset_id, version, writable)
            }
            GpuCommand::GetEdid { scanout_id } => self.get_edid(scanout_id, display),
            GpuCommand::ResourceAssignUuid { resource_id } => self.assign_uuid(resource_id),
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
            GpuCommand::CtxDestroy => self.ctx_destroy(header.ctx_id),
            GpuCommand::CtxAttachResource { resource_id } => {
                self.ctx_attach_resource(header.ctx_id, resource_id)
            }
            GpuCommand::CtxDetachResource { resource_id } => {
                self.ctx_detach_resource(header.ctx_id, resource_id)
            }
            GpuCommand::ResourceCreate3d { resource_id, args } => {
                self.resource_create_3d(resource_id, args)
            }
            GpuCommand::TransferToHost3d {
                resource_id,
                transfer,
            } => self.transfer_to_host_3d(header.ctx_id, resource_id, &transfer),
            GpuCommand::TransferFromHost3d {
                resource_id,
                transfer,
            } => self.transfer_from_host_3d(header.ctx_id, resource_id, &transfer),
            GpuCommand::Submit3d { commands } => self.submit_3d(header.ctx_id, &commands),
            GpuCommand::ResourceMapBlob {
                resource_id,
                offset,
            } => self.map_blob(resource_id, offset),
            GpuCommand::ResourceUnmapBlob { resource_id } => self.unmap_blob(resource_id),
            GpuCommand::UpdateCursor(c) => self.update_cursor(&c, display),
            GpuCommand::MoveCursor(c) => self.move_cursor(&c, display),
        }
    }

    /// Guest reset / frontend disconnect: drop every resource, context, scanout and pending
    /// fence, and give back every charge of the host memory budget.
    pub fn reset(&mut self) {
        debug!(
            "reset: {} of {} bytes of the host memory budget in use",
            self.budget.used(),
            self.budget.limit()
        );
        self.unmap_all();
        for (id, res) in std::mem::take(&mut self.resources) {
            self.release_resource_charges(res.charges);
            if let Err(e) = self.renderer.resource_unref(id) {
                debug!("reset: unref {id}: {e}");
            }
        }
        // Dropping a context destroys it in the renderer, before the renderer forgets the rest;
        // its charges go back to the budget.
        for (_, ctx) in std::mem::take(&mut self.contexts) {
            self.release_context_charges(ctx);
        }
        self.renderer.reset();
        self.scanouts = vec![ScanoutState::default(); self.config.num_scanouts as usize];
        self.modes = default_modes(&self.config);
        for (_, held) in std::mem::take(&mut self.pending) {
            for h in held {
                self.budget.release_opt(h.charge);
            }
        }
        self.ready.clear();
        std::mem::take(&mut self.flush_buffer).free(&mut self.budget);
        let leaked = self.budget.clear();
        if leaked != 0 {
            warn!("reset: {leaked} bytes of the host memory budget were not given back");
        }
        self.trimmer.dirty = true;
        self.trimmer.last = None;
        self.trimmer.maybe_trim();
    }

    /// Logs a rejected guest request at `warn`, at most [`LINES_PER_WINDOW`] a second (the
    /// next line that gets through says how many were dropped; dropped ones go to `debug`), so
    /// that a guest cannot flood the host's logs, and a later guest error is still seen.
    ///
    /// [`LINES_PER_WINDOW`]: crate::log_limit::LINES_PER_WINDOW
    fn guest_error(&mut self, msg: std::fmt::Arguments<'_>) {
        match self.guest_log.allow() {
            Some(dropped) => warn!("{msg}{}", suppressed_note(dropped)),
            None => debug!("{msg}"),
        }
    }

    /// The index of scanout `scanout_id`, if the device has it.
    fn check_scanout(&self, scanout_id: u32) -> GpuResult<usize> {
        if scanout_id < self.config.num_scanouts {
            Ok(scanout_id as usize)
        } else {
            Err(GpuError::InvalidScanoutId(scanout_id))
        }
    }

    /// The state of resource `id`, if it exists.
    fn resource(&self, id: u32) -> GpuResult<&ResourceState> {
        self.resources
            .get(&id)
            .ok_or(GpuError::InvalidResourceId(id))
    }

    /// Checks that context `ctx_id` exists.
    fn check_context(&self, ctx_id: u32) -> GpuResult<()> {
        if self.contexts.contains_key(&ctx_id) {
            Ok(())
        } else {
            Err(GpuError::InvalidContextId(ctx_id))
        }
    }

    /// The budget charge of a fenced command's held entry (`None` without a fence). Over the
    /// budget, a command that only frees memory (`frees`) runs and is held uncharged (bounded
    /// by MAX_HELD_FENCES), so that a guest at its limit can still give memory back.
    fn charge_fence(
        &mut self,
        header: &CtrlHeader,
        frees: bool,
    ) -> Result<Option<Charge>, OverBudget> {
        if !header.is_fenced() {
            return Ok(None);
        }
        match self
            .budget
            .charge(BudgetUse::HeldFence, limits::HELD_FENCE_BYTES)
        {
            Ok(c) => Ok(Some(c)),
            Err(_) if frees => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Whether `cmd` only gives memory back (it runs even when its fence cannot be charged).
fn frees_memory(cmd: &GpuCommand) -> bool {
    matches!(
        cmd,
        GpuCommand::ResourceUnref { .. }
            | GpuCommand::ResourceDetachBacking { .. }
            | GpuCommand::CtxDestroy
            | GpuCommand::CtxDetachResource { .. }
            | GpuCommand::ResourceUnmapBlob { .. }
    )
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
        // The guest chose the buffer: not worth a warning of its own (the command's error, if
        // any, is logged rate limited).
        debug!(
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
            debug!("writing the response failed: {e}");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT, QueueT};

    use super::test_support::*;
    use super::*;
    use crate::protocol::tests::{hdr, le32s, WRITE};
    use crate::protocol::*;

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
}
