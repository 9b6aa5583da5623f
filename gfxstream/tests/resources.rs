//! Classic resources: a byte-exact round trip through transfer_write / transfer_read.

#[macro_use]
mod common;

#[cfg(gfxstream_found)]
use gfxstream::{bind, format, target, Error, ResourceCreateArgs, TransferBox};

#[cfg(gfxstream_found)]
const W: u32 = 64;
#[cfg(gfxstream_found)]
const H: u32 = 64;

#[cfg(gfxstream_found)]
fn rgba_args() -> ResourceCreateArgs {
    ResourceCreateArgs {
        target: target::PIPE_TEXTURE_2D,
        format: format::R8G8B8A8_UNORM,
        bind: bind::SAMPLER_VIEW | bind::RENDER_TARGET,
        width: W,
        height: H,
        depth: 1,
        array_size: 1,
        ..ResourceCreateArgs::default()
    }
}

#[cfg(gfxstream_found)]
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

library_test! {
    /// Pixels written from a buffer and from the attached backing come back byte-exact.
    fn resource_round_trip_is_byte_exact() {
        let gfx = common::init();
        let mut res = gfx.create_resource(1, &rgba_args()).expect("resource");
        let len = (W * H * 4) as usize;
        let whole = TransferBox { x: 0, y: 0, z: 0, w: W, h: H, d: 1 };

        // Transfers need a backing (the library sizes its staging copy from it).
        assert!(matches!(res.transfer_write(&whole, 0, None), Err(Error::NoBacking(1))));
        let backing_pixels = pattern(len, 7);
        res.attach_backing(Box::new(backing_pixels.clone())).expect("attach");

        // From the attached backing into the colour buffer, then out into a fresh buffer.
        res.transfer_write(&whole, 0, None).expect("write from backing");
        let mut out = vec![0u8; len];
        res.transfer_read(&whole, 0, Some(&mut out)).expect("read");
        assert!(out == backing_pixels, "round trip through the backing differs");

        // From an explicit buffer.
        let pixels = pattern(len, 99);
        res.transfer_write(&whole, 0, Some(&pixels)).expect("write from buffer");
        let mut out = vec![0u8; len];
        res.transfer_read(&whole, 0, Some(&mut out)).expect("read");
        assert!(out == pixels, "round trip through a buffer differs");

        // A sub-rectangle: the library copies the linear span of the box from the source
        // (from its first to its last byte, rows in between included), and nothing outside it.
        let sub = TransferBox { x: 8, y: 4, z: 0, w: 16, h: 8, d: 1 };
        let stride = (W * 4) as usize;
        let span = (4 * stride + 8 * 4)..(11 * stride + 24 * 4);
        let mut expected = pixels.clone();
        for y in 4..12 {
            expected[y * stride + 8 * 4..y * stride + 24 * 4].fill(0);
        }
        let mut src = expected.clone();
        src[..span.start].fill(0xee);
        src[span.end..].fill(0xee);
        res.transfer_write(&sub, 0, Some(&src)).expect("write sub-rectangle");
        let mut out = vec![0u8; len];
        res.transfer_read(&whole, 0, Some(&mut out)).expect("read");
        for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "byte {i} (pixel {},{})", (i % stride) / 4, i / stride);
        }

        let info = res.info().expect("info");
        assert_eq!((info.width, info.height, info.stride), (W, H, W * 4));
        assert_eq!(info.drm_fourcc, u32::from_le_bytes(*b"AB24"));
    }
}

library_test! {
    /// Boxes outside the resource, bad sizes and reused ids are refused.
    fn resources_are_bounds_checked() {
        let gfx = common::init();
        let mut res = gfx.create_resource(1, &rgba_args()).expect("resource");
        res.attach_backing(Box::new(vec![0u8; (W * H * 4) as usize])).expect("attach");
        let mut buf = vec![0u8; (W * H * 4) as usize];
        for bx in [
            TransferBox { x: 1, y: 0, z: 0, w: W, h: 1, d: 1 },
            TransferBox { x: 0, y: H, z: 0, w: 1, h: 1, d: 1 },
            TransferBox { x: 0, y: 0, z: 0, w: 0, h: 1, d: 1 },
            TransferBox { x: u32::MAX, y: 0, z: 0, w: 2, h: 1, d: 1 },
        ] {
            let err = res.transfer_read(&bx, 0, Some(&mut buf));
            assert!(matches!(err, Err(Error::BoxOutOfBounds { .. })), "{bx:?}: {err:?}");
        }
        // A destination too small for the box: the library's own check, normalised.
        let whole = TransferBox { x: 0, y: 0, z: 0, w: W, h: H, d: 1 };
        let err = res.transfer_read(&whole, 0, Some(&mut buf[..16]));
        assert!(matches!(err, Err(Error::Library { errno: 22, .. })), "{err:?}");

        assert!(matches!(gfx.create_resource(1, &rgba_args()), Err(Error::ResourceExists(1))));
        assert!(matches!(gfx.create_resource(0, &rgba_args()), Err(Error::ZeroId(_))));
        let huge = ResourceCreateArgs { width: 100_000, ..rgba_args() };
        assert!(matches!(gfx.create_resource(2, &huge), Err(Error::InvalidDimensions { .. })));
        let empty = ResourceCreateArgs { height: 0, ..rgba_args() };
        assert!(matches!(gfx.create_resource(2, &empty), Err(Error::InvalidDimensions { .. })));
        assert!(matches!(
            res.attach_backing(Box::new(Vec::new())),
            Err(Error::InvalidBacking { .. })
        ));
        // A backing smaller than the image is refused before the library would overflow its
        // staging copy with the whole image.
        res.attach_backing(Box::new(vec![0u8; 64])).expect("attach small backing");
        let err = res.transfer_read(&whole, 0, Some(&mut buf));
        assert!(matches!(err, Err(Error::BackingTooSmall { have: 64, .. })), "{err:?}");
        let err = res.transfer_write(&whole, 0, None);
        assert!(matches!(err, Err(Error::BackingTooSmall { .. })), "{err:?}");
        // Dropping frees the id.
        drop(res);
        gfx.create_resource(1, &rgba_args()).expect("id reusable after drop");
    }
}
