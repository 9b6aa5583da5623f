#!/usr/bin/env python3
"""Boots the e2e Linux guest under QEMU (TCG) on a vhost-user-gpu backend and checks what it shows.

    run-guest.py --backend 'target/debug/vhost-user-gpu --socket-path {sock} --renderer software' \\
                 --workload fbdev --check-screen fb-pattern --expect-feature virgl=no

Starts the backend (`{sock}` is replaced by the vhost-user socket path), waits for its socket,
starts QEMU (q35, TCG, memfd guest memory, vhost-user-gpu-pci, -display none, serial console to a
file, a QMP socket), follows the guest's "E2E-" lines on the serial console, takes QMP screendumps
and checks them, then stops everything. The output directory keeps serial.log, qemu.log,
backend.log, screen.ppm/screen.png and result.txt. Exit status 0 = PASS, 1 = FAIL, 2 = usage.

--qemu-chroot SUITE / --backend-chroot SUITE run QEMU / the backend inside the Debian chroot of
scripts/chroot/setup.sh SUITE (through scripts/chroot/run.sh: /tmp, this repository and the guest
image cache are mounted at the same paths there), e.g. QEMU 11.1 from trixie-backports on a
Debian 12 host. --gpu-device test-device plugs the backend into QEMU's generic
vhost-user-test-device-pci (passes every feature the backend offers; no display, so no screen
checks) instead of vhost-user-gpu-pci.
--dbus-client runs QEMU with `-display dbus` on a private bus (dbus-daemon) and our D-Bus
display client (scripts/dbus/display-client.py, run by Debian's /usr/bin/python3 with python3-gi)
registered as a listener on console 0: --check-screen then checks the picture that client
received (Scanout/Update calls, or ScanoutMap's shared memory with --dbus-map) and compares it with
a QMP screendump; the calls it received are reported.
Python 3.11 standard library only (the D-Bus client: PyGObject).
"""
import argparse
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CHROOT_RUN = os.path.join(REPO, "scripts/chroot/run.sh")
# QEMU's generic vhost-user device set up as a virtio-gpu (device id 16, control + cursor queue,
# the 16-byte virtio_gpu_config); its chardev is appended.
TEST_DEVICE = "vhost-user-test-device-pci,virtio-id=16,num_vqs=2,config_size=16"
DBUS_CLIENT = os.path.join(REPO, "scripts/dbus/display-client.py")
# The client needs PyGObject (Debian's python3-gi), so Debian's interpreter, not the one on PATH.
DBUS_PYTHON = os.environ.get("VHOST_USER_GPU_DBUS_PYTHON", "/usr/bin/python3")

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
        if pos >= len(data):
            raise ValueError(f"{path}: truncated PPM header ({len(data)} bytes)")
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while end < len(data) and not data[end:end + 1].isspace():
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


def guest_cache_dir():
    return os.environ.get("VHOST_USER_GPU_GUEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vhost-user-gpu-guest")


def chroot_path(path, what):
    """PATH made absolute; an error unless scripts/chroot/run.sh mounts it into the chroot."""
    path = os.path.realpath(path)
    for top in ("/tmp", os.path.realpath(REPO), os.path.realpath(guest_cache_dir())):
        if path == top or path.startswith(top + os.sep):
            return path
    raise ValueError(f"{what} {path} is not under /tmp, {REPO} or {guest_cache_dir()}: "
                     "the chroot cannot see it")


def stop(proc, name, grace=5.0):
    """SIGTERM to the process group, then wait until every process of it is gone (a backend
    started through `sh -c` can leave its shell first while the daemon still removes its socket),
    SIGKILL after `grace` seconds."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        proc.poll()
        return
    deadline = time.monotonic() + grace
    while True:
        proc.poll()
        if not group_alive(proc.pid):
            break
        if time.monotonic() > deadline:
            print(f"run-guest: {name} ignored SIGTERM, killing it", file=sys.stderr)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        time.sleep(0.02)
    proc.wait()


def group_alive(pgid):
    """Whether a process of group `pgid` is still running (zombies do not count: an orphan's
    zombie waits for whichever process reaps it)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def unlink_if_there(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class DbusClient:
    """scripts/dbus/display-client.py: one JSON line per command on its stdout."""

    def __init__(self, address, out, suffix, offer_map):
        cmd = [DBUS_PYTHON, DBUS_CLIENT, "--address", address,
               "--log", os.path.join(out, f"dbus{suffix}.jsonl")]
        if offer_map:
            cmd.append("--map")
        with open(os.path.join(out, f"dbus-client{suffix}.log"), "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, start_new_session=True)
        self.buf = b""
        self.registered = False  # before that it reads no commands

    def read(self, timeout, check=None):
        """The next JSON line; check() is called every 0.2 s (it may raise)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"D-Bus client: no answer in {timeout:.0f} s")
            if check is not None:
                check()
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"D-Bus client exited ({self.proc.wait()}); "
                                       "see dbus-client.log")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def request(self, cmd, timeout=30):
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def close(self):
        if self.proc.poll() is None and self.registered:
            try:
                self.request("quit", timeout=5)
            except (RuntimeError, OSError, ValueError):
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        stop(self.proc, "D-Bus client")


def dbus_summary(stats):
    """One line on what the D-Bus listener received."""
    counts = stats.get("counts", {})
    calls = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no calls"
    rects = stats.get("update_rects") or stats.get("update_map_rects") or []
    distinct = []
    for r in rects:
        t = "{2}x{3}+{0}+{1}".format(*r)
        if t not in distinct:
            distinct.append(t)
    scanouts = "; ".join(" ".join(str(v) for v in sc) for sc in stats.get("scanouts", []))
    line = (f"D-Bus listener: {calls}; scanouts [{scanouts}]; updated area "
            f"{stats.get('update_area', 0)} px; update rectangles (first distinct): "
            + (" ".join(distinct[:12]) or "none"))
    if stats.get("updates_outside_scanout"):
        line += f"; {stats['updates_outside_scanout']} Update(s) outside the scanout"
    if stats.get("cursor"):
        line += f"; cursor {stats['cursor'][0]}x{stats['cursor'][1]} hot {stats['cursor'][2]},{stats['cursor'][3]}"
    if stats.get("errors"):
        line += f"; client errors: {stats['errors'][0]}"
    return line


class Run:
    """One backend process and the QEMU boots against it."""

    def __init__(self, args, out, kernel, initrd):
        self.args, self.out, self.kernel, self.initrd = args, out, kernel, initrd
        self.start = time.monotonic()
        self.deadline = self.start + args.timeout
        self.failures, self.notes = [], []
        # Short path: unix socket names are limited. In /tmp itself when a chroot must see it.
        in_chroot = args.qemu_chroot or args.backend_chroot
        self.rundir = tempfile.mkdtemp(prefix="vug-e2e-", dir="/tmp" if in_chroot else None)
        self.sock = os.path.join(self.rundir, "gpu.sock")
        self.qmp_path = os.path.join(self.rundir, "qmp.sock")
        self.backend = self.qemu = None
        self.builtin = args.backend == "none"
        self.lines = []
        self.dbus_daemon = self.dbus_client = None
        self.dbus_addr = None

    def start_dbus(self):
        """A private bus for QEMU's -display dbus and our client."""
        path = os.path.join(self.rundir, "bus.sock")
        self.dbus_addr = f"unix:path={path}"
        cmd = ["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address={self.dbus_addr}"]
        self.log("bus: " + shlex.join(cmd))
        with open(os.path.join(self.out, "dbus-daemon.log"), "wb") as log:
            self.dbus_daemon = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            if self.dbus_daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dbus-daemon did not create its socket; see dbus-daemon.log")
            time.sleep(0.05)

    def log(self, msg):
        print(f"run-guest: [{time.monotonic() - self.start:6.1f}s] {msg}", file=sys.stderr)

    def start_backend(self):
        args = self.args
        if self.builtin:
            if not args.qemu_gpu:
                raise RuntimeError("--backend none needs --qemu-gpu")
            self.log(f"no backend: QEMU's {args.qemu_gpu}")
            return
        cmd = args.backend.replace("{sock}", shlex.quote(self.sock))
        if args.backend_chroot:
            cmd = shlex.join([CHROOT_RUN, args.backend_chroot, "--", "sh", "-c", cmd])
        self.log(f"backend: {cmd}")
        with open(os.path.join(self.out, "backend.log"), "wb") as blog:
            self.backend = subprocess.Popen(cmd, shell=True, stdout=blog, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=REPO)
        while not os.path.exists(self.sock):
            if self.backend.poll() is not None:
                raise RuntimeError(
                    f"backend exited with {self.backend.returncode} before creating its socket")
            if time.monotonic() > self.start + 30:
                raise RuntimeError("backend did not create its socket in 30 s")
            time.sleep(0.05)

    def backend_gone(self):
        return self.backend is not None and self.backend.poll() is not None

    def boot(self, n):
        """Boots the guest once (boot n, from 1), checks it and stops QEMU."""
        args = self.args
        suffix = "" if n == 1 else f"-{n}"
        tag = "" if args.boots == 1 else f"boot {n}: "
        serial = os.path.join(self.out, f"serial{suffix}.log")
        if self.builtin:
            gpu_args = ["-device", args.qemu_gpu]
        else:
            device = TEST_DEVICE if args.gpu_device == "test-device" else args.gpu_device
            gpu_args = ["-chardev", f"socket,id=vgpu,path={self.sock}",
                        "-device", f"{device},chardev=vgpu"]
        display = args.display
        if args.dbus_client:
            # QemuOpts: a comma inside the address would have to be doubled; unix:path=... has none.
            display = f"dbus,addr={self.dbus_addr}"
            gl = args.dbus_gl
            if gl == "auto":
                # QEMU refuses a vhost-user-gpu console on a display without DMABUF support
                # ("The console requires display DMABUF support."): only dbus's GL mode has it.
                gl = "off" if self.builtin else "on"
            display += f",gl={gl}"
            if gl == "on" and args.dbus_rendernode:
                display += f",rendernode={args.dbus_rendernode}"
        append = (f"console=ttyS0 panic=-1 loglevel=4 e2e.workload={args.workload} "
                  f"e2e.hold={int(args.timeout) + 60}")
        for extra in args.guest_arg:
            append += f" e2e.{extra}"
        qemu_cmd = [
            args.qemu, "-nodefaults", "-no-user-config", "-no-reboot",
            "-machine", "q35,accel=tcg,memory-backend=mem", "-cpu", args.cpu, "-smp", str(args.smp),
            "-m", "1G", "-object", "memory-backend-memfd,id=mem,size=1G,share=on",
            "-kernel", self.kernel, "-initrd", self.initrd, "-append", append,
            *gpu_args,
            "-display", display, "-serial", f"file:{serial}", "-monitor", "none",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]
        if args.qemu_chroot:
            qemu_cmd = [CHROOT_RUN, args.qemu_chroot, "--", *qemu_cmd]
        with open(os.path.join(self.out, f"qemu{suffix}.cmd"), "w") as f:
            f.write(shlex.join(qemu_cmd) + "\n")
        self.log(f"{tag}starting QEMU")
        with open(os.path.join(self.out, f"qemu{suffix}.log"), "wb") as qlog:
            self.qemu = qemu = subprocess.Popen(qemu_cmd, stdout=qlog, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        failures, notes = [], []
        lines = self.lines = []
        self.dbus_client = None
        self.quit_sent = False
        self.screen_line = self.result_line = None
        try:
            if args.dbus_client:
                self.dbus_client = DbusClient(self.dbus_addr, self.out, suffix, args.dbus_map)

                def qemu_alive():
                    if qemu.poll() is not None:
                        with open(os.path.join(self.out, f"qemu{suffix}.log"), "rb") as f:
                            last = f.read().decode("utf-8", "replace").strip().splitlines()
                        raise RuntimeError(f"QEMU exited ({qemu.returncode}) before the D-Bus "
                                           f"listener registered: {last[-1] if last else ''}")
                reg = self.dbus_client.read(30, qemu_alive)
                if not reg.get("registered"):
                    raise RuntimeError(f"D-Bus client could not register: {reg.get('error')}")
                self.dbus_client.registered = True
                self.log("D-Bus listener registered on console 0"
                         + (" (Unix.Map offered)" if args.dbus_map else ""))
            self._follow(serial, lines)
            self._check(n, suffix, lines, failures, notes)
        except (RuntimeError, OSError, ValueError) as e:
            failures.append(str(e))
        except Exception as e:  # a bug of this script: report it as a failure of this boot
            traceback.print_exc()
            failures.append(f"run-guest.py: {type(e).__name__}: {e} (traceback on stderr)")
        finally:
            if self.dbus_client is not None:
                self.dbus_client.close()
            try:
                qemu.wait(15 if self.quit_sent or self.result_line else 0.1)
            except subprocess.TimeoutExpired:
                pass
            stop(qemu, "QEMU")
            unlink_if_there(self.qmp_path)
        time.sleep(0.3)
        if self.backend_gone():
            if self.backend.returncode != 0 or n < args.boots:
                failures.append(f"backend exited ({self.backend.returncode}) during the run")
            else:
                notes.append("backend exited (0) after QEMU had gone")
        self.failures += [tag + f for f in failures]
        self.notes += [tag + x for x in notes]
        return not failures

    def _follow(self, serial, lines):
        """Reads the serial log until the guest reports a result or shows its picture."""
        self.quit_sent = False
        self.screen_line = self.result_line = None
        pos, partial = 0, b""
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
                        self.log(line)
                    if line.startswith("E2E-RESULT:"):
                        self.result_line = line
                    if line.startswith("E2E-SCREEN-READY"):
                        self.screen_line = line
            if self.result_line or self.screen_line:
                return
            if self.qemu.poll() is not None:
                raise RuntimeError(f"QEMU exited ({self.qemu.returncode}) before the workload finished")
            if self.backend_gone():
                time.sleep(0.5)  # QEMU going down first (guest panic) closes the backend's socket
                if self.qemu.poll() is not None:
                    continue
                raise RuntimeError(f"backend exited ({self.backend.returncode}) during the run")
            if time.monotonic() > self.deadline:
                raise RuntimeError(f"timeout after {self.args.timeout:.0f} s waiting for the guest")
            time.sleep(0.1)

    def _check(self, n, suffix, lines, failures, notes):
        args = self.args
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
        vk_ok = True
        if args.expect_vulkan:
            vk_ok = self._check_vulkan(text, failures, notes)
        if self.result_line and not self.result_line.startswith("E2E-RESULT: PASS") \
                and args.expect_vulkan != "no-device":
            failures.append(f"guest: {self.result_line}")
        if args.expect_vulkan == "no-device" and vk_ok and self.result_line is None:
            failures.append("the guest reported no result")

        want_screen = args.check_screen != "none"
        if want_screen and self.screen_line and not self.result_line:
            self._check_screen(text, suffix, failures, notes)
        elif want_screen:
            failures.append("the guest never showed its picture (no E2E-SCREEN-READY)")
        elif self.screen_line and not self.result_line:
            notes.append("the guest showed its picture; not checked (--check-screen none)")
        if not self.result_line and not self.quit_sent and self.qemu.poll() is None:
            try:
                qmp = Qmp(self.qmp_path, timeout=5)
                self.quit_sent = True
                qmp.cmd("quit")
                qmp.close()
            except (ConnectionError, OSError, RuntimeError):
                pass

    def _check_vulkan(self, text, failures, notes):
        """The vulkan workload's lines: vulkaninfo's device and vkcheck's exact checks (pass), or
        no device at all (no-device). Returns whether the expectation held."""
        args = self.args
        gpu = [m.strip() for m in re.findall(
            r"^E2E-VK: \s*(deviceName\s*=.*|driverName\s*=.*|driverInfo\s*=.*|apiVersion\s*=.*)$",
            text, re.M)]
        if gpu:
            notes.append("vulkaninfo: " + "; ".join(" ".join(g.split()) for g in gpu))
        vk = re.findall(r"^E2E-VKCHECK: (VKCHECK-(?:DEVICE|RENDER|COMPUTE|RESULT|ERROR|TIMEOUT):.*)$",
                        text, re.M)
        for line in vk:
            notes.append(line)
        before = len(failures)
        if args.expect_vulkan == "pass":
            for want in ("VKCHECK-RENDER: ok", "VKCHECK-COMPUTE: ok", "VKCHECK-RESULT: PASS"):
                if not any(v.startswith(want) for v in vk):
                    failures.append(f"vkcheck did not print {want!r}")
            if not gpu:
                failures.append("vulkaninfo --summary listed no device")
        else:  # no-device: the driver finds nothing, cleanly (no hang, no wrong result)
            if gpu:
                failures.append("vulkaninfo found a device where none was expected: "
                                + "; ".join(gpu))
            if not re.search(r"^E2E-VKCHECK-EXIT: [1-9]\d*$", text, re.M):
                failures.append("vkcheck did not end with a failure of its own (no device expected)")
            if not any("vkEnumeratePhysicalDevices" in v or "no Vulkan physical device" in v
                       for v in vk if v.startswith("VKCHECK-ERROR")):
                failures.append("vkcheck did not report that no device was found")
        return len(failures) == before

    def _check_screen(self, text, suffix, failures, notes):
        args = self.args
        qmp = Qmp(self.qmp_path)
        ppm = os.path.join(self.out, f"screen{suffix}.ppm")
        want_w = want_h = None
        m = re.search(r"^E2E-FB: (\d+)x(\d+)", text, re.M) if args.check_screen == "fb-pattern" \
            else re.search(r"^E2E-SCREEN-READY: \S+ (\d+)x(\d+)", text, re.M)
        if m:
            want_w, want_h = int(m.group(1)), int(m.group(2))
        screen_deadline = min(self.deadline, time.monotonic() + args.screen_timeout)
        problem, prev, dumps, w, h = "no screendump taken", None, 0, 0, 0
        dbus_ppm = os.path.join(self.out, f"dbus-screen{suffix}.ppm")
        dbus_reply = None
        try:
            while True:
                if self.dbus_client is not None:
                    dbus_reply = self.dbus_client.request(f"dump {dbus_ppm}")
                    if not dbus_reply.get("ok"):
                        problem = f"D-Bus client: {dbus_reply.get('error')}"
                        if time.monotonic() > screen_deadline:
                            break
                        time.sleep(1.0)
                        continue
                    dumps += 1
                    w, h, rgb = read_ppm(dbus_ppm)
                else:
                    qmp.cmd("screendump", filename=ppm, format="ppm")
                    dumps += 1
                    w, h, rgb = read_ppm(ppm)
                if args.check_screen == "fb-pattern":
                    problem = check_fb_pattern(w, h, rgb, want_w, want_h)
                elif args.check_screen == "glclear":
                    problem = check_glclear(w, h, rgb, want_w, want_h)
                else:
                    nc = distinct_colours(rgb)
                    if nc < 50:
                        problem = f"only {nc} distinct colours on screen"
                    elif prev is None or prev == rgb:
                        problem = "screen does not change between screendumps"
                    else:
                        problem = None
                    prev = rgb
                if problem is None or time.monotonic() > screen_deadline:
                    break
                time.sleep(1.0)
        except RuntimeError as e:
            problem = str(e)
        if self.dbus_client is not None:
            notes.append(f"D-Bus picture {w}x{h} ({(dbus_reply or {}).get('source')}), "
                         f"{dumps} dump(s)")
            if dbus_reply and dbus_reply.get("stats"):
                notes.append(dbus_summary(dbus_reply["stats"]))
            if problem:
                failures.append(f"D-Bus picture ({args.check_screen}): {problem}")
            elif args.check_screen != "animated":
                # The same picture must be in QEMU's own surface.
                try:
                    qmp.cmd("screendump", filename=ppm, format="ppm")
                    qw, qh, qrgb = read_ppm(ppm)
                    if (qw, qh, qrgb) != (w, h, rgb):
                        failures.append(f"QMP screendump ({qw}x{qh}) differs from the D-Bus "
                                        f"picture ({w}x{h})")
                    else:
                        notes.append("QMP screendump equals the D-Bus picture")
                except (RuntimeError, ValueError) as e:
                    failures.append(f"QMP screendump: {e}")
        else:
            notes.append(f"screen {w}x{h}, {dumps} screendump(s)")
            if problem:
                failures.append(f"screen ({args.check_screen}): {problem}")
        try:
            png = args.png if args.png and suffix == "" else os.path.join(self.out, f"screen{suffix}.png")
            qmp.cmd("screendump", filename=os.path.abspath(png), format="png")
        except RuntimeError as e:
            notes.append(f"PNG screendump failed: {e}")
        try:
            self.quit_sent = True
            qmp.cmd("quit")
        except (ConnectionError, OSError):
            pass
        qmp.close()

    def close(self):
        if self.dbus_client is not None:
            self.dbus_client.close()
        stop(self.qemu, "QEMU")
        stop(self.backend, "backend")
        stop(self.dbus_daemon, "dbus-daemon")
        for p in (self.sock, self.qmp_path, os.path.join(self.rundir, "bus.sock")):
            unlink_if_there(p)
        os.rmdir(self.rundir)


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
    ap.add_argument("--boots", type=int, default=1,
                    help="boot the guest this many times, one QEMU after the other, against the "
                         "same backend process (it must serve each new connection)")
    ap.add_argument("--out", help="output directory (default: a new one under /tmp)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for the whole run")
    ap.add_argument("--expect-feature", action="append", default=[], metavar="NAME=VALUE",
                    help="a line of the guest's debugfs virtio-gpu-features, e.g. virgl=yes, "
                         "or NAME!=VALUE, e.g. cap_sets!=0")
    ap.add_argument("--expect-gl-renderer", metavar="TEXT",
                    help="the GL renderer string the guest prints must contain TEXT (case-insensitive)")
    ap.add_argument("--reject-gl-renderer", metavar="TEXT",
                    help="the GL renderer string must not contain TEXT")
    ap.add_argument("--guest-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to the guest as e2e.KEY=VALUE on the kernel command line (e.g. "
                         "vkicd=gfxstream for the vulkan workload)")
    ap.add_argument("--expect-vulkan", choices=["pass", "no-device"],
                    help="vulkan workload: vulkaninfo finds a device and vkcheck's render and "
                         "compute checks pass (pass), or the driver finds no device and says so "
                         "(no-device)")
    ap.add_argument("--expect-backend-log", action="append", default=[], metavar="TEXT",
                    help="the backend's log must contain TEXT")
    ap.add_argument("--check-screen", choices=["none", "fb-pattern", "glclear", "animated"],
                    default="none")
    ap.add_argument("--screen-timeout", type=float, default=30,
                    help="seconds to wait for the expected picture after the guest shows it")
    ap.add_argument("--dbus-client", action="store_true",
                    help="-display dbus on a private bus with our D-Bus listener "
                         "(scripts/dbus/display-client.py) on console 0; --check-screen checks "
                         "the picture it received, and a QMP screendump must equal it")
    ap.add_argument("--dbus-gl", choices=["auto", "on", "off"], default="auto",
                    help="with --dbus-client: -display dbus,gl=...; auto: on for a vhost-user "
                         "backend (QEMU requires a DMABUF-capable display for vhost-user-gpu; GL "
                         "needs a DRM render node), off for --backend none")
    ap.add_argument("--dbus-rendernode", metavar="PATH",
                    help="with --dbus-client and gl=on: -display dbus,...,rendernode=PATH. "
                         "Without a DRM render node (no /dev/dri here) a non-DRM path such as "
                         "/dev/null makes Mesa's GBM fall back to its software rasterizer, so "
                         "QEMU's GL display runs on llvmpipe")
    ap.add_argument("--dbus-map", action="store_true",
                    help="with --dbus-client: the listener offers org.qemu.Display1.Listener."
                         "Unix.Map (QEMU shares its surface as memory: ScanoutMap/UpdateMap)")
    ap.add_argument("--png", help="also write the final screen as PNG to this path")
    ap.add_argument("--kernel")
    ap.add_argument("--initrd")
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--cpu", default="Nehalem",
                    help="QEMU -cpu model (with 'max', LLVM in the guest aborts: \"64-bit code "
                         "requested on a subtarget that doesn't support it\")")
    ap.add_argument("--qemu", default=os.environ.get("QEMU", "qemu-system-x86_64"),
                    help="QEMU binary (with --qemu-chroot: found in the chroot)")
    ap.add_argument("--qemu-chroot", metavar="SUITE",
                    help="run QEMU inside the chroot of scripts/chroot/setup.sh SUITE (e.g. trixie: "
                         "QEMU 11.1)")
    ap.add_argument("--backend-chroot", metavar="SUITE",
                    help="run the backend command inside that chroot (e.g. a daemon built there)")
    ap.add_argument("--gpu-device", choices=["vhost-user-gpu-pci", "test-device"],
                    default="vhost-user-gpu-pci",
                    help="QEMU device for the backend: vhost-user-gpu-pci (default) or test-device "
                         "(vhost-user-test-device-pci as virtio-gpu: every backend feature reaches "
                         "the guest, no display, so no --check-screen)")
    args = ap.parse_args()
    if args.boots < 1:
        ap.error("--boots must be at least 1")
    for extra in args.guest_arg:
        if not re.fullmatch(r"[a-z_]+=[A-Za-z0-9_.,-]+", extra):
            ap.error(f"--guest-arg {extra!r}: KEY=VALUE of letters, digits and _.,-")
    if args.dbus_map and not args.dbus_client:
        ap.error("--dbus-map needs --dbus-client")
    if args.dbus_client and args.display != "none":
        ap.error("--dbus-client sets -display dbus itself: no --display")
    if args.gpu_device == "test-device":
        if args.check_screen != "none":
            ap.error(f"--check-screen {args.check_screen} needs a display: "
                     "--gpu-device test-device (vhost-user-test-device-pci) has none")
        if args.png:
            ap.error("--png needs a display: --gpu-device test-device has none")
        if args.backend == "none":
            ap.error("--gpu-device test-device needs a vhost-user backend, not --backend none")

    out = args.out or tempfile.mkdtemp(prefix=f"e2e-{args.workload}-")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if re.fullmatch(r"(serial|qemu|screen|dbus-screen|dbus-client|dbus)(-\d+)?\.(log|cmd|ppm|png|jsonl)"
                        r"|backend\.log|dbus-daemon\.log|result\.txt", name):
            os.unlink(os.path.join(out, name))

    if args.kernel and args.initrd:
        kernel, initrd = args.kernel, args.initrd
    else:
        kernel, initrd = guest_artefacts()
    if args.qemu_chroot:
        # QEMU opens these (and writes the serial log and screendumps) inside the chroot.
        try:
            out = chroot_path(out, "--out")
            kernel = chroot_path(kernel, "--kernel")
            initrd = chroot_path(initrd, "--initrd")
        except ValueError as e:
            ap.error(str(e))

    run = Run(args, out, kernel, initrd)
    try:
        if args.dbus_client:
            run.start_dbus()
        run.start_backend()
        for n in range(1, args.boots + 1):
            if not run.boot(n) or time.monotonic() > run.deadline:
                break
    except (RuntimeError, OSError, ValueError) as e:
        run.failures.append(str(e))
    except Exception as e:  # a bug of this script: a failure with its traceback, never a crash
        traceback.print_exc()
        run.failures.append(f"run-guest.py: {type(e).__name__}: {e} (traceback on stderr)")
    finally:
        run.close()
    if args.expect_backend_log:
        try:
            with open(os.path.join(out, "backend.log"), "rb") as f:
                blog = f.read().decode("utf-8", "replace")
        except OSError:
            blog = ""
        for want in args.expect_backend_log:
            if want not in blog:
                run.failures.append(f"the backend's log does not say {want!r}")

    failures, notes = run.failures, run.notes
    verdict = "PASS" if not failures else "FAIL"
    summary = [f"{verdict} workload={args.workload} ({time.monotonic() - run.start:.1f} s)"]
    summary += [f"  note: {n}" for n in notes] + [f"  failure: {f}" for f in failures]
    summary.append(f"  logs: {out}")
    with open(os.path.join(out, "result.txt"), "w") as f:
        f.write("\n".join(summary) + "\n")
    print("\n".join(summary))
    if failures and run.lines:
        print("  --- last serial lines:")
        for line in run.lines[-15:]:
            print("  | " + line)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
