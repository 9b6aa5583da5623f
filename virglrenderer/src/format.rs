//! Formats, texture targets and bind flags of the virgl protocol (gallium numbering), and their
//! mapping to DRM fourcc codes.
//!
//! The virtio-gpu 2D formats (`VIRTIO_GPU_FORMAT_*`) use the same numbers as the virgl formats
//! listed here, so a guest's 2D format can be passed as a virgl format directly.

use drm_fourcc::DrmFourcc;

/// `VIRGL_FORMAT_B8G8R8A8_UNORM`: bytes B, G, R, A in memory (DRM `ARGB8888`).
pub const B8G8R8A8_UNORM: u32 = 1;
/// `VIRGL_FORMAT_B8G8R8X8_UNORM`: bytes B, G, R, X (DRM `XRGB8888`).
pub const B8G8R8X8_UNORM: u32 = 2;
/// `VIRGL_FORMAT_A8R8G8B8_UNORM`: bytes A, R, G, B (DRM `BGRA8888`).
pub const A8R8G8B8_UNORM: u32 = 3;
/// `VIRGL_FORMAT_X8R8G8B8_UNORM`: bytes X, R, G, B (DRM `BGRX8888`).
pub const X8R8G8B8_UNORM: u32 = 4;
/// `VIRGL_FORMAT_B5G6R5_UNORM` (DRM `RGB565`).
pub const B5G6R5_UNORM: u32 = 7;
/// `VIRGL_FORMAT_R8_UNORM` (DRM `R8`).
pub const R8_UNORM: u32 = 64;
/// `VIRGL_FORMAT_R8G8B8A8_UNORM`: bytes R, G, B, A (DRM `ABGR8888`).
pub const R8G8B8A8_UNORM: u32 = 67;
/// `VIRGL_FORMAT_X8B8G8R8_UNORM`: bytes X, B, G, R (DRM `RGBX8888`).
pub const X8B8G8R8_UNORM: u32 = 68;
/// `VIRGL_FORMAT_A8B8G8R8_UNORM`: bytes A, B, G, R (DRM `RGBA8888`).
pub const A8B8G8R8_UNORM: u32 = 121;
/// `VIRGL_FORMAT_R8G8B8X8_UNORM`: bytes R, G, B, X (DRM `XBGR8888`).
pub const R8G8B8X8_UNORM: u32 = 134;

/// `PIPE_BUFFER` texture target.
pub const PIPE_BUFFER: u32 = 0;
/// `PIPE_TEXTURE_1D` texture target.
pub const PIPE_TEXTURE_1D: u32 = 1;
/// `PIPE_TEXTURE_2D` texture target.
pub const PIPE_TEXTURE_2D: u32 = 2;
/// `PIPE_TEXTURE_3D` texture target.
pub const PIPE_TEXTURE_3D: u32 = 3;
/// `PIPE_TEXTURE_CUBE` texture target.
pub const PIPE_TEXTURE_CUBE: u32 = 4;
/// `PIPE_TEXTURE_RECT` texture target.
pub const PIPE_TEXTURE_RECT: u32 = 5;

/// `VIRGL_BIND_DEPTH_STENCIL`.
pub const BIND_DEPTH_STENCIL: u32 = 1 << 0;
/// `VIRGL_BIND_RENDER_TARGET`.
pub const BIND_RENDER_TARGET: u32 = 1 << 1;
/// `VIRGL_BIND_SAMPLER_VIEW`.
pub const BIND_SAMPLER_VIEW: u32 = 1 << 3;
/// `VIRGL_BIND_VERTEX_BUFFER`.
pub const BIND_VERTEX_BUFFER: u32 = 1 << 4;
/// `VIRGL_BIND_INDEX_BUFFER`.
pub const BIND_INDEX_BUFFER: u32 = 1 << 5;
/// `VIRGL_BIND_CONSTANT_BUFFER`.
pub const BIND_CONSTANT_BUFFER: u32 = 1 << 6;
/// `VIRGL_BIND_CURSOR`.
pub const BIND_CURSOR: u32 = 1 << 16;
/// `VIRGL_BIND_SCANOUT`.
pub const BIND_SCANOUT: u32 = 1 << 18;
/// `VIRGL_BIND_SHARED`.
pub const BIND_SHARED: u32 = 1 << 20;

/// `VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP`: row 0 is the top row (resource flags).
pub const RESOURCE_FLAG_Y_0_TOP: u32 = 1;

/// Bytes per pixel of the formats this crate can read back; `None` for the others.
pub fn bytes_per_pixel(format: u32) -> Option<u32> {
    match format {
        B8G8R8A8_UNORM | B8G8R8X8_UNORM | A8R8G8B8_UNORM | X8R8G8B8_UNORM | R8G8B8A8_UNORM
        | X8B8G8R8_UNORM | A8B8G8R8_UNORM | R8G8B8X8_UNORM => Some(4),
        B5G6R5_UNORM => Some(2),
        R8_UNORM => Some(1),
        _ => None,
    }
}

/// The DRM fourcc with the same memory layout as a virgl format, if there is one here.
pub fn drm_fourcc(format: u32) -> Option<DrmFourcc> {
    Some(match format {
        B8G8R8A8_UNORM => DrmFourcc::Argb8888,
        B8G8R8X8_UNORM => DrmFourcc::Xrgb8888,
        A8R8G8B8_UNORM => DrmFourcc::Bgra8888,
        X8R8G8B8_UNORM => DrmFourcc::Bgrx8888,
        R8G8B8A8_UNORM => DrmFourcc::Abgr8888,
        X8B8G8R8_UNORM => DrmFourcc::Rgbx8888,
        A8B8G8R8_UNORM => DrmFourcc::Rgba8888,
        R8G8B8X8_UNORM => DrmFourcc::Xbgr8888,
        B5G6R5_UNORM => DrmFourcc::Rgb565,
        R8_UNORM => DrmFourcc::R8,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_matches_byte_order() {
        // DRM XRGB8888 is little-endian [31:0] x:R:G:B, i.e. bytes B, G, R, X.
        assert_eq!(drm_fourcc(B8G8R8X8_UNORM), Some(DrmFourcc::Xrgb8888));
        assert_eq!(drm_fourcc(R8G8B8A8_UNORM), Some(DrmFourcc::Abgr8888));
        assert_eq!(drm_fourcc(9999), None);
        assert_eq!(bytes_per_pixel(B8G8R8A8_UNORM), Some(4));
        assert_eq!(bytes_per_pixel(9999), None);
    }
}
