//! Facts that the public headers do not carry: capset ids and sizes, the guest command opcodes
//! and their sizes, the virgl/gallium values resources are described with, renderer flags, and
//! this binding's bounds.

use std::ops::BitOr;

use crate::error::{Error, Result};

/// The largest capset this binding copies: 64 KiB, what virtio-gpu devices hand to a guest in
/// one response (gfxstream's largest capset, Vulkan's, is 104 bytes).
pub const MAX_CAPSET_SIZE: u32 = 64 * 1024;
/// The longest context debug name (virtio-gpu's `debug_name` is 64 bytes).
pub const MAX_CONTEXT_NAME: usize = 64;
/// The highest ring index of a context fence (virtio-gpu allows 64 rings per context).
pub const MAX_RING_IDX: u8 = 63;
/// The largest texture edge accepted: a guest could otherwise make the host GL allocate
/// arbitrarily large colour buffers. 16384 is what GL/GLES implementations commonly allow.
pub const MAX_DIMENSION: u32 = 16384;
/// The most regions a backing may have (QEMU caps `nr_entries` at the same value).
pub const MAX_BACKING_ENTRIES: usize = 16384;
/// The most bytes a backing may cover. The library allocates a host staging copy as large as
/// the backing, so this bounds what a guest can make the host allocate per resource.
pub const MAX_BACKING_BYTES: u64 = 1 << 30;
/// The largest blob accepted. Host-memory blobs are allocated by the library at once.
pub const MAX_BLOB_SIZE: u64 = 1 << 32;
/// The largest command buffer [`crate::Context::submit`] passes on (the library reads only
/// the first command, but is given the whole length).
pub const MAX_SUBMIT_BYTES: usize = 1 << 20;

/// The capsets gfxstream answers (virtio-gpu capset ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Capset {
    /// `VIRTGPU_CAPSET_GFXSTREAM_VULKAN` (3); 104 bytes.
    Vulkan = 3,
    /// `VIRTGPU_CAPSET_GFXSTREAM_GLES` (8); 16 bytes.
    Gles = 8,
    /// `VIRTGPU_CAPSET_GFXSTREAM_COMPOSER` (9); 16 bytes.
    Composer = 9,
}

impl Capset {
    /// Every capset gfxstream answers, in id order.
    pub const ALL: [Capset; 3] = [Capset::Vulkan, Capset::Gles, Capset::Composer];

    /// The virtio-gpu capset id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The capset with this virtio-gpu id, if gfxstream answers it.
    pub fn from_id(id: u32) -> Option<Capset> {
        Capset::ALL.into_iter().find(|c| c.id() == id)
    }
}

/// `enum RendererFlags` of the stable header, as a typed bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RendererFlags(u32);

impl RendererFlags {
    /// Reach the host GL through EGL (otherwise GLX, which needs an X display).
    pub const USE_EGL: RendererFlags = RendererFlags(1 << 0);
    /// Not read by the library.
    pub const THREAD_SYNC: RendererFlags = RendererFlags(1 << 1);
    /// Not read by the library.
    pub const USE_GLX: RendererFlags = RendererFlags(1 << 2);
    /// Not read by the library: a headless Mesa host needs `EGL_PLATFORM=surfaceless` instead.
    pub const USE_SURFACELESS: RendererFlags = RendererFlags(1 << 3);
    /// Offer GLES to the guest.
    pub const USE_GLES: RendererFlags = RendererFlags(1 << 4);
    /// Offer Vulkan to the guest (host Vulkan; lavapipe works).
    pub const USE_VK: RendererFlags = RendererFlags(1 << 5);
    /// Back blobs by shared memory that can be exported (host blobs can then not be mapped).
    pub const USE_EXTERNAL_BLOB: RendererFlags = RendererFlags(1 << 6);
    /// Needs [`Self::USE_EXTERNAL_BLOB`].
    pub const USE_SYSTEM_BLOB: RendererFlags = RendererFlags(1 << 7);
    /// Needs [`Self::USE_VK`].
    pub const VULKAN_NATIVE_SWAPCHAIN: RendererFlags = RendererFlags(1 << 8);
    /// Unstable; forced on in the Linux meson build anyway.
    pub const VULKAN_EXTERNAL_SYNC: RendererFlags = RendererFlags(1 << 31);

    const KNOWN: u32 = 0x1ff | (1 << 31);

    /// The empty set.
    pub const fn empty() -> RendererFlags {
        RendererFlags(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits; unknown bits are kept (and refused by [`Self::validate`]).
    pub const fn from_bits(bits: u32) -> RendererFlags {
        RendererFlags(bits)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: RendererFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Refuses the combinations the library refuses (it returns -EINVAL for them) and unknown
    /// bits.
    pub fn validate(self) -> Result<()> {
        let bad = |reason| {
            Err(Error::InvalidFlags {
                flags: self.0,
                reason,
            })
        };
        if self.0 & !Self::KNOWN != 0 {
            return bad("unknown bits");
        }
        if self.contains(Self::USE_SYSTEM_BLOB) && !self.contains(Self::USE_EXTERNAL_BLOB) {
            return bad("USE_SYSTEM_BLOB needs USE_EXTERNAL_BLOB");
        }
        if self.contains(Self::VULKAN_NATIVE_SWAPCHAIN) && !self.contains(Self::USE_VK) {
            return bad("VULKAN_NATIVE_SWAPCHAIN needs USE_VK");
        }
        if !self.contains(Self::USE_GLES) && !self.contains(Self::USE_VK) {
            return bad("neither USE_GLES nor USE_VK: the guest would get no API");
        }
        Ok(())
    }
}

impl BitOr for RendererFlags {
    type Output = RendererFlags;

    fn bitor(self, rhs: RendererFlags) -> RendererFlags {
        RendererFlags(self.0 | rhs.0)
    }
}

/// Guest→host command opcodes (the first little-endian u32 of a `SUBMIT_3D` buffer).
pub mod opcode {
    /// Create an address-space-graphics instance on a ring blob.
    pub const CONTEXT_CREATE: u32 = 0x1001;
    /// Wake the address-space-graphics instance.
    pub const CONTEXT_PING: u32 = 0x1002;
    /// Same, with a response.
    pub const CONTEXT_PING_WITH_RESPONSE: u32 = 0x1003;
    /// Wait for a GL sync on the context's ring 0.
    pub const CREATE_EXPORT_SYNC: u32 = 0x9000;
    /// Not handled by the library (refused).
    pub const CREATE_IMPORT_SYNC: u32 = 0x9001;
    /// Wait for a Vulkan fence on the context's ring 0.
    pub const CREATE_EXPORT_SYNC_VK: u32 = 0xa000;
    /// Same as `CREATE_EXPORT_SYNC_VK`.
    pub const CREATE_IMPORT_SYNC_VK: u32 = 0xa001;
    /// Wait for a Vulkan queue-signal-release-image on the context's ring 0.
    pub const CREATE_QSRI_EXPORT_VK: u32 = 0xa002;
    /// Describe a 3D resource for a later blob of the same blob id.
    pub const RESOURCE_CREATE_3D: u32 = 0xa003;
    /// Take a sync object for a later shareable fence.
    pub const ACQUIRE_SYNC: u32 = 0xa004;
    /// Does nothing.
    pub const PLACEHOLDER_COMMAND_VK: u32 = 0xf002;
}

/// The size of the command struct the library copies for `opcode` (it checks only that the
/// buffer has 4 bytes, then copies the whole struct), or `None` for an opcode it refuses.
pub fn command_size(op: u32) -> Option<usize> {
    Some(match op {
        opcode::CONTEXT_CREATE | opcode::CONTEXT_PING | opcode::CONTEXT_PING_WITH_RESPONSE => 8,
        opcode::CREATE_EXPORT_SYNC => 12,
        opcode::CREATE_EXPORT_SYNC_VK | opcode::CREATE_IMPORT_SYNC_VK => 20,
        opcode::CREATE_QSRI_EXPORT_VK => 12,
        // 11 u32s, then a u64 at offset 48.
        opcode::RESOURCE_CREATE_3D => 56,
        opcode::ACQUIRE_SYNC => 16,
        opcode::PLACEHOLDER_COMMAND_VK => 12,
        _ => return None,
    })
}

/// Checks a command buffer before it reaches the library: long enough for its opcode's struct,
/// not longer than [`MAX_SUBMIT_BYTES`], and an opcode the library handles.
pub fn validate_command(cmd: &[u8]) -> Result<u32> {
    let too_short = |opcode, min| Error::BadCommandLength {
        opcode,
        len: cmd.len(),
        min,
        max: MAX_SUBMIT_BYTES,
    };
    let op = match cmd.get(..4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => return Err(too_short(0, 4)),
    };
    let min = command_size(op).ok_or(Error::UnknownCommand(op))?;
    if cmd.len() < min || cmd.len() > MAX_SUBMIT_BYTES {
        return Err(too_short(op, min));
    }
    Ok(op)
}

/// Resource targets (gallium `enum pipe_texture_target`).
pub mod target {
    /// A buffer.
    pub const PIPE_BUFFER: u32 = 0;
    /// A 2D texture.
    pub const PIPE_TEXTURE_2D: u32 = 2;
}

/// Resource bind flags (virgl).
pub mod bind {
    /// Render target.
    pub const RENDER_TARGET: u32 = 1 << 1;
    /// Sampler view.
    pub const SAMPLER_VIEW: u32 = 1 << 3;
    /// Cursor.
    pub const CURSOR: u32 = 1 << 16;
    /// Custom: with `PIPE_BUFFER`, a gfxstream "pipe" resource.
    pub const CUSTOM: u32 = 1 << 17;
    /// Scanout.
    pub const SCANOUT: u32 = 1 << 18;
    /// Shared.
    pub const SHARED: u32 = 1 << 20;
    /// Linear: with `R8_UNORM`, a gfxstream buffer resource.
    pub const LINEAR: u32 = 1 << 22;
}

/// Resource formats (virgl), the ones a display path meets.
pub mod format {
    /// BGRA8888.
    pub const B8G8R8A8_UNORM: u32 = 1;
    /// BGRX8888.
    pub const B8G8R8X8_UNORM: u32 = 2;
    /// RGB565.
    pub const B5G6R5_UNORM: u32 = 7;
    /// R8 (with `bind::LINEAR`, a buffer).
    pub const R8_UNORM: u32 = 64;
    /// RGBA8888.
    pub const R8G8B8A8_UNORM: u32 = 67;
    /// RGBX8888.
    pub const R8G8B8X8_UNORM: u32 = 134;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capset_ids() {
        assert_eq!(Capset::from_id(3), Some(Capset::Vulkan));
        assert_eq!(Capset::from_id(8), Some(Capset::Gles));
        assert_eq!(Capset::from_id(9), Some(Capset::Composer));
        assert_eq!(Capset::from_id(1), None);
        assert_eq!(Capset::from_id(4), None);
    }

    #[test]
    fn flags_match_the_header() {
        use gfxstream_sys as sys;
        let pairs = [
            (
                RendererFlags::USE_EGL,
                sys::STREAM_RENDERER_FLAGS_USE_EGL_BIT,
            ),
            (
                RendererFlags::USE_GLES,
                sys::STREAM_RENDERER_FLAGS_USE_GLES_BIT,
            ),
            (RendererFlags::USE_VK, sys::STREAM_RENDERER_FLAGS_USE_VK_BIT),
            (
                RendererFlags::USE_EXTERNAL_BLOB,
                sys::STREAM_RENDERER_FLAGS_USE_EXTERNAL_BLOB,
            ),
            (
                RendererFlags::USE_SYSTEM_BLOB,
                sys::STREAM_RENDERER_FLAGS_USE_SYSTEM_BLOB,
            ),
            (
                RendererFlags::VULKAN_NATIVE_SWAPCHAIN,
                sys::STREAM_RENDERER_FLAGS_VULKAN_NATIVE_SWAPCHAIN_BIT,
            ),
            (
                RendererFlags::VULKAN_EXTERNAL_SYNC,
                sys::STREAM_RENDERER_FLAGS_VULKAN_EXTERNAL_SYNC,
            ),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours.bits(), theirs as u32);
        }
    }

    #[test]
    fn flag_validation() {
        let f = RendererFlags::USE_EGL | RendererFlags::USE_GLES;
        assert!(f.validate().is_ok());
        assert!((f | RendererFlags::USE_SYSTEM_BLOB).validate().is_err());
        assert!(
            (f | RendererFlags::USE_SYSTEM_BLOB | RendererFlags::USE_EXTERNAL_BLOB)
                .validate()
                .is_ok()
        );
        assert!((f | RendererFlags::VULKAN_NATIVE_SWAPCHAIN)
            .validate()
            .is_err());
        assert!(RendererFlags::from_bits(0x1000 | f.bits())
            .validate()
            .is_err());
        assert!(RendererFlags::USE_EGL.validate().is_err());
    }

    #[test]
    fn commands_are_length_checked() {
        assert!(matches!(
            validate_command(&[1, 0]),
            Err(Error::BadCommandLength { min: 4, .. })
        ));
        let mut create = 0x1001u32.to_le_bytes().to_vec();
        assert!(matches!(
            validate_command(&create),
            Err(Error::BadCommandLength { min: 8, .. })
        ));
        create.extend_from_slice(&5u32.to_le_bytes());
        assert_eq!(validate_command(&create).unwrap(), opcode::CONTEXT_CREATE);
        let mut create3d = 0xa003u32.to_le_bytes().to_vec();
        create3d.resize(55, 0);
        assert!(validate_command(&create3d).is_err());
        create3d.push(0);
        assert!(validate_command(&create3d).is_ok());
        assert!(matches!(
            validate_command(&0x9001u32.to_le_bytes()),
            Err(Error::UnknownCommand(0x9001))
        ));
        let mut huge = opcode::PLACEHOLDER_COMMAND_VK.to_le_bytes().to_vec();
        huge.resize(MAX_SUBMIT_BYTES + 1, 0);
        assert!(validate_command(&huge).is_err());
    }
}
