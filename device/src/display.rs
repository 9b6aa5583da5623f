//! What the device tells the display: scanouts, damage, cursors.
//!
//! [`Display`] is the seam between the device state (`gpu/`) and whoever shows the guest's
//! screen. The vhost-user-gpu frontend (QEMU) is reached through the socket handed over with
//! `VHOST_USER_GPU_SET_SOCKET`; without one the device is headless.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc;
use std::time::Duration;

use vhost::vhost_user::gpu_message::{
    VhostUserGpuCursorPos, VhostUserGpuCursorUpdate, VhostUserGpuDMABUFScanout,
    VhostUserGpuDMABUFScanout2, VhostUserGpuEdidRequest, VhostUserGpuScanout, VhostUserGpuUpdate,
};
use vhost::vhost_user::message::VhostUserU64;
use vhost::vhost_user::GpuBackend;

/// How long the device waits for the display peer to answer a request that has a reply
/// (GET_PROTOCOL_FEATURES, GET_DISPLAY_INFO, GET_EDID, DMABUF_UPDATE). QEMU never answers some
/// of them (GET_EDID for a scanout at or above its `max_outputs`): after this the device drops
/// the socket, logs it and carries on headless instead of wedging the GPU thread.
pub const DISPLAY_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `request` (one that waits for the peer's reply) on `socket` from a thread of its own and
/// waits at most [`DISPLAY_REPLY_TIMEOUT`] for it; `ErrorKind::TimedOut` after that. A thread
/// left waiting holds its clone of the socket until the peer answers or closes it; the caller
/// drops its own, so at most one such thread lingers per socket.
fn with_reply_timeout<T: Send + 'static>(
    socket: &GpuBackend,
    request: impl FnOnce(&GpuBackend) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let socket = socket.clone();
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("gpu-display-reply".into())
        .spawn(move || {
            let _ = tx.send(request(&socket));
        })?;
    match rx.recv_timeout(DISPLAY_REPLY_TIMEOUT) {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no reply within {DISPLAY_REPLY_TIMEOUT:?}"),
        )),
    }
}

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
    /// (VHOST_USER_GPU_UPDATE). The fourth byte of each pixel is undefined (rows of a B8G8R8A8
    /// or B8G8R8X8 resource are sent as the guest wrote them, like QEMU's backend does).
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

// ---------------------------------------------------------------------------------------------
// Implementations
// ---------------------------------------------------------------------------------------------

/// `VHOST_USER_GPU_PROTOCOL_F_EDID` as a mask (bit 0). vhost 0.18's `VhostUserGpuProtocolFeatures`
/// spells the bit *numbers* as masks (`EDID = 0`, `DMABUF2 = 1`), so we keep our own.
pub const GPU_PROTOCOL_F_EDID: u64 = 1 << 0;
/// `VHOST_USER_GPU_PROTOCOL_F_DMABUF2` as a mask (bit 1).
pub const GPU_PROTOCOL_F_DMABUF2: u64 = 1 << 1;
/// The GPU-socket protocol features this backend can use.
pub const GPU_PROTOCOL_FEATURES_SUPPORTED: u64 = GPU_PROTOCOL_F_EDID | GPU_PROTOCOL_F_DMABUF2;

pub use crate::limits::MAX_UPDATE_PAYLOAD_BYTES;
pub use crate::protocol::EDID_BLOB_SIZE;

/// `VIRTIO_GPU_RESP_OK_DISPLAY_INFO`.
const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
/// `VIRTIO_GPU_RESP_OK_EDID`.
const RESP_OK_EDID: u32 = 0x1104;

/// Bytes per XRGB8888 pixel.
const BYTES_PER_PIXEL: usize = 4;

/// Number of scanouts a display may know about (the spec's maximum).
pub const MAX_SCANOUTS: usize = crate::limits::MAX_SCANOUTS as usize;

/// No display peer: every picture is dropped, queries are unanswered (the device then uses its
/// own defaults and generated EDID). Used with `--headless` and before the first
/// `VHOST_USER_GPU_SET_SOCKET`.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeadlessDisplay;

impl Display for HeadlessDisplay {
    fn display_info(&mut self) -> Option<Vec<DisplayMode>> {
        None
    }
    fn edid(&mut self, _scanout_id: u32) -> Option<Vec<u8>> {
        None
    }
    fn scanout(&mut self, _scanout_id: u32, _width: u32, _height: u32) {}
    fn update(&mut self, _: u32, _: u32, _: u32, _: u32, _: u32, _pixels: &[u8]) {}
    fn supports_dmabuf(&self) -> bool {
        false
    }
    fn dmabuf_scanout(&mut self, _scanout_id: u32, _scanout: &DmabufScanout<'_>) {}
    fn dmabuf_update(&mut self, _: u32, _: u32, _: u32, _: u32, _: u32) {}
    fn cursor_update(
        &mut self,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
        _image: &[u32; (CURSOR_SIZE * CURSOR_SIZE) as usize],
    ) {
    }
    fn cursor_move(&mut self, _: u32, _: u32, _: u32) {}
    fn cursor_hide(&mut self, _: u32, _: u32, _: u32) {}
}

/// What a scanout currently shows on the frontend, as far as this display told it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ScanoutShown {
    /// Nothing (never set, or disabled).
    #[default]
    Nothing,
    /// A pixel surface of this size (VHOST_USER_GPU_SCANOUT), fed with UPDATE.
    Surface { width: u32, height: u32 },
    /// A dmabuf (VHOST_USER_GPU_DMABUF_SCANOUT[2]), fed with DMABUF_UPDATE.
    Dmabuf,
}

/// The display at the other end of QEMU's vhost-user-gpu socket (`VHOST_USER_GPU_SET_SOCKET`).
///
/// On a new socket it does the GET/SET_PROTOCOL_FEATURES handshake. It asks for EDIDs only when
/// `VHOST_USER_GPU_PROTOCOL_F_EDID` was negotiated and only for scanouts below `num_scanouts`
/// (QEMU never answers GET_EDID for a scanout it does not have, so asking would hang), and uses
/// DMABUF_SCANOUT2 only with `..._F_DMABUF2` and a known modifier.
///
/// A socket error means the peer is gone: the socket is dropped and the display is headless
/// until the next [`GpuSocketDisplay::set_socket`]. It never panics on what the peer does.
///
/// What the frontend shows (per scanout) survives a socket replacement, because QEMU keeps its
/// surfaces across the SET_SOCKET it sends at every DRIVER_OK. An UPDATE for a scanout that was
/// never given a size is dropped: QEMU would composite into a surface it does not have.
pub struct GpuSocketDisplay {
    socket: Option<GpuBackend>,
    /// Protocol features negotiated on the current socket.
    features: u64,
    num_scanouts: u32,
    shown: [ScanoutShown; MAX_SCANOUTS],
}

impl std::fmt::Debug for GpuSocketDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSocketDisplay")
            .field("connected", &self.socket.is_some())
            .field("features", &self.features)
            .field("num_scanouts", &self.num_scanouts)
            .field("shown", &self.shown)
            .finish()
    }
}

impl GpuSocketDisplay {
    /// A display for a device with `num_scanouts` scanouts (clamped to 1..=16), with no socket
    /// yet.
    pub fn new(num_scanouts: u32) -> Self {
        GpuSocketDisplay {
            socket: None,
            features: 0,
            num_scanouts: num_scanouts.clamp(1, MAX_SCANOUTS as u32),
            shown: [ScanoutShown::Nothing; MAX_SCANOUTS],
        }
    }

    /// Replaces the socket (any older one is dropped) and does the protocol-feature handshake.
    pub fn set_socket(&mut self, socket: GpuBackend) {
        if self.socket.take().is_some() {
            log::info!("display: replacing the GPU socket");
        }
        self.features = 0;
        let offered = match with_reply_timeout(&socket, |s| s.get_protocol_features()) {
            Ok(v) => v.value,
            Err(e) => {
                log::warn!("display: GET_PROTOCOL_FEATURES failed, staying headless: {e}");
                return;
            }
        };
        let features = offered & GPU_PROTOCOL_FEATURES_SUPPORTED;
        if let Err(e) = socket.set_protocol_features(&VhostUserU64::new(features)) {
            log::warn!("display: SET_PROTOCOL_FEATURES failed, staying headless: {e}");
            return;
        }
        log::info!(
            "display: GPU socket connected, protocol features offered {offered:#x}, using {features:#x}"
        );
        self.features = features;
        self.socket = Some(socket);
    }

    /// The number of scanouts this display serves.
    pub fn num_scanouts(&self) -> u32 {
        self.num_scanouts
    }

    /// Whether a display peer is connected.
    pub fn is_connected(&self) -> bool {
        self.socket.is_some()
    }

    /// The GPU-socket protocol features negotiated on the current socket.
    pub fn protocol_features(&self) -> u64 {
        self.features
    }

    /// Drops the socket (the frontend went away or reset the device).
    pub fn disconnect(&mut self) {
        if self.socket.take().is_some() {
            log::info!("display: GPU socket dropped");
        }
        self.features = 0;
    }

    /// Runs `request`, which waits for the peer's reply, on the socket with
    /// [`DISPLAY_REPLY_TIMEOUT`]; an error or no reply in time drops the socket (the peer is
    /// gone, broken or will not answer).
    fn with_reply<T: Send + 'static>(
        &mut self,
        what: &str,
        request: impl FnOnce(&GpuBackend) -> std::io::Result<T> + Send + 'static,
    ) -> Option<T> {
        self.with_socket(what, |s| with_reply_timeout(s, request))
    }

    /// Runs `f` on the socket; an error drops the socket (the peer is gone or broken).
    fn with_socket<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&GpuBackend) -> std::io::Result<T>,
    ) -> Option<T> {
        let socket = self.socket.as_ref()?;
        match f(socket) {
            Ok(v) => Some(v),
            Err(e) => {
                log::warn!("display: {what} failed ({e}); dropping the GPU socket, now headless");
                self.disconnect();
                None
            }
        }
    }

    fn shown_mut(&mut self, scanout_id: u32) -> Option<&mut ScanoutShown> {
        if scanout_id >= self.num_scanouts {
            log::warn!("display: scanout {scanout_id} out of range, ignored");
            return None;
        }
        self.shown.get_mut(scanout_id as usize)
    }

    /// Sends one UPDATE of pixels that are already laid out tightly for `width x height`.
    fn send_update(&mut self, update: VhostUserGpuUpdate, pixels: &[u8]) -> bool {
        self.with_socket("UPDATE", |s| s.update_scanout(&update, pixels))
            .is_some()
    }
}

/// Checks that `x, y, width, height` is a non-empty rectangle inside `bound_w x bound_h`.
fn rect_inside(x: u32, y: u32, width: u32, height: u32, bound_w: u32, bound_h: u32) -> bool {
    width > 0
        && height > 0
        && x.checked_add(width).is_some_and(|r| r <= bound_w)
        && y.checked_add(height).is_some_and(|b| b <= bound_h)
}

impl Display for GpuSocketDisplay {
    fn display_info(&mut self) -> Option<Vec<DisplayMode>> {
        let info = self.with_reply("GET_DISPLAY_INFO", |s| s.get_display_info())?;
        let resp_type = info.hdr.type_;
        if resp_type != RESP_OK_DISPLAY_INFO {
            log::warn!("display: GET_DISPLAY_INFO answered with type {resp_type:#x}");
            return None;
        }
        Some(
            info.pmodes
                .iter()
                .take(self.num_scanouts as usize)
                .map(|p| DisplayMode {
                    x: p.r.x,
                    y: p.r.y,
                    width: p.r.width,
                    height: p.r.height,
                    enabled: p.enabled != 0,
                })
                .collect(),
        )
    }

    fn edid(&mut self, scanout_id: u32) -> Option<Vec<u8>> {
        if self.features & GPU_PROTOCOL_F_EDID == 0 || scanout_id >= self.num_scanouts {
            return None;
        }
        let req = VhostUserGpuEdidRequest { scanout_id };
        let resp = self.with_reply("GET_EDID", move |s| s.get_edid(&req))?;
        let resp_type = resp.hdr.type_;
        let size = resp.size as usize;
        if resp_type != RESP_OK_EDID || size == 0 || size > EDID_BLOB_SIZE {
            log::warn!("display: GET_EDID answered with type {resp_type:#x}, size {size}");
            return None;
        }
        resp.edid.get(..size).map(<[u8]>::to_vec)
    }

    fn scanout(&mut self, scanout_id: u32, width: u32, height: u32) {
        let Some(shown) = self.shown_mut(scanout_id) else {
            return;
        };
        let was_dmabuf = *shown == ScanoutShown::Dmabuf;
        *shown = if width == 0 || height == 0 {
            ScanoutShown::Nothing
        } else {
            ScanoutShown::Surface { width, height }
        };
        if was_dmabuf {
            // Release the frontend's dmabuf first: DMABUF_SCANOUT without an fd disables it.
            let off = VhostUserGpuDMABUFScanout {
                scanout_id,
                ..Default::default()
            };
            self.with_socket("DMABUF_SCANOUT (disable)", |s| {
                s.set_dmabuf_scanout(&off, None::<&std::fs::File>)
            });
            if width == 0 || height == 0 {
                return;
            }
        }
        let msg = VhostUserGpuScanout {
            scanout_id,
            width: if height == 0 { 0 } else { width },
            height: if width == 0 { 0 } else { height },
        };
        self.with_socket("SCANOUT", |s| s.set_scanout(&msg));
    }

    fn update(&mut self, scanout_id: u32, x: u32, y: u32, width: u32, height: u32, pixels: &[u8]) {
        let Some(&mut ScanoutShown::Surface {
            width: sw,
            height: sh,
        }) = self.shown_mut(scanout_id)
        else {
            log::debug!("display: UPDATE for scanout {scanout_id} without a surface, dropped");
            return;
        };
        if !rect_inside(x, y, width, height, sw, sh) {
            log::warn!(
                "display: UPDATE {width}x{height}+{x}+{y} outside scanout {scanout_id} ({sw}x{sh}), dropped"
            );
            return;
        }
        // width, height <= the scanout size, which came from u32s; the products are checked.
        let row_bytes = (width as usize).checked_mul(BYTES_PER_PIXEL);
        let total = row_bytes.and_then(|r| r.checked_mul(height as usize));
        let (Some(row_bytes), Some(total)) = (row_bytes, total) else {
            return;
        };
        if pixels.len() != total {
            log::warn!(
                "display: UPDATE carries {} bytes, {width}x{height} needs {total}; dropped",
                pixels.len()
            );
            return;
        }
        if self.socket.is_none() {
            return;
        }
        if row_bytes <= MAX_UPDATE_PAYLOAD_BYTES {
            // Whole rows per message: the chunk is a contiguous slice of `pixels`.
            let rows_per_chunk = (MAX_UPDATE_PAYLOAD_BYTES / row_bytes).max(1);
            for (i, chunk) in pixels.chunks(rows_per_chunk * row_bytes).enumerate() {
                let rows = chunk.len() / row_bytes;
                // i * rows_per_chunk < height (a u32), rows <= rows_per_chunk.
                let y0 = y + (i * rows_per_chunk) as u32;
                let msg = VhostUserGpuUpdate {
                    scanout_id,
                    x,
                    y: y0,
                    width,
                    height: rows as u32,
                };
                if !self.send_update(msg, chunk) {
                    return;
                }
            }
        } else {
            // A single row is bigger than a message: split each row into column pieces.
            let cols_per_chunk = MAX_UPDATE_PAYLOAD_BYTES / BYTES_PER_PIXEL;
            for (row_index, row) in pixels.chunks(row_bytes).enumerate() {
                for (col_index, piece) in row.chunks(cols_per_chunk * BYTES_PER_PIXEL).enumerate() {
                    let msg = VhostUserGpuUpdate {
                        scanout_id,
                        x: x + (col_index * cols_per_chunk) as u32,
                        y: y + row_index as u32,
                        width: (piece.len() / BYTES_PER_PIXEL) as u32,
                        height: 1,
                    };
                    if !self.send_update(msg, piece) {
                        return;
                    }
                }
            }
        }
    }

    fn supports_dmabuf(&self) -> bool {
        self.socket.is_some()
    }

    fn dmabuf_scanout(&mut self, scanout_id: u32, scanout: &DmabufScanout<'_>) {
        let Some(shown) = self.shown_mut(scanout_id) else {
            return;
        };
        *shown = ScanoutShown::Dmabuf;
        let base = VhostUserGpuDMABUFScanout {
            scanout_id,
            x: scanout.x,
            y: scanout.y,
            width: scanout.width,
            height: scanout.height,
            fd_width: scanout.fd_width,
            fd_height: scanout.fd_height,
            fd_stride: scanout.fd_stride,
            fd_flags: scanout.fd_flags,
            fd_drm_fourcc: scanout.fourcc,
        };
        let fd = scanout.fd.as_fd();
        match scanout.modifier {
            Some(modifier) if self.features & GPU_PROTOCOL_F_DMABUF2 != 0 => {
                let msg = VhostUserGpuDMABUFScanout2 {
                    dmabuf_scanout: base,
                    modifier,
                };
                self.with_socket("DMABUF_SCANOUT2", |s| {
                    s.set_dmabuf_scanout2(&msg, Some(&fd))
                });
            }
            _ => {
                self.with_socket("DMABUF_SCANOUT", |s| s.set_dmabuf_scanout(&base, Some(&fd)));
            }
        }
    }

    fn dmabuf_update(&mut self, scanout_id: u32, x: u32, y: u32, width: u32, height: u32) {
        if self.shown_mut(scanout_id).map(|s| *s) != Some(ScanoutShown::Dmabuf) {
            log::debug!(
                "display: DMABUF_UPDATE for scanout {scanout_id} without a dmabuf, dropped"
            );
            return;
        }
        let msg = VhostUserGpuUpdate {
            scanout_id,
            x,
            y,
            width,
            height,
        };
        self.with_reply("DMABUF_UPDATE", move |s| s.update_dmabuf_scanout(&msg));
    }

    fn cursor_update(
        &mut self,
        scanout_id: u32,
        x: u32,
        y: u32,
        hot_x: u32,
        hot_y: u32,
        image: &[u32; (CURSOR_SIZE * CURSOR_SIZE) as usize],
    ) {
        if self.shown_mut(scanout_id).is_none() || self.socket.is_none() {
            return;
        }
        // QEMU copies the data as native-endian uint32 ARGB words.
        let mut bytes = [0u8; (CURSOR_SIZE * CURSOR_SIZE) as usize * 4];
        for (dst, px) in bytes.chunks_exact_mut(4).zip(image.iter()) {
            dst.copy_from_slice(&px.to_ne_bytes());
        }
        let msg = VhostUserGpuCursorUpdate {
            pos: VhostUserGpuCursorPos { scanout_id, x, y },
            hot_x,
            hot_y,
        };
        self.with_socket("CURSOR_UPDATE", |s| s.cursor_update(&msg, &bytes));
    }

    fn cursor_move(&mut self, scanout_id: u32, x: u32, y: u32) {
        if self.shown_mut(scanout_id).is_none() {
            return;
        }
        let msg = VhostUserGpuCursorPos { scanout_id, x, y };
        self.with_socket("CURSOR_POS", |s| s.cursor_pos(&msg));
    }

    fn cursor_hide(&mut self, scanout_id: u32, x: u32, y: u32) {
        if self.shown_mut(scanout_id).is_none() {
            return;
        }
        let msg = VhostUserGpuCursorPos { scanout_id, x, y };
        self.with_socket("CURSOR_POS_HIDE", |s| s.cursor_pos_hide(&msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::thread;
    use vmm_sys_util::sock_ctrl_msg::ScmSocket;

    const REPLY: u32 = 0x4;

    /// The frontend's end of the GPU socket, reading and answering like QEMU.
    struct Peer {
        sock: UnixStream,
    }

    struct Msg {
        request: u32,
        flags: u32,
        payload: Vec<u8>,
        fds: Vec<OwnedFd>,
    }

    impl Msg {
        fn u32_at(&self, i: usize) -> u32 {
            u32::from_ne_bytes(self.payload[i * 4..i * 4 + 4].try_into().unwrap())
        }
    }

    impl Peer {
        fn read(&mut self) -> Msg {
            let mut hdr = [0u8; 12];
            let (n, file) = self.sock.recv_with_fd(&mut hdr).unwrap();
            assert_eq!(n, 12, "short header");
            let word = |i: usize| u32::from_ne_bytes(hdr[i * 4..i * 4 + 4].try_into().unwrap());
            let mut payload = vec![0u8; word(2) as usize];
            self.sock.read_exact(&mut payload).unwrap();
            Msg {
                request: word(0),
                flags: word(1),
                payload,
                fds: file.into_iter().map(OwnedFd::from).collect(),
            }
        }

        fn reply(&mut self, request: u32, payload: &[u8]) {
            let mut m = Vec::new();
            m.extend_from_slice(&request.to_ne_bytes());
            m.extend_from_slice(&REPLY.to_ne_bytes());
            m.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
            m.extend_from_slice(payload);
            self.sock.write_all(&m).unwrap();
        }

        /// Nothing more was sent.
        fn assert_silent(&mut self) {
            self.sock.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            let r = self.sock.read(&mut b);
            assert!(
                matches!(&r, Ok(0)) // the display was dropped: closed, nothing sent
                    || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "unexpected bytes from the backend: {r:?}"
            );
            self.sock.set_nonblocking(false).unwrap();
        }
    }

    /// A display connected to a peer that offers `offered` protocol features; checks the
    /// handshake bytes.
    fn connect(num_scanouts: u32, offered: u64) -> (GpuSocketDisplay, Peer) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut peer = Peer { sock: theirs };
        let t = thread::spawn(move || {
            let mut d = GpuSocketDisplay::new(num_scanouts);
            d.set_socket(GpuBackend::from_stream(ours));
            d
        });
        let m = peer.read();
        assert_eq!((m.request, m.flags, m.payload.len()), (1, 0, 0));
        peer.reply(1, &offered.to_ne_bytes());
        let m = peer.read();
        assert_eq!(m.request, 2);
        assert_eq!(
            m.payload,
            (offered & GPU_PROTOCOL_FEATURES_SUPPORTED).to_ne_bytes()
        );
        let d = t.join().unwrap();
        assert!(d.is_connected());
        (d, peer)
    }

    #[test]
    fn handshake_takes_the_common_features() {
        let (d, _p) = connect(1, GPU_PROTOCOL_F_EDID | GPU_PROTOCOL_F_DMABUF2);
        assert_eq!(d.protocol_features(), 0b11);
        let (d, _p) = connect(1, GPU_PROTOCOL_F_EDID | (1 << 7));
        assert_eq!(d.protocol_features(), GPU_PROTOCOL_F_EDID);
        let (d, _p) = connect(1, 0);
        assert_eq!(d.protocol_features(), 0);
    }

    #[test]
    fn handshake_with_a_dead_peer_stays_headless() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let mut d = GpuSocketDisplay::new(1);
        d.set_socket(GpuBackend::from_stream(ours));
        assert!(!d.is_connected());
        assert_eq!(d.display_info(), None);
        d.scanout(0, 10, 10);
        d.update(0, 0, 0, 1, 1, &[0; 4]);
    }

    #[test]
    fn scanout_and_update_bytes() {
        let (mut d, mut p) = connect(2, 0);
        d.scanout(1, 64, 32);
        let m = p.read();
        assert_eq!((m.request, m.flags), (7, 0));
        assert_eq!(m.payload.len(), 12);
        assert_eq!((m.u32_at(0), m.u32_at(1), m.u32_at(2)), (1, 64, 32));

        let pixels: Vec<u8> = (0..3 * 2 * 4).map(|i| i as u8).collect();
        d.update(1, 5, 7, 3, 2, &pixels);
        let m = p.read();
        assert_eq!(m.request, 8);
        assert_eq!(m.payload.len(), 20 + pixels.len());
        assert_eq!(
            (
                m.u32_at(0),
                m.u32_at(1),
                m.u32_at(2),
                m.u32_at(3),
                m.u32_at(4)
            ),
            (1, 5, 7, 3, 2)
        );
        assert_eq!(&m.payload[20..], &pixels[..]);

        // Disabling.
        d.scanout(1, 0, 0);
        let m = p.read();
        assert_eq!(
            (m.request, m.u32_at(0), m.u32_at(1), m.u32_at(2)),
            (7, 1, 0, 0)
        );
        p.assert_silent();
    }

    #[test]
    fn bad_updates_are_dropped() {
        let (mut d, mut p) = connect(1, 0);
        // No surface yet: QEMU would composite into nothing.
        d.update(0, 0, 0, 1, 1, &[0; 4]);
        // Out of range scanout.
        d.scanout(1, 10, 10);
        d.scanout(16, 10, 10);
        p.assert_silent();
        d.scanout(0, 10, 10);
        p.read();
        // Outside the surface, overflowing, wrong length, empty.
        d.update(0, 8, 0, 3, 1, &[0; 12]);
        d.update(0, u32::MAX, 0, 2, 1, &[0; 8]);
        d.update(0, 0, 0, 2, 2, &[0; 15]);
        d.update(0, 0, 0, 0, 2, &[]);
        p.assert_silent();
    }

    #[test]
    fn big_updates_are_split_by_rows() {
        let (mut d, mut p) = connect(1, 0);
        let (w, h) = (1024u32, 2048u32); // 8 MiB: two messages of 4 MiB
        d.scanout(0, w, h);
        p.read();
        let pixels: Vec<u8> = (0..(w * h * 4) as usize)
            .map(|i| (i / 4096) as u8)
            .collect();
        let t = thread::spawn(move || {
            d.update(0, 0, 0, w, h, &pixels);
            (d, pixels)
        });
        let mut got = Vec::new();
        let mut next_y = 0;
        while next_y < h {
            let m = p.read();
            assert_eq!(m.request, 8);
            assert!(m.payload.len() - 20 <= MAX_UPDATE_PAYLOAD_BYTES);
            assert_eq!((m.u32_at(1), m.u32_at(2), m.u32_at(3)), (0, next_y, w));
            let rows = m.u32_at(4);
            assert_eq!(m.payload.len() - 20, (rows * w * 4) as usize);
            got.extend_from_slice(&m.payload[20..]);
            next_y += rows;
        }
        assert_eq!(next_y, h);
        let (_d, pixels) = t.join().unwrap();
        assert_eq!(got, pixels);
        p.assert_silent();
    }

    #[test]
    fn rows_wider_than_a_message_are_split_by_columns() {
        let (mut d, mut p) = connect(1, 0);
        let w = (MAX_UPDATE_PAYLOAD_BYTES / 4) as u32 + 10;
        d.scanout(0, w, 2);
        p.read();
        let pixels: Vec<u8> = (0..(w * 2 * 4) as usize).map(|i| (i % 251) as u8).collect();
        let t = thread::spawn(move || {
            d.update(0, 0, 0, w, 2, &pixels);
            pixels
        });
        let mut got = Vec::new();
        for (x, y, width) in [
            (0, 0, w - 10),
            (w - 10, 0, 10),
            (0, 1, w - 10),
            (w - 10, 1, 10),
        ] {
            let m = p.read();
            assert_eq!(m.request, 8);
            assert_eq!(
                (m.u32_at(1), m.u32_at(2), m.u32_at(3), m.u32_at(4)),
                (x, y, width, 1)
            );
            got.extend_from_slice(&m.payload[20..]);
        }
        assert_eq!(got, t.join().unwrap());
    }

    #[test]
    fn display_info_and_edid() {
        let (mut d, mut p) = connect(2, GPU_PROTOCOL_F_EDID);
        let t = thread::spawn(move || {
            let info = d.display_info();
            let edid = d.edid(1);
            // Never asked for a scanout the device does not have (QEMU would not answer).
            let none = d.edid(2);
            (info, edid, none)
        });
        let m = p.read();
        assert_eq!((m.request, m.payload.len()), (3, 0));
        let mut info = vec![0u8; 408];
        info[0..4].copy_from_slice(&RESP_OK_DISPLAY_INFO.to_ne_bytes());
        for (i, v) in [0u32, 0, 1280, 800, 1, 0].iter().enumerate() {
            info[24 + i * 4..28 + i * 4].copy_from_slice(&v.to_ne_bytes());
        }
        for (i, v) in [1280u32, 0, 640, 480, 0, 0].iter().enumerate() {
            info[48 + i * 4..52 + i * 4].copy_from_slice(&v.to_ne_bytes());
        }
        p.reply(3, &info);
        let m = p.read();
        assert_eq!((m.request, m.payload.len(), m.u32_at(0)), (11, 4, 1));
        let mut edid = vec![0u8; 1056];
        edid[0..4].copy_from_slice(&RESP_OK_EDID.to_ne_bytes());
        edid[24..28].copy_from_slice(&128u32.to_ne_bytes());
        edid[32..160].fill(0xab);
        p.reply(11, &edid);
        let (info, edid, none) = t.join().unwrap();
        assert_eq!(
            info.unwrap(),
            vec![
                DisplayMode {
                    x: 0,
                    y: 0,
                    width: 1280,
                    height: 800,
                    enabled: true
                },
                DisplayMode {
                    x: 1280,
                    y: 0,
                    width: 640,
                    height: 480,
                    enabled: false
                },
            ]
        );
        assert_eq!(edid.unwrap(), vec![0xab; 128]);
        assert_eq!(none, None);
        p.assert_silent();
    }

    #[test]
    fn edid_needs_the_protocol_feature() {
        let (mut d, mut p) = connect(1, GPU_PROTOCOL_F_DMABUF2);
        assert_eq!(d.edid(0), None);
        p.assert_silent();
    }

    #[test]
    fn bad_edid_reply_is_refused() {
        let (mut d, mut p) = connect(1, GPU_PROTOCOL_F_EDID);
        let t = thread::spawn(move || d.edid(0));
        p.read();
        let mut edid = vec![0u8; 1056];
        edid[0..4].copy_from_slice(&RESP_OK_EDID.to_ne_bytes());
        edid[24..28].copy_from_slice(&2000u32.to_ne_bytes());
        p.reply(11, &edid);
        assert_eq!(t.join().unwrap(), None);
    }

    #[test]
    fn cursor_messages() {
        let (mut d, mut p) = connect(1, 0);
        let mut image = [0u32; 64 * 64];
        image[0] = 0xff00_00ff;
        image[4095] = 0x1234_5678;
        d.cursor_update(0, 10, 20, 3, 4, &image);
        let m = p.read();
        assert_eq!(m.request, 6);
        assert_eq!(m.payload.len(), 20 + 16384);
        assert_eq!(
            (
                m.u32_at(0),
                m.u32_at(1),
                m.u32_at(2),
                m.u32_at(3),
                m.u32_at(4)
            ),
            (0, 10, 20, 3, 4)
        );
        assert_eq!(m.u32_at(5), 0xff00_00ff);
        assert_eq!(m.u32_at(5 + 4095), 0x1234_5678);
        d.cursor_move(0, 30, 40);
        let m = p.read();
        assert_eq!(
            (m.request, m.u32_at(0), m.u32_at(1), m.u32_at(2)),
            (4, 0, 30, 40)
        );
        d.cursor_hide(0, 30, 40);
        let m = p.read();
        assert_eq!((m.request, m.payload.len()), (5, 12));
        d.cursor_move(5, 1, 1);
        p.assert_silent();
    }

    #[test]
    fn dmabuf_scanouts() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        for (offered, modifier, expect) in [
            (
                GPU_PROTOCOL_F_DMABUF2,
                Some(0x0100_0000_0000_0001u64),
                12u32,
            ),
            (GPU_PROTOCOL_F_DMABUF2, None, 9),
            (0, Some(7), 9),
        ] {
            let (mut d, mut p) = connect(1, offered);
            assert!(d.supports_dmabuf());
            let s = DmabufScanout {
                fd: file.as_fd(),
                x: 1,
                y: 2,
                width: 3,
                height: 4,
                fd_width: 5,
                fd_height: 6,
                fd_stride: 20,
                fd_flags: 0,
                fourcc: 0x3432_5258,
                modifier,
            };
            d.dmabuf_scanout(0, &s);
            let m = p.read();
            assert_eq!(m.request, expect);
            assert_eq!(m.fds.len(), 1);
            assert_eq!(m.payload.len(), if expect == 12 { 48 } else { 40 });
            assert_eq!(m.u32_at(9), 0x3432_5258);
            if expect == 12 {
                assert_eq!(
                    u64::from_ne_bytes(m.payload[40..48].try_into().unwrap()),
                    0x0100_0000_0000_0001
                );
            }
            // DMABUF_UPDATE waits for the frontend's reply.
            let t = thread::spawn(move || {
                d.dmabuf_update(0, 0, 0, 3, 4);
                d
            });
            let m = p.read();
            assert_eq!((m.request, m.payload.len()), (10, 20));
            p.reply(10, &[]);
            let mut d = t.join().unwrap();
            assert!(d.is_connected());
            // Going back to a pixel surface releases the dmabuf first.
            d.scanout(0, 8, 8);
            let m = p.read();
            assert_eq!((m.request, m.fds.len()), (9, 0));
            let m = p.read();
            assert_eq!(m.request, 7);
            p.assert_silent();
            drop(m.fds);
        }
        let _ = file.as_raw_fd();
    }

    #[test]
    fn peer_gone_makes_the_display_headless() {
        let (mut d, p) = connect(1, GPU_PROTOCOL_F_EDID);
        d.scanout(0, 4, 4);
        drop(p);
        // Writes fail (EPIPE), then the socket is dropped; nothing panics.
        d.update(0, 0, 0, 4, 4, &[0; 64]);
        d.scanout(0, 4, 4);
        assert!(!d.is_connected());
        assert_eq!(d.display_info(), None);
        assert_eq!(d.edid(0), None);
        d.cursor_move(0, 1, 1);
        assert!(!d.supports_dmabuf());
    }

    #[test]
    fn peer_gone_while_waiting_for_a_reply() {
        let (mut d, mut p) = connect(1, GPU_PROTOCOL_F_EDID);
        let t = thread::spawn(move || {
            let info = d.display_info();
            (info, d)
        });
        p.read();
        drop(p);
        let (info, d) = t.join().unwrap();
        assert_eq!(info, None);
        assert!(!d.is_connected());
    }

    #[test]
    fn a_new_socket_replaces_the_old_one() {
        let (mut d, mut old) = connect(1, 0);
        d.scanout(0, 4, 4);
        old.read();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut new = Peer { sock: theirs };
        let t = thread::spawn(move || {
            d.set_socket(GpuBackend::from_stream(ours));
            // The surface announced on the old socket is still known to the frontend.
            d.update(0, 0, 0, 1, 1, &[1, 2, 3, 4]);
            d
        });
        new.read();
        new.reply(1, &0u64.to_ne_bytes());
        new.read();
        let m = new.read();
        assert_eq!((m.request, &m.payload[20..]), (8, &[1u8, 2, 3, 4][..]));
        let _d = t.join().unwrap();
        // The old socket was closed.
        let mut b = [0u8; 1];
        assert_eq!(old.sock.read(&mut b).unwrap(), 0);
    }

    #[test]
    fn headless_display_answers_nothing() {
        let mut h = HeadlessDisplay;
        assert_eq!(h.display_info(), None);
        assert_eq!(h.edid(0), None);
        assert!(!h.supports_dmabuf());
        h.update(0, 0, 0, 1, 1, &[0; 4]);
    }
}
