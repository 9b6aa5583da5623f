//! dmabuf-probe: does dmabuf export work on this machine's GL, and through libvirglrenderer?
//! Every step is printed with its EGL/GL error, so a failure says which call refused and why.
//!
//! * `dmabuf-probe egl`: the control, without libvirglrenderer. On a surfaceless EGL display and
//!   on the first EGL device (EGL_EXT_device_enumeration): a GL context, a 64x48 RGBA8 texture
//!   (immutable `glTexStorage2D` storage, then mutable `glTexImage2D` storage, as libvirglrenderer
//!   allocates either) cleared to a known colour, `eglCreateImageKHR(EGL_GL_TEXTURE_2D_KHR)`,
//!   `eglExportDMABUFImageQueryMESA`, `eglExportDMABUFImageMESA`; an exported fd is mapped (CPU
//!   read, linear layouts) and imported again (EGL_EXT_image_dma_buf_import) and every pixel
//!   compared with the colour.
//! * `dmabuf-probe virgl` (the default): libvirglrenderer with `USE_EGL|USE_SURFACELESS`, a
//!   B8G8R8X8 scanout resource cleared through a virgl command stream, then
//!   `Resource::export_dmabuf` (`virgl_renderer_get_fd_for_texture2`); an exported fd is imported
//!   again and its pixels compared. Then the library's own steps by hand on its texture, with the
//!   context it left current (`eglCreateImageKHR(eglGetCurrentContext(), EGL_GL_TEXTURE_2D_KHR,
//!   tex)`, the export query, the export), each with its EGL error.
//!
//! The last line says `EXPORT (<mode>): yes|no`; the exit status is 0 when the probe ran, whatever
//! it found, and 1 when it could not run (no libEGL, renderer init failed) or pixels differed.

use std::os::fd::AsFd;

use vhost_user_gpu_tests::egl::{
    fourcc_name, has_ext, Context, Display, Dmabuf, Egl, Platform, EGL_EXTENSIONS, EGL_VENDOR,
    EGL_VERSION, GL_RENDERER, GL_VENDOR, GL_VERSION, MOD_INVALID, MOD_LINEAR,
};
use virglrenderer::format::{B8G8R8X8_UNORM, BIND_RENDER_TARGET, BIND_SAMPLER_VIEW, BIND_SCANOUT};
use virglrenderer::protocol::{CommandBuffer, PIPE_CLEAR_COLOR0};
use virglrenderer::{RendererFlags, ResourceCreate3d, VirglRenderer};

const WIDTH: u32 = 64;
const HEIGHT: u32 = 48;
/// The clear colour as R, G, B, A bytes (multiples of 1/255, so they come back exact).
const RGBA: [u8; 4] = [51, 102, 204, 255];

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Compares RGBA pixels with `want` (alpha too unless `ignore_alpha`); prints and returns whether
/// all matched.
fn compare(what: &str, pixels: &[u8], want: [u8; 4], ignore_alpha: bool) -> bool {
    let n = if ignore_alpha { 3 } else { 4 };
    let bad: Vec<usize> = pixels
        .chunks_exact(4)
        .enumerate()
        .filter(|(_, p)| p[..n] != want[..n])
        .map(|(i, _)| i)
        .collect();
    match bad.first() {
        None => println!("PIXELS ({what}): all {} match {want:?}", pixels.len() / 4),
        Some(&i) => println!(
            "PIXELS ({what}): MISMATCH: {} of {} differ; first at {i}: {:?}, want {want:?}",
            bad.len(),
            pixels.len() / 4,
            &pixels[i * 4..i * 4 + 4]
        ),
    }
    bad.is_empty()
}

/// Maps the dmabuf (linear layouts only) and compares its first row with the colour, as the
/// exporter's fourcc lays it out (AB24 = R,G,B,A and XR24 = B,G,R,X in memory).
fn check_mmap(d: &Dmabuf<'_>, want: [u8; 4]) -> Option<bool> {
    if d.modifier != MOD_LINEAR && d.modifier != MOD_INVALID {
        println!("  mmap: skipped (modifier {:#x} is not linear)", d.modifier);
        return None;
    }
    let row = d.width as usize * 4;
    let len = d.offset as usize + d.stride as usize * (d.height as usize - 1) + row;
    match vhost_user_gpu_tests::egl::mmap_read(d.fd, len) {
        Ok(bytes) => {
            let first = &bytes[d.offset as usize..d.offset as usize + row];
            let rgba: Vec<u8> = match &d.fourcc.to_le_bytes() {
                b"XR24" | b"AR24" => first
                    .chunks_exact(4)
                    .flat_map(|p| [p[2], p[1], p[0], p[3]])
                    .collect(),
                _ => first.to_vec(),
            };
            let ignore_alpha = &d.fourcc.to_le_bytes()[..2] == b"XR";
            Some(compare("mmap, first row", &rgba, want, ignore_alpha))
        }
        Err(e) => {
            println!("  mmap of the dmabuf: {e}");
            None
        }
    }
}

/// The control: plain EGL + GL.
fn probe_egl(egl: &Egl) -> Result<(bool, bool)> {
    println!(
        "EGL client extensions: {}",
        egl.string(None, EGL_EXTENSIONS)
    );
    let mut displays = vec![("surfaceless", Platform::Surfaceless)];
    let devices = egl.devices();
    println!("eglQueryDevicesEXT: {} devices", devices.len());
    for (i, (d, exts, file)) in devices.iter().enumerate() {
        println!("  device {i}: DRM file {file}; extensions {exts}");
        if i == 0 {
            displays.push(("device 0", Platform::Device(*d)));
        }
    }
    let (mut exported, mut pixels_ok) = (false, true);
    for (name, platform) in displays {
        println!("== EGL display: {name}");
        let s = match egl.open(platform) {
            Ok(s) => s,
            Err(e) => {
                println!("  {e}");
                continue;
            }
        };
        for immutable in [true, false] {
            let kind = if immutable {
                "immutable glTexStorage2D"
            } else {
                "mutable glTexImage2D"
            };
            println!("  -- texture with {kind} storage");
            let tex = match egl.cleared_texture(WIDTH as i32, HEIGHT as i32, immutable, RGBA) {
                Ok(t) => t,
                Err(e) => {
                    println!("  {e}");
                    continue;
                }
            };
            match egl.export_texture(s.dpy, s.ctx, tex) {
                Ok(e) => {
                    exported = true;
                    println!(
                        "  exported: fd {:?}, fourcc {}, stride {}, offset {}, modifier {:#x}",
                        e.fd,
                        fourcc_name(e.fourcc),
                        e.stride,
                        e.offset,
                        e.modifier
                    );
                    let d = Dmabuf {
                        fd: e.fd.as_fd(),
                        width: WIDTH,
                        height: HEIGHT,
                        fourcc: e.fourcc,
                        stride: e.stride,
                        offset: e.offset,
                        modifier: e.modifier,
                    };
                    if check_mmap(&d, RGBA) == Some(false) {
                        pixels_ok = false;
                    }
                    match egl.import_and_read(s.dpy, &d) {
                        Ok(px) => {
                            pixels_ok &= compare(&format!("{name}, {kind}"), &px, RGBA, false)
                        }
                        Err(e) => {
                            println!("  import: {e}");
                            pixels_ok = false;
                        }
                    }
                }
                Err(e) => println!("  no export: {e}"),
            }
            egl.delete_texture(tex);
        }
    }
    Ok((exported, pixels_ok))
}

fn print_current(egl: &Egl, when: &str) -> Result<(Display, Context)> {
    let current = egl.current();
    println!("current EGL display and context ({when}): {current:?}");
    current.ok_or_else(|| format!("no EGL context is current {when}").into())
}

/// libvirglrenderer's export, then its steps by hand on its texture.
fn probe_virgl(egl: &Egl) -> Result<(bool, bool)> {
    std::env::set_var("EGL_PLATFORM", "surfaceless");
    let renderer = VirglRenderer::init(RendererFlags::surfaceless())?;
    println!(
        "libvirglrenderer {} (pkg-config at build time) initialised; software GL: {}",
        virglrenderer::LIBRARY_VERSION,
        renderer.is_software()
    );
    let (dpy, _) = print_current(egl, "after virgl_renderer_init")?;
    let exts = egl.string(Some(dpy), EGL_EXTENSIONS);
    println!(
        "  EGL vendor {}, version {}; EGL_MESA_image_dma_buf_export {}, EGL_EXT_image_dma_buf_import {}, EGL_KHR_gl_texture_2D_image {}",
        egl.string(Some(dpy), EGL_VENDOR),
        egl.string(Some(dpy), EGL_VERSION),
        has_ext(&exts, "EGL_MESA_image_dma_buf_export"),
        has_ext(&exts, "EGL_EXT_image_dma_buf_import"),
        has_ext(&exts, "EGL_KHR_gl_texture_2D_image")
    );
    println!(
        "  GL vendor {}, renderer {}, version {}",
        egl.gl_string(GL_VENDOR),
        egl.gl_string(GL_RENDERER),
        egl.gl_string(GL_VERSION)
    );

    let vctx = renderer.create_context(1, b"dmabuf-probe", None)?;
    let args = ResourceCreate3d {
        bind: BIND_RENDER_TARGET | BIND_SAMPLER_VIEW | BIND_SCANOUT,
        ..ResourceCreate3d::texture_2d(B8G8R8X8_UNORM, WIDTH, HEIGHT)
    };
    let target = renderer.create_resource(1, &args)?;
    vctx.attach(&target)?;
    let mut cmd = CommandBuffer::new();
    cmd.create_sub_ctx(1)
        .set_sub_ctx(1)
        .create_surface(1, target.id(), B8G8R8X8_UNORM, 0, 0, 0)
        .set_framebuffer_state(0, &[1])
        .clear(
            PIPE_CLEAR_COLOR0,
            RGBA.map(|b| f32::from(b) / 255.0),
            1.0,
            0,
        );
    vctx.submit(cmd.words())?;
    renderer.create_fence(1)?;
    let start = std::time::Instant::now();
    while renderer.poll().is_empty() {
        if start.elapsed().as_secs() > 10 {
            return Err("fence 1 did not signal within 10 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let info = target.info()?;
    println!("resource info: {info:?}");
    let (dpy, ctx) = print_current(egl, "after the submit and fence")?;

    let (mut exported, mut pixels_ok) = (false, true);
    match target.export_dmabuf() {
        Ok(d) => {
            exported = true;
            println!(
                "virgl export_dmabuf: fd {:?}, {}x{}, stride {}, offset {}, fourcc {:?}, modifier {:?}",
                d.fd, d.width, d.height, d.stride, d.offset, d.fourcc, d.modifier
            );
            let dm = Dmabuf {
                fd: d.fd.as_fd(),
                width: d.width,
                height: d.height,
                fourcc: d.fourcc.map(|f| f as u32).unwrap_or(0),
                stride: d.stride,
                offset: d.offset,
                modifier: d.modifier.unwrap_or(MOD_INVALID),
            };
            if check_mmap(&dm, RGBA) == Some(false) {
                pixels_ok = false;
            }
            // B8G8R8X8: alpha is undefined (X). Read back in the library's current context.
            match egl.import_and_read(dpy, &dm) {
                Ok(px) => pixels_ok &= compare("virgl fd", &px, RGBA, true),
                Err(e) => {
                    println!("  import: {e}");
                    pixels_ok = false;
                }
            }
        }
        Err(e) => println!("virgl export_dmabuf: {e}"),
    }
    println!("-- the library's steps by hand, on tex {}:", info.tex_id);
    println!(
        "  glIsTexture({}) in the current context: {}",
        info.tex_id,
        egl.is_texture(info.tex_id)
    );
    match egl.export_texture(dpy, ctx, info.tex_id) {
        Ok(e) => println!(
            "  (by hand) exported: fd {:?}, fourcc {}, stride {}, offset {}, modifier {:#x}",
            e.fd,
            fourcc_name(e.fourcc),
            e.stride,
            e.offset,
            e.modifier
        ),
        Err(e) => println!("  (by hand) no export: {e}"),
    }
    Ok((exported, pixels_ok))
}

fn main() -> Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "virgl".into());
    let egl = Egl::load()?;
    let (exported, pixels_ok) = match mode.as_str() {
        "egl" => probe_egl(&egl)?,
        "virgl" => probe_virgl(&egl)?,
        other => return Err(format!("unknown mode {other:?} (egl|virgl)").into()),
    };
    println!("EXPORT ({mode}): {}", if exported { "yes" } else { "no" });
    if !pixels_ok {
        return Err("pixels read through an exported dmabuf differ".into());
    }
    Ok(())
}
