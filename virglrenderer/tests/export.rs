//! Exports: dmabuf export of a scanout resource is refused with a typed error on llvmpipe
//! (instead of crashing); blob resources; handle kinds.

mod common;

use virglrenderer::format::B8G8R8X8_UNORM;
use virglrenderer::{BlobCreate, BlobMem, Error, BLOB_FLAG_USE_MAPPABLE};

#[test]
fn dmabuf_export_is_a_typed_error_on_llvmpipe() {
    let r = common::renderer();
    // This machine (and CI) renders with Mesa llvmpipe: no dmabufs.
    assert!(
        r.is_software(),
        "expected a software rasterizer in this environment"
    );
    let res = r.create_resource_2d(1, B8G8R8X8_UNORM, 64, 64).unwrap();
    match res.export_dmabuf() {
        Err(Error::DmabufUnsupported(why)) => assert!(why.contains("software")),
        other => panic!("{other:?}"),
    }
    // Classic resources are not blobs.
    assert!(matches!(res.export_blob(), Err(Error::NotBlob(1))));
    assert!(matches!(res.map(), Err(Error::NotBlob(1))));
    // The resource is still fine afterwards.
    assert_eq!(res.info().unwrap().width, 64);
}

#[test]
fn guest_blob_owns_its_backing() {
    let r = common::renderer();
    let ctx = r.create_context(1, b"blob", None).unwrap();
    let args = BlobCreate {
        mem: BlobMem::Guest,
        flags: BLOB_FLAG_USE_MAPPABLE,
        blob_id: 0,
        size: 8192,
    };
    // Guest blobs need backing of at least `size` bytes.
    assert!(matches!(
        r.create_blob(1, Some(&ctx), &args, None),
        Err(Error::NoBacking(1))
    ));
    assert!(matches!(
        r.create_blob(1, Some(&ctx), &args, Some(Box::new(vec![0u8; 4096]))),
        Err(Error::BufferTooSmall { .. })
    ));
    let blob = r
        .create_blob(1, Some(&ctx), &args, Some(Box::new(vec![7u8; 8192])))
        .unwrap();
    assert!(blob.is_blob());
    assert_eq!(blob.backing_len(), 8192);
    assert!(matches!(
        r.create_blob(1, Some(&ctx), &args, Some(Box::new(vec![0u8; 8192]))),
        Err(Error::ResourceIdInUse(1))
    ));
    // A guest blob is not exportable/mappable by the host renderer: typed library errors.
    assert!(matches!(blob.export_blob(), Err(Error::Library { .. })));
    assert!(matches!(blob.export_dmabuf(), Err(Error::Library { .. })));
    assert!(blob.map().is_err());
    assert!(matches!(
        blob.read_mapped(0, &mut [0u8; 4]),
        Err(Error::NotMapped(1))
    ));
    // Backing cannot be swapped on a blob.
    assert!(matches!(
        blob.attach_backing(Box::new(vec![0u8; 8192])),
        Err(Error::IsBlob(1))
    ));
}

#[test]
fn host3d_blob_needs_a_context() {
    let r = common::renderer();
    let args = BlobCreate {
        mem: BlobMem::Host3d,
        flags: BLOB_FLAG_USE_MAPPABLE,
        blob_id: 1,
        size: 4096,
    };
    assert!(matches!(
        r.create_blob(1, None, &args, None),
        Err(Error::InvalidArgument(_))
    ));
    // blob_id 1 was never allocated by the context's command stream: the library refuses.
    let ctx = r.create_context(1, b"h3d", None).unwrap();
    assert!(matches!(
        r.create_blob(1, Some(&ctx), &args, None),
        Err(Error::Library { .. })
    ));
}
