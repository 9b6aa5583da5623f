//! A vhost-user-gpu frontend: what a VMM does to a GPU backend, over the backend's real socket.
//!
//! vhost-user requests go through the `vhost` crate's [`Frontend`] (feature
//! `vhost-user-frontend`). It has no call for VHOST_USER_GPU_SET_SOCKET (request 33), so the
//! harness keeps a duplicate of the connection's `UnixStream` (made before the stream is handed
//! to `Frontend::from_stream`) and writes that one message itself: a 12-byte header
//! `{request 33, flags VERSION (0x1) [| NEED_REPLY (0x8) when REPLY_ACK is on], size 0}` with
//! the socket end as SCM_RIGHTS. `Frontend` calls are synchronous (request, then reply/ack), so
//! between two calls the connection is idle and the extra message cannot interleave.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VringConfigData};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::backend_req::BackendReqChannel;
use crate::display::{DisplayConfig, DisplayPeer, DisplayView};
use crate::error::{Error, Result};
use crate::memory::GuestMemory;
use crate::protocol::{features, get32, Command, QueueId, Response};
use crate::virtq::{Desc, SplitQueue};

/// VHOST_USER_GPU_SET_SOCKET.
pub const GPU_SET_SOCKET: u32 = 33;
/// vhost-user header flag: version 1.
pub const VHOST_USER_VERSION: u32 = 0x1;
/// vhost-user header flag: reply.
pub const VHOST_USER_REPLY: u32 = 0x4;
/// vhost-user header flag: need reply.
pub const VHOST_USER_NEED_REPLY: u32 = 0x8;
/// Number of virtqueues of a virtio-gpu device.
pub const NUM_QUEUES: usize = 2;
/// Size of the virtio-gpu config space the frontend reads (`events_read, events_clear,
/// num_scanouts, num_capsets`).
pub const CONFIG_SIZE: u32 = 16;
/// How long to keep trying to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Byte the harness fills response buffers with, so bytes the device did not write show.
pub const POISON: u8 = 0xa5;

/// What the frontend negotiates and builds.
#[derive(Clone, Debug)]
pub struct FrontendOptions {
    /// Guest memory size.
    pub memory_size: u64,
    /// Entries per virtqueue.
    pub queue_size: u16,
    /// virtio-gpu feature bits to accept when offered (VERSION_1 and PROTOCOL_FEATURES are
    /// always accepted).
    pub gpu_features: u64,
    /// vhost-user protocol features to accept when offered.
    pub protocol_features: VhostUserProtocolFeatures,
    /// Ask for REPLY_ACK on every request (when negotiated).
    pub reply_ack: bool,
    /// Serve the backend-request channel (when BACKEND_REQ is negotiated).
    pub backend_req: bool,
    /// Send SET_SOCKET with a display peer configured so (None: no display socket).
    pub display: Option<DisplayConfig>,
    /// How long to wait for a used buffer.
    pub timeout: Duration,
    /// Initial avail/used index of both vrings (SET_VRING_BASE); near 65535 to test wrapping.
    pub vring_base: u16,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX when offered.
    pub event_idx: bool,
}

impl Default for FrontendOptions {
    fn default() -> Self {
        FrontendOptions {
            memory_size: 128 << 20,
            queue_size: 256,
            gpu_features: features::ALL_GPU,
            protocol_features: VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::BACKEND_REQ
                | VhostUserProtocolFeatures::BACKEND_SEND_FD
                | VhostUserProtocolFeatures::SHMEM,
            reply_ack: true,
            backend_req: true,
            display: Some(DisplayConfig::default()),
            timeout: Duration::from_secs(5),
            vring_base: 0,
            event_idx: false,
        }
    }
}

/// The virtio-gpu config space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuConfig {
    /// events_read.
    pub events_read: u32,
    /// events_clear.
    pub events_clear: u32,
    /// num_scanouts.
    pub num_scanouts: u32,
    /// num_capsets.
    pub num_capsets: u32,
}

/// One buffer of a hand-built chain.
#[derive(Clone, Debug)]
pub enum Segment {
    /// Device-readable bytes (copied into freshly allocated guest memory).
    Bytes(Vec<u8>),
    /// A device-writable buffer of this many bytes (allocated, poisoned, read back).
    Writable(u32),
    /// A descriptor pointing anywhere (not allocated; read back if writable and in memory).
    At {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
        /// Device-writable.
        writable: bool,
    },
}

/// A submitted chain not yet collected.
#[derive(Debug)]
#[must_use = "wait for it, or its guest buffers are never freed"]
pub struct Pending {
    /// Queue.
    pub queue: QueueId,
    /// Head descriptor.
    pub head: u16,
    allocs: Vec<(u64, u64)>,
    writable: Vec<(u64, u32)>,
}

/// A connected frontend.
pub struct GpuFrontend {
    vhost: Frontend,
    side: UnixStream,
    mem: Arc<GuestMemory>,
    queues: Vec<SplitQueue>,
    virtio_features: u64,
    offered_features: u64,
    protocol: VhostUserProtocolFeatures,
    offered_protocol: VhostUserProtocolFeatures,
    config: Option<GpuConfig>,
    display: Option<DisplayPeer>,
    backend_req: Option<BackendReqChannel>,
    shmem_sizes: Vec<(u8, u64)>,
    /// Wait limit for used buffers.
    pub timeout: Duration,
    reply_ack: bool,
}

fn connect_stream(path: &Path) -> Result<UnixStream> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                log::debug!("connect {}: {e}, retrying", path.display());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(Error::io(format!("connect {}", path.display()), e)),
        }
    }
}

impl GpuFrontend {
    /// Connect to the backend socket at `path` and bring the device up: features, protocol
    /// features, owner, config, backend channel, memory table, both vrings, display socket.
    pub fn connect(path: &Path, opts: FrontendOptions) -> Result<Self> {
        let stream = connect_stream(path)?;
        Self::from_stream(stream, opts)
    }

    /// Same as [`GpuFrontend::connect`] on an already connected stream.
    pub fn from_stream(stream: UnixStream, opts: FrontendOptions) -> Result<Self> {
        let side = stream
            .try_clone()
            .map_err(|e| Error::io("dup vhost socket", e))?;
        let mut vhost = Frontend::from_stream(stream, NUM_QUEUES as u64);
        vhost.set_owner().map_err(Error::vhost("SET_OWNER"))?;
        let offered_features = vhost.get_features().map_err(Error::vhost("GET_FEATURES"))?;
        if offered_features & features::PROTOCOL_FEATURES == 0 {
            return Err(Error::Malformed(format!(
                "backend features {offered_features:#x} lack VHOST_USER_F_PROTOCOL_FEATURES"
            )));
        }
        let event_idx = if opts.event_idx {
            features::RING_EVENT_IDX
        } else {
            0
        };
        let virtio_features = offered_features
            & (features::VERSION_1 | features::PROTOCOL_FEATURES | event_idx | opts.gpu_features);
        vhost
            .set_features(virtio_features)
            .map_err(Error::vhost("SET_FEATURES"))?;
        let offered_protocol = vhost
            .get_protocol_features()
            .map_err(Error::vhost("GET_PROTOCOL_FEATURES"))?;
        let protocol = offered_protocol & opts.protocol_features;
        vhost
            .set_protocol_features(protocol)
            .map_err(Error::vhost("SET_PROTOCOL_FEATURES"))?;
        let reply_ack = opts.reply_ack && protocol.contains(VhostUserProtocolFeatures::REPLY_ACK);
        if reply_ack {
            vhost.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        if protocol.contains(VhostUserProtocolFeatures::MQ) {
            let n = vhost
                .get_queue_num()
                .map_err(Error::vhost("GET_QUEUE_NUM"))?;
            if n < NUM_QUEUES as u64 {
                return Err(Error::Malformed(format!(
                    "backend has {n} queues, 2 needed"
                )));
            }
        }
        let mem = Arc::new(GuestMemory::new(opts.memory_size)?);
        let mut fe = GpuFrontend {
            vhost,
            side,
            mem: mem.clone(),
            queues: Vec::new(),
            virtio_features,
            offered_features,
            protocol,
            offered_protocol,
            config: None,
            display: None,
            backend_req: None,
            shmem_sizes: Vec::new(),
            timeout: opts.timeout,
            reply_ack,
        };
        if protocol.contains(VhostUserProtocolFeatures::CONFIG) {
            fe.config = Some(fe.read_config()?);
        }
        if opts.backend_req && protocol.contains(VhostUserProtocolFeatures::BACKEND_REQ) {
            let ch = BackendReqChannel::start(reply_ack)?;
            let fd = ch.backend_fd();
            fe.vhost
                .set_backend_request_fd(&RawFdRef(fd))
                .map_err(Error::vhost("SET_BACKEND_REQ_FD"))?;
            if protocol.contains(VhostUserProtocolFeatures::SHMEM) {
                let cfg = fe
                    .vhost
                    .get_shmem_config()
                    .map_err(Error::vhost("GET_SHMEM_CONFIG"))?;
                let sizes = cfg.memory_sizes;
                for (id, &size) in sizes.iter().enumerate() {
                    if size != 0 {
                        let id = u8::try_from(id).map_err(|_| Error::Malformed("shmid".into()))?;
                        ch.add_region(id, size)?;
                        fe.shmem_sizes.push((id, size));
                    }
                }
            }
            fe.backend_req = Some(ch);
        }
        let region = mem.region_info()?;
        fe.vhost
            .set_mem_table(&[region])
            .map_err(Error::vhost("SET_MEM_TABLE"))?;
        for i in 0..NUM_QUEUES {
            let q = SplitQueue::with_base(
                mem.clone(),
                opts.queue_size,
                opts.vring_base,
                virtio_features & features::RING_EVENT_IDX != 0,
            )?;
            fe.setup_vring(i, &q, opts.vring_base)?;
            fe.queues.push(q);
        }
        if let Some(cfg) = opts.display {
            fe.set_socket(cfg)?;
        }
        Ok(fe)
    }

    fn setup_vring(&mut self, i: usize, q: &SplitQueue, base: u16) -> Result<()> {
        let l = q.layout();
        let cfg = VringConfigData {
            queue_max_size: l.size,
            queue_size: l.size,
            flags: 0,
            desc_table_addr: self.mem.host_address(l.desc)?,
            used_ring_addr: self.mem.host_address(l.used)?,
            avail_ring_addr: self.mem.host_address(l.avail)?,
            log_addr: None,
        };
        let v = &mut self.vhost;
        v.set_vring_num(i, l.size)
            .map_err(Error::vhost("SET_VRING_NUM"))?;
        v.set_vring_addr(i, &cfg)
            .map_err(Error::vhost("SET_VRING_ADDR"))?;
        v.set_vring_base(i, base)
            .map_err(Error::vhost("SET_VRING_BASE"))?;
        v.set_vring_call(i, q.call_fd())
            .map_err(Error::vhost("SET_VRING_CALL"))?;
        v.set_vring_kick(i, q.kick_fd())
            .map_err(Error::vhost("SET_VRING_KICK"))?;
        v.set_vring_enable(i, true)
            .map_err(Error::vhost("SET_VRING_ENABLE"))?;
        Ok(())
    }

    /// GET_CONFIG: read the config space again.
    pub fn read_config(&mut self) -> Result<GpuConfig> {
        let buf = [0u8; CONFIG_SIZE as usize];
        let (_, payload) = self
            .vhost
            .get_config(0, CONFIG_SIZE, VhostUserConfigFlags::empty(), &buf)
            .map_err(Error::vhost("GET_CONFIG"))?;
        Ok(GpuConfig {
            events_read: get32(&payload, 0),
            events_clear: get32(&payload, 4),
            num_scanouts: get32(&payload, 8),
            num_capsets: get32(&payload, 12),
        })
    }

    /// Send VHOST_USER_GPU_SET_SOCKET with a new display peer; the previous peer (if any) is
    /// closed. Returns a view of the new peer.
    pub fn set_socket(&mut self, cfg: DisplayConfig) -> Result<DisplayView> {
        let (peer, theirs) = DisplayPeer::start(cfg)?;
        let mut flags = VHOST_USER_VERSION;
        if self.reply_ack {
            flags |= VHOST_USER_NEED_REPLY;
        }
        let mut hdr = Vec::with_capacity(12);
        for v in [GPU_SET_SOCKET, flags, 0] {
            hdr.extend_from_slice(&v.to_le_bytes());
        }
        self.side
            .send_with_fd(&hdr[..], theirs.as_raw_fd())
            .map_err(|e| {
                Error::io(
                    "send GPU_SET_SOCKET",
                    std::io::Error::from_raw_os_error(e.errno()),
                )
            })?;
        drop(theirs);
        if self.reply_ack {
            self.read_ack(GPU_SET_SOCKET)?;
        }
        let view = peer.view();
        self.display = Some(peer);
        Ok(view)
    }

    fn read_ack(&mut self, request: u32) -> Result<()> {
        use std::io::Read;
        let mut r = [0u8; 20];
        self.side
            .read_exact(&mut r)
            .map_err(|e| Error::io(format!("read ack of request {request}"), e))?;
        let (req, flags, size) = (get32(&r, 0), get32(&r, 4), get32(&r, 8));
        let val = crate::protocol::get64(&r, 12);
        if req != request || flags & VHOST_USER_REPLY == 0 || size != 8 {
            return Err(Error::Malformed(format!(
                "ack of {request}: request {req} flags {flags:#x} size {size}"
            )));
        }
        if val != 0 {
            return Err(Error::Malformed(format!(
                "request {request} refused ({val:#x})"
            )));
        }
        Ok(())
    }

    /// The display peer of the last SET_SOCKET.
    pub fn display(&self) -> Result<DisplayView> {
        self.display
            .as_ref()
            .map(DisplayPeer::view)
            .ok_or_else(|| Error::Disconnected("no display socket was set".into()))
    }

    /// Close the display socket (the backend sees EOF).
    pub fn close_display(&mut self) {
        self.display = None;
    }

    /// The backend-request channel (if BACKEND_REQ was negotiated).
    pub fn backend_req(&self) -> Option<&BackendReqChannel> {
        self.backend_req.as_ref()
    }

    /// Shared memory regions from GET_SHMEM_CONFIG: (shmid, size).
    pub fn shmem_regions(&self) -> &[(u8, u64)] {
        &self.shmem_sizes
    }

    /// The config read at connect time (None without the CONFIG protocol feature).
    pub fn config(&self) -> Option<GpuConfig> {
        self.config
    }

    /// Acked virtio features.
    pub fn features(&self) -> u64 {
        self.virtio_features
    }

    /// Features the backend offered.
    pub fn offered_features(&self) -> u64 {
        self.offered_features
    }

    /// Acked protocol features.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    /// Protocol features the backend offered.
    pub fn offered_protocol_features(&self) -> VhostUserProtocolFeatures {
        self.offered_protocol
    }

    /// Guest memory.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.mem
    }

    /// The `vhost` crate's frontend, for requests the harness does not wrap.
    pub fn vhost(&mut self) -> &mut Frontend {
        &mut self.vhost
    }

    /// A queue's driver.
    pub fn queue(&mut self, q: QueueId) -> &mut SplitQueue {
        &mut self.queues[q.index()]
    }

    /// Publish a chain of segments on `queue` (no kick).
    pub fn submit_segments(&mut self, queue: QueueId, segs: &[Segment]) -> Result<Pending> {
        let mut allocs = Vec::new();
        let mut writable = Vec::new();
        let mut descs = Vec::new();
        let res = (|| -> Result<()> {
            for s in segs {
                match s {
                    Segment::Bytes(b) => {
                        let len = b.len().max(1) as u64;
                        let a = self.mem.alloc(len, 8)?;
                        allocs.push((a, len));
                        self.mem.write(a, b)?;
                        descs.push(Desc {
                            addr: a,
                            len: b.len() as u32,
                            writable: false,
                        });
                    }
                    Segment::Writable(n) => {
                        let len = u64::from(*n).max(1);
                        let a = self.mem.alloc(len, 8)?;
                        allocs.push((a, len));
                        self.mem.write(a, &vec![POISON; *n as usize])?;
                        writable.push((a, *n));
                        descs.push(Desc {
                            addr: a,
                            len: *n,
                            writable: true,
                        });
                    }
                    Segment::At {
                        addr,
                        len,
                        writable: w,
                    } => {
                        if *w {
                            writable.push((*addr, *len));
                        }
                        descs.push(Desc {
                            addr: *addr,
                            len: *len,
                            writable: *w,
                        });
                    }
                }
            }
            Ok(())
        })();
        let head = res.and_then(|_| self.queues[queue.index()].add_chain(&descs));
        match head {
            Ok(head) => Ok(Pending {
                queue,
                head,
                allocs,
                writable,
            }),
            Err(e) => {
                for (a, l) in allocs {
                    self.mem.free(a, l);
                }
                Err(e)
            }
        }
    }

    /// Publish a command on its queue: one readable buffer (header + body) and one writable
    /// response buffer of `cmd.response_len` bytes (none when 0). No kick.
    pub fn submit(&mut self, cmd: &Command) -> Result<Pending> {
        let mut segs = vec![Segment::Bytes(cmd.to_bytes())];
        if cmd.response_len > 0 {
            segs.push(Segment::Writable(cmd.response_len));
        }
        self.submit_segments(cmd.queue, &segs)
    }

    /// Kick a queue.
    pub fn kick(&self, queue: QueueId) -> Result<()> {
        self.queues[queue.index()].kick()
    }

    fn finish(&mut self, p: Pending, used_len: u32) -> Result<Response> {
        let mut bytes = Vec::new();
        for &(a, l) in &p.writable {
            match self.mem.read(a, l as usize) {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        for (a, l) in p.allocs {
            self.mem.free(a, l);
        }
        Ok(Response::from_bytes(bytes, used_len))
    }

    /// Wait for a submitted chain (others completing meanwhile are kept for their waiters).
    pub fn wait(&mut self, p: Pending) -> Result<Response> {
        let timeout = self.timeout;
        self.wait_timeout(p, timeout)
    }

    /// Wait with an explicit timeout. On timeout the chain stays in flight and its buffers are
    /// leaked (the device may still write them).
    pub fn wait_timeout(&mut self, p: Pending, timeout: Duration) -> Result<Response> {
        let len = self.queues[p.queue.index()].wait_for(p.head, timeout)?;
        self.finish(p, len)
    }

    /// Wait, looking at the used ring only when the call eventfd fires: a backend that publishes
    /// a used entry without signalling makes this time out.
    pub fn wait_signalled(&mut self, p: Pending) -> Result<Response> {
        let timeout = self.timeout;
        let len = self.queues[p.queue.index()].wait_signalled(p.head, timeout)?;
        self.finish(p, len)
    }

    /// Return the response if the chain was used already, or the pending chain back.
    pub fn poll(&mut self, p: Pending) -> Result<std::result::Result<Response, Pending>> {
        match self.queues[p.queue.index()].try_take(p.head)? {
            Some(len) => Ok(Ok(self.finish(p, len)?)),
            None => Ok(Err(p)),
        }
    }

    /// Submit, kick and wait for one command.
    pub fn request(&mut self, cmd: &Command) -> Result<Response> {
        let p = self.submit(cmd)?;
        self.kick(cmd.queue)?;
        self.wait(p)
    }

    /// Submit all, kick each queue used once, wait for all; responses in command order.
    pub fn request_all(&mut self, cmds: &[Command]) -> Result<Vec<Response>> {
        let mut pend = Vec::new();
        for c in cmds {
            pend.push(self.submit(c)?);
        }
        for q in [QueueId::Control, QueueId::Cursor] {
            if cmds.iter().any(|c| c.queue == q) {
                self.kick(q)?;
            }
        }
        pend.into_iter().map(|p| self.wait(p)).collect()
    }

    /// Submit, kick, wait, and fail unless the response type is `ty`.
    pub fn expect(&mut self, cmd: &Command, ty: u32) -> Result<Response> {
        let r = self.request(cmd)?;
        r.expect_type(ty).map_err(|e| match e {
            Error::UnexpectedResponse { expected, got } => Error::UnexpectedResponse {
                expected: format!("{expected} for {}", crate::protocol::type_name(cmd.hdr.ty)),
                got,
            },
            e => e,
        })?;
        Ok(r)
    }

    /// Submit, kick, wait, and fail unless it is OK_NODATA.
    pub fn ok(&mut self, cmd: &Command) -> Result<Response> {
        self.expect(cmd, crate::protocol::resp::OK_NODATA)
    }

    /// Stop both vrings (GET_VRING_BASE), as a VMM does on stop; returns their bases.
    pub fn stop(&mut self) -> Result<Vec<u32>> {
        (0..NUM_QUEUES)
            .map(|i| {
                self.vhost
                    .get_vring_base(i)
                    .map_err(Error::vhost("GET_VRING_BASE"))
            })
            .collect()
    }

    /// Whether REPLY_ACK is in use.
    pub fn reply_ack(&self) -> bool {
        self.reply_ack
    }
}

/// Borrowed raw fd as `AsRawFd` (for `set_backend_request_fd`).
struct RawFdRef(std::os::fd::RawFd);

impl AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}
