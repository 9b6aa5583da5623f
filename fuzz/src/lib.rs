//! What the fuzz targets share: the test guest memory, descriptor chains built from fuzz bytes,
//! the input format of the device targets (a script of guest actions, [`Script`] writes one) and
//! a display that checks the device's calls against the `Display` contract.
//!
//! # Guest memory
//!
//! Two regions, [`LOW`] at 0 and [`HIGH`] above a hole, so that chains and backings can cross a
//! region end or fall in the hole. The split queue's rings sit at 0 (rebuilt for every chain),
//! requests at [`REQ_ADDR`], responses at [`RESP_ADDR`], and [`DATA_ADDR`] is free for backings.
//!
//! # Device script (targets `device_software` and `device_virgl`)
//!
//! ```text
//! script  := config op*
//! config  := u8     bits 0-1: scanouts - 1 (software target only), bit 2: no EDID (software
//!                   only), bit 7: a u64 (LE) of acked VIRTIO_GPU_F_* bits follows
//! op      := tag u8, then by tag & 7:
//!   0 CTRL    len u16, resp u16, request[len]  one readable descriptor at REQ_ADDR and (resp>0)
//!                                              one writable of resp bytes at RESP_ADDR, controlq
//!   1 CURSOR  same as CTRL, on the cursor queue
//!   2 CHAIN   n = (tag >> 4) + 1 raw descriptors of 16 bytes (addr u64, len u32, flags u16,
//!             next u16), written as given into the descriptor table; bit 3 of tag: cursor queue
//!   3 WRITE   addr u32, len u16, bytes[len]    guest memory write (ignored where unmapped)
//!   4 POLL    poll_fences
//!   5 RESET   the device reset a guest reset causes
//!   6 DISPLAY what the display (the frontend) answers from now on: n u8 (0: nothing) modes of
//!             17 bytes (x, y, width, height u32, enabled u8), then an EDID: len u16 (0:
//!             none), bytes[len]
//!   7         no-op
//! ```
//!
//! Integers are little endian; a field cut short by the end of the input ends the script.

use std::os::fd::BorrowedFd;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use vhost_user_gpu::display::{Display, DisplayMode, DmabufScanout, CURSOR_SIZE};
use vhost_user_gpu::gpu::{GpuConfig, QueueKind, SharedMemoryMapper, VirtioGpu};
use vhost_user_gpu::protocol::{self, CtrlHdrWire, VIRTIO_GPU_MAX_SCANOUTS};
use vhost_user_gpu::renderer::software::SoftwareRenderer;
use vhost_user_gpu::renderer::virgl::VirglGpuRenderer;
use vm_memory::ByteValued;

/// The low region: `[0, LOW)`.
pub const LOW: u64 = 0x4_0000;
/// The high region starts here and is [`HIGH_LEN`] bytes long.
pub const HIGH: u64 = 0x10_0000;
/// Length of the high region.
pub const HIGH_LEN: u64 = 0x1_0000;
/// Descriptors in the queue.
pub const QUEUE_SIZE: u16 = 16;
/// End of the queue's rings (descriptor table, avail and used ring), rounded up.
pub const RINGS_END: u64 = 0x1000;
/// Where CTRL/CURSOR requests are placed.
pub const REQ_ADDR: u64 = 0x1000;
/// Where CTRL/CURSOR responses are written.
pub const RESP_ADDR: u64 = 0x1_0000;
/// Free guest memory for backings (to the end of the low region).
pub const DATA_ADDR: u64 = 0x2_0000;
/// Size of the host-visible region given to the device (fake mapper).
pub const HOST_VISIBLE_SIZE: u64 = 1 << 24;

/// Fuzz guest memory: the two regions.
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), LOW as usize),
        (GuestAddress(HIGH), HIGH_LEN as usize),
    ])
    .expect("fuzz guest memory")
}

/// Zeroes all of `mem` (between inputs).
pub fn clear_memory(mem: &GuestMemoryMmap) {
    let zeros = vec![0u8; LOW as usize];
    mem.write_slice(&zeros, GuestAddress(0))
        .expect("low region");
    mem.write_slice(&zeros[..HIGH_LEN as usize], GuestAddress(HIGH))
        .expect("high region");
}

/// Puts `descs` into a fresh split queue (rings at 0, cleared first) and returns the first
/// available chain. The descriptors are written as given: flags and `next` may make a broken,
/// looping or indirect chain, which is the point.
pub fn chain_of<'a>(
    mem: &'a GuestMemoryMmap,
    descs: &[RawDescriptor],
) -> Option<DescriptorChain<&'a GuestMemoryMmap>> {
    mem.write_slice(&[0u8; RINGS_END as usize], GuestAddress(0))
        .ok()?;
    let q = MockSplitQueue::new(mem, QUEUE_SIZE);
    q.add_desc_chains(descs, 0).ok()?;
    let mut queue: Queue = q.create_queue().ok()?;
    queue.iter(mem).ok()?.next()
}

/// The chain of a plain request: one readable descriptor of `req_len` bytes at [`REQ_ADDR`],
/// then, if `resp_len > 0`, one writable descriptor of `resp_len` bytes at [`RESP_ADDR`].
pub fn simple_descs(req_len: u32, resp_len: u32) -> Vec<RawDescriptor> {
    let mut descs = vec![RawDescriptor::from(SplitDescriptor::new(
        REQ_ADDR,
        req_len,
        if resp_len > 0 {
            VRING_DESC_F_NEXT as u16
        } else {
            0
        },
        1,
    ))];
    if resp_len > 0 {
        descs.push(RawDescriptor::from(SplitDescriptor::new(
            RESP_ADDR,
            resp_len,
            VRING_DESC_F_WRITE as u16,
            0,
        )));
    }
    descs
}

/// Parses `n` raw descriptors of 16 bytes each from `bytes`.
pub fn raw_descs(bytes: &[u8]) -> Vec<RawDescriptor> {
    bytes
        .chunks_exact(16)
        .map(|d| {
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(d[8..12].try_into().unwrap_or_default());
            let flags = u16::from_le_bytes([d[12], d[13]]);
            let next = u16::from_le_bytes([d[14], d[15]]);
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
        })
        .collect()
}

/// A little-endian reader over the fuzz input; every read past the end is `None`.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    /// The next `n` bytes, or `None` if fewer are left.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Some(head)
    }
    /// The next `n` bytes, or all that are left.
    pub fn up_to(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        self.bytes(n).unwrap_or_default()
    }
    /// A u8.
    pub fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    /// A u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    /// A u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A u64.
    pub fn u64(&mut self) -> Option<u64> {
        self.bytes(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
}

// ---- target 1: the decoder ------------------------------------------------------------------

/// The `decode` target's input: byte 0 bit 7 clear: the rest is one request in a plain chain
/// ([`simple_descs`], 4 KiB writable); set: `(byte0 & 15) + 1` raw descriptors (16 bytes each,
/// see [`raw_descs`]) follow, and the rest is written at [`REQ_ADDR`].
pub fn decode_one(mem: &GuestMemoryMmap, data: &[u8]) {
    let mut input = Input::new(data);
    let Some(first) = input.u8() else { return };
    let (descs, payload) = if first & 0x80 == 0 {
        let payload = input.up_to(usize::MAX);
        (simple_descs(payload.len() as u32, 4096), payload)
    } else {
        let n = usize::from(first & 15) + 1;
        let Some(raw) = input.bytes(n * 16) else {
            return;
        };
        (raw_descs(raw), input.up_to(usize::MAX))
    };
    // Requests larger than the space up to the response area are cut.
    let max = (RESP_ADDR - REQ_ADDR) as usize;
    let payload = &payload[..payload.len().min(max)];
    if mem.write_slice(payload, GuestAddress(REQ_ADDR)).is_err() {
        return;
    }
    let Some(chain) = chain_of(mem, &descs) else {
        return;
    };
    let Ok((mut reader, writer)) = protocol::split_chain(&chain, mem) else {
        return;
    };
    let writable = writer.available_bytes();
    let header = match protocol::decode_header(&mut reader) {
        Ok(h) => h,
        Err(e) => {
            assert_eq!(e.error_code(), protocol::ErrorCode::Unspec, "{e}");
            return;
        }
    };
    match protocol::decode_command(&header, &mut reader) {
        Ok(cmd) => {
            let _ = (cmd.name(), cmd.is_cursor());
            let size = cmd.response_size();
            assert!(size >= 24, "{} response of {size} bytes", cmd.name());
            let _ = writable;
        }
        Err(e) => {
            let _ = e.error_code();
        }
    }
    // The error response echoes the request's fence info.
    let bytes = protocol::Response::Err(protocol::ErrorCode::Unspec).encode(Some(&header));
    assert_eq!(bytes.len(), size_of::<CtrlHdrWire>());
}

// ---- targets 2 and 3: the device ------------------------------------------------------------

/// A display that checks what the device tells it: scanout ids in range, pixel buffers of
/// `width * height * 4` bytes inside the scanout the device set. It answers the device's
/// queries with what the script's DISPLAY op gave it (frontend values, as unchecked as a guest's).
pub struct CheckingDisplay {
    /// Scanouts the device has.
    pub num_scanouts: u32,
    /// Size of each scanout the device last set.
    sizes: [(u32, u32); VIRTIO_GPU_MAX_SCANOUTS as usize],
    /// The answer to `display_info`.
    pub modes: Option<Vec<DisplayMode>>,
    /// The answer to `edid`.
    pub edid: Option<Vec<u8>>,
}

impl CheckingDisplay {
    /// A display for a device of `num_scanouts` scanouts.
    pub fn new(num_scanouts: u32) -> Self {
        CheckingDisplay {
            num_scanouts,
            sizes: [(0, 0); VIRTIO_GPU_MAX_SCANOUTS as usize],
            modes: None,
            edid: None,
        }
    }

    fn scanout_index(&self, scanout_id: u32) -> usize {
        assert!(
            scanout_id < self.num_scanouts,
            "display call for scanout {scanout_id} of {}",
            self.num_scanouts
        );
        scanout_id as usize
    }
}

impl Display for CheckingDisplay {
    fn display_info(&mut self) -> Option<Vec<DisplayMode>> {
        self.modes.clone()
    }
    fn edid(&mut self, scanout_id: u32) -> Option<Vec<u8>> {
        self.scanout_index(scanout_id);
        self.edid.clone()
    }
    fn scanout(&mut self, scanout_id: u32, width: u32, height: u32) {
        let i = self.scanout_index(scanout_id);
        self.sizes[i] = (width, height);
    }
    fn update(&mut self, scanout_id: u32, x: u32, y: u32, width: u32, height: u32, pixels: &[u8]) {
        let i = self.scanout_index(scanout_id);
        let len = u64::from(width) * u64::from(height) * 4;
        assert_eq!(pixels.len() as u64, len, "update of {width}x{height}");
        let (sw, sh) = self.sizes[i];
        assert!(
            u64::from(x) + u64::from(width) <= u64::from(sw)
                && u64::from(y) + u64::from(height) <= u64::from(sh),
            "update {x},{y} {width}x{height} outside scanout {scanout_id} of {sw}x{sh}"
        );
    }
    fn supports_dmabuf(&self) -> bool {
        false
    }
    fn dmabuf_scanout(&mut self, _scanout_id: u32, _scanout: &DmabufScanout<'_>) {
        panic!("dmabuf scanout on a display without dmabuf support");
    }
    fn dmabuf_update(&mut self, _scanout_id: u32, _x: u32, _y: u32, _w: u32, _h: u32) {
        panic!("dmabuf update on a display without dmabuf support");
    }
    fn cursor_update(
        &mut self,
        scanout_id: u32,
        _x: u32,
        _y: u32,
        _hot_x: u32,
        _hot_y: u32,
        _image: &[u32; (CURSOR_SIZE * CURSOR_SIZE) as usize],
    ) {
        self.scanout_index(scanout_id);
    }
    fn cursor_move(&mut self, scanout_id: u32, _x: u32, _y: u32) {
        self.scanout_index(scanout_id);
    }
    fn cursor_hide(&mut self, scanout_id: u32, _x: u32, _y: u32) {
        self.scanout_index(scanout_id);
    }
}

/// A host-visible region mapper that maps nothing and checks each request against the region
/// and the mappings it holds.
#[derive(Default)]
pub struct CheckingMapper {
    maps: std::collections::BTreeMap<u64, u64>,
}

impl SharedMemoryMapper for CheckingMapper {
    fn map(
        &mut self,
        _fd: BorrowedFd<'_>,
        _fd_offset: u64,
        shm_offset: u64,
        len: u64,
        _writable: bool,
    ) -> std::io::Result<()> {
        let end = shm_offset.checked_add(len).expect("map range overflows");
        assert!(
            len > 0 && end <= HOST_VISIBLE_SIZE,
            "map {shm_offset:#x}+{len:#x}"
        );
        for (&o, &l) in &self.maps {
            assert!(
                end <= o || o + l <= shm_offset,
                "map {shm_offset:#x}+{len:#x} overlaps {o:#x}+{l:#x}"
            );
        }
        self.maps.insert(shm_offset, len);
        Ok(())
    }
    fn unmap(&mut self, shm_offset: u64, len: u64) -> std::io::Result<()> {
        assert_eq!(
            self.maps.remove(&shm_offset),
            Some(len),
            "unmap {shm_offset:#x}+{len:#x}"
        );
        Ok(())
    }
}

/// The config byte and acked features at the start of a device script, and the ops after them.
pub struct DeviceInput<'a> {
    /// The config byte (module doc).
    pub config: u8,
    /// The `VIRTIO_GPU_F_*` bits to ack, if the script says.
    pub acked: Option<u64>,
    /// The ops.
    pub ops: &'a [u8],
}

impl<'a> DeviceInput<'a> {
    /// Splits a device script; `None` when it is too short for its config.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let mut input = Input::new(data);
        let config = input.u8()?;
        let acked = if config & 0x80 != 0 {
            Some(input.u64()?)
        } else {
            None
        };
        Some(DeviceInput {
            config,
            acked,
            ops: input.up_to(usize::MAX),
        })
    }

    /// Scanouts for a device built per input (the software target): 1 to 4.
    pub fn num_scanouts(&self) -> u32 {
        u32::from(self.config & 3) + 1
    }

    /// Whether the device offers EDID (the software target).
    pub fn edid(&self) -> bool {
        self.config & 4 == 0
    }
}

/// The `device_software` target's input: a fresh software-renderer device configured by the
/// script's config byte, the script's ops, a reset. `trace` as in [`run_ops_traced`].
pub fn software_input(mem: &GuestMemoryMmap, data: &[u8], trace: Option<&mut Vec<(u32, u32)>>) {
    let Some(input) = DeviceInput::parse(data) else {
        return;
    };
    clear_memory(mem);
    let config = GpuConfig {
        num_scanouts: input.num_scanouts(),
        edid: input.edid(),
        // Smaller than the daemon's default so that one input stays fast.
        max_hostmem: 32 << 20,
        host_visible_size: HOST_VISIBLE_SIZE,
        ..GpuConfig::default()
    };
    let mut gpu = VirtioGpu::new(Box::new(SoftwareRenderer::new()), config);
    gpu.set_shared_memory(Some(Box::new(CheckingMapper::default())));
    if let Some(acked) = input.acked {
        gpu.set_acked_features(acked);
    }
    let mut display = CheckingDisplay::new(input.num_scanouts());
    run_ops_traced(&mut gpu, mem, &mut display, input.ops, trace);
    gpu.reset();
}

/// Scanouts of the virgl device (fixed: the device lives across inputs).
pub const VIRGL_SCANOUTS: u32 = 2;

/// The `device_virgl` target's device: libvirglrenderer initialised (EGL surfaceless unless
/// `EGL_PLATFORM` says otherwise). Call once per process.
pub fn virgl_device() -> VirtioGpu {
    if std::env::var_os("EGL_PLATFORM").is_none() {
        std::env::set_var("EGL_PLATFORM", "surfaceless");
    }
    let renderer = VirglGpuRenderer::new(VirglGpuRenderer::default_flags())
        .expect("virglrenderer initialises (EGL_PLATFORM=surfaceless, Mesa llvmpipe)");
    let config = GpuConfig {
        num_scanouts: VIRGL_SCANOUTS,
        max_hostmem: 32 << 20,
        host_visible_size: HOST_VISIBLE_SIZE,
        ..GpuConfig::default()
    };
    VirtioGpu::new(Box::new(renderer), config)
}

/// The `device_virgl` target's input on the process's device: the acked features (all offered
/// unless the script says), a fresh mapper, the script's ops, then the reset a guest reset
/// causes. `trace` as in [`run_ops_traced`].
pub fn virgl_input(
    gpu: &mut VirtioGpu,
    mem: &GuestMemoryMmap,
    data: &[u8],
    trace: Option<&mut Vec<(u32, u32)>>,
) {
    let Some(input) = DeviceInput::parse(data) else {
        return;
    };
    clear_memory(mem);
    gpu.set_shared_memory(Some(Box::new(CheckingMapper::default())));
    gpu.set_acked_features(input.acked.unwrap_or(gpu.device_features()));
    let mut display = CheckingDisplay::new(VIRGL_SCANOUTS);
    run_ops_traced(gpu, mem, &mut display, input.ops, trace);
    gpu.reset();
    gpu.set_shared_memory(None);
}

/// Runs a device script's ops (module doc) on `gpu` over `mem`, checking each used entry's length
/// against the chain's writable bytes.
pub fn run_ops(
    gpu: &mut VirtioGpu,
    mem: &GuestMemoryMmap,
    display: &mut CheckingDisplay,
    ops: &[u8],
) {
    run_ops_traced(gpu, mem, display, ops, None);
}

/// [`run_ops`], recording for each CTRL/CURSOR op the request type and the response type (0
/// when no response was published at once: a held fence, or no response buffer).
pub fn run_ops_traced(
    gpu: &mut VirtioGpu,
    mem: &GuestMemoryMmap,
    display: &mut CheckingDisplay,
    ops: &[u8],
    mut trace: Option<&mut Vec<(u32, u32)>>,
) {
    let mut input = Input::new(ops);
    while let Some(tag) = input.u8() {
        match tag & 7 {
            op @ (0 | 1) => {
                let (Some(len), Some(resp)) = (input.u16(), input.u16()) else {
                    return;
                };
                let request = input.up_to(usize::from(len));
                let queue = if op == 0 {
                    QueueKind::Control
                } else {
                    QueueKind::Cursor
                };
                // The request area ends at RESP_ADDR.
                let request = &request[..request.len().min((RESP_ADDR - REQ_ADDR) as usize)];
                if mem.write_slice(request, GuestAddress(REQ_ADDR)).is_err() {
                    return;
                }
                let descs = simple_descs(request.len() as u32, u32::from(resp));
                let used = send(gpu, mem, display, queue, &descs, Some(u64::from(resp)));
                if let Some(trace) = trace.as_deref_mut() {
                    let read = |addr| mem.read_obj::<u32>(GuestAddress(addr)).unwrap_or(0);
                    let resp_type = match used {
                        Some(len) if len >= 24 => read(RESP_ADDR),
                        _ => 0,
                    };
                    trace.push((read(REQ_ADDR), resp_type));
                }
            }
            2 => {
                let n = usize::from(tag >> 4) + 1;
                let Some(raw) = input.bytes(n * 16) else {
                    return;
                };
                let queue = if tag & 8 == 0 {
                    QueueKind::Control
                } else {
                    QueueKind::Cursor
                };
                // Loops and indirect tables leave no simple bound on the writable bytes.
                send(gpu, mem, display, queue, &raw_descs(raw), None);
            }
            3 => {
                let (Some(addr), Some(len)) = (input.u32(), input.u16()) else {
                    return;
                };
                let bytes = input.up_to(usize::from(len));
                let _ = mem.write_slice(bytes, GuestAddress(u64::from(addr)));
            }
            4 => {
                for e in gpu.poll_fences() {
                    assert!(e.len as usize <= 24 + protocol::MAX_CAPSET_SIZE as usize);
                }
            }
            5 => gpu.reset(),
            6 => {
                let Some(n) = input.u8() else { return };
                let Some(raw) = input.bytes(usize::from(n) * 17) else {
                    return;
                };
                display.modes = (n > 0).then(|| {
                    raw.chunks_exact(17)
                        .map(|m| {
                            let word =
                                |i: usize| u32::from_le_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
                            DisplayMode {
                                x: word(0),
                                y: word(4),
                                width: word(8),
                                height: word(12),
                                enabled: m[16] & 1 != 0,
                            }
                        })
                        .collect()
                });
                let Some(len) = input.u16() else { return };
                let edid = input.up_to(usize::from(len));
                display.edid = (len > 0).then(|| edid.to_vec());
            }
            _ => {}
        }
    }
}

fn send(
    gpu: &mut VirtioGpu,
    mem: &GuestMemoryMmap,
    display: &mut CheckingDisplay,
    queue: QueueKind,
    descs: &[RawDescriptor],
    writable: Option<u64>,
) -> Option<u32> {
    let chain = chain_of(mem, descs)?;
    let head = chain.head_index();
    if let Some(used) = gpu.process_chain(queue, chain, display) {
        assert_eq!(used.head_index, head);
        assert_eq!(used.queue, queue);
        if let Some(writable) = writable {
            assert!(
                u64::from(used.len) <= writable,
                "used length {} > {writable} writable bytes",
                used.len
            );
        }
        return Some(used.len);
    }
    None
}

/// Writes device scripts (the module doc's format), for the seed corpus.
pub struct Script {
    bytes: Vec<u8>,
}

impl Script {
    /// A script with `config` as its config byte.
    pub fn new(config: u8) -> Self {
        Script {
            bytes: vec![config],
        }
    }
    /// A script that acks `features` first.
    pub fn with_acked(config: u8, features: u64) -> Self {
        let mut bytes = vec![config | 0x80];
        bytes.extend_from_slice(&features.to_le_bytes());
        Script { bytes }
    }
    /// A request on the control queue with a `resp`-byte response buffer.
    pub fn ctrl(&mut self, request: &[u8], resp: u16) -> &mut Self {
        self.request(0, request, resp)
    }
    /// A request on the cursor queue with a `resp`-byte response buffer (0: none).
    pub fn cursor(&mut self, request: &[u8], resp: u16) -> &mut Self {
        self.request(1, request, resp)
    }
    fn request(&mut self, tag: u8, request: &[u8], resp: u16) -> &mut Self {
        let len = u16::try_from(request.len()).expect("seed request fits u16");
        self.bytes.push(tag);
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(&resp.to_le_bytes());
        self.bytes.extend_from_slice(request);
        self
    }
    /// A chain of raw descriptors `(addr, len, flags, next)`.
    pub fn chain(&mut self, cursor: bool, descs: &[(u64, u32, u16, u16)]) -> &mut Self {
        assert!((1..=16).contains(&descs.len()));
        self.bytes
            .push(2 | if cursor { 8 } else { 0 } | ((descs.len() as u8 - 1) << 4));
        for &(addr, len, flags, next) in descs {
            self.bytes.extend_from_slice(&addr.to_le_bytes());
            self.bytes.extend_from_slice(&len.to_le_bytes());
            self.bytes.extend_from_slice(&flags.to_le_bytes());
            self.bytes.extend_from_slice(&next.to_le_bytes());
        }
        self
    }
    /// Writes `data` at guest address `addr`.
    pub fn write(&mut self, addr: u32, data: &[u8]) -> &mut Self {
        let len = u16::try_from(data.len()).expect("seed write fits u16");
        self.bytes.push(3);
        self.bytes.extend_from_slice(&addr.to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(data);
        self
    }
    /// Polls fences.
    pub fn poll(&mut self) -> &mut Self {
        self.bytes.push(4);
        self
    }
    /// Resets the device.
    pub fn reset(&mut self) -> &mut Self {
        self.bytes.push(5);
        self
    }
    /// Sets what the display answers: `modes` as `(x, y, width, height, enabled)`, an EDID.
    pub fn display(&mut self, modes: &[(u32, u32, u32, u32, bool)], edid: &[u8]) -> &mut Self {
        self.bytes.push(6);
        self.bytes
            .push(u8::try_from(modes.len()).expect("seed modes fit u8"));
        for &(x, y, w, h, enabled) in modes {
            for v in [x, y, w, h] {
                self.bytes.extend_from_slice(&v.to_le_bytes());
            }
            self.bytes.push(u8::from(enabled));
        }
        let len = u16::try_from(edid.len()).expect("seed EDID fits u16");
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(edid);
        self
    }
    /// The script's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A control header's bytes.
pub fn hdr(type_: u32, flags: u32, fence_id: u64, ctx_id: u32, ring_idx: u8) -> Vec<u8> {
    CtrlHdrWire {
        type_: type_.into(),
        flags: flags.into(),
        fence_id: fence_id.into(),
        ctx_id: ctx_id.into(),
        ring_idx,
        padding: [0; 3],
    }
    .as_slice()
    .to_vec()
}

/// A request: an unfenced header for context `ctx_id`, then `body`.
pub fn req(type_: u32, ctx_id: u32, body: &[u8]) -> Vec<u8> {
    let mut v = hdr(type_, 0, 0, ctx_id, 0);
    v.extend_from_slice(body);
    v
}

/// Little-endian u32s as bytes.
pub fn le32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
