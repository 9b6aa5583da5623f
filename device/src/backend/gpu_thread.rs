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
//! The thread sleeps in `epoll_wait` on two file descriptors: the wake-up eventfd and the
//! renderer's fence poll fd (when it has one). After every wake-up it drains the channel,
//! processes the queues that were kicked, then lets the renderer retire fences and publishes
//! the answers of the fenced commands. It never busy-waits.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost::vhost_user::GpuBackend;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::BackendError;
use crate::display::{Display, GpuSocketDisplay, HeadlessDisplay};
use crate::gpu::{QueueKind, UsedEntry, VirtioGpu};

/// Index of the control queue.
pub const CONTROL_QUEUE: usize = 0;
/// Index of the cursor queue.
pub const CURSOR_QUEUE: usize = 1;
/// Number of virtqueues of a virtio-gpu device.
pub const NUM_QUEUES: usize = 2;

/// How long `GET_VRING_BASE` (stop a queue) waits for the GPU thread to finish the batch it is
/// working on. QEMU closes the display socket before it stops the queues, so a batch waiting
/// for the display is released at once; the bound only guards against a renderer that hangs.
pub const STOP_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

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
}

/// What the vhost-user side asks of the GPU thread.
pub enum Request {
    /// A queue was kicked (or started): process it. Carries the connection's vrings.
    Kick {
        /// The queue index.
        queue: usize,
        /// All vrings of the connection.
        vrings: Vec<VringRwLock>,
    },
    /// The frontend's (new) memory table.
    Memory(GuestMemory),
    /// `VHOST_USER_GPU_SET_SOCKET`: the display socket, replacing any older one.
    GpuSocket(GpuBackend),
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
            Request::Kick { queue, .. } => write!(f, "Kick({queue})"),
            Request::Memory(_) => f.write_str("Memory"),
            Request::GpuSocket(_) => f.write_str("GpuSocket"),
            Request::ResetDevice => f.write_str("ResetDevice"),
            Request::Disconnect(_) => f.write_str("Disconnect"),
            Request::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// State shared between the GPU thread and the vhost-user threads.
#[derive(Debug, Default)]
struct Shared {
    /// Whether the GPU thread is between a wake-up and its next sleep (it may touch vrings).
    busy: Mutex<bool>,
    /// Signalled when `busy` becomes false.
    idle: Condvar,
    /// Set when the control queue was stopped (GET_VRING_BASE): the next time it runs, check
    /// whether the guest reset the device (see [`GpuThread::check_guest_reset`]).
    control_stopped: AtomicBool,
}

/// The handle the vhost-user side uses to talk to the GPU thread. `Send + Sync`.
#[derive(Debug)]
pub struct GpuThreadClient {
    tx: Sender<Request>,
    wake: EventFd,
    shared: Arc<Shared>,
    features: u64,
    config: Vec<u8>,
}

impl GpuThreadClient {
    /// Queues `request` and wakes the GPU thread. Fails only when the thread is gone.
    pub fn send(&self, request: Request) -> Result<(), BackendError> {
        self.tx
            .send(request)
            .map_err(|_| BackendError::GpuThreadGone)?;
        self.wake.write(1).map_err(BackendError::Wake)
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

/// The running GPU thread: its client and its join handle.
#[derive(Debug)]
pub struct GpuThreadHandle {
    client: Arc<GpuThreadClient>,
    join: Option<JoinHandle<()>>,
}

impl GpuThreadHandle {
    /// Starts the GPU thread. `factory` runs on the new thread and creates the device (and so
    /// the renderer) there; this returns once it did, with its error if it failed.
    pub fn spawn<D, F>(factory: F, num_scanouts: u32, headless: bool) -> Result<Self, BackendError>
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
                );
                if init_tx.send(Ok(info)).is_err() {
                    return;
                }
                thread.run();
            })
            .map_err(BackendError::SpawnThread)?;
        let (features, config) = match init_rx.recv() {
            Ok(Ok(info)) => info,
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

/// The state owned by the GPU thread.
struct GpuThread<D: GpuDevice> {
    device: D,
    display: DisplayPeer,
    rx: Receiver<Request>,
    wake: EventFd,
    epoll: Epoll,
    shared: Arc<Shared>,
    /// The current connection's vrings (known from its first kick).
    vrings: Option<Vec<VringRwLock>>,
    /// The current connection's guest memory.
    mem: Option<GuestMemory>,
    /// Queues kicked since the last batch.
    kicked: [bool; NUM_QUEUES],
    /// Answers that could not be published because their queue was stopped; published when
    /// it runs again, dropped on reset.
    deferred: Vec<UsedEntry>,
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
            mem: None,
            kicked: [false; NUM_QUEUES],
            deferred: Vec::new(),
        })
    }

    fn set_busy(&self, busy: bool) {
        if let Ok(mut b) = self.shared.busy.lock() {
            *b = busy;
        }
        if !busy {
            self.shared.idle.notify_all();
        }
    }

    fn run(&mut self) {
        let mut events = [EpollEvent::default(); 4];
        loop {
            match self.epoll.wait(-1, &mut events) {
                Ok(_) => {}
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

    /// One wake-up: requests, queues, fences. Returns false on shutdown.
    fn run_once(&mut self) -> bool {
        // A failed read means there was nothing to consume (EAGAIN): a fence wake-up.
        let _ = self.wake.read();
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
        true
    }

    fn handle_request(&mut self, request: Request) {
        log::trace!("GPU thread: {request:?}");
        match request {
            Request::Kick { queue, vrings } => {
                if queue < NUM_QUEUES && vrings.len() == NUM_QUEUES {
                    self.kicked[queue] = true;
                    self.vrings = Some(vrings);
                } else {
                    log::warn!("GPU thread: kick for queue {queue} ignored");
                }
            }
            Request::Memory(mem) => self.mem = Some(mem),
            Request::GpuSocket(socket) => match &mut self.display {
                DisplayPeer::Headless(_) => {
                    log::info!("--headless: ignoring the frontend's display socket");
                }
                DisplayPeer::Socket(d) => d.set_socket(socket),
            },
            Request::ResetDevice => {
                log::info!("device reset requested by the frontend");
                self.reset_device();
            }
            Request::Disconnect(ack) => {
                self.reset_device();
                self.vrings = None;
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

    fn reset_device(&mut self) {
        self.device.reset();
        self.deferred.clear();
    }

    /// Whether the queue may be used now: started (ready) and enabled.
    fn queue_running(vring: &VringRwLock) -> bool {
        let state = vring.get_ref();
        state.get_queue().ready() && state.is_enabled()
    }

    /// The control queue was stopped and runs again: if it restarts from avail index 0, the
    /// driver set the ring up anew, i.e. the guest reset the device (QEMU stops the queues both
    /// for a guest reset and for a VM pause, and tells the backend nothing else; after a pause
    /// the ring continues where it stopped). Then the old guest state goes.
    fn check_guest_reset(&mut self, vring: &VringRwLock) {
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
                        log::warn!("queue {queue}: cannot read the available ring: {e}");
                        return;
                    }
                }
            };
            // The vring lock is not held while commands run: a command may wait for the
            // display, and the frontend may need the lock meanwhile (e.g. to stop the queue).
            let mut used = Vec::with_capacity(chains.len());
            for chain in chains {
                if let Some(entry) = self
                    .device
                    .process_chain(kind, chain, self.display.as_dyn())
                {
                    used.push(entry);
                }
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
