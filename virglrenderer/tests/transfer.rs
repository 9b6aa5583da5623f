//! 2D resources: transfers from attached backing and caller buffers, read-back, bounds.

mod common;

use virglrenderer::format::{B8G8R8A8_UNORM, R8G8B8A8_UNORM};
use virglrenderer::{Error, Rect, ScatteredBuffers, Transfer};

const W: u32 = 37;
const H: u32 = 23;

fn full() -> Rect {
    Rect {
        x: 0,
        y: 0,
        width: W,
        height: H,
    }
}

#[test]
fn write_from_backing_then_read_back_byte_exact() {
    let _lock = common::lock();
    let r = common::renderer();
    let res = r.create_resource_2d(1, B8G8R8A8_UNORM, W, H).unwrap();
    let len = (W * H * 4) as usize;
    let data = common::pattern(len, 1);
    // Scatter the image over odd-sized "pages" like guest memory.
    let mut pages = Vec::new();
    let mut rest = &data[..];
    for size in [1usize, 4095, 7, 1000].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = (*size).min(rest.len());
        pages.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    res.attach_backing(Box::new(ScatteredBuffers(pages)))
        .unwrap();
    assert_eq!(res.backing_len(), len as u64);
    res.transfer_write(None, &Transfer::rect_2d(full(), 0))
        .unwrap();

    let mut out = vec![0u8; len];
    res.read_pixels(full(), &mut out, W * 4).unwrap();
    assert!(out == data, "read-back differs from what was written");
}

#[test]
fn caller_buffer_transfers_with_subrects_offsets_and_strides() {
    let _lock = common::lock();
    let r = common::renderer();
    let res = r.create_resource_2d(3, R8G8B8A8_UNORM, W, H).unwrap();
    let len = (W * H * 4) as usize;
    let data = common::pattern(len, 2);
    res.write_from(None, &Transfer::rect_2d(full(), 0), &data)
        .unwrap();

    // A sub-rectangle into a buffer with a wide stride and a leading offset.
    let rect = Rect {
        x: 3,
        y: 5,
        width: 11,
        height: 7,
    };
    let stride = 64u32;
    let offset = 16u64;
    let mut out = vec![0xaau8; offset as usize + (stride * rect.height) as usize];
    let t = Transfer {
        stride,
        ..Transfer::rect_2d(rect, offset)
    };
    res.read_into(None, &t, &mut out).unwrap();
    for row in 0..rect.height {
        let src = (((rect.y + row) * W + rect.x) * 4) as usize;
        let dst = offset as usize + (row * stride) as usize;
        assert_eq!(
            &out[dst..dst + (rect.width * 4) as usize],
            &data[src..src + (rect.width * 4) as usize],
            "row {row}"
        );
    }
    // Bytes before the offset are untouched.
    assert!(out[..offset as usize].iter().all(|&b| b == 0xaa));

    // read_pixels with a caller stride.
    let mut px = vec![0u8; (stride * (rect.height - 1) + rect.width * 4) as usize];
    res.read_pixels(rect, &mut px, stride).unwrap();
    for row in 0..rect.height {
        let src = (((rect.y + row) * W + rect.x) * 4) as usize;
        let dst = (row * stride) as usize;
        assert_eq!(
            &px[dst..dst + (rect.width * 4) as usize],
            &data[src..src + (rect.width * 4) as usize]
        );
    }
}

#[test]
fn bounds_and_backing_errors() {
    let _lock = common::lock();
    let r = common::renderer();
    let res = r.create_resource_2d(4, B8G8R8A8_UNORM, W, H).unwrap();
    // No backing yet.
    assert!(matches!(
        res.transfer_write(None, &Transfer::rect_2d(full(), 0)),
        Err(Error::NoBacking(4))
    ));
    // Read-back outside the resource, too small buffer, too small stride.
    let mut buf = vec![0u8; 4 * (W * H) as usize];
    let outside = Rect {
        x: W - 1,
        y: 0,
        width: 2,
        height: 1,
    };
    assert!(matches!(
        res.read_pixels(outside, &mut buf, W * 4),
        Err(Error::OutOfBounds { .. })
    ));
    let huge = Rect {
        x: u32::MAX,
        y: 0,
        width: 2,
        height: 1,
    };
    assert!(matches!(
        res.read_pixels(huge, &mut buf, W * 4),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        res.read_pixels(full(), &mut buf[..100], W * 4),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(matches!(
        res.read_pixels(full(), &mut buf, 4),
        Err(Error::InvalidArgument(_))
    ));
    // The library's own bounds check refuses a caller buffer that is too small.
    let mut small = vec![0u8; 16];
    assert!(matches!(
        res.read_into(None, &Transfer::rect_2d(full(), 0), &mut small),
        Err(Error::Library { .. })
    ));
    // Backing too small for the box: refused by the library, no out-of-bounds read.
    res.attach_backing(Box::new(vec![0u8; 64])).unwrap();
    assert!(matches!(
        res.transfer_write(None, &Transfer::rect_2d(full(), 0)),
        Err(Error::Library { .. })
    ));
    // Double attach is refused; detach gives the memory back; re-attach works.
    assert!(matches!(
        res.attach_backing(Box::new(vec![0u8; 64])),
        Err(Error::BackingAlreadyAttached(4))
    ));
    assert!(res.detach_backing().is_some());
    assert!(!res.has_backing());
    assert!(res.detach_backing().is_none());
    res.attach_backing(Box::new(vec![0u8; (W * H * 4) as usize]))
        .unwrap();
    res.transfer_write(None, &Transfer::rect_2d(full(), 0))
        .unwrap();
}

#[test]
fn resource_ids_collide_and_free() {
    let _lock = common::lock();
    let r = common::renderer();
    let a = r.create_resource_2d(9, B8G8R8A8_UNORM, 4, 4).unwrap();
    assert!(matches!(
        r.create_resource_2d(9, B8G8R8A8_UNORM, 4, 4),
        Err(Error::ResourceIdInUse(9))
    ));
    assert!(matches!(
        r.create_resource_2d(0, B8G8R8A8_UNORM, 4, 4),
        Err(Error::ZeroId(_))
    ));
    drop(a);
    r.create_resource_2d(9, B8G8R8A8_UNORM, 4, 4).unwrap();
    // A bad format is refused by the library.
    assert!(matches!(
        r.create_resource_2d(10, 0xdead, 4, 4),
        Err(Error::Library { .. })
    ));
}

#[test]
fn info_reports_format_and_size() {
    let _lock = common::lock();
    let r = common::renderer();
    let res = r.create_resource_2d(2, B8G8R8A8_UNORM, W, H).unwrap();
    let info = res.info().unwrap();
    assert_eq!((info.width, info.height, info.depth), (W, H, 1));
    assert_eq!(info.virgl_format, B8G8R8A8_UNORM);
    assert_eq!(info.drm_fourcc, Some(virglrenderer::DrmFourcc::Argb8888));
    assert!(info.y_0_top);
}
