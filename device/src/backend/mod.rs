//! The vhost-user side of the device: what the frontend negotiates, and how its requests and
//! queue kicks reach the GPU thread.
//!
//! - [`VhostUserGpuBackend`] implements `vhost_user_backend::VhostUserBackend`. It owns no
//!   device state: every request that touches the device (memory tables, the display socket,
//!   resets) is forwarded to the GPU thread ([`gpu_thread`]), which owns `VirtioGpu` and its
//!   (thread-affine, `!Send`) renderer. The queues' kick eventfds go to the GPU thread too,
//!   through the vrings ([`vring::GpuVring`]), so that it waits on them itself.
//! - [`vring`]: the backend's vring type, which hands each kick eventfd to the GPU thread.
//! - [`mod@serve`] accepts frontend connections one after the other, each with a fresh
//!   `VhostUserDaemon`, and resets the device between them.
//!
//! Feature negotiation: the transport features a modern frontend expects (VERSION_1,
//! EVENT_IDX, INDIRECT_DESC, NOTIFY_ON_EMPTY, RING_RESET) plus `VHOST_USER_F_PROTOCOL_FEATURES`
//! and the `VIRTIO_GPU_F_*` bits the device reports; protocol features CONFIG (GET_CONFIG is
//! how QEMU reads the config space), MQ, REPLY_ACK and RESET_DEVICE; with a host-visible region
//! (`--hostmem`), also BACKEND_REQ, BACKEND_SEND_FD and SHMEM: GET_SHMEM_CONFIG answers region
//! `VIRTIO_GPU_SHM_ID_HOST_VISIBLE` (1) with its size, and the backend-request channel the
//! frontend hands over (SET_BACKEND_REQ_FD) becomes the device's `SharedMemoryMapper`
//! ([`gpu_thread::BackendShmemMapper`]). STATUS is not offered:
//! vhost 0.18's request handler does not implement SET_STATUS/GET_STATUS and would drop the
//! connection on them.

pub mod cpu_sharing;
pub mod gpu_thread;
pub mod poll;
pub mod relay;
pub mod serve;
pub mod vring;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use vhost::vhost_user::message::{
    VhostUserProtocolFeatures, VhostUserShMemConfig, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Backend, GpuBackend};
use vhost_user_backend::VhostUserBackend;
use virtio_bindings::virtio_config::{
    VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_RING_RESET, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

pub use gpu_thread::{GpuDevice, GpuThreadClient, GpuThreadHandle, Request, NUM_QUEUES};
pub use serve::{bind, serve, serve_bound, BoundEndpoint};

use gpu_thread::GuestMemory;
use vring::GpuVring;

pub use crate::limits::MAX_QUEUE_SIZE;

/// Transport features offered besides the device's own bits.
pub const TRANSPORT_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_RING_F_EVENT_IDX)
    | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_F_NOTIFY_ON_EMPTY)
    | (1 << VIRTIO_F_RING_RESET);

/// Errors of the vhost-user side and the GPU thread.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The device (and its renderer) could not be created on the GPU thread.
    #[error("cannot create the GPU device: {0}")]
    DeviceInit(String),
    /// The GPU thread could not be started.
    #[error("cannot start the GPU thread: {0}")]
    SpawnThread(#[source] io::Error),
    /// The GPU thread ended (it panicked or shut down).
    #[error("the GPU thread is gone")]
    GpuThreadGone,
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] io::Error),
    /// The GPU thread could not be woken.
    #[error("cannot wake the GPU thread: {0}")]
    Wake(#[source] io::Error),
    /// The GPU thread's epoll failed.
    #[error("epoll: {0}")]
    Epoll(#[source] io::Error),
    /// The vhost-user socket could not be set up.
    #[error("vhost-user socket {what}: {source}")]
    Socket {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: vhost::vhost_user::Error,
    },
    /// The vhost-user daemon failed.
    #[error("vhost-user daemon: {0}")]
    Daemon(String),
    /// An inherited file descriptor is not a UNIX stream socket we can serve.
    #[error("--fd {fd}: {reason}")]
    BadFd {
        /// The descriptor.
        fd: RawFd,
        /// Why it cannot be used.
        reason: String,
    },
}

/// The `vhost_user_backend::VhostUserBackend` of the GPU: negotiation here, device work on the
/// GPU thread.
#[derive(Debug)]
pub struct VhostUserGpuBackend {
    gpu: Arc<GpuThreadClient>,
    /// Read ends of the exit eventfds handed to vhost-user-backend's vring workers (see
    /// [`VhostUserGpuBackend::close_exit_events`]).
    exit_events: Mutex<Vec<RawFd>>,
}

impl VhostUserGpuBackend {
    /// A backend forwarding to the GPU thread behind `gpu`.
    pub fn new(gpu: Arc<GpuThreadClient>) -> Self {
        VhostUserGpuBackend {
            gpu,
            exit_events: Mutex::new(Vec::new()),
        }
    }

    /// The GPU thread's client.
    pub fn gpu(&self) -> &GpuThreadClient {
        &self.gpu
    }

    /// A shared handle of the GPU thread's client (for the connection's vrings).
    pub fn gpu_client(&self) -> Arc<GpuThreadClient> {
        self.gpu.clone()
    }

    fn forward(&self, request: Request) -> io::Result<()> {
        self.gpu
            .send(request)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Closes the exit eventfds of vring workers that have ended.
    ///
    /// vhost-user-backend 0.24 registers the `EventConsumer` returned by `exit_event()` in the
    /// worker's epoll with `into_raw_fd()` and never closes it: one eventfd would leak per
    /// connection. Call this only after the connection's `VhostUserDaemon` was dropped (that
    /// joins its worker threads) and before the next daemon on this backend is created, so
    /// nothing refers to these descriptors any more (`serve_one` does so).
    pub fn close_exit_events(&self) {
        let fds = match self.exit_events.lock() {
            Ok(mut fds) => std::mem::take(&mut *fds),
            Err(_) => return,
        };
        for fd in fds {
            if !is_eventfd(fd) {
                log::warn!("exit event fd {fd} is no longer an eventfd; not closing it");
                continue;
            }
            // SAFETY: `fd` is the read end of an eventfd created in `exit_event()`, whose
            // ownership vhost-user-backend took with `into_raw_fd()` and never closes; the
            // worker thread that used it has been joined (the daemon was dropped), so this is
            // now the only owner, and the check above shows the number still names an eventfd.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

/// Whether `fd` is an open eventfd of this process.
fn is_eventfd(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventfd]")
}

impl VhostUserBackend for VhostUserGpuBackend {
    type Bitmap = ();
    type Vring = GpuVring;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        TRANSPORT_FEATURES
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            | self.gpu.device_features()
    }

    fn acked_features(&self, features: u64) {
        log::debug!("frontend acked features {features:#x}");
        // The device serves only what was negotiated (a frontend such as QEMU's
        // vhost-user-gpu-pci passes its guest fewer features than the backend offers).
        if let Err(e) = self.forward(Request::AckedFeatures(features)) {
            log::error!("acked features {features:#x} not handed to the GPU thread: {e}");
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        let base = VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::RESET_DEVICE;
        if self.gpu.host_visible_size() > 0 {
            base | VhostUserProtocolFeatures::BACKEND_REQ
                | VhostUserProtocolFeatures::BACKEND_SEND_FD
                | VhostUserProtocolFeatures::SHMEM
        } else {
            base
        }
    }

    fn set_backend_req_fd(&self, backend: Backend) {
        if self.gpu.host_visible_size() == 0 {
            log::warn!("SET_BACKEND_REQ_FD without a host-visible region (--hostmem); ignored");
            return;
        }
        if let Err(e) = self.forward(Request::BackendReq(backend)) {
            log::error!("SET_BACKEND_REQ_FD: {e}");
        }
    }

    fn get_shmem_config(&self) -> io::Result<VhostUserShMemConfig> {
        let size = self.gpu.host_visible_size();
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no host-visible shared memory region (--hostmem)",
            ));
        }
        Ok(shmem_config(size))
    }

    fn reset_device(&self) {
        if let Err(e) = self.forward(Request::ResetDevice) {
            log::error!("RESET_DEVICE: {e}");
        }
    }

    fn set_event_idx(&self, enabled: bool) {
        // The vrings themselves know it (vhost-user-backend sets it on each queue).
        log::debug!("EVENT_IDX {}", if enabled { "on" } else { "off" });
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        config_slice(self.gpu.config_space(), offset, size)
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        // The only writable field is events_clear (offset 4); the device raises no events,
        // so there is nothing to clear. Anything outside the config space is refused.
        let len = self.gpu.config_space().len();
        let end = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(buf.len()));
        match end {
            Some(end) if end <= len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "SET_CONFIG {}@{offset} outside the {len}-byte config space",
                    buf.len()
                ),
            )),
        }
    }

    fn update_memory(&self, mem: GuestMemory) -> io::Result<()> {
        self.forward(Request::Memory(mem))
    }

    fn set_gpu_socket(&self, gpu_backend: GpuBackend) -> io::Result<()> {
        self.forward(Request::GpuSocket(gpu_backend))
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok((consumer, notifier)) => {
                if let Ok(mut fds) = self.exit_events.lock() {
                    fds.push(consumer.as_raw_fd());
                }
                Some((consumer, notifier))
            }
            Err(e) => {
                log::error!("cannot create a vring worker exit event: {e}");
                None
            }
        }
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // The vring is already marked not ready; wait until the GPU thread is out of the batch
        // it may be in, so it does not touch the stopped ring afterwards.
        self.gpu.quiesce(queue_index as usize);
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        _vrings: &[GpuVring],
        _thread_id: usize,
    ) -> io::Result<()> {
        // The queues' kick fds go to the GPU thread (see `vring.rs`), never into the library's
        // worker, and the backend registers no listeners of its own.
        log::warn!("unexpected vring worker event {device_event}");
        Ok(())
    }
}

/// GET_SHMEM_CONFIG's answer: `memory_sizes` is indexed by shmid, so the host-visible region
/// (shmid 1) is entry 1 and `nregions` (2) covers indexes 0..=1; shmid 0 (undefined) has size 0.
pub fn shmem_config(size: u64) -> VhostUserShMemConfig {
    let mut sizes = [0u64; 2];
    sizes[usize::from(crate::protocol::VIRTIO_GPU_SHM_ID_HOST_VISIBLE)] = size;
    VhostUserShMemConfig::new(sizes.len() as u32, &sizes)
}

/// `size` bytes of `config` from `offset`, or nothing when the range is not inside it (the
/// vhost-user library then answers GET_CONFIG with an empty payload, i.e. an error).
pub fn config_slice(config: &[u8], offset: u32, size: u32) -> Vec<u8> {
    let start = usize::try_from(offset).ok();
    let end = start
        .zip(usize::try_from(size).ok())
        .and_then(|(s, n)| s.checked_add(n));
    match (start, end) {
        (Some(start), Some(end)) => {
            config
                .get(start..end)
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| {
                    log::warn!(
                        "GET_CONFIG {size}@{offset} outside the {}-byte config space",
                        config.len()
                    );
                    Vec::new()
                })
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu_thread::GuestChain;
    use crate::display::Display;
    use crate::gpu::{QueueKind, UsedEntry};
    use std::os::fd::BorrowedFd;

    /// A device with fixed features and config space, and optionally a host-visible region.
    struct Fixed(u64);

    impl GpuDevice for Fixed {
        fn device_features(&self) -> u64 {
            (1 << 0) | (1 << 1)
        }
        fn config_space(&self) -> Vec<u8> {
            (0..16).collect()
        }
        fn process_chain(
            &mut self,
            _: QueueKind,
            _: GuestChain,
            _: &mut dyn Display,
        ) -> Option<UsedEntry> {
            None
        }
        fn fence_poll_fd(&self) -> Option<BorrowedFd<'_>> {
            None
        }
        fn poll_fences(&mut self) -> Vec<UsedEntry> {
            Vec::new()
        }
        fn reset(&mut self) {}
        fn host_visible_size(&self) -> u64 {
            self.0
        }
    }

    fn backend(hostmem: u64) -> (GpuThreadHandle, VhostUserGpuBackend) {
        let gpu = GpuThreadHandle::spawn(move || Ok(Fixed(hostmem)), 1, true).unwrap();
        let b = VhostUserGpuBackend::new(gpu.client());
        (gpu, b)
    }

    #[test]
    fn negotiation_comes_from_the_device() {
        let (_gpu, b) = backend(0);
        assert_eq!(b.num_queues(), 2);
        assert_eq!(b.max_queue_size(), MAX_QUEUE_SIZE);
        let f = b.features();
        assert_eq!(f & 0xff_ffff, 0b11, "exactly the device's own bits");
        assert_eq!(f & TRANSPORT_FEATURES, TRANSPORT_FEATURES);
        assert_ne!(f & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(), 0);
        let p = b.protocol_features();
        assert!(p.contains(
            VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::RESET_DEVICE
        ));
        // Not handled by vhost 0.18's request handler, or not without a region.
        assert!(!p.contains(VhostUserProtocolFeatures::STATUS));
        assert!(!p.contains(VhostUserProtocolFeatures::SHMEM));
        assert!(b.get_shmem_config().is_err());
        assert_eq!(b.get_config(4, 8), (4..12).collect::<Vec<u8>>());
        assert!(b.get_config(10, 8).is_empty());
        // events_clear is writable; nothing outside the config space is.
        assert!(b.set_config(4, &[1, 0, 0, 0]).is_ok());
        assert!(b.set_config(14, &[0; 4]).is_err());
        assert!(b.set_config(u32::MAX, &[0]).is_err());
    }

    #[test]
    fn a_host_visible_region_adds_the_shmem_features() {
        let (_gpu, b) = backend(1 << 20);
        let p = b.protocol_features();
        assert!(p.contains(
            VhostUserProtocolFeatures::BACKEND_REQ
                | VhostUserProtocolFeatures::BACKEND_SEND_FD
                | VhostUserProtocolFeatures::SHMEM
        ));
        let c = b.get_shmem_config().unwrap();
        let sizes = c.memory_sizes;
        assert_eq!(sizes[1], 1 << 20);
    }

    #[test]
    fn config_slice_honours_bounds() {
        let cfg: Vec<u8> = (0..16).collect();
        assert_eq!(config_slice(&cfg, 0, 16), cfg);
        assert_eq!(config_slice(&cfg, 8, 4), vec![8, 9, 10, 11]);
        assert_eq!(config_slice(&cfg, 12, 4), vec![12, 13, 14, 15]);
        assert!(config_slice(&cfg, 12, 5).is_empty());
        assert!(config_slice(&cfg, 16, 1).is_empty());
        assert!(config_slice(&cfg, u32::MAX, 2).is_empty());
        assert!(config_slice(&cfg, 1, u32::MAX).is_empty());
        assert_eq!(config_slice(&cfg, 16, 0), Vec::<u8>::new());
    }

    /// QEMU 11.1's vhost-user-gpu-pci reads the virtio 1.4 config (20 bytes, with
    /// `blob_alignment`); a refused read left its guest with zero scanouts. Older frontends read
    /// the first 16.
    #[test]
    fn config_space_answers_the_20_byte_virtio_1_4_read() {
        let cfg = crate::protocol::encode_config(1, 2, 0);
        let all = config_slice(&cfg, 0, 20);
        assert_eq!(all.len(), 20);
        assert_eq!(&all[8..12], &1u32.to_le_bytes());
        assert_eq!(&all[12..16], &2u32.to_le_bytes());
        assert_eq!(
            &all[16..20],
            &[0; 4],
            "blob_alignment: BLOB_ALIGNMENT is not offered"
        );
        assert_eq!(config_slice(&cfg, 0, 16), &all[..16]);
        assert!(config_slice(&cfg, 0, 24).is_empty());
    }

    #[test]
    fn shmem_config_puts_the_region_at_shmid_1() {
        let c = shmem_config(64 << 20);
        let (n, sizes) = (c.nregions, c.memory_sizes);
        assert_eq!(n, 2);
        assert_eq!(sizes[0], 0);
        assert_eq!(sizes[1], 64 << 20);
        assert!(sizes[2..].iter().all(|&s| s == 0));
    }

    #[test]
    fn transport_features() {
        assert_ne!(TRANSPORT_FEATURES & (1 << 32), 0, "VERSION_1");
        assert_ne!(TRANSPORT_FEATURES & (1 << 29), 0, "EVENT_IDX");
        assert_ne!(TRANSPORT_FEATURES & (1 << 28), 0, "INDIRECT_DESC");
        assert_ne!(TRANSPORT_FEATURES & (1 << 24), 0, "NOTIFY_ON_EMPTY");
        assert_ne!(TRANSPORT_FEATURES & (1 << 40), 0, "RING_RESET");
        // No device-specific bit (0..=23) comes from the transport.
        assert_eq!(TRANSPORT_FEATURES & 0xff_ffff, 0);
    }
}
