/* The fbdev test picture, shared by the guest writer (fbpattern.c). The host checker
 * (scripts/e2e/e2e_lib.py, expected_fb_pattern) computes the same function: keep them in step.
 * Eight vertical colour bars; the low 4 bits of each channel vary with x, y and x+y so that any
 * shift, stride or row error changes the picture. */
#ifndef E2E_PATTERN_H
#define E2E_PATTERN_H
#include <stdint.h>

static const uint8_t e2e_bars[8][3] = {
    {0xf0, 0xf0, 0xf0}, {0xf0, 0xf0, 0x00}, {0x00, 0xf0, 0xf0}, {0x00, 0xf0, 0x00},
    {0xf0, 0x00, 0xf0}, {0xf0, 0x00, 0x00}, {0x00, 0x00, 0xf0}, {0x00, 0x00, 0x00},
};

/* Returns the pixel at (x, y) of a w-wide picture as 0x00RRGGBB. */
static inline uint32_t e2e_pattern(uint32_t x, uint32_t y, uint32_t w)
{
    uint32_t bar = (x * 8u) / w;
    uint32_t r = e2e_bars[bar][0] | (x & 0x0fu);
    uint32_t g = e2e_bars[bar][1] | (y & 0x0fu);
    uint32_t b = e2e_bars[bar][2] | (((x + y) >> 4) & 0x0fu);
    return (r << 16) | (g << 8) | b;
}
#endif
