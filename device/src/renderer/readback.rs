//! Reading pixels back for the display, shared by every renderer: the checks of the output
//! buffer, the copy of a rectangle out of a tightly packed image, and the one read-back of a
//! SET_SCANOUT_BLOB image ([`BlobImage`]), wherever the blob's bytes are (guest pages, a
//! mapping, an exported file).
//!
//! Every function checks before it reads: a rectangle outside its image, an output buffer of
//! the wrong size, a stride smaller than a row or an image reaching past its blob is an
//! [`RendererError::InvalidParameter`], never a read out of place.

use super::formats::{PixelFormat, BYTES_PER_PIXEL};
use super::{BlobScanoutLayout, Rect, RendererError, Result};

/// Checks that `out` holds exactly `rect` as tightly packed XRGB8888 pixels (the display's
/// read-back buffer) and returns the length of one of its rows in bytes.
pub fn check_out_len(rect: Rect, out: &[u8]) -> Result<usize> {
    let row = usize::try_from(rect.width)
        .ok()
        .and_then(|w| w.checked_mul(BYTES_PER_PIXEL as usize))
        .ok_or_else(|| RendererError::InvalidParameter("rectangle too wide".into()))?;
    let need = usize::try_from(rect.height)
        .ok()
        .and_then(|h| h.checked_mul(row));
    if need != Some(out.len()) {
        return Err(RendererError::InvalidParameter(format!(
            "output buffer of {} bytes for a {}x{} rectangle",
            out.len(),
            rect.width,
            rect.height
        )));
    }
    Ok(row)
}

/// Converts `rect` of a tightly packed image `width` pixels wide into `out`, rows of `row` bytes
/// of XRGB8888 as [`check_out_len`] returned; `rect` was checked to lie inside the image, and a
/// row the image does not hold is refused rather than read.
pub fn copy_rect_to_xrgb(
    format: &PixelFormat,
    image: &[u8],
    width: u32,
    rect: Rect,
    row: usize,
    out: &mut [u8],
) -> Result<()> {
    let stride = width as usize * BYTES_PER_PIXEL as usize;
    for (i, dst) in out.chunks_exact_mut(row).enumerate() {
        let start = (rect.y as usize + i) * stride + rect.x as usize * BYTES_PER_PIXEL as usize;
        let src = image
            .get(start..start + row)
            .ok_or_else(|| RendererError::InvalidParameter("row outside the image".into()))?;
        format.row_to_argb8888(src, dst);
    }
    Ok(())
}

/// A rectangle of a SET_SCANOUT_BLOB image, checked against its blob ([`BlobImage::check`]) and
/// ready to be read back ([`BlobImage::read`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobImage {
    /// Pixel format of the image.
    format: PixelFormat,
    /// Bytes of one row of the read-back rectangle (`out`'s stride).
    row: usize,
    /// Bytes from one image row to the next in the blob.
    stride: u64,
    /// Offset in the blob of the rectangle's first pixel.
    first: u64,
}

impl BlobImage {
    /// Checks a blob scanout read-back before any byte is read: the format is one the display
    /// takes, `rect` lies inside the image, `out` holds exactly `rect` (see [`check_out_len`]),
    /// the stride holds a row, and the image's last row ends inside the blob of `blob_size`
    /// bytes (checked arithmetic: strides smaller than a row or offsets past the end are refused
    /// rather than read out of place). `None` when the rectangle is empty and there is nothing
    /// to read.
    pub fn check(
        layout: &BlobScanoutLayout,
        rect: Rect,
        out: &[u8],
        blob_size: u64,
    ) -> Result<Option<BlobImage>> {
        let format = PixelFormat::from_virtio(layout.format).ok_or_else(|| {
            RendererError::InvalidParameter(format!("scanout format {}", layout.format))
        })?;
        if !rect.is_inside(layout.width, layout.height) {
            return Err(RendererError::InvalidParameter(format!(
                "{rect:?} outside the {}x{} blob image",
                layout.width, layout.height
            )));
        }
        let row = check_out_len(rect, out)?;
        if row == 0 {
            return Ok(None);
        }
        let bpp = u64::from(BYTES_PER_PIXEL);
        let stride = u64::from(layout.strides[0]);
        let base = u64::from(layout.offsets[0]);
        if stride < u64::from(layout.width) * bpp {
            return Err(RendererError::InvalidParameter(format!(
                "stride {stride} below {} pixels",
                layout.width
            )));
        }
        let image_end = stride
            .checked_mul(u64::from(layout.height.saturating_sub(1)))
            .and_then(|v| v.checked_add(base))
            .and_then(|v| v.checked_add(u64::from(layout.width) * bpp));
        if !matches!(image_end, Some(end) if end <= blob_size) {
            return Err(RendererError::InvalidParameter(format!(
                "blob image {layout:?} beyond the {blob_size}-byte blob"
            )));
        }
        // Inside the image, which ends inside the blob (checked above): no overflow.
        let first = base + u64::from(rect.y) * stride + u64::from(rect.x) * bpp;
        Ok(Some(BlobImage {
            format,
            row,
            stride,
            first,
        }))
    }

    /// Reads the rectangle into `out` (the buffer [`check`](Self::check) was given), one row at
    /// a time: `read_row(offset, buf)` fills `buf` with the blob's bytes at `offset`; each row is
    /// then converted to XRGB8888. Every row read lies inside the blob.
    pub fn read(
        &self,
        out: &mut [u8],
        mut read_row: impl FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let mut tmp = vec![0u8; self.row];
        for (i, dst) in out.chunks_exact_mut(self.row).enumerate() {
            // i < rect.height: inside the image, checked to lie inside the blob.
            read_row(self.first + i as u64 * self.stride, &mut tmp)?;
            self.format.row_to_argb8888(&tmp, dst);
        }
        Ok(())
    }
}

/// Reads `rect` of the SET_SCANOUT_BLOB image `layout` of a blob of `blob_size` bytes into `out`
/// as XRGB8888: [`BlobImage::check`], then [`BlobImage::read`] through `read_row`.
pub fn read_blob_image(
    layout: &BlobScanoutLayout,
    rect: Rect,
    out: &mut [u8],
    blob_size: u64,
    read_row: impl FnMut(u64, &mut [u8]) -> Result<()>,
) -> Result<()> {
    match BlobImage::check(layout, rect, out, blob_size)? {
        Some(image) => image.read(out, read_row),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM};

    /// A blob whose byte at offset `i` is `i % 251`, read through the closure.
    fn blob_byte(i: u64) -> u8 {
        (i % 251) as u8
    }

    #[test]
    fn blob_rows_are_read_at_offset_plus_stride() {
        let layout = BlobScanoutLayout {
            width: 5,
            height: 4,
            format: VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM,
            strides: [32, 0, 0, 0],
            offsets: [7, 0, 0, 0],
        };
        let size = 7 + 32 * 3 + 20;
        let rect = Rect::new(1, 2, 3, 2);
        let mut out = vec![0u8; 3 * 2 * 4];
        let mut offsets = Vec::new();
        read_blob_image(&layout, rect, &mut out, size, |at, buf| {
            offsets.push((at, buf.len()));
            for (k, b) in buf.iter_mut().enumerate() {
                *b = blob_byte(at + k as u64);
            }
            Ok(())
        })
        .unwrap();
        // Row i of the rectangle starts at offset + (y + i) * stride + x * 4.
        assert_eq!(offsets, vec![(7 + 2 * 32 + 4, 12), (7 + 3 * 32 + 4, 12)]);
        // R8G8B8A8 to B, G, R, A.
        let at = 7 + 2 * 32 + 4;
        let p: Vec<u8> = (0..4).map(|k| blob_byte(at + k)).collect();
        assert_eq!(&out[..4], &[p[2], p[1], p[0], p[3]]);
        // The last byte of the image is the blob's last byte: a blob one byte shorter is refused
        // before anything is read.
        let mut reads = 0;
        let err = read_blob_image(&layout, rect, &mut out, size - 1, |_, _| {
            reads += 1;
            Ok(())
        });
        assert!(matches!(err, Err(RendererError::InvalidParameter(_))));
        assert_eq!(reads, 0);
    }

    #[test]
    fn bad_layouts_and_buffers_are_refused_and_empty_rects_read_nothing() {
        let layout = BlobScanoutLayout {
            width: 4,
            height: 4,
            format: VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM,
            strides: [16, 0, 0, 0],
            offsets: [0; 4],
        };
        let one = Rect::new(0, 0, 1, 1);
        let check = |l: &BlobScanoutLayout, r: Rect, out: &[u8], size: u64| {
            BlobImage::check(l, r, out, size)
        };
        assert!(check(&layout, one, &[0; 4], 64).unwrap().is_some());
        // Stride below a row, unknown format, rectangle outside, wrong buffer, huge offset.
        for bad in [
            BlobScanoutLayout {
                strides: [15, 0, 0, 0],
                ..layout
            },
            BlobScanoutLayout {
                format: 99,
                ..layout
            },
            BlobScanoutLayout {
                offsets: [u32::MAX, 0, 0, 0],
                ..layout
            },
            BlobScanoutLayout {
                strides: [u32::MAX, 0, 0, 0],
                height: u32::MAX,
                ..layout
            },
        ] {
            assert!(check(&bad, one, &[0; 4], 64).is_err(), "{bad:?}");
        }
        assert!(check(&layout, Rect::new(3, 3, 2, 1), &[0; 8], 64).is_err());
        assert!(check(&layout, one, &[0; 8], 64).is_err());
        assert!(check(&layout, Rect::new(0, 0, u32::MAX, 1), &[], 64).is_err());
        // An empty rectangle inside the image: nothing to read.
        assert_eq!(
            check(&layout, Rect::new(2, 2, 0, 0), &[], 64).unwrap(),
            None
        );
        let mut reads = 0;
        read_blob_image(&layout, Rect::new(2, 2, 0, 0), &mut [], 64, |_, _| {
            reads += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(reads, 0);
    }
}
