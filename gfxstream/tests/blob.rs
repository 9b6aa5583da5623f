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
