//! The pure-Rust 2D renderer: no native library, no 3D.
//!
//! 2D resources live in host memory in the guest's format (one of the spec's eight 32-bit RGB
//! formats, see [`PixelFormat`]); TRANSFER_TO_HOST_2D copies rows from the guest backing, and
//! [`Renderer::read_pixels`] converts to the display's XRGB8888/ARGB8888. Guest blobs
//! (`BLOB_MEM_GUEST`) are not copied at all: SET_SCANOUT_BLOB reads them straight from guest
//! memory with the strides and offsets the guest gave. Fences complete at once.
//!
//! Host-memory accounting against `--max-hostmem` is done by the device before it calls
//! [`Renderer::resource_create_2d`]; this renderer additionally refuses (rather than aborts on)
//! an allocation the allocator cannot satisfy.

use std::collections::HashMap;

use log::{debug, warn};

use super::formats::{PixelFormat, BYTES_PER_PIXEL};
use super::readback::{check_out_len, copy_rect_to_xrgb, read_blob_image};
use super::{
    BlobScanoutLayout, CheckedTransfer2d, CreateBlob, FenceId, GuestBacking, Rect, Renderer,
    RendererCapabilities, RendererError, Result,
};
use crate::protocol::VIRTIO_GPU_BLOB_MEM_GUEST;

enum ResourceKind {
    /// A 2D resource with its pixels in host memory, rows of `width * 4` bytes.
    Image {
        format: PixelFormat,
        pixels: Vec<u8>,
        backing: Option<GuestBacking>,
    },
    /// A `BLOB_MEM_GUEST` blob: the guest's pages are the resource.
    GuestBlob { backing: GuestBacking, size: u64 },
}

struct SoftResource {
    width: u32,
    height: u32,
    kind: ResourceKind,
}

/// The pure-Rust 2D renderer.
#[derive(Default)]
pub struct SoftwareRenderer {
    resources: HashMap<u32, SoftResource>,
    completed: Vec<FenceId>,
}

/// A 2D resource taken out of a [`SoftwareRenderer`] ([`SoftwareRenderer::take_image`]): what
/// another renderer needs to hold it instead.
pub struct Image2d {
    /// `VIRTIO_GPU_FORMAT_*`.
    pub format: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The pixels, rows of `width * 4` bytes in `format`.
    pub pixels: Vec<u8>,
    /// Its backing, if one is attached.
    pub backing: Option<GuestBacking>,
}

impl SoftwareRenderer {
    /// A renderer without resources.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether it holds resource `id`.
    pub fn holds(&self, id: u32) -> bool {
        self.resources.contains_key(&id)
    }

    /// The length of 2D resource `id`'s backing, `None` without one.
    pub fn backing_len(&self, id: u32) -> Option<u64> {
        match &self.resources.get(&id)?.kind {
            ResourceKind::Image { backing, .. } => backing.as_ref().map(GuestBacking::len),
            ResourceKind::GuestBlob { backing, .. } => Some(backing.len()),
        }
    }

    /// Removes 2D resource `id` and hands over its pixels and backing (`None`: no such 2D
    /// resource; blobs stay).
    pub fn take_image(&mut self, id: u32) -> Option<Image2d> {
        if !matches!(self.resources.get(&id)?.kind, ResourceKind::Image { .. }) {
            return None;
        }
        let res = self.resources.remove(&id)?;
        match res.kind {
            ResourceKind::Image {
                format,
                pixels,
                backing,
            } => Some(Image2d {
                format: format.virtio,
                width: res.width,
                height: res.height,
                pixels,
                backing,
            }),
            ResourceKind::GuestBlob { .. } => None,
        }
    }

    fn resource(&self, id: u32) -> Result<&SoftResource> {
        self.resources
            .get(&id)
            .ok_or(RendererError::InvalidResourceId(id))
    }
}

impl Renderer for SoftwareRenderer {
    fn name(&self) -> &'static str {
        "software"
    }

    fn capabilities(&self) -> RendererCapabilities {
        RendererCapabilities {
            three_d: false,
            context_init: false,
            blob_guest: true,
            blob_host: false,
        }
    }

    fn resource_create_2d(&mut self, id: u32, format: u32, width: u32, height: u32) -> Result<()> {
        if self.resources.contains_key(&id) {
            return Err(RendererError::InvalidResourceId(id));
        }
        let format = PixelFormat::from_virtio(format)
            .ok_or_else(|| RendererError::InvalidParameter(format!("format {format}")))?;
        let size = u64::from(width)
            .checked_mul(u64::from(height))
            .and_then(|p| p.checked_mul(u64::from(BYTES_PER_PIXEL)))
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| RendererError::OutOfMemory(format!("{width}x{height}")))?;
        let mut pixels = Vec::new();
        pixels
            .try_reserve_exact(size)
            .map_err(|e| RendererError::OutOfMemory(format!("{width}x{height}: {e}")))?;
        pixels.resize(size, 0);
        self.resources.insert(
            id,
            SoftResource {
                width,
                height,
                kind: ResourceKind::Image {
                    format,
                    pixels,
                    backing: None,
                },
            },
        );
        Ok(())
    }

    fn resource_unref(&mut self, id: u32) -> Result<()> {
        self.resources
            .remove(&id)
            .map(|_| ())
            .ok_or(RendererError::InvalidResourceId(id))
    }

    fn attach_backing(&mut self, id: u32, new: GuestBacking) -> Result<()> {
        let res = self
            .resources
            .get_mut(&id)
            .ok_or(RendererError::InvalidResourceId(id))?;
        match &mut res.kind {
            ResourceKind::Image { backing, .. } => {
                if backing.is_some() {
                    return Err(RendererError::InvalidParameter(format!(
                        "resource {id} already has a backing"
                    )));
                }
                *backing = Some(new);
                Ok(())
            }
            ResourceKind::GuestBlob { .. } => Err(RendererError::InvalidParameter(format!(
                "resource {id} is a blob"
            ))),
        }
    }

    fn detach_backing(&mut self, id: u32) -> Result<()> {
        let res = self
            .resources
            .get_mut(&id)
            .ok_or(RendererError::InvalidResourceId(id))?;
        match &mut res.kind {
            ResourceKind::Image { backing, .. } => {
                *backing = None;
                Ok(())
            }
            ResourceKind::GuestBlob { .. } => Err(RendererError::InvalidParameter(format!(
                "resource {id} is a blob"
            ))),
        }
    }

    fn transfer_to_host_2d(&mut self, id: u32, t: &CheckedTransfer2d) -> Result<()> {
        let res = self
            .resources
            .get_mut(&id)
            .ok_or(RendererError::InvalidResourceId(id))?;
        let width = res.width;
        let (pixels, backing) = match &mut res.kind {
            ResourceKind::Image {
                pixels, backing, ..
            } => (pixels, backing),
            ResourceKind::GuestBlob { .. } => {
                return Err(RendererError::InvalidParameter(format!(
                    "TRANSFER_TO_HOST_2D on blob {id}"
                )))
            }
        };
        let backing = backing.as_ref().ok_or_else(|| {
            RendererError::InvalidParameter(format!("resource {id} has no backing"))
        })?;
        // Inside the resource and the backing: the device checked both (CheckedTransfer2d).
        let (rect, offset) = (t.rect(), t.offset());
        if rect.is_empty() {
            return Ok(());
        }
        let bpp = u64::from(BYTES_PER_PIXEL);
        let stride = u64::from(t.stride());
        let row_len = u64::from(rect.width) * bpp;
        debug!("transfer {rect:?} of resource {id}, offset {offset}");
        // All values below are bounded by the resource size (a usize allocation).
        let row_usize = row_len as usize;
        if rect.x == 0 && rect.width == width {
            // Whole rows: resource and backing rows are contiguous, one copy.
            let dst = (u64::from(rect.y) * stride) as usize;
            let len = row_usize * rect.height as usize;
            let dst_rows = pixels
                .get_mut(dst..dst + len)
                .ok_or_else(|| RendererError::InvalidParameter("rows outside resource".into()))?;
            return backing.read_at(offset, dst_rows);
        }
        for i in 0..u64::from(rect.height) {
            let src = offset + i * stride;
            let dst = ((u64::from(rect.y) + i) * stride + u64::from(rect.x) * bpp) as usize;
            let dst_row = pixels
                .get_mut(dst..dst + row_usize)
                .ok_or_else(|| RendererError::InvalidParameter("row outside resource".into()))?;
            backing.read_at(src, dst_row)?;
        }
        Ok(())
    }

    fn create_fence(&mut self, ctx_id: u32, fence_id: u64) -> Result<()> {
        // Every command is executed synchronously, so the fence is already signalled.
        self.completed.push(FenceId {
            ctx_id,
            ring_idx: None,
            id: fence_id,
        });
        Ok(())
    }

    fn poll(&mut self) -> Vec<FenceId> {
        std::mem::take(&mut self.completed)
    }

    fn create_blob(
        &mut self,
        id: u32,
        args: &CreateBlob,
        backing: Option<GuestBacking>,
    ) -> Result<()> {
        if self.resources.contains_key(&id) {
            return Err(RendererError::InvalidResourceId(id));
        }
        if args.blob_mem != VIRTIO_GPU_BLOB_MEM_GUEST {
            return Err(RendererError::Unsupported("host blobs"));
        }
        let backing = backing.ok_or_else(|| {
            RendererError::InvalidParameter(format!("guest blob {id} without backing"))
        })?;
        if args.size > backing.len() {
            return Err(RendererError::InvalidParameter(format!(
                "blob {id} of {} bytes with a {}-byte backing",
                args.size,
                backing.len()
            )));
        }
        self.resources.insert(
            id,
            SoftResource {
                width: 0,
                height: 0,
                kind: ResourceKind::GuestBlob {
                    backing,
                    size: args.size,
                },
            },
        );
        Ok(())
    }

    fn read_pixels(&mut self, id: u32, rect: Rect, out: &mut [u8]) -> Result<()> {
        let res = self.resource(id)?;
        let (format, pixels) = match &res.kind {
            ResourceKind::Image { format, pixels, .. } => (format, pixels),
            ResourceKind::GuestBlob { .. } => {
                return Err(RendererError::InvalidParameter(format!(
                    "blob {id} read without a scanout layout"
                )))
            }
        };
        if !rect.is_inside(res.width, res.height) {
            return Err(RendererError::InvalidParameter(format!(
                "{rect:?} outside {}x{}",
                res.width, res.height
            )));
        }
        let row = check_out_len(rect, out)?;
        if row == 0 {
            return Ok(());
        }
        copy_rect_to_xrgb(format, pixels, res.width, rect, row, out)
    }

    fn scanout_pixels(&self, id: u32, rect: Rect) -> Option<&[u8]> {
        let res = self.resources.get(&id)?;
        let ResourceKind::Image { format, pixels, .. } = &res.kind else {
            return None;
        };
        if !format.is_x8r8g8b8()
            || rect.x != 0
            || rect.width != res.width
            || !rect.is_inside(res.width, res.height)
        {
            return None;
        }
        // Whole rows inside the resource: one contiguous run, bounded by its allocation.
        let stride = usize::try_from(res.width)
            .ok()?
            .checked_mul(BYTES_PER_PIXEL as usize)?;
        let start = usize::try_from(rect.y).ok()?.checked_mul(stride)?;
        let len = usize::try_from(rect.height).ok()?.checked_mul(stride)?;
        pixels.get(start..start.checked_add(len)?)
    }

    fn read_blob_pixels(
        &mut self,
        id: u32,
        layout: &BlobScanoutLayout,
        rect: Rect,
        out: &mut [u8],
    ) -> Result<()> {
        let res = self.resource(id)?;
        let (backing, size) = match &res.kind {
            ResourceKind::GuestBlob { backing, size } => (backing, *size),
            ResourceKind::Image { .. } => {
                return Err(RendererError::InvalidParameter(format!(
                    "resource {id} is not a blob"
                )))
            }
        };
        read_blob_image(layout, rect, out, size, |at, row| backing.read_at(at, row))
    }

    fn reset(&mut self) {
        if !self.resources.is_empty() {
            warn!(
                "software renderer reset with {} resources left",
                self.resources.len()
            );
        }
        self.resources.clear();
        self.completed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BackingEntry, ResourceShape};
    use super::*;

    /// TRANSFER_TO_HOST_2D as the device runs it: the validation step's check, then the
    /// renderer.
    fn xfer(r: &mut SoftwareRenderer, id: u32, rect: Rect, offset: u64) -> Result<()> {
        let res = r
            .resources
            .get(&id)
            .ok_or(RendererError::InvalidResourceId(id))?;
        let (shape, backing) = match &res.kind {
            ResourceKind::Image { backing, .. } => (
                ResourceShape::Plain2d {
                    width: res.width,
                    height: res.height,
                },
                backing.as_ref().map(GuestBacking::len),
            ),
            ResourceKind::GuestBlob { .. } => (ResourceShape::Blob, None),
        };
        let t = CheckedTransfer2d::check(rect, offset, shape, backing)
            .map_err(RendererError::InvalidParameter)?;
        r.transfer_to_host_2d(id, &t)
    }
    use crate::protocol::{
        VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
        VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM,
    };
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
    }

    /// A pixel value unique to (x, y), as 4 bytes in memory order.
    fn px(x: u32, y: u32) -> [u8; 4] {
        [
            x as u8,
            y as u8,
            (x * 7 + y * 13) as u8,
            0x80 | (x + y) as u8,
        ]
    }

    #[test]
    fn scanout_pixels_lends_whole_rows_of_xrgb_resources_only() {
        let mut r = SoftwareRenderer::new();
        let (w, h) = (6u32, 5u32);
        for (id, format) in [(1, 1), (2, 2), (3, 3), (4, 67)] {
            r.resource_create_2d(id, format, w, h).unwrap();
            if let Some(ResourceKind::Image { pixels, .. }) =
                r.resources.get_mut(&id).map(|res| &mut res.kind)
            {
                for (i, b) in pixels.iter_mut().enumerate() {
                    *b = i as u8;
                }
            }
        }
        let stride = (w * 4) as usize;
        // Whole rows 1..4 of B8G8R8A8 and B8G8R8X8: the resource's own bytes.
        for id in [1, 2] {
            let rows = r.scanout_pixels(id, Rect::new(0, 1, w, 3)).unwrap();
            let want: Vec<u8> = (stride..4 * stride).map(|i| i as u8).collect();
            assert_eq!(rows, &want[..], "resource {id}");
            assert_eq!(
                r.scanout_pixels(id, Rect::new(0, 0, w, h)).unwrap().len(),
                stride * 5
            );
            assert_eq!(r.scanout_pixels(id, Rect::new(0, 5, w, 0)), Some(&[][..]));
        }
        // Not whole rows, outside the resource, other formats, unknown ids: nothing lent.
        assert!(r.scanout_pixels(1, Rect::new(1, 0, w - 1, 1)).is_none());
        assert!(r.scanout_pixels(1, Rect::new(0, 0, w - 1, 1)).is_none());
        assert!(r.scanout_pixels(1, Rect::new(0, 3, w, 3)).is_none());
        assert!(r.scanout_pixels(1, Rect::new(0, u32::MAX, w, 2)).is_none());
        assert!(r.scanout_pixels(3, Rect::new(0, 0, w, 1)).is_none());
        assert!(r.scanout_pixels(4, Rect::new(0, 0, w, 1)).is_none());
        assert!(r.scanout_pixels(9, Rect::new(0, 0, w, 1)).is_none());
    }

    /// Fills a `w`x`h` guest image at `addr` (stride w*4) with `px`.
    fn fill_guest(m: &GuestMemoryMmap, addr: u64, w: u32, h: u32) {
        for y in 0..h {
            for x in 0..w {
                m.write_slice(&px(x, y), GuestAddress(addr + u64::from((y * w + x) * 4)))
                    .unwrap();
            }
        }
    }

    #[test]
    fn partial_transfers_are_pixel_exact() {
        // Odd width (stride 7*4 = 28 bytes), backing split in 3 uneven entries.
        let (w, h) = (7u32, 5u32);
        let m = mem();
        let size = w * h * 4;
        fill_guest(&m, 0x10000, w, h);
        // Scatter the same bytes over three entries.
        let mut img = vec![0u8; size as usize];
        m.read_slice(&mut img, GuestAddress(0x10000)).unwrap();
        let cuts = [0usize, 13, 61, size as usize];
        let addrs = [0x20000u64, 0x30003, 0x40001];
        let mut entries = Vec::new();
        for i in 0..3 {
            m.write_slice(&img[cuts[i]..cuts[i + 1]], GuestAddress(addrs[i]))
                .unwrap();
            entries.push(BackingEntry {
                addr: addrs[i],
                len: (cuts[i + 1] - cuts[i]) as u32,
            });
        }
        let mut r = SoftwareRenderer::new();
        r.resource_create_2d(1, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, w, h)
            .unwrap();
        r.attach_backing(1, GuestBacking::new(m.clone(), entries).unwrap())
            .unwrap();
        // Transfer only the rect (2,1) 3x3: offset is the byte offset of its first pixel.
        let rect = Rect::new(2, 1, 3, 3);
        let offset = u64::from((w + 2) * 4); // row 1, column 2
        xfer(&mut r, 1, rect, offset).unwrap();
        let mut out = vec![0u8; (w * h * 4) as usize];
        r.read_pixels(1, Rect::new(0, 0, w, h), &mut out).unwrap();
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 4) as usize;
                let want = if (2..5).contains(&x) && (1..4).contains(&y) {
                    px(x, y)
                } else {
                    [0; 4]
                };
                assert_eq!(&out[i..i + 4], &want, "pixel ({x},{y})");
            }
        }
        // A partial read returns just that rectangle, tightly packed.
        let mut part = vec![0u8; 2 * 2 * 4];
        r.read_pixels(1, Rect::new(3, 2, 2, 2), &mut part).unwrap();
        assert_eq!(part, [px(3, 2), px(4, 2), px(3, 3), px(4, 3)].concat());
    }

    #[test]
    fn transfer_offset_need_not_match_the_rect() {
        // The guest may place the rect's data anywhere in the backing: offset is honoured as is.
        let (w, h) = (5u32, 4u32);
        let m = mem();
        // Backing: 3 junk bytes, then a w*h image whose pixel (0,0) is what lands at (1,2).
        let base = 0x10000u64;
        m.write_slice(&[0xee; 3], GuestAddress(base)).unwrap();
        fill_guest(&m, base + 3, w, h);
        let mut r = SoftwareRenderer::new();
        r.resource_create_2d(9, VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM, w, h)
            .unwrap();
        r.attach_backing(
            9,
            GuestBacking::new(
                m.clone(),
                vec![BackingEntry {
                    addr: base,
                    len: 3 + w * h * 4,
                }],
            )
            .unwrap(),
        )
        .unwrap();
        xfer(&mut r, 9, Rect::new(1, 2, 2, 2), 3).unwrap();
        let mut out = vec![0u8; 2 * 2 * 4];
        r.read_pixels(9, Rect::new(1, 2, 2, 2), &mut out).unwrap();
        // X8R8G8B8: bytes X,R,G,B -> output B,G,R,0xff. Row 1 of the source starts one stride
        // (w*4) after the offset.
        let conv = |p: [u8; 4]| [p[3], p[2], p[1], 0xff];
        assert_eq!(
            out,
            [
                conv(px(0, 0)),
                conv(px(1, 0)),
                conv(px(0, 1)),
                conv(px(1, 1))
            ]
            .concat()
        );
    }

    #[test]
    fn full_width_transfer_copies_whole_rows() {
        let (w, h) = (3u32, 4u32);
        let m = mem();
        fill_guest(&m, 0x10000, w, h);
        let mut r = SoftwareRenderer::new();
        r.resource_create_2d(2, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, w, h)
            .unwrap();
        r.attach_backing(
            2,
            GuestBacking::new(
                m,
                vec![
                    BackingEntry {
                        addr: 0x10000,
                        len: 5,
                    },
                    BackingEntry {
                        addr: 0x10005,
                        len: w * h * 4 - 5,
                    },
                ],
            )
            .unwrap(),
        )
        .unwrap();
        // Rows 1..3, all columns: offset of pixel (0, 1).
        xfer(&mut r, 2, Rect::new(0, 1, w, 2), u64::from(w * 4)).unwrap();
        let mut out = vec![0u8; (w * h * 4) as usize];
        r.read_pixels(2, Rect::new(0, 0, w, h), &mut out).unwrap();
        let mut want = vec![[0u8; 4]; 3];
        for y in 1..3 {
            for x in 0..w {
                want.push(px(x, y));
            }
        }
        want.extend([[0u8; 4]; 3]);
        assert_eq!(out, want.concat());
        // Past the end of the backing by one row: refused.
        assert!(xfer(&mut r, 2, Rect::new(0, 1, w, 3), u64::from(w * 4) + 1).is_err());
    }

    #[test]
    fn transfers_beyond_the_backing_are_refused_whole() {
        let m = mem();
        let mut r = SoftwareRenderer::new();
        r.resource_create_2d(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4)
            .unwrap();
        // No backing yet.
        assert!(matches!(
            xfer(&mut r, 1, Rect::new(0, 0, 4, 4), 0),
            Err(RendererError::InvalidParameter(_))
        ));
        // A backing one byte short of the full image.
        r.attach_backing(
            1,
            GuestBacking::new(
                m.clone(),
                vec![BackingEntry {
                    addr: 0x1000,
                    len: 63,
                }],
            )
            .unwrap(),
        )
        .unwrap();
        assert!(xfer(&mut r, 1, Rect::new(0, 0, 4, 4), 0).is_err());
        assert!(xfer(&mut r, 1, Rect::new(0, 0, 4, 3), 0).is_ok());
        assert!(xfer(&mut r, 1, Rect::new(0, 0, 1, 1), u64::MAX - 2).is_err());
        assert!(xfer(&mut r, 1, Rect::new(3, 3, 2, 1), 0).is_err());
        // Attaching twice is refused.
        assert!(r
            .attach_backing(
                1,
                GuestBacking::new(m, vec![BackingEntry { addr: 0, len: 4 }]).unwrap()
            )
            .is_err());
        r.detach_backing(1).unwrap();
        assert!(xfer(&mut r, 1, Rect::new(0, 0, 1, 1), 0).is_err());
    }

    #[test]
    fn create_checks_format_duplicates_and_huge_sizes() {
        let mut r = SoftwareRenderer::new();
        assert!(matches!(
            r.resource_create_2d(1, 99, 4, 4),
            Err(RendererError::InvalidParameter(_))
        ));
        r.resource_create_2d(1, 1, 4, 4).unwrap();
        assert!(matches!(
            r.resource_create_2d(1, 1, 4, 4),
            Err(RendererError::InvalidResourceId(1))
        ));
        // An allocation the allocator refuses is an error, not an abort.
        assert!(matches!(
            r.resource_create_2d(2, 1, u32::MAX, u32::MAX),
            Err(RendererError::OutOfMemory(_))
        ));
        // The resource made is 4x4: all of it reads back, nothing beyond.
        r.read_pixels(1, Rect::new(0, 0, 4, 4), &mut [0; 64])
            .unwrap();
        assert!(r
            .read_pixels(1, Rect::new(0, 0, 5, 1), &mut [0; 20])
            .is_err());
        assert!(r
            .read_pixels(1, Rect::new(0, 4, 1, 1), &mut [0; 4])
            .is_err());
        r.resource_unref(1).unwrap();
        assert!(r.resource_unref(1).is_err());
        assert!(r
            .read_pixels(1, Rect::new(0, 0, 1, 1), &mut [0; 4])
            .is_err());
    }

    #[test]
    fn guest_blob_scanout_reads_guest_memory_with_stride_and_offset() {
        let m = mem();
        let (w, h) = (3u32, 2u32);
        let stride = 20u32; // 12 bytes of pixels + 8 of padding per row
        let offset = 6u32;
        let base = 0x5000u64;
        for y in 0..h {
            for x in 0..w {
                let a = base + u64::from(offset + y * stride + x * 4);
                m.write_slice(&px(x, y), GuestAddress(a)).unwrap();
            }
        }
        let size = u64::from(offset + stride * (h - 1) + w * 4);
        let backing = GuestBacking::new(
            m.clone(),
            vec![
                BackingEntry {
                    addr: base,
                    len: 10,
                },
                BackingEntry {
                    addr: base + 10,
                    len: size as u32 - 10,
                },
            ],
        )
        .unwrap();
        let mut r = SoftwareRenderer::new();
        let args = CreateBlob {
            blob_mem: VIRTIO_GPU_BLOB_MEM_GUEST,
            blob_flags: 0,
            blob_id: 0,
            size,
        };
        r.create_blob(4, &args, Some(backing.clone())).unwrap();
        let layout = BlobScanoutLayout {
            width: w,
            height: h,
            format: VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM,
            strides: [stride, 0, 0, 0],
            offsets: [offset, 0, 0, 0],
        };
        let mut out = vec![0u8; (w * h * 4) as usize];
        r.read_blob_pixels(4, &layout, Rect::new(0, 0, w, h), &mut out)
            .unwrap();
        assert_eq!(
            out,
            [px(0, 0), px(1, 0), px(2, 0), px(0, 1), px(1, 1), px(2, 1)].concat()
        );
        // Reads see later guest writes: no copy is kept.
        m.write_slice(
            &[9, 9, 9, 9],
            GuestAddress(base + u64::from(offset + stride + 4)),
        )
        .unwrap();
        let mut one = [0u8; 4];
        r.read_blob_pixels(4, &layout, Rect::new(1, 1, 1, 1), &mut one)
            .unwrap();
        assert_eq!(one, [9, 9, 9, 9]);
        // A layout reaching past the blob is refused.
        let bad = BlobScanoutLayout {
            height: h + 1,
            ..layout
        };
        assert!(r
            .read_blob_pixels(4, &bad, Rect::new(0, 0, 1, 1), &mut one)
            .is_err());
        let bad = BlobScanoutLayout {
            strides: [8, 0, 0, 0],
            ..layout
        };
        assert!(r
            .read_blob_pixels(4, &bad, Rect::new(0, 0, 1, 1), &mut one)
            .is_err());
        // A blob larger than its backing is refused, host blobs are unsupported.
        let big = CreateBlob {
            size: size + 1,
            ..args
        };
        assert!(r.create_blob(5, &big, Some(backing.clone())).is_err());
        let host = CreateBlob {
            blob_mem: crate::protocol::VIRTIO_GPU_BLOB_MEM_HOST3D,
            ..args
        };
        assert!(matches!(
            r.create_blob(6, &host, None),
            Err(RendererError::Unsupported(_))
        ));
        // 2D operations on a blob are refused.
        assert!(xfer(&mut r, 4, Rect::new(0, 0, 1, 1), 0).is_err());
        assert!(r.read_pixels(4, Rect::new(0, 0, 1, 1), &mut one).is_err());
    }

    #[test]
    fn fences_complete_at_once() {
        let mut r = SoftwareRenderer::new();
        r.create_fence(3, 5).unwrap();
        let f = FenceId {
            ctx_id: 3,
            ring_idx: None,
            id: 5,
        };
        assert_eq!(r.poll(), vec![f]);
        assert!(r.poll().is_empty());
    }
}
