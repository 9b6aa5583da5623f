//! EDID: GET_EDID answers with the display's EDID, or with one made by [`generate_edid`] for the
//! scanout's mode.

use log::warn;

use super::{GpuResult, VirtioGpu};
use crate::display::Display;
use crate::protocol::{Response, EDID_BLOB_SIZE};

impl VirtioGpu {
    /// GET_EDID: the display's EDID, else one generated for the scanout's mode.
    pub(super) fn get_edid(
        &mut self,
        scanout_id: u32,
        display: &mut dyn Display,
    ) -> GpuResult<Response> {
        let idx = self.check_scanout(scanout_id)?;
        if let Some(blob) = display.edid(scanout_id).filter(|b| !b.is_empty()) {
            if blob.len() > EDID_BLOB_SIZE {
                warn!(
                    "display EDID of {} bytes truncated to {EDID_BLOB_SIZE}",
                    blob.len()
                );
            }
            return Ok(Response::OkEdid(blob));
        }
        let (w, h) = match self.modes.get(idx) {
            Some(m) if m.width > 0 && m.height > 0 => (m.width, m.height),
            _ => (self.config.default_width, self.config.default_height),
        };
        Ok(Response::OkEdid(generate_edid(w, h).to_vec()))
    }
}

/// A valid 128-byte EDID 1.4 base block for a `width` x `height` 60 Hz mode: one detailed
/// timing (reduced blanking), range limits, a monitor name, the checksum. Sizes beyond what a
/// detailed timing can say (4095) are clamped.
pub fn generate_edid(width: u32, height: u32) -> [u8; 128] {
    let w = width.clamp(1, 4095);
    let h = height.clamp(1, 4095);
    let mut e = [0u8; 128];
    e[0..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "VUG" (5-bit letters, big endian), product 0x1234, serial 1.
    let id: u16 =
        ((u16::from(b'V' - b'@')) << 10) | ((u16::from(b'U' - b'@')) << 5) | u16::from(b'G' - b'@');
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&0x1234u16.to_le_bytes());
    e[12..16].copy_from_slice(&1u32.to_le_bytes());
    e[16] = 1; // week
    e[17] = 34; // year of manufacture: 2024 - 1990
    e[18] = 1; // EDID version 1
    e[19] = 4; // revision 4
    e[20] = 0xa5; // digital, 8 bits per colour, DisplayPort
                  // Image size in cm at ~96 dpi.
    e[21] = (w * 254 / 96 / 100).clamp(1, 255) as u8;
    e[22] = (h * 254 / 96 / 100).clamp(1, 255) as u8;
    e[23] = 120; // gamma 2.2
    e[24] = 0x06; // RGB 4:4:4, sRGB default, preferred timing is native
                  // sRGB chromaticity.
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // No established timings; standard timings unused (0x01 0x01).
    for i in 0..8 {
        e[38 + 2 * i] = 0x01;
        e[39 + 2 * i] = 0x01;
    }
    // Detailed timing descriptor, CVT reduced-blanking-like.
    let (hblank, hfp, hsync) = (160u32, 48u32, 32u32);
    let (vblank, vfp, vsync) = (35u32, 3u32, 6u32);
    let htotal = u64::from(w + hblank);
    let vtotal = u64::from(h + vblank);
    let clock_10khz = (htotal * vtotal * 60)
        .div_ceil(10_000)
        .min(u64::from(u16::MAX)) as u16;
    let hmm = (w * 254 / 960).min(4095);
    let vmm = (h * 254 / 960).min(4095);
    let d = &mut e[54..72];
    d[0..2].copy_from_slice(&clock_10khz.to_le_bytes());
    d[2] = (w & 0xff) as u8;
    d[3] = (hblank & 0xff) as u8;
    d[4] = (((w >> 8) & 0xf) << 4 | ((hblank >> 8) & 0xf)) as u8;
    d[5] = (h & 0xff) as u8;
    d[6] = (vblank & 0xff) as u8;
    d[7] = (((h >> 8) & 0xf) << 4 | ((vblank >> 8) & 0xf)) as u8;
    d[8] = (hfp & 0xff) as u8;
    d[9] = (hsync & 0xff) as u8;
    d[10] = (((vfp & 0xf) << 4) | (vsync & 0xf)) as u8;
    d[11] = (((hfp >> 8) & 3) << 6
        | ((hsync >> 8) & 3) << 4
        | ((vfp >> 4) & 3) << 2
        | ((vsync >> 4) & 3)) as u8;
    d[12] = (hmm & 0xff) as u8;
    d[13] = (vmm & 0xff) as u8;
    d[14] = (((hmm >> 8) & 0xf) << 4 | ((vmm >> 8) & 0xf)) as u8;
    d[17] = 0x1e; // digital separate sync, +hsync +vsync
                  // Range limits: 50-75 Hz, 30-255 kHz, 2550 MHz max, no timing formula.
    e[72..90].copy_from_slice(&[
        0, 0, 0, 0xfd, 0, 50, 75, 30, 255, 255, 0x01, 0x0a, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    ]);
    // Monitor name.
    e[90..95].copy_from_slice(&[0, 0, 0, 0xfc, 0]);
    e[95..108].copy_from_slice(b"vhost-gpu\n   ");
    // Dummy descriptor.
    e[108..113].copy_from_slice(&[0, 0, 0, 0x10, 0]);
    e[126] = 0; // no extensions
    let sum = e[..127].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::test_support::*;
    use crate::gpu::GpuConfig;
    use crate::protocol::tests::le32s;
    use crate::protocol::*;
    use crate::renderer::software::SoftwareRenderer;

    // GET_EDID of the mode GET_DISPLAY_INFO reported, and the display's own EDID, are checked in
    // `scanout.rs` (`display_info_and_edid`).

    #[test]
    fn edid_not_offered_is_refused() {
        let mut h = Harness::new(
            Box::new(SoftwareRenderer::new()),
            GpuConfig {
                edid: false,
                ..Default::default()
            },
        );
        assert_eq!(h.gpu.device_features() & (1 << VIRTIO_GPU_F_EDID), 0);
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_GET_EDID, &le32s(&[0, 0]))),
            VIRTIO_GPU_RESP_ERR_UNSPEC
        );
    }

    #[test]
    fn generated_edid_is_valid() {
        for (w, hh) in [
            (1024, 768),
            (1920, 1080),
            (3840, 2160),
            (640, 480),
            (20000, 1),
        ] {
            let e = generate_edid(w, hh);
            assert_eq!(&e[0..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
            assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            assert_eq!((e[18], e[19]), (1, 4));
            let d = &e[54..72];
            let hact = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
            let vact = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
            assert_eq!((hact, vact), (w.min(4095), hh.min(4095)));
            assert!(u16::from_le_bytes([d[0], d[1]]) > 0);
        }
    }
}
