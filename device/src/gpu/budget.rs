//! The host memory budget (`--max-hostmem`): every host allocation a guest can make the device
//! (or a renderer library on its behalf) do goes through [`HostBudget::charge`] at its real
//! size before it is made, and is given back with [`HostBudget::release`] when the object goes.
//! A charge over the limit is refused with [`OverBudget`], which the device answers with
//! `VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY`.
//!
//! # What is charged ([`Use`])
//!
//! | use | size | charged at | released at |
//! |---|---|---|---|
//! | `Record` | [`RESOURCE_RECORD_BYTES`] per resource (also guest blobs) | CREATE_2D/3D/BLOB | UNREF, reset |
//! | `Storage` | 2D: `w * h * 4` (every virtio 2D format is 32-bit); 3D: [`storage_3d`] | CREATE_2D/3D | UNREF, reset |
//! | `Storage` | a virgl stream's `VIRGL_CCMD_PIPE_RESOURCE_CREATE`: [`storage_3d`] + [`RESOURCE_RECORD_BYTES`] (`gpu/virgl_stream.rs`) | SUBMIT_3D, before the stream runs; its HOST3D blob then keeps the larger of it and its pages | UNREF of that blob, CTX_DESTROY, reset |
//! | `HostBlob` | the blob's size rounded up to host pages | CREATE_BLOB (HOST3D, HOST3D_GUEST) | UNREF, reset |
//! | `Backing` | [`backing_metadata`]: entries x [`BACKING_ENTRY_BYTES`] + [`BACKING_RECORD_BYTES`] | ATTACH_BACKING, CREATE_BLOB with entries | DETACH_BACKING, UNREF, reset (a replaced backing at once) |
//! | `Staging` | the backing's length, where the renderer copies it ([`Renderer::attach_backing_copies`]: gfxstream) | ATTACH_BACKING | DETACH_BACKING, UNREF, reset |
//! | `FlushBuffer` | the read-back buffer's length | RESOURCE_FLUSH that grows it | when it is trimmed, reset |
//! | `HeldFence` | [`HELD_FENCE_BYTES`] per fenced entry held | a fenced command, before it runs | fence completion, CTX_DESTROY (its rings), reset |
//! | `Context` | [`CONTEXT_RECORD_BYTES`] per context | CTX_CREATE | CTX_DESTROY, reset |
//! | `Attachment` | [`CONTEXT_ATTACHMENT_BYTES`] per resource attached to a context | CTX_ATTACH_RESOURCE | CTX_DETACH_RESOURCE, UNREF, CTX_DESTROY, reset |
//!
//! # What cannot be charged
//!
//! Memory a renderer library allocates for itself beyond the objects above: the GL or Vulkan
//! driver's own state per context, shader and pipeline caches, command buffers, the textures
//! and buffers a virgl context creates inside its command stream, and every allocation Venus
//! makes in virglrenderer's render server (a separate process: its `VkDeviceMemory` is only
//! visible to the device when exported as a host blob). Those are bounded by the number of
//! contexts (`max_contexts`) and, for the rest, only by the process's cgroup or sandbox.
//! Transient buffers of one command (a decoded backing list, a SUBMIT_3D stream, a capset, the
//! cursor image) are bounded per command by `limits.rs` and freed before the next.
//!
//! [`RESOURCE_RECORD_BYTES`]: crate::limits::RESOURCE_RECORD_BYTES
//! [`BACKING_ENTRY_BYTES`]: crate::limits::BACKING_ENTRY_BYTES
//! [`BACKING_RECORD_BYTES`]: crate::limits::BACKING_RECORD_BYTES
//! [`HELD_FENCE_BYTES`]: crate::limits::HELD_FENCE_BYTES
//! [`CONTEXT_RECORD_BYTES`]: crate::limits::CONTEXT_RECORD_BYTES
//! [`CONTEXT_ATTACHMENT_BYTES`]: crate::limits::CONTEXT_ATTACHMENT_BYTES
//! [`Renderer::attach_backing_copies`]: crate::renderer::Renderer::attach_backing_copies

use crate::limits::{BACKING_ENTRY_BYTES, BACKING_RECORD_BYTES, UNKNOWN_FORMAT_BYTES_PER_TEXEL};
use crate::renderer::ResourceCreate3d;

/// What a charge pays for (see the module doc's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// The device's and the renderer's record of a resource.
    Record,
    /// A 2D or 3D resource's pixels.
    Storage,
    /// A host blob's memory.
    HostBlob,
    /// The host-side list of a backing's entries.
    Backing,
    /// A renderer library's copy of a backing.
    Staging,
    /// The scanout read-back buffer.
    FlushBuffer,
    /// A fenced entry held for its fence.
    HeldFence,
    /// The record of a context.
    Context,
    /// A resource attached to a context.
    Attachment,
}

impl Use {
    const ALL: [Use; 9] = [
        Use::Record,
        Use::Storage,
        Use::HostBlob,
        Use::Backing,
        Use::Staging,
        Use::FlushBuffer,
        Use::HeldFence,
        Use::Context,
        Use::Attachment,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// A charge over the budget: the device answers VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
#[error("host memory budget: {requested} bytes for {what:?} requested, {used} of {limit} in use")]
pub struct OverBudget {
    /// What the charge was for.
    pub what: Use,
    /// Bytes asked for (`u64::MAX` for a size that overflows).
    pub requested: u64,
    /// Bytes charged already.
    pub used: u64,
    /// The budget.
    pub limit: u64,
}

/// Bytes charged to the budget, until given back with [`HostBudget::release`]. Not `Clone`: a
/// charge is released once.
#[must_use = "a charge is kept with what it pays for and released with it"]
#[derive(Debug, PartialEq, Eq)]
pub struct Charge {
    what: Use,
    bytes: u64,
}

impl Charge {
    /// The bytes charged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The budget: a limit and what is charged against it, per [`Use`].
#[derive(Debug)]
pub struct HostBudget {
    limit: u64,
    used: u64,
    by_use: [u64; Use::ALL.len()],
}

impl HostBudget {
    /// A budget of `limit` bytes, nothing charged.
    pub fn new(limit: u64) -> Self {
        HostBudget {
            limit,
            used: 0,
            by_use: [0; Use::ALL.len()],
        }
    }

    /// Charges `bytes` for `what`, or refuses if the total would exceed the limit.
    pub fn charge(&mut self, what: Use, bytes: u64) -> Result<Charge, OverBudget> {
        match self.used.checked_add(bytes) {
            Some(total) if total <= self.limit => {
                self.used = total;
                self.by_use[what.index()] += bytes;
                Ok(Charge { what, bytes })
            }
            _ => Err(OverBudget {
                what,
                requested: bytes,
                used: self.used,
                limit: self.limit,
            }),
        }
    }

    /// Gives a charge back.
    pub fn release(&mut self, charge: Charge) {
        self.used = self.used.saturating_sub(charge.bytes);
        let u = &mut self.by_use[charge.what.index()];
        *u = u.saturating_sub(charge.bytes);
    }

    /// Gives back a charge that may not exist.
    pub fn release_opt(&mut self, charge: Option<Charge>) {
        if let Some(c) = charge {
            self.release(c);
        }
    }

    /// Bytes charged in all.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Bytes charged for `what`.
    #[cfg(test)]
    pub fn used_for(&self, what: Use) -> u64 {
        self.by_use[what.index()]
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Forgets every charge (device reset, after every holder released its own): returns the
    /// bytes that were still charged, which is 0 unless a holder leaked its charge.
    pub fn clear(&mut self) -> u64 {
        let left = self.used;
        self.used = 0;
        self.by_use = [0; Use::ALL.len()];
        left
    }
}

/// Host bytes of a backing of `entries` entries: the entry lists on the device's and the
/// library's side plus the backing's own record.
pub fn backing_metadata(entries: usize) -> u64 {
    (entries as u64)
        .saturating_mul(BACKING_ENTRY_BYTES)
        .saturating_add(BACKING_RECORD_BYTES)
}

/// Host bytes of a 2D resource of `width` x `height`: every virtio-gpu 2D format is 4 bytes a
/// pixel. `u64::MAX` (refused) if it overflows.
pub fn storage_2d(width: u32, height: u32) -> u64 {
    u64::from(width)
        .checked_mul(u64::from(height))
        .and_then(|v| v.checked_mul(4))
        .unwrap_or(u64::MAX)
}

/// How a gallium format lays out its texels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TexelSize {
    /// Bytes per texel.
    Plain(u64),
    /// A block-compressed format: at most 1 byte per texel once each level's width and height
    /// are rounded up to a multiple of 4 (a 16-byte block covers at least 4x4 texels; 8-byte
    /// blocks cover 4x4 too).
    Compressed,
}

/// The texel size of virgl/gallium format `format` (`enum virgl_formats`), where the device
/// knows it; [`UNKNOWN_FORMAT_BYTES_PER_TEXEL`] otherwise (more than any format but the
/// 64-bit-per-channel ones, which are listed).
fn texel_size(format: u32) -> TexelSize {
    use TexelSize::{Compressed, Plain};
    match format {
        // 8-bit: L8, A8, I8, S8, R8 (unorm, uscaled, snorm, sscaled), L8_SRGB, R8 uint/sint,
        // A8/I8/L8 uint/sint, R8_SRGB.
        9..=11 | 23 | 64 | 69 | 74 | 82 | 95 | 177 | 181 | 201..=203 | 205..=207 | 312 => Plain(1),
        // 16-bit: B5G5R5A1, B4G4R4A4, B5G6R5, L8A8, L16, Z16, R16 (4 kinds), R8G8 (4 kinds),
        // R16_FLOAT, L8A8_SRGB, B5G5R5X1, B4G4R4X4, R8G8 uint/sint, R16 uint/sint.
        5..=7
        | 12
        | 13
        | 16
        | 48
        | 52
        | 56
        | 60
        | 65
        | 70
        | 75
        | 83
        | 91
        | 96
        | 122
        | 135
        | 178
        | 182
        | 185
        | 189 => Plain(2),
        // 24-bit: R8G8B8 (unorm, uscaled, snorm, sscaled, srgb, uint, sint).
        66 | 71 | 76 | 84 | 97 | 179 | 183 => Plain(3),
        // 32-bit: the 8888 colour formats, R10G10B10A2, the depth/stencil formats of 32 bits,
        // R32 (all kinds), R16G16 (4 kinds), R16G16_FLOAT, R11G11B10_FLOAT, R9G9B9E5, the
        // sRGB 8888 formats, B10G10R10A2, R8G8B8A8 uint/sint, R16G16 uint/sint, R32 uint/sint.
        1..=4
        | 8
        | 17..=22
        | 28
        | 32
        | 36
        | 40
        | 44
        | 49
        | 53
        | 57
        | 61
        | 67
        | 68
        | 72
        | 77
        | 85
        | 87
        | 92
        | 98..=104
        | 121
        | 123..=125
        | 131
        | 134
        | 180
        | 184
        | 186
        | 190
        | 193
        | 197 => Plain(4),
        // 48-bit: R16G16B16 (4 kinds, float, uint, sint).
        50 | 54 | 58 | 62 | 93 | 187 | 191 => Plain(6),
        // 64-bit: R64_FLOAT, R32G32 (all kinds), R16G16B16A16 (all kinds), Z32_FLOAT_S8X24,
        // X32_S8X24, R16G16B16A16 uint/sint, R32G32 uint/sint.
        24 | 29 | 33 | 37 | 41 | 45 | 51 | 55 | 59 | 63 | 88 | 94 | 126 | 138 | 188 | 192 | 194
        | 198 => Plain(8),
        // 96-bit: R32G32B32 (all kinds).
        30 | 34 | 38 | 42 | 46 | 89 | 195 | 199 => Plain(12),
        // 128-bit: R32G32B32A32 (all kinds), R64G64_FLOAT.
        25 | 31 | 35 | 39 | 43 | 47 | 90 | 196 | 200 => Plain(16),
        26 => Plain(24), // R64G64B64_FLOAT
        27 => Plain(32), // R64G64B64A64_FLOAT
        // DXT/S3TC, RGTC, LATC, ETC1, BPTC, ETC2, ASTC.
        105..=116 | 143..=146 | 226 | 255..=258 | 269..=306 => Compressed,
        _ => Plain(UNKNOWN_FORMAT_BYTES_PER_TEXEL),
    }
}

/// Gallium texture targets the size depends on.
const PIPE_TEXTURE_3D: u32 = 3;
const PIPE_TEXTURE_CUBE: u32 = 4;

/// Host bytes of a RESOURCE_CREATE_3D resource: every mip level `0..=last_level` (each edge
/// halved per level, at least 1; a 3D texture's depth too), times the layers (`array_size`, at
/// least 6 for a cube; a non-3D target's `depth` counts as layers too) and the samples
/// (`nr_samples`, at least 1), at the format's texel size ([`texel_size`]). `u64::MAX`
/// (refused) if it overflows.
pub fn storage_3d(args: &ResourceCreate3d) -> u64 {
    storage_3d_checked(args).unwrap_or(u64::MAX)
}

fn storage_3d_checked(args: &ResourceCreate3d) -> Option<u64> {
    let texel = texel_size(args.format);
    let is_3d = args.target == PIPE_TEXTURE_3D;
    let mut layers = u64::from(args.array_size.max(1));
    if args.target == PIPE_TEXTURE_CUBE {
        layers = layers.max(6);
    }
    if !is_3d {
        layers = layers.checked_mul(u64::from(args.depth.max(1)))?;
    }
    let per_texel_layers = layers.checked_mul(u64::from(args.nr_samples.max(1)))?;
    let levels = u64::from(args.last_level) + 1;
    let level = |v: u32, l: u64| -> u64 {
        // Beyond 31 halvings every edge is 1.
        u64::from(v.checked_shr(l as u32).unwrap_or(0).max(1))
    };
    let level_texels = |l: u64| -> Option<u64> {
        let (mut w, mut h) = (level(args.width, l), level(args.height, l));
        if texel == TexelSize::Compressed {
            w = w.next_multiple_of(4);
            h = h.next_multiple_of(4);
        }
        let d = if is_3d { level(args.depth, l) } else { 1 };
        w.checked_mul(h)?.checked_mul(d)
    };
    let bytes_per_texel = match texel {
        TexelSize::Plain(b) => b,
        TexelSize::Compressed => 1,
    };
    // Levels past 32 are all 1x1x1 (4x4 compressed): counted together, not one by one.
    let walked = levels.min(33);
    let mut texels: u64 = 0;
    for l in 0..walked {
        texels = texels.checked_add(level_texels(l)?)?;
    }
    if levels > walked {
        texels = texels.checked_add((levels - walked).checked_mul(level_texels(32)?)?)?;
    }
    texels
        .checked_mul(per_texel_layers)?
        .checked_mul(bytes_per_texel)
}

/// Host bytes of a host blob of `size` bytes: what the renderer allocates, whole pages of
/// `page` bytes. `u64::MAX` (refused) if it overflows.
pub fn host_blob(size: u64, page: u64) -> u64 {
    size.checked_next_multiple_of(page.max(1))
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{BACKING_ENTRY_BYTES, HELD_FENCE_BYTES, RESOURCE_RECORD_BYTES};
    use crate::renderer::{BackingEntry, HostRange};

    #[test]
    fn charges_refuse_at_the_limit_and_release() {
        let mut b = HostBudget::new(100);
        let a = b.charge(Use::Storage, 60).unwrap();
        let c = b.charge(Use::Backing, 40).unwrap();
        assert_eq!(b.used(), 100);
        assert_eq!(
            b.charge(Use::HeldFence, 1),
            Err(OverBudget {
                what: Use::HeldFence,
                requested: 1,
                used: 100,
                limit: 100
            })
        );
        assert_eq!(
            b.charge(Use::Storage, u64::MAX).unwrap_err().requested,
            u64::MAX
        );
        assert_eq!(
            (b.used_for(Use::Storage), b.used_for(Use::Backing)),
            (60, 40)
        );
        b.release(a);
        assert_eq!((b.used(), b.used_for(Use::Storage)), (40, 0));
        let d = b.charge(Use::Staging, 60).unwrap();
        assert_eq!(b.used(), 100);
        b.release(c);
        b.release(d);
        assert_eq!(b.used(), 0);
        let e = b.charge(Use::Record, 5).unwrap();
        assert_eq!(e.bytes(), 5);
        assert_eq!(b.clear(), 5);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn sizes_3d_count_levels_layers_samples_and_the_format() {
        let base = ResourceCreate3d {
            target: 2,
            format: 1, // B8G8R8A8: 4 bytes
            width: 64,
            height: 32,
            depth: 1,
            array_size: 1,
            last_level: 0,
            nr_samples: 0,
            ..Default::default()
        };
        assert_eq!(storage_3d(&base), 64 * 32 * 4);
        // Mip levels: 64x32 + 32x16 + 16x8 + 8x4 + 4x2 + 2x1 + 1x1 + 1x1.
        let mips = ResourceCreate3d {
            last_level: 7,
            ..base
        };
        assert_eq!(
            storage_3d(&mips),
            (2048 + 512 + 128 + 32 + 8 + 2 + 1 + 1) * 4
        );
        // Layers and samples multiply.
        let arr = ResourceCreate3d {
            array_size: 3,
            nr_samples: 4,
            ..base
        };
        assert_eq!(storage_3d(&arr), 64 * 32 * 4 * 3 * 4);
        // A cube has 6 faces even when array_size says 1.
        let cube = ResourceCreate3d {
            target: PIPE_TEXTURE_CUBE,
            ..base
        };
        assert_eq!(storage_3d(&cube), 64 * 32 * 4 * 6);
        // A 3D texture's depth shrinks with its levels.
        let vol = ResourceCreate3d {
            target: PIPE_TEXTURE_3D,
            depth: 4,
            last_level: 1,
            ..base
        };
        assert_eq!(storage_3d(&vol), (64 * 32 * 4 + 32 * 16 * 2) * 4);
        // Formats: R32G32B32A32_FLOAT 16 bytes, R64G64B64A64 32, an unknown one 16, a
        // compressed one 1 byte a texel of 4x4-rounded edges.
        for (format, bpt) in [(31, 16), (27, 32), (9999, 16), (64, 1), (91, 2)] {
            assert_eq!(
                storage_3d(&ResourceCreate3d { format, ..base }),
                64 * 32 * bpt,
                "format {format}"
            );
        }
        let dxt = ResourceCreate3d {
            format: 108,
            width: 5,
            height: 1,
            ..base
        };
        assert_eq!(storage_3d(&dxt), 8 * 4);
        // A buffer: width bytes of R8.
        let buf = ResourceCreate3d {
            target: 0,
            format: 64,
            width: 1 << 20,
            height: 1,
            ..base
        };
        assert_eq!(storage_3d(&buf), 1 << 20);
        // Absurd values overflow into a refusal, and u32::MAX levels take no time.
        let absurd = ResourceCreate3d {
            width: u32::MAX,
            height: u32::MAX,
            array_size: u32::MAX,
            nr_samples: u32::MAX,
            ..base
        };
        assert_eq!(storage_3d(&absurd), u64::MAX);
        let levels = ResourceCreate3d {
            width: 1,
            height: 1,
            last_level: u32::MAX,
            ..base
        };
        assert_eq!(storage_3d(&levels), (u64::from(u32::MAX) + 1) * 4);
    }

    #[test]
    fn sizes_2d_blobs_and_backings() {
        assert_eq!(storage_2d(64, 64), 64 * 64 * 4);
        assert_eq!(storage_2d(u32::MAX, u32::MAX), u64::MAX);
        assert_eq!(host_blob(1, 4096), 4096);
        assert_eq!(host_blob(8192, 4096), 8192);
        assert_eq!(host_blob(u64::MAX, 4096), u64::MAX);
        assert_eq!(
            backing_metadata(16384),
            16384 * BACKING_ENTRY_BYTES + BACKING_RECORD_BYTES
        );
    }

    /// The per-object costs in `limits.rs` cover the structs they pay for.
    #[test]
    fn record_costs_cover_the_structs() {
        use std::mem::size_of;
        // GuestBacking: an entry and its start offset; the range list and a library iovec for
        // each of three host ranges.
        let per_entry = size_of::<BackingEntry>()
            + size_of::<u64>()
            + 3 * (size_of::<HostRange>() + size_of::<libc::iovec>());
        assert!(per_entry as u64 <= BACKING_ENTRY_BYTES, "{per_entry}");
        assert!(
            2 * (size_of::<super::super::resources::ResourceState>() + size_of::<u32>()) as u64
                <= RESOURCE_RECORD_BYTES
        );
        assert!(2 * size_of::<super::super::fences::HeldEntry>() as u64 <= HELD_FENCE_BYTES);
    }
}
