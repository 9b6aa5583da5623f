//! What the device tells the display: scanouts, damage, cursors.
//!
//! [`Display`] is the seam between the device state (`gpu.rs`) and whoever shows the guest's
//! screen. The vhost-user-gpu frontend (QEMU) is reached through the socket handed over with
//! `VHOST_USER_GPU_SET_SOCKET`; without one the device is headless.

use std::os::fd::BorrowedFd;

/// Width and height of the cursor image in pixels (the spec fixes 64x64).
pub const CURSOR_SIZE: u32 = 64;

/// One scanout's preferred mode as reported by the display.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DisplayMode {
    /// Horizontal position of the scanout in the display layout.
    pub x: u32,
    /// Vertical position of the scanout in the display layout.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Whether the display has this scanout enabled.
    pub enabled: bool,
}

/// A dmabuf to show on a scanout.
#[derive(Debug)]
pub struct DmabufScanout<'a> {
    /// The dmabuf.
    pub fd: BorrowedFd<'a>,
    /// Visible rectangle x inside the buffer.
    pub x: u32,
    /// Visible rectangle y inside the buffer.
    pub y: u32,
    /// Visible width.
    pub width: u32,
    /// Visible height.
    pub height: u32,
    /// Width of the whole buffer.
    pub fd_width: u32,
    /// Height of the whole buffer.
    pub fd_height: u32,
    /// Stride of the buffer in bytes.
    pub fd_stride: u32,
    /// `VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP` and friends.
    pub fd_flags: u32,
    /// DRM fourcc of the buffer.
    pub fourcc: u32,
    /// DRM format modifier, when known.
    pub modifier: Option<u64>,
}

/// Where the device's picture goes. Every method is fire-and-forget from the device's point of
/// view except the queries, which return `None` when the display cannot answer (not negotiated,
/// no peer, peer gone).
pub trait Display {
    /// The frontend's scanout layout (VHOST_USER_GPU_GET_DISPLAY_INFO), if it can tell.
    fn display_info(&mut self) -> Option<Vec<DisplayMode>>;
    /// The frontend's EDID blob for a scanout (VHOST_USER_GPU_GET_EDID), only when negotiated.
    fn edid(&mut self, scanout_id: u32) -> Option<Vec<u8>>;
    /// Set the scanout's size; `width == 0` disables it (VHOST_USER_GPU_SCANOUT).
    fn scanout(&mut self, scanout_id: u32, width: u32, height: u32);
    /// Damaged pixels, XRGB8888 (`PIXMAN_x8r8g8b8`), `width * height * 4` bytes, tightly packed
    /// (VHOST_USER_GPU_UPDATE).
    fn update(&mut self, scanout_id: u32, x: u32, y: u32, width: u32, height: u32, pixels: &[u8]);
    /// Whether the peer takes dmabufs at all (DMABUF_SCANOUT is always part of the protocol, but a
    /// headless display cannot use them).
    fn supports_dmabuf(&self) -> bool;
    /// Show a dmabuf on a scanout (VHOST_USER_GPU_DMABUF_SCANOUT or _SCANOUT2).
    fn dmabuf_scanout(&mut self, scanout_id: u32, scanout: &DmabufScanout<'_>);
    /// A dmabuf scanout's damage; returns once the peer has consumed it
    /// (VHOST_USER_GPU_DMABUF_UPDATE).
    fn dmabuf_update(&mut self, scanout_id: u32, x: u32, y: u32, width: u32, height: u32);
    /// A new cursor image, ARGB8888, 64x64 (VHOST_USER_GPU_CURSOR_UPDATE).
    fn cursor_update(
        &mut self,
        scanout_id: u32,
        x: u32,
        y: u32,
        hot_x: u32,
        hot_y: u32,
        image: &[u32; (CURSOR_SIZE * CURSOR_SIZE) as usize],
    );
    /// Move the cursor (VHOST_USER_GPU_CURSOR_POS).
    fn cursor_move(&mut self, scanout_id: u32, x: u32, y: u32);
    /// Hide the cursor (VHOST_USER_GPU_CURSOR_POS_HIDE).
    fn cursor_hide(&mut self, scanout_id: u32, x: u32, y: u32);
}
