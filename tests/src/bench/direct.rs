//! The library-direct floor of the 3D workloads: the command streams of `3d-submit` and
//! `3d-readback` submitted straight into libvirglrenderer in one process, with no vhost-user,
//! no virtqueue and no second process. What a backend adds on top of this is its own cost.
//!
//! libvirglrenderer keeps process-global state, so each sample runs in a process of its own:
//! `gpu-bench` starts itself with `--direct-3d submit|readback --duration S` ([`child_main`]),
//! which prints one line of `key=value` metrics that [`run_sample`] reads.

use std::os::fd::AsRawFd;
use std::process::Command as Process;
use std::time::{Duration, Instant};

use virglrenderer::{
    Box3d as VBox3d, Context, RendererFlags, ResourceCreate3d, Transfer, VirglRenderer,
};

use crate::bench::draw;
use crate::bench::sys::process_cpu_seconds;
use crate::bench::workloads::{
    frame_stream, setup_stream, triangle_vertices, Outcome, SampleSettings, Workload,
    FORMAT_XRGB8888, INNER_WARMUP, MAX_ITERATIONS, OP_TIMEOUT, RT_3D, TRIANGLE_BGR,
};
use crate::error::{Error, Result};
use crate::virgl;

/// The argument that makes `gpu-bench` run one direct sample.
pub const CHILD_FLAG: &str = "--direct-3d";

/// One sample of `w` in a fresh `gpu-bench --direct-3d` process; not applicable to the
/// workloads without a 3D command stream.
pub fn run_sample(w: Workload, s: SampleSettings) -> Outcome {
    let mode = match w {
        Workload::Submit3d => "submit",
        Workload::Readback3d => "readback",
        _ => {
            return Outcome::NotApplicable(
                "the library-direct column covers 3d-submit and 3d-readback".into(),
            )
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Outcome::Failed(format!("own executable: {e}")),
    };
    let out = match Process::new(exe)
        .args([CHILD_FLAG, mode, "--duration"])
        .arg(format!("{}", s.duration.as_secs_f64()))
        .output()
    {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(format!("starting the direct sample: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Outcome::Failed(format!("direct sample {}: {last}", out.status));
    }
    let mut m = Vec::new();
    for key in ["ops_per_s", "cpu_ms_per_op", "peak_rss_mib"] {
        let v = stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse::<f64>().ok());
        match v {
            Some(v) => m.push((key, v)),
            None => return Outcome::Failed(format!("direct sample printed no {key}: {stdout}")),
        }
    }
    Outcome::Ok(m)
}

/// The child: `--direct-3d submit|readback --duration S`. Prints the metrics on stdout.
pub fn child_main(args: &[String]) -> Result<()> {
    let readback = match args.first().map(String::as_str) {
        Some("submit") => false,
        Some("readback") => true,
        other => return Err(Error::Malformed(format!("--direct-3d {other:?}"))),
    };
    let duration = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("--duration"), Some(v)) => v
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite() && *d > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| Error::Malformed(format!("--duration {v}")))?,
        _ => Duration::from_secs(1),
    };
    let (ops, cpu_ms) = three_d(readback, duration)?;
    let hwm_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .ok_or_else(|| Error::Malformed("no VmHWM in /proc/self/status".into()))?;
    println!(
        "ops_per_s={ops} cpu_ms_per_op={cpu_ms} peak_rss_mib={}",
        hwm_kib as f64 / 1024.0
    );
    Ok(())
}

fn lib(op: &str) -> impl Fn(virglrenderer::Error) -> Error + '_ {
    move |e| Error::Malformed(format!("libvirglrenderer {op}: {e}"))
}

/// Waits for fence `id` of the global timeline: the library's poll fd, then `poll`.
fn wait_fence(r: &VirglRenderer, id: u64) -> Result<()> {
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        let done = r.poll().iter().any(|f| {
            matches!(f, virglrenderer::Fence::Global { fence_id } if u64::from(*fence_id) >= id)
        });
        if done {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Malformed(format!("fence {id} never completed")));
        }
        match r.poll_fd() {
            Some(fd) => {
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().min(1000) as i32;
                // SAFETY: one valid pollfd, the length given is 1.
                unsafe { libc::poll(&mut p, 1, ms) };
            }
            None => std::thread::sleep(Duration::from_micros(50)),
        }
    }
}

/// The same setup and per-iteration streams as the 3D workloads over vhost-user: a
/// 1920x1080 B8G8R8X8 render target with guest-style backing, a vertex buffer, the pipeline;
/// per iteration a clear and one triangle, fenced (and with `readback` the whole target read
/// into the backing and checked). Returns (iterations per second, process CPU ms per
/// iteration).
fn three_d(readback: bool, duration: Duration) -> Result<(f64, f64)> {
    const CTX: u32 = 1;
    const RES: u32 = 2;
    const VBO: u32 = 3;
    let (w, h) = RT_3D;
    let r = VirglRenderer::init(RendererFlags::surfaceless() | RendererFlags::THREAD_SYNC)
        .map_err(lib("init"))?;
    let ctx: Context = r
        .create_context(CTX, b"gpu-bench-direct", None)
        .map_err(lib("create_context"))?;
    let rt = r
        .create_resource(
            RES,
            &ResourceCreate3d {
                bind: virgl::BIND_RENDER_TARGET | virgl::BIND_SAMPLER_VIEW,
                flags: 0,
                ..ResourceCreate3d::texture_2d(FORMAT_XRGB8888, w, h)
            },
        )
        .map_err(lib("create_resource"))?;
    ctx.attach(&rt).map_err(lib("attach"))?;
    let verts = triangle_vertices();
    let vlen = u32::try_from(verts.len()).map_err(|_| Error::Memory("vertices".into()))?;
    let vbo = r
        .create_resource(
            VBO,
            &ResourceCreate3d {
                target: draw::TARGET_BUFFER,
                format: draw::FORMAT_R8_UNORM,
                bind: draw::BIND_VERTEX_BUFFER,
                width: vlen,
                height: 1,
                depth: 1,
                array_size: 1,
                last_level: 0,
                nr_samples: 0,
                flags: 0,
            },
        )
        .map_err(lib("create_resource (vertex buffer)"))?;
    ctx.attach(&vbo).map_err(lib("attach (vertex buffer)"))?;
    let whole = |width: u32, height: u32, stride: u32| Transfer {
        bbox: VBox3d {
            x: 0,
            y: 0,
            z: 0,
            w: width,
            h: height,
            d: 1,
        },
        level: 0,
        stride,
        layer_stride: 0,
        offset: 0,
    };
    vbo.write_from(Some(&ctx), &whole(vlen, 1, 0), &verts)
        .map_err(lib("vertex upload"))?;
    let init = setup_stream(RES, VBO, w, h);
    ctx.submit_bytes(&init.to_bytes()).map_err(lib("submit"))?;
    let mut fence = 1u64;
    r.create_fence(fence as u32).map_err(lib("create_fence"))?;
    wait_fence(&r, fence)?;

    let size = (u64::from(w) * u64::from(h) * 4) as usize;
    let mut pixels = vec![0u8; size];
    let xfer = whole(w, h, w * 4);
    let mut one = |i: u64| -> Result<()> {
        let (k, c) = frame_stream(i);
        ctx.submit_bytes(&c.to_bytes()).map_err(lib("submit"))?;
        if readback {
            rt.read_into(Some(&ctx), &xfer, &mut pixels)
                .map_err(lib("read_into"))?;
        }
        fence += 1;
        r.create_fence(fence as u32).map_err(lib("create_fence"))?;
        wait_fence(&r, fence)?;
        if readback {
            let centre = ((h / 2) as usize * w as usize + (w / 2) as usize) * 4;
            let clear = [(255 - k) as u8, 0, k as u8];
            for (off, want) in [(0, clear), (size - 4, clear), (centre, TRIANGLE_BGR)] {
                if pixels[off..off + 3] != want {
                    return Err(Error::Malformed(format!(
                        "direct read-back pixel at byte {off} is {:02x?}, B G R {want:02x?} \
                         expected",
                        &pixels[off..off + 4]
                    )));
                }
            }
        }
        Ok(())
    };
    for i in 0..u64::from(INNER_WARMUP) {
        one(i)?;
    }
    let pid = std::process::id();
    let cpu0 = process_cpu_seconds(pid).unwrap_or(0.0);
    let start = Instant::now();
    let mut n = 0u64;
    while n == 0 || (n < MAX_ITERATIONS && start.elapsed() < duration) {
        one(n + 2)?;
        n += 1;
    }
    let el = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    drop(ctx);
    Ok((n as f64 / el, cpu * 1e3 / n as f64))
}
