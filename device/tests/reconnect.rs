//! The daemon over a real vhost-user socket, driven by vhost's frontend: negotiation, config
//! space, a queue round trip through the GPU thread, and frontends that connect and go away
//! one after the other without leaking file descriptors or restarting the GPU thread.
//!
//! The device is a stand-in (the GPU thread's `GpuDevice` seam) so that this test is about the
//! vhost-user plumbing alone; the real device and renderers are tested end to end by the
//! `tests` crate. Run it alone (it counts this process's descriptors):
//! `cargo nextest run -p vhost-user-gpu --test reconnect` (nextest runs each test in its own
//! process; under `cargo test` the tests take a lock so they do not run at the same time).

use std::fs::File;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, Listener, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhost_user_gpu::backend::gpu_thread::{GpuDevice, GuestChain};
use vhost_user_gpu::backend::relay::serve_connected;
use vhost_user_gpu::backend::serve::serve_one;
use vhost_user_gpu::backend::{GpuThreadHandle, VhostUserGpuBackend, MAX_QUEUE_SIZE};
use vhost_user_gpu::display::Display;
use vhost_user_gpu::gpu::{QueueKind, UsedEntry};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const WAIT: Duration = Duration::from_secs(10);
const MEM_SIZE: usize = 1 << 20;
const QUEUE_SIZE: u16 = 16;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const BUFFER: u64 = 0x8000;
const ANSWER_LEN: u32 = 24;
const CONFIG: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Created,
    Chain(QueueKind, u16),
    Reset,
}

struct StandIn {
    seen: Sender<Seen>,
}

impl GpuDevice for StandIn {
    fn device_features(&self) -> u64 {
        1 << 1
    }
    fn config_space(&self) -> Vec<u8> {
        CONFIG.to_vec()
    }
    fn process_chain(
        &mut self,
        queue: QueueKind,
        chain: GuestChain,
        _display: &mut dyn Display,
    ) -> Option<UsedEntry> {
        let _ = self.seen.send(Seen::Chain(queue, chain.head_index()));
        Some(UsedEntry {
            queue,
            head_index: chain.head_index(),
            len: ANSWER_LEN,
        })
    }
    fn fence_poll_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    fn poll_fences(&mut self) -> Vec<UsedEntry> {
        Vec::new()
    }
    fn reset(&mut self) {
        let _ = self.seen.send(Seen::Reset);
    }
}

/// The tests count this process's descriptors: they must not run at the same time (under
/// `cargo test` they would be threads of one process; nextest runs each in its own).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Shared guest memory the test (as the frontend) and the daemon both map.
fn guest_memory() -> GuestMemoryMmap {
    // SAFETY: memfd_create with a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(c"guest".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a new descriptor owned by nothing else.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(MEM_SIZE as u64).unwrap();
    GuestMemoryMmap::from_ranges_with_files(&[(
        GuestAddress(0),
        MEM_SIZE,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap()
}

/// One frontend session on `path`.
fn session(path: &PathBuf, seen: &Receiver<Seen>) {
    session_on(Frontend::connect(path, 2).unwrap(), seen);
}

/// One frontend session: negotiate, read the config space, run one chain through queue 0.
fn session_on(mut fe: Frontend, seen: &Receiver<Seen>) {
    fe.set_owner().unwrap();
    let features = fe.get_features().unwrap();
    assert_ne!(features & (1 << 32), 0, "VERSION_1");
    assert_ne!(features & (1 << 29), 0, "EVENT_IDX");
    assert_ne!(features & (1 << 30), 0, "PROTOCOL_FEATURES");
    assert_ne!(features & (1 << 1), 0, "the device's own bits");
    let proto = fe.get_protocol_features().unwrap();
    for needed in [
        VhostUserProtocolFeatures::CONFIG,
        VhostUserProtocolFeatures::MQ,
        VhostUserProtocolFeatures::REPLY_ACK,
    ] {
        assert!(proto.contains(needed), "{needed:?}");
    }
    assert!(!proto.contains(VhostUserProtocolFeatures::STATUS));
    fe.set_protocol_features(proto).unwrap();
    // Features without EVENT_IDX: every used entry notifies.
    fe.set_features(features & !(1 << 29)).unwrap();
    assert_eq!(fe.get_queue_num().unwrap(), 2);

    let (_, cfg) = fe
        .get_config(0, 16, VhostUserConfigFlags::WRITABLE, &[0; 16])
        .unwrap();
    assert_eq!(cfg, CONFIG);
    let (_, part) = fe
        .get_config(8, 4, VhostUserConfigFlags::WRITABLE, &[0; 4])
        .unwrap();
    assert_eq!(part, CONFIG[8..12]);
    // (A range outside the config space is answered with an empty payload, which vhost
    // 0.18's frontend then waits on forever; `config_slice` has the unit test for it.)

    let mem = guest_memory();
    let region = mem.find_region(GuestAddress(0)).unwrap();
    let info = VhostUserMemoryRegionInfo::from_guest_region(region).unwrap();
    let host = info.userspace_addr;
    fe.set_mem_table(&[info]).unwrap();

    // One write-only descriptor, made available.
    mem.write_obj(BUFFER, GuestAddress(DESC)).unwrap();
    mem.write_obj(0x100u32, GuestAddress(DESC + 8)).unwrap();
    mem.write_obj(2u16, GuestAddress(DESC + 12)).unwrap(); // VRING_DESC_F_WRITE
    mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
    mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();

    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let call = EventFd::new(0).unwrap();
    fe.set_vring_num(0, QUEUE_SIZE).unwrap();
    fe.set_vring_addr(
        0,
        &VringConfigData {
            queue_max_size: MAX_QUEUE_SIZE as u16,
            queue_size: QUEUE_SIZE,
            flags: 0,
            desc_table_addr: host + DESC,
            used_ring_addr: host + USED,
            avail_ring_addr: host + AVAIL,
            log_addr: None,
        },
    )
    .unwrap();
    fe.set_vring_base(0, 0).unwrap();
    fe.set_vring_call(0, &call).unwrap();
    fe.set_vring_kick(0, &kick).unwrap();
    fe.set_vring_enable(0, true).unwrap();
    kick.write(1).unwrap();

    assert_eq!(
        seen.recv_timeout(WAIT).unwrap(),
        Seen::Chain(QueueKind::Control, 0)
    );
    // Blocking read: returns once the daemon signalled the used ring.
    call.read().unwrap();
    let used_idx: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
    let used_id: u32 = mem.read_obj(GuestAddress(USED + 4)).unwrap();
    let used_len: u32 = mem.read_obj(GuestAddress(USED + 8)).unwrap();
    assert_eq!((used_idx, used_id, used_len), (1, 0, ANSWER_LEN));

    // Stopping the queue answers with where it stopped.
    assert_eq!(fe.get_vring_base(0).unwrap(), 1);
    drop(fe);
    // The daemon notices the disconnect and resets the device.
    assert_eq!(seen.recv_timeout(WAIT).unwrap(), Seen::Reset);
}

/// The GPU thread with the stand-in device.
fn start_gpu() -> (GpuThreadHandle, Receiver<Seen>) {
    let (seen_tx, seen) = mpsc::channel();
    let created = Arc::new(AtomicBool::new(false));
    let factory_created = created.clone();
    let gpu = GpuThreadHandle::spawn(
        move || {
            // Created once, on the GPU thread, for the daemon's whole life.
            assert!(!factory_created.swap(true, Ordering::SeqCst));
            let _ = seen_tx.send(Seen::Created);
            Ok(StandIn { seen: seen_tx })
        },
        1,
        true,
    )
    .unwrap();
    assert_eq!(seen.recv_timeout(WAIT).unwrap(), Seen::Created);
    (gpu, seen)
}

#[test]
fn a_connected_socket_is_served_through_the_relay() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = env_logger::builder().is_test(true).try_init();
    let (gpu, seen) = start_gpu();
    let backend = Arc::new(VhostUserGpuBackend::new(gpu.client()));
    let before = open_fds();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || serve_connected(theirs, &backend));
    // Memory regions and kick/call eventfds cross the relay with their messages.
    session_on(Frontend::from_stream(ours, 2), &seen);
    server.join().unwrap().unwrap();
    assert_eq!(open_fds(), before, "descriptors leaked by the relay");
}

#[test]
fn frontends_come_and_go_without_leaks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = std::env::temp_dir().join(format!("vugpu-reconnect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gpu.sock");
    let (gpu, seen) = start_gpu();
    let backend = Arc::new(VhostUserGpuBackend::new(gpu.client()));
    let mut listener = Listener::new(&path, true).unwrap();
    let server_backend = backend.clone();
    // Between two connections, when the test (done with its frontend) says so, the server
    // reports this process's descriptor count (nothing of the next connection exists yet),
    // then accepts again.
    let (idle_tx, idle) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || loop {
        if go_rx.recv().is_err() || idle_tx.send(open_fds()).is_err() {
            return;
        }
        if serve_one(&mut listener, &server_backend).is_err() {
            return;
        }
    });
    let mut counts = Vec::new();
    let next = |counts: &mut Vec<usize>| {
        go.send(()).unwrap();
        counts.push(idle.recv_timeout(WAIT).unwrap());
    };

    next(&mut counts);
    session(&path, &seen);
    for _ in 0..4 {
        next(&mut counts);
        session(&path, &seen);
        // A frontend that connects and leaves at once.
        next(&mut counts);
        drop(std::os::unix::net::UnixStream::connect(&path).unwrap());
        assert_eq!(seen.recv_timeout(WAIT).unwrap(), Seen::Reset);
        // A frontend that sends garbage.
        next(&mut counts);
        {
            use std::io::Write;
            let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            s.write_all(&[0xff; 40]).unwrap();
            assert_eq!(seen.recv_timeout(WAIT).unwrap(), Seen::Reset);
        }
    }
    next(&mut counts);
    // The first count is before any connection; every later one must be the same.
    assert!(
        counts.iter().all(|&c| c == counts[0]),
        "descriptors leaked across connections: {counts:?}"
    );
    assert!(seen.try_recv().is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
