//! Memory layout of the virgl protocol's formats (gallium numbering, `VIRGL_FORMAT_*` of
//! virglrenderer's `virgl_hw.h`): how many bytes one block of texels takes and how many texels
//! wide and high a block is. The device uses it to check 3D transfers (strides, the bytes a box
//! covers) before they reach a renderer library.
//!
//! Formats whose layout is not a single plane of equal blocks (the planar YUV formats) and numbers
//! this table does not know have no layout: callers fall back to a lower bound (one byte per
//! texel), which can only make a check more lenient, never refuse a valid transfer.

/// One block of a format: `width` x `height` texels stored in `bytes` bytes (1x1 for every
/// uncompressed format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLayout {
    /// Texels per block, horizontally.
    pub width: u32,
    /// Texels per block, vertically.
    pub height: u32,
    /// Bytes per block.
    pub bytes: u32,
}

impl BlockLayout {
    /// The lower bound used for formats without a known layout: one byte per texel.
    pub const AT_LEAST_ONE_BYTE: BlockLayout = BlockLayout::texel(1);

    /// Uncompressed texels of `bytes` bytes each.
    pub const fn texels_of(bytes: u32) -> Self {
        Self::texel(bytes)
    }

    const fn texel(bytes: u32) -> Self {
        BlockLayout {
            width: 1,
            height: 1,
            bytes,
        }
    }

    const fn block(width: u32, height: u32, bytes: u32) -> Self {
        BlockLayout {
            width,
            height,
            bytes,
        }
    }

    /// Blocks needed for `texels` texels across (rounded up).
    pub fn blocks_x(&self, texels: u32) -> u32 {
        texels.div_ceil(self.width)
    }

    /// Blocks needed for `texels` texels down (rounded up).
    pub fn blocks_y(&self, texels: u32) -> u32 {
        texels.div_ceil(self.height)
    }
}

/// The layout of virgl format `format`, `None` where it is unknown or not one plane of blocks.
pub fn block_layout(format: u32) -> Option<BlockLayout> {
    // Groups of four formats with 1, 2, 3 and 4 components of the same size.
    let by_components = |first: u32, component_bytes: u32| (format - first + 1) * component_bytes;
    // Groups of four "A, I, L, LA" formats: LA has two components.
    let ailla = |first: u32, component_bytes: u32| {
        if format - first == 3 {
            2 * component_bytes
        } else {
            component_bytes
        }
    };
    let texel = BlockLayout::texel;
    let block = BlockLayout::block;
    Some(match format {
        1..=4 => texel(4),
        5..=7 => texel(2),
        8 => texel(4),
        9..=11 => texel(1),
        12 | 13 => texel(2),
        // UYVY, YUYV: two texels share four bytes.
        14 | 15 => block(2, 1, 4),
        16 => texel(2),
        17..=22 => texel(4),
        23 => texel(1),
        24..=27 => texel(by_components(24, 8)),
        28..=31 => texel(by_components(28, 4)),
        32..=47 => texel(((format - 32) % 4 + 1) * 4),
        48..=63 => texel(((format - 48) % 4 + 1) * 2),
        64..=67 => texel(by_components(64, 1)),
        68 => texel(4),
        69..=72 => texel(by_components(69, 1)),
        74..=77 => texel(by_components(74, 1)),
        82..=85 => texel(by_components(82, 1)),
        87..=90 => texel(by_components(87, 4)),
        91..=94 => texel(by_components(91, 2)),
        95 => texel(1),
        96 => texel(2),
        97 => texel(3),
        98..=104 => texel(4),
        // DXT1 (RGB, RGBA, sRGB, sRGBA): 8 bytes per 4x4 block; DXT3/5: 16.
        105 | 106 | 109 | 110 => block(4, 4, 8),
        107 | 108 | 111 | 112 => block(4, 4, 16),
        // RGTC1: 8 bytes per 4x4 block; RGTC2: 16.
        113 | 114 => block(4, 4, 8),
        115 | 116 => block(4, 4, 16),
        117 | 118 => block(2, 1, 4),
        119 => texel(4),
        120 => texel(2),
        121 => texel(4),
        122 => texel(2),
        123..=125 => texel(4),
        126 => texel(8),
        // R1_UNORM: eight texels per byte.
        127 => block(8, 1, 1),
        128 | 129 => texel(4),
        130 => texel(1),
        131 | 132 => texel(4),
        133 => texel(2),
        134 => texel(4),
        135 => texel(2),
        136 | 137 => texel(4),
        138 => texel(8),
        139 => texel(1),
        140 => texel(4),
        141 | 142 => texel(2),
        // LATC1: 8 bytes per 4x4 block; LATC2: 16.
        143 | 144 => block(4, 4, 8),
        145 | 146 => block(4, 4, 16),
        147 | 148 | 150 => texel(1),
        149 => texel(2),
        151 | 152 | 154 => texel(2),
        153 => texel(4),
        155 | 156 | 158 => texel(2),
        157 => texel(4),
        159 | 160 | 162 => texel(4),
        161 => texel(8),
        // 163..=167: planar YUV (YV12, YV16, IYUV, NV12, NV21): no single block layout.
        168 | 169 => texel(1),
        170 | 171 => texel(2),
        172..=176 => texel(4),
        177..=180 => texel(by_components(177, 1)),
        181..=184 => texel(by_components(181, 1)),
        185..=188 => texel(by_components(185, 2)),
        189..=192 => texel(by_components(189, 2)),
        193..=196 => texel(by_components(193, 4)),
        197..=200 => texel(by_components(197, 4)),
        201..=204 => texel(ailla(201, 1)),
        205..=208 => texel(ailla(205, 1)),
        209..=212 => texel(ailla(209, 2)),
        213..=216 => texel(ailla(213, 2)),
        217..=220 => texel(ailla(217, 4)),
        221..=224 => texel(ailla(221, 4)),
        225 => texel(4),
        // ETC1_RGB8: 8 bytes per 4x4 block.
        226 => block(4, 4, 8),
        227 | 228 => block(2, 1, 4),
        229..=233 => texel(4),
        234..=238 => texel(8),
        239..=241 => texel(16),
        242 => texel(2),
        243..=245 => texel(4),
        246 => texel(8),
        247 | 248 => texel(2),
        249 | 250 => texel(4),
        251 | 252 => texel(8),
        253 => texel(4),
        254 => texel(2),
        // BPTC: 16 bytes per 4x4 block.
        255..=258 => block(4, 4, 16),
        259..=261 => texel(2),
        262 => texel(4),
        263 | 264 => texel(2),
        265..=268 => texel(4),
        // ETC2: RGB8, sRGB8 and the 1-bit-alpha variants 8 bytes per 4x4 block, RGBA8 16,
        // R11 8, RG11 16.
        269..=272 => block(4, 4, 8),
        273 | 274 => block(4, 4, 16),
        275 | 276 => block(4, 4, 8),
        277 | 278 => block(4, 4, 16),
        // ASTC: 16 bytes per block, 14 block sizes, then the same 14 in sRGB.
        279..=306 => {
            const ASTC: [(u32, u32); 14] = [
                (4, 4),
                (5, 4),
                (5, 5),
                (6, 5),
                (6, 6),
                (8, 5),
                (8, 6),
                (8, 8),
                (10, 5),
                (10, 6),
                (10, 8),
                (10, 10),
                (12, 10),
                (12, 12),
            ];
            let (w, h) = ASTC[((format - 279) % 14) as usize];
            block(w, h, 16)
        }
        308 => texel(4),
        311 => texel(2),
        312 => texel(1),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_formats_have_their_sizes() {
        // B8G8R8A8, B5G6R5, R32G32B32A32_FLOAT, R16G16_FLOAT, R8_UNORM, Z24_UNORM_S8_UINT.
        for (format, bytes) in [(1, 4), (7, 2), (31, 16), (92, 4), (64, 1), (19, 4)] {
            assert_eq!(
                block_layout(format),
                Some(BlockLayout::texel(bytes)),
                "{format}"
            );
        }
        // R32G32B32_UINT and R16G16B16A16_SINT inside their groups of four.
        assert_eq!(block_layout(195).map(|l| l.bytes), Some(12));
        assert_eq!(block_layout(192).map(|l| l.bytes), Some(8));
        // L8A8_UINT and L16A16_SINT, the two-component members of the A/I/L/LA groups.
        assert_eq!(block_layout(204).map(|l| l.bytes), Some(2));
        assert_eq!(block_layout(216).map(|l| l.bytes), Some(4));
        assert_eq!(block_layout(213).map(|l| l.bytes), Some(2));
    }

    #[test]
    fn compressed_formats_are_blocks() {
        assert_eq!(block_layout(105), Some(BlockLayout::block(4, 4, 8))); // DXT1_RGB
        assert_eq!(block_layout(108), Some(BlockLayout::block(4, 4, 16))); // DXT5_RGBA
        assert_eq!(block_layout(279), Some(BlockLayout::block(4, 4, 16))); // ASTC_4x4
        assert_eq!(block_layout(292), Some(BlockLayout::block(12, 12, 16))); // ASTC_12x12
        assert_eq!(block_layout(306), Some(BlockLayout::block(12, 12, 16))); // ASTC_12x12_SRGB
        let dxt1 = BlockLayout::block(4, 4, 8);
        assert_eq!((dxt1.blocks_x(5), dxt1.blocks_y(4)), (2, 1));
    }

    #[test]
    fn unknown_and_planar_formats_have_no_layout() {
        for format in [0, 73, 86, 163, 166, 307, 313, u32::MAX] {
            assert_eq!(block_layout(format), None, "{format}");
        }
    }
}
