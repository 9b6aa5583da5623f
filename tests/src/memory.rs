//! Guest memory: one memfd, mapped shared into this process and handed to the backend with
//! SET_MEM_TABLE, plus a small first-fit allocator for virtqueues, request buffers and backings.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::error::{Error, Result};

/// The mapping type (vm-memory's mmap collection).
pub type Mmap = vm_memory::GuestMemoryMmap<()>;

/// Guest physical address where guest memory starts.
pub const GUEST_BASE: u64 = 0;
/// The allocator never hands out addresses below this (address 0 stays unused, so a zeroed
/// descriptor never points at live data).
pub const ALLOC_START: u64 = 0x1_0000;
/// Smallest guest memory the harness accepts.
pub const MIN_MEMORY: u64 = 4 << 20;

/// Guest RAM shared with the backend.
pub struct GuestMemory {
    mem: Mmap,
    size: u64,
    free: Mutex<BTreeMap<u64, u64>>,
}

impl GuestMemory {
    /// Create `size` bytes of guest memory backed by a memfd.
    pub fn new(size: u64) -> Result<Self> {
        if size < MIN_MEMORY {
            return Err(Error::Memory(format!("{size} bytes is below {MIN_MEMORY}")));
        }
        let name =
            CString::new("vhost-user-gpu-tests-guest").map_err(|_| Error::Memory("name".into()))?;
        // SAFETY: memfd_create reads a NUL-terminated string that outlives the call; the fd it
        // returns (checked below) is owned by nobody else.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::io("memfd_create", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh, valid descriptor that we own exclusively.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size)
            .map_err(|e| Error::io("ftruncate guest memfd", e))?;
        let len = usize::try_from(size).map_err(|_| Error::Memory("size".into()))?;
        let mem = Mmap::from_ranges_with_files([(
            GuestAddress(GUEST_BASE),
            len,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(|e| Error::Memory(format!("mmap guest memory: {e}")))?;
        let mut free = BTreeMap::new();
        free.insert(ALLOC_START, size - ALLOC_START);
        Ok(GuestMemory {
            mem,
            size,
            free: Mutex::new(free),
        })
    }

    /// The vm-memory view (for Bytes/atomic access).
    pub fn mmap(&self) -> &Mmap {
        &self.mem
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The SET_MEM_TABLE entry for this memory (fd, our mapping's address, GPA).
    pub fn region_info(&self) -> Result<VhostUserMemoryRegionInfo> {
        let region = self
            .mem
            .find_region(GuestAddress(GUEST_BASE))
            .ok_or_else(|| Error::Memory("no region".into()))?;
        VhostUserMemoryRegionInfo::from_guest_region(region)
            .map_err(|e| Error::Memory(format!("region info: {e}")))
    }

    /// Our own virtual address of guest address `gpa` (vring addresses in vhost-user are the
    /// frontend's virtual addresses).
    pub fn host_address(&self, gpa: u64) -> Result<u64> {
        let region = self
            .mem
            .find_region(GuestAddress(gpa))
            .ok_or_else(|| Error::Memory(format!("{gpa:#x} not in guest memory")))?;
        Ok(region.as_ptr() as u64 + (gpa - region.start_addr().0))
    }

    /// Write `data` at `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<()> {
        self.mem
            .write_slice(data, GuestAddress(gpa))
            .map_err(|e| Error::Memory(format!("write {} bytes at {gpa:#x}: {e}", data.len())))
    }

    /// Read `len` bytes at `gpa`.
    pub fn read(&self, gpa: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, GuestAddress(gpa))
            .map_err(|e| Error::Memory(format!("read {len} bytes at {gpa:#x}: {e}")))?;
        Ok(v)
    }

    /// Atomic store of a u16 (ring indices).
    pub fn store_u16(&self, gpa: u64, v: u16, order: Ordering) -> Result<()> {
        self.mem
            .store(v, GuestAddress(gpa), order)
            .map_err(|e| Error::Memory(format!("store at {gpa:#x}: {e}")))
    }

    /// Atomic load of a u16 (ring indices).
    pub fn load_u16(&self, gpa: u64, order: Ordering) -> Result<u16> {
        self.mem
            .load(GuestAddress(gpa), order)
            .map_err(|e| Error::Memory(format!("load at {gpa:#x}: {e}")))
    }

    /// Allocate `len` bytes aligned to `align` (a power of two), zero-filled.
    pub fn alloc(&self, len: u64, align: u64) -> Result<u64> {
        if len == 0 || !align.is_power_of_two() {
            return Err(Error::Memory(format!("bad allocation {len} align {align}")));
        }
        let mut free = self
            .free
            .lock()
            .map_err(|_| Error::Memory("poisoned".into()))?;
        let found = free.iter().find_map(|(&start, &flen)| {
            let a = start.checked_add(align - 1)? & !(align - 1);
            let end = a.checked_add(len)?;
            (end <= start + flen).then_some((start, flen, a, end))
        });
        let (start, flen, a, end) = found.ok_or(Error::Exhausted("guest memory"))?;
        free.remove(&start);
        if a > start {
            free.insert(start, a - start);
        }
        if end < start + flen {
            free.insert(end, start + flen - end);
        }
        drop(free);
        self.write(a, &vec![0u8; len as usize])?;
        Ok(a)
    }

    /// Give back an allocation made by [`GuestMemory::alloc`] (the exact `addr`, `len`).
    pub fn free(&self, addr: u64, len: u64) {
        let Ok(mut free) = self.free.lock() else {
            return;
        };
        let mut start = addr;
        let mut flen = len;
        if let Some((&ps, &pl)) = free.range(..addr).next_back() {
            if ps + pl == addr {
                free.remove(&ps);
                start = ps;
                flen += pl;
            }
        }
        if let Some(&nl) = free.get(&(addr + len)) {
            free.remove(&(addr + len));
            flen += nl;
        }
        free.insert(start, flen);
    }

    /// Bytes currently free (for leak checks of the harness itself).
    pub fn free_bytes(&self) -> u64 {
        self.free.lock().map(|f| f.values().sum()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_coalesce() {
        let m = GuestMemory::new(8 << 20).unwrap();
        let total = m.free_bytes();
        let a = m.alloc(100, 16).unwrap();
        let b = m.alloc(4096, 4096).unwrap();
        assert_eq!(b % 4096, 0);
        assert!(a >= ALLOC_START);
        m.write(b, &[1, 2, 3]).unwrap();
        assert_eq!(m.read(b, 3).unwrap(), vec![1, 2, 3]);
        m.free(a, 100);
        m.free(b, 4096);
        // Alignment gaps are returned separately; everything must be free again.
        assert_eq!(m.free_bytes(), total);
        assert!(m.alloc(8 << 20, 1).is_err());
        assert!(m.host_address(0x2000).unwrap() > 0);
    }
}
