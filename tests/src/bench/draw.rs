//! The virgl command-stream words of a minimal draw: blend, depth-stencil-alpha and rasterizer
//! state, a TGSI vertex and fragment shader, vertex elements, viewport, vertex buffer and
//! DRAW_VBO. Numbers and layouts are those of virglrenderer's `virgl_protocol.h` (protocol
//! facts), encoded here on top of [`crate::virgl::Stream`]. The shaders pass a per-vertex colour
//! through, so a read-back shows whether the triangle was drawn.

use crate::virgl::Stream;

/// VIRGL_CCMD_BIND_OBJECT.
pub const CCMD_BIND_OBJECT: u32 = 2;
/// VIRGL_CCMD_SET_VIEWPORT_STATE.
pub const CCMD_SET_VIEWPORT_STATE: u32 = 4;
/// VIRGL_CCMD_SET_VERTEX_BUFFERS.
pub const CCMD_SET_VERTEX_BUFFERS: u32 = 6;
/// VIRGL_CCMD_DRAW_VBO.
pub const CCMD_DRAW_VBO: u32 = 8;
/// VIRGL_CCMD_BIND_SHADER.
pub const CCMD_BIND_SHADER: u32 = 31;
/// VIRGL_OBJECT_BLEND.
pub const OBJECT_BLEND: u32 = 1;
/// VIRGL_OBJECT_RASTERIZER.
pub const OBJECT_RASTERIZER: u32 = 2;
/// VIRGL_OBJECT_DSA.
pub const OBJECT_DSA: u32 = 3;
/// VIRGL_OBJECT_SHADER.
pub const OBJECT_SHADER: u32 = 4;
/// VIRGL_OBJECT_VERTEX_ELEMENTS.
pub const OBJECT_VERTEX_ELEMENTS: u32 = 5;
/// PIPE_SHADER_VERTEX.
pub const SHADER_VERTEX: u32 = 0;
/// PIPE_SHADER_FRAGMENT.
pub const SHADER_FRAGMENT: u32 = 1;
/// PIPE_PRIM_TRIANGLES.
pub const PRIM_TRIANGLES: u32 = 4;
/// VIRGL_FORMAT_R32G32B32A32_FLOAT.
pub const FORMAT_R32G32B32A32_FLOAT: u32 = 31;
/// VIRGL_FORMAT_R8_UNORM (the format of a PIPE_BUFFER resource).
pub const FORMAT_R8_UNORM: u32 = 64;
/// PIPE_BUFFER.
pub const TARGET_BUFFER: u32 = 0;
/// VIRGL_BIND_VERTEX_BUFFER.
pub const BIND_VERTEX_BUFFER: u32 = 1 << 4;
/// Token count the host allocates for a text shader (generous for these few lines).
pub const SHADER_TOKENS: u32 = 300;

/// Position (clip space) and colour (RGBA) of one vertex.
pub type Vertex = ([f32; 4], [f32; 4]);

/// Bytes per [`Vertex`] in the vertex buffer.
pub const VERTEX_STRIDE: u32 = 32;

/// The vertex shader: position and colour through.
pub const VS: &str = "VERT\nDCL IN[0]\nDCL IN[1]\nDCL OUT[0], POSITION\nDCL OUT[1], GENERIC[0]\n  0: MOV OUT[0], IN[0]\n  1: MOV OUT[1], IN[1]\n  2: END\n";
/// The fragment shader: the interpolated colour.
pub const FS: &str = "FRAG\nPROPERTY FS_COLOR0_WRITES_ALL_CBUFS 1\nDCL IN[0], GENERIC[0], LINEAR\nDCL OUT[0], COLOR\n  0: MOV OUT[0], IN[0]\n  1: END\n";

fn cmd(s: &mut Stream, c: u32, obj: u32, payload: &[u32]) {
    s.0.push(c | (obj << 8) | ((payload.len() as u32) << 16));
    s.0.extend_from_slice(payload);
}

/// CREATE_OBJECT(BLEND): no blending, all colour channels written.
pub fn create_blend(s: &mut Stream, handle: u32) {
    let mut p = vec![handle, 0, 0, 0xf << 27];
    p.resize(11, 0);
    cmd(s, crate::virgl::CCMD_CREATE_OBJECT, OBJECT_BLEND, &p);
}

/// CREATE_OBJECT(DSA): no depth, stencil or alpha test.
pub fn create_dsa(s: &mut Stream, handle: u32) {
    cmd(
        s,
        crate::virgl::CCMD_CREATE_OBJECT,
        OBJECT_DSA,
        &[handle, 0, 0, 0, 0],
    );
}

/// CREATE_OBJECT(RASTERIZER): filled, no culling, depth clip, half-pixel centres.
pub fn create_rasterizer(s: &mut Stream, handle: u32) {
    let s0 = (1 << 1) | (1 << 29);
    let one = 1.0f32.to_bits();
    cmd(
        s,
        crate::virgl::CCMD_CREATE_OBJECT,
        OBJECT_RASTERIZER,
        &[handle, s0, one, 0, 0, one, 0, 0, 0],
    );
}

/// CREATE_OBJECT(SHADER) from TGSI text (NUL-terminated, padded to words).
pub fn create_shader(s: &mut Stream, handle: u32, ty: u32, text: &str) {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    let len = bytes.len() as u32;
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    let mut p = vec![handle, ty, len & 0x7fff_ffff, SHADER_TOKENS, 0];
    p.extend(
        bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])),
    );
    cmd(s, crate::virgl::CCMD_CREATE_OBJECT, OBJECT_SHADER, &p);
}

/// CREATE_OBJECT(VERTEX_ELEMENTS): position at 0 and colour at 16, both float4, buffer 0.
pub fn create_vertex_elements(s: &mut Stream, handle: u32) {
    cmd(
        s,
        crate::virgl::CCMD_CREATE_OBJECT,
        OBJECT_VERTEX_ELEMENTS,
        &[
            handle,
            0,
            0,
            0,
            FORMAT_R32G32B32A32_FLOAT,
            16,
            0,
            0,
            FORMAT_R32G32B32A32_FLOAT,
        ],
    );
}

/// BIND_OBJECT.
pub fn bind_object(s: &mut Stream, obj: u32, handle: u32) {
    cmd(s, CCMD_BIND_OBJECT, obj, &[handle]);
}

/// BIND_SHADER.
pub fn bind_shader(s: &mut Stream, handle: u32, ty: u32) {
    cmd(s, CCMD_BIND_SHADER, 0, &[handle, ty]);
}

/// SET_VIEWPORT_STATE for one `width` x `height` viewport, depth 0..1.
pub fn set_viewport(s: &mut Stream, width: u32, height: u32) {
    let (hw, hh) = (width as f32 / 2.0, height as f32 / 2.0);
    cmd(
        s,
        CCMD_SET_VIEWPORT_STATE,
        0,
        &[
            0,
            hw.to_bits(),
            hh.to_bits(),
            0.5f32.to_bits(),
            hw.to_bits(),
            hh.to_bits(),
            0.5f32.to_bits(),
        ],
    );
}

/// SET_VERTEX_BUFFERS: buffer 0 is `resource` with [`VERTEX_STRIDE`].
pub fn set_vertex_buffer(s: &mut Stream, resource: u32) {
    cmd(s, CCMD_SET_VERTEX_BUFFERS, 0, &[VERTEX_STRIDE, 0, resource]);
}

/// DRAW_VBO of `count` vertices as triangles.
pub fn draw_triangles(s: &mut Stream, count: u32) {
    cmd(
        s,
        CCMD_DRAW_VBO,
        0,
        &[
            0,
            count,
            PRIM_TRIANGLES,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            count.saturating_sub(1),
            0,
        ],
    );
}

/// The vertex buffer bytes.
pub fn vertex_bytes(v: &[Vertex]) -> Vec<u8> {
    v.iter()
        .flat_map(|(p, c)| p.iter().chain(c.iter()).flat_map(|f| f.to_le_bytes()))
        .collect()
}

/// All pipeline state for drawing into the bound framebuffer of a `width` x `height` target
/// from vertex buffer `vbo`; object handles start at `first` (seven are used).
pub fn pipeline(s: &mut Stream, first: u32, width: u32, height: u32, vbo: u32) {
    let [blend, dsa, rs, vs, fs, ve] =
        [first, first + 1, first + 2, first + 3, first + 4, first + 5];
    create_blend(s, blend);
    bind_object(s, OBJECT_BLEND, blend);
    create_dsa(s, dsa);
    bind_object(s, OBJECT_DSA, dsa);
    create_rasterizer(s, rs);
    bind_object(s, OBJECT_RASTERIZER, rs);
    create_shader(s, vs, SHADER_VERTEX, VS);
    bind_shader(s, vs, SHADER_VERTEX);
    create_shader(s, fs, SHADER_FRAGMENT, FS);
    bind_shader(s, fs, SHADER_FRAGMENT);
    create_vertex_elements(s, ve);
    bind_object(s, OBJECT_VERTEX_ELEMENTS, ve);
    set_viewport(s, width, height);
    set_vertex_buffer(s, vbo);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let mut s = Stream::default();
        create_shader(&mut s, 5, SHADER_VERTEX, "VERT\n");
        // header: CREATE_OBJECT | SHADER << 8 | (5 + 2 words) << 16; text "VERT\n\0" = 6 bytes.
        assert_eq!(s.0[0], 1 | (4 << 8) | (7 << 16));
        assert_eq!(&s.0[1..6], &[5, 0, 6, SHADER_TOKENS, 0]);
        let mut d = Stream::default();
        draw_triangles(&mut d, 3);
        assert_eq!(d.0[0], 8 | (12 << 16));
        assert_eq!(d.0.len(), 13);
        let mut b = Stream::default();
        create_blend(&mut b, 2);
        assert_eq!(b.0.len(), 12);
        assert_eq!(
            vertex_bytes(&[([0.0; 4], [1.0; 4])]).len(),
            VERTEX_STRIDE as usize
        );
    }
}
