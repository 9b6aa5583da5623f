//! The vrings of a connection, with their kick eventfds going to the GPU thread.
//!
//! vhost-user-backend's own vring (`VringRwLock`) keeps the kick eventfd the frontend gives with
//! `SET_VRING_KICK`, and the library's vring worker waits on it and calls
//! `VhostUserBackend::handle_event`, which could only forward the kick to the GPU thread: two
//! threads woke for every kick. [`GpuVring`] is the same vring (it wraps a `VringRwLock` and
//! hands every other call through), but it passes each kick eventfd to the GPU thread
//! ([`Request::KickFd`]) instead of keeping it, so the GPU thread waits on the kicks itself and
//! is the only thread that wakes. This uses the library's public `VringT` seam (the backend's
//! `type Vring`); the library's worker never sees a kick fd, as its registration looks the fd
//! up in the vring state.
//!
//! What the library did on seeing a kick fd in the state is done here instead: a queue that is
//! not started starts (`set_queue_ready(true)`) when a kick fd arrives, as the library's
//! `SET_VRING_KICK` does; and a queue that starts or is enabled is processed once
//! ([`Request::Kick`]), as the library's worker does for a newly registered queue (a kick may
//! have come before). `GET_VRING_BASE` (stop) ends with `set_kick(None)`: the GPU thread closes
//! its kick fd. Disconnect: the GPU thread drops the connection's kick fds.
//!
//! The library creates a connection's vrings itself (`VringT::new`, inside
//! `VhostUserDaemon::new`), so [`collect_new`] gathers the ones made during that call, in queue
//! order, and `serve.rs` attaches them to the GPU thread ([`GpuVring::attach`]) before the
//! connection starts.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};

use vhost_user_backend::{VringRwLock, VringStateGuard, VringStateMutGuard, VringT};
use virtio_queue::{Error as VirtQueError, QueueT};

use super::gpu_thread::{GpuThreadClient, GuestMemory, Request, NUM_QUEUES};

thread_local! {
    /// Vrings created on this thread while [`collect_new`] runs.
    static CREATED: RefCell<Option<Vec<GpuVring>>> = const { RefCell::new(None) };
}

/// Runs `f` (which creates a `VhostUserDaemon`) and returns its result with the vrings created
/// on this thread meanwhile, in creation order (the library creates queue 0, 1, ... in order).
pub fn collect_new<T>(f: impl FnOnce() -> T) -> (T, Vec<GpuVring>) {
    CREATED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let out = f();
    let vrings = CREATED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (out, vrings)
}

/// Where a vring's kick fd and start events go.
#[derive(Default)]
struct Sink {
    /// The queue index and the GPU thread, once attached.
    target: Option<(usize, Arc<GpuThreadClient>)>,
    /// A kick fd given before the vring was attached (handed over on attach).
    early_kick: Option<Option<File>>,
}

/// A connection's vring: vhost-user-backend's `VringRwLock` whose kick eventfd goes to the GPU
/// thread (see the module doc).
#[derive(Clone)]
pub struct GpuVring {
    inner: VringRwLock<GuestMemory>,
    sink: Arc<Mutex<Sink>>,
}

impl GpuVring {
    /// Routes this vring's kick fd and start events to queue `queue` of the GPU thread.
    pub fn attach(&self, queue: usize, gpu: Arc<GpuThreadClient>) {
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        let early = sink.early_kick.take();
        sink.target = Some((queue, gpu));
        if let Some(fd) = early {
            Self::send_kick_fd(&sink, fd);
        }
    }

    fn send_kick_fd(sink: &Sink, fd: Option<File>) {
        if let Some((queue, gpu)) = &sink.target {
            if let Err(e) = gpu.send(Request::KickFd { queue: *queue, fd }) {
                log::warn!("queue {queue}: cannot hand the kick fd to the GPU thread: {e}");
            }
        }
    }

    /// Asks the GPU thread to look at the queue (it started or was enabled).
    fn poke(&self) {
        let Ok(sink) = self.sink.lock() else {
            return;
        };
        if let Some((queue, gpu)) = &sink.target {
            if let Err(e) = gpu.send(Request::Kick { queue: *queue }) {
                log::warn!("queue {queue}: cannot wake the GPU thread: {e}");
            }
        }
    }
}

impl<'a> VringStateGuard<'a, GuestMemory> for GpuVring {
    type G = <VringRwLock<GuestMemory> as VringStateGuard<'a, GuestMemory>>::G;
}

impl<'a> VringStateMutGuard<'a, GuestMemory> for GpuVring {
    type G = <VringRwLock<GuestMemory> as VringStateMutGuard<'a, GuestMemory>>::G;
}

impl VringT<GuestMemory> for GpuVring {
    fn new(mem: GuestMemory, max_queue_size: u16) -> Result<Self, VirtQueError> {
        let vring = GpuVring {
            inner: VringRwLock::new(mem, max_queue_size)?,
            sink: Arc::default(),
        };
        CREATED.with(|c| {
            if let Some(list) = c.borrow_mut().as_mut() {
                if list.len() < NUM_QUEUES {
                    list.push(vring.clone());
                }
            }
        });
        Ok(vring)
    }

    fn get_ref(&self) -> <Self as VringStateGuard<'_, GuestMemory>>::G {
        self.inner.get_ref()
    }

    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, GuestMemory>>::G {
        self.inner.get_mut()
    }

    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), VirtQueError> {
        self.inner.add_used(desc_index, len)
    }

    fn signal_used_queue(&self) -> io::Result<()> {
        self.inner.signal_used_queue()
    }

    fn enable_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.enable_notification()
    }

    fn disable_notification(&self) -> Result<(), VirtQueError> {
        self.inner.disable_notification()
    }

    fn needs_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.needs_notification()
    }

    fn set_enabled(&self, enabled: bool) {
        self.inner.set_enabled(enabled);
        if enabled {
            self.poke();
        }
    }

    fn set_queue_info(
        &self,
        desc_table: u64,
        avail_ring: u64,
        used_ring: u64,
    ) -> Result<(), VirtQueError> {
        self.inner.set_queue_info(desc_table, avail_ring, used_ring)
    }

    fn queue_next_avail(&self) -> u16 {
        self.inner.queue_next_avail()
    }

    fn set_queue_next_avail(&self, base: u16) {
        self.inner.set_queue_next_avail(base);
    }

    fn set_queue_next_used(&self, idx: u16) {
        self.inner.set_queue_next_used(idx);
    }

    fn queue_used_idx(&self) -> Result<u16, VirtQueError> {
        self.inner.queue_used_idx()
    }

    fn set_queue_size(&self, num: u16) {
        self.inner.set_queue_size(num);
    }

    fn set_queue_event_idx(&self, enabled: bool) {
        self.inner.set_queue_event_idx(enabled);
    }

    fn set_queue_ready(&self, ready: bool) {
        self.inner.set_queue_ready(ready);
    }

    /// The kick fd goes to the GPU thread, not into the vring state. A kick fd starts a queue
    /// that is not started, as the library's SET_VRING_KICK does when it finds one in the state.
    fn set_kick(&self, file: Option<File>) {
        let start = file.is_some() && !self.inner.get_ref().get_queue().ready();
        if start {
            self.inner.set_queue_ready(true);
        }
        if let Ok(mut sink) = self.sink.lock() {
            if sink.target.is_some() {
                // The GPU thread processes the queue once when it installs a new kick fd.
                Self::send_kick_fd(&sink, file);
            } else {
                sink.early_kick = Some(file);
            }
        }
    }

    fn read_kick(&self) -> io::Result<bool> {
        // No kick fd in the state: the library's worker never waits on one (see the module doc).
        self.inner.read_kick()
    }

    fn set_call(&self, file: Option<File>) {
        self.inner.set_call(file);
    }

    fn set_err(&self, file: Option<File>) {
        self.inner.set_err(file);
    }
}
