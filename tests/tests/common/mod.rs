//! Shared helpers of the integration tests: which backend to run and small command sequences.
#![allow(dead_code)]

use std::time::Duration;

use vhost_user_gpu_tests::protocol::{format, resp, Command, MemEntry, Rect};
use vhost_user_gpu_tests::{BackendCommand, BackendProcess, FrontendOptions, GpuFrontend};

/// Which of our daemon's renderers a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renderer {
    /// `--renderer software`.
    Software,
    /// `--renderer virglrenderer`.
    Virgl,
}

impl Renderer {
    /// The `--renderer` argument.
    pub fn arg(self) -> &'static str {
        match self {
            Renderer::Software => "software",
            Renderer::Virgl => "virglrenderer",
        }
    }
}

/// Generates `software::NAME` and `virglrenderer::NAME` tests calling `NAME(Renderer)`.
#[macro_export]
macro_rules! per_renderer {
    ($($name:ident),* $(,)?) => {
        mod software {
            $( #[test] fn $name() { super::$name(super::common::Renderer::Software) } )*
        }
        mod virglrenderer {
            $( #[test] fn $name() {
                if super::common::virgl_opted_out() { return; }
                super::$name(super::common::Renderer::Virgl)
            } )*
        }
    };
}

/// `VUGPU_NO_VIRGL=1` states that the daemon was built without virglrenderer: the virgl tests
/// then print that they did not run. Without it a missing renderer fails them.
pub fn virgl_opted_out() -> bool {
    let out = std::env::var_os("VUGPU_NO_VIRGL").is_some_and(|v| v == "1");
    if out {
        eprintln!("NOT RUN: VUGPU_NO_VIRGL=1 (daemon built without virglrenderer)");
    }
    out
}

/// The backend a test drives: our daemon with `renderer`, unless `VUGPU_BACKEND` overrides it
/// with `qemu` (QEMU's C backend, 2D) or a whole command line (split on spaces; `{socket}` is
/// replaced by the socket path).
pub fn backend_command_for(renderer: Renderer) -> BackendCommand {
    match std::env::var("VUGPU_BACKEND").ok().as_deref() {
        None | Some("") => ours(renderer.arg()),
        Some("qemu") => BackendCommand::qemu().unwrap_or_else(|e| panic!("{e}")),
        Some(line) => {
            let mut parts = line.split_whitespace();
            let mut c = BackendCommand::new(
                parts
                    .next()
                    .unwrap_or_else(|| panic!("empty VUGPU_BACKEND")),
            );
            for p in parts {
                c = c.arg(p);
            }
            c
        }
    }
}

/// The backend for tests that do not depend on the renderer (software).
pub fn backend_command() -> BackendCommand {
    backend_command_for(Renderer::Software)
}

/// Is the selected backend QEMU's C backend (for documented differences)?
pub fn is_qemu() -> bool {
    std::env::var("VUGPU_BACKEND").is_ok_and(|v| v == "qemu")
}

/// Our daemon with a renderer; panics (fails the test) if the binary is missing.
pub fn ours(renderer: &str) -> BackendCommand {
    BackendCommand::ours_with_renderer(renderer).unwrap_or_else(|e| panic!("{e}"))
}

/// Start a backend.
pub fn spawn(cmd: &BackendCommand) -> BackendProcess {
    BackendProcess::spawn(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Connect a frontend, failing with the backend's output.
pub fn connect(p: &BackendProcess, opts: FrontendOptions) -> GpuFrontend {
    GpuFrontend::connect(p.socket_path(), opts)
        .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", p.command_line(), p.stderr_tail()))
}

/// A backend of the selected kind, connected with default options.
pub fn start() -> (BackendProcess, GpuFrontend) {
    start_with(FrontendOptions::default())
}

/// A backend of the selected kind, connected with `opts`.
pub fn start_with(opts: FrontendOptions) -> (BackendProcess, GpuFrontend) {
    start_on(Renderer::Software, opts)
}

/// Our daemon with `renderer` (or the `VUGPU_BACKEND` override), connected with `opts`.
pub fn start_on(renderer: Renderer, opts: FrontendOptions) -> (BackendProcess, GpuFrontend) {
    let p = spawn(&backend_command_for(renderer));
    let fe = connect(&p, opts);
    (p, fe)
}

/// Unwrap a harness result, failing with the backend's output.
pub trait Check<T> {
    /// Unwrap or panic with context and backend output.
    fn check(self, p: &BackendProcess, what: &str) -> T;
}

impl<T> Check<T> for vhost_user_gpu_tests::Result<T> {
    fn check(self, p: &BackendProcess, what: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!(
                "{what}: {e}\nbackend: {}\n{}",
                p.command_line(),
                p.stderr_tail()
            ),
        }
    }
}

/// A guest-side 2D resource with its backing.
pub struct Res2d {
    /// Resource id.
    pub id: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
    /// Backing address (one contiguous entry, w*h*4 bytes).
    pub backing: u64,
}

/// Create a B8G8R8X8 resource with one backing entry of w*h*4 bytes.
pub fn create_2d(fe: &mut GpuFrontend, p: &BackendProcess, id: u32, w: u32, h: u32) -> Res2d {
    create_2d_fmt(fe, p, id, w, h, format::B8G8R8X8_UNORM)
}

/// Create a resource of `fmt` with one backing entry.
pub fn create_2d_fmt(
    fe: &mut GpuFrontend,
    p: &BackendProcess,
    id: u32,
    w: u32,
    h: u32,
    fmt: u32,
) -> Res2d {
    let size = u64::from(w) * u64::from(h) * 4;
    let backing = fe.memory().alloc(size, 4096).check(p, "alloc backing");
    fe.ok(&Command::resource_create_2d(id, fmt, w, h))
        .check(p, "RESOURCE_CREATE_2D");
    fe.ok(&Command::attach_backing(
        id,
        &[MemEntry {
            addr: backing,
            length: size as u32,
        }],
    ))
    .check(p, "RESOURCE_ATTACH_BACKING");
    Res2d { id, w, h, backing }
}

/// Fill the backing of `r` with `f(x, y)` as little-endian u32 pixels.
pub fn paint(fe: &GpuFrontend, p: &BackendProcess, r: &Res2d, f: impl Fn(u32, u32) -> u32) {
    let mut b = Vec::with_capacity((r.w * r.h * 4) as usize);
    for y in 0..r.h {
        for x in 0..r.w {
            b.extend_from_slice(&f(x, y).to_le_bytes());
        }
    }
    fe.memory().write(r.backing, &b).check(p, "paint backing");
}

/// A distinct pattern value for pixel (x, y).
pub fn pattern(x: u32, y: u32) -> u32 {
    (x.wrapping_mul(7) & 0xff) | ((y.wrapping_mul(13) & 0xff) << 8) | (((x ^ y) & 0xff) << 16)
}

/// Assert a response type with the backend's output on failure.
pub fn assert_resp(
    r: &vhost_user_gpu_tests::protocol::Response,
    ty: u32,
    what: &str,
    p: &BackendProcess,
) {
    assert_eq!(
        r.ty(),
        ty,
        "{what}: expected {} ({ty:#x}), got {}\n{}",
        vhost_user_gpu_tests::protocol::type_name(ty),
        r.describe(),
        p.stderr_tail()
    );
}

/// The usual wait for display events.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Full-rectangle of a resource.
pub fn full(r: &Res2d) -> Rect {
    Rect::new(0, 0, r.w, r.h)
}

/// OK_NODATA.
pub const OK: u32 = resp::OK_NODATA;
