//! The cursor queue's commands: UPDATE_CURSOR (the resource's pixels as a 64x64 image, or hide
//! the cursor with resource 0) and MOVE_CURSOR, told to the [`Display`].

use super::{GpuError, GpuResult, VirtioGpu};
use crate::display::{Display, CURSOR_SIZE};
use crate::protocol::{CursorCommand, Rect, Response};
use crate::renderer::formats::BYTES_PER_PIXEL;

impl VirtioGpu {
    /// UPDATE_CURSOR: resource 0 hides the cursor; otherwise up to 64x64 of the resource's
    /// pixels become the cursor image.
    pub(super) fn update_cursor(
        &mut self,
        c: &CursorCommand,
        display: &mut dyn Display,
    ) -> GpuResult<Response> {
        self.check_scanout(c.scanout_id)?;
        if c.resource_id == 0 {
            display.cursor_hide(c.scanout_id, c.x, c.y);
            return Ok(Response::OkNoData);
        }
        let res = self.resource(c.resource_id)?;
        if res.blob_size.is_some() {
            return Err(GpuError::InvalidParameter(format!(
                "cursor resource {} is a blob",
                c.resource_id
            )));
        }
        // The spec fixes 64x64; a smaller resource is shown padded with transparent pixels. A
        // 3D resource can have no pixels at all (a PIPE_BUFFER of width 0).
        let w = res.width.min(CURSOR_SIZE);
        let h = res.height.min(CURSOR_SIZE);
        if w == 0 || h == 0 {
            return Err(GpuError::InvalidParameter(format!(
                "cursor resource {} has no pixels ({}x{})",
                c.resource_id, res.width, res.height
            )));
        }
        let mut argb = vec![0u8; (w * h * BYTES_PER_PIXEL) as usize];
        self.renderer
            .read_pixels(c.resource_id, Rect::new(0, 0, w, h), &mut argb)?;
        let mut image = Box::new([0u32; (CURSOR_SIZE * CURSOR_SIZE) as usize]);
        for (y, row) in argb
            .chunks_exact((w * BYTES_PER_PIXEL) as usize)
            .enumerate()
        {
            for (x, p) in row.chunks_exact(4).enumerate() {
                image[y * CURSOR_SIZE as usize + x] = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            }
        }
        display.cursor_update(c.scanout_id, c.x, c.y, c.hot_x, c.hot_y, &image);
        Ok(Response::OkNoData)
    }

    /// MOVE_CURSOR.
    pub(super) fn move_cursor(
        &mut self,
        c: &CursorCommand,
        display: &mut dyn Display,
    ) -> GpuResult<Response> {
        self.check_scanout(c.scanout_id)?;
        display.cursor_move(c.scanout_id, c.x, c.y);
        Ok(Response::OkNoData)
    }
}

#[cfg(test)]
mod tests {
    use crate::gpu::test_support::*;
    use crate::gpu::QueueKind;
    use crate::protocol::tests::le32s;
    use crate::protocol::*;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn cursor_commands() {
        let mut h = Harness::software();
        // A 64x64 cursor image: pixel i = B,G,R,A of i.
        for i in 0..64u32 * 64 {
            h.mem
                .write_slice(&i.to_le_bytes(), GuestAddress(DATA_BASE + u64::from(i) * 4))
                .unwrap();
        }
        h.create_2d(5, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 64, 64);
        h.attach(5, &[(DATA_BASE, 64 * 64 * 4)]);
        h.transfer(5, Rect::new(0, 0, 64, 64), 0);
        let cur = |res: u32| le32s(&[0, 100, 200, 0, res, 3, 4, 0]);
        // On the cursor queue without a writable buffer, as Linux sends it.
        let r = h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_UPDATE_CURSOR, &cur(5)),
            0,
        );
        assert_eq!(r.used.unwrap().len, 0);
        let image: Vec<u32> = (0..64 * 64).collect();
        assert_eq!(
            h.display.calls,
            vec![Call::CursorUpdate(0, 100, 200, 3, 4, image)]
        );
        h.display.calls.clear();
        h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_MOVE_CURSOR, &cur(0)),
            24,
        );
        h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_UPDATE_CURSOR, &cur(0)),
            24,
        );
        assert_eq!(
            h.display.calls,
            vec![Call::CursorMove(0, 100, 200), Call::CursorHide(0, 100, 200)]
        );
        h.display.calls.clear();
        // A cursor command on the control queue is refused, and nothing happens.
        let r = h.send(&req(VIRTIO_GPU_CMD_MOVE_CURSOR, &cur(0)));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_UNSPEC);
        // A control command on the cursor queue too.
        let r = h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[]),
            408,
        );
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_UNSPEC);
        // Bad scanout and bad resource.
        let mut bad = cur(5);
        bad[0] = 3;
        let r = h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_MOVE_CURSOR, &bad),
            24,
        );
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
        let r = h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_UPDATE_CURSOR, &cur(9)),
            24,
        );
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        assert!(h.display.calls.is_empty());
        // A smaller cursor resource is padded with transparent pixels.
        h.create_2d(6, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 2, 1);
        h.send_on(
            QueueKind::Cursor,
            &req(VIRTIO_GPU_CMD_UPDATE_CURSOR, &cur(6)),
            0,
        );
        match &h.display.calls[..] {
            [Call::CursorUpdate(_, _, _, _, _, img)] => assert!(img.iter().all(|&p| p == 0)),
            other => panic!("{other:?}"),
        }
    }
}
