//! Blobs: a mappable host blob, mapped, written and read back.

#[macro_use]
mod common;

#[cfg(gfxstream_found)]
use gfxstream::{blob_flags, BlobArgs, BlobMem, Capset, Error, MapCaching};

library_test! {
    /// A host ring blob (blob id 0) maps as cached host memory that keeps what is written.
    fn mappable_host_blob_is_mapped_and_written() {
        let gfx = common::init();
        let ctx = gfx.create_context(1, "blob", Some(Capset::Gles)).expect("context");
        let args = BlobArgs {
            mem: BlobMem::Host3d,
            flags: blob_flags::USE_MAPPABLE,
            blob_id: 0,
            size: 65536,
        };
        let blob = ctx.create_blob(5, &args).expect("blob");
        assert_eq!(blob.blob_size(), Some(65536));
        assert_eq!(blob.map_caching().expect("map info"), MapCaching::Cached);
        {
            let map = blob.map().expect("map");
            assert!(map.len() >= 65536);
            let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
            map.write(1000, &data).expect("write");
            let mut back = vec![0u8; data.len()];
            map.read(1000, &mut back).expect("read");
            assert!(back == data, "mapping did not keep the bytes");
            let end = map.len() as u64;
            assert!(matches!(map.write(end - 1, &[0, 0]), Err(Error::MappingOutOfBounds { .. })));
            assert!(matches!(map.read(u64::MAX, &mut [0]), Err(Error::MappingOutOfBounds { .. })));
        }
        // Mapped again: the bytes are still there (same host memory).
        let map = blob.map().expect("map again");
        let mut back = [0u8; 4];
        map.read(1001, &mut back).expect("read");
        assert_eq!(back, [7, 14, 21, 28]);
        drop(map);

        // Host-memory ring blobs cannot be exported, and have no Vulkan memory.
        assert!(matches!(blob.export(), Err(Error::Library { errno: 22, .. })));
        assert!(matches!(blob.vulkan_info(), Err(Error::Library { errno: 22, .. })));

        // The library "succeeds" at creating a blob for an unknown blob id; the binding notices.
        let missing = BlobArgs { blob_id: 1234, ..args };
        assert!(matches!(ctx.create_blob(6, &missing), Err(Error::BlobNotCreated(6))));
        // Refused arguments.
        assert!(matches!(ctx.create_blob(5, &args), Err(Error::ResourceExists(5))));
        let zero = BlobArgs { size: 0, ..args };
        assert!(matches!(ctx.create_blob(7, &zero), Err(Error::InvalidBlob { .. })));
        let guest_handle = BlobArgs { flags: blob_flags::CREATE_GUEST_HANDLE, ..args };
        assert!(matches!(ctx.create_blob(7, &guest_handle), Err(Error::InvalidBlob { .. })));
        // Classic transfers do not apply to blobs.
        let bx = gfxstream::TransferBox { x: 0, y: 0, z: 0, w: 1, h: 1, d: 1 };
        assert!(matches!(blob.transfer_write(&bx, 0, None), Err(Error::WrongResourceKind { .. })));
    }
}

library_test! {
    /// With external blobs, a host blob is shared memory: exported once as an fd of kind `Shm`
    /// that maps to the same bytes; it cannot be mapped in-process.
    fn external_host_blob_exports_a_shm_fd() {
        use gfxstream::{Gfxstream, HandleKind, InitOptions, RendererFlags};
        use std::os::fd::AsRawFd;

        common::prepare_env();
        let gfx = Gfxstream::init(&InitOptions {
            flags: RendererFlags::USE_EGL
                | RendererFlags::USE_GLES
                | RendererFlags::USE_EXTERNAL_BLOB,
            ..InitOptions::default()
        })
        .expect("init with external blobs");
        let ctx = gfx.create_context(1, "blob", Some(Capset::Gles)).expect("context");
        let size = 8192usize;
        let args = BlobArgs {
            mem: BlobMem::Host3d,
            flags: blob_flags::USE_MAPPABLE | blob_flags::USE_SHAREABLE,
            blob_id: 0,
            size: size as u64,
        };
        let blob = ctx.create_blob(9, &args).expect("blob");
        assert!(matches!(blob.map(), Err(Error::Library { errno: 22, .. })));
        let exported = blob.export().expect("export");
        assert_eq!(exported.kind, HandleKind::Shm);
        // The library's own shared memory maps from 0.
        // A second export has nothing left to hand over.
        assert!(blob.export().is_err());

        let fd = exported.fd.as_raw_fd();
        // SAFETY: `libc::stat` is plain integers: all zeroes is a valid value.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `stat` is a valid out-struct and `fd` an open descriptor.
        assert_eq!(unsafe { libc::fstat(fd, &mut stat) }, 0);
        assert!(stat.st_size as usize >= size, "shm of {} bytes", stat.st_size);
        // SAFETY: maps `size` bytes of a shared-memory fd we own; unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: `p` is a fresh `size`-byte read/write mapping.
        let bytes = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), size) };
        bytes[..4].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(&bytes[..4], &[1, 2, 3, 4]);
        // SAFETY: unmaps the mapping made above; `bytes` is not used after.
        unsafe { libc::munmap(p, size) };
    }
}
