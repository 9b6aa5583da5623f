//! Headless rendering with libvirglrenderer: initializes surfaceless EGL, creates a render
//! target, submits a real virgl command stream (sub-context, surface, framebuffer state, clear),
//! reads the pixels back and prints them; `--ppm FILE` also writes the image.
//!
//! Run: `cargo run -p virglrenderer --example clear -- [--ppm out.ppm]`

use std::io::Write;

use virglrenderer::format::B8G8R8X8_UNORM;
use virglrenderer::protocol::{CommandBuffer, PIPE_CLEAR_COLOR0};
use virglrenderer::{Rect, RendererFlags, ResourceCreate3d, VirglRenderer};

const WIDTH: u32 = 64;
const HEIGHT: u32 = 48;
/// Red, green, blue, alpha of the clear colour (multiples of 1/255 so the bytes are exact).
const COLOUR: [f32; 4] = [51.0 / 255.0, 102.0 / 255.0, 204.0 / 255.0, 1.0];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let ppm = std::env::args().skip_while(|a| a != "--ppm").nth(1);

    let renderer = VirglRenderer::init(RendererFlags::surfaceless())?;
    println!(
        "libvirglrenderer {} initialized (software GL: {})",
        virglrenderer::LIBRARY_VERSION,
        renderer.is_software()
    );
    for c in renderer.capsets() {
        println!(
            "capset {}: version {}, {} bytes",
            c.capset_id, c.max_version, c.max_size
        );
    }

    let ctx = renderer.create_context(1, b"clear-example", None)?;
    let target = renderer.create_resource(
        1,
        &ResourceCreate3d::texture_2d(B8G8R8X8_UNORM, WIDTH, HEIGHT),
    )?;
    ctx.attach(&target)?;

    let surface = 1;
    let mut cmd = CommandBuffer::new();
    cmd.create_sub_ctx(1)
        .set_sub_ctx(1)
        .create_surface(surface, target.id(), B8G8R8X8_UNORM, 0, 0, 0)
        .set_framebuffer_state(0, &[surface])
        .clear(PIPE_CLEAR_COLOR0, COLOUR, 1.0, 0);
    println!(
        "submitting {} words: {:08x?}",
        cmd.words().len(),
        cmd.words()
    );
    ctx.submit(cmd.words())?;

    renderer.create_fence(1)?;
    let fences = loop {
        let f = renderer.poll();
        if !f.is_empty() {
            break f;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    println!("fences: {fences:?}");

    let stride = WIDTH * 4;
    let mut pixels = vec![0u8; (stride * HEIGHT) as usize];
    target.read_pixels(
        Rect {
            x: 0,
            y: 0,
            width: WIDTH,
            height: HEIGHT,
        },
        &mut pixels,
        stride,
    )?;
    println!("pixel (0,0) B,G,R,X = {:?}", &pixels[..4]);
    let last = pixels.len() - 4;
    println!(
        "pixel ({},{}) B,G,R,X = {:?}",
        WIDTH - 1,
        HEIGHT - 1,
        &pixels[last..]
    );
    match target.export_dmabuf() {
        Ok(d) => println!("dmabuf export: {d:?}"),
        Err(e) => println!("dmabuf export: {e}"),
    }

    if let Some(path) = ppm {
        let mut f = std::fs::File::create(&path)?;
        write!(f, "P6\n{WIDTH} {HEIGHT}\n255\n")?;
        let rgb: Vec<u8> = pixels
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        f.write_all(&rgb)?;
        println!("wrote {path}");
    }
    Ok(())
}
