//! The virtio-gpu 2D pixel formats: the spec's eight 32-bit RGB formats ([`PixelFormat`]), their
//! DRM fourcc, and their conversion to the display's little-endian ARGB8888 (XRGB8888 for
//! scanouts, ARGB8888 for cursors).
//!
//! Every renderer and the device share these: the device checks a RESOURCE_CREATE_2D format and
//! sizes host memory with them, the renderers convert what they read back
//! ([`readback`](super::readback)).

use drm_fourcc::DrmFourcc;

use crate::protocol::{
    VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM, VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM,
    VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
    VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM,
    VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM, VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM,
};

/// Bytes per pixel of every format the spec defines for 2D resources.
pub const BYTES_PER_PIXEL: u32 = 4;

/// One of the spec's 2D pixel formats. The virtio names give the byte order in memory
/// (`B8G8R8A8`: byte 0 is blue), which is the DRM fourcc of the reversed name on a
/// little-endian word (`ARGB8888`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelFormat {
    /// `VIRTIO_GPU_FORMAT_*`.
    pub virtio: u32,
    /// The same layout as a DRM fourcc.
    pub fourcc: DrmFourcc,
    /// Byte index of blue, green, red within a pixel.
    bgr: [usize; 3],
    /// Byte index of alpha, `None` for the X formats.
    alpha: Option<usize>,
}

impl PixelFormat {
    /// The format of `VIRTIO_GPU_FORMAT_*` `virtio`, `None` if the spec has no such 2D format.
    pub fn from_virtio(virtio: u32) -> Option<PixelFormat> {
        let (fourcc, bgr, alpha) = match virtio {
            VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM => (DrmFourcc::Argb8888, [0, 1, 2], Some(3)),
            VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM => (DrmFourcc::Xrgb8888, [0, 1, 2], None),
            VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM => (DrmFourcc::Bgra8888, [3, 2, 1], Some(0)),
            VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM => (DrmFourcc::Bgrx8888, [3, 2, 1], None),
            VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM => (DrmFourcc::Abgr8888, [2, 1, 0], Some(3)),
            VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM => (DrmFourcc::Rgbx8888, [1, 2, 3], None),
            VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM => (DrmFourcc::Rgba8888, [1, 2, 3], Some(0)),
            VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM => (DrmFourcc::Xbgr8888, [2, 1, 0], None),
            _ => return None,
        };
        Some(PixelFormat {
            virtio,
            fourcc,
            bgr,
            alpha,
        })
    }

    /// Converts one row of pixels in this format to little-endian ARGB8888 (bytes B, G, R, A;
    /// A = 0xff without alpha). `src` and `dst` have the same length, a multiple of 4.
    pub fn row_to_argb8888(&self, src: &[u8], dst: &mut [u8]) {
        if self.virtio == VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM && src.len() == dst.len() {
            // Already B, G, R, A in memory.
            dst.copy_from_slice(src);
            return;
        }
        let (b, g, r, a) = self.word_shifts();
        macro_rules! convert {
            ($f:expr) => {{
                let f = $f;
                for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(4)) {
                    let w = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    d.copy_from_slice(&f(w).to_le_bytes());
                }
            }};
        }
        match self.virtio {
            VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM => convert!(|w: u32| w | 0xff00_0000),
            VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM => convert!(u32::swap_bytes),
            VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM => convert!(|w: u32| w.swap_bytes() | 0xff00_0000),
            VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM => convert!(swap_red_blue),
            VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM => convert!(|w| swap_red_blue(w) | 0xff00_0000),
            VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM => convert!(|w: u32| w.rotate_right(8)),
            VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM => convert!(|w: u32| (w >> 8) | 0xff00_0000),
            _ => convert!(|w| by_shifts(w, b, g, r, a)),
        }
    }

    /// Converts pixels in this format to little-endian ARGB8888 where they lie, like
    /// [`PixelFormat::row_to_argb8888`]; a trailing partial pixel is left as it is.
    pub fn to_argb8888_in_place(&self, pixels: &mut [u8]) {
        let (b, g, r, a) = self.word_shifts();
        macro_rules! convert {
            ($f:expr) => {{
                let f = $f;
                for p in pixels.chunks_exact_mut(4) {
                    let w = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                    p.copy_from_slice(&f(w).to_le_bytes());
                }
            }};
        }
        match self.virtio {
            VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM => {}
            VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM => convert!(|w: u32| w | 0xff00_0000),
            VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM => convert!(u32::swap_bytes),
            VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM => convert!(|w: u32| w.swap_bytes() | 0xff00_0000),
            VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM => convert!(swap_red_blue),
            VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM => convert!(|w| swap_red_blue(w) | 0xff00_0000),
            VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM => convert!(|w: u32| w.rotate_right(8)),
            VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM => convert!(|w: u32| (w >> 8) | 0xff00_0000),
            _ => convert!(|w| by_shifts(w, b, g, r, a)),
        }
    }

    /// Bit offsets of blue, green, red and alpha (`None`: no alpha) in a pixel read as a
    /// little-endian word (byte i is bits 8i..8i+8).
    fn word_shifts(&self) -> (u32, u32, u32, Option<u32>) {
        let [b, g, r] = self.bgr.map(|i| 8 * i as u32);
        (b, g, r, self.alpha.map(|i| 8 * i as u32))
    }
    /// Whether pixels of this format are already the display's `x8r8g8b8` bytes (B, G, R and
    /// alpha or an ignored byte), so that rows can go to the display as they are.
    pub fn is_x8r8g8b8(&self) -> bool {
        matches!(
            self.virtio,
            VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM | VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM
        )
    }
}

/// Bytes R, G, B, A (a little-endian word) to B, G, R, A: bytes 0 and 2 trade places.
fn swap_red_blue(w: u32) -> u32 {
    (w & 0xff00_ff00) | ((w >> 16) & 0xff) | ((w & 0xff) << 16)
}

/// A pixel read as a little-endian word to ARGB8888, picking each channel at its bit offset
/// (alpha 0xff when `a` is `None`).
fn by_shifts(w: u32, b: u32, g: u32, r: u32, a: Option<u32>) -> u32 {
    let alpha = a.map_or(0xff, |a| (w >> a) & 0xff);
    ((w >> b) & 0xff) | (((w >> g) & 0xff) << 8) | (((w >> r) & 0xff) << 16) | (alpha << 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_table_matches_pixman_and_drm() {
        // B8G8R8A8: bytes B,G,R,A = little-endian ARGB8888.
        let f = PixelFormat::from_virtio(VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM).unwrap();
        assert_eq!(f.fourcc, DrmFourcc::Argb8888);
        let mut d = [0u8; 4];
        f.row_to_argb8888(&[1, 2, 3, 4], &mut d);
        assert_eq!(d, [1, 2, 3, 4]);
        // Every format: a pixel with B=0x10, G=0x20, R=0x30, A=0x40 written in its byte order.
        let cases: [(u32, [u8; 4], [u8; 4], DrmFourcc); 8] = [
            (
                1,
                [0x10, 0x20, 0x30, 0x40],
                [0x10, 0x20, 0x30, 0x40],
                DrmFourcc::Argb8888,
            ),
            (
                2,
                [0x10, 0x20, 0x30, 0x40],
                [0x10, 0x20, 0x30, 0xff],
                DrmFourcc::Xrgb8888,
            ),
            (
                3,
                [0x40, 0x30, 0x20, 0x10],
                [0x10, 0x20, 0x30, 0x40],
                DrmFourcc::Bgra8888,
            ),
            (
                4,
                [0x40, 0x30, 0x20, 0x10],
                [0x10, 0x20, 0x30, 0xff],
                DrmFourcc::Bgrx8888,
            ),
            (
                67,
                [0x30, 0x20, 0x10, 0x40],
                [0x10, 0x20, 0x30, 0x40],
                DrmFourcc::Abgr8888,
            ),
            (
                68,
                [0x40, 0x10, 0x20, 0x30],
                [0x10, 0x20, 0x30, 0xff],
                DrmFourcc::Rgbx8888,
            ),
            (
                121,
                [0x40, 0x10, 0x20, 0x30],
                [0x10, 0x20, 0x30, 0x40],
                DrmFourcc::Rgba8888,
            ),
            (
                134,
                [0x30, 0x20, 0x10, 0x40],
                [0x10, 0x20, 0x30, 0xff],
                DrmFourcc::Xbgr8888,
            ),
        ];
        for (virtio, src, want, fourcc) in cases {
            let f = PixelFormat::from_virtio(virtio).unwrap();
            assert_eq!(f.fourcc, fourcc, "format {virtio}");
            let mut d = [0u8; 4];
            f.row_to_argb8888(&src, &mut d);
            assert_eq!(d, want, "format {virtio}");
        }
        assert!(PixelFormat::from_virtio(0).is_none());
        assert!(PixelFormat::from_virtio(5).is_none());
    }

    #[test]
    fn word_conversion_matches_the_byte_table_for_every_format() {
        // 37 pixels of varied bytes: the word-at-a-time conversion, out of place and in place,
        // must equal picking the bytes by the format's table.
        let src: Vec<u8> = (0..37 * 4).map(|i: u32| (i * 57 + 11) as u8).collect();
        for virtio in [1, 2, 3, 4, 67, 68, 121, 134] {
            let f = PixelFormat::from_virtio(virtio).unwrap();
            let mut want = Vec::new();
            for s in src.chunks_exact(4) {
                let [b, g, r] = f.bgr;
                want.extend_from_slice(&[s[b], s[g], s[r], f.alpha.map_or(0xff, |a| s[a])]);
            }
            let mut out = vec![0u8; src.len()];
            f.row_to_argb8888(&src, &mut out);
            assert_eq!(out, want, "format {virtio}");
            let mut in_place = src.clone();
            f.to_argb8888_in_place(&mut in_place);
            assert_eq!(in_place, want, "format {virtio} in place");
            // The generic path (by bit offsets) agrees too.
            let (b, g, r, a) = f.word_shifts();
            let generic: Vec<u8> = src
                .chunks_exact(4)
                .flat_map(|s| {
                    by_shifts(u32::from_le_bytes([s[0], s[1], s[2], s[3]]), b, g, r, a)
                        .to_le_bytes()
                })
                .collect();
            assert_eq!(generic, want, "format {virtio} by shifts");
        }
    }
}
