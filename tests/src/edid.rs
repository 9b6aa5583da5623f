//! A valid 128-byte EDID 1.4 base block for one preferred mode (what the display peer answers
//! to GET_EDID). Layout per VESA E-EDID 1.4: header, vendor/product, version, basic display
//! parameters, chromaticity, timings, four 18-byte descriptors, extension count, checksum.

/// Horizontal blanking used for the detailed timing (reduced-blanking style).
const H_BLANK: u32 = 160;
/// Vertical blanking.
const V_BLANK: u32 = 30;
/// Largest value a 12-bit timing field holds.
const MAX_12BIT: u32 = 4095;

/// The EDID for a `width` x `height` @ 60 Hz panel (sizes above 4095 are clamped).
pub fn generate(width: u32, height: u32) -> [u8; 128] {
    let w = width.clamp(1, MAX_12BIT);
    let h = height.clamp(1, MAX_12BIT);
    let mut e = [0u8; 128];
    e[0..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "HRN" (5-bit letters, 'A' = 1), big endian.
    let id = |c: u8| u16::from(c - b'A' + 1);
    let m = (id(b'H') << 10) | (id(b'R') << 5) | id(b'N');
    e[8..10].copy_from_slice(&m.to_be_bytes());
    e[10..12].copy_from_slice(&0x1234u16.to_le_bytes());
    e[12..16].copy_from_slice(&1u32.to_le_bytes());
    e[16] = 1; // week
    e[17] = 36; // 2026
    e[18] = 1;
    e[19] = 4;
    e[20] = 0xa5; // digital, 8 bits per colour, DisplayPort
                  // Physical size: 96 dpi-ish.
    let wmm = w * 254 / 960;
    let hmm = h * 254 / 960;
    e[21] = (wmm / 10).clamp(1, 255) as u8;
    e[22] = (hmm / 10).clamp(1, 255) as u8;
    e[23] = 120; // gamma 2.2
    e[24] = 0x06; // sRGB default, preferred timing is native
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // No established timings; standard timings unused (0x01 0x01).
    for i in 0..8 {
        e[38 + 2 * i] = 1;
        e[39 + 2 * i] = 1;
    }
    // Detailed timing descriptor.
    let clock = (w + H_BLANK) * (h + V_BLANK) * 60 / 10_000; // units of 10 kHz
    let d = &mut e[54..72];
    d[0..2].copy_from_slice(&(clock.min(0xffff) as u16).to_le_bytes());
    d[2] = (w & 0xff) as u8;
    d[3] = (H_BLANK & 0xff) as u8;
    d[4] = (((w >> 8) << 4) | (H_BLANK >> 8)) as u8;
    d[5] = (h & 0xff) as u8;
    d[6] = (V_BLANK & 0xff) as u8;
    d[7] = (((h >> 8) << 4) | (V_BLANK >> 8)) as u8;
    d[8] = 48; // hsync offset
    d[9] = 32; // hsync width
    d[10] = (3 << 4) | 5; // vsync offset 3, width 5
    d[11] = 0;
    let (wmm, hmm) = (wmm.min(MAX_12BIT), hmm.min(MAX_12BIT));
    d[12] = (wmm & 0xff) as u8;
    d[13] = (hmm & 0xff) as u8;
    d[14] = (((wmm >> 8) << 4) | (hmm >> 8)) as u8;
    d[17] = 0x1e; // digital separate sync, +h +v
                  // Monitor name.
    let name = e[72..90].as_mut();
    name[3] = 0xfc;
    let text = b"harness-gpu\n ";
    name[5..18].copy_from_slice(text);
    // Range limits: 50-75 Hz, 30-160 kHz, 600 MHz.
    let r = e[90..108].as_mut();
    r[3] = 0xfd;
    r[5] = 50;
    r[6] = 75;
    r[7] = 30;
    r[8] = 160;
    r[9] = 60;
    r[10] = 0;
    r[11] = 0x0a;
    r[12..18].fill(0x20);
    // Dummy descriptor.
    e[108 + 3] = 0x10;
    e[126] = 0;
    let sum = e[..127].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

/// Does `edid` start with a valid base block (header and checksum)?
pub fn is_valid(edid: &[u8]) -> bool {
    edid.len() >= 128
        && edid[0..8] == [0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]
        && edid[..128].iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
}

/// The preferred mode (active width, height) from the first detailed timing descriptor.
pub fn preferred_mode(edid: &[u8]) -> Option<(u32, u32)> {
    let d = edid.get(54..72)?;
    if d[0] == 0 && d[1] == 0 {
        return None;
    }
    let w = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
    let h = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_round_trips() {
        for (w, h) in [(1024, 768), (1920, 1080), (640, 480), (4000, 3000)] {
            let e = generate(w, h);
            assert!(is_valid(&e));
            assert_eq!(preferred_mode(&e), Some((w, h)));
        }
    }
}
