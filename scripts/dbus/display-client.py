#!/usr/bin/python3
"""A test client of QEMU's D-Bus display (-display dbus): records what console N shows.

    display-client.py --address unix:path=/tmp/x/bus --log events.jsonl [--map] [--console 0]

Connects to the bus QEMU is on (a private dbus-daemon; `-display dbus,addr=ADDRESS`), waits for
QEMU's name org.qemu, hands one end of a socketpair to org.qemu.Display1.Console.RegisterListener
on /org/qemu/Display1/Console_N and serves org.qemu.Display1.Listener on
/org/qemu/Display1/Listener on that peer-to-peer connection (QEMU authenticates as the server, we
as the client). With --map it also offers org.qemu.Display1.Listener.Unix.Map (listed in the
Listener's Interfaces property): QEMU then shares its surface as a memfd (ScanoutMap) and sends
only rectangles (UpdateMap).

It keeps the current picture (RGB, converted from the pixman format of each call) and counts what
arrived: Scanout, Update (with their rectangles), ScanoutMap/UpdateMap, ScanoutDMABUF/UpdateDMABUF
(`-display dbus,gl=on`: a linear DMA-BUF is read by mmap when the picture is asked for; untested
here, no DRM render node on the development host), Disable, CursorDefine, MouseSet. Each call is one JSON line in --log.

Commands on stdin, one a line, each answered by one JSON line on stdout:
    dump PATH   the current picture as a binary PPM (P6) at PATH (written whole, then renamed),
                answered {"ok": true, "width": W, "height": H, "source": ..., "stats": {...}}
                or {"ok": false, "error": ...} when no picture has arrived yet
    stats       {"ok": true, "stats": {...}}
    quit        ends the client
The first line on stdout is {"registered": true, ...} once the listener is registered (or
{"registered": false, "error": ...}, then exit status 1).

Python 3 with PyGObject's Gio (Debian: python3-gi, gir1.2-glib-2.0): GDBus is the D-Bus
implementation QEMU itself uses, and it can do what this needs that the pure-Python libraries
cannot all do: client authentication on an arbitrary socket (the peer-to-peer connection), Unix fd
passing both ways (RegisterListener's fd, ScanoutMap's memfd) and serving methods and properties.
"""
import argparse
import fcntl
import json
import mmap
import os
import socket
import sys
import time

import gi

gi.require_version("Gio", "2.0")
gi.require_version("GLib", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

LISTENER_PATH = "/org/qemu/Display1/Listener"
LISTENER_XML = """
<node>
  <interface name="org.qemu.Display1.Listener">
    <method name="Scanout">
      <arg type="u" name="width" direction="in"/><arg type="u" name="height" direction="in"/>
      <arg type="u" name="stride" direction="in"/><arg type="u" name="pixman_format" direction="in"/>
      <arg type="ay" name="data" direction="in"/>
    </method>
    <method name="Update">
      <arg type="i" name="x" direction="in"/><arg type="i" name="y" direction="in"/>
      <arg type="i" name="width" direction="in"/><arg type="i" name="height" direction="in"/>
      <arg type="u" name="stride" direction="in"/><arg type="u" name="pixman_format" direction="in"/>
      <arg type="ay" name="data" direction="in"/>
    </method>
    <method name="ScanoutDMABUF">
      <arg type="h" name="dmabuf" direction="in"/><arg type="u" name="width" direction="in"/>
      <arg type="u" name="height" direction="in"/><arg type="u" name="stride" direction="in"/>
      <arg type="u" name="fourcc" direction="in"/><arg type="t" name="modifier" direction="in"/>
      <arg type="b" name="y0_top" direction="in"/>
    </method>
    <method name="UpdateDMABUF">
      <arg type="i" name="x" direction="in"/><arg type="i" name="y" direction="in"/>
      <arg type="i" name="width" direction="in"/><arg type="i" name="height" direction="in"/>
    </method>
    <method name="Disable"/>
    <method name="MouseSet">
      <arg type="i" name="x" direction="in"/><arg type="i" name="y" direction="in"/>
      <arg type="i" name="on" direction="in"/>
    </method>
    <method name="CursorDefine">
      <arg type="i" name="width" direction="in"/><arg type="i" name="height" direction="in"/>
      <arg type="i" name="hot_x" direction="in"/><arg type="i" name="hot_y" direction="in"/>
      <arg type="ay" name="data" direction="in"/>
    </method>
    <property name="Interfaces" type="as" access="read"/>
  </interface>
  <interface name="org.qemu.Display1.Listener.Unix.Map">
    <method name="ScanoutMap">
      <arg type="h" name="handle" direction="in"/><arg type="u" name="offset" direction="in"/>
      <arg type="u" name="width" direction="in"/><arg type="u" name="height" direction="in"/>
      <arg type="u" name="stride" direction="in"/><arg type="u" name="pixman_format" direction="in"/>
    </method>
    <method name="UpdateMap">
      <arg type="i" name="x" direction="in"/><arg type="i" name="y" direction="in"/>
      <arg type="i" name="width" direction="in"/><arg type="i" name="height" direction="in"/>
    </method>
  </interface>
</node>
"""
MAP_IFACE = "org.qemu.Display1.Listener.Unix.Map"


def pixman_format(bpp, typ, a, r, g, b):
    return (bpp << 24) | (typ << 16) | (a << 12) | (r << 8) | (g << 4) | b


# 32-bit pixman formats (native-endian words, little-endian host): the byte offsets of R, G, B.
PIXMAN_TYPE_ARGB, PIXMAN_TYPE_ABGR, PIXMAN_TYPE_BGRA, PIXMAN_TYPE_RGBA = 2, 3, 8, 9
FORMATS = {}
for _a in (0, 8):
    FORMATS[pixman_format(32, PIXMAN_TYPE_ARGB, _a, 8, 8, 8)] = ("a8r8g8b8" if _a else "x8r8g8b8", 2, 1, 0)
    FORMATS[pixman_format(32, PIXMAN_TYPE_ABGR, _a, 8, 8, 8)] = ("a8b8g8r8" if _a else "x8b8g8r8", 0, 1, 2)
    FORMATS[pixman_format(32, PIXMAN_TYPE_BGRA, _a, 8, 8, 8)] = ("b8g8r8a8" if _a else "b8g8r8x8", 1, 2, 3)
    FORMATS[pixman_format(32, PIXMAN_TYPE_RGBA, _a, 8, 8, 8)] = ("r8g8b8a8" if _a else "r8g8b8x8", 3, 2, 1)


# DRM fourccs of DMA-BUF scanouts (little-endian words): the byte offsets of R, G, B.
DRM_FORMATS = {
    0x34325258: ("XR24", 2, 1, 0), 0x34325241: ("AR24", 2, 1, 0),
    0x34324258: ("XB24", 0, 1, 2), 0x34324241: ("AB24", 0, 1, 2),
}
DRM_FORMAT_MOD_LINEAR, DRM_FORMAT_MOD_INVALID = 0, 0x00FFFFFFFFFFFFFF
DMA_BUF_IOCTL_SYNC = 0x40086200  # _IOW('b', 0, struct dma_buf_sync { __u64 flags; })
DMA_BUF_SYNC_READ, DMA_BUF_SYNC_START, DMA_BUF_SYNC_END = 1, 0, 4


def read_dmabuf(fd, w, h, stride, fourcc, modifier, y0_top):
    """RGB bytes of a linear 32-bit DMA-BUF (mmap of the fd, as the kernel allows for most
    exporters), top row first."""
    if fourcc not in DRM_FORMATS:
        raise ValueError(f"DMA-BUF fourcc 0x{fourcc:08x} not supported")
    if modifier not in (DRM_FORMAT_MOD_LINEAR, DRM_FORMAT_MOD_INVALID):
        raise ValueError(f"DMA-BUF modifier 0x{modifier:x} is not linear: cannot be read by mmap")
    m = mmap.mmap(fd, stride * h, mmap.MAP_SHARED, mmap.PROT_READ)
    try:
        try:
            fcntl.ioctl(fd, DMA_BUF_IOCTL_SYNC,
                        (DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ).to_bytes(8, "little"))
        except OSError:
            pass
        data = m[:]
        try:
            fcntl.ioctl(fd, DMA_BUF_IOCTL_SYNC,
                        (DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ).to_bytes(8, "little"))
        except OSError:
            pass
    finally:
        m.close()
    _, ro, go, bo = DRM_FORMATS[fourcc]
    rows = [data[y * stride:y * stride + w * 4] for y in range(h)]
    if not y0_top:
        rows.reverse()
    src = b"".join(rows)
    out = bytearray(w * h * 3)
    out[0::3] = src[ro::4]
    out[1::3] = src[go::4]
    out[2::3] = src[bo::4]
    return out


def format_name(fmt):
    return FORMATS[fmt][0] if fmt in FORMATS else f"0x{fmt:08x}"


def to_rgb(data, w, h, stride, fmt):
    """RGB bytes (w*h*3) of a 32-bit pixman image."""
    if fmt not in FORMATS:
        raise ValueError(f"pixman format 0x{fmt:08x} not supported (32-bit RGB formats only)")
    _, ro, go, bo = FORMATS[fmt]
    if stride == w * 4:
        src = data[:w * h * 4]
    else:
        src = b"".join(data[y * stride:y * stride + w * 4] for y in range(h))
    if len(src) < w * h * 4:
        raise ValueError(f"image data of {len(data)} bytes is short for {w}x{h} stride {stride}")
    out = bytearray(w * h * 3)
    out[0::3] = src[ro::4]
    out[1::3] = src[go::4]
    out[2::3] = src[bo::4]
    return out


class Listener:
    def __init__(self, args, loop):
        self.args, self.loop = args, loop
        self.log_file = open(args.log, "w") if args.log else None
        self.t0 = time.monotonic()
        self.rgb = None          # the current picture (Scanout/Update path), RGB
        self.size = (0, 0)
        self.map = None          # (mmap, offset, w, h, stride, fmt) on the ScanoutMap path
        self.dmabuf = None       # (fd, w, h, stride, fourcc, modifier, y0_top) on the GL path
        self.enabled = False
        self.counts = {}
        self.update_rects = []   # (x, y, w, h) of Update calls, in order (first 1000)
        self.update_map_rects = []
        self.update_area = 0
        self.scanouts = []       # (w, h, stride, format) of each Scanout/ScanoutMap
        self.cursor = None
        self.mouse = None
        self.errors = []
        self.outside = 0         # Update calls (partly) outside the current Scanout
        self.closed = False

    def record(self, method, **kw):
        self.counts[method] = self.counts.get(method, 0) + 1
        if self.log_file:
            kw = {"t": round(time.monotonic() - self.t0, 3), "method": method, **kw}
            self.log_file.write(json.dumps(kw) + "\n")
            self.log_file.flush()

    def stats(self):
        return {
            "counts": self.counts,
            "scanouts": self.scanouts[-20:],
            "updates": len(self.update_rects),
            "update_rects": self.update_rects[:50],
            "update_area": self.update_area,
            "updates_outside_scanout": self.outside,
            "update_maps": len(self.update_map_rects),
            "update_map_rects": self.update_map_rects[:50],
            "mapped": self.map is not None,
            "enabled": self.enabled,
            "cursor": self.cursor,
            "mouse": self.mouse,
            "errors": self.errors[:10],
            "connection_closed": self.closed,
        }

    # org.qemu.Display1.Listener and .Unix.Map
    def method_call(self, conn, sender, path, iface, method, params, invocation):
        try:
            getattr(self, "on_" + method)(params, invocation)
        except Exception as e:  # noqa: BLE001 -- reported to QEMU and recorded
            self.errors.append(f"{method}: {e}")
            invocation.return_dbus_error("org.qemu.Display1.Error.Failed", f"{method}: {e}")
            return
        invocation.return_value(None)

    def get_property(self, conn, sender, path, iface, prop):
        if iface == "org.qemu.Display1.Listener" and prop == "Interfaces":
            return GLib.Variant("as", [MAP_IFACE] if self.args.map else [])
        return None

    def _drop_map(self):
        if self.map is not None:
            self.map[0].close()
            self.map = None
        if self.dmabuf is not None:
            os.close(self.dmabuf[0])
            self.dmabuf = None

    def on_Scanout(self, p, inv):
        w, h, stride, fmt = (p.get_child_value(i).unpack() for i in range(4))
        data = p.get_child_value(4).get_data_as_bytes().get_data()
        self.record("Scanout", width=w, height=h, stride=stride, format=format_name(fmt),
                    bytes=len(data))
        self._drop_map()
        self.scanouts.append([w, h, stride, format_name(fmt)])
        self.rgb = to_rgb(data, w, h, stride, fmt)
        self.size = (w, h)
        self.enabled = True

    def on_Update(self, p, inv):
        x, y, w, h, stride, fmt = (p.get_child_value(i).unpack() for i in range(6))
        data = p.get_child_value(6).get_data_as_bytes().get_data()
        self.record("Update", x=x, y=y, width=w, height=h, stride=stride, format=format_name(fmt),
                    bytes=len(data))
        self.update_rects.append([x, y, w, h])
        self.update_area += w * h
        fw, fh = self.size
        if self.rgb is None:
            raise ValueError("Update before any Scanout")
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise ValueError(f"Update {w}x{h}+{x}+{y}: a negative or empty rectangle")
        rect = to_rgb(data, w, h, stride, fmt)
        # What lies inside the scanout is applied; the rest is an error (QEMU switched to a
        # surface of another size without a Scanout of it).
        cw, ch = max(0, min(w, fw - x)), max(0, min(h, fh - y))
        for row in range(ch):
            dst = ((y + row) * fw + x) * 3
            self.rgb[dst:dst + cw * 3] = rect[row * w * 3:row * w * 3 + cw * 3]
        if (cw, ch) != (w, h):
            self.outside += 1
            raise ValueError(f"Update {w}x{h}+{x}+{y} outside the {fw}x{fh} scanout")

    def on_ScanoutMap(self, p, inv):
        handle, offset, w, h, stride, fmt = (p.get_child_value(i).unpack() for i in range(6))
        fds = inv.get_message().get_unix_fd_list()
        if fds is None:
            raise ValueError("ScanoutMap without a file descriptor")
        fd = fds.get(handle)
        self.record("ScanoutMap", offset=offset, width=w, height=h, stride=stride,
                    format=format_name(fmt))
        self._drop_map()
        try:
            size = os.fstat(fd).st_size
            need = offset + stride * h
            if size < need:
                raise ValueError(f"shared memory of {size} bytes, the scanout needs {need}")
            m = mmap.mmap(fd, need, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        self.map = (m, offset, w, h, stride, fmt)
        self.scanouts.append([w, h, stride, format_name(fmt), "map"])
        self.rgb = None
        self.size = (w, h)
        self.enabled = True

    def on_UpdateMap(self, p, inv):
        x, y, w, h = (p.get_child_value(i).unpack() for i in range(4))
        self.record("UpdateMap", x=x, y=y, width=w, height=h)
        self.update_map_rects.append([x, y, w, h])
        self.update_area += w * h

    def on_ScanoutDMABUF(self, p, inv):
        handle, w, h, stride, fourcc, modifier, y0_top = (p.get_child_value(i).unpack()
                                                          for i in range(7))
        fds = inv.get_message().get_unix_fd_list()
        self.record("ScanoutDMABUF", width=w, height=h, stride=stride, fourcc=f"0x{fourcc:08x}",
                    modifier=modifier, y0_top=y0_top)
        self._drop_map()
        if fds is None:
            raise ValueError("ScanoutDMABUF without a file descriptor")
        self.dmabuf = (fds.get(handle), w, h, stride, fourcc, modifier, y0_top)
        self.scanouts.append([w, h, stride, DRM_FORMATS.get(fourcc, (f"0x{fourcc:08x}",))[0],
                              "dmabuf"])
        self.rgb = None
        self.size = (w, h)
        self.enabled = True

    def on_UpdateDMABUF(self, p, inv):
        x, y, w, h = (p.get_child_value(i).unpack() for i in range(4))
        self.record("UpdateDMABUF", x=x, y=y, width=w, height=h)
        self.update_map_rects.append([x, y, w, h])
        self.update_area += w * h

    def on_Disable(self, p, inv):
        self.record("Disable")
        self.enabled = False

    def on_MouseSet(self, p, inv):
        x, y, on = (p.get_child_value(i).unpack() for i in range(3))
        self.record("MouseSet", x=x, y=y, on=on)
        self.mouse = [x, y, on]

    def on_CursorDefine(self, p, inv):
        w, h, hx, hy = (p.get_child_value(i).unpack() for i in range(4))
        data = p.get_child_value(4).get_data_as_bytes().get_data()
        self.record("CursorDefine", width=w, height=h, hot_x=hx, hot_y=hy, bytes=len(data))
        self.cursor = [w, h, hx, hy, len(data)]

    def picture(self):
        """(w, h, rgb, source) of what the console shows now, or None."""
        if self.map is not None:
            m, offset, w, h, stride, fmt = self.map
            return w, h, to_rgb(m[offset:offset + stride * h], w, h, stride, fmt), "ScanoutMap"
        if self.dmabuf is not None:
            fd, w, h, stride, fourcc, modifier, y0_top = self.dmabuf
            return w, h, read_dmabuf(fd, w, h, stride, fourcc, modifier, y0_top), "ScanoutDMABUF"
        if self.rgb is not None:
            return self.size[0], self.size[1], self.rgb, "Scanout/Update"
        return None

    def dump(self, path):
        pic = self.picture()
        if pic is None:
            return {"ok": False, "error": "no scanout received yet", "stats": self.stats()}
        w, h, rgb, source = pic
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"P6\n%d %d\n255\n" % (w, h))
            f.write(rgb)
        os.rename(tmp, path)
        return {"ok": True, "width": w, "height": h, "source": source, "stats": self.stats()}


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def wait_for_name(bus, name, timeout):
    deadline = time.monotonic() + timeout
    while True:
        has = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                            "NameHasOwner", GLib.Variant("(s)", (name,)), GLib.VariantType("(b)"),
                            Gio.DBusCallFlags.NONE, 5000, None).unpack()[0]
        if has:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} did not appear on the bus in {timeout:.0f} s")
        time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--address", required=True, help="D-Bus address of the bus QEMU is on")
    ap.add_argument("--console", type=int, default=0)
    ap.add_argument("--map", action="store_true",
                    help="offer org.qemu.Display1.Listener.Unix.Map (shared memory scanouts)")
    ap.add_argument("--log", help="one JSON line per listener call")
    ap.add_argument("--wait", type=float, default=60, help="seconds to wait for org.qemu")
    ap.add_argument("--dump", metavar="PPM", help="no command loop: wait --settle seconds after "
                    "registering, write the picture to PPM, print the stats and exit")
    ap.add_argument("--settle", type=float, default=5)
    args = ap.parse_args()

    loop = GLib.MainLoop()
    listener = Listener(args, loop)
    try:
        bus = Gio.DBusConnection.new_for_address_sync(
            args.address,
            Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
        wait_for_name(bus, "org.qemu", args.wait)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = Gio.UnixFDList.new()
        idx = fds.append(theirs.fileno())
        theirs.close()
        console = f"/org/qemu/Display1/Console_{args.console}"
        # QEMU answers first, then authenticates the socket as the server (blocking its main loop
        # until we have authenticated as the client below).
        bus.call_with_unix_fd_list_sync("org.qemu", console, "org.qemu.Display1.Console",
                                        "RegisterListener", GLib.Variant("(h)", (idx,)), None,
                                        Gio.DBusCallFlags.NONE, 10000, fds, None)
        gsock = Gio.Socket.new_from_fd(ours.detach())
        stream = gsock.connection_factory_create_connection()
        p2p = Gio.DBusConnection.new_sync(
            stream, None,
            Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.DELAY_MESSAGE_PROCESSING, None, None)
        node = Gio.DBusNodeInfo.new_for_xml(LISTENER_XML)
        for iface in node.interfaces:
            if iface.name == MAP_IFACE and not args.map:
                continue
            p2p.register_object(LISTENER_PATH, iface, listener.method_call,
                                listener.get_property, None)
        p2p.start_message_processing()
    except (GLib.Error, OSError, TimeoutError) as e:
        reply({"registered": False, "error": str(e)})
        return 1

    def on_closed(conn, remote_peer_vanished, error):
        listener.closed = True
        listener.record("closed", remote_peer_vanished=remote_peer_vanished,
                        error=error.message if error else None)
        if args.dump:
            loop.quit()

    p2p.connect("closed", on_closed)
    reply({"registered": True, "console": args.console, "map_offered": args.map})

    if args.dump:
        def finish():
            res = listener.dump(args.dump)
            reply(res)
            loop.quit()
            return False
        GLib.timeout_add(int(args.settle * 1000), finish)
    else:
        stdin = GLib.IOChannel.unix_new(sys.stdin.fileno())
        buf = []

        def on_stdin(channel, cond):
            if cond & (GLib.IOCondition.HUP | GLib.IOCondition.ERR) and not (cond & GLib.IOCondition.IN):
                loop.quit()
                return False
            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                loop.quit()
                return False
            buf.append(chunk)
            data = b"".join(buf)
            *lines, rest = data.split(b"\n")
            buf[:] = [rest]
            for raw in lines:
                cmd, _, arg = raw.decode().strip().partition(" ")
                if cmd == "dump":
                    try:
                        reply(listener.dump(arg))
                    except (OSError, ValueError) as e:
                        reply({"ok": False, "error": str(e), "stats": listener.stats()})
                elif cmd == "stats":
                    reply({"ok": True, "stats": listener.stats()})
                elif cmd == "quit":
                    reply({"ok": True})
                    loop.quit()
                    return False
                elif cmd:
                    reply({"ok": False, "error": f"unknown command {cmd!r}"})
            return True

        GLib.io_add_watch(stdin, GLib.PRIORITY_DEFAULT,
                          GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR, on_stdin)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
