#!/usr/bin/env python3
"""Self-test of run-guest.py's picture checkers: each must accept the exact expected picture and
reject it with one pixel changed, rows swapped, or the wrong size, so that a passing e2e check
means the picture really matched. Python 3.11 standard library only; prints PASS/FAIL, exit 0/1."""
import importlib.util
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("run_guest", os.path.join(HERE, "run-guest.py"))
rg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rg)

W, H = 320, 200
problems = []


def expect(name, result, ok):
    if (result is None) != ok:
        problems.append(f"{name}: checker said {result!r}, expected {'a match' if ok else 'a mismatch'}")


fb = b"".join(rg.fb_pattern_row(y, W) for y in range(H))
expect("fb exact", rg.check_fb_pattern(W, H, fb, W, H), True)
one = bytearray(fb)
one[3 * (W * 77 + 123) + 2] ^= 1
expect("fb one pixel", rg.check_fb_pattern(W, H, bytes(one), W, H), False)
swapped = fb[W * 3:2 * W * 3] + fb[:W * 3] + fb[2 * W * 3:]
expect("fb rows swapped", rg.check_fb_pattern(W, H, swapped, W, H), False)
expect("fb size", rg.check_fb_pattern(W, H, fb, W, H + 1), False)
# The pattern itself must vary: two different rows, two different bars.
if rg.fb_pattern_row(0, W) == rg.fb_pattern_row(1, W) or fb[:3] == fb[3 * (W // 2):3 * (W // 2) + 3]:
    problems.append("fb pattern does not vary with x and y")

a, b = rg.GLCLEAR_A.to_bytes(3, "big"), rg.GLCLEAR_B.to_bytes(3, "big")
gl = b"".join((b * (W // 2) + a * (W - W // 2)) if y >= H - H // 2 else a * W for y in range(H))
expect("glclear exact", rg.check_glclear(W, H, gl, W, H), True)
flipped = b"".join(gl[(H - 1 - y) * W * 3:(H - y) * W * 3] for y in range(H))
expect("glclear upside down", rg.check_glclear(W, H, flipped, W, H), False)
one = bytearray(gl)
one[0] ^= 0x80
expect("glclear one pixel", rg.check_glclear(W, H, bytes(one), W, H), False)
expect("glclear uniform", rg.check_glclear(W, H, a * (W * H), W, H), False)

ppm_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"e2e-selftest-{os.getpid()}.ppm")
with open(ppm_path, "wb") as f:
    f.write(b"P6\n# comment\n%d %d\n255\n" % (W, H) + fb)
try:
    w, h, rgb = rg.read_ppm(ppm_path)
    if (w, h, rgb) != (W, H, fb):
        problems.append("read_ppm did not return the written picture")
finally:
    os.unlink(ppm_path)

if problems:
    print("FAIL checker self-test:\n  " + "\n  ".join(problems))
    sys.exit(1)
print("PASS checker self-test")
