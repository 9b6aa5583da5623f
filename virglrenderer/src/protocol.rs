//! A small encoder for the virgl command stream (what a guest's Mesa `virgl` driver sends in
//! `VIRTIO_GPU_CMD_SUBMIT_3D`), covering the few commands needed to clear a render target:
//! sub-context management, surface creation, framebuffer state and clear.
//!
//! The stream is a sequence of little-endian 32-bit words. Every command starts with a header
//! word `cmd | object_type << 8 | length << 16`, where `length` counts the payload words that
//! follow the header (at most [`MAX_COMMAND_PAYLOAD_WORDS`]). The numbers below are the ones of
//! virglrenderer's `virgl_protocol.h` (protocol facts).
//!
//! ```
//! use virglrenderer::protocol::{CommandBuffer, PIPE_CLEAR_COLOR0};
//! use virglrenderer::format::B8G8R8X8_UNORM;
//!
//! let mut cmd = CommandBuffer::new();
//! cmd.create_sub_ctx(1)
//!     .set_sub_ctx(1)
//!     .create_surface(1, 42, B8G8R8X8_UNORM, 0, 0, 0)
//!     .set_framebuffer_state(0, &[1])
//!     .clear(PIPE_CLEAR_COLOR0, [1.0, 0.0, 0.0, 1.0], 1.0, 0);
//! assert_eq!(cmd.words()[0], 29 | (1 << 16)); // CREATE_SUB_CTX, 1 payload word
//! ```

/// `VIRGL_CCMD_NOP`.
pub const VIRGL_CCMD_NOP: u32 = 0;
/// `VIRGL_CCMD_CREATE_OBJECT`.
pub const VIRGL_CCMD_CREATE_OBJECT: u32 = 1;
/// `VIRGL_CCMD_BIND_OBJECT`.
pub const VIRGL_CCMD_BIND_OBJECT: u32 = 2;
/// `VIRGL_CCMD_DESTROY_OBJECT`.
pub const VIRGL_CCMD_DESTROY_OBJECT: u32 = 3;
/// `VIRGL_CCMD_SET_FRAMEBUFFER_STATE`.
pub const VIRGL_CCMD_SET_FRAMEBUFFER_STATE: u32 = 5;
/// `VIRGL_CCMD_CLEAR`.
pub const VIRGL_CCMD_CLEAR: u32 = 7;
/// `VIRGL_CCMD_SET_SUB_CTX`.
pub const VIRGL_CCMD_SET_SUB_CTX: u32 = 28;
/// `VIRGL_CCMD_CREATE_SUB_CTX`.
pub const VIRGL_CCMD_CREATE_SUB_CTX: u32 = 29;
/// `VIRGL_CCMD_DESTROY_SUB_CTX`.
pub const VIRGL_CCMD_DESTROY_SUB_CTX: u32 = 30;

/// `VIRGL_CCMD_PIPE_RESOURCE_CREATE`: a context-local resource that a later
/// `RESOURCE_CREATE_BLOB(BLOB_MEM_HOST3D)` turns into a blob (by `blob_id`).
pub const VIRGL_CCMD_PIPE_RESOURCE_CREATE: u32 = 48;

/// `VIRGL_RESOURCE_FLAG_MAP_PERSISTENT`: the buffer can stay mapped (needed to map a blob).
pub const VIRGL_RESOURCE_FLAG_MAP_PERSISTENT: u32 = 1 << 1;
/// `VIRGL_RESOURCE_FLAG_MAP_COHERENT`: mapped writes are visible without flushes.
pub const VIRGL_RESOURCE_FLAG_MAP_COHERENT: u32 = 1 << 2;

/// `VIRGL_OBJECT_SURFACE` (object type of CREATE/DESTROY_OBJECT).
pub const VIRGL_OBJECT_SURFACE: u32 = 8;

/// `PIPE_CLEAR_DEPTH` (clear buffers bit).
pub const PIPE_CLEAR_DEPTH: u32 = 1 << 0;
/// `PIPE_CLEAR_STENCIL` (clear buffers bit).
pub const PIPE_CLEAR_STENCIL: u32 = 1 << 1;
/// `PIPE_CLEAR_COLOR0` (clear buffers bit); colour buffer `n` is `PIPE_CLEAR_COLOR0 << n`.
pub const PIPE_CLEAR_COLOR0: u32 = 1 << 2;

/// The length field of a command header is 16 bits wide.
pub const MAX_COMMAND_PAYLOAD_WORDS: usize = 0xffff;
/// The most colour buffers a framebuffer state may name (`PIPE_MAX_COLOR_BUFS`).
pub const MAX_COLOR_BUFFERS: usize = 8;

/// The header word of a command.
pub const fn command_header(cmd: u32, object_type: u32, payload_words: u16) -> u32 {
    (cmd & 0xff) | ((object_type & 0xff) << 8) | ((payload_words as u32) << 16)
}

/// A growing virgl command stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandBuffer {
    words: Vec<u32>,
}

impl CommandBuffer {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded words, ready for [`crate::Context::submit`].
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// Consumes the buffer and returns the words.
    pub fn into_words(self) -> Vec<u32> {
        self.words
    }

    /// The stream as little-endian bytes (what a guest puts in a SUBMIT_3D buffer).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn push(&mut self, cmd: u32, object_type: u32, payload: &[u32]) -> &mut Self {
        // The encoders below never pass more than MAX_COMMAND_PAYLOAD_WORDS words.
        let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
        self.words.push(command_header(cmd, object_type, len));
        self.words.extend_from_slice(payload);
        self
    }

    /// `VIRGL_CCMD_CREATE_SUB_CTX`: creates sub-context `id` (sub-context 0 exists from the start).
    pub fn create_sub_ctx(&mut self, id: u32) -> &mut Self {
        self.push(VIRGL_CCMD_CREATE_SUB_CTX, 0, &[id])
    }

    /// `VIRGL_CCMD_SET_SUB_CTX`: makes sub-context `id` current.
    pub fn set_sub_ctx(&mut self, id: u32) -> &mut Self {
        self.push(VIRGL_CCMD_SET_SUB_CTX, 0, &[id])
    }

    /// `VIRGL_CCMD_DESTROY_SUB_CTX`.
    pub fn destroy_sub_ctx(&mut self, id: u32) -> &mut Self {
        self.push(VIRGL_CCMD_DESTROY_SUB_CTX, 0, &[id])
    }

    /// `VIRGL_CCMD_CREATE_OBJECT(VIRGL_OBJECT_SURFACE)`: a surface object `handle` on texture
    /// resource `resource` (which must be attached to the context) at mip `level`, layers
    /// `first_layer..=last_layer`, viewed as virgl `format`.
    pub fn create_surface(
        &mut self,
        handle: u32,
        resource: u32,
        format: u32,
        level: u32,
        first_layer: u16,
        last_layer: u16,
    ) -> &mut Self {
        let layers = u32::from(first_layer) | (u32::from(last_layer) << 16);
        self.push(
            VIRGL_CCMD_CREATE_OBJECT,
            VIRGL_OBJECT_SURFACE,
            &[handle, resource, format, level, layers],
        )
    }

    /// `VIRGL_CCMD_DESTROY_OBJECT` of a surface object.
    pub fn destroy_surface(&mut self, handle: u32) -> &mut Self {
        self.push(VIRGL_CCMD_DESTROY_OBJECT, VIRGL_OBJECT_SURFACE, &[handle])
    }

    /// `VIRGL_CCMD_SET_FRAMEBUFFER_STATE`: binds colour surfaces (at most
    /// [`MAX_COLOR_BUFFERS`]; extra ones are ignored) and a depth/stencil surface
    /// (`0` for none).
    pub fn set_framebuffer_state(&mut self, zsurf_handle: u32, cbufs: &[u32]) -> &mut Self {
        let cbufs = &cbufs[..cbufs.len().min(MAX_COLOR_BUFFERS)];
        let mut payload = Vec::with_capacity(cbufs.len() + 2);
        // cbufs.len() <= MAX_COLOR_BUFFERS, so the cast cannot truncate.
        payload.push(cbufs.len() as u32);
        payload.push(zsurf_handle);
        payload.extend_from_slice(cbufs);
        self.push(VIRGL_CCMD_SET_FRAMEBUFFER_STATE, 0, &payload)
    }

    /// `VIRGL_CCMD_CLEAR`: clears the bound buffers selected by `buffers` (`PIPE_CLEAR_*`) to
    /// `rgba`, `depth` and `stencil`.
    pub fn clear(&mut self, buffers: u32, rgba: [f32; 4], depth: f64, stencil: u32) -> &mut Self {
        let depth = depth.to_bits();
        self.push(
            VIRGL_CCMD_CLEAR,
            0,
            &[
                buffers,
                rgba[0].to_bits(),
                rgba[1].to_bits(),
                rgba[2].to_bits(),
                rgba[3].to_bits(),
                (depth & 0xffff_ffff) as u32,
                (depth >> 32) as u32,
                stencil,
            ],
        )
    }

    /// `VIRGL_CCMD_PIPE_RESOURCE_CREATE`: allocates a resource described by `args` in the
    /// context under `blob_id`, for a following host3d blob creation.
    pub fn pipe_resource_create(
        &mut self,
        args: &crate::ResourceCreate3d,
        blob_id: u32,
    ) -> &mut Self {
        self.push(
            VIRGL_CCMD_PIPE_RESOURCE_CREATE,
            0,
            &[
                args.target,
                args.format,
                args.bind,
                args.width,
                args.height,
                args.depth,
                args.array_size,
                args.last_level,
                args.nr_samples,
                args.flags,
                blob_id,
            ],
        )
    }

    /// Appends raw words (another encoder's output).
    pub fn extend_raw(&mut self, words: &[u32]) -> &mut Self {
        self.words.extend_from_slice(words);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_words() {
        let mut c = CommandBuffer::new();
        c.create_surface(5, 7, 2, 0, 0, 0)
            .set_framebuffer_state(0, &[5])
            .clear(PIPE_CLEAR_COLOR0, [1.0, 0.0, 0.0, 0.5], 1.0, 3);
        let w = c.words();
        assert_eq!(w[0], 1 | (8 << 8) | (5 << 16));
        assert_eq!(&w[1..6], &[5, 7, 2, 0, 0]);
        assert_eq!(w[6], 5 | (3 << 16));
        assert_eq!(&w[7..10], &[1, 0, 5]);
        assert_eq!(w[10], 7 | (8 << 16));
        assert_eq!(w[11], PIPE_CLEAR_COLOR0);
        assert_eq!(w[12], 1.0f32.to_bits());
        assert_eq!(w[15], 0.5f32.to_bits());
        assert_eq!(
            u64::from(w[16]) | (u64::from(w[17]) << 32),
            1.0f64.to_bits()
        );
        assert_eq!(w[18], 3);
        assert_eq!(w.len(), 19);
        assert_eq!(c.to_bytes().len(), 19 * 4);
    }
}
