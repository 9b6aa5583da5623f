//! Scanouts: what each shows (SET_SCANOUT, SET_SCANOUT_BLOB), the pixels that go to the
//! [`Display`] on RESOURCE_FLUSH (through a reused flush buffer, or a dmabuf), and the layout the
//! guest is told (GET_DISPLAY_INFO, with default modes when the display cannot tell).

use std::os::fd::AsFd;

use log::debug;

use super::budget::{Charge, HostBudget, Use};
use super::{GpuConfig, GpuError, GpuResult, VirtioGpu};
use crate::display::{Display, DisplayMode, DmabufScanout};
use crate::protocol::{DisplayInfoEntry, Rect, Response, VIRTIO_GPU_BLOB_MEM_GUEST};
use crate::renderer::formats::{PixelFormat, BYTES_PER_PIXEL};
use crate::renderer::{BlobHandleKind, BlobScanoutLayout, RendererError};

pub use crate::limits::{FLUSH_BUFFER_KEEP_BYTES, MAX_SCANOUT_DIMENSION};

/// What one scanout shows.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ScanoutState {
    /// 0: disabled.
    pub(super) resource_id: u32,
    /// The part of the resource (or blob image) shown.
    pub(super) rect: Rect,
    /// For SET_SCANOUT_BLOB: where the image lies in the blob.
    pub(super) blob: Option<BlobScanoutLayout>,
    /// The display got a dmabuf for it: flushes are DMABUF_UPDATEs.
    pub(super) dmabuf: bool,
}

/// A flush's pixels that are kept (grown fallibly, never zeroed again) from one flush to the
/// next, so that a flush neither allocates nor clears memory; one larger than
/// [`FLUSH_BUFFER_KEEP_BYTES`] is freed after its flush. Its length is charged to the host
/// memory budget while it exists.
#[derive(Default)]
pub(super) struct FlushBuffer {
    buf: Vec<u8>,
    charge: Option<Charge>,
}

impl FlushBuffer {
    /// `len` bytes of the buffer (whatever an earlier flush left there). Growing it charges
    /// the new length to `budget` first (the old buffer is freed and its charge released
    /// before, so that a grown buffer is not counted twice).
    fn get(&mut self, len: usize, budget: &mut HostBudget) -> Result<&mut [u8], String> {
        if self.buf.len() < len {
            self.free(budget);
            let charge = budget
                .charge(Use::FlushBuffer, len as u64)
                .map_err(|e| e.to_string())?;
            if let Err(e) = self.buf.try_reserve_exact(len) {
                budget.release(charge);
                return Err(e.to_string());
            }
            self.buf.resize(len, 0);
            self.charge = Some(charge);
        }
        Ok(&mut self.buf[..len])
    }

    /// Frees the buffer if it grew beyond [`FLUSH_BUFFER_KEEP_BYTES`].
    fn trim(&mut self, budget: &mut HostBudget) {
        if self.buf.len() > FLUSH_BUFFER_KEEP_BYTES {
            self.free(budget);
        }
    }

    /// Frees the buffer and gives its charge back.
    pub(super) fn free(&mut self, budget: &mut HostBudget) {
        self.buf = Vec::new();
        budget.release_opt(self.charge.take());
    }
}

impl VirtioGpu {
    /// GET_DISPLAY_INFO: the display's layout when it can tell, else the last known one.
    pub(super) fn display_info(&mut self, display: &mut dyn Display) -> Response {
        if let Some(modes) = display.display_info() {
            let n = self.config.num_scanouts as usize;
            let mut new = modes;
            new.truncate(n);
            new.resize(n, DisplayMode::default());
            self.modes = new;
        }
        Response::OkDisplayInfo(
            self.modes
                .iter()
                .map(|m| DisplayInfoEntry {
                    rect: Rect::new(m.x, m.y, m.width, m.height),
                    enabled: m.enabled,
                })
                .collect(),
        )
    }

    /// Shows nothing on scanout `idx` any more, and tells the display.
    pub(super) fn disable_scanout(&mut self, idx: usize, display: &mut dyn Display) {
        if let Some(s) = self.scanouts.get_mut(idx) {
            *s = ScanoutState::default();
            // idx < num_scanouts <= 16.
            display.scanout(idx as u32, 0, 0);
        }
    }

    /// SET_SCANOUT: resource 0 disables the scanout; a dmabuf goes to the display when both
    /// sides can, else the pixels are sent at each flush.
    pub(super) fn set_scanout(
        &mut self,
        scanout_id: u32,
        resource_id: u32,
        rect: Rect,
        display: &mut dyn Display,
    ) -> GpuResult<Response> {
        let idx = self.check_scanout(scanout_id)?;
        if resource_id == 0 {
            self.disable_scanout(idx, display);
            return Ok(Response::OkNoData);
        }
        let res = self.resource(resource_id)?;
        if res.blob_size.is_some() {
            return Err(GpuError::InvalidParameter(format!(
                "SET_SCANOUT with blob {resource_id} (use SET_SCANOUT_BLOB)"
            )));
        }
        check_scanout_rect(rect, res.width, res.height)?;
        let mut state = ScanoutState {
            resource_id,
            rect,
            blob: None,
            dmabuf: false,
        };
        if display.supports_dmabuf() {
            match self.renderer.export_dmabuf(resource_id) {
                Ok(d) => {
                    display.dmabuf_scanout(
                        scanout_id,
                        &DmabufScanout {
                            fd: d.fd.as_fd(),
                            x: rect.x,
                            y: rect.y,
                            width: rect.width,
                            height: rect.height,
                            fd_width: d.width,
                            fd_height: d.height,
                            fd_stride: d.stride,
                            fd_flags: d.flags,
                            fourcc: d.fourcc,
                            modifier: d.modifier,
                        },
                    );
                    state.dmabuf = true;
                }
                Err(e) => debug!("resource {resource_id}: no dmabuf ({e}), sending pixels"),
            }
        }
        if !state.dmabuf {
            display.scanout(scanout_id, rect.width, rect.height);
        }
        self.scanouts[idx] = state;
        Ok(Response::OkNoData)
    }

    /// SET_SCANOUT_BLOB: like SET_SCANOUT, for an image laid out in a blob.
    pub(super) fn set_scanout_blob(
        &mut self,
        scanout_id: u32,
        resource_id: u32,
        rect: Rect,
        layout: BlobScanoutLayout,
        display: &mut dyn Display,
    ) -> GpuResult<Response> {
        let idx = self.check_scanout(scanout_id)?;
        if resource_id == 0 {
            self.disable_scanout(idx, display);
            return Ok(Response::OkNoData);
        }
        let res = self.resource(resource_id)?;
        let size = res.blob_size.ok_or_else(|| {
            GpuError::InvalidParameter(format!("resource {resource_id} is not a blob"))
        })?;
        let host_blob = res.blob_mem != VIRTIO_GPU_BLOB_MEM_GUEST;
        let Some(pixel_format) = PixelFormat::from_virtio(layout.format) else {
            return Err(GpuError::InvalidParameter(format!(
                "format {}",
                layout.format
            )));
        };
        check_scanout_rect(rect, layout.width, layout.height)?;
        let row = u64::from(layout.width) * u64::from(BYTES_PER_PIXEL);
        let stride = u64::from(layout.strides[0]);
        let end = stride
            .checked_mul(u64::from(layout.height - 1))
            .and_then(|v| v.checked_add(u64::from(layout.offsets[0])))
            .and_then(|v| v.checked_add(row));
        if stride < row || !matches!(end, Some(e) if e <= size) {
            return Err(GpuError::InvalidParameter(format!(
                "blob image {layout:?} does not fit blob {resource_id} of {size} bytes"
            )));
        }
        // A host blob that exports as a dmabuf goes to the display as one (zero copy; the
        // display message has no offset, so the image must start the buffer); anything else is
        // read back at each flush (guest pages, or the renderer's mapping of a host blob).
        let mut dmabuf = false;
        if host_blob && layout.offsets[0] == 0 && display.supports_dmabuf() {
            match self.renderer.export_blob(resource_id) {
                Ok(e) if e.kind == BlobHandleKind::Dmabuf => {
                    display.dmabuf_scanout(
                        scanout_id,
                        &DmabufScanout {
                            fd: e.fd.as_fd(),
                            x: rect.x,
                            y: rect.y,
                            width: rect.width,
                            height: rect.height,
                            fd_width: layout.width,
                            fd_height: layout.height,
                            fd_stride: layout.strides[0],
                            fd_flags: 0,
                            fourcc: pixel_format.fourcc as u32,
                            modifier: None,
                        },
                    );
                    dmabuf = true;
                }
                Ok(e) => debug!(
                    "blob {resource_id} exports as {:?}, not a dmabuf: reading it back",
                    e.kind
                ),
                Err(e) => debug!("blob {resource_id}: no dmabuf ({e}), reading it back"),
            }
        }
        if !dmabuf {
            display.scanout(scanout_id, rect.width, rect.height);
        }
        self.scanouts[idx] = ScanoutState {
            resource_id,
            rect,
            blob: Some(layout),
            dmabuf,
        };
        Ok(Response::OkNoData)
    }

    /// RESOURCE_FLUSH: the damage on every scanout showing the resource goes to the display.
    pub(super) fn resource_flush(
        &mut self,
        resource_id: u32,
        rect: Rect,
        display: &mut dyn Display,
    ) -> GpuResult<Response> {
        let res = self.resource(resource_id)?;
        if res.blob_size.is_none() && !rect.is_inside(res.width, res.height) {
            return Err(GpuError::InvalidParameter(format!(
                "flush {rect:?} outside {}x{}",
                res.width, res.height
            )));
        }
        let mut first_error = None;
        let Self {
            renderer,
            scanouts,
            flush_buffer,
            budget,
            ..
        } = self;
        for (i, s) in scanouts.iter().enumerate() {
            if s.resource_id != resource_id {
                continue;
            }
            let Some(damage) = rect.intersect(&s.rect) else {
                continue;
            };
            // i < 16; damage lies inside the scanout rect.
            let (sid, dx, dy) = (i as u32, damage.x - s.rect.x, damage.y - s.rect.y);
            if s.dmabuf {
                display.dmabuf_update(sid, dx, dy, damage.width, damage.height);
                continue;
            }
            if s.blob.is_none() {
                // Rows the renderer holds as display pixels already go out without a copy.
                if let Some(rows) = renderer.scanout_pixels(resource_id, damage) {
                    display.update(sid, dx, dy, damage.width, damage.height, rows);
                    continue;
                }
            }
            // Bounded by MAX_SCANOUT_DIMENSION^2 * 4, charged to the host memory budget, and
            // allocated fallibly.
            let len = damage.width as usize * damage.height as usize * BYTES_PER_PIXEL as usize;
            let pixels = match flush_buffer.get(len, budget) {
                Ok(p) => p,
                Err(e) => {
                    // Returned as the command's error, which is logged rate limited.
                    debug!("flush of resource {resource_id}: {len} bytes: {e}");
                    first_error.get_or_insert(RendererError::OutOfMemory(format!(
                        "flush buffer of {len} bytes: {e}"
                    )));
                    continue;
                }
            };
            let read = match &s.blob {
                Some(layout) => renderer.read_blob_pixels(resource_id, layout, damage, pixels),
                None => renderer.read_pixels(resource_id, damage, pixels),
            };
            match read {
                Ok(()) => display.update(sid, dx, dy, damage.width, damage.height, pixels),
                Err(e) => {
                    debug!("flush of resource {resource_id} on scanout {i}: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        flush_buffer.trim(budget);
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(Response::OkNoData),
        }
    }
}

/// A scanout rectangle must be non-empty, inside the image and at most
/// [`MAX_SCANOUT_DIMENSION`] on each side.
fn check_scanout_rect(rect: Rect, width: u32, height: u32) -> GpuResult<()> {
    if rect.is_empty()
        || !rect.is_inside(width, height)
        || rect.width > MAX_SCANOUT_DIMENSION
        || rect.height > MAX_SCANOUT_DIMENSION
    {
        return Err(GpuError::InvalidParameter(format!(
            "scanout {rect:?} in a {width}x{height} image"
        )));
    }
    Ok(())
}

pub(super) fn default_modes(config: &GpuConfig) -> Vec<DisplayMode> {
    (0..config.num_scanouts)
        .map(|i| {
            if i == 0 {
                DisplayMode {
                    x: 0,
                    y: 0,
                    width: config.default_width,
                    height: config.default_height,
                    enabled: true,
                }
            } else {
                DisplayMode::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::test_support::*;
    use crate::gpu::{generate_edid, GpuConfig};
    use crate::protocol::tests::le32s;
    use crate::protocol::*;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn create_attach_transfer_scanout_flush_sends_exactly_the_damage() {
        let mut h = Harness::software();
        let (w, ht) = (9u32, 6u32);
        write_image(&h, w, ht);
        assert_eq!(
            h.create_2d(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, w, ht),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        // Backing in two pieces.
        let half = w * ht * 2;
        assert_eq!(
            h.attach(1, &[(DATA_BASE, half), (DATA_BASE + u64::from(half), half)]),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(
            h.transfer(1, Rect::new(0, 0, w, ht), 0),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        // Show the sub-rectangle (2,1) 6x4 of the resource on scanout 0.
        let sr = Rect::new(2, 1, 6, 4);
        assert_eq!(h.set_scanout(0, 1, sr), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.display.calls, vec![Call::Scanout(0, 6, 4)]);
        h.display.calls.clear();
        // Flush (0,0) 4x3: the damage is its intersection with the scanout, (2,1) 2x2,
        // reported relative to the scanout at (0,0).
        assert_eq!(h.flush(1, Rect::new(0, 0, 4, 3)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.display.calls,
            vec![Call::Update(0, 0, 0, 2, 2, expected(Rect::new(2, 1, 2, 2)))]
        );
        h.display.calls.clear();
        // A flush outside the scanout sends nothing; one inside sends just that.
        assert_eq!(h.flush(1, Rect::new(8, 0, 1, 6)), VIRTIO_GPU_RESP_OK_NODATA);
        assert!(h.display.calls.is_empty());
        assert_eq!(h.flush(1, Rect::new(5, 3, 3, 3)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.display.calls,
            vec![Call::Update(0, 3, 2, 3, 2, expected(Rect::new(5, 3, 3, 2)))]
        );
        h.display.calls.clear();
        // A flush of a rectangle outside the resource is refused.
        assert_eq!(
            h.flush(1, Rect::new(0, 0, w + 1, 1)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // Unref disables the scanout showing it.
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[1, 0]))),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.display.calls, vec![Call::Scanout(0, 0, 0)]);
        assert_eq!(
            h.flush(1, Rect::new(0, 0, 1, 1)),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
    }

    #[test]
    fn flushes_of_any_size_after_each_other_are_exact() {
        // Whole rows (lent by the renderer) and partial rows (read into the reused flush
        // buffer), large then small then large: no stale bytes of an earlier flush show.
        let mut h = Harness::software();
        let (w, ht) = (9u32, 7u32);
        write_image(&h, w, ht);
        h.create_2d(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, w, ht);
        h.attach(1, &[(DATA_BASE, w * ht * 4)]);
        assert_eq!(
            h.transfer(1, Rect::new(0, 0, w, ht), 0),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        h.set_scanout(0, 1, Rect::new(0, 0, w, ht));
        for r in [
            Rect::new(0, 0, w, ht),
            Rect::new(1, 1, 7, 5),
            Rect::new(3, 2, 2, 1),
            Rect::new(0, 4, w, 2),
            Rect::new(0, 0, w - 1, ht),
            Rect::new(8, 6, 1, 1),
        ] {
            h.display.calls.clear();
            assert_eq!(h.flush(1, r), VIRTIO_GPU_RESP_OK_NODATA);
            assert_eq!(
                h.display.calls,
                vec![Call::Update(0, r.x, r.y, r.width, r.height, expected(r))],
                "{r:?}"
            );
        }
    }

    #[test]
    fn flush_buffer_is_reused_and_freed_when_large() {
        let mut budget = HostBudget::new(1 << 30);
        let mut b = FlushBuffer::default();
        b.get(64, &mut budget).unwrap().fill(7);
        let p = b.buf.as_ptr();
        assert_eq!(b.get(16, &mut budget).unwrap().len(), 16);
        b.trim(&mut budget);
        assert_eq!(
            (b.buf.as_ptr(), b.buf.len()),
            (p, 64),
            "kept, not reallocated"
        );
        assert_eq!(budget.used_for(Use::FlushBuffer), 64);
        assert_eq!(
            b.get(FLUSH_BUFFER_KEEP_BYTES + 4, &mut budget)
                .unwrap()
                .len(),
            FLUSH_BUFFER_KEEP_BYTES + 4
        );
        assert_eq!(budget.used(), FLUSH_BUFFER_KEEP_BYTES as u64 + 4);
        b.trim(&mut budget);
        assert_eq!(b.buf.capacity(), 0, "a buffer over the limit is freed");
        assert_eq!(budget.used(), 0, "and its charge given back");
    }

    #[test]
    fn display_info_and_edid() {
        let mut h = Harness::software();
        let r = h.send(&req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[]));
        assert_eq!(r.used.unwrap().len, 408);
        let d = h.resp(&r, 408);
        assert_eq!(&d[0..4], &VIRTIO_GPU_RESP_OK_DISPLAY_INFO.to_le_bytes());
        assert_eq!(&d[24..48], &le32s(&[0, 0, 1024, 768, 1, 0])[..]);
        assert!(d[48..].iter().all(|&b| b == 0));
        // From the display when it can tell.
        h.display.modes = Some(vec![DisplayMode {
            x: 0,
            y: 0,
            width: 1920,
            height: 1080,
            enabled: true,
        }]);
        let r = h.send(&req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[]));
        assert_eq!(
            &h.resp(&r, 48)[24..48],
            &le32s(&[0, 0, 1920, 1080, 1, 0])[..]
        );
        // Generated EDID for that mode.
        let r = h.send(&req(VIRTIO_GPU_CMD_GET_EDID, &le32s(&[0, 0])));
        let e = h.resp(&r, 1056);
        assert_eq!(&e[0..4], &VIRTIO_GPU_RESP_OK_EDID.to_le_bytes());
        assert_eq!(&e[24..28], &128u32.to_le_bytes());
        let edid = &e[32..160];
        assert_eq!(edid, &generate_edid(1920, 1080)[..]);
        // The display's EDID wins.
        h.display.edid = Some(vec![1, 2, 3]);
        let r = h.send(&req(VIRTIO_GPU_CMD_GET_EDID, &le32s(&[0, 0])));
        assert_eq!(&h.resp(&r, 35)[24..35], &[3, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_GET_EDID, &le32s(&[1, 0]))),
            VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID
        );
    }

    #[test]
    fn dmabuf_scanouts_get_dmabuf_updates() {
        let (mut h, _) = Harness::manual(GpuConfig {
            num_scanouts: 2,
            ..Default::default()
        });
        h.display.dmabuf = true;
        h.create_2d(77, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 16, 8);
        h.create_2d(5, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 16, 8);
        assert_eq!(
            h.set_scanout(1, 77, Rect::new(2, 0, 10, 8)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        // Resource 5 cannot be exported: scanout 0 falls back to pixels.
        assert_eq!(
            h.set_scanout(0, 5, Rect::new(0, 0, 16, 8)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(
            h.display.calls,
            vec![Call::DmabufScanout(1, 2, 0, 10, 8), Call::Scanout(0, 16, 8)]
        );
        h.display.calls.clear();
        assert_eq!(
            h.flush(77, Rect::new(0, 1, 4, 2)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.flush(5, Rect::new(0, 0, 1, 1)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.display.calls,
            vec![
                Call::DmabufUpdate(1, 0, 1, 2, 2),
                Call::Update(0, 0, 0, 1, 1, vec![0, 0, 0, 0xff])
            ]
        );
        // A display without dmabuf support never gets one.
        h.display.dmabuf = false;
        h.display.calls.clear();
        h.set_scanout(1, 77, Rect::new(0, 0, 16, 8));
        assert_eq!(h.display.calls, vec![Call::Scanout(1, 16, 8)]);
    }

    #[test]
    fn guest_blob_scanout_reads_guest_memory() {
        let mut h = Harness::software();
        let (w, ht) = (4u32, 3u32);
        let stride = w * 4 + 8;
        // The image at DATA_BASE + 16 with a padded stride.
        for y in 0..ht {
            for x in 0..w {
                h.mem
                    .write_slice(
                        &px(x, y),
                        GuestAddress(DATA_BASE + 16 + u64::from(y * stride + x * 4)),
                    )
                    .unwrap();
            }
        }
        let size = u64::from(16 + stride * ht);
        let mut b = le32s(&[7, VIRTIO_GPU_BLOB_MEM_GUEST, 0, 1]);
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&DATA_BASE.to_le_bytes());
        b.extend_from_slice(&le32s(&[size as u32, 0]));
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &b)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        let sb = |rect: Rect, stride: u32| {
            req(
                VIRTIO_GPU_CMD_SET_SCANOUT_BLOB,
                &le32s(&[
                    rect.x,
                    rect.y,
                    rect.width,
                    rect.height,
                    0,
                    7,
                    w,
                    ht,
                    VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
                    0,
                    stride,
                    0,
                    0,
                    0,
                    16,
                    0,
                    0,
                    0,
                ]),
            )
        };
        assert_eq!(
            h.cmd(&sb(Rect::new(0, 0, w, ht), stride)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.display.calls, vec![Call::Scanout(0, w, ht)]);
        h.display.calls.clear();
        assert_eq!(h.flush(7, Rect::new(1, 1, 2, 2)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.display.calls,
            vec![Call::Update(0, 1, 1, 2, 2, expected(Rect::new(1, 1, 2, 2)))]
        );
        // Layouts that do not fit the blob are refused.
        assert_eq!(
            h.cmd(&sb(Rect::new(0, 0, w, ht), stride + 8)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.cmd(&sb(Rect::new(0, 0, w, ht), w * 4 - 1)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.cmd(&sb(Rect::new(1, 0, w, ht), stride)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // A guest blob is guest memory: the guest maps it itself, RESOURCE_MAP_BLOB refuses it.
        let mut mb = le32s(&[7, 0]);
        mb.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB, &mb)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // A blob bigger than its backing, an unknown blob_mem, host blobs without 3D.
        let mut big = le32s(&[8, VIRTIO_GPU_BLOB_MEM_GUEST, 0, 1]);
        big.extend_from_slice(&0u64.to_le_bytes());
        big.extend_from_slice(&(size + 1).to_le_bytes());
        big.extend_from_slice(&DATA_BASE.to_le_bytes());
        big.extend_from_slice(&le32s(&[size as u32, 0]));
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &big)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        let mut odd = le32s(&[8, 9, 0, 0]);
        odd.extend_from_slice(&[0u8; 16]);
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &odd)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        let mut host = le32s(&[8, VIRTIO_GPU_BLOB_MEM_HOST3D, 0, 0]);
        host.extend_from_slice(&1u64.to_le_bytes());
        host.extend_from_slice(&4096u64.to_le_bytes());
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &host)),
            VIRTIO_GPU_RESP_ERR_UNSPEC
        );
    }

    #[test]
    fn host_blob_scanout_uses_the_dmabuf_when_it_is_one() {
        let (mut h, _log) = host_blob_harness(REGION);
        h.display.dmabuf = true;
        let ok = VIRTIO_GPU_RESP_OK_NODATA;
        for id in [DMABUF_BLOB, 10] {
            assert_eq!(
                h.cmd(&create_blob_cmd(
                    id,
                    VIRTIO_GPU_BLOB_MEM_HOST3D,
                    0,
                    512,
                    &[]
                )),
                ok
            );
        }
        let sb = |id: u32, r: Rect| {
            let mut b = le32s(&[r.x, r.y, r.width, r.height, 0, id, 16, 8]);
            b.extend_from_slice(&le32s(&[VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 0]));
            b.extend_from_slice(&le32s(&[64, 0, 0, 0, 0, 0, 0, 0]));
            req(VIRTIO_GPU_CMD_SET_SCANOUT_BLOB, &b)
        };
        assert_eq!(h.cmd(&sb(DMABUF_BLOB, Rect::new(2, 1, 8, 4))), ok);
        assert_eq!(h.display.calls, vec![Call::DmabufScanout(0, 2, 1, 8, 4)]);
        h.display.calls.clear();
        assert_eq!(h.flush(DMABUF_BLOB, Rect::new(0, 0, 16, 8)), ok);
        assert_eq!(h.display.calls, vec![Call::DmabufUpdate(0, 0, 0, 8, 4)]);
        // A blob exported as shared memory is read back instead.
        h.display.calls.clear();
        assert_eq!(h.cmd(&sb(10, Rect::new(0, 0, 16, 8))), ok);
        assert_eq!(h.display.calls, vec![Call::Scanout(0, 16, 8)]);
    }

    /// The flush buffer is charged: a flush that would grow it beyond the budget is refused
    /// with ERR_OUT_OF_MEMORY; reset gives it back.
    #[test]
    fn flush_buffer_is_charged_and_refused_at_the_budget() {
        let (w, ht) = (64u32, 64u32);
        let resource = crate::limits::RESOURCE_RECORD_BYTES
            + u64::from(w * ht * 4)
            + crate::limits::BACKING_ENTRY_BYTES
            + crate::limits::BACKING_RECORD_BYTES;
        let mut h = Harness::new(
            Box::new(crate::renderer::software::SoftwareRenderer::new()),
            GpuConfig {
                max_hostmem: resource + 1000,
                ..GpuConfig::default()
            },
        );
        write_image(&h, w, ht);
        h.create_2d(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, w, ht);
        h.attach(1, &[(DATA_BASE, w * ht * 4)]);
        h.transfer(1, Rect::new(0, 0, w, ht), 0);
        h.set_scanout(0, 1, Rect::new(0, 0, w, ht));
        assert_eq!(h.budget_used(), resource);
        // Whole rows are lent by the renderer: no buffer.
        assert_eq!(
            h.flush(1, Rect::new(0, 0, w, ht)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.budget_used(), resource);
        // A partial 10x10 needs 400 bytes, 20x20 1600: over the 1000 left.
        assert_eq!(
            h.flush(1, Rect::new(1, 1, 10, 10)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.budget_used(), resource + 400);
        h.display.calls.clear();
        assert_eq!(
            h.flush(1, Rect::new(1, 1, 20, 20)),
            VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY
        );
        assert!(h.display.calls.is_empty());
        assert_eq!(
            h.flush(1, Rect::new(2, 2, 15, 15)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.budget_used(), resource + 900);
        h.gpu.reset();
        assert_eq!(h.budget_used(), 0);
    }
}
