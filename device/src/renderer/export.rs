//! Exported blob handles: where a handle's memory starts.
//!
//! A host blob reaches the frontend (RESOURCE_MAP_BLOB → SHMEM_MAP) and the daemon's own
//! read-backs as a descriptor that is mapped with `mmap`. Shared memory of the renderer library
//! starts at offset 0, but a host Vulkan driver's exported memory need not: Mesa's lavapipe
//! allocates every exportable `VkDeviceMemory` with `os_malloc_aligned_fd`
//! (`src/util/os_memory_fd.c`) and hands that memfd out for OPAQUE_FD and DMA_BUF requests alike.
//! Such a file is `[size][offset][uuid: 16 bytes] … [offset][memory …]` (the two fields and the
//! copy before the memory are `size_t`): the memory starts at `offset`, after a header. Mapped
//! from 0, the guest sees its memory 4 KiB off (Venus and gfxstream alike) and can overwrite the
//! header, which lavapipe reads back when it frees the memory.

use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;

use super::BlobHandleKind;

/// Where the memory of an exported handle of `kind` starts in the descriptor.
///
/// 0 for shared memory (the renderer library's own), and for a driver's handle unless it is a
/// file of Mesa's layout, every part of which is checked: `size` is the whole file, `offset` is
/// word-aligned, past the header and inside the file, and the copy of `offset` just before the
/// memory matches. Anything else (a real dmabuf cannot even be read) starts at 0. The caller
/// still checks that the file covers `offset` plus the mapping.
pub fn memory_offset(fd: BorrowedFd<'_>, kind: BlobHandleKind) -> u64 {
    match kind {
        BlobHandleKind::Shm => 0,
        BlobHandleKind::Dmabuf | BlobHandleKind::OpaqueFd => mesa_memory_file_offset(fd),
    }
}

fn mesa_memory_file_offset(fd: BorrowedFd<'_>) -> u64 {
    const W: usize = std::mem::size_of::<usize>();
    let word = |bytes: &[u8]| {
        let mut b = [0u8; W];
        b.copy_from_slice(bytes);
        usize::from_ne_bytes(b) as u64
    };
    let Ok(file) = fd.try_clone_to_owned().map(std::fs::File::from) else {
        return 0;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return 0;
    };
    let mut header = [0u8; 2 * W];
    if file.read_exact_at(&mut header, 0).is_err() {
        return 0;
    }
    let (size, offset) = (word(&header[..W]), word(&header[W..]));
    // The header (two words and a 16-byte uuid) and the copy of `offset` come first.
    let header_len = (3 * W + 16) as u64;
    if size != len || offset < header_len || offset >= len || offset % W as u64 != 0 {
        return 0;
    }
    let mut copy = [0u8; W];
    match file.read_exact_at(&mut copy, offset - W as u64) {
        Ok(()) if word(&copy) == offset => offset,
        _ => 0,
    }
}

/// Test files of Mesa's layout, for this module's tests and the device's.
#[cfg(test)]
pub(crate) mod test_files {
    use std::os::unix::fs::FileExt;

    /// An unlinked file laid out like Mesa's `os_malloc_aligned_fd` makes it: `size` bytes of
    /// memory (0xcd) at `offset`, after the header and a copy of `offset`.
    pub(crate) fn mesa_memory_file(size: usize, offset: usize) -> std::io::Result<std::fs::File> {
        const W: usize = std::mem::size_of::<usize>();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("vugpu-mesa-file-{}-{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        let total = offset + size;
        let mut bytes = vec![0u8; total];
        bytes[..W].copy_from_slice(&total.to_ne_bytes());
        bytes[W..2 * W].copy_from_slice(&offset.to_ne_bytes());
        bytes[2 * W..2 * W + 16].copy_from_slice(&[0x5a; 16]);
        bytes[offset - W..offset].copy_from_slice(&offset.to_ne_bytes());
        bytes[offset..].fill(0xcd);
        file.write_all_at(&bytes, 0)?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::test_files::mesa_memory_file;
    use super::*;
    use std::os::fd::AsFd;

    fn mesa_file(size: usize, offset: usize) -> std::fs::File {
        mesa_memory_file(size, offset).unwrap()
    }

    #[test]
    fn the_memory_offset_of_a_mesa_memory_file_is_found() {
        // What lavapipe exported here (Mesa 25.0.7, 4 KiB pages): 16 KiB at 4096.
        let file = mesa_file(16384, 4096);
        assert_eq!(memory_offset(file.as_fd(), BlobHandleKind::Dmabuf), 4096);

        // One check off, and the file is taken to start at 0.
        let w = std::mem::size_of::<usize>() as u64;
        let broken = mesa_file(16384, 4096);
        broken.write_all_at(&[0u8; 8], 4096 - w).unwrap();
        assert_eq!(
            memory_offset(broken.as_fd(), BlobHandleKind::Dmabuf),
            0,
            "no copy of the offset"
        );
        let grown = mesa_file(16384, 4096);
        grown.set_len(16384 + 8192).unwrap();
        assert_eq!(
            memory_offset(grown.as_fd(), BlobHandleKind::Dmabuf),
            0,
            "size is not the file's"
        );
        let odd = mesa_file(100, 4096);
        odd.write_all_at(&4093usize.to_ne_bytes(), w).unwrap();
        assert_eq!(
            memory_offset(odd.as_fd(), BlobHandleKind::Dmabuf),
            0,
            "unaligned offset"
        );
        // Plain shared memory (zeros, or guest data) and what cannot be read start at 0.
        let plain = mesa_file(64, 64);
        plain.set_len(0).unwrap();
        plain.set_len(8192).unwrap();
        assert_eq!(memory_offset(plain.as_fd(), BlobHandleKind::Dmabuf), 0);
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(memory_offset(socket.as_fd(), BlobHandleKind::Dmabuf), 0);
    }

    #[test]
    fn shared_memory_starts_at_0_whatever_it_holds() {
        let file = mesa_file(16384, 4096);
        assert_eq!(memory_offset(file.as_fd(), BlobHandleKind::Shm), 0);
        assert_eq!(memory_offset(file.as_fd(), BlobHandleKind::OpaqueFd), 4096);
    }
}
