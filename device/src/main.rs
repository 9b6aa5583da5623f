//! `vhost-user-gpu`: the daemon. See `--help`, and `device/README.md` for how a guest command
//! travels through the code.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use vhost_user_gpu::backend::{serve, GpuThreadHandle, VhostUserGpuBackend};
use vhost_user_gpu::cli::{capabilities_json, Action, Cli, RendererKind, ServeOptions};
use vhost_user_gpu::gpu::{GpuConfig, VirtioGpu};
use vhost_user_gpu::renderer::software::SoftwareRenderer;
use vhost_user_gpu::renderer::Renderer;

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
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhost-user-gpu: {e}");
            ExitCode::FAILURE
        }
    }
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
    use vhost_user_gpu::renderer::virgl::VirglGpuRenderer;
    use virglrenderer::RendererFlags;
    let init = |flags: RendererFlags| -> Result<VirglGpuRenderer, String> {
        match &options.render_node {
            Some(node) => {
                let fd = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(node)
                    .map_err(|e| format!("--render-node {}: {e}", node.display()))?;
                VirglGpuRenderer::with_render_node(flags, fd.into())
            }
            None => VirglGpuRenderer::new(flags),
        }
        .map_err(|e| format!("virglrenderer: {e}"))
    };
    // Venus (capset 4, Vulkan) when the library was built with it and a Vulkan driver is
    // there; otherwise GL only.
    let base = VirglGpuRenderer::default_flags();
    let renderer = match init(base | RendererFlags::VENUS) {
        Ok(r) => r,
        Err(e) => {
            log::info!("virglrenderer without Venus ({e})");
            init(base)?
        }
    };
    Ok(Box::new(renderer))
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
    let renderer = GfxstreamRenderer::new(&gfxstream::InitOptions::default())
        .map_err(|e| format!("gfxstream: {e}"))?;
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
            Ok(VirtioGpu::new(renderer, config))
        },
        options.num_scanouts,
        options.headless,
    )?;
    let backend = Arc::new(VhostUserGpuBackend::new(gpu.client()));
    serve(&options.endpoint, backend)?;
    Ok(())
}
