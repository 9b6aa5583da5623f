//! The few virgl command-stream words the 3D tests need (numbers from virglrenderer's
//! `virgl_protocol.h`, encoded here independently): sub-contexts, a surface on a texture, the
//! framebuffer state and a clear. Every command is a header word
//! `cmd | object_type << 8 | payload_words << 16` followed by its payload.

/// VIRGL_CCMD_CREATE_OBJECT.
pub const CCMD_CREATE_OBJECT: u32 = 1;
/// VIRGL_CCMD_SET_FRAMEBUFFER_STATE.
pub const CCMD_SET_FRAMEBUFFER_STATE: u32 = 5;
/// VIRGL_CCMD_CLEAR.
pub const CCMD_CLEAR: u32 = 7;
/// VIRGL_CCMD_SET_SUB_CTX.
pub const CCMD_SET_SUB_CTX: u32 = 28;
/// VIRGL_CCMD_CREATE_SUB_CTX.
pub const CCMD_CREATE_SUB_CTX: u32 = 29;
/// VIRGL_OBJECT_SURFACE.
pub const OBJECT_SURFACE: u32 = 8;
/// PIPE_CLEAR_COLOR0.
pub const CLEAR_COLOR0: u32 = 1 << 2;
/// PIPE_TEXTURE_2D.
pub const TEXTURE_2D: u32 = 2;
/// VIRGL_BIND_RENDER_TARGET.
pub const BIND_RENDER_TARGET: u32 = 1 << 1;
/// VIRGL_BIND_SAMPLER_VIEW.
pub const BIND_SAMPLER_VIEW: u32 = 1 << 3;
/// VIRGL_BIND_SCANOUT.
pub const BIND_SCANOUT: u32 = 1 << 18;

/// A B8G8R8X8 2D texture of `width` x `height` that can be rendered to, sampled and scanned out:
/// the render target the 3D tests clear and show.
pub fn scanout_target(width: u32, height: u32) -> crate::protocol::Resource3d {
    crate::protocol::Resource3d {
        target: TEXTURE_2D,
        format: crate::protocol::format::B8G8R8X8_UNORM,
        bind: BIND_RENDER_TARGET | BIND_SAMPLER_VIEW | BIND_SCANOUT,
        width,
        height,
        depth: 1,
        array_size: 1,
        ..Default::default()
    }
}

/// A virgl command stream under construction.
#[derive(Clone, Debug, Default)]
pub struct Stream(pub Vec<u32>);

impl Stream {
    fn push(&mut self, cmd: u32, obj: u32, payload: &[u32]) -> &mut Self {
        self.0
            .push(cmd | (obj << 8) | ((payload.len() as u32) << 16));
        self.0.extend_from_slice(payload);
        self
    }

    /// CREATE_SUB_CTX id.
    pub fn create_sub_ctx(&mut self, id: u32) -> &mut Self {
        self.push(CCMD_CREATE_SUB_CTX, 0, &[id])
    }

    /// SET_SUB_CTX id.
    pub fn set_sub_ctx(&mut self, id: u32) -> &mut Self {
        self.push(CCMD_SET_SUB_CTX, 0, &[id])
    }

    /// CREATE_OBJECT(SURFACE): `handle` on `resource` (level 0, layer 0) as `format`.
    pub fn create_surface(&mut self, handle: u32, resource: u32, format: u32) -> &mut Self {
        self.push(
            CCMD_CREATE_OBJECT,
            OBJECT_SURFACE,
            &[handle, resource, format, 0, 0],
        )
    }

    /// SET_FRAMEBUFFER_STATE with colour buffers and no depth buffer.
    pub fn set_framebuffer(&mut self, cbufs: &[u32]) -> &mut Self {
        let mut p = vec![cbufs.len() as u32, 0];
        p.extend_from_slice(cbufs);
        self.push(CCMD_SET_FRAMEBUFFER_STATE, 0, &p)
    }

    /// CLEAR colour buffer 0 to `rgba`.
    pub fn clear_color(&mut self, rgba: [f32; 4]) -> &mut Self {
        let d = 1.0f64.to_bits();
        self.push(
            CCMD_CLEAR,
            0,
            &[
                CLEAR_COLOR0,
                rgba[0].to_bits(),
                rgba[1].to_bits(),
                rgba[2].to_bits(),
                rgba[3].to_bits(),
                d as u32,
                (d >> 32) as u32,
                0,
            ],
        )
    }

    /// The stream as bytes (little endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// The stream that clears `resource` (attached to the context) to `rgba` on sub-context 1.
pub fn clear_stream(resource: u32, format: u32, rgba: [f32; 4]) -> Vec<u8> {
    let mut s = Stream::default();
    s.create_sub_ctx(1)
        .set_sub_ctx(1)
        .create_surface(1, resource, format)
        .set_framebuffer(&[1])
        .clear_color(rgba);
    s.to_bytes()
}
