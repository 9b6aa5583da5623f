//! A display peer for measuring: like [`crate::display`] it answers the backend's GPU-socket
//! requests, but instead of recording every message it keeps one framebuffer per run and
//! counters the benchmark waits on ("N pixels of UPDATE arrived"). UPDATE pixels of a
//! full-width rectangle are read from the socket straight into the framebuffer; others go
//! through one scratch buffer. Nothing grows with the number of frames.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::display::{
    msg, FLAG_REPLY, MAX_FB_DIM, MAX_PAYLOAD, PROTOCOL_F_DMABUF2, PROTOCOL_F_EDID,
};
use crate::error::{Error, Result};
use crate::protocol::{get32, get64, put32, resp};

/// Most error strings kept (later ones are counted only).
pub const MAX_ERRORS: usize = 16;

/// Counters and flags the benchmark reads.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Pixels received in UPDATE messages (width x height of each).
    pub update_pixels: u64,
    /// UPDATE messages.
    pub updates: u64,
    /// Pixels announced by DMABUF_UPDATE (the pixels are in the shared dmabuf).
    pub dmabuf_pixels: u64,
    /// DMABUF_UPDATE messages.
    pub dmabuf_updates: u64,
    /// SCANOUT / DMABUF_SCANOUT messages.
    pub scanouts: u64,
    /// Protocol features the backend set.
    pub acked_features: Option<u64>,
    /// Protocol violations (first [`MAX_ERRORS`]).
    pub errors: Vec<String>,
    /// The backend closed the socket.
    pub closed: bool,
}

impl PeerCounters {
    /// Pixels delivered either way.
    pub fn pixels(&self) -> u64 {
        self.update_pixels + self.dmabuf_pixels
    }

    fn error(&mut self, e: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        }
    }
}

/// The framebuffer of scanout 0: x8r8g8b8 bytes, `width * 4` per row.
#[derive(Debug, Default)]
pub struct PeerFramebuffer {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Pixels.
    pub bytes: Vec<u8>,
}

struct Shared {
    counters: Mutex<PeerCounters>,
    cond: Condvar,
    fb: Mutex<PeerFramebuffer>,
}

/// The served socket; dropping it closes the socket and joins the thread.
pub struct BenchPeer {
    shared: Arc<Shared>,
    sock: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl BenchPeer {
    /// Serve one end of a new socket pair, answering GET_DISPLAY_INFO and GET_EDID with one
    /// enabled scanout of `mode`; returns the peer and the end to hand to the backend.
    pub fn start(mode: (u32, u32)) -> Result<(Self, UnixStream)> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
        let shared = Arc::new(Shared {
            counters: Mutex::new(PeerCounters::default()),
            cond: Condvar::new(),
            fb: Mutex::new(PeerFramebuffer::default()),
        });
        let reader = ours.try_clone().map_err(|e| Error::io("dup socket", e))?;
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bench-peer".into())
            .spawn(move || {
                let mut scratch = Vec::new();
                if let Err(e) = serve(&reader, mode, &sh, &mut scratch) {
                    sh.lock().error(e.to_string());
                }
                sh.lock().closed = true;
                sh.cond.notify_all();
            })
            .map_err(|e| Error::io("spawn peer thread", e))?;
        Ok((
            BenchPeer {
                shared,
                sock: ours,
                thread: Some(thread),
            },
            theirs,
        ))
    }

    /// Lock the counters.
    pub fn counters(&self) -> MutexGuard<'_, PeerCounters> {
        self.shared.lock()
    }

    /// Lock the framebuffer.
    pub fn framebuffer(&self) -> MutexGuard<'_, PeerFramebuffer> {
        self.shared.fb.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until `pred` holds on the counters, at most `timeout`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&PeerCounters) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut c = self.shared.lock();
        loop {
            if pred(&c) {
                return Ok(());
            }
            if c.closed {
                return Err(Error::Disconnected(format!(
                    "display socket closed while waiting for {what} (errors: {:?})",
                    c.errors
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!(
                        "display: {what} (have {} pixels, {} updates)",
                        c.pixels(),
                        c.updates
                    ),
                    timeout_ms: timeout.as_millis(),
                });
            }
            c = self
                .shared
                .cond
                .wait_timeout(c, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PeerCounters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self, f: impl FnOnce(&mut PeerCounters)) {
        f(&mut self.lock());
        self.cond.notify_all();
    }
}

impl Drop for BenchPeer {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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

/// Read the 12-byte header; file descriptors that ride on it are closed at once (the benchmark
/// never maps a dmabuf). None at a clean end of stream.
fn read_header(sock: &UnixStream) -> Result<Option<[u8; 12]>> {
    let mut hdr = [0u8; 12];
    let mut got = 0;
    while got < 12 {
        let (n, file) = sock.recv_with_fd(&mut hdr[got..]).map_err(|e| {
            Error::io(
                "recv display header",
                std::io::Error::from_raw_os_error(e.errno()),
            )
        })?;
        drop(file);
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
    Ok(Some(hdr))
}

fn serve(
    sock: &UnixStream,
    mode: (u32, u32),
    shared: &Shared,
    scratch: &mut Vec<u8>,
) -> Result<()> {
    let mut r = sock;
    loop {
        let Some(hdr) = read_header(sock)? else {
            return Ok(());
        };
        let request = get32(&hdr, 0);
        let size = get32(&hdr, 8) as usize;
        if size > MAX_PAYLOAD {
            return Err(Error::Malformed(format!(
                "display message {request} of {size} bytes"
            )));
        }
        if request == msg::UPDATE && size >= 20 {
            update(sock, size, shared, scratch)?;
            continue;
        }
        scratch.resize(size, 0);
        r.read_exact(&mut scratch[..size])
            .map_err(|e| Error::io(format!("read display message {request}"), e))?;
        let p = &scratch[..size];
        match request {
            msg::GET_PROTOCOL_FEATURES => reply(
                sock,
                request,
                &(PROTOCOL_F_EDID | PROTOCOL_F_DMABUF2).to_le_bytes(),
            )?,
            msg::SET_PROTOCOL_FEATURES => {
                let v = get64(p, 0);
                shared.bump(|c| c.acked_features = Some(v));
            }
            msg::GET_DISPLAY_INFO => reply(sock, request, &crate::display::display_info(&[mode]))?,
            msg::GET_EDID => {
                // Like QEMU: only scanout 0 exists; no answer for others.
                if size >= 4 && get32(p, 0) == 0 {
                    let edid = crate::edid::generate(mode.0, mode.1);
                    let mut b = Vec::with_capacity(1056);
                    put32(&mut b, resp::OK_EDID);
                    b.extend_from_slice(&[0; 20]);
                    put32(&mut b, edid.len() as u32);
                    put32(&mut b, 0);
                    b.extend_from_slice(&edid);
                    b.resize(1056, 0);
                    reply(sock, request, &b)?;
                }
            }
            msg::SCANOUT => {
                let (id, w, h) = (get32(p, 0), get32(p, 4), get32(p, 8));
                if id == 0 && w > 0 && h > 0 && w <= MAX_FB_DIM && h <= MAX_FB_DIM {
                    let mut fb = shared.fb.lock().unwrap_or_else(|p| p.into_inner());
                    if (fb.width, fb.height) != (w, h) {
                        fb.width = w;
                        fb.height = h;
                        fb.bytes = vec![0; w as usize * h as usize * 4];
                    }
                }
                shared.bump(|c| c.scanouts += 1);
            }
            msg::DMABUF_SCANOUT | msg::DMABUF_SCANOUT2 => shared.bump(|c| c.scanouts += 1),
            msg::DMABUF_UPDATE => {
                let px = u64::from(get32(p, 12)) * u64::from(get32(p, 16));
                reply(sock, request, &[])?;
                shared.bump(|c| {
                    c.dmabuf_updates += 1;
                    c.dmabuf_pixels += px;
                });
            }
            msg::CURSOR_POS | msg::CURSOR_POS_HIDE | msg::CURSOR_UPDATE => {}
            other => shared.bump(|c| c.error(format!("unknown display message {other}"))),
        }
    }
}

/// Receive an UPDATE's pixels into the framebuffer.
fn update(sock: &UnixStream, size: usize, shared: &Shared, scratch: &mut Vec<u8>) -> Result<()> {
    let mut r = sock;
    let mut h = [0u8; 20];
    r.read_exact(&mut h)
        .map_err(|e| Error::io("read UPDATE header", e))?;
    let (id, x, y, w, hgt) = (
        get32(&h, 0),
        get32(&h, 4),
        get32(&h, 8),
        get32(&h, 12),
        get32(&h, 16),
    );
    let data_len = size - 20;
    let px = u64::from(w) * u64::from(hgt);
    let mut fb = shared.fb.lock().unwrap_or_else(|p| p.into_inner());
    let fits = id == 0
        && px * 4 == data_len as u64
        && x.checked_add(w).is_some_and(|r| r <= fb.width)
        && y.checked_add(hgt).is_some_and(|b| b <= fb.height);
    let row = fb.width as usize * 4;
    if fits && x == 0 && w == fb.width {
        // Whole rows: straight into the framebuffer.
        let start = y as usize * row;
        r.read_exact(&mut fb.bytes[start..start + data_len])
            .map_err(|e| Error::io("read UPDATE pixels", e))?;
    } else {
        scratch.resize(data_len, 0);
        r.read_exact(&mut scratch[..data_len])
            .map_err(|e| Error::io("read UPDATE pixels", e))?;
        if fits {
            let wb = w as usize * 4;
            for j in 0..hgt as usize {
                let dst = (y as usize + j) * row + x as usize * 4;
                fb.bytes[dst..dst + wb].copy_from_slice(&scratch[j * wb..(j + 1) * wb]);
            }
        }
    }
    drop(fb);
    shared.bump(|c| {
        if !fits {
            c.error(format!(
                "UPDATE s{id} {x},{y} {w}x{hgt} with {data_len} bytes does not fit"
            ));
        }
        c.updates += 1;
        c.update_pixels += px;
    });
    Ok(())
}
