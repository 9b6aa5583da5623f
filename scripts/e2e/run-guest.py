#!/usr/bin/env python3
"""Boots the e2e Linux guest under QEMU (TCG) on a vhost-user-gpu backend and checks what it shows.

    run-guest.py --backend 'target/debug/vhost-user-gpu --socket-path {sock} --renderer software' \\
                 --workload fbdev --check-screen fb-pattern --expect-feature virgl=no

Starts the backend (`{sock}` is replaced by the vhost-user socket path), waits for its socket,
starts QEMU (q35, TCG, memfd guest memory, vhost-user-gpu-pci, -display none, serial console to a
file, a QMP socket), follows the guest's "E2E-" lines on the serial console, takes QMP screendumps
and checks them, then stops everything. The output directory keeps serial.log, qemu.log,
backend.log, screen.ppm/screen.png and result.txt. Exit status 0 = PASS, 1 = FAIL, 2 = usage.
Python 3.11 standard library only.
"""
import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# glclear.c's colours (0xRRGGBB): the whole frame A, the bottom-left quarter B.
GLCLEAR_A = 0x2080E0
GLCLEAR_B = 0xE04020
# scripts/guest/src/pattern.h's bars.
BARS = [(0xF0, 0xF0, 0xF0), (0xF0, 0xF0, 0x00), (0x00, 0xF0, 0xF0), (0x00, 0xF0, 0x00),
        (0xF0, 0x00, 0xF0), (0xF0, 0x00, 0x00), (0x00, 0x00, 0xF0), (0x00, 0x00, 0x00)]


def fb_pattern_row(y, w):
    """Row y of the fbdev test picture as RGB bytes (same function as pattern.h)."""
    row = bytearray(w * 3)
    for x in range(w):
        br, bg, bb = BARS[(x * 8) // w]
        row[3 * x] = br | (x & 0x0F)
        row[3 * x + 1] = bg | (y & 0x0F)
        row[3 * x + 2] = bb | (((x + y) >> 4) & 0x0F)
    return bytes(row)


def read_ppm(path):
    """(width, height, rgb bytes) of a binary PPM (P6, maxval 255) as QEMU writes it."""
    with open(path, "rb") as f:
        data = f.read()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    pos += 1
    if fields[0] != b"P6" or fields[3] != b"255":
        raise ValueError(f"{path}: not a P6/255 PPM")
    w, h = int(fields[1]), int(fields[2])
    rgb = data[pos:pos + w * h * 3]
    if len(rgb) != w * h * 3:
        raise ValueError(f"{path}: truncated PPM")
    return w, h, rgb


def check_fb_pattern(w, h, rgb, want_w, want_h):
    if (w, h) != (want_w, want_h):
        return f"screen is {w}x{h}, the guest's framebuffer {want_w}x{want_h}"
    bad, first = 0, None
    for y in range(h):
        want = fb_pattern_row(y, w)
        got = rgb[y * w * 3:(y + 1) * w * 3]
        if got != want:
            for x in range(w):
                if got[3 * x:3 * x + 3] != want[3 * x:3 * x + 3]:
                    bad += 1
                    if first is None:
                        first = (x, y, got[3 * x:3 * x + 3].hex(), want[3 * x:3 * x + 3].hex())
    if bad:
        x, y, g, e = first
        return f"{bad} of {w * h} pixels differ; first at ({x},{y}): got {g}, want {e}"
    return None


def check_glclear(w, h, rgb, want_w, want_h):
    if (w, h) != (want_w, want_h):
        return f"screen is {w}x{h}, the guest's mode {want_w}x{want_h}"
    a, b = GLCLEAR_A.to_bytes(3, "big"), GLCLEAR_B.to_bytes(3, "big")
    half_w, half_h = w // 2, h // 2
    bad, first = 0, None
    for y in range(h):
        in_b_rows = y >= h - half_h  # GL's origin is bottom-left
        want = (b * half_w + a * (w - half_w)) if in_b_rows else a * w
        got = rgb[y * w * 3:(y + 1) * w * 3]
        if got != want:
            for x in range(w):
                if got[3 * x:3 * x + 3] != want[3 * x:3 * x + 3]:
                    bad += 1
                    if first is None:
                        first = (x, y, got[3 * x:3 * x + 3].hex(), want[3 * x:3 * x + 3].hex())
    if bad:
        x, y, g, e = first
        return f"{bad} of {w * h} pixels differ; first at ({x},{y}): got {g}, want {e}"
    return None


def distinct_colours(rgb, limit=100000):
    return len({rgb[i:i + 3] for i in range(0, min(len(rgb), limit * 3 * 64), 3 * 7)})


class Qmp:
    def __init__(self, path, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.sock.settimeout(60)
        self.buf = b""
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {name}: {reply['error']}")
            # events are skipped

    def close(self):
        self.sock.close()


def guest_artefacts():
    out = subprocess.run([os.path.join(REPO, "scripts/guest/build.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    vals = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return vals["KERNEL"], vals["INITRD"]


def stop(proc, name, grace=5.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        print(f"run-guest: {name} ignored SIGTERM, killing it", file=sys.stderr)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", required=True,
                    help="backend command line; {sock} is replaced by the socket path. 'none' "
                         "with --qemu-gpu: QEMU's built-in GPU device, no backend")
    ap.add_argument("--qemu-gpu", metavar="DEVICE",
                    help="with --backend none: a built-in QEMU GPU device instead of vhost-user-gpu "
                         "(a reference run, e.g. virtio-gpu-gl-pci with --display sdl,gl=on on X)")
    ap.add_argument("--display", default="none", help="QEMU -display value (default none)")
    ap.add_argument("--workload", required=True, help="guest workload: probe, fbdev, glclear, kmscube")
    ap.add_argument("--out", help="output directory (default: a new one under /tmp)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for the whole run")
    ap.add_argument("--expect-feature", action="append", default=[], metavar="NAME=VALUE",
                    help="a line of the guest's debugfs virtio-gpu-features, e.g. virgl=yes, "
                         "or NAME!=VALUE, e.g. cap_sets!=0")
    ap.add_argument("--expect-gl-renderer", metavar="TEXT",
                    help="the GL renderer string the guest prints must contain TEXT (case-insensitive)")
    ap.add_argument("--reject-gl-renderer", metavar="TEXT",
                    help="the GL renderer string must not contain TEXT")
    ap.add_argument("--check-screen", choices=["none", "fb-pattern", "glclear", "animated"],
                    default="none")
    ap.add_argument("--screen-timeout", type=float, default=30,
                    help="seconds to wait for the expected picture after the guest shows it")
    ap.add_argument("--png", help="also write the final screen as PNG to this path")
    ap.add_argument("--kernel")
    ap.add_argument("--initrd")
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--cpu", default="Nehalem", help="QEMU -cpu model (with max, LLVM in the guest aborts: 64-bit code requested on a subtarget that doesn't support it)")
    ap.add_argument("--qemu", default=os.environ.get("QEMU", "qemu-system-x86_64"))
    args = ap.parse_args()

    out = args.out or tempfile.mkdtemp(prefix=f"e2e-{args.workload}-")
    os.makedirs(out, exist_ok=True)
    for name in ("serial.log", "qemu.log", "backend.log", "screen.ppm", "screen.png", "result.txt"):
        if os.path.exists(os.path.join(out, name)):
            os.unlink(os.path.join(out, name))
    start = time.monotonic()
    deadline = start + args.timeout
    failures = []
    notes = []

    if args.kernel and args.initrd:
        kernel, initrd = args.kernel, args.initrd
    else:
        kernel, initrd = guest_artefacts()

    rundir = tempfile.mkdtemp(prefix="vug-e2e-")  # short path: unix socket names are limited
    sock = os.path.join(rundir, "gpu.sock")
    qmp_path = os.path.join(rundir, "qmp.sock")
    serial = os.path.join(out, "serial.log")
    backend_cmd = args.backend.replace("{sock}", shlex.quote(sock))
    backend = qemu = None
    lines = []

    def log(msg):
        print(f"run-guest: [{time.monotonic() - start:6.1f}s] {msg}", file=sys.stderr)

    try:
        builtin = args.backend == "none"
        if builtin and not args.qemu_gpu:
            raise RuntimeError("--backend none needs --qemu-gpu")
        if builtin:
            log(f"no backend: QEMU's {args.qemu_gpu}")
            backend = subprocess.Popen(["sleep", "infinity"], start_new_session=True)
            gpu_args = ["-device", args.qemu_gpu]
        else:
            log(f"backend: {backend_cmd}")
            with open(os.path.join(out, "backend.log"), "wb") as blog:
                backend = subprocess.Popen(backend_cmd, shell=True, stdout=blog,
                                           stderr=subprocess.STDOUT, start_new_session=True,
                                           cwd=REPO)
            gpu_args = ["-chardev", f"socket,id=vgpu,path={sock}",
                        "-device", "vhost-user-gpu-pci,chardev=vgpu"]
        while not builtin and not os.path.exists(sock):
            if backend.poll() is not None:
                raise RuntimeError(f"backend exited with {backend.returncode} before creating its socket")
            if time.monotonic() > start + 30:
                raise RuntimeError("backend did not create its socket in 30 s")
            time.sleep(0.05)

        append = (f"console=ttyS0 panic=-1 loglevel=4 e2e.workload={args.workload} "
                  f"e2e.hold={int(args.timeout) + 60}")
        qemu_cmd = [
            args.qemu, "-nodefaults", "-no-user-config", "-no-reboot",
            "-machine", "q35,accel=tcg,memory-backend=mem", "-cpu", args.cpu, "-smp", str(args.smp),
            "-m", "1G", "-object", "memory-backend-memfd,id=mem,size=1G,share=on",
            "-kernel", kernel, "-initrd", initrd, "-append", append,
            *gpu_args,
            "-display", args.display, "-serial", f"file:{serial}", "-monitor", "none",
            "-qmp", f"unix:{qmp_path},server=on,wait=off",
        ]
        with open(os.path.join(out, "qemu.cmd"), "w") as f:
            f.write(shlex.join(qemu_cmd) + "\n")
        log("starting QEMU")
        with open(os.path.join(out, "qemu.log"), "wb") as qlog:
            qemu = subprocess.Popen(qemu_cmd, stdout=qlog, stderr=subprocess.STDOUT,
                                    start_new_session=True)

        want_screen = args.check_screen != "none"
        quit_sent = False
        screen_line = result_line = None
        pos = 0
        partial = b""
        while True:
            if os.path.exists(serial):
                with open(serial, "rb") as f:
                    f.seek(pos)
                    data = f.read()
                pos += len(data)
                partial += data
                *complete, partial = partial.split(b"\n")
                for raw in complete:
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    lines.append(line)
                    if line.startswith("E2E-"):
                        log(line)
                    if line.startswith("E2E-RESULT:"):
                        result_line = line
                    if line.startswith("E2E-SCREEN-READY"):
                        screen_line = line
            if result_line or screen_line:
                break
            if qemu.poll() is not None:
                raise RuntimeError(f"QEMU exited ({qemu.returncode}) before the workload finished")
            if backend.poll() is not None:
                time.sleep(0.5)  # QEMU going down first (guest panic) closes the backend's socket
                if qemu.poll() is not None:
                    continue
                raise RuntimeError(f"backend exited ({backend.returncode}) during the run")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timeout after {args.timeout:.0f} s waiting for the guest")
            time.sleep(0.1)

        text = "\n".join(lines)
        if not re.search(r"^E2E-CARD0: present \(virtio_gpu bound to: virtio\d+", text, re.M):
            failures.append("virtio_gpu did not bind (no /dev/dri/card0 from it) in the guest")
        features = dict(re.findall(r"^E2E-FEATURE: ([A-Za-z_]+)=(\S+)$", text, re.M))
        notes.append("features: " + " ".join(f"{k}={v}" for k, v in features.items()))
        for exp in args.expect_feature:
            negate = "!=" in exp
            k, v = exp.split("!=" if negate else "=", 1)
            if (features.get(k) == v) == negate or k not in features:
                failures.append(f"feature {k}: guest shows {features.get(k)!r}, expected "
                                f"{'anything but ' if negate else ''}{v!r}")
        renderer = None
        m = re.search(r"^E2E-GL-RENDERER: (.*)$", text, re.M)
        if m:
            renderer = m.group(1)
            notes.append(f"GL renderer: {renderer}")
        if args.expect_gl_renderer and (renderer is None
                                        or args.expect_gl_renderer.lower() not in renderer.lower()):
            failures.append(f"GL renderer {renderer!r} does not name {args.expect_gl_renderer!r}")
        if args.reject_gl_renderer and renderer and args.reject_gl_renderer.lower() in renderer.lower():
            failures.append(f"GL renderer {renderer!r} names {args.reject_gl_renderer!r}")
        if result_line and not result_line.startswith("E2E-RESULT: PASS"):
            failures.append(f"guest: {result_line}")

        if want_screen and screen_line and not result_line:
            qmp = Qmp(qmp_path)
            ppm = os.path.join(out, "screen.ppm")
            want_w = want_h = None
            m = re.search(r"^E2E-FB: (\d+)x(\d+)", text, re.M) if args.check_screen == "fb-pattern" \
                else re.search(r"^E2E-SCREEN-READY: \S+ (\d+)x(\d+)", text, re.M)
            if m:
                want_w, want_h = int(m.group(1)), int(m.group(2))
            screen_deadline = min(deadline, time.monotonic() + args.screen_timeout)
            problem, prev, dumps = "no screendump taken", None, 0
            while True:
                qmp.cmd("screendump", filename=ppm, format="ppm")
                dumps += 1
                w, h, rgb = read_ppm(ppm)
                if args.check_screen == "fb-pattern":
                    problem = check_fb_pattern(w, h, rgb, want_w, want_h)
                elif args.check_screen == "glclear":
                    problem = check_glclear(w, h, rgb, want_w, want_h)
                else:
                    n = distinct_colours(rgb)
                    if n < 50:
                        problem = f"only {n} distinct colours on screen"
                    elif prev is None or prev == rgb:
                        problem = "screen does not change between screendumps"
                    else:
                        problem = None
                    prev = rgb
                if problem is None or time.monotonic() > screen_deadline:
                    break
                time.sleep(1.0)
            notes.append(f"screen {w}x{h}, {dumps} screendump(s)")
            if problem:
                failures.append(f"screen ({args.check_screen}): {problem}")
            try:
                png = args.png or os.path.join(out, "screen.png")
                qmp.cmd("screendump", filename=os.path.abspath(png), format="png")
            except RuntimeError as e:
                notes.append(f"PNG screendump failed: {e}")
            try:
                quit_sent = True
                qmp.cmd("quit")
            except (ConnectionError, OSError):
                pass
            qmp.close()
        elif want_screen and not screen_line:
            failures.append("the guest never showed its picture (no E2E-SCREEN-READY)")
        elif screen_line and not result_line:
            notes.append("the guest showed its picture; not checked (--check-screen none)")
        if result_line or quit_sent:  # QEMU is going down: let it finish first
            try:
                qemu.wait(15)
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.3)
        if backend.poll() is not None:
            if qemu.poll() is None or backend.returncode != 0:
                failures.append(f"backend exited ({backend.returncode}) during the run")
            else:
                notes.append("backend exited (0) after QEMU had gone")
    except (RuntimeError, OSError, ValueError, subprocess.CalledProcessError) as e:
        failures.append(str(e))
    finally:
        if qemu is not None:
            try:
                qemu.wait(5)
            except subprocess.TimeoutExpired:
                pass
        stop(qemu, "QEMU")
        stop(backend, "backend")
        for p in (sock, qmp_path):
            if os.path.exists(p):
                os.unlink(p)
        os.rmdir(rundir)

    verdict = "PASS" if not failures else "FAIL"
    summary = [f"{verdict} workload={args.workload} ({time.monotonic() - start:.1f} s)"]
    summary += [f"  note: {n}" for n in notes] + [f"  failure: {f}" for f in failures]
    summary.append(f"  logs: {out}")
    with open(os.path.join(out, "result.txt"), "w") as f:
        f.write("\n".join(summary) + "\n")
    print("\n".join(summary))
    if failures and os.path.exists(serial):
        print("  --- last serial lines:")
        for line in lines[-15:]:
            print("  | " + line)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
