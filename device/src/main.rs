//! `vhost-user-gpu`: the daemon. See `--help`, and `device/README.md` for how a guest command
//! travels through the code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use vhost_user_gpu::backend::{bind, serve_bound, GpuThreadHandle, VhostUserGpuBackend};
use vhost_user_gpu::cli::{
    capabilities_json, Action, Cli, Endpoint, RendererKind, SandboxMode, ServeOptions,
};
use vhost_user_gpu::gpu::{GpuConfig, VirtioGpu};
use vhost_user_gpu::renderer::software::SoftwareRenderer;
use vhost_user_gpu::renderer::Renderer;
use vhost_user_gpu::sandbox::{self, FilePolicy, FilesConfined};

/// Exit status for a command line that cannot be served (clap uses 2 for its own errors).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let options = match cli.action() {
        Ok(Action::PrintCapabilities) => {
            print!("{}", capabilities_json());
            return ExitCode::SUCCESS;
        }
        Ok(Action::Serve(options)) => options,
        Err(e) => {
            eprintln!("vhost-user-gpu: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let socket_path = match &options.endpoint {
        Endpoint::SocketPath(p) => Some(p.clone()),
        Endpoint::Fd(_) => None,
    };
    // libvirglrenderer 1.x starts its Venus render server from $RENDER_SERVER_EXEC_PATH: point
    // it at the binary --render-server names. Set here, before any other thread exists.
    if options.renderer == RendererKind::Virglrenderer {
        std::env::set_var(RENDER_SERVER_ENV, render_server_path(&options));
    }
    // Before any other thread exists, so that every thread inherits the blocked signals.
    if let Err(e) = exit_on_termination_signals(socket_path, options.sandbox) {
        eprintln!("vhost-user-gpu: cannot set up signal handling: {e}");
        return ExitCode::FAILURE;
    }
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhost-user-gpu: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (how libvirt stops a backend), SIGINT and SIGHUP end the daemon cleanly: the
/// signals are blocked in every thread and a dedicated thread waits for them, removes the
/// listening socket's path and ends the process with status 0.
///
/// The process ends with `_exit`: the GPU thread may be inside the renderer (and its GL
/// driver), so running C `atexit` handlers from another thread is not safe.
///
/// With the sandbox on, the thread confines itself before it returns (Landlock): it may only
/// remove files in the socket path's directory.
fn exit_on_termination_signals(
    socket_path: Option<PathBuf>,
    sandbox: SandboxMode,
) -> std::io::Result<()> {
    // SAFETY: an all-zero sigset_t is a valid value to pass to sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: `set` was initialised by sigemptyset; the signal numbers are valid.
        unsafe { libc::sigaddset(&mut set, signal) };
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    let (confined_tx, confined_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if sandbox == SandboxMode::On {
                let dirs = socket_path.iter().filter_map(|p| sandbox::parent_dir(p));
                let policy = FilePolicy::remove_only(dirs.collect());
                if let Err(e) = sandbox::confine_thread_files(&policy) {
                    log::error!("sandbox: the signal thread cannot confine itself: {e}");
                }
            }
            let _ = confined_tx.send(());
            let mut signal: libc::c_int = 0;
            // SAFETY: `set` is initialised and holds only blocked signals; `signal` is writable.
            let rc = unsafe { libc::sigwait(&set, &mut signal) };
            if rc != 0 {
                log::error!("sigwait failed ({rc}); signals will not stop the daemon cleanly");
                return;
            }
            log::info!("signal {signal}: exiting");
            if let Some(path) = &socket_path {
                let _ = std::fs::remove_file(path);
            }
            // SAFETY: _exit ends the process at once; it takes no pointers.
            unsafe { libc::_exit(0) };
        })?;
    // Before the syscall filter closes, which would refuse Landlock's syscalls.
    let _ = confined_rx.recv();
    Ok(())
}

/// Creates the renderer `options` asks for. Runs on the GPU thread.
fn create_renderer(options: &ServeOptions) -> Result<Box<dyn Renderer>, String> {
    match options.renderer {
        RendererKind::Software => {
            if let Some(node) = &options.render_node {
                log::warn!(
                    "--render-node {} is ignored by the software renderer",
                    node.display()
                );
            }
            Ok(Box::new(SoftwareRenderer::new()))
        }
        RendererKind::Virglrenderer => create_virgl(options),
        RendererKind::Gfxstream => create_gfxstream(options),
    }
}

/// The virglrenderer renderer (`--features virglrenderer`, the default).
#[cfg(feature = "virglrenderer")]
fn create_virgl(options: &ServeOptions) -> Result<Box<dyn Renderer>, String> {
    use vhost_user_gpu::cli::VenusMode;
    use vhost_user_gpu::renderer::virgl::{VirglGpuRenderer, VirglOptions};
    use virglrenderer::{RendererFlags, CAPSET_VENUS};
    let init = |flags: RendererFlags| -> Result<VirglGpuRenderer, String> {
        let render_node = match &options.render_node {
            Some(node) => Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(node)
                    .map_err(|e| format!("--render-node {}: {e}", node.display()))?
                    .into(),
            ),
            None => None,
        };
        VirglGpuRenderer::with_options(VirglOptions {
            flags,
            render_node,
            // Asked for by name on a library that speaks only wire format 0.
            venus_wire_format_0: options.venus == VenusMode::On,
        })
        .map_err(|e| format!("virglrenderer: {e}"))
    };
    let base = VirglGpuRenderer::default_flags();
    let venus = match venus_flags(options) {
        Ok(flags) => flags,
        Err(why) if options.venus == VenusMode::On => return Err(why),
        Err(why) => {
            log::warn!("Venus (Vulkan) not offered: {why}");
            None
        }
    };
    let renderer = match venus {
        Some(venus) => match init(base | venus) {
            Ok(r) => r,
            Err(e) if options.venus == VenusMode::On => {
                return Err(format!("--venus on: {e}"));
            }
            Err(e) => {
                log::warn!("Venus (Vulkan) not offered: init with Venus failed ({e})");
                init(base)?
            }
        },
        None => init(base)?,
    };
    if options.venus == VenusMode::On && !renderer.offers_capset(CAPSET_VENUS) {
        return Err(
            "--venus on: the library's Venus capset failed the start-up check \
                    (logged above)"
                .into(),
        );
    }
    Ok(Box::new(renderer))
}

/// The init flags that enable Venus as `--venus` asks, `Ok(None)` when it is off, or why it
/// cannot be enabled.
#[cfg(feature = "virglrenderer")]
fn venus_flags(options: &ServeOptions) -> Result<Option<virglrenderer::RendererFlags>, String> {
    use vhost_user_gpu::cli::VenusMode;
    use virglrenderer::RendererFlags;
    match options.venus {
        VenusMode::Off => return Ok(None),
        VenusMode::Auto if !virglrenderer::LIBRARY_AT_LEAST_1_0 => {
            return Err(format!(
                "libvirglrenderer {} is older than 1.0, where Venus is experimental and speaks a \
                 wire format Mesa's Venus driver refuses (--venus on tries anyway)",
                virglrenderer::LIBRARY_VERSION
            ))
        }
        VenusMode::Auto | VenusMode::On => {}
    }
    if !virglrenderer::LIBRARY_AT_LEAST_1_0 {
        // 0.10 runs Venus inside the library.
        return Ok(Some(RendererFlags::VENUS));
    }
    // 1.x runs Venus in its render server, which main() has located (RENDER_SERVER_EXEC_PATH).
    let server = render_server_path(options);
    if !is_executable(&server) {
        return Err(format!(
            "libvirglrenderer {} runs Venus in its render server, and {} is not an executable \
             file: install the package virgl-server (Debian, Ubuntu) or pass --render-server PATH",
            virglrenderer::LIBRARY_VERSION,
            server.display()
        ));
    }
    // The render server's contexts report their fences on threads of the library
    // (ASYNC_FENCE_CB), which the crate turns into one poll fd for the GPU thread; without it
    // they would only show on a per-context fd.
    Ok(Some(
        RendererFlags::VENUS | RendererFlags::RENDER_SERVER | RendererFlags::ASYNC_FENCE_CB,
    ))
}

/// The render server binary: `--render-server`, else `$RENDER_SERVER_EXEC_PATH` (the variable
/// the library itself reads), else Debian's path.
fn render_server_path(options: &ServeOptions) -> PathBuf {
    options
        .render_server
        .clone()
        .or_else(|| std::env::var_os(RENDER_SERVER_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RENDER_SERVER))
}

/// The environment variable through which libvirglrenderer 1.x finds its render server.
const RENDER_SERVER_ENV: &str = "RENDER_SERVER_EXEC_PATH";
/// Where Debian's package virgl-server installs the render server.
const DEFAULT_RENDER_SERVER: &str = "/usr/libexec/virgl_render_server";

#[cfg(feature = "virglrenderer")]
fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// This build has no virglrenderer.
#[cfg(not(feature = "virglrenderer"))]
fn create_virgl(_options: &ServeOptions) -> Result<Box<dyn Renderer>, String> {
    Err("renderer 'virglrenderer' was not compiled into this build".into())
}

/// The gfxstream renderer (`--features gfxstream`).
#[cfg(feature = "gfxstream")]
fn create_gfxstream(options: &ServeOptions) -> Result<Box<dyn Renderer>, String> {
    use vhost_user_gpu::renderer::gfxstream::GfxstreamRenderer;
    if let Some(node) = &options.render_node {
        log::warn!(
            "--render-node {} is ignored by the gfxstream renderer",
            node.display()
        );
    }
    // Without a display, Mesa's EGL needs the surfaceless platform (gfxstream's own
    // "surfaceless" flag is not read); the library blocks in init otherwise. A user's explicit
    // EGL_PLATFORM wins. Set before init, which calls setenv itself anyway.
    let no_display =
        std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none();
    if std::env::var_os("EGL_PLATFORM").is_none() && no_display {
        std::env::set_var("EGL_PLATFORM", "surfaceless");
    }
    // With a host-visible region (--hostmem), host blobs must reach the frontend as an fd
    // (RESOURCE_MAP_BLOB → SHMEM_MAP): external blobs make them shared memory that exports;
    // gfxstream's default host-memory blobs cannot be exported at all.
    let mut init = gfxstream::InitOptions::default();
    if options.hostmem > 0 {
        init.flags = init.flags | gfxstream::RendererFlags::USE_EXTERNAL_BLOB;
    }
    let renderer = GfxstreamRenderer::new(&init).map_err(|e| format!("gfxstream: {e}"))?;
    Ok(Box::new(renderer))
}

/// This build has no gfxstream (`RendererKind::compiled_in` refuses it before this is reached).
#[cfg(not(feature = "gfxstream"))]
fn create_gfxstream(_options: &ServeOptions) -> Result<Box<dyn Renderer>, String> {
    Err(
        "renderer 'gfxstream' was not compiled into this build (build with --features gfxstream)"
            .into(),
    )
}

fn run(options: ServeOptions) -> Result<(), Box<dyn std::error::Error>> {
    let config = GpuConfig {
        num_scanouts: options.num_scanouts,
        max_hostmem: options.max_hostmem,
        host_visible_size: options.hostmem,
        ..GpuConfig::default()
    };
    log::info!(
        "renderer {}, {} scanout(s), max host memory {} bytes{}",
        options.renderer,
        options.num_scanouts,
        options.max_hostmem,
        if options.headless { ", headless" } else { "" }
    );
    let factory_options = options.clone();
    let gpu = GpuThreadHandle::spawn(
        move || {
            let renderer = create_renderer(&factory_options)?;
            // The renderer is initialised: the GPU thread, where guest commands reach it,
            // confines its own file access (Landlock applies to the calling thread).
            if factory_options.sandbox == SandboxMode::On {
                sandbox::confine_thread_files(&FilePolicy::for_renderers())
                    .map_err(|e| format!("sandbox: {e}"))?;
            }
            Ok(VirtioGpu::new(renderer, config))
        },
        options.num_scanouts,
        options.headless,
    )?;
    gpu.client()
        .set_poll_max(Duration::from_micros(options.poll_max_us));
    let backend = Arc::new(VhostUserGpuBackend::new(gpu.client()));
    let bound = bind(&options.endpoint)?;
    match options.sandbox {
        SandboxMode::On => close_sandbox()?,
        SandboxMode::Off => log::warn!("--sandbox off: the process is not confined"),
    }
    serve_bound(bound, backend)?;
    Ok(())
}

/// Start-up is over (renderer initialised, socket listening): confines the main thread's file
/// access and installs the syscall filter on every thread.
fn close_sandbox() -> Result<(), sandbox::SandboxError> {
    let policy = FilePolicy::for_renderers();
    let files = sandbox::close(&policy)?;
    let files = match files {
        FilesConfined::Fully => "file access confined (Landlock)",
        FilesConfined::Partially => "file access partly confined (this kernel's Landlock is older)",
        FilesConfined::No => "file access not confined (this kernel has no Landlock)",
    };
    let opens = if policy.reopens_devices_rw {
        "read-write opens of existing files only where Landlock allows them (NVIDIA's device nodes)"
    } else {
        "no write-opens"
    };
    log::info!(
        "sandbox closed: {} syscalls allowed on every thread, no exec, {opens}; {files}",
        sandbox::ALLOWED_SYSCALLS.len() + 1
    );
    Ok(())
}
