//! The display peer: the frontend's end of the socket handed to the backend with
//! VHOST_USER_GPU_SET_SOCKET, served on a thread the way QEMU's `hw/display/vhost-user-gpu.c` does.
//!
//! Wire format (QEMU's "Vhost-user-gpu Protocol"): a 12-byte header `u32 request, u32 flags,
//! u32 size` then `size` bytes; replies carry flag 0x4. File descriptors ride on the header's
//! bytes as SCM_RIGHTS. Every message is recorded as a [`DisplayEvent`] in a log that tests wait
//! on; UPDATE messages also paint a per-scanout framebuffer.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::error::{Error, Result};
use crate::protocol::{put32, resp, MAX_SCANOUTS, RESP_DISPLAY_INFO_SIZE};

/// GPU-socket message ids.
pub mod msg {
    #![allow(missing_docs)]
    pub const GET_PROTOCOL_FEATURES: u32 = 1;
    pub const SET_PROTOCOL_FEATURES: u32 = 2;
    pub const GET_DISPLAY_INFO: u32 = 3;
    pub const CURSOR_POS: u32 = 4;
    pub const CURSOR_POS_HIDE: u32 = 5;
    pub const CURSOR_UPDATE: u32 = 6;
    pub const SCANOUT: u32 = 7;
    pub const UPDATE: u32 = 8;
    pub const DMABUF_SCANOUT: u32 = 9;
    pub const DMABUF_UPDATE: u32 = 10;
    pub const GET_EDID: u32 = 11;
    pub const DMABUF_SCANOUT2: u32 = 12;
}

/// Header flag of a reply.
pub const FLAG_REPLY: u32 = 0x4;
/// GPU protocol feature EDID.
pub const PROTOCOL_F_EDID: u64 = 1 << 0;
/// GPU protocol feature DMABUF2.
pub const PROTOCOL_F_DMABUF2: u64 = 1 << 1;
/// Largest message payload the peer accepts (an UPDATE of 4096x4096 pixels plus header).
pub const MAX_PAYLOAD: usize = 20 + 4096 * 4096 * 4;
/// Largest scanout the peer keeps a framebuffer for.
pub const MAX_FB_DIM: u32 = 8192;
/// Cursor images are 64x64.
pub const CURSOR_DIM: usize = 64;

/// What the peer offers and answers.
#[derive(Clone, Debug)]
pub struct DisplayConfig {
    /// GET_PROTOCOL_FEATURES answer.
    pub protocol_features: u64,
    /// Enabled scanouts' sizes, in order (GET_DISPLAY_INFO); the rest are disabled.
    pub modes: Vec<(u32, u32)>,
    /// Answer GET_EDID (for a scanout that exists). QEMU never answers an invalid scanout.
    pub answer_edid: bool,
}

impl Default for DisplayConfig {
    fn default() -> Self {
        DisplayConfig {
            protocol_features: PROTOCOL_F_EDID | PROTOCOL_F_DMABUF2,
            modes: vec![(1024, 768)],
            answer_edid: true,
        }
    }
}

/// A dmabuf scanout's layout.
#[derive(Clone, Debug)]
pub struct DmabufScanout {
    /// Scanout.
    pub scanout_id: u32,
    /// Visible rectangle.
    pub x: u32,
    #[allow(missing_docs)]
    pub y: u32,
    #[allow(missing_docs)]
    pub width: u32,
    #[allow(missing_docs)]
    pub height: u32,
    /// Buffer size.
    pub fd_width: u32,
    #[allow(missing_docs)]
    pub fd_height: u32,
    /// Row stride.
    pub fd_stride: u32,
    /// Flags (Y_0_TOP).
    pub fd_flags: u32,
    /// DRM fourcc.
    pub fourcc: i32,
    /// Modifier (DMABUF_SCANOUT2 only).
    pub modifier: Option<u64>,
    /// The dmabuf (None: scanout disabled).
    pub fd: Option<Arc<OwnedFd>>,
}

/// One message from the backend.
#[derive(Clone, Debug)]
pub enum DisplayEvent {
    /// GET_PROTOCOL_FEATURES (answered).
    GetProtocolFeatures,
    /// SET_PROTOCOL_FEATURES.
    SetProtocolFeatures(u64),
    /// GET_DISPLAY_INFO (answered).
    GetDisplayInfo,
    /// GET_EDID for a scanout (answered if valid and configured).
    GetEdid(u32),
    /// CURSOR_POS.
    CursorPos {
        /// Scanout.
        scanout_id: u32,
        #[allow(missing_docs)]
        x: u32,
        #[allow(missing_docs)]
        y: u32,
    },
    /// CURSOR_POS_HIDE.
    CursorHide {
        /// Scanout.
        scanout_id: u32,
    },
    /// CURSOR_UPDATE with its 64x64 ARGB image.
    CursorUpdate {
        /// Scanout.
        scanout_id: u32,
        #[allow(missing_docs)]
        x: u32,
        #[allow(missing_docs)]
        y: u32,
        /// Hot spot.
        hot_x: u32,
        #[allow(missing_docs)]
        hot_y: u32,
        /// 64*64 pixels, a8r8g8b8.
        image: Arc<Vec<u32>>,
    },
    /// SCANOUT (width 0 disables).
    Scanout {
        /// Scanout.
        scanout_id: u32,
        #[allow(missing_docs)]
        width: u32,
        #[allow(missing_docs)]
        height: u32,
    },
    /// UPDATE with pixels (x8r8g8b8, tightly packed rows).
    Update {
        /// Scanout.
        scanout_id: u32,
        #[allow(missing_docs)]
        x: u32,
        #[allow(missing_docs)]
        y: u32,
        #[allow(missing_docs)]
        width: u32,
        #[allow(missing_docs)]
        height: u32,
        /// Pixels.
        data: Arc<Vec<u8>>,
    },
    /// DMABUF_SCANOUT / DMABUF_SCANOUT2.
    DmabufScanout(DmabufScanout),
    /// DMABUF_UPDATE (answered).
    DmabufUpdate {
        /// Scanout.
        scanout_id: u32,
        #[allow(missing_docs)]
        x: u32,
        #[allow(missing_docs)]
        y: u32,
        #[allow(missing_docs)]
        width: u32,
        #[allow(missing_docs)]
        height: u32,
    },
    /// A message the peer does not know, or a malformed one (also listed in `errors`).
    Unknown {
        /// Request id.
        request: u32,
        /// Payload size.
        size: u32,
    },
}

/// A scanout's picture as the peer sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Framebuffer {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// x8r8g8b8 pixels as u32 (`0x00RRGGBB` in the low bytes), row major.
    pub pixels: Vec<u32>,
}

impl Framebuffer {
    /// The pixel at (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> Option<u32> {
        if x >= self.width || y >= self.height {
            return None;
        }
        self.pixels.get((y * self.width + x) as usize).copied()
    }
}

/// Everything the peer recorded.
#[derive(Debug, Default)]
pub struct DisplayState {
    /// All messages in arrival order.
    pub events: Vec<DisplayEvent>,
    /// Features the backend set (SET_PROTOCOL_FEATURES).
    pub acked_features: Option<u64>,
    /// Framebuffers by scanout (created by SCANOUT, painted by UPDATE).
    pub framebuffers: BTreeMap<u32, Framebuffer>,
    /// Protocol violations seen (the test decides whether they matter).
    pub errors: Vec<String>,
    /// The backend closed the socket.
    pub closed: bool,
}

struct Shared {
    state: Mutex<DisplayState>,
    cond: Condvar,
}

/// The served display socket; dropping it closes the socket and joins the thread.
pub struct DisplayPeer {
    view: DisplayView,
    sock: UnixStream,
    thread: Option<JoinHandle<()>>,
}

/// A handle on a display peer's recorded state (cheap to clone; stays readable after the peer
/// is closed).
#[derive(Clone)]
pub struct DisplayView {
    shared: Arc<Shared>,
}

impl DisplayPeer {
    /// Create a socket pair, serve one end on a thread, and return the peer and the end to send
    /// to the backend.
    pub fn start(config: DisplayConfig) -> Result<(Self, UnixStream)> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(DisplayState::default()),
            cond: Condvar::new(),
        });
        let reader = ours.try_clone().map_err(|e| Error::io("dup socket", e))?;
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("display-peer".into())
            .spawn(move || serve(reader, config, sh))
            .map_err(|e| Error::io("spawn display thread", e))?;
        Ok((
            DisplayPeer {
                view: DisplayView { shared },
                sock: ours,
                thread: Some(thread),
            },
            theirs,
        ))
    }

    /// A handle on the recorded state.
    pub fn view(&self) -> DisplayView {
        self.view.clone()
    }
}

impl DisplayView {
    /// Lock the recorded state.
    pub fn state(&self) -> MutexGuard<'_, DisplayState> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of events so far (a mark for [`DisplayView::wait_event`]).
    pub fn mark(&self) -> usize {
        self.state().events.len()
    }

    /// A copy of the events from `mark` on.
    pub fn events_since(&self, mark: usize) -> Vec<DisplayEvent> {
        self.state()
            .events
            .get(mark..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// Wait for the first event at index >= `from` that `pred` accepts; returns its index and
    /// a copy.
    pub fn wait_event(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&DisplayEvent) -> bool,
    ) -> Result<(usize, DisplayEvent)> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        loop {
            if let Some((i, e)) = st
                .events
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, e)| pred(e))
            {
                return Ok((i, e.clone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!(
                        "display event: {what} (events since {from}: {:?})",
                        summarize(st.events.get(from..).unwrap_or(&[]))
                    ),
                    timeout_ms: timeout.as_millis(),
                });
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// A copy of a scanout's framebuffer.
    pub fn framebuffer(&self, scanout_id: u32) -> Option<Framebuffer> {
        self.state().framebuffers.get(&scanout_id).cloned()
    }

    /// Has the backend closed its end?
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }
}

impl std::ops::Deref for DisplayPeer {
    type Target = DisplayView;
    fn deref(&self) -> &DisplayView {
        &self.view
    }
}

impl Drop for DisplayPeer {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Short names of events (for timeout messages).
pub fn summarize(events: &[DisplayEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            DisplayEvent::Update {
                scanout_id,
                x,
                y,
                width,
                height,
                ..
            } => format!("Update(s{scanout_id} {x},{y} {width}x{height})"),
            DisplayEvent::CursorUpdate {
                scanout_id, x, y, ..
            } => {
                format!("CursorUpdate(s{scanout_id} {x},{y})")
            }
            DisplayEvent::DmabufScanout(d) => format!(
                "DmabufScanout(s{} {}x{} fd {})",
                d.scanout_id,
                d.width,
                d.height,
                d.fd.is_some()
            ),
            other => format!("{other:?}"),
        })
        .collect()
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    crate::protocol::get32(b, off)
}

fn record(shared: &Shared, f: impl FnOnce(&mut DisplayState)) {
    let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut st);
    drop(st);
    shared.cond.notify_all();
}

fn read_header(sock: &UnixStream) -> Result<Option<([u8; 12], Option<OwnedFd>)>> {
    let mut hdr = [0u8; 12];
    let mut got = 0;
    let mut fd = None;
    while got < 12 {
        let (n, file) = sock.recv_with_fd(&mut hdr[got..]).map_err(|e| {
            Error::io(
                "recv display header",
                std::io::Error::from_raw_os_error(e.errno()),
            )
        })?;
        if let Some(f) = file {
            fd = Some(OwnedFd::from(f));
        }
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(Error::Disconnected(
                "display socket closed mid-header".into(),
            ));
        }
        got += n;
    }
    Ok(Some((hdr, fd)))
}

fn reply(mut sock: &UnixStream, request: u32, payload: &[u8]) -> Result<()> {
    let mut m = Vec::with_capacity(12 + payload.len());
    put32(&mut m, request);
    put32(&mut m, FLAG_REPLY);
    put32(&mut m, payload.len() as u32);
    m.extend_from_slice(payload);
    sock.write_all(&m)
        .map_err(|e| Error::io("display reply", e))
}

fn serve(sock: UnixStream, config: DisplayConfig, shared: Arc<Shared>) {
    if let Err(e) = serve_loop(&sock, &config, &shared) {
        record(&shared, |s| s.errors.push(e.to_string()));
    }
    record(&shared, |s| s.closed = true);
}

fn serve_loop(sock: &UnixStream, config: &DisplayConfig, shared: &Shared) -> Result<()> {
    loop {
        let Some((hdr, fd)) = read_header(sock)? else {
            return Ok(());
        };
        let request = u32_at(&hdr, 0);
        let size = u32_at(&hdr, 8);
        if size as usize > MAX_PAYLOAD {
            return Err(Error::Malformed(format!(
                "display message {request} with size {size} > {MAX_PAYLOAD}"
            )));
        }
        let mut p = vec![0u8; size as usize];
        let mut r = sock;
        r.read_exact(&mut p)
            .map_err(|e| Error::io(format!("read display message {request} payload"), e))?;
        handle(sock, config, shared, request, &p, fd)?;
    }
}

fn handle(
    sock: &UnixStream,
    config: &DisplayConfig,
    shared: &Shared,
    request: u32,
    p: &[u8],
    fd: Option<OwnedFd>,
) -> Result<()> {
    let need = |n: usize| -> Result<()> {
        if p.len() < n {
            Err(Error::Malformed(format!(
                "display message {request}: {} bytes, {n} expected",
                p.len()
            )))
        } else {
            Ok(())
        }
    };
    let bad = |shared: &Shared, e: Error| {
        let text = e.to_string();
        record(shared, |s| {
            s.errors.push(text);
            s.events.push(DisplayEvent::Unknown {
                request,
                size: p.len() as u32,
            });
        });
    };
    match request {
        msg::GET_PROTOCOL_FEATURES => {
            record(shared, |s| s.events.push(DisplayEvent::GetProtocolFeatures));
            reply(sock, request, &config.protocol_features.to_le_bytes())?;
        }
        msg::SET_PROTOCOL_FEATURES => {
            if let Err(e) = need(8) {
                bad(shared, e);
                return Ok(());
            }
            let v = crate::protocol::get64(p, 0);
            record(shared, |s| {
                s.acked_features = Some(v);
                if v & !config.protocol_features != 0 {
                    s.errors.push(format!(
                        "SET_PROTOCOL_FEATURES {v:#x} beyond offered {:#x}",
                        config.protocol_features
                    ));
                }
                s.events.push(DisplayEvent::SetProtocolFeatures(v));
            });
        }
        msg::GET_DISPLAY_INFO => {
            record(shared, |s| s.events.push(DisplayEvent::GetDisplayInfo));
            reply(sock, request, &display_info(&config.modes))?;
        }
        msg::GET_EDID => {
            if let Err(e) = need(4) {
                bad(shared, e);
                return Ok(());
            }
            let id = u32_at(p, 0);
            let negotiated = shared
                .state
                .lock()
                .map(|s| s.acked_features.unwrap_or(0) & PROTOCOL_F_EDID != 0)
                .unwrap_or(false);
            record(shared, |s| {
                if !negotiated {
                    s.errors
                        .push("GET_EDID without PROTOCOL_F_EDID negotiated".into());
                }
                s.events.push(DisplayEvent::GetEdid(id));
            });
            if config.answer_edid {
                if let Some(&(w, h)) = config.modes.get(id as usize) {
                    let edid = crate::edid::generate(w, h);
                    let mut b = Vec::new();
                    put32(&mut b, resp::OK_EDID);
                    b.extend_from_slice(&[0; 20]);
                    put32(&mut b, edid.len() as u32);
                    put32(&mut b, 0);
                    let mut data = [0u8; 1024];
                    data[..edid.len()].copy_from_slice(&edid);
                    b.extend_from_slice(&data);
                    reply(sock, request, &b)?;
                }
            }
        }
        msg::CURSOR_POS | msg::CURSOR_POS_HIDE => {
            if let Err(e) = need(12) {
                bad(shared, e);
                return Ok(());
            }
            let (scanout_id, x, y) = (u32_at(p, 0), u32_at(p, 4), u32_at(p, 8));
            let ev = if request == msg::CURSOR_POS {
                DisplayEvent::CursorPos { scanout_id, x, y }
            } else {
                DisplayEvent::CursorHide { scanout_id }
            };
            record(shared, |s| s.events.push(ev));
        }
        msg::CURSOR_UPDATE => {
            if let Err(e) = need(20 + CURSOR_DIM * CURSOR_DIM * 4) {
                bad(shared, e);
                return Ok(());
            }
            let image: Vec<u32> = (0..CURSOR_DIM * CURSOR_DIM)
                .map(|i| u32_at(p, 20 + 4 * i))
                .collect();
            let ev = DisplayEvent::CursorUpdate {
                scanout_id: u32_at(p, 0),
                x: u32_at(p, 4),
                y: u32_at(p, 8),
                hot_x: u32_at(p, 12),
                hot_y: u32_at(p, 16),
                image: Arc::new(image),
            };
            record(shared, |s| s.events.push(ev));
        }
        msg::SCANOUT => {
            if let Err(e) = need(12) {
                bad(shared, e);
                return Ok(());
            }
            let (scanout_id, width, height) = (u32_at(p, 0), u32_at(p, 4), u32_at(p, 8));
            record(shared, |s| {
                if width == 0 || height == 0 {
                    s.framebuffers.remove(&scanout_id);
                } else if width <= MAX_FB_DIM && height <= MAX_FB_DIM {
                    s.framebuffers.insert(
                        scanout_id,
                        Framebuffer {
                            width,
                            height,
                            pixels: vec![0; (width * height) as usize],
                        },
                    );
                } else {
                    s.errors.push(format!("SCANOUT {width}x{height} too large"));
                }
                s.events.push(DisplayEvent::Scanout {
                    scanout_id,
                    width,
                    height,
                });
            });
        }
        msg::UPDATE => {
            if let Err(e) = need(20) {
                bad(shared, e);
                return Ok(());
            }
            let (scanout_id, x, y, width, height) = (
                u32_at(p, 0),
                u32_at(p, 4),
                u32_at(p, 8),
                u32_at(p, 12),
                u32_at(p, 16),
            );
            let data = &p[20..];
            let expect = u64::from(width) * u64::from(height) * 4;
            record(shared, |s| {
                if data.len() as u64 != expect {
                    s.errors.push(format!(
                        "UPDATE {width}x{height} carries {} bytes, {expect} expected",
                        data.len()
                    ));
                }
                match s.framebuffers.get_mut(&scanout_id) {
                    Some(fb) => paint(fb, x, y, width, height, data, &mut s.errors),
                    None => s
                        .errors
                        .push(format!("UPDATE for scanout {scanout_id} without SCANOUT")),
                }
                s.events.push(DisplayEvent::Update {
                    scanout_id,
                    x,
                    y,
                    width,
                    height,
                    data: Arc::new(data.to_vec()),
                });
            });
        }
        msg::DMABUF_SCANOUT | msg::DMABUF_SCANOUT2 => {
            if p.is_empty() {
                // Disable: QEMU accepts an empty DMABUF_SCANOUT... only with the id; keep both.
                record(shared, |s| {
                    s.errors.push(format!(
                        "DMABUF_SCANOUT{} without payload",
                        if request == msg::DMABUF_SCANOUT2 {
                            "2"
                        } else {
                            ""
                        }
                    ));
                    s.events.push(DisplayEvent::Unknown { request, size: 0 });
                });
                return Ok(());
            }
            let want = if request == msg::DMABUF_SCANOUT2 {
                48
            } else {
                40
            };
            if let Err(e) = need(want) {
                bad(shared, e);
                return Ok(());
            }
            let d = DmabufScanout {
                scanout_id: u32_at(p, 0),
                x: u32_at(p, 4),
                y: u32_at(p, 8),
                width: u32_at(p, 12),
                height: u32_at(p, 16),
                fd_width: u32_at(p, 20),
                fd_height: u32_at(p, 24),
                fd_stride: u32_at(p, 28),
                fd_flags: u32_at(p, 32),
                fourcc: u32_at(p, 36) as i32,
                modifier: (request == msg::DMABUF_SCANOUT2).then(|| crate::protocol::get64(p, 40)),
                fd: fd.map(Arc::new),
            };
            record(shared, |s| s.events.push(DisplayEvent::DmabufScanout(d)));
        }
        msg::DMABUF_UPDATE => {
            if let Err(e) = need(20) {
                bad(shared, e);
                return Ok(());
            }
            let ev = DisplayEvent::DmabufUpdate {
                scanout_id: u32_at(p, 0),
                x: u32_at(p, 4),
                y: u32_at(p, 8),
                width: u32_at(p, 12),
                height: u32_at(p, 16),
            };
            record(shared, |s| s.events.push(ev));
            reply(sock, request, &[])?;
        }
        _ => bad(
            shared,
            Error::Malformed(format!("unknown display message {request}")),
        ),
    }
    Ok(())
}

fn paint(
    fb: &mut Framebuffer,
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    data: &[u8],
    errors: &mut Vec<String>,
) {
    let fits = x.checked_add(w).is_some_and(|r| r <= fb.width)
        && y.checked_add(h).is_some_and(|b| b <= fb.height);
    if !fits {
        errors.push(format!(
            "UPDATE {x},{y} {w}x{h} outside the {}x{} scanout",
            fb.width, fb.height
        ));
    }
    for row in 0..h {
        for col in 0..w {
            let (px, py) = (x.saturating_add(col), y.saturating_add(row));
            if px >= fb.width || py >= fb.height {
                continue;
            }
            let off = ((row * w + col) * 4) as usize;
            if let Some(b) = data.get(off..off + 4) {
                fb.pixels[(py * fb.width + px) as usize] =
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
}

/// `struct virtio_gpu_resp_display_info` for `modes` (enabled, in order).
pub fn display_info(modes: &[(u32, u32)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(RESP_DISPLAY_INFO_SIZE);
    put32(&mut b, resp::OK_DISPLAY_INFO);
    b.extend_from_slice(&[0; 20]);
    for i in 0..MAX_SCANOUTS {
        match modes.get(i) {
            Some(&(w, h)) => {
                for v in [0, 0, w, h, 1, 0] {
                    put32(&mut b, v);
                }
            }
            None => b.extend_from_slice(&[0; 24]),
        }
    }
    b
}
