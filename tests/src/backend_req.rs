//! The backend-request channel (SET_BACKEND_REQ_FD): the backend asks the frontend to map
//! buffers into a device shared-memory region (SHMEM_MAP / SHMEM_UNMAP, used for blobs).
//!
//! Parsing and acks come from the `vhost` crate's `FrontendReqHandler`; this module keeps, for
//! each shared-memory id, a reserved address range of our own (PROT_NONE) into which the
//! backend's fds are mapped (MAP_FIXED) at the requested offsets, records every request, and lets
//! tests read the mapped bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags};
use vhost::vhost_user::{FrontendReqHandler, HandlerResult, VhostUserFrontendReqHandler};

use crate::error::{Error, Result};
use crate::poll::wait_readable;

/// Largest shared-memory region the harness reserves address space for.
pub const MAX_SHM_REGION: u64 = 64 << 30;

/// One SHMEM_MAP or SHMEM_UNMAP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShmemEvent {
    /// SHMEM_MAP.
    Map {
        /// Region id.
        shmid: u8,
        /// Offset in the fd.
        fd_offset: u64,
        /// Offset in the region.
        shm_offset: u64,
        /// Length.
        len: u64,
        /// WRITABLE.
        writable: bool,
        /// Whether it was mapped (false: refused, with the reason in `errors`).
        mapped: bool,
    },
    /// SHMEM_UNMAP.
    Unmap {
        /// Region id.
        shmid: u8,
        /// Offset in the region.
        shm_offset: u64,
        /// Length.
        len: u64,
        /// Whether a mapping was found and removed.
        unmapped: bool,
    },
}

/// A reserved range of our address space standing for one shared-memory region.
struct Region {
    base: usize,
    size: u64,
    /// Live mappings: shm_offset -> len.
    maps: BTreeMap<u64, u64>,
    /// Offsets of the live mappings that are not writable.
    read_only: BTreeSet<u64>,
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base`/`size` describe a mapping this Region created with mmap and owns;
        // nothing else refers into it once the Region is dropped.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.size as usize);
        }
    }
}

/// Recorded state.
#[derive(Default)]
pub struct ShmemState {
    /// Every request in order.
    pub events: Vec<ShmemEvent>,
    /// Refusals and their reasons.
    pub errors: Vec<String>,
    regions: BTreeMap<u8, Region>,
}

struct Shared {
    state: Mutex<ShmemState>,
    cond: Condvar,
}

struct Handler(Arc<Shared>);

fn lock(shared: &Shared) -> MutexGuard<'_, ShmemState> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl VhostUserFrontendReqHandler for Handler {
    fn shmem_map(&self, req: &VhostUserMMap, fd: &dyn AsRawFd) -> HandlerResult<u64> {
        let (shmid, fd_offset, shm_offset, len, flags) =
            (req.shmid, req.fd_offset, req.shm_offset, req.len, req.flags);
        let writable = flags & VhostUserMMapFlags::WRITABLE.bits() != 0;
        let mut st = lock(&self.0);
        let res = map_into(
            &mut st,
            shmid,
            fd.as_raw_fd(),
            fd_offset,
            shm_offset,
            len,
            writable,
        );
        if let Err(e) = &res {
            st.errors.push(format!(
                "SHMEM_MAP {shmid} +{shm_offset:#x} len {len:#x}: {e}"
            ));
        }
        st.events.push(ShmemEvent::Map {
            shmid,
            fd_offset,
            shm_offset,
            len,
            writable,
            mapped: res.is_ok(),
        });
        drop(st);
        self.0.cond.notify_all();
        res.map(|_| 0)
    }

    fn shmem_unmap(&self, req: &VhostUserMMap) -> HandlerResult<u64> {
        let (shmid, shm_offset, len) = (req.shmid, req.shm_offset, req.len);
        let mut st = lock(&self.0);
        let res = unmap_from(&mut st, shmid, shm_offset, len);
        if let Err(e) = &res {
            st.errors.push(format!(
                "SHMEM_UNMAP {shmid} +{shm_offset:#x} len {len:#x}: {e}"
            ));
        }
        st.events.push(ShmemEvent::Unmap {
            shmid,
            shm_offset,
            len,
            unmapped: res.is_ok(),
        });
        drop(st);
        self.0.cond.notify_all();
        res.map(|_| 0)
    }
}

fn einval(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

fn map_into(
    st: &mut ShmemState,
    shmid: u8,
    fd: RawFd,
    fd_offset: u64,
    shm_offset: u64,
    len: u64,
    writable: bool,
) -> io::Result<()> {
    let region = st
        .regions
        .get_mut(&shmid)
        .ok_or_else(|| einval("no such shared memory region"))?;
    let end = shm_offset
        .checked_add(len)
        .filter(|&e| e <= region.size && len > 0)
        .ok_or_else(|| einval("outside the region"))?;
    let page = 4096;
    if shm_offset % page != 0 || len % page != 0 || fd_offset % page != 0 {
        return Err(einval("not page aligned"));
    }
    if region
        .maps
        .range(..end)
        .next_back()
        .is_some_and(|(&o, &l)| o + l > shm_offset)
    {
        return Err(einval("overlaps a live mapping"));
    }
    let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
    let addr = region.base + shm_offset as usize;
    let off = libc::off_t::try_from(fd_offset).map_err(|_| einval("fd offset"))?;
    // SAFETY: [addr, addr+len) lies inside the PROT_NONE range this Region reserved and owns
    // (checked above), so MAP_FIXED replaces only our own reservation; `fd` is valid for the call.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len as usize,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    region.maps.insert(shm_offset, len);
    if !writable {
        region.read_only.insert(shm_offset);
    }
    Ok(())
}

fn unmap_from(st: &mut ShmemState, shmid: u8, shm_offset: u64, len: u64) -> io::Result<()> {
    let region = st
        .regions
        .get_mut(&shmid)
        .ok_or_else(|| einval("no such shared memory region"))?;
    if region.maps.get(&shm_offset) != Some(&len) {
        return Err(einval("no mapping at that offset with that length"));
    }
    let addr = region.base + shm_offset as usize;
    // SAFETY: the range is a live mapping inside our own reservation (checked above); it is
    // replaced by an inaccessible anonymous mapping again.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    region.maps.remove(&shm_offset);
    region.read_only.remove(&shm_offset);
    Ok(())
}

/// The served backend-request channel; dropping it stops the thread and unmaps everything.
pub struct BackendReqChannel {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    tx_fd: RawFd,
}

impl BackendReqChannel {
    /// Create the channel and its server thread. `reply_ack`: REPLY_ACK was negotiated.
    pub fn start(reply_ack: bool) -> Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(ShmemState::default()),
            cond: Condvar::new(),
        });
        let mut handler =
            FrontendReqHandler::new(Arc::new(Handler(shared.clone()))).map_err(|e| {
                Error::Vhost {
                    request: "backend request channel",
                    source: vhost::Error::VhostUserProtocol(e),
                }
            })?;
        handler.set_reply_ack_flag(reply_ack);
        let tx_fd = handler.get_tx_raw_fd();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("backend-req".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match wait_readable(&handler, Duration::from_millis(50)) {
                        Ok(true) => {
                            if let Err(e) = handler.handle_request() {
                                // A disconnected backend ends the channel; a refused request
                                // (already recorded) does not.
                                let fatal = matches!(
                                    e,
                                    vhost::vhost_user::Error::Disconnected
                                        | vhost::vhost_user::Error::PartialMessage
                                        | vhost::vhost_user::Error::SocketBroken(_)
                                );
                                // Refusals by our handler are recorded already.
                                if !matches!(e, vhost::vhost_user::Error::ReqHandlerError(_)) {
                                    lock(&sh).errors.push(format!("backend request: {e}"));
                                }
                                if fatal {
                                    break;
                                }
                            }
                        }
                        Ok(false) => {}
                        Err(_) => break,
                    }
                }
                // Keep the handler (and the socket pair) alive until the loop ends.
                drop(handler);
            })
            .map_err(|e| Error::io("spawn backend-req thread", e))?;
        Ok(BackendReqChannel {
            shared,
            stop,
            thread: Some(thread),
            tx_fd,
        })
    }

    /// The fd to send with SET_BACKEND_REQ_FD (valid while the channel lives).
    pub fn backend_fd(&self) -> RawFd {
        self.tx_fd
    }

    /// Reserve `size` bytes of address space for region `shmid` (from GET_SHMEM_CONFIG).
    pub fn add_region(&self, shmid: u8, size: u64) -> Result<()> {
        if size == 0 || size > MAX_SHM_REGION {
            return Err(Error::Memory(format!(
                "shared memory region of {size} bytes"
            )));
        }
        let len = usize::try_from(size).map_err(|_| Error::Memory("size".into()))?;
        // SAFETY: a fresh anonymous PROT_NONE reservation; the kernel picks the address and
        // nothing else refers to it. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::io(
                "reserve shared memory region",
                io::Error::last_os_error(),
            ));
        }
        lock(&self.shared).regions.insert(
            shmid,
            Region {
                base: p as usize,
                size,
                maps: BTreeMap::new(),
                read_only: BTreeSet::new(),
            },
        );
        Ok(())
    }

    /// Lock the recorded state.
    pub fn state(&self) -> MutexGuard<'_, ShmemState> {
        lock(&self.shared)
    }

    /// Number of events so far.
    pub fn mark(&self) -> usize {
        self.state().events.len()
    }

    /// Wait for an event at index >= `from` that `pred` accepts.
    pub fn wait_event(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&ShmemEvent) -> bool,
    ) -> Result<ShmemEvent> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        loop {
            if let Some(e) = st.events.iter().skip(from).find(|e| pred(e)) {
                return Ok(e.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!(
                        "shared memory request (seen: {:?})",
                        &st.events[from.min(st.events.len())..]
                    ),
                    timeout_ms: timeout.as_millis(),
                });
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Read `len` bytes at `offset` of region `shmid`; only inside a live mapping.
    pub fn read(&self, shmid: u8, offset: u64, len: usize) -> Result<Vec<u8>> {
        let st = self.state();
        let region = st
            .regions
            .get(&shmid)
            .ok_or_else(|| Error::Memory(format!("no shared memory region {shmid}")))?;
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| Error::Memory("overflow".into()))?;
        let covered = region
            .maps
            .range(..=offset)
            .next_back()
            .is_some_and(|(&o, &l)| o + l >= end);
        if !covered {
            return Err(Error::Memory(format!(
                "[{offset:#x}, {end:#x}) of region {shmid} is not mapped"
            )));
        }
        let mut out = vec![0u8; len];
        // SAFETY: [offset, end) lies inside one live, readable mapping of our reservation
        // (checked above while holding the lock, so it cannot be unmapped concurrently).
        unsafe {
            std::ptr::copy_nonoverlapping(
                (region.base + offset as usize) as *const u8,
                out.as_mut_ptr(),
                len,
            );
        }
        Ok(out)
    }
}

impl BackendReqChannel {
    /// Write `data` at `offset` of region `shmid` (the guest writing through its mapping);
    /// only inside one live, writable mapping.
    pub fn write(&self, shmid: u8, offset: u64, data: &[u8]) -> Result<()> {
        let st = self.state();
        let region = st
            .regions
            .get(&shmid)
            .ok_or_else(|| Error::Memory(format!("no shared memory region {shmid}")))?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| Error::Memory("overflow".into()))?;
        let covering = region
            .maps
            .range(..=offset)
            .next_back()
            .filter(|(&o, &l)| o + l >= end)
            .map(|(&o, _)| o);
        match covering {
            None => Err(Error::Memory(format!(
                "[{offset:#x}, {end:#x}) of region {shmid} is not mapped"
            ))),
            Some(o) if region.read_only.contains(&o) => Err(Error::Memory(format!(
                "the mapping at {o:#x} of region {shmid} is read-only"
            ))),
            Some(_) => {
                // SAFETY: [offset, end) lies inside one live, writable mapping of our
                // reservation (checked above while holding the lock, so it cannot be unmapped
                // concurrently); `data` is a distinct buffer of that length.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        data.as_ptr(),
                        (region.base + offset as usize) as *mut u8,
                        data.len(),
                    );
                }
                Ok(())
            }
        }
    }
}

impl Drop for BackendReqChannel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::BorrowedFd;
    use std::os::unix::net::UnixStream;
    use vhost::vhost_user::Backend;

    #[test]
    fn shmem_map_read_unmap_through_a_real_backend_endpoint() {
        let ch = BackendReqChannel::start(true).unwrap();
        ch.add_region(1, 1 << 20).unwrap();
        // SAFETY: the channel keeps this fd open for its whole life, longer than the borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(ch.backend_fd()) };
        let sock = UnixStream::from(fd.try_clone_to_owned().unwrap());
        let backend = Backend::from_stream(sock);
        backend.set_reply_ack_flag(true);
        backend.set_shmem_flag(true);

        let mut file = tempfile_with(&[0x5a; 16384]);
        file.flush().unwrap();
        let req = VhostUserMMap {
            shmid: 1,
            fd_offset: 4096,
            shm_offset: 8192,
            len: 8192,
            flags: VhostUserMMapFlags::WRITABLE.bits(),
            ..VhostUserMMap::default()
        };
        assert_eq!(backend.shmem_map(&req, &file).unwrap(), 0);
        assert_eq!(ch.read(1, 8192, 16).unwrap(), vec![0x5a; 16]);
        assert!(
            ch.read(1, 0, 16).is_err(),
            "unmapped range must not be readable"
        );
        assert!(
            ch.read(1, 8192 + 8190, 4).is_err(),
            "range past the mapping"
        );
        // Overlap and out-of-region requests are refused (and recorded).
        let bad = VhostUserMMap {
            shm_offset: 12288,
            ..req
        };
        assert!(backend.shmem_map(&bad, &file).is_err());
        let outside = VhostUserMMap {
            shm_offset: 1 << 20,
            len: 4096,
            ..req
        };
        assert!(backend.shmem_map(&outside, &file).is_err());
        let unmap = VhostUserMMap { flags: 0, ..req };
        assert_eq!(backend.shmem_unmap(&unmap).unwrap(), 0);
        assert!(ch.read(1, 8192, 16).is_err());
        let st = ch.state();
        assert_eq!(st.events.len(), 4);
        assert!(matches!(st.events[0], ShmemEvent::Map { mapped: true, .. }));
        assert!(matches!(
            st.events[1],
            ShmemEvent::Map { mapped: false, .. }
        ));
        assert!(matches!(
            st.events[3],
            ShmemEvent::Unmap { unmapped: true, .. }
        ));
        assert_eq!(st.errors.len(), 2, "{:?}", st.errors);
    }

    fn tempfile_with(data: &[u8]) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("vugpu-shm-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        f.write_all(data).unwrap();
        f
    }
}
