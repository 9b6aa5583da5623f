//! Transfer arguments that the device has checked: the only form in which a guest's transfer
//! reaches a renderer. Each type's constructor is its check, so a renderer holding one knows,
//! without checking again, that
//!
//! * [`CheckedTransfer2d`]: the rectangle lies inside the resource and every byte it reads lies
//!   inside the attached backing (rows of `width * 4` bytes, the spec's 2D layout);
//! * [`CheckedTransfer3d`]: every box field and stride is below 2^31, the level is one of the
//!   resource's, the box lies within that level's size and depth or layers, the strides are
//!   zero or at least a row (a layer) of the box, and the bytes it covers lie inside the
//!   attached backing.
//!
//! The device builds them in its validation step (`gpu/validate.rs`) from the command and its
//! own state of the resource ([`ResourceShape`]); a failed check is the message of an
//! ERR_INVALID_PARAMETER.

use super::formats::BYTES_PER_PIXEL;
use super::{ResourceCreate3d, Transfer3d};
use crate::protocol::Rect;
use crate::virgl_format::{self, BlockLayout};

/// Largest value of a 3D transfer's box fields and strides: the libraries keep them in `int`s
/// (libvirglrenderer 0.10.4 takes a `z` of 2^31 or more as negative, and reads out of bounds).
pub const MAX_TRANSFER_FIELD: u32 = i32::MAX as u32;

/// Gallium texture targets whose layers are indexed by the box's y (1D arrays) or z (the rest).
const PIPE_BUFFER: u32 = 0;
const PIPE_TEXTURE_1D: u32 = 1;
const PIPE_TEXTURE_3D: u32 = 3;
const PIPE_TEXTURE_CUBE: u32 = 4;
const PIPE_TEXTURE_1D_ARRAY: u32 = 6;

/// What the device knows of a resource's shape, as far as transfers go.
#[derive(Clone, Copy, Debug)]
pub enum ResourceShape<'a> {
    /// RESOURCE_CREATE_2D: `width` x `height` pixels of 4 bytes, one level, one layer.
    Plain2d {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// RESOURCE_CREATE_3D, with its arguments.
    Texture(&'a ResourceCreate3d),
    /// A blob: its layout is the library's (3D transfers of host blobs); no 2D transfer.
    Blob,
}

/// A checked TRANSFER_TO_HOST_2D (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedTransfer2d {
    rect: Rect,
    offset: u64,
    stride: u32,
}

impl CheckedTransfer2d {
    /// Checks `rect` at backing `offset` against the resource and its backing length
    /// (`None`: no backing attached).
    pub fn check(
        rect: Rect,
        offset: u64,
        shape: ResourceShape<'_>,
        backing_len: Option<u64>,
    ) -> Result<Self, String> {
        let (width, height) = match shape {
            ResourceShape::Plain2d { width, height } => (width, height),
            ResourceShape::Texture(c) => (c.width, c.height),
            ResourceShape::Blob => return Err("TRANSFER_TO_HOST_2D of a blob".into()),
        };
        if !rect.is_inside(width, height) {
            return Err(format!("{rect:?} outside {width}x{height}"));
        }
        let stride = width
            .checked_mul(BYTES_PER_PIXEL)
            .ok_or_else(|| format!("rows of {width} pixels overflow"))?;
        let backing = backing_len.ok_or("no backing attached")?;
        if !rect.is_empty() {
            // Below 2^32 * 2^32 + 2^64: computed in u128, no overflow.
            let end = u128::from(offset)
                + u128::from(rect.height - 1) * u128::from(stride)
                + u128::from(rect.width) * u128::from(BYTES_PER_PIXEL);
            if end > u128::from(backing) {
                return Err(format!(
                    "transfer of {rect:?} at offset {offset} beyond the {backing}-byte backing"
                ));
            }
        }
        Ok(CheckedTransfer2d {
            rect,
            offset,
            stride,
        })
    }

    /// The rectangle, inside the resource.
    pub fn rect(&self) -> Rect {
        self.rect
    }

    /// Backing offset of the rectangle's first pixel.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes per row of the backing (and of the resource): its width times 4.
    pub fn stride(&self) -> u32 {
        self.stride
    }
}

/// A checked TRANSFER_TO_HOST_3D or TRANSFER_FROM_HOST_3D (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedTransfer3d(Transfer3d);

impl CheckedTransfer3d {
    /// Checks `t` against the resource and its backing length (`None`: no backing attached,
    /// left to the renderer, which refuses transfers that need one).
    pub fn check(
        t: &Transfer3d,
        shape: ResourceShape<'_>,
        backing_len: Option<u64>,
    ) -> Result<Self, String> {
        let b = t.box3d;
        let fields = [b.x, b.y, b.z, b.w, b.h, b.d, t.stride, t.layer_stride];
        if fields.iter().any(|&v| v > MAX_TRANSFER_FIELD) {
            return Err(format!(
                "3D transfer field of 2^31 or more: box {b:?}, strides {}/{}",
                t.stride, t.layer_stride
            ));
        }
        let inside =
            |start: u32, len: u32, limit: u32| start.checked_add(len).is_some_and(|e| e <= limit);
        let (width, height, layers, layout) = match shape {
            ResourceShape::Texture(c) => {
                if t.level > c.last_level {
                    return Err(format!(
                        "3D transfer of level {} of a resource with levels 0..={}",
                        t.level, c.last_level
                    ));
                }
                let level = |v: u32| v.checked_shr(t.level).unwrap_or(0).max(1);
                let width = level(c.width);
                let (w, h, l) = match c.target {
                    PIPE_BUFFER => (c.width, 1, 1),
                    PIPE_TEXTURE_1D => (width, 1, 1),
                    // A 1D array keeps its layers in y.
                    PIPE_TEXTURE_1D_ARRAY => (width, c.array_size.max(1), 1),
                    PIPE_TEXTURE_3D => (width, level(c.height), level(c.depth)),
                    PIPE_TEXTURE_CUBE => (width, level(c.height), c.array_size.max(6)),
                    // 2D, rectangle and the arrays: layers in z.
                    _ => (width, level(c.height), c.array_size.max(c.depth).max(1)),
                };
                let layout = match c.target {
                    // A buffer's width counts bytes, whatever its format says.
                    PIPE_BUFFER => BlockLayout::AT_LEAST_ONE_BYTE,
                    _ => virgl_format::block_layout(c.format)
                        .unwrap_or(BlockLayout::AT_LEAST_ONE_BYTE),
                };
                (w, h, l, layout)
            }
            // The library knows a blob's layout.
            ResourceShape::Blob => return Ok(CheckedTransfer3d(*t)),
            ResourceShape::Plain2d { width, height } => {
                if t.level != 0 {
                    return Err(format!("3D transfer of level {} of a 2D resource", t.level));
                }
                (width, height, 1, BlockLayout::texels_of(BYTES_PER_PIXEL))
            }
        };
        if !inside(b.x, b.w, width) || !inside(b.y, b.h, height) || !inside(b.z, b.d, layers) {
            return Err(format!(
                "3D transfer box {b:?} outside level {} ({width}x{height}, {layers} deep)",
                t.level
            ));
        }
        check_3d_backing(t, layout, width, height, backing_len)?;
        Ok(CheckedTransfer3d(*t))
    }

    /// The transfer's arguments, as the guest sent them.
    pub fn get(&self) -> &Transfer3d {
        &self.0
    }
}

/// The strides of a 3D transfer (zero, or at least what one row of blocks and one layer of the
/// box take) and the bytes it covers in the backing (offset plus size within it). Zero strides
/// are the level's: what libvirglrenderer uses in their place. The box is already known to lie
/// within the level, `width` x `height` texels, and every field is below 2^31.
fn check_3d_backing(
    t: &Transfer3d,
    layout: BlockLayout,
    width: u32,
    height: u32,
    backing_len: Option<u64>,
) -> Result<(), String> {
    let b = t.box3d;
    // In u128: a level's width and height are the guest's (up to 2^32 - 1, so a default stride
    // can pass 2^36 and a default layer 2^68); box fields and given strides are below 2^31 and a
    // block below 2^6 bytes. Every product and sum below stays under 2^110.
    let row = u128::from(layout.blocks_x(b.w)) * u128::from(layout.bytes);
    let rows = u128::from(layout.blocks_y(b.h));
    if t.stride != 0 && u128::from(t.stride) < row {
        return Err(format!(
            "3D transfer stride {} below the {row} bytes of a row of the box {b:?}",
            t.stride
        ));
    }
    let stride = match t.stride {
        0 => u128::from(layout.blocks_x(width)) * u128::from(layout.bytes),
        s => u128::from(s),
    };
    let layer = stride * rows;
    if t.layer_stride != 0 && u128::from(t.layer_stride) < layer {
        return Err(format!(
            "3D transfer layer stride {} below the {layer} bytes of a layer of the box {b:?}",
            t.layer_stride
        ));
    }
    if b.w == 0 || b.h == 0 || b.d == 0 {
        return Ok(()); // nothing is copied
    }
    let layer_stride = match t.layer_stride {
        0 => stride * u128::from(layout.blocks_y(height)),
        s => u128::from(s),
    };
    let size = u128::from(b.d - 1) * layer_stride + (rows - 1) * stride + row;
    let Some(backing) = backing_len else {
        return Ok(()); // the renderer refuses a transfer without backing
    };
    if u128::from(t.offset) + size <= u128::from(backing) {
        Ok(())
    } else {
        Err(format!(
            "3D transfer of {size} bytes at offset {} past the {backing}-byte backing",
            t.offset
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Box3d;

    fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    #[test]
    fn transfer_2d_stays_inside_resource_and_backing() {
        let shape = ResourceShape::Plain2d {
            width: 16,
            height: 8,
        };
        let whole = 16 * 8 * 4;
        let t = CheckedTransfer2d::check(rect(0, 0, 16, 8), 0, shape, Some(whole)).unwrap();
        assert_eq!((t.stride(), t.offset()), (64, 0));
        // The last pixel, ending exactly at the backing's end; one byte further is refused.
        let last = rect(15, 7, 1, 1);
        assert!(CheckedTransfer2d::check(last, whole - 4, shape, Some(whole)).is_ok());
        assert!(CheckedTransfer2d::check(last, whole - 3, shape, Some(whole)).is_err());
        for (r, off, len, why) in [
            (rect(0, 0, 17, 1), 0, Some(whole), "wider than the resource"),
            (
                rect(u32::MAX, 0, 2, 1),
                0,
                Some(whole),
                "x + width overflows",
            ),
            (
                rect(0, 0, 16, 8),
                4,
                Some(whole),
                "4 bytes past the backing",
            ),
            (rect(0, 0, 1, 1), u64::MAX, Some(whole), "offset 2^64 - 1"),
            (rect(0, 0, 1, 1), 0, None, "no backing"),
        ] {
            assert!(
                CheckedTransfer2d::check(r, off, shape, len).is_err(),
                "{why}"
            );
        }
        assert!(
            CheckedTransfer2d::check(rect(0, 0, 1, 1), 0, ResourceShape::Blob, Some(64)).is_err()
        );
        // An empty rectangle inside the resource reads nothing.
        assert!(CheckedTransfer2d::check(rect(16, 8, 0, 0), whole, shape, Some(whole)).is_ok());
    }

    fn t3(
        b: (u32, u32, u32, u32, u32, u32),
        level: u32,
        strides: (u32, u32),
        offset: u64,
    ) -> Transfer3d {
        Transfer3d {
            box3d: Box3d {
                x: b.0,
                y: b.1,
                z: b.2,
                w: b.3,
                h: b.4,
                d: b.5,
            },
            offset,
            level,
            stride: strides.0,
            layer_stride: strides.1,
        }
    }

    #[test]
    fn transfer_3d_strides_and_backing_use_the_format_blocks() {
        // DXT1 (4x4 blocks of 8 bytes), 64x64, 2D texture, levels 0..=1.
        let dxt1 = ResourceCreate3d {
            target: 2,
            format: 105,
            width: 64,
            height: 64,
            depth: 1,
            array_size: 1,
            last_level: 1,
            ..ResourceCreate3d::default()
        };
        let shape = ResourceShape::Texture(&dxt1);
        let level0 = 16 * 8 * 16; // 16 block rows of 16 blocks of 8 bytes
        let ok = |t: Transfer3d, len: u64| CheckedTransfer3d::check(&t, shape, Some(len));
        assert!(ok(t3((0, 0, 0, 64, 64, 1), 0, (0, 0), 0), level0).is_ok());
        assert!(
            ok(t3((0, 0, 0, 64, 64, 1), 0, (0, 0), 8), level0).is_err(),
            "8 bytes past"
        );
        assert!(
            ok(t3((0, 0, 0, 64, 4, 1), 0, (127, 0), 0), level0).is_err(),
            "stride < 128"
        );
        assert!(ok(t3((0, 0, 0, 64, 4, 1), 0, (128, 0), 0), level0).is_ok());
        // A partial block at the edge still takes a whole block.
        assert!(
            ok(t3((0, 0, 0, 5, 1, 1), 0, (15, 0), 0), level0).is_err(),
            "2 blocks = 16"
        );
        // Level 1 is 32x32: 8 block rows of 64 bytes.
        assert!(ok(t3((0, 0, 0, 32, 32, 1), 1, (0, 0), 0), 512).is_ok());
        assert!(
            ok(t3((0, 0, 0, 33, 32, 1), 1, (0, 0), 0), 4096).is_err(),
            "outside level 1"
        );
        assert!(
            ok(t3((0, 0, 0, 1, 1, 1), 2, (0, 0), 0), 4096).is_err(),
            "no level 2"
        );
        assert!(
            ok(t3((0, 0, 0x8000_0000, 1, 1, 1), 0, (0, 0), 0), 4096).is_err(),
            "z of 2^31"
        );
    }

    #[test]
    fn transfer_3d_sizes_of_huge_levels_do_not_overflow() {
        // A 3D texture of the largest dims a guest can name: zero strides are the level's, whose
        // layer passes 2^64 bytes; the transfer is refused as past the backing, not wrapped.
        let huge = ResourceCreate3d {
            target: PIPE_TEXTURE_3D,
            format: 31, // R32G32B32A32_FLOAT: 16 bytes
            width: u32::MAX,
            height: u32::MAX,
            depth: 4,
            array_size: 1,
            ..ResourceCreate3d::default()
        };
        let t = t3((0, 0, 0, 1, 1, 2), 0, (0, 0), 0);
        let err = CheckedTransfer3d::check(&t, ResourceShape::Texture(&huge), Some(u64::MAX))
            .unwrap_err();
        assert!(err.contains("past the"), "{err}");
        // One layer of one texel fits.
        let one = t3((0, 0, 0, 1, 1, 1), 0, (0, 0), 0);
        assert!(CheckedTransfer3d::check(&one, ResourceShape::Texture(&huge), Some(16)).is_ok());
    }

    #[test]
    fn transfer_3d_layers_and_buffers() {
        // A 3D texture of 16x8x4 B8G8R8X8: layer stride at least a layer of the box.
        let vol = ResourceCreate3d {
            target: PIPE_TEXTURE_3D,
            format: 2,
            width: 16,
            height: 8,
            depth: 4,
            array_size: 1,
            ..ResourceCreate3d::default()
        };
        let shape = ResourceShape::Texture(&vol);
        let len = 16 * 8 * 4 * 4;
        let check = |t: Transfer3d| CheckedTransfer3d::check(&t, shape, Some(len));
        assert!(check(t3((0, 0, 0, 16, 8, 4), 0, (64, 512), 0)).is_ok());
        assert!(check(t3((0, 0, 0, 16, 8, 2), 0, (64, 511), 0)).is_err());
        assert!(
            check(t3((0, 0, 3, 16, 8, 2), 0, (0, 0), 0)).is_err(),
            "z + d > depth"
        );
        // A buffer's width counts bytes whatever its format.
        let buf = ResourceCreate3d {
            target: PIPE_BUFFER,
            format: 31,
            width: 100,
            height: 1,
            depth: 1,
            array_size: 1,
            ..ResourceCreate3d::default()
        };
        let bshape = ResourceShape::Texture(&buf);
        assert!(CheckedTransfer3d::check(
            &t3((0, 0, 0, 100, 1, 1), 0, (0, 0), 0),
            bshape,
            Some(100)
        )
        .is_ok());
        assert!(CheckedTransfer3d::check(
            &t3((0, 0, 0, 100, 1, 1), 0, (0, 0), 1),
            bshape,
            Some(100)
        )
        .is_err());
        // Blobs are the library's; no backing attached is the renderer's to refuse.
        assert!(CheckedTransfer3d::check(
            &t3((5, 5, 5, 1, 1, 1), 0, (0, 0), 0),
            ResourceShape::Blob,
            None
        )
        .is_ok());
        assert!(check(t3((0, 0, 0, 1, 1, 1), 0, (0, 0), 0)).is_ok());
    }
}
