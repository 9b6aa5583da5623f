/* Guest program: draws the test picture (pattern.h) on /dev/fb0 with one write() of whole lines
 * (Linux 6.1's fbdev emulation drops the damage of a write that ends at a line end within one
 * line, so the frame goes out in a single multi-line write) and prints the geometry. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "pattern.h"

int main(int argc, char **argv)
{
    const char *dev = argc > 1 ? argv[1] : "/dev/fb0";
    int fd = open(dev, O_RDWR);
    if (fd < 0) {
        printf("fbpattern: open %s: %s\n", dev, strerror(errno));
        return 1;
    }
    struct fb_var_screeninfo var;
    struct fb_fix_screeninfo fix;
    if (ioctl(fd, FBIOGET_VSCREENINFO, &var) < 0 || ioctl(fd, FBIOGET_FSCREENINFO, &fix) < 0) {
        printf("fbpattern: FBIOGET: %s\n", strerror(errno));
        return 1;
    }
    printf("E2E-FB: %ux%u bpp=%u stride=%u yoffset=%u id=%s\n", var.xres, var.yres,
           var.bits_per_pixel, fix.line_length, var.yoffset, fix.id);
    if (var.bits_per_pixel != 32 || fix.line_length < var.xres * 4 || var.xres == 0 || var.yres < 2) {
        printf("fbpattern: unsupported framebuffer layout\n");
        return 1;
    }
    size_t size = (size_t)fix.line_length * var.yres;
    unsigned char *buf = calloc(1, size);
    if (!buf) {
        printf("fbpattern: out of memory\n");
        return 1;
    }
    for (uint32_t y = 0; y < var.yres; y++) {
        uint32_t *row = (uint32_t *)(buf + (size_t)y * fix.line_length);
        for (uint32_t x = 0; x < var.xres; x++)
            row[x] = e2e_pattern(x, y, var.xres); /* XRGB8888, little endian */
    }
    off_t off = (off_t)fix.line_length * var.yoffset;
    if (lseek(fd, off, SEEK_SET) != off) {
        printf("fbpattern: lseek: %s\n", strerror(errno));
        return 1;
    }
    ssize_t n = write(fd, buf, size);
    if (n < 0 || (size_t)n != size) {
        printf("fbpattern: write: %zd of %zu: %s\n", n, size, strerror(errno));
        return 1;
    }
    printf("fbpattern: wrote %zu bytes\n", size);
    return 0;
}
