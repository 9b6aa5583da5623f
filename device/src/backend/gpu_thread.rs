//! The GPU thread: the one thread that owns the device state and its renderer.
//!
//! virglrenderer's GL context belongs to the thread that created it, and our renderers are not
//! `Send`; vhost-user-backend, on the other hand, calls the backend from its own threads (one
//! that reads the frontend's requests, and a vring worker per connection). So the device
//! ([`GpuDevice`], in production `VirtioGpu` with its renderer) is created **on** this thread from
//! a `Send` factory and lives there for the whole life of the daemon, across frontend
//! reconnects. Everyone else talks to it through [`GpuThreadClient`]: a channel of
//! [`Request`]s plus an eventfd that wakes the thread.
//!
//! The thread sleeps in `epoll_wait` on the wake-up eventfd, the renderer's fence poll fd (when
//! it has one) and the queues' kick eventfds (handed over by the connection's vrings,
//! [`super::vring`]), so a guest kick wakes this thread alone. After every wake-up it drains
//! the channel, processes the queues that were kicked, then lets the renderer retire fences
//! and publishes the answers of the fenced commands. Before it sleeps it may poll for new work
//! for a short, adaptive window (`--poll-max-us`, [`super::poll`]); it never spins longer. While
//! it runs a queue it also takes new requests from the channel before each batch of chains it pops, so that a request the
//! frontend saw answered (a new display socket) is in effect for every chain made available
//! after that answer.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserMMap;
use vhost::vhost_user::{Backend, GpuBackend, VhostUserFrontendReqHandler};
use vhost_user_backend::VringT;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::cpu_sharing::{self, CpuSharing};
use super::poll::AdaptivePoll;
use super::vring::GpuVring;
use super::BackendError;
use crate::display::{Display, GpuSocketDisplay, HeadlessDisplay};
use crate::gpu::{QueueKind, SharedMemoryMapper, UsedEntry, VirtioGpu};
use crate::log_limit::{suppressed_note, LogLimiter};
use crate::protocol::{self, VIRTIO_GPU_SHM_ID_HOST_VISIBLE};

/// Index of the control queue.
pub const CONTROL_QUEUE: usize = 0;
/// Index of the cursor queue.
pub const CURSOR_QUEUE: usize = 1;
pub use crate::limits::NUM_QUEUES;

/// How long `GET_VRING_BASE` (stop a queue) waits for the GPU thread to finish the batch it is
/// working on. QEMU closes the display socket before it stops the queues, so a batch waiting
/// for the display is released at once; the bound only guards against a renderer that hangs.
pub const STOP_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long polling spins on the available rings between two looks at the epoll, where the
/// frontend runs on another CPU: a chain made available is seen within a fraction of a
/// microsecond instead of after an `epoll_wait` and a `sched_yield` (gpu-bench cmd-rtt across
/// two vCPUs, median of 7 samples: 16.68 us before polling read the rings, 3.59 us with this
/// spin; reading the rings without it, the samples split between 2.6-9 us and 13-26 us).
const POLL_SPIN: Duration = Duration::from_micros(2);

/// One polling wait in this many is judged for CPU sharing ([`cpu_sharing`]): two
/// `getrusage` calls each, kept off most waits because a microsecond there decides whether the
/// answer reaches the frontend before its thread sleeps.
const POLL_SPIN_JUDGE_EVERY: u32 = 8;

/// The descriptor chains the device gets: guest memory as the frontend's memory table maps it.
pub type GuestChain = DescriptorChain<GuestMemoryLoadGuard<GuestMemoryMmap>>;

/// Guest memory of one connection.
pub type GuestMemory = GuestMemoryAtomic<GuestMemoryMmap>;

/// What the GPU thread needs of the device; `VirtioGpu` is the implementation, tests use mocks.
pub trait GpuDevice {
    /// `VIRTIO_GPU_F_*` bits the device offers.
    fn device_features(&self) -> u64;
    /// The `virtio_gpu_config` bytes.
    fn config_space(&self) -> Vec<u8>;
    /// Executes one chain; `Some` is published at once, `None` waits for its fence.
    fn process_chain(
        &mut self,
        queue: QueueKind,
        chain: GuestChain,
        display: &mut dyn Display,
    ) -> Option<UsedEntry>;
    /// The renderer's fence poll fd.
    fn fence_poll_fd(&self) -> Option<BorrowedFd<'_>>;
    /// Entries whose fences completed.
    fn poll_fences(&mut self) -> Vec<UsedEntry>;
    /// Drops every resource, context, scanout and pending fence.
    fn reset(&mut self);
    /// Size of the host-visible shared memory region the device wants (0: none).
    fn host_visible_size(&self) -> u64 {
        0
    }
    /// Installs (`Some`) or removes (`None`) the host-visible region's mapper.
    fn set_shared_memory(&mut self, mapper: Option<Box<dyn SharedMemoryMapper>>) {
        let _ = mapper;
    }
    /// The virtio features the frontend acked (SET_FEATURES).
    fn set_acked_features(&mut self, features: u64) {
        let _ = features;
    }
}

impl GpuDevice for VirtioGpu {
    fn device_features(&self) -> u64 {
        VirtioGpu::device_features(self)
    }
    fn config_space(&self) -> Vec<u8> {
        VirtioGpu::config_space(self)
    }
    fn process_chain(
        &mut self,
        queue: QueueKind,
        chain: GuestChain,
        display: &mut dyn Display,
    ) -> Option<UsedEntry> {
        VirtioGpu::process_chain(self, queue, chain, display)
    }
    fn fence_poll_fd(&self) -> Option<BorrowedFd<'_>> {
        VirtioGpu::fence_poll_fd(self)
    }
    fn poll_fences(&mut self) -> Vec<UsedEntry> {
        VirtioGpu::poll_fences(self)
    }
    fn reset(&mut self) {
        VirtioGpu::reset(self)
    }
    fn host_visible_size(&self) -> u64 {
        VirtioGpu::host_visible_size(self)
    }
    fn set_shared_memory(&mut self, mapper: Option<Box<dyn SharedMemoryMapper>>) {
        VirtioGpu::set_shared_memory(self, mapper)
    }
    fn set_acked_features(&mut self, features: u64) {
        VirtioGpu::set_acked_features(self, features)
    }
}

/// How long the GPU thread waits for the frontend to answer SHMEM_MAP / SHMEM_UNMAP (with
/// REPLY_ACK). After that the mapper gives up on the channel (every later request fails at once,
/// MAP_BLOB answers ERR_UNSPEC) instead of wedging the GPU thread; QEMU 11.1 is known to carry a
/// SHMEM_MAP deadlock that upstream fixed after the release.
pub const SHMEM_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The host-visible region over vhost-user's backend-request channel: SHMEM_MAP / SHMEM_UNMAP
/// with shmid [`VIRTIO_GPU_SHM_ID_HOST_VISIBLE`]. With REPLY_ACK negotiated, `vhost`'s
/// [`Backend`] waits for the frontend's answer, so a refused mapping is an error here; without
/// it a frontend's refusal cannot be seen. The wait is bounded by a timeout
/// ([`SHMEM_REPLY_TIMEOUT`]).
pub struct BackendShmemMapper {
    backend: Backend,
    timeout: Duration,
    /// The frontend left a request unanswered: the channel is not used again.
    stuck: bool,
}

impl BackendShmemMapper {
    /// A mapper over `backend` with [`SHMEM_REPLY_TIMEOUT`].
    pub fn new(backend: Backend) -> Self {
        Self::with_timeout(backend, SHMEM_REPLY_TIMEOUT)
    }

    /// A mapper over `backend` that waits at most `timeout` for each answer.
    pub fn with_timeout(backend: Backend, timeout: Duration) -> Self {
        BackendShmemMapper {
            backend,
            timeout,
            stuck: false,
        }
    }

    /// Runs `request` on the channel from a thread of its own, waiting at most `self.timeout`
    /// for it. A thread left waiting holds its clone of the channel until the frontend answers
    /// or closes it; no request is sent after that, so at most one lingers.
    fn request(
        &mut self,
        what: &'static str,
        request: impl FnOnce(&Backend) -> io::Result<u64> + Send + 'static,
    ) -> io::Result<()> {
        if self.stuck {
            return Err(io::Error::other(format!(
                "{what}: the frontend stopped answering the backend-request channel earlier"
            )));
        }
        let backend = self.backend.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("gpu-shmem-reply".into())
            .spawn(move || {
                let _ = tx.send(request(&backend));
            })?;
        match rx.recv_timeout(self.timeout) {
            Ok(result) => result.map(|_| ()),
            Err(_) => {
                self.stuck = true;
                log::error!(
                    "{what}: no answer from the frontend within {:?}; no more blob mappings on \
                     this connection",
                    self.timeout
                );
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what}: no answer within {:?}", self.timeout),
                ))
            }
        }
    }
}

impl SharedMemoryMapper for BackendShmemMapper {
    fn map(
        &mut self,
        fd: BorrowedFd<'_>,
        fd_offset: u64,
        shm_offset: u64,
        len: u64,
        writable: bool,
    ) -> io::Result<()> {
        let req = VhostUserMMap {
            shmid: VIRTIO_GPU_SHM_ID_HOST_VISIBLE,
            fd_offset,
            shm_offset,
            len,
            flags: u64::from(writable),
            ..Default::default()
        };
        let fd = fd.try_clone_to_owned()?;
        self.request("SHMEM_MAP", move |b| b.shmem_map(&req, &fd))
    }

    fn unmap(&mut self, shm_offset: u64, len: u64) -> io::Result<()> {
        let req = VhostUserMMap {
            shmid: VIRTIO_GPU_SHM_ID_HOST_VISIBLE,
            shm_offset,
            len,
            ..Default::default()
        };
        self.request("SHMEM_UNMAP", move |b| b.shmem_unmap(&req))
    }
}

/// What the vhost-user side asks of the GPU thread.
pub enum Request {
    /// A queue was started or enabled: process it.
    Kick {
        /// The queue index.
        queue: usize,
    },
    /// A new connection's vrings, in queue order.
    Vrings(Vec<GpuVring>),
    /// `SET_VRING_KICK` (a new kick eventfd for the queue, replacing the old one) or a queue
    /// stop (`None`): the GPU thread waits on the queue's kick fd itself.
    KickFd {
        /// The queue index.
        queue: usize,
        /// The kick eventfd, `None` to close the old one.
        fd: Option<File>,
    },
    /// The frontend's (new) memory table.
    Memory(GuestMemory),
    /// `VHOST_USER_GPU_SET_SOCKET`: the display socket, replacing any older one.
    GpuSocket(GpuBackend),
    /// `SET_BACKEND_REQ_FD`: the channel for SHMEM_MAP / SHMEM_UNMAP (blob mapping).
    BackendReq(Backend),
    /// `SET_FEATURES`: the features the frontend acked.
    AckedFeatures(u64),
    /// `VHOST_USER_RESET_DEVICE`: drop the guest's state.
    ResetDevice,
    /// The frontend disconnected: reset, forget the vrings, memory and display socket, then
    /// acknowledge.
    Disconnect(SyncSender<()>),
    /// End the thread.
    Shutdown,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Kick { queue } => write!(f, "Kick({queue})"),
            Request::Vrings(v) => write!(f, "Vrings({})", v.len()),
            Request::KickFd { queue, fd } => write!(f, "KickFd({queue}, {})", fd.is_some()),
            Request::Memory(_) => f.write_str("Memory"),
            Request::GpuSocket(_) => f.write_str("GpuSocket"),
            Request::BackendReq(_) => f.write_str("BackendReq"),
            Request::AckedFeatures(v) => write!(f, "AckedFeatures({v:#x})"),
            Request::ResetDevice => f.write_str("ResetDevice"),
            Request::Disconnect(_) => f.write_str("Disconnect"),
            Request::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl Request {
    /// Whether the GPU thread may handle this request between two batches of chains of one
    /// queue run (see [`GpuThread::absorb_requests`]): it only installs something the next
    /// commands must see, and neither drops device state nor ends the connection.
    fn fits_between_batches(&self) -> bool {
        matches!(
            self,
            Request::Kick { .. }
                | Request::Vrings(_)
                | Request::KickFd { .. }
                | Request::Memory(_)
                | Request::GpuSocket(_)
                | Request::BackendReq(_)
                | Request::AckedFeatures(_)
        )
    }
}

/// State shared between the GPU thread and the vhost-user threads.
#[derive(Debug, Default)]
struct Shared {
    /// Whether the GPU thread is between a wake-up and its next sleep (it may touch vrings).
    busy: Mutex<bool>,
    /// Bumped by the GPU thread after each command and each wake-up it finished: the
    /// watchdog's sign of life.
    progress: AtomicU64,
    /// Set when the GPU thread has ended (the watchdog stops).
    ended: AtomicBool,
    /// Signalled when `busy` becomes false.
    idle: Condvar,
    /// Set when the control queue was stopped (GET_VRING_BASE): the next time it runs, check
    /// whether the guest reset the device (see [`GpuThread::check_guest_reset`]).
    control_stopped: AtomicBool,
    /// The most the GPU thread polls for new work before it sleeps, in microseconds (0: it
    /// sleeps at once); see [`super::poll`].
    poll_max_us: AtomicU64,
    /// Wake-ups whose events polling found (the thread did not have to sleep for them).
    polled_wakeups: AtomicU64,
}

/// The handle the vhost-user side uses to talk to the GPU thread. `Send + Sync`.
#[derive(Debug)]
pub struct GpuThreadClient {
    tx: Sender<Request>,
    wake: EventFd,
    shared: Arc<Shared>,
    features: u64,
    config: Vec<u8>,
    host_visible_size: u64,
}

impl GpuThreadClient {
    /// Size of the device's host-visible shared memory region (asked once at start; 0: none).
    pub fn host_visible_size(&self) -> u64 {
        self.host_visible_size
    }

    /// Queues `request` and wakes the GPU thread. Fails only when the thread is gone.
    pub fn send(&self, request: Request) -> Result<(), BackendError> {
        self.tx
            .send(request)
            .map_err(|_| BackendError::GpuThreadGone)?;
        self.wake.write(1).map_err(BackendError::Wake)
    }

    /// Sets the most the GPU thread polls for new work after a batch before it sleeps
    /// (adaptive, see [`super::poll`]; zero: it sleeps at once). Takes effect at its next wait.
    pub fn set_poll_max(&self, max: Duration) {
        let us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        self.shared.poll_max_us.store(us, Ordering::Relaxed);
    }

    /// How many times polling found the GPU thread's next work (instead of a wake-up from
    /// sleep) since it started: a diagnostic for `--poll-max-us`.
    pub fn polled_wakeups(&self) -> u64 {
        self.shared.polled_wakeups.load(Ordering::Relaxed)
    }

    /// The device's `VIRTIO_GPU_F_*` bits (asked once at start).
    pub fn device_features(&self) -> u64 {
        self.features
    }

    /// The device's config space (asked once at start).
    pub fn config_space(&self) -> &[u8] {
        &self.config
    }

    /// Waits (at most [`STOP_QUEUE_TIMEOUT`]) until the GPU thread is not in the middle of a
    /// batch, so that a queue stopped by the frontend is no longer touched. Call it after the
    /// queue was marked not ready. `queue` is the stopped queue.
    pub fn quiesce(&self, queue: usize) {
        if queue == CONTROL_QUEUE {
            self.shared.control_stopped.store(true, Ordering::SeqCst);
        }
        let deadline = Instant::now() + STOP_QUEUE_TIMEOUT;
        let Ok(mut busy) = self.shared.busy.lock() else {
            return;
        };
        while *busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "queue {queue} stopped while the GPU thread is still busy after {STOP_QUEUE_TIMEOUT:?}"
                );
                return;
            }
            match self.shared.idle.wait_timeout(busy, left) {
                Ok((b, _)) => busy = b,
                Err(_) => return,
            }
        }
    }

    /// Tells the GPU thread the connection ended and waits until it has reset the device.
    pub fn disconnect(&self) -> Result<(), BackendError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Request::Disconnect(tx))?;
        rx.recv().map_err(|_| BackendError::GpuThreadGone)
    }
}

/// How long the GPU thread may stay in one command (or one request) before the watchdog ends
/// the process: a renderer that never returns (a guest shader that loops forever on llvmpipe)
/// would otherwise leave the frontend waiting on every GET_VRING_BASE and the daemon serving
/// nobody.
pub const WATCHDOG_TIMEOUT: Duration = Duration::from_secs(60);

/// Watches the GPU thread: while it is busy, `shared.progress` must move at least once per
/// `timeout`; otherwise logs and runs `fatal`. Stops when the thread has ended.
fn start_watchdog(shared: Arc<Shared>, timeout: Duration, fatal: fn()) -> Result<(), BackendError> {
    let tick = (timeout / 4).max(Duration::from_millis(1));
    std::thread::Builder::new()
        .name("gpu-watchdog".into())
        .spawn(move || {
            let mut seen = shared.progress.load(Ordering::Relaxed);
            let mut since = Instant::now();
            while !shared.ended.load(Ordering::SeqCst) {
                std::thread::sleep(tick);
                let now = shared.progress.load(Ordering::Relaxed);
                let busy = shared.busy.lock().map(|b| *b).unwrap_or(false);
                if now != seen || !busy {
                    seen = now;
                    since = Instant::now();
                } else if since.elapsed() >= timeout {
                    log::error!(
                        "the GPU thread has been in one command for {:?} (the renderer does not \
                         return): exiting, so that the frontend sees a disconnect",
                        since.elapsed()
                    );
                    fatal();
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(BackendError::SpawnThread)
}

/// Exit status of the daemon after a panic on the GPU thread (EX_SOFTWARE).
pub const EXIT_GPU_PANIC: i32 = 70;

/// Ends the process at once with [`EXIT_GPU_PANIC`]: `_exit`, as other threads may be inside
/// the renderer library, whose `atexit` handlers must not run under them.
pub fn exit_after_gpu_panic() {
    // SAFETY: _exit ends the process; it takes no pointers.
    unsafe { libc::_exit(EXIT_GPU_PANIC) };
}

/// The running GPU thread: its client and its join handle.
#[derive(Debug)]
pub struct GpuThreadHandle {
    client: Arc<GpuThreadClient>,
    join: Option<JoinHandle<()>>,
}

impl GpuThreadHandle {
    /// Starts the GPU thread. `factory` runs on the new thread and creates the device (and so
    /// the renderer) there; this returns once it did, with its error if it failed.
    ///
    /// A panic on the GPU thread ends the process ([`exit_after_gpu_panic`]): a device that no
    /// longer answers would leave the guest waiting forever and stall the frontend on every
    /// GET_VRING_BASE; an exit is a disconnect the frontend sees.
    pub fn spawn<D, F>(factory: F, num_scanouts: u32, headless: bool) -> Result<Self, BackendError>
    where
        D: GpuDevice + 'static,
        F: FnOnce() -> Result<D, String> + Send + 'static,
    {
        Self::spawn_with_fatal(
            factory,
            num_scanouts,
            headless,
            exit_after_gpu_panic,
            WATCHDOG_TIMEOUT,
        )
    }

    /// Like [`spawn`](Self::spawn), with `fatal` run (after logging) instead of the process
    /// exit when the thread panics or stays in one command longer than `watchdog`.
    pub fn spawn_with_fatal<D, F>(
        factory: F,
        num_scanouts: u32,
        headless: bool,
        fatal: fn(),
        watchdog: Duration,
    ) -> Result<Self, BackendError>
    where
        D: GpuDevice + 'static,
        F: FnOnce() -> Result<D, String> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let wake = EventFd::new(EFD_NONBLOCK).map_err(BackendError::EventFd)?;
        let thread_wake = wake.try_clone().map_err(BackendError::EventFd)?;
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let (init_tx, init_rx) = mpsc::sync_channel(1);
        let join = std::thread::Builder::new()
            .name("gpu".into())
            .spawn(move || {
                let device = match factory() {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = init_tx.send(Err(BackendError::DeviceInit(e)));
                        return;
                    }
                };
                let display = if headless {
                    DisplayPeer::Headless(HeadlessDisplay)
                } else {
                    DisplayPeer::Socket(Box::new(GpuSocketDisplay::new(num_scanouts)))
                };
                let mut thread =
                    match GpuThread::new(device, display, rx, thread_wake, thread_shared) {
                        Ok(t) => t,
                        Err(e) => {
                            let _ = init_tx.send(Err(e));
                            return;
                        }
                    };
                let info = (
                    thread.device.device_features(),
                    thread.device.config_space(),
                    thread.device.host_visible_size(),
                );
                if init_tx.send(Ok(info)).is_err() {
                    return;
                }
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| thread.run()));
                thread.shared.ended.store(true, Ordering::SeqCst);
                if let Err(payload) = run {
                    let what = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".to_owned());
                    log::error!(
                        "the GPU thread panicked ({what}): exiting, so that the frontend sees a \
                         disconnect instead of a device that never answers"
                    );
                    fatal();
                }
            })
            .map_err(BackendError::SpawnThread)?;
        let (features, config, host_visible_size) = match init_rx.recv() {
            Ok(Ok(info)) => {
                start_watchdog(shared.clone(), watchdog, fatal)?;
                info
            }
            Ok(Err(e)) => {
                let _ = join.join();
                return Err(e);
            }
            Err(_) => {
                let _ = join.join();
                return Err(BackendError::GpuThreadGone);
            }
        };
        Ok(GpuThreadHandle {
            client: Arc::new(GpuThreadClient {
                tx,
                wake,
                shared,
                features,
                config,
                host_visible_size,
            }),
            join: Some(join),
        })
    }

    /// The client to give to the vhost-user backend.
    pub fn client(&self) -> Arc<GpuThreadClient> {
        self.client.clone()
    }
}

impl Drop for GpuThreadHandle {
    fn drop(&mut self) {
        if self.client.send(Request::Shutdown).is_ok() {
            if let Some(join) = self.join.take() {
                if join.join().is_err() {
                    log::error!("the GPU thread panicked");
                }
            }
        }
    }
}

/// Who gets the device's pictures.
enum DisplayPeer {
    /// `--headless`: display sockets are refused.
    Headless(HeadlessDisplay),
    /// QEMU's display socket, once the frontend handed it over.
    Socket(Box<GpuSocketDisplay>),
}

impl DisplayPeer {
    fn as_dyn(&mut self) -> &mut dyn Display {
        match self {
            DisplayPeer::Headless(d) => d,
            DisplayPeer::Socket(d) => d.as_mut(),
        }
    }
}

/// epoll token of the wake-up eventfd.
const TOKEN_WAKE: u64 = 0;
/// epoll token of the renderer's fence poll fd.
const TOKEN_FENCE: u64 = 1;
/// epoll token of queue 0's kick eventfd; queue `q` has `TOKEN_KICK + q`.
const TOKEN_KICK: u64 = 2;

/// The state owned by the GPU thread.
struct GpuThread<D: GpuDevice> {
    device: D,
    display: DisplayPeer,
    rx: Receiver<Request>,
    wake: EventFd,
    epoll: Epoll,
    shared: Arc<Shared>,
    /// The current connection's vrings (shared, so that a queue run holds them cheaply).
    vrings: Option<Arc<[GpuVring]>>,
    /// The current connection's kick eventfds, in this thread's epoll (token `TOKEN_KICK + q`).
    kick_fds: [Option<File>; NUM_QUEUES],
    /// The current connection's guest memory.
    mem: Option<GuestMemory>,
    /// Queues kicked since the last batch.
    kicked: [bool; NUM_QUEUES],
    /// Whether the wake-up eventfd was readable at the last `epoll_wait`.
    woken: bool,
    /// Answers that could not be published because their queue was stopped; published when
    /// it runs again, dropped on reset.
    deferred: Vec<UsedEntry>,
    /// Requests taken from the channel during a queue run that must wait for the end of the
    /// run (a reset, a disconnect, a shutdown, and everything after one, in order); handled
    /// first at the next wake-up.
    pending: VecDeque<Request>,
    /// Rate limit of the log lines a guest can trigger here.
    guest_log: LogLimiter,
    /// How long to poll for new work before sleeping.
    poll: AdaptivePoll,
    /// Whether the answers ready before a RESOURCE_FLUSH go out before it runs.
    early: CpuSharing,
    /// Whether polling spins on the available rings between two looks at the epoll.
    poll_spin: CpuSharing,
    /// The spinning poll in progress, judged at the next wait.
    poll_spin_try: Option<cpu_sharing::Try>,
    /// Polling waits so far (one in [`POLL_SPIN_JUDGE_EVERY`] is judged).
    poll_waits: u32,
}

fn queue_index(kind: QueueKind) -> usize {
    match kind {
        QueueKind::Control => CONTROL_QUEUE,
        QueueKind::Cursor => CURSOR_QUEUE,
    }
}

fn queue_kind(index: usize) -> Option<QueueKind> {
    match index {
        CONTROL_QUEUE => Some(QueueKind::Control),
        CURSOR_QUEUE => Some(QueueKind::Cursor),
        _ => None,
    }
}

impl<D: GpuDevice> GpuThread<D> {
    fn new(
        device: D,
        display: DisplayPeer,
        rx: Receiver<Request>,
        wake: EventFd,
        shared: Arc<Shared>,
    ) -> Result<Self, BackendError> {
        let epoll = Epoll::new().map_err(BackendError::Epoll)?;
        epoll
            .ctl(
                ControlOperation::Add,
                wake.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_WAKE),
            )
            .map_err(BackendError::Epoll)?;
        if let Some(fd) = device.fence_poll_fd() {
            // Edge-triggered: a renderer that does not drain its fd in `poll_fences` must not
            // make this thread spin; every new completion is a new edge.
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd.as_raw_fd(),
                    EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, TOKEN_FENCE),
                )
                .map_err(BackendError::Epoll)?;
        }
        Ok(GpuThread {
            device,
            display,
            rx,
            wake,
            epoll,
            shared,
            vrings: None,
            kick_fds: [None, None],
            mem: None,
            kicked: [false; NUM_QUEUES],
            woken: false,
            deferred: Vec::new(),
            pending: VecDeque::new(),
            guest_log: LogLimiter::default(),
            poll: AdaptivePoll::new(Duration::ZERO),
            early: CpuSharing::new("early notification"),
            poll_spin: CpuSharing::new("polling spin"),
            poll_spin_try: None,
            poll_waits: 0,
        })
    }

    fn set_busy(&self, busy: bool) {
        self.shared.progress.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut b) = self.shared.busy.lock() {
            *b = busy;
        }
        if !busy {
            self.shared.idle.notify_all();
        }
    }

    /// Waits for events: polls for them first (epoll with no timeout and the queues' available
    /// indexes, yielding the CPU between two looks, so that a frontend thread on the same CPU
    /// runs) for the adaptive window, then sleeps. Polling reads a vring only under its lock and
    /// only while the queue runs, and changes nothing: to the vhost-user threads the GPU thread
    /// is idle (a queue stopped meanwhile is checked again before it is processed).
    fn wait(&mut self, events: &mut [EpollEvent]) -> io::Result<usize> {
        let max = Duration::from_micros(self.shared.poll_max_us.load(Ordering::Relaxed));
        self.poll.set_max(max);
        let window = self.poll.window();
        if max.is_zero() {
            return self.epoll.wait(-1, events);
        }
        let start = Instant::now();
        if !window.is_zero() {
            // Between two looks at the epoll, a short spin on the available rings where the
            // frontend seems to run on another CPU ([`cpu_sharing`]): its next chain is then
            // answered before the frontend's thread has gone to sleep. Where it seems to share
            // this CPU, the thread yields at once instead.
            // One wait in POLL_SPIN_JUDGE_EVERY is judged, from its start to the start of the
            // next: a system call between finding a chain and answering it, or between
            // answering and looking for the next, would make the answer late.
            if let Some(judge) = self.poll_spin_try.take() {
                self.poll_spin.record(judge.preempted());
            }
            let spin = self.poll_spin.try_alone();
            self.poll_waits = self.poll_waits.wrapping_add(1);
            if spin && self.poll_waits % POLL_SPIN_JUDGE_EVERY == 0 {
                self.poll_spin_try = Some(cpu_sharing::Try::begin());
            }
            let found = loop {
                let n = self.epoll.wait(0, events)?;
                // A chain made available is taken at once, before its kick arrives (the kick
                // then finds the queue processed).
                if n > 0 || self.posted_work() {
                    break Some(n);
                }
                if start.elapsed() >= window {
                    break None;
                }
                if spin && self.spin_for_posted_work(POLL_SPIN) {
                    break Some(0);
                }
                std::thread::yield_now();
            };
            if let Some(n) = found {
                self.poll.record(start.elapsed());
                self.shared.polled_wakeups.fetch_add(1, Ordering::Relaxed);
                return Ok(n);
            }
        }
        let n = self.epoll.wait(-1, events)?;
        self.poll.record(start.elapsed());
        Ok(n)
    }

    /// Looks at the available rings for at most `time` without a system call; whether a
    /// queue has chains to take (marked as kicked).
    fn spin_for_posted_work(&mut self, time: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.posted_work() {
                return true;
            }
            if start.elapsed() >= time {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Marks as kicked every running queue whose driver made chains available that this
    /// thread has not taken yet; whether there was one.
    fn posted_work(&mut self) -> bool {
        let (Some(vrings), Some(mem)) = (&self.vrings, &self.mem) else {
            return false;
        };
        let guest = mem.memory();
        let mut found = false;
        for (queue, vring) in vrings.iter().enumerate().take(NUM_QUEUES) {
            let state = vring.get_ref();
            let q = state.get_queue();
            if !(q.ready() && state.is_enabled()) {
                continue;
            }
            // The driver's index is read like the queue's own iterator reads it (acquire), so
            // the chains it announces are visible when the queue is processed. An index more
            // than a ring ahead is refused by the queue's iterator and stays so until the guest
            // changes it: it is left to the kicks, or polling would take it again and again.
            if let Ok(avail) = q.avail_idx(&*guest, Ordering::Acquire) {
                let pending = avail.0.wrapping_sub(q.next_avail());
                if pending != 0 && pending <= q.size() {
                    if let Some(k) = self.kicked.get_mut(queue) {
                        *k = true;
                        found = true;
                    }
                }
            }
        }
        found
    }

    fn run(&mut self) {
        let mut events = [EpollEvent::default(); 8];
        loop {
            match self.wait(&mut events) {
                Ok(n) => {
                    for event in events.iter().take(n) {
                        match event.data() {
                            TOKEN_WAKE => self.woken = true,
                            token => self.take_kick(token),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("GPU thread: epoll_wait failed: {e}; stopping");
                    return;
                }
            }
            self.set_busy(true);
            let keep_going = self.run_once();
            self.set_busy(false);
            if !keep_going {
                return;
            }
        }
    }

    /// Consumes a kick of the queue whose epoll token is `token` (other tokens: nothing).
    fn take_kick(&mut self, token: u64) {
        let Some(queue) = token
            .checked_sub(TOKEN_KICK)
            .and_then(|q| usize::try_from(q).ok())
            .filter(|&q| q < NUM_QUEUES)
        else {
            return;
        };
        if let Some(fd) = &self.kick_fds[queue] {
            // epoll said readable and only this thread reads the eventfd: the read does not
            // block. It resets the counter, so the level-triggered fd goes quiet.
            let mut count = [0u8; 8];
            if let Err(e) = (&*fd).read(&mut count) {
                log::debug!("queue {queue}: kick fd read: {e}");
            }
            self.kicked[queue] = true;
        }
    }

    /// Installs the queue's new kick eventfd in the epoll (closing the old one), or only closes
    /// the old one. A queue with a new kick fd is processed once: a kick may have come first.
    fn set_kick_fd(&mut self, queue: usize, fd: Option<File>) {
        let Some(slot) = self.kick_fds.get_mut(queue) else {
            log::warn!("GPU thread: kick fd for queue {queue} ignored");
            return;
        };
        if let Some(old) = slot.take() {
            if let Err(e) = self.epoll.ctl(
                ControlOperation::Delete,
                old.as_raw_fd(),
                EpollEvent::default(),
            ) {
                log::warn!("queue {queue}: cannot remove the old kick fd: {e}");
            }
        }
        let Some(fd) = fd else {
            return;
        };
        // queue < NUM_QUEUES.
        let token = TOKEN_KICK + queue as u64;
        match self.epoll.ctl(
            ControlOperation::Add,
            fd.as_raw_fd(),
            EpollEvent::new(EventSet::IN, token),
        ) {
            Ok(()) => {
                *slot = Some(fd);
                self.kicked[queue] = true;
            }
            Err(e) => log::warn!("queue {queue}: cannot wait on the kick fd: {e}"),
        }
    }

    /// Closes every kick fd of the connection.
    fn drop_kick_fds(&mut self) {
        for queue in 0..NUM_QUEUES {
            self.set_kick_fd(queue, None);
        }
    }

    /// One wake-up: requests, queues, fences. Returns false on shutdown.
    fn run_once(&mut self) -> bool {
        // Only when it was readable (a kick or fence wake-up costs no extra syscall); the
        // channel is drained below in any case.
        if std::mem::take(&mut self.woken) {
            let _ = self.wake.read();
        }
        while let Some(request) = self.pending.pop_front() {
            if matches!(request, Request::Shutdown) {
                return false;
            }
            self.handle_request(request);
        }
        loop {
            match self.rx.try_recv() {
                Ok(Request::Shutdown) | Err(TryRecvError::Disconnected) => return false,
                Ok(request) => self.handle_request(request),
                Err(TryRecvError::Empty) => break,
            }
        }
        for queue in 0..NUM_QUEUES {
            if std::mem::take(&mut self.kicked[queue]) {
                self.process_queue(queue);
            }
        }
        let done = self.device.poll_fences();
        self.publish(done);
        if !self.pending.is_empty() || self.kicked.iter().any(|&k| k) {
            // Taken from the channel during the queue runs (their own wake-ups may already
            // have been consumed): come back for them at once.
            if let Err(e) = self.wake.write(1) {
                log::warn!("GPU thread: cannot wake itself: {e}");
            }
        }
        true
    }

    fn handle_request(&mut self, request: Request) {
        log::trace!("GPU thread: {request:?}");
        match request {
            Request::Kick { queue } => match self.kicked.get_mut(queue) {
                Some(k) => *k = true,
                None => log::warn!("GPU thread: kick for queue {queue} ignored"),
            },
            Request::Vrings(vrings) => {
                if vrings.len() == NUM_QUEUES {
                    self.drop_kick_fds();
                    self.vrings = Some(vrings.into());
                } else {
                    log::warn!("GPU thread: {} vrings ignored", vrings.len());
                }
            }
            Request::KickFd { queue, fd } => self.set_kick_fd(queue, fd),
            Request::Memory(mem) => self.mem = Some(mem),
            Request::GpuSocket(socket) => match &mut self.display {
                DisplayPeer::Headless(_) => {
                    log::info!("--headless: ignoring the frontend's display socket");
                }
                DisplayPeer::Socket(d) => d.set_socket(socket),
            },
            Request::BackendReq(backend) => {
                log::info!("backend-request channel: blob mapping through SHMEM_MAP");
                self.device
                    .set_shared_memory(Some(Box::new(BackendShmemMapper::new(backend))));
            }
            Request::AckedFeatures(features) => self.device.set_acked_features(features),
            Request::ResetDevice => {
                log::info!("device reset requested by the frontend");
                self.reset_device();
            }
            Request::Disconnect(ack) => {
                // The frontend and its region are gone: forget the mappings, do not ask it.
                self.device.set_shared_memory(None);
                self.reset_device();
                self.vrings = None;
                self.drop_kick_fds();
                self.mem = None;
                self.kicked = [false; NUM_QUEUES];
                if let DisplayPeer::Socket(d) = &mut self.display {
                    **d = GpuSocketDisplay::new(d.num_scanouts());
                }
                self.shared.control_stopped.store(false, Ordering::SeqCst);
                let _ = ack.send(());
            }
            Request::Shutdown => {}
        }
    }

    /// Handles the requests that arrived while a queue was being run, before the chains just
    /// popped from it are processed.
    ///
    /// A frontend that got its answer to a request (e.g. VHOST_USER_GPU_SET_SOCKET with
    /// REPLY_ACK) expects every later guest command to see its effect. The request reached
    /// this channel before the answer was sent, and so before the guest's next chain was made
    /// available; but the GPU thread may still be in the run that pops that chain (the loop in
    /// [`GpuThread::process_queue`] goes on while the ring has more). Handling the channel after
    /// each pop and before the chains run closes that window. Requests that must not happen
    /// in the middle of a run (reset, disconnect, shutdown) stop this, and they and everything
    /// after them wait in `pending`, in order, for the end of the run.
    fn absorb_requests(&mut self) {
        if !self.pending.is_empty() {
            return;
        }
        while let Ok(request) = self.rx.try_recv() {
            if request.fits_between_batches() {
                self.handle_request(request);
            } else {
                self.pending.push_back(request);
                return;
            }
        }
    }

    fn reset_device(&mut self) {
        self.device.reset();
        self.deferred.clear();
    }

    /// Whether the queue may be used now: started (ready) and enabled.
    fn queue_running(vring: &GpuVring) -> bool {
        let state = vring.get_ref();
        state.get_queue().ready() && state.is_enabled()
    }

    /// The control queue was stopped and runs again: if it restarts from avail index 0, the
    /// driver set the ring up anew, i.e. the guest reset the device (QEMU stops the queues both
    /// for a guest reset and for a VM pause, and tells the backend nothing else; after a pause
    /// the ring continues where it stopped). Then the old guest state goes.
    fn check_guest_reset(&mut self, vring: &GpuVring) {
        if !self.shared.control_stopped.swap(false, Ordering::SeqCst) {
            return;
        }
        let next_avail = vring.get_ref().get_queue().next_avail();
        if next_avail == 0 {
            log::info!("control queue restarted from index 0: guest reset, dropping its state");
            self.reset_device();
        } else {
            log::info!("control queue resumed at index {next_avail}: keeping the device state");
        }
    }

    fn process_queue(&mut self, queue: usize) {
        let (Some(vrings), Some(mem)) = (self.vrings.clone(), self.mem.clone()) else {
            log::debug!("queue {queue} kicked before the memory table, ignored");
            return;
        };
        let (Some(vring), Some(kind)) = (vrings.get(queue), queue_kind(queue)) else {
            return;
        };
        if !Self::queue_running(vring) {
            return;
        }
        if queue == CONTROL_QUEUE {
            self.check_guest_reset(vring);
        }
        // Answers held back while the queue was stopped go first.
        let held = std::mem::take(&mut self.deferred);
        self.publish(held);
        loop {
            let chains: Vec<GuestChain> = {
                let mut state = vring.get_mut();
                if !(state.get_queue().ready() && state.is_enabled()) {
                    return;
                }
                let guest = mem.memory();
                if let Err(e) = state.get_queue_mut().disable_notification(&*guest) {
                    log::warn!("queue {queue}: cannot disable notifications: {e}");
                }
                match state.get_queue_mut().iter(mem.memory()) {
                    Ok(iter) => iter.collect(),
                    Err(e) => {
                        // The guest chose the available index: its repeats are rate limited.
                        if let Some(dropped) = self.guest_log.allow() {
                            log::warn!(
                                "queue {queue}: cannot read the available ring: {e}{}",
                                suppressed_note(dropped)
                            );
                        }
                        return;
                    }
                }
            };
            // What the frontend had set up before these chains were made available (a new
            // display socket) must be in effect for them.
            self.absorb_requests();
            // The vring lock is not held while commands run: a command may wait for the
            // display, and the frontend may need the lock meanwhile (e.g. to stop the queue).
            let mut used = Vec::with_capacity(chains.len());
            for chain in chains {
                // The answers ready so far may go out before a flush sends its pixels to the
                // display: a driver waiting on them (the transfer that filled the resource)
                // wakes while the flush runs instead of after it, where its thread runs on
                // another CPU ([`cpu_sharing`] judges that). Everything else in a batch still
                // gets one notification at its end (per-command notifications cost churn 0.91x
                // on one CPU).
                let judge = if !used.is_empty()
                    && protocol::peek_command_type(&chain)
                        == Some(protocol::VIRTIO_GPU_CMD_RESOURCE_FLUSH)
                    && self.early.try_alone()
                {
                    let judge = cpu_sharing::Try::begin();
                    let ready = std::mem::take(&mut used);
                    self.publish(ready);
                    Some(judge)
                } else {
                    None
                };
                if let Some(entry) = self
                    .device
                    .process_chain(kind, chain, self.display.as_dyn())
                {
                    used.push(entry);
                }
                if let Some(judge) = judge {
                    self.early.record(judge.preempted());
                }
                self.shared.progress.fetch_add(1, Ordering::Relaxed);
            }
            self.publish(used);
            let more = {
                let mut state = vring.get_mut();
                let guest = mem.memory();
                state.get_queue_mut().enable_notification(&*guest)
            };
            match more {
                Ok(true) => continue,
                Ok(false) => return,
                Err(e) => {
                    log::warn!("queue {queue}: cannot enable notifications: {e}");
                    return;
                }
            }
        }
    }

    /// Puts answers into their used rings and notifies the driver (honouring EVENT_IDX).
    /// Answers for a queue that is stopped now are kept for when it runs again.
    fn publish(&mut self, entries: Vec<UsedEntry>) {
        if entries.is_empty() {
            return;
        }
        let Some(vrings) = self.vrings.clone() else {
            log::debug!("{} answers without a connection, dropped", entries.len());
            return;
        };
        let mut touched = [false; NUM_QUEUES];
        for entry in entries {
            let index = queue_index(entry.queue);
            let Some(vring) = vrings.get(index) else {
                continue;
            };
            if !Self::queue_running(vring) {
                self.deferred.push(entry);
                continue;
            }
            match vring.add_used(entry.head_index, entry.len) {
                Ok(()) => touched[index] = true,
                Err(e) => log::warn!(
                    "queue {index}: cannot publish descriptor {}: {e}",
                    entry.head_index
                ),
            }
        }
        for (index, vring) in vrings.iter().enumerate() {
            if !touched.get(index).copied().unwrap_or(false) {
                continue;
            }
            // Without EVENT_IDX needs_notification() is always true.
            let notify = vring.needs_notification().unwrap_or(true);
            if notify {
                if let Err(e) = vring.signal_used_queue() {
                    log::warn!("queue {index}: cannot signal the driver: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc::Receiver;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::desc::RawDescriptor;
    use vm_memory::{Bytes, GuestAddress};

    const QUEUE_SIZE: u16 = 16;
    /// Bytes the mock device "writes" per answer.
    const ANSWER_LEN: u32 = 24;
    /// Where the control and cursor rings live in guest memory.
    const RING_BASE: [u64; NUM_QUEUES] = [0x0, 0x4000];
    /// Where the chains' buffers live.
    const BUFFERS: u64 = 0x10_0000;
    const WAIT: Duration = Duration::from_secs(10);

    /// What the mock device tells the test.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Chain(QueueKind, u16),
        Reset,
        /// A shared-memory mapper was installed (removals are not reported).
        Mapper,
    }

    /// A device that answers every chain with ANSWER_LEN bytes, or holds the answers until its
    /// fence eventfd is written (when `hold` is set).
    struct MockDevice {
        seen: Sender<Seen>,
        hold: Arc<AtomicBool>,
        fence: EventFd,
        held: Vec<UsedEntry>,
        /// When set, the next chain waits (after reporting itself) until the test sends on it.
        gate: Arc<Mutex<Option<Receiver<()>>>>,
    }

    impl GpuDevice for MockDevice {
        fn device_features(&self) -> u64 {
            1 << 1
        }
        fn config_space(&self) -> Vec<u8> {
            vec![0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        }
        fn process_chain(
            &mut self,
            queue: QueueKind,
            chain: GuestChain,
            _display: &mut dyn Display,
        ) -> Option<UsedEntry> {
            let entry = UsedEntry {
                queue,
                head_index: chain.head_index(),
                len: ANSWER_LEN,
            };
            let _ = self.seen.send(Seen::Chain(queue, chain.head_index()));
            let gate = self.gate.lock().unwrap().take();
            if let Some(gate) = gate {
                let _ = gate.recv_timeout(WAIT);
            }
            if self.hold.load(Ordering::SeqCst) {
                self.held.push(entry);
                None
            } else {
                Some(entry)
            }
        }
        fn fence_poll_fd(&self) -> Option<BorrowedFd<'_>> {
            // SAFETY: the eventfd is owned by `self`, which outlives the returned borrow.
            Some(unsafe { BorrowedFd::borrow_raw(self.fence.as_raw_fd()) })
        }
        fn poll_fences(&mut self) -> Vec<UsedEntry> {
            match self.fence.read() {
                Ok(_) => std::mem::take(&mut self.held),
                Err(_) => Vec::new(),
            }
        }
        fn reset(&mut self) {
            self.held.clear();
            let _ = self.seen.send(Seen::Reset);
        }
        fn set_shared_memory(&mut self, mapper: Option<Box<dyn SharedMemoryMapper>>) {
            if mapper.is_some() {
                let _ = self.seen.send(Seen::Mapper);
            }
        }
    }

    struct Rig {
        handle: GpuThreadHandle,
        /// The GPU thread's `/proc/thread-self` ("PID/task/TID").
        gpu_thread: std::path::PathBuf,
        client: Arc<GpuThreadClient>,
        seen: Receiver<Seen>,
        hold: Arc<AtomicBool>,
        fence: EventFd,
        gate: Arc<Mutex<Option<Receiver<()>>>>,
        mem: GuestMemory,
        vrings: Vec<GpuVring>,
        calls: Vec<EventFd>,
        /// Next free descriptor per queue.
        next_desc: [AtomicUsize; NUM_QUEUES],
        /// (descriptor table, avail ring, used ring) of each queue.
        rings: [(u64, u64, u64); NUM_QUEUES],
    }

    impl Rig {
        fn new() -> Rig {
            let (seen_tx, seen) = mpsc::channel();
            let hold = Arc::new(AtomicBool::new(false));
            let fence = EventFd::new(EFD_NONBLOCK).unwrap();
            let device_fence = fence.try_clone().unwrap();
            let device_hold = hold.clone();
            let gate = Arc::new(Mutex::new(None));
            let device_gate = gate.clone();
            let (tid_tx, tid_rx) = mpsc::channel();
            let handle = GpuThreadHandle::spawn(
                move || {
                    let _ = tid_tx.send(std::fs::read_link("/proc/thread-self").unwrap());
                    Ok(MockDevice {
                        seen: seen_tx,
                        hold: device_hold,
                        fence: device_fence,
                        held: Vec::new(),
                        gate: device_gate,
                    })
                },
                1,
                true,
            )
            .unwrap();
            let gpu_thread = tid_rx.recv().unwrap();
            let client = handle.client();
            let mem = GuestMemoryAtomic::new(
                GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap(),
            );
            let mut vrings = Vec::new();
            let mut calls = Vec::new();
            let mut rings = [(0, 0, 0); NUM_QUEUES];
            for (q, base) in RING_BASE.into_iter().enumerate() {
                // Descriptor table, avail ring, used ring; guest memory starts zeroed.
                rings[q] = (base, base + 0x100, base + 0x200);
                let vring = GpuVring::new(mem.clone(), QUEUE_SIZE).unwrap();
                vring.set_queue_size(QUEUE_SIZE);
                vring
                    .set_queue_info(rings[q].0, rings[q].1, rings[q].2)
                    .unwrap();
                vring.set_queue_ready(true);
                vring.set_enabled(true);
                let call = EventFd::new(EFD_NONBLOCK).unwrap();
                let theirs = call.try_clone().unwrap();
                // SAFETY: `into_raw_fd` hands over the sole ownership of a fresh descriptor.
                vring.set_call(Some(unsafe { File::from_raw_fd(theirs.into_raw_fd()) }));
                vrings.push(vring);
                calls.push(call);
            }
            assert_eq!(client.device_features(), 1 << 1);
            assert_eq!(client.config_space()[8], 1);
            client.send(Request::Memory(mem.clone())).unwrap();
            for (q, v) in vrings.iter().enumerate() {
                v.attach(q, client.clone());
            }
            client.send(Request::Vrings(vrings.clone())).unwrap();
            Rig {
                handle,
                gpu_thread,
                client,
                seen,
                hold,
                fence,
                gate,
                mem,
                vrings,
                calls,
                next_desc: [AtomicUsize::new(0), AtomicUsize::new(0)],
                rings,
            }
        }

        /// Makes `n` one-descriptor chains available on `queue`; returns their heads.
        fn add_chains(&self, queue: usize, n: usize) -> Vec<u16> {
            let guest = self.mem.memory();
            let (desc, avail, _) = self.rings[queue];
            let first = self.next_desc[queue].fetch_add(n, Ordering::SeqCst);
            let mut idx: u16 = guest.read_obj(GuestAddress(avail + 2)).unwrap();
            for head in first..first + n {
                let d = RawDescriptor::from(SplitDescriptor::new(
                    BUFFERS + (head as u64) * 0x100,
                    0x100,
                    virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16,
                    0,
                ));
                let slot = (head % usize::from(QUEUE_SIZE)) as u64;
                guest.write_obj(d, GuestAddress(desc + 16 * slot)).unwrap();
                let ring_slot = u64::from(idx % QUEUE_SIZE);
                guest
                    .write_obj(slot as u16, GuestAddress(avail + 4 + 2 * ring_slot))
                    .unwrap();
                idx = idx.wrapping_add(1);
            }
            guest.write_obj(idx, GuestAddress(avail + 2)).unwrap();
            (first..first + n)
                .map(|h| (h % usize::from(QUEUE_SIZE)) as u16)
                .collect()
        }

        fn kick(&self, queue: usize) {
            self.client.send(Request::Kick { queue }).unwrap();
        }

        /// The used ring of `queue`: (idx, [(id, len)]).
        fn used(&self, queue: usize) -> (u16, Vec<(u32, u32)>) {
            let guest = self.mem.memory();
            let (_, _, used) = self.rings[queue];
            let idx: u16 = guest.read_obj(GuestAddress(used + 2)).unwrap();
            let entries = (0..idx)
                .map(|i| {
                    let at = used + 4 + 8 * u64::from(i % QUEUE_SIZE);
                    let id: u32 = guest.read_obj(GuestAddress(at)).unwrap();
                    let len: u32 = guest.read_obj(GuestAddress(at + 4)).unwrap();
                    (id, len)
                })
                .collect();
            (idx, entries)
        }

        fn expect_seen(&self, what: Seen) {
            assert_eq!(self.seen.recv_timeout(WAIT).unwrap(), what);
        }

        /// Waits until the GPU thread finished its current batch.
        fn settle(&self) {
            self.client.quiesce(CURSOR_QUEUE);
        }

        /// Whether the driver of `queue` was notified since the last call.
        fn notified(&self, queue: usize) -> bool {
            self.calls[queue].read().is_ok()
        }
    }

    #[test]
    fn polling_finds_the_next_command_without_a_wake_up() {
        let rig = Rig::new();
        // Off: every command is a wake-up from sleep.
        for _ in 0..5 {
            rig.add_chains(CONTROL_QUEUE, 1);
            rig.kick(CONTROL_QUEUE);
            wait_notified(&rig, CONTROL_QUEUE);
        }
        rig.settle();
        assert_eq!(rig.client.polled_wakeups(), 0);
        // On, with a window far longer than this thread needs to answer and kick again: the
        // window grows (4 us, doubling) while the commands keep coming within 20 ms, and then
        // they are found by polling. A loaded machine can stall this thread past 20 ms now and
        // then, which starts the growth again: up to 2000 commands (a few ms each when idle).
        rig.client.set_poll_max(Duration::from_millis(20));
        let mut sent = 5u16;
        kick_until_polled(&rig, &mut sent, 10, 2005);
        assert!(
            rig.client.polled_wakeups() >= 10,
            "polling found {} of {} wake-ups",
            rig.client.polled_wakeups(),
            sent - 5
        );
        assert_eq!(rig.used(CONTROL_QUEUE).0, sent);
        // A kick's wake-up can come after its chain was already taken (the thread saw the
        // chain while finishing the previous one) and be found by polling a little later.
        std::thread::sleep(Duration::from_millis(50));
        let polled = rig.client.polled_wakeups();
        // Quiet for far longer than the window: the thread goes to sleep (it used at most the
        // 20 ms window, not the half second).
        let before = thread_cpu_ticks(&rig.gpu_thread);
        std::thread::sleep(Duration::from_millis(500));
        let spent = thread_cpu_ticks(&rig.gpu_thread) - before;
        assert!(
            spent < 10,
            "the idle GPU thread used {spent} clock ticks in 500 ms"
        );
        assert_eq!(rig.client.polled_wakeups(), polled);
        // Off again: the next commands wake it from sleep.
        rig.client.set_poll_max(Duration::ZERO);
        for _ in 0..5 {
            rig.add_chains(CONTROL_QUEUE, 1);
            rig.kick(CONTROL_QUEUE);
            wait_notified(&rig, CONTROL_QUEUE);
        }
        assert_eq!(rig.client.polled_wakeups(), polled);
        drop(rig.handle);
    }

    /// Sends kicked one-chain commands on the control queue, each waited for, until polling
    /// has found `polled` wake-ups in all or `sent` reaches `limit`.
    fn kick_until_polled(rig: &Rig, sent: &mut u16, polled: u64, limit: u16) {
        while *sent < limit && rig.client.polled_wakeups() < polled {
            rig.add_chains(CONTROL_QUEUE, 1);
            rig.kick(CONTROL_QUEUE);
            wait_notified(rig, CONTROL_QUEUE);
            *sent += 1;
        }
    }

    /// Whether the driver of `queue` is notified within `timeout`.
    fn notified_within(rig: &Rig, queue: usize, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: rig.calls[queue].as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        n == 1 && rig.notified(queue)
    }

    #[test]
    fn polling_takes_a_chain_made_available_before_its_kick() {
        let rig = Rig::new();
        rig.client.set_poll_max(Duration::from_millis(20));
        let mut sent = 0u16;
        let mut unkicked = 0;
        for _ in 0..50 {
            if unkicked >= 5 {
                break;
            }
            // Kicked commands in a row until polling finds two of them: the window has grown.
            let polled = rig.client.polled_wakeups();
            kick_until_polled(&rig, &mut sent, polled + 2, 4000);
            // Then a chain with no kick: polling looks at the available ring and takes it. A
            // loaded machine may stall this thread past the window, and the GPU thread sleeps:
            // then the kick comes after all, and the window grows again.
            rig.add_chains(CONTROL_QUEUE, 1);
            sent += 1;
            if notified_within(&rig, CONTROL_QUEUE, Duration::from_millis(200)) {
                unkicked += 1;
            } else {
                rig.kick(CONTROL_QUEUE);
                wait_notified(&rig, CONTROL_QUEUE);
            }
        }
        assert!(
            unkicked >= 5,
            "polling took {unkicked} chains without their kick"
        );
        assert_eq!(rig.used(CONTROL_QUEUE).0, sent);
        drop(rig.handle);
    }

    #[test]
    fn a_bogus_available_index_does_not_keep_polling_busy() {
        let rig = Rig::new();
        rig.client.set_poll_max(Duration::from_millis(20));
        // Polling on: the window has grown.
        let mut sent = 0u16;
        kick_until_polled(&rig, &mut sent, 3, 4000);
        // The guest sets its available index more than a ring ahead and never kicks: the
        // queue's iterator refuses it, and polling must not take it again and again.
        {
            let guest = rig.mem.memory();
            let (_, avail, _) = rig.rings[CONTROL_QUEUE];
            let idx = sent.wrapping_add(QUEUE_SIZE + 5);
            guest.write_obj(idx, GuestAddress(avail + 2)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let before = thread_cpu_ticks(&rig.gpu_thread);
        std::thread::sleep(Duration::from_millis(500));
        let spent = thread_cpu_ticks(&rig.gpu_thread) - before;
        assert!(
            spent < 10,
            "the GPU thread used {spent} clock ticks in 500 ms"
        );
        assert_eq!(rig.used(CONTROL_QUEUE).0, sent);
        drop(rig.handle);
    }

    /// User + system CPU time of a thread of this process (`/proc/thread-self` as it read it),
    /// in clock ticks.
    fn thread_cpu_ticks(thread: &std::path::Path) -> u64 {
        let stat = std::fs::read_to_string(std::path::Path::new("/proc").join(thread).join("stat"))
            .unwrap();
        // Fields after the command name (which ends with the last ')'): utime and stime are
        // the 12th and 13th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Waits (at most WAIT) until the driver of `queue` is notified, and consumes it.
    fn wait_notified(rig: &Rig, queue: usize) {
        assert!(
            notified_within(rig, queue, WAIT),
            "queue {queue}: the driver was not notified"
        );
    }

    #[test]
    fn chains_are_processed_and_published() {
        let rig = Rig::new();
        let heads = rig.add_chains(CONTROL_QUEUE, 3);
        rig.kick(CONTROL_QUEUE);
        for h in &heads {
            rig.expect_seen(Seen::Chain(QueueKind::Control, *h));
        }
        wait_notified(&rig, CONTROL_QUEUE);
        rig.settle();
        let (idx, entries) = rig.used(CONTROL_QUEUE);
        assert_eq!(idx, 3);
        assert_eq!(
            entries,
            heads
                .iter()
                .map(|&h| (u32::from(h), ANSWER_LEN))
                .collect::<Vec<_>>()
        );
        // The cursor queue is separate.
        let c = rig.add_chains(CURSOR_QUEUE, 1);
        rig.kick(CURSOR_QUEUE);
        rig.expect_seen(Seen::Chain(QueueKind::Cursor, c[0]));
        wait_notified(&rig, CURSOR_QUEUE);
        assert_eq!(rig.used(CURSOR_QUEUE).0, 1);
        assert_eq!(rig.used(CONTROL_QUEUE).0, 3);
    }

    /// A vhost-user backend-request channel whose peer end is returned too.
    fn backend_channel() -> (Backend, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        (Backend::from_stream(ours), theirs)
    }

    /// Set by [`note_fatal`], the `fatal` action of the panic test.
    static FATAL: AtomicBool = AtomicBool::new(false);

    fn note_fatal() {
        FATAL.store(true, Ordering::SeqCst);
    }

    /// A device whose reset runs `reset` instead: a panic (what a bug on the GPU thread looks
    /// like) or a call that never returns (a renderer stuck in a guest's endless shader).
    struct FaultyDevice {
        reset: fn(),
    }

    impl GpuDevice for FaultyDevice {
        fn device_features(&self) -> u64 {
            0
        }
        fn config_space(&self) -> Vec<u8> {
            vec![0; 16]
        }
        fn process_chain(
            &mut self,
            _queue: QueueKind,
            _chain: GuestChain,
            _display: &mut dyn Display,
        ) -> Option<UsedEntry> {
            None
        }
        fn fence_poll_fd(&self) -> Option<BorrowedFd<'_>> {
            None
        }
        fn poll_fences(&mut self) -> Vec<UsedEntry> {
            Vec::new()
        }
        fn reset(&mut self) {
            (self.reset)()
        }
    }

    fn panic_in_reset() {
        panic!("a bug in reset");
    }

    fn never_return() {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    /// A panic on the GPU thread is not a silently dead device: it is logged and the fatal
    /// action (the process exit, in the daemon) runs.
    #[test]
    fn a_panic_on_the_gpu_thread_runs_the_fatal_action() {
        let handle = GpuThreadHandle::spawn_with_fatal(
            || {
                Ok(FaultyDevice {
                    reset: panic_in_reset,
                })
            },
            1,
            true,
            note_fatal,
            WAIT,
        )
        .unwrap();
        handle.client().send(Request::ResetDevice).unwrap();
        let deadline = Instant::now() + WAIT;
        while !FATAL.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "the panic did not reach the fatal action"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Set by [`note_hang`], the `fatal` action of the watchdog test.
    static HANG: AtomicBool = AtomicBool::new(false);

    fn note_hang() {
        HANG.store(true, Ordering::SeqCst);
    }

    /// The watchdog ends a GPU thread that stays in one command: the fatal action (the process
    /// exit, in the daemon) runs after the timeout, and not while the thread makes progress.
    #[test]
    fn the_watchdog_ends_a_gpu_thread_stuck_in_the_renderer() {
        let timeout = Duration::from_millis(300);
        let handle = GpuThreadHandle::spawn_with_fatal(
            || {
                Ok(FaultyDevice {
                    reset: never_return,
                })
            },
            1,
            true,
            note_hang,
            timeout,
        )
        .unwrap();
        // Idle: no verdict however long it sleeps.
        std::thread::sleep(timeout * 3);
        assert!(
            !HANG.load(Ordering::SeqCst),
            "the watchdog fired on an idle thread"
        );
        let start = Instant::now();
        handle.client().send(Request::ResetDevice).unwrap();
        while !HANG.load(Ordering::SeqCst) {
            assert!(start.elapsed() < WAIT, "the watchdog never fired");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            start.elapsed() >= timeout,
            "fired after {:?}",
            start.elapsed()
        );
        // The stuck thread cannot be joined: leave it (the daemon exits instead).
        std::mem::forget(handle);
    }

    /// A frontend that never answers SHMEM_MAP (with REPLY_ACK) cannot wedge the GPU thread:
    /// the map fails after the timeout, and later requests fail at once.
    #[test]
    fn an_unanswered_shmem_map_times_out_and_the_channel_is_given_up() {
        let (backend, _silent_frontend) = backend_channel();
        backend.set_reply_ack_flag(true);
        backend.set_shmem_flag(true);
        use std::os::fd::AsFd;
        let mut mapper = BackendShmemMapper::with_timeout(backend, Duration::from_millis(200));
        let file = File::open("/dev/null").unwrap();
        let start = Instant::now();
        let e = mapper
            .map(file.as_fd(), 0, 0, 4096, true)
            .expect_err("map without an answer");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        let start = Instant::now();
        assert!(mapper.map(file.as_fd(), 0, 0, 4096, true).is_err());
        assert!(mapper.unmap(0, 4096).is_err());
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "later requests waited"
        );
    }

    #[test]
    fn requests_sent_before_a_chain_is_available_take_effect_before_it() {
        // A frontend acks a request (SET_SOCKET, SET_BACKEND_REQ_FD) after it reached the
        // channel, then makes the next chain available, while the GPU thread may still be in
        // the run that pops that chain: the request must be in effect for the chain.
        let rig = Rig::new();
        let (release, gate) = mpsc::channel();
        *rig.gate.lock().unwrap() = Some(gate);
        let first = rig.add_chains(CONTROL_QUEUE, 1);
        rig.kick(CONTROL_QUEUE);
        rig.expect_seen(Seen::Chain(QueueKind::Control, first[0]));
        // The thread is inside the first chain. The frontend's request, then its next chain.
        let (backend, _peer) = backend_channel();
        rig.client.send(Request::BackendReq(backend)).unwrap();
        let second = rig.add_chains(CONTROL_QUEUE, 1);
        rig.kick(CONTROL_QUEUE);
        release.send(()).unwrap();
        rig.expect_seen(Seen::Mapper);
        rig.expect_seen(Seen::Chain(QueueKind::Control, second[0]));
        wait_notified(&rig, CONTROL_QUEUE);
        rig.settle();
        assert_eq!(rig.used(CONTROL_QUEUE).0, 2);
        assert!(rig.seen.try_recv().is_err());

        // A reset is never done in the middle of a run; it and what came after it keep their
        // order and follow the run.
        let (release, gate) = mpsc::channel();
        *rig.gate.lock().unwrap() = Some(gate);
        let third = rig.add_chains(CONTROL_QUEUE, 1);
        rig.kick(CONTROL_QUEUE);
        rig.expect_seen(Seen::Chain(QueueKind::Control, third[0]));
        rig.client.send(Request::ResetDevice).unwrap();
        let (backend, _peer2) = backend_channel();
        rig.client.send(Request::BackendReq(backend)).unwrap();
        let fourth = rig.add_chains(CONTROL_QUEUE, 1);
        release.send(()).unwrap();
        rig.expect_seen(Seen::Chain(QueueKind::Control, fourth[0]));
        rig.expect_seen(Seen::Reset);
        rig.expect_seen(Seen::Mapper);
        rig.settle();
        assert!(rig.seen.try_recv().is_err());
    }

    #[test]
    fn fenced_answers_wait_for_the_poll_fd() {
        let rig = Rig::new();
        rig.hold.store(true, Ordering::SeqCst);
        let heads = rig.add_chains(CONTROL_QUEUE, 2);
        rig.kick(CONTROL_QUEUE);
        for h in &heads {
            rig.expect_seen(Seen::Chain(QueueKind::Control, *h));
        }
        rig.settle();
        assert_eq!(rig.used(CONTROL_QUEUE).0, 0, "answered before the fence");
        assert!(!rig.notified(CONTROL_QUEUE));
        // The renderer's poll fd fires: the thread wakes on it alone and publishes.
        rig.fence.write(1).unwrap();
        wait_notified(&rig, CONTROL_QUEUE);
        rig.settle();
        assert_eq!(rig.used(CONTROL_QUEUE).0, 2);
    }

    #[test]
    fn a_stopped_queue_is_not_touched_and_its_answers_wait() {
        let rig = Rig::new();
        // Answers held by a fence when the queue stops are published once it runs again.
        rig.hold.store(true, Ordering::SeqCst);
        let first = rig.add_chains(CONTROL_QUEUE, 1);
        rig.kick(CONTROL_QUEUE);
        rig.expect_seen(Seen::Chain(QueueKind::Control, first[0]));
        rig.settle();
        rig.vrings[CONTROL_QUEUE].set_queue_ready(false);
        rig.client.quiesce(CONTROL_QUEUE);
        rig.hold.store(false, Ordering::SeqCst);
        rig.fence.write(1).unwrap();
        // New chains on the stopped queue are not processed.
        rig.add_chains(CONTROL_QUEUE, 1);
        rig.kick(CONTROL_QUEUE);
        let c = rig.add_chains(CURSOR_QUEUE, 1);
        rig.kick(CURSOR_QUEUE);
        rig.expect_seen(Seen::Chain(QueueKind::Cursor, c[0]));
        rig.settle();
        assert_eq!(rig.used(CONTROL_QUEUE).0, 0);
        assert!(!rig.notified(CONTROL_QUEUE));
        // Restart where it stopped (a VM resume): no reset, the held answer goes out first.
        rig.vrings[CONTROL_QUEUE].set_queue_ready(true);
        rig.kick(CONTROL_QUEUE);
        rig.expect_seen(Seen::Chain(QueueKind::Control, 1));
        wait_notified(&rig, CONTROL_QUEUE);
        rig.settle();
        let (idx, entries) = rig.used(CONTROL_QUEUE);
        assert_eq!(idx, 2);
        assert_eq!(entries, vec![(0, ANSWER_LEN), (1, ANSWER_LEN)]);
        assert!(rig.seen.try_recv().is_err(), "unexpected reset");
    }

    #[test]
    fn a_restart_from_index_zero_is_a_guest_reset() {
        let rig = Rig::new();
        rig.hold.store(true, Ordering::SeqCst);
        let h = rig.add_chains(CONTROL_QUEUE, 1);
        rig.kick(CONTROL_QUEUE);
        rig.expect_seen(Seen::Chain(QueueKind::Control, h[0]));
        rig.settle();
        rig.vrings[CONTROL_QUEUE].set_queue_ready(false);
        rig.client.quiesce(CONTROL_QUEUE);
        // The driver sets the ring up again: avail index 0.
        rig.vrings[CONTROL_QUEUE].set_queue_next_avail(0);
        rig.vrings[CONTROL_QUEUE].set_queue_ready(true);
        rig.hold.store(false, Ordering::SeqCst);
        rig.kick(CONTROL_QUEUE);
        rig.expect_seen(Seen::Reset);
        // The chain is seen again (the mock ring still holds it), the held answer was dropped.
        rig.expect_seen(Seen::Chain(QueueKind::Control, h[0]));
        rig.fence.write(1).unwrap();
        wait_notified(&rig, CONTROL_QUEUE);
        rig.settle();
        assert_eq!(rig.used(CONTROL_QUEUE).0, 1);
    }

    #[test]
    fn event_idx_suppresses_unwanted_notifications() {
        let rig = Rig::new();
        for v in &rig.vrings {
            v.set_queue_event_idx(true);
        }
        // used_event (after the avail ring) = 5: the driver wants a call only past entry 5.
        {
            let guest = rig.mem.memory();
            let (_, avail, _) = rig.rings[CONTROL_QUEUE];
            let used_event = avail + 4 + 2 * u64::from(QUEUE_SIZE);
            guest.write_obj(5u16, GuestAddress(used_event)).unwrap();
        }
        rig.add_chains(CONTROL_QUEUE, 1);
        rig.kick(CONTROL_QUEUE);
        rig.expect_seen(Seen::Chain(QueueKind::Control, 0));
        rig.settle();
        assert_eq!(rig.used(CONTROL_QUEUE).0, 1);
        assert!(!rig.notified(CONTROL_QUEUE), "notified against used_event");
        // Crossing used_event notifies.
        rig.add_chains(CONTROL_QUEUE, 5);
        rig.kick(CONTROL_QUEUE);
        for _ in 0..5 {
            assert!(matches!(rig.seen.recv_timeout(WAIT), Ok(Seen::Chain(..))));
        }
        rig.settle();
        wait_notified(&rig, CONTROL_QUEUE);
        rig.settle();
        assert_eq!(rig.used(CONTROL_QUEUE).0, 6);
    }

    /// A fresh eventfd and a `File` of the same eventfd (what SET_VRING_KICK hands over).
    fn kick_eventfd() -> (EventFd, File) {
        let ours = EventFd::new(EFD_NONBLOCK).unwrap();
        let theirs = ours.try_clone().unwrap();
        // SAFETY: `into_raw_fd` hands over the sole ownership of a fresh descriptor.
        (ours, unsafe { File::from_raw_fd(theirs.into_raw_fd()) })
    }

    #[test]
    fn the_gpu_thread_waits_on_the_kick_eventfds_itself() {
        let rig = Rig::new();
        let vring = &rig.vrings[CONTROL_QUEUE];
        // A stopped queue starts when it gets a kick fd (as with the library's own vrings),
        // and is looked at once: a chain made available before is processed without a kick.
        vring.set_queue_ready(false);
        let early = rig.add_chains(CONTROL_QUEUE, 1);
        let (kick, file) = kick_eventfd();
        vring.set_kick(Some(file));
        assert!(vring.get_ref().get_queue().ready());
        rig.expect_seen(Seen::Chain(QueueKind::Control, early[0]));
        wait_notified(&rig, CONTROL_QUEUE);
        // A write to the kick eventfd alone (no request) gets the next chains processed.
        let heads = rig.add_chains(CONTROL_QUEUE, 2);
        kick.write(1).unwrap();
        for h in &heads {
            rig.expect_seen(Seen::Chain(QueueKind::Control, *h));
        }
        wait_notified(&rig, CONTROL_QUEUE);
        rig.settle();
        assert_eq!(rig.used(CONTROL_QUEUE).0, 3);
        // The kick was consumed: no busy loop, nothing more happens.
        std::thread::sleep(Duration::from_millis(50));
        assert!(rig.seen.try_recv().is_err());

        // SET_VRING_KICK with a new eventfd replaces the old one: writes to the old one are
        // no longer seen, writes to the new one are.
        let (new_kick, new_file) = kick_eventfd();
        vring.set_kick(Some(new_file));
        rig.settle();
        std::thread::sleep(Duration::from_millis(20));
        let h = rig.add_chains(CONTROL_QUEUE, 1);
        kick.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(rig.seen.try_recv().is_err(), "old kick fd still watched");
        new_kick.write(1).unwrap();
        rig.expect_seen(Seen::Chain(QueueKind::Control, h[0]));
        wait_notified(&rig, CONTROL_QUEUE);

        // A stop (set_kick(None)) closes it: writes are no longer seen.
        vring.set_kick(None);
        rig.settle();
        std::thread::sleep(Duration::from_millis(20));
        rig.add_chains(CONTROL_QUEUE, 1);
        new_kick.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            rig.seen.try_recv().is_err(),
            "kick fd watched after the stop"
        );
        // The cursor queue's kick fd is its own.
        let (cursor_kick, cursor_file) = kick_eventfd();
        rig.vrings[CURSOR_QUEUE].set_kick(Some(cursor_file));
        rig.settle();
        let c = rig.add_chains(CURSOR_QUEUE, 1);
        cursor_kick.write(1).unwrap();
        rig.expect_seen(Seen::Chain(QueueKind::Cursor, c[0]));
        // A disconnect closes the kick fds.
        rig.client.disconnect().unwrap();
        rig.expect_seen(Seen::Reset);
        cursor_kick.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(rig.seen.try_recv().is_err());
    }

    #[test]
    fn disconnect_and_reset_device_reset_the_device() {
        let rig = Rig::new();
        rig.client.send(Request::ResetDevice).unwrap();
        rig.expect_seen(Seen::Reset);
        rig.client.disconnect().unwrap();
        rig.expect_seen(Seen::Reset);
        // After a disconnect the old vrings are forgotten: a kick without the new
        // connection's memory table is ignored.
        rig.add_chains(CONTROL_QUEUE, 1);
        rig.kick(CONTROL_QUEUE);
        let (tx, _rx) = mpsc::sync_channel(1);
        rig.client.send(Request::Disconnect(tx)).unwrap();
        rig.expect_seen(Seen::Reset);
        assert!(rig.seen.try_recv().is_err());
        assert_eq!(rig.used(CONTROL_QUEUE).0, 0);
        drop(rig.handle);
    }

    #[test]
    fn a_failing_factory_is_reported() {
        let r = GpuThreadHandle::spawn(|| Err::<MockDevice, _>("no GPU".to_string()), 1, false);
        match r {
            Err(BackendError::DeviceInit(m)) => assert_eq!(m, "no GPU"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
