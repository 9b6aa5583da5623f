//! The workloads: what each sends, what it measures, and its physical floor.
//!
//! Every sample runs on a freshly started backend process: connect (features, memfd guest
//! memory, both virtqueues, a [`BenchPeer`] as the display socket), set the workload up, run
//! [`INNER_WARMUP`] untimed iterations, then the timed loop (bounded by the duration and by
//! [`MAX_ITERATIONS`]), then read the daemon's CPU time and peak RSS and check the result
//! (the display peer's framebuffer must equal the guest's pixels; a 3D read-back must show the
//! clear colour in the corners and the drawn triangle in the centre). Guest backings are one
//! contiguous memory entry each.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::bench::draw;
use crate::bench::floors::{percentile, Floors};
use crate::bench::peer::BenchPeer;
use crate::bench::sys::process_cpu_seconds;
use crate::error::{Error, Result};
use crate::frontend::{
    FrontendOptions, GpuFrontend, CONNECT_TIMEOUT, GPU_SET_SOCKET, VHOST_USER_NEED_REPLY,
    VHOST_USER_REPLY, VHOST_USER_VERSION,
};
use crate::process::{BackendCommand, BackendProcess};
use crate::protocol::{
    features, format, get32, get64, resp, Box3d, Command, MemEntry, Rect, Resource3d, Transfer3d,
    FLAG_FENCE,
};
use crate::virgl::{self, Stream};

/// Untimed iterations inside every sample, after setup and before the timed loop.
pub const INNER_WARMUP: u32 = 2;
/// Most timed iterations of one sample, whatever the duration.
pub const MAX_ITERATIONS: u64 = 1_000_000;
/// Most latencies kept for percentiles (later ones are not recorded but still timed).
pub const MAX_LATENCIES: usize = 1_000_000;
/// How long one command or one display update may take before the sample fails.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Guest memory of a sample (a 3840x2160 frame is 33 MB).
pub const GUEST_MEMORY: u64 = 192 << 20;
/// Side of the damage rectangle.
pub const DAMAGE: u32 = 64;
/// Size of the 3D render target.
pub const RT_3D: (u32, u32) = (1920, 1080);
/// Colour of the triangle the 3D workloads draw (RGBA), and its B, G, R bytes.
pub const TRIANGLE_RGBA: [f32; 4] = [0.0, 1.0, 0.0, 1.0];
/// [`TRIANGLE_RGBA`] as B8G8R8X8 bytes.
pub const TRIANGLE_BGR: [u8; 3] = [0, 0xff, 0];
/// The pixel format of every 2D resource: B8G8R8X8_UNORM is DRM_FORMAT_XRGB8888 (bytes B, G,
/// R, X), which is also the display socket's x8r8g8b8.
pub const FORMAT_XRGB8888: u32 = format::B8G8R8X8_UNORM;

/// One metric of a workload.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// JSON key.
    pub key: &'static str,
    /// Table label.
    pub label: &'static str,
    /// Bigger is better.
    pub higher_is_better: bool,
}

const RSS: Metric = Metric {
    key: "peak_rss_mib",
    label: "daemon peak RSS MiB",
    higher_is_better: false,
};

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Full-frame scanout at 1920x1080.
    Scanout1080p,
    /// Full-frame scanout at 3840x2160.
    Scanout2160p,
    /// 64x64 damage on a 1920x1080 scanout.
    Damage64,
    /// Command round trip.
    CmdRtt,
    /// Resource create/attach/unref.
    Churn,
    /// Fenced SUBMIT_3D (clear).
    Submit3d,
    /// SUBMIT_3D clear + fenced TRANSFER_FROM_HOST_3D.
    Readback3d,
    /// SUBMIT_3D clear of a render target on the scanout + fenced RESOURCE_FLUSH.
    Scanout3d,
}

impl Workload {
    /// All workloads in table order.
    pub const ALL: [Workload; 8] = [
        Workload::Scanout1080p,
        Workload::Scanout2160p,
        Workload::Damage64,
        Workload::CmdRtt,
        Workload::Churn,
        Workload::Submit3d,
        Workload::Readback3d,
        Workload::Scanout3d,
    ];

    /// Command-line / JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Scanout1080p => "scanout-1080p",
            Workload::Scanout2160p => "scanout-2160p",
            Workload::Damage64 => "damage-64",
            Workload::CmdRtt => "cmd-rtt",
            Workload::Churn => "churn",
            Workload::Submit3d => "3d-submit",
            Workload::Readback3d => "3d-readback",
            Workload::Scanout3d => "3d-scanout",
        }
    }

    /// Parse a name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }

    /// What it does and measures.
    pub fn description(self) -> &'static str {
        match self {
            Workload::Scanout1080p | Workload::Scanout2160p => {
                "XRGB8888 scanout; per frame the guest writes the whole frame into its backing, \
                 then TRANSFER_TO_HOST_2D + RESOURCE_FLUSH of the full rectangle (one kick), done \
                 when both are answered and the display peer has received all the frame's pixels; \
                 frames/s and daemon CPU time per frame"
            }
            Workload::Damage64 => {
                "1920x1080 XRGB8888 scanout; per frame the guest writes a 64x64 rectangle (moving) \
                 into its backing, then TRANSFER_TO_HOST_2D + RESOURCE_FLUSH of that rectangle, done \
                 when answered and the peer has the 4096 pixels; frames/s and CPU per frame"
            }
            Workload::CmdRtt => {
                "TRANSFER_TO_HOST_2D of a 1x1 rectangle of a 64x64 resource that is not on a \
                 scanout (answered at once, no display traffic), one command per kick, waited for; \
                 latency from publishing to the used entry, p50 and p99"
            }
            Workload::Churn => {
                "RESOURCE_CREATE_2D 64x64 + RESOURCE_ATTACH_BACKING (one 16 KiB entry) + \
                 RESOURCE_UNREF, three commands per kick, waited for; cycles/s"
            }
            Workload::Submit3d => {
                "virgl context with a 1920x1080 B8G8R8X8 render target (surface and framebuffer \
                 set once, with blend/DSA/rasterizer state, a TGSI vertex and fragment shader, vertex \
                 elements and a 3-vertex buffer); per iteration one fenced SUBMIT_3D whose stream \
                 clears colour buffer 0 to a new colour and draws one triangle, answered after its \
                 fence; submits/s"
            }
            Workload::Readback3d => {
                "as 3d-submit, then a fenced TRANSFER_FROM_HOST_3D of the whole 1920x1080 target \
                 into guest memory (one kick for both); the guest checks the clear colour in two \
                 corners and the triangle's colour in the centre; read-backs/s"
            }
            Workload::Scanout3d => {
                "as 3d-submit with the render target (bound for scanout) on scanout 0; per frame \
                 SUBMIT_3D + a fenced RESOURCE_FLUSH of the whole target (one kick), done when both \
                 are answered and the display peer has the frame: a DMABUF_UPDATE where the \
                 renderer exports the target as a dmabuf (no pixels copied), else UPDATE with all \
                 its pixels (read back from the renderer, checked at the end: clear colour in the \
                 corners, triangle in the centre); frames/s, CPU per frame and the share of frames \
                 that went as a dmabuf"
            }
        }
    }

    /// Metrics; the first is the primary one (charted, compared with the floor).
    pub fn metrics(self) -> &'static [Metric] {
        const FPS: Metric = Metric {
            key: "frames_per_s",
            label: "frames/s",
            higher_is_better: true,
        };
        const CPU_FRAME: Metric = Metric {
            key: "cpu_ms_per_frame",
            label: "daemon CPU ms/frame",
            higher_is_better: false,
        };
        const CPU_OP: Metric = Metric {
            key: "cpu_ms_per_op",
            label: "daemon CPU ms/op",
            higher_is_better: false,
        };
        match self {
            Workload::Scanout1080p | Workload::Scanout2160p | Workload::Damage64 => {
                &[FPS, CPU_FRAME, RSS]
            }
            Workload::CmdRtt => &[
                Metric {
                    key: "p50_us",
                    label: "p50 latency us",
                    higher_is_better: false,
                },
                Metric {
                    key: "p99_us",
                    label: "p99 latency us",
                    higher_is_better: false,
                },
                Metric {
                    key: "cpu_us_per_op",
                    label: "daemon CPU us/cmd",
                    higher_is_better: false,
                },
                RSS,
            ],
            Workload::Churn => &[
                Metric {
                    key: "cycles_per_s",
                    label: "cycles/s",
                    higher_is_better: true,
                },
                Metric {
                    key: "cpu_us_per_op",
                    label: "daemon CPU us/cycle",
                    higher_is_better: false,
                },
                RSS,
            ],
            Workload::Submit3d => &[
                Metric {
                    key: "ops_per_s",
                    label: "submits/s",
                    higher_is_better: true,
                },
                CPU_OP,
                RSS,
            ],
            Workload::Readback3d => &[
                Metric {
                    key: "ops_per_s",
                    label: "read-backs/s",
                    higher_is_better: true,
                },
                CPU_OP,
                RSS,
            ],
            Workload::Scanout3d => &[
                FPS,
                CPU_FRAME,
                Metric {
                    key: "dmabuf_share",
                    label: "share of frames as dmabuf",
                    higher_is_better: true,
                },
                RSS,
            ],
        }
    }

    /// The physical floor of the primary metric and what it assumes.
    pub fn floor(self, f: &Floors) -> (f64, String) {
        let frame = |w: u64, h: u64| {
            let bytes = w * h * 4;
            let t = 3.0 * f.memcpy_s(bytes) + f.eventfd_rtt_s;
            (
                1.0 / t,
                format!(
                    "3 memcpy of {bytes} bytes (guest write, into the socket, out of the socket into \
                     the peer's framebuffer; a backend keeping a host copy needs a 4th) + 1 eventfd \
                     round trip"
                ),
            )
        };
        match self {
            Workload::Scanout1080p => frame(1920, 1080),
            Workload::Scanout2160p => frame(3840, 2160),
            Workload::Damage64 => frame(u64::from(DAMAGE), u64::from(DAMAGE)),
            Workload::CmdRtt => (
                f.eventfd_rtt_s * 1e6,
                "1 eventfd round trip between two threads".into(),
            ),
            Workload::Churn => (
                1.0 / f.eventfd_rtt_s,
                "1 eventfd round trip per cycle (3 commands, 1 kick); no work".into(),
            ),
            Workload::Submit3d => (
                1.0 / f.eventfd_rtt_s,
                "1 eventfd round trip per submit; GPU work not counted".into(),
            ),
            Workload::Scanout3d => {
                let bytes = u64::from(RT_3D.0) * u64::from(RT_3D.1) * 4;
                (
                    1.0 / (f.eventfd_rtt_s + f.memcpy_s(bytes)),
                    format!(
                        "the read-back path's: 1 eventfd round trip + 1 memcpy of {bytes} bytes, \
                         GPU work not counted (a dmabuf path copies nothing and can pass it)"
                    ),
                )
            }
            Workload::Readback3d => {
                let bytes = u64::from(RT_3D.0) * u64::from(RT_3D.1) * 4;
                (
                    1.0 / (f.eventfd_rtt_s + f.memcpy_s(bytes)),
                    format!(
                        "1 eventfd round trip + 1 memcpy of {bytes} bytes; GPU work not counted"
                    ),
                )
            }
        }
    }

    /// Does it need the VIRGL feature?
    pub fn needs_3d(self) -> bool {
        matches!(
            self,
            Workload::Submit3d | Workload::Readback3d | Workload::Scanout3d
        )
    }
}

/// What one sample produced.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Measured: metric key and value, in [`Workload::metrics`] order.
    Ok(Vec<(&'static str, f64)>),
    /// The backend cannot run it (a missing feature); not retried.
    NotApplicable(String),
    /// It went wrong.
    Failed(String),
}

/// Timing knobs of one sample.
#[derive(Clone, Copy, Debug)]
pub struct SampleSettings {
    /// Timed loop length.
    pub duration: Duration,
}

/// A connected frontend with a bench display peer.
struct Session {
    fe: GpuFrontend,
    peer: BenchPeer,
    pid: u32,
}

fn connect_stream(path: &std::path::Path) -> Result<UnixStream> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                log::debug!("connect {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(Error::io(format!("connect {}", path.display()), e)),
        }
    }
}

impl Session {
    /// Connect and hand over a [`BenchPeer`] with VHOST_USER_GPU_SET_SOCKET, sent here on a
    /// duplicate of the connection (the harness's own `set_socket` starts its recording peer).
    fn connect(p: &BackendProcess, mode: (u32, u32)) -> Result<Self> {
        let stream = connect_stream(p.socket_path())?;
        // A backend that stops answering fails the sample instead of hanging it (the timeouts
        // belong to the socket, so the vhost crate's reads and writes get them too).
        stream
            .set_read_timeout(Some(OP_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(OP_TIMEOUT)))
            .map_err(|e| Error::io("socket timeouts", e))?;
        let side = stream
            .try_clone()
            .map_err(|e| Error::io("dup vhost socket", e))?;
        let opts = FrontendOptions {
            memory_size: GUEST_MEMORY,
            display: None,
            timeout: OP_TIMEOUT,
            ..FrontendOptions::default()
        };
        let fe = GpuFrontend::from_stream(stream, opts)?;
        let (peer, theirs) = BenchPeer::start(mode)?;
        let mut flags = VHOST_USER_VERSION;
        if fe.reply_ack() {
            flags |= VHOST_USER_NEED_REPLY;
        }
        let mut hdr = Vec::with_capacity(12);
        for v in [GPU_SET_SOCKET, flags, 0] {
            hdr.extend_from_slice(&v.to_le_bytes());
        }
        side.send_with_fd(&hdr[..], theirs.as_raw_fd())
            .map_err(|e| {
                Error::io(
                    "send GPU_SET_SOCKET",
                    std::io::Error::from_raw_os_error(e.errno()),
                )
            })?;
        drop(theirs);
        if fe.reply_ack() {
            use std::io::Read;
            let mut r = [0u8; 20];
            (&side)
                .read_exact(&mut r)
                .map_err(|e| Error::io("read GPU_SET_SOCKET ack", e))?;
            if get32(&r, 0) != GPU_SET_SOCKET
                || get32(&r, 4) & VHOST_USER_REPLY == 0
                || get64(&r, 12) != 0
            {
                return Err(Error::Malformed(format!("GPU_SET_SOCKET ack {r:?}")));
            }
        }
        Ok(Session {
            fe,
            peer,
            pid: p.pid(),
        })
    }

    fn cpu(&self) -> Result<f64> {
        process_cpu_seconds(self.pid)
            .ok_or_else(|| Error::Disconnected(format!("/proc/{}/stat unreadable", self.pid)))
    }

    /// Submit all, one kick, wait for all, each must be OK_NODATA.
    fn ok_all(&mut self, cmds: &[Command]) -> Result<()> {
        for (r, c) in self.fe.request_all(cmds)?.iter().zip(cmds) {
            r.expect_type(resp::OK_NODATA).map_err(|e| match e {
                Error::UnexpectedResponse { expected, got } => Error::UnexpectedResponse {
                    expected: format!("{expected} for {}", crate::protocol::type_name(c.hdr.ty)),
                    got,
                },
                e => e,
            })?;
        }
        Ok(())
    }
}

/// Timed-loop bookkeeping shared by the workloads.
struct Timer {
    start: Instant,
    cpu0: f64,
    n: u64,
    duration: Duration,
}

impl Timer {
    fn start(s: &Session, duration: Duration) -> Result<Self> {
        Ok(Timer {
            start: Instant::now(),
            cpu0: s.cpu()?,
            n: 0,
            duration,
        })
    }

    fn more(&self) -> bool {
        self.n == 0 || (self.n < MAX_ITERATIONS && self.start.elapsed() < self.duration)
    }

    /// (iterations, seconds, daemon CPU seconds).
    fn stop(&self, s: &Session) -> Result<(f64, f64, f64)> {
        let el = self.start.elapsed().as_secs_f64();
        let cpu = s.cpu()? - self.cpu0;
        Ok((self.n as f64, el, cpu))
    }
}

/// Run one sample of `w` on a fresh process of `cmd`.
pub fn run_sample(cmd: &BackendCommand, w: Workload, s: SampleSettings) -> Outcome {
    let mut p = match BackendProcess::spawn(cmd) {
        Ok(p) => p,
        Err(e) => {
            // The error carries the daemon's output tail: keep its first and last lines.
            let text = e.to_string();
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let first = lines.next().unwrap_or("");
            // "backend did not come up: CMD exited with ..." -> "daemon exited with ..." (the
            // command line, with its per-sample socket path, is in the backend list).
            let first = match first.find(" exited with ") {
                Some(i) => format!("daemon{}", &first[i..]),
                None => first.to_owned(),
            };
            let last = lines.rfind(|l| !l.starts_with("--- backend output"));
            let msg = match last {
                Some(l) => format!("{first} [last output: {}]", l.trim()),
                None => first,
            };
            return Outcome::Failed(one_line(&msg));
        }
    };
    let r = (|| -> Result<Outcome> {
        let mode = match w {
            Workload::Scanout2160p => (3840, 2160),
            _ => (1920, 1080),
        };
        let mut sess = Session::connect(&p, mode)?;
        if w.needs_3d() && sess.fe.offered_features() & features::VIRGL == 0 {
            return Ok(Outcome::NotApplicable("no VIRGL feature".into()));
        }
        let mut m = match w {
            Workload::Scanout1080p => scanout(&mut sess, 1920, 1080, false, s)?,
            Workload::Scanout2160p => scanout(&mut sess, 3840, 2160, false, s)?,
            Workload::Damage64 => scanout(&mut sess, 1920, 1080, true, s)?,
            Workload::CmdRtt => cmd_rtt(&mut sess, s)?,
            Workload::Churn => churn(&mut sess, s)?,
            Workload::Submit3d => three_d(&mut sess, ThreeD::Submit, s)?,
            Workload::Readback3d => three_d(&mut sess, ThreeD::Readback, s)?,
            Workload::Scanout3d => three_d(&mut sess, ThreeD::Scanout, s)?,
        };
        let hwm = p.memory()?.hwm_kib;
        m.push((RSS.key, hwm as f64 / 1024.0));
        let errors = sess.peer.counters().errors.clone();
        if !errors.is_empty() {
            return Err(Error::Malformed(format!(
                "display protocol: {}",
                errors.join("; ")
            )));
        }
        Ok(Outcome::Ok(m))
    })();
    match r {
        Ok(o) => o,
        Err(e) => {
            let mut msg = e.to_string();
            if let Ok(Some(st)) = p.try_wait() {
                msg = format!("daemon exited ({st}): {msg}");
                if let Some(last) = p.stderr().lines().rev().find(|l| !l.trim().is_empty()) {
                    msg.push_str(&format!(" [last output: {}]", last.trim()));
                }
            }
            Outcome::Failed(one_line(&msg))
        }
    }
}

fn one_line(s: &str) -> String {
    let t: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.len() > 600 {
        let mut end = 600;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &t[..end])
    } else {
        t
    }
}

fn create_2d_with_backing(s: &mut Session, id: u32, w: u32, h: u32) -> Result<u64> {
    let size = u64::from(w) * u64::from(h) * 4;
    let backing = s.fe.memory().alloc(size, 4096)?;
    let len = u32::try_from(size).map_err(|_| Error::Memory("backing too large".into()))?;
    s.ok_all(&[
        Command::resource_create_2d(id, FORMAT_XRGB8888, w, h),
        Command::attach_backing(
            id,
            &[MemEntry {
                addr: backing,
                length: len,
            }],
        ),
    ])?;
    Ok(backing)
}

/// A full frame of pattern `k` (two alternate, so every frame changes every pixel).
fn frame(w: u32, h: u32, k: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(w as usize * h as usize * 4);
    for y in 0..h {
        for x in 0..w {
            let p =
                (x.wrapping_mul(3) ^ y.wrapping_mul(5) ^ k.wrapping_mul(0x5a5a5a)) & 0x00ff_ffff;
            v.extend_from_slice(&p.to_le_bytes());
        }
    }
    v
}

fn scanout(
    s: &mut Session,
    w: u32,
    h: u32,
    damage: bool,
    st: SampleSettings,
) -> Result<Vec<(&'static str, f64)>> {
    let stride = u64::from(w) * 4;
    let backing = create_2d_with_backing(s, 1, w, h)?;
    let full = Rect::new(0, 0, w, h);
    s.ok_all(&[Command::set_scanout(0, 1, full)])?;
    let frames = [frame(w, h, 1), frame(w, h, 2)];
    let blocks: Vec<Vec<u8>> = (0..2u32)
        .map(|k| {
            let c = 0x0010_2030u32.wrapping_mul(k + 3) & 0x00ff_ffff;
            c.to_le_bytes().repeat((DAMAGE * DAMAGE) as usize)
        })
        .collect();
    let one = |s: &mut Session, i: u64, whole: bool| -> Result<()> {
        let rect = if whole {
            s.fe.memory().write(backing, &frames[(i % 2) as usize])?;
            full
        } else {
            let x = ((i * 67) % u64::from(w - DAMAGE)) as u32;
            let y = ((i * 41) % u64::from(h - DAMAGE)) as u32;
            let b = &blocks[(i % 2) as usize];
            let row = (DAMAGE * 4) as usize;
            for j in 0..DAMAGE as usize {
                let at = backing + u64::from(y + j as u32) * stride + u64::from(x) * 4;
                s.fe.memory().write(at, &b[j * row..(j + 1) * row])?;
            }
            Rect::new(x, y, DAMAGE, DAMAGE)
        };
        let offset = u64::from(rect.y) * stride + u64::from(rect.x) * 4;
        let base = s.peer.counters().pixels();
        let want = base + u64::from(rect.width) * u64::from(rect.height);
        s.ok_all(&[
            Command::transfer_to_host_2d(1, rect, offset),
            Command::resource_flush(1, rect),
        ])?;
        s.peer
            .wait_until(OP_TIMEOUT, "the flushed pixels", |c| c.pixels() >= want)
    };
    // The first frame fills the whole scanout (also for damage).
    one(s, 0, true)?;
    for i in 1..=u64::from(INNER_WARMUP) {
        one(s, i, !damage)?;
    }
    let mut t = Timer::start(s, st.duration)?;
    while t.more() {
        one(s, t.n + 3, !damage)?;
        t.n += 1;
    }
    let (n, el, cpu) = t.stop(s)?;
    verify_display(s, backing, w, h)?;
    Ok(vec![
        ("frames_per_s", n / el),
        ("cpu_ms_per_frame", cpu * 1e3 / n),
    ])
}

/// The peer's framebuffer must hold the guest's pixels (colour bytes; X is ignored). With a
/// dmabuf display path the pixels are in the dmabuf and are not compared.
fn verify_display(s: &Session, backing: u64, w: u32, h: u32) -> Result<()> {
    if s.peer.counters().dmabuf_updates > 0 {
        return Ok(());
    }
    let guest = s.fe.memory().read(backing, w as usize * h as usize * 4)?;
    let fb = s.peer.framebuffer();
    if (fb.width, fb.height) != (w, h) {
        return Err(Error::Malformed(format!(
            "display scanout is {}x{}, {w}x{h} expected",
            fb.width, fb.height
        )));
    }
    if let Some(i) = guest
        .chunks_exact(4)
        .zip(fb.bytes.chunks_exact(4))
        .position(|(g, d)| g[..3] != d[..3])
    {
        let (x, y) = (i as u32 % w, i as u32 / w);
        return Err(Error::Malformed(format!(
            "display pixel ({x},{y}) is {:02x?}, the guest wrote {:02x?}",
            &fb.bytes[i * 4..i * 4 + 4],
            &guest[i * 4..i * 4 + 4]
        )));
    }
    Ok(())
}

fn cmd_rtt(s: &mut Session, st: SampleSettings) -> Result<Vec<(&'static str, f64)>> {
    create_2d_with_backing(s, 1, 64, 64)?;
    let cmd = Command::transfer_to_host_2d(1, Rect::new(0, 0, 1, 1), 0);
    for _ in 0..INNER_WARMUP {
        s.fe.ok(&cmd)?;
    }
    let mut lat = Vec::new();
    let mut t = Timer::start(s, st.duration)?;
    while t.more() {
        let a = Instant::now();
        s.fe.ok(&cmd)?;
        if lat.len() < MAX_LATENCIES {
            lat.push(a.elapsed().as_secs_f64() * 1e6);
        }
        t.n += 1;
    }
    let (n, _, cpu) = t.stop(s)?;
    Ok(vec![
        ("p50_us", percentile(&lat, 50.0).unwrap_or(f64::NAN)),
        ("p99_us", percentile(&lat, 99.0).unwrap_or(f64::NAN)),
        ("cpu_us_per_op", cpu * 1e6 / n),
    ])
}

fn churn(s: &mut Session, st: SampleSettings) -> Result<Vec<(&'static str, f64)>> {
    let len = 64 * 64 * 4;
    let backing = s.fe.memory().alloc(u64::from(len), 4096)?;
    let cycle = |s: &mut Session, id: u32| {
        s.ok_all(&[
            Command::resource_create_2d(id, FORMAT_XRGB8888, 64, 64),
            Command::attach_backing(
                id,
                &[MemEntry {
                    addr: backing,
                    length: len,
                }],
            ),
            Command::resource_unref(id),
        ])
    };
    let mut id = 1u32;
    for _ in 0..INNER_WARMUP {
        cycle(s, id)?;
        id += 1;
    }
    let mut t = Timer::start(s, st.duration)?;
    while t.more() {
        cycle(s, id)?;
        id = id.wrapping_add(1).max(1);
        t.n += 1;
    }
    let (n, el, cpu) = t.stop(s)?;
    Ok(vec![
        ("cycles_per_s", n / el),
        ("cpu_us_per_op", cpu * 1e6 / n),
    ])
}

/// The 3D workloads' vertex buffer: one green triangle around the centre (clip space).
pub fn triangle_vertices() -> Vec<u8> {
    draw::vertex_bytes(&[
        ([-0.5, -0.5, 0.0, 1.0], TRIANGLE_RGBA),
        ([0.5, -0.5, 0.0, 1.0], TRIANGLE_RGBA),
        ([0.0, 0.5, 0.0, 1.0], TRIANGLE_RGBA),
    ])
}

/// The 3D workloads' set-up stream: sub-context 1, a surface of render target `rt` as the
/// framebuffer, and the pipeline drawing from vertex buffer `vbo` into `w` x `h`.
pub fn setup_stream(rt: u32, vbo: u32, w: u32, h: u32) -> Stream {
    let mut init = Stream::default();
    init.create_sub_ctx(1)
        .set_sub_ctx(1)
        .create_surface(1, rt, FORMAT_XRGB8888)
        .set_framebuffer(&[1]);
    draw::pipeline(&mut init, 2, w, h, vbo);
    init
}

/// Iteration `i`'s stream: a clear to a colour whose 8-bit values are exact (red `k`/255, blue
/// (255 - `k`)/255), then the triangle; returns `k` with it.
pub fn frame_stream(i: u64) -> (u32, Stream) {
    let k = (i % 200) as u32 + 20;
    let rgba = [k as f32 / 255.0, 0.0, (255 - k) as f32 / 255.0, 1.0];
    let mut c = Stream::default();
    c.clear_color(rgba);
    draw::draw_triangles(&mut c, 3);
    (k, c)
}

/// What the 3D workloads do after each submit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ThreeD {
    /// Nothing: the submit is fenced.
    Submit,
    /// A fenced TRANSFER_FROM_HOST_3D of the whole target.
    Readback,
    /// The target is on scanout 0: a fenced RESOURCE_FLUSH, then wait for the display.
    Scanout,
}

fn three_d(s: &mut Session, mode: ThreeD, st: SampleSettings) -> Result<Vec<(&'static str, f64)>> {
    const CTX: u32 = 1;
    const RES: u32 = 2;
    const VBO: u32 = 3;
    let (w, h) = RT_3D;
    let size = u64::from(w) * u64::from(h) * 4;
    let backing = s.fe.memory().alloc(size, 4096)?;
    let len = u32::try_from(size).map_err(|_| Error::Memory("backing too large".into()))?;
    let rt = Resource3d {
        target: virgl::TEXTURE_2D,
        format: FORMAT_XRGB8888,
        bind: virgl::BIND_RENDER_TARGET
            | virgl::BIND_SAMPLER_VIEW
            | if mode == ThreeD::Scanout {
                virgl::BIND_SCANOUT
            } else {
                0
            },
        width: w,
        height: h,
        depth: 1,
        array_size: 1,
        last_level: 0,
        nr_samples: 0,
        flags: 0,
    };
    s.ok_all(&[
        Command::ctx_create(CTX, 0, "gpu-bench"),
        Command::resource_create_3d(RES, &rt),
        Command::attach_backing(
            RES,
            &[MemEntry {
                addr: backing,
                length: len,
            }],
        ),
        Command::ctx_attach_resource(CTX, RES),
    ])?;
    // The vertex buffer: one green triangle around the centre (clip space), via its backing.
    let verts = triangle_vertices();
    let vlen = verts.len() as u32;
    let vbacking = s.fe.memory().alloc(u64::from(vlen), 4096)?;
    s.fe.memory().write(vbacking, &verts)?;
    let vbo = Resource3d {
        target: draw::TARGET_BUFFER,
        format: draw::FORMAT_R8_UNORM,
        bind: draw::BIND_VERTEX_BUFFER,
        width: vlen,
        height: 1,
        depth: 1,
        array_size: 1,
        ..Resource3d::default()
    };
    let vbox = Transfer3d {
        bx: Box3d {
            x: 0,
            y: 0,
            z: 0,
            w: vlen,
            h: 1,
            d: 1,
        },
        ..Transfer3d::default()
    };
    s.ok_all(&[
        Command::resource_create_3d(VBO, &vbo),
        Command::attach_backing(
            VBO,
            &[MemEntry {
                addr: vbacking,
                length: vlen,
            }],
        ),
        Command::ctx_attach_resource(CTX, VBO),
        Command::transfer_to_host_3d(CTX, VBO, &vbox),
    ])?;
    let init = setup_stream(RES, VBO, w, h);
    let mut fence = 1u64;
    s.ok_all(&[Command::submit_3d(CTX, &init.to_bytes()).fenced(fence)])?;
    let full = Rect::new(0, 0, w, h);
    if mode == ThreeD::Scanout {
        s.ok_all(&[Command::set_scanout(0, RES, full)])?;
    }
    let mut last_k = None;
    let xfer = Transfer3d {
        bx: Box3d {
            x: 0,
            y: 0,
            z: 0,
            w,
            h,
            d: 1,
        },
        offset: 0,
        level: 0,
        stride: w * 4,
        layer_stride: 0,
    };
    let mut one = |s: &mut Session, i: u64| -> Result<()> {
        let (k, c) = frame_stream(i);
        fence += 1;
        if mode == ThreeD::Scanout {
            let want = s.peer.counters().pixels() + u64::from(w) * u64::from(h);
            s.ok_all(&[
                Command::submit_3d(CTX, &c.to_bytes()),
                Command::resource_flush(RES, full).fenced(fence),
            ])?;
            last_k = Some(k);
            return s
                .peer
                .wait_until(OP_TIMEOUT, "the flushed frame", |c| c.pixels() >= want);
        }
        if mode == ThreeD::Submit {
            let r =
                s.fe.request(&Command::submit_3d(CTX, &c.to_bytes()).fenced(fence))?;
            r.expect_type(resp::OK_NODATA)?;
            if r.hdr.flags & FLAG_FENCE == 0 || r.hdr.fence_id != fence {
                return Err(Error::Malformed(format!(
                    "fenced SUBMIT_3D answered {}",
                    r.describe()
                )));
            }
            return Ok(());
        }
        s.ok_all(&[
            Command::submit_3d(CTX, &c.to_bytes()),
            Command::transfer_from_host_3d(CTX, RES, &xfer).fenced(fence),
        ])?;
        // B8G8R8X8: bytes B, G, R. The first and the last pixel show the clear colour, the
        // centre the triangle.
        let centre = (u64::from(h / 2) * u64::from(w) + u64::from(w / 2)) * 4;
        for (off, want) in [
            (0, [(255 - k) as u8, 0, k as u8]),
            (size - 4, [(255 - k) as u8, 0, k as u8]),
            (centre, TRIANGLE_BGR),
        ] {
            let px = s.fe.memory().read(backing + off, 4)?;
            if px[..3] != want {
                return Err(Error::Malformed(format!(
                    "read-back pixel at byte {off} is {px:02x?}, B G R {want:02x?} expected"
                )));
            }
        }
        Ok(())
    };
    for i in 0..u64::from(INNER_WARMUP) {
        one(s, i)?;
    }
    let mut t = Timer::start(s, st.duration)?;
    while t.more() {
        one(s, t.n + 2)?;
        t.n += 1;
    }
    let (n, el, cpu) = t.stop(s)?;
    if mode != ThreeD::Scanout {
        return Ok(vec![
            ("ops_per_s", n / el),
            ("cpu_ms_per_op", cpu * 1e3 / n),
        ]);
    }
    let (updates, dmabuf_updates) = {
        let c = s.peer.counters();
        (c.updates, c.dmabuf_updates)
    };
    if let (0, Some(k)) = (dmabuf_updates, last_k) {
        verify_3d_frame(s, w, h, k)?;
    }
    Ok(vec![
        ("frames_per_s", n / el),
        ("cpu_ms_per_frame", cpu * 1e3 / n),
        (
            "dmabuf_share",
            dmabuf_updates as f64 / (updates + dmabuf_updates).max(1) as f64,
        ),
    ])
}

/// The peer's framebuffer after the last 3d-scanout frame (read-back path): the clear colour of
/// frame `k` in the four corners (whichever way up the rows came), the triangle in the centre.
fn verify_3d_frame(s: &Session, w: u32, h: u32, k: u32) -> Result<()> {
    let fb = s.peer.framebuffer();
    if (fb.width, fb.height) != (w, h) {
        return Err(Error::Malformed(format!(
            "display scanout is {}x{}, {w}x{h} expected",
            fb.width, fb.height
        )));
    }
    let clear = [(255 - k) as u8, 0, k as u8];
    for (x, y, want) in [
        (0, 0, clear),
        (w - 1, 0, clear),
        (0, h - 1, clear),
        (w - 1, h - 1, clear),
        (w / 2, h / 2, TRIANGLE_BGR),
    ] {
        let at = (y as usize * w as usize + x as usize) * 4;
        let px = &fb.bytes[at..at + 4];
        if px[..3] != want {
            return Err(Error::Malformed(format!(
                "display pixel ({x},{y}) is {px:02x?}, B G R {want:02x?} expected"
            )));
        }
    }
    Ok(())
}
