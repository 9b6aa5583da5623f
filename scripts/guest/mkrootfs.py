#!/usr/bin/env python3
"""Assembles the guest's root filesystem (an initramfs: newc cpio, optionally zstd-compressed).

Input: a staging directory with Debian packages unpacked by `dpkg -x`, the kernel version, and the
extra files (init, workloads, guest programs). Only what the guest needs is copied:
- the ELF closure (DT_NEEDED, resolved like ld.so does) of the root binaries and of the libraries
  that are dlopen()ed (the Mesa DRI driver, the EGL vendor library);
- a few data files (the glvnd EGL vendor file, drirc);
- the kernel modules that virtio-gpu needs and their dependencies (from each module's .modinfo
  `depends=`), in load order in /etc/e2e/modules; compressed modules (.ko.xz, .ko.zst, .ko.gz, as
  newer Debian kernels ship them) are stored decompressed, so that busybox's insmod loads them;
- with --vulkan: the Vulkan loader (through the programs that link it), vulkaninfo, and Mesa's
  Venus (virtio), gfxstream and lavapipe ICDs: their json files and their libraries' ELF closure.
The layout is /usr-merged (bin, sbin, lib, lib64 are links into usr). Python 3 standard library plus
binutils' readelf. Written for scripts/guest/build.sh.
"""
import argparse
import os
import stat
import subprocess
import sys

MULTIARCH = "x86_64-linux-gnu"
LIB_DIRS = [f"usr/lib/{MULTIARCH}", "usr/lib", "usr/lib64"]
# Executables copied into the guest (path in the staging tree).
ROOT_BINARIES = ["usr/bin/busybox", "usr/bin/kmscube", "usr/bin/glmark2-es2-drm"]
# Libraries the programs dlopen(): the closure follows them too.
DLOPEN_ROOTS = [
    f"usr/lib/{MULTIARCH}/dri/virtio_gpu_dri.so",
    f"usr/lib/{MULTIARCH}/libEGL_mesa.so.0",
]
# Names under which Mesa may look for the same megadriver (links to virtio_gpu_dri.so).
DRI_ALIASES = ["kms_swrast_dri.so", "swrast_dri.so"]
DATA_PATHS = [
    "usr/share/glvnd/egl_vendor.d/50_mesa.json",
    "usr/share/drirc.d",
    "usr/share/glmark2",  # glmark2's models, shaders and textures
]
# Mesa >= 24.2 (Debian 12 backports): GBM loads its DRI backend from gbm/; added when present.
OPTIONAL_DLOPEN_ROOTS = [f"usr/lib/{MULTIARCH}/gbm/dri_gbm.so"]
# --vulkan: Mesa's Vulkan ICDs (dlopen()ed by the loader) and what points the loader at them.
VULKAN_BINARIES = ["usr/bin/vulkaninfo"]
VULKAN_ICDS = {
    "virtio_icd.json": f"usr/lib/{MULTIARCH}/libvulkan_virtio.so",  # Venus
    "gfxstream_vk_icd.json": f"usr/lib/{MULTIARCH}/libvulkan_gfxstream.so",
    "lvp_icd.json": f"usr/lib/{MULTIARCH}/libvulkan_lvp.so",  # lavapipe: a reference in the guest
}
MODULE_ROOTS = ["virtio_pci", "virtio_gpu"]
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def merged(path):
    """Maps a path of a package to its place in a /usr-merged tree."""
    for top in ("bin", "sbin", "lib", "lib64"):
        if path == top or path.startswith(top + "/"):
            return "usr/" + path
    return path


class Rootfs:
    def __init__(self, staging):
        self.staging = staging
        # rootfs path -> ("file", src) | ("link", target) | ("dir",) | ("chr", major, minor)
        self.entries = {}

    def src(self, path):
        """The staging path holding `path` (a merged path), or None."""
        for cand in (path, path[4:] if path.startswith("usr/") else None):
            if cand is not None and os.path.lexists(os.path.join(self.staging, cand)):
                return os.path.join(self.staging, cand)
        return None

    def add_dirs(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            self.entries.setdefault(d, ("dir",))

    def add_path(self, path, depth=0):
        """Adds a file or a link chain (merged path); returns the final file's merged path."""
        if depth > 20:
            raise SystemExit(f"mkrootfs: link loop at {path}")
        s = self.src(path)
        if s is None:
            raise SystemExit(f"mkrootfs: {path} is not in any downloaded package")
        self.add_dirs(path)
        if os.path.islink(s):
            target = os.readlink(s)
            self.entries[path] = ("link", target)
            if target.startswith("/"):
                nxt = merged(target.lstrip("/"))
            else:
                nxt = os.path.normpath(os.path.join(os.path.dirname(path), target))
            return self.add_path(merged(nxt), depth + 1)
        if os.path.isdir(s):
            for name in sorted(os.listdir(s)):
                self.add_path(path + "/" + name, depth)
            self.entries[path] = ("dir",)
            return path
        self.entries[path] = ("file", s)
        return path

    def add_file(self, path, src):
        self.add_dirs(path)
        self.entries[path] = ("file", src)


def elf_info(path):
    """(interpreter, [needed], [runpath dirs]) of an ELF file, or None for a non-ELF file."""
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return None
    out = subprocess.run(["readelf", "-dlW", path], check=True, capture_output=True, text=True).stdout
    interp, needed, runpath = None, [], []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("[Requesting program interpreter:"):
            interp = line.split(":", 1)[1].strip(" ]")
        elif "(NEEDED)" in line:
            needed.append(line.split("[", 1)[1].rstrip("]"))
        elif "(RUNPATH)" in line or "(RPATH)" in line:
            runpath += line.split("[", 1)[1].rstrip("]").split(":")
    return interp, needed, runpath


def elf_closure(fs, roots):
    todo = list(roots)
    seen = set()
    while todo:
        path = fs.add_path(todo.pop())
        if path in seen:
            continue
        seen.add(path)
        info = elf_info(fs.src(path))
        if info is None:
            continue
        interp, needed, runpath = info
        if interp:
            fs.add_path(merged(interp.lstrip("/")))
        for lib in needed:
            dirs = [os.path.normpath(d.replace("$ORIGIN", os.path.dirname(path))) for d in runpath]
            for d in dirs + LIB_DIRS:
                cand = merged(d.lstrip("/")) + "/" + lib
                if fs.src(cand) is not None:
                    todo.append(cand)
                    break
            else:
                raise SystemExit(f"mkrootfs: {path} needs {lib}, found in no downloaded package")


def module_bytes(path):
    """A module file's contents, decompressed."""
    if path.endswith(".ko.xz"):
        import lzma
        with lzma.open(path) as f:
            return f.read()
    if path.endswith(".ko.gz"):
        import gzip
        with gzip.open(path) as f:
            return f.read()
    if path.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    with open(path, "rb") as f:
        return f.read()


def modinfo_depends(data):
    i = data.find(b"\0depends=")
    if i < 0:
        return []
    end = data.index(b"\0", i + 1)
    val = data[i + len(b"\0depends="):end].decode()
    return [d for d in val.split(",") if d]


def add_modules(fs, kver, workdir):
    base = f"usr/lib/modules/{kver}"
    kdir = fs.src(base)
    if kdir is None:
        raise SystemExit(f"mkrootfs: no modules for kernel {kver}")
    index = {}
    for dirpath, _, files in os.walk(kdir):
        for name in files:
            for suffix in MODULE_SUFFIXES:
                if name.endswith(suffix):
                    index[name[:-len(suffix)].replace("-", "_")] = os.path.join(dirpath, name)
    # Built into the kernel (virtio_pci is from 6.12 on in Debian): nothing to load.
    builtin = set()
    builtin_list = os.path.join(kdir, "modules.builtin")
    if os.path.exists(builtin_list):
        with open(builtin_list) as f:
            for line in f:
                builtin.add(os.path.basename(line.strip()).split(".ko")[0].replace("-", "_"))
    order = []
    data = {}

    def visit(name, stack):
        if name in order or (name in builtin and name not in index):
            return
        if name in stack:
            raise SystemExit(f"mkrootfs: module dependency loop at {name}")
        if name not in index:
            raise SystemExit(f"mkrootfs: module {name} not found (built in?)")
        data[name] = module_bytes(index[name])
        for dep in modinfo_depends(data[name]):
            visit(dep.replace("-", "_"), stack + [name])
        order.append(name)

    for m in MODULE_ROOTS:
        visit(m, [])
    rel = []
    for name in order:
        r = os.path.relpath(index[name], kdir)
        src = index[name]
        if not r.endswith(".ko"):
            r = r[:r.rindex(".ko") + 3]
            src = os.path.join(workdir, "modules", r)
            os.makedirs(os.path.dirname(src), exist_ok=True)
            with open(src, "wb") as f:
                f.write(data[name])
        fs.add_file(f"{base}/{r}", src)
        rel.append(r)
    return rel


def cpio_newc(entries, out):
    ino = 1

    def header(name, mode, size, nlink=1, rdev=(0, 0)):
        nonlocal ino
        nameb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(nameb), 0]
        ino += 1
        h = b"070701" + b"".join(b"%08X" % v for v in fields) + nameb
        return h + b"\0" * (-len(h) % 4)

    for path in sorted(entries, key=lambda p: (p.count("/"), p) if entries[p][0] == "dir" else (99, p)):
        e = entries[path]
        if e[0] == "dir":
            out.write(header(path, stat.S_IFDIR | 0o755, 0, nlink=2))
        elif e[0] == "link":
            data = e[1].encode()
            out.write(header(path, stat.S_IFLNK | 0o777, len(data)) + data + b"\0" * (-len(data) % 4))
        elif e[0] == "chr":
            out.write(header(path, stat.S_IFCHR | 0o600, 0, rdev=(e[1], e[2])))
        else:
            st = os.stat(e[1])
            mode = 0o755 if st.st_mode & 0o111 else 0o644
            out.write(header(path, stat.S_IFREG | mode, st.st_size))
            with open(e[1], "rb") as f:
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
            out.write(b"\0" * (-st.st_size % 4))
    out.write(header("TRAILER!!!", 0, 0, nlink=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--staging", required=True)
    ap.add_argument("--kver", required=True)
    ap.add_argument("--out", required=True, help="cpio archive to write")
    ap.add_argument("--manifest", help="file list to write")
    ap.add_argument("--add", action="append", default=[], metavar="SRC:DEST",
                    help="extra file (DEST is a path in the guest)")
    ap.add_argument("--bin", action="append", default=[], metavar="SRC:DEST",
                    help="extra ELF program (its libraries are added too)")
    ap.add_argument("--vulkan", action="store_true",
                    help="add vulkaninfo and Mesa's Vulkan ICDs (Venus, gfxstream, lavapipe)")
    args = ap.parse_args()

    fs = Rootfs(args.staging)
    for d in ("bin", "sbin", "lib", "lib64"):
        fs.entries[d] = ("link", "usr/" + d)
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "dev", "proc", "sys", "tmp", "run",
              "root", "etc", "mnt"):
        fs.entries[d] = ("dir",)
    fs.entries["dev/console"] = ("chr", 5, 1)
    fs.entries["dev/null"] = ("chr", 1, 3)

    roots = ROOT_BINARIES + DLOPEN_ROOTS + [p for p in OPTIONAL_DLOPEN_ROOTS if fs.src(p) is not None]
    data_paths = list(DATA_PATHS)
    if args.vulkan:
        roots += VULKAN_BINARIES + list(VULKAN_ICDS.values())
        data_paths += [f"usr/share/vulkan/icd.d/{j}" for j in VULKAN_ICDS]
    for spec in args.bin:
        src, dest = spec.split(":", 1)
        fs.add_file(dest.lstrip("/"), os.path.abspath(src))
    elf_closure(fs, roots)
    # Extra programs: resolve their libraries against the staging tree as well.
    for spec in args.bin:
        src, dest = spec.split(":", 1)
        _, needed, _ = elf_info(src)
        for lib in needed:
            for d in LIB_DIRS:
                if fs.src(d + "/" + lib) is not None:
                    elf_closure(fs, [d + "/" + lib])
                    break
            else:
                raise SystemExit(f"mkrootfs: {src} needs {lib}, found in no downloaded package")
    dri = f"usr/lib/{MULTIARCH}/dri"
    for alias in DRI_ALIASES:
        fs.entries[f"{dri}/{alias}"] = ("link", "virtio_gpu_dri.so")
    for p in data_paths:
        fs.add_path(p)
    modules = add_modules(fs, args.kver, os.path.dirname(os.path.abspath(args.out)))
    for spec in args.add:
        src, dest = spec.split(":", 1)
        fs.add_file(dest.lstrip("/"), os.path.abspath(src))
    listing = os.path.join(os.path.dirname(os.path.abspath(args.out)), "modules.list")
    with open(listing, "w") as f:
        f.write("".join(m + "\n" for m in modules))
    fs.add_file("etc/e2e/modules", listing)
    fs.add_file("etc/e2e/kver", _write(os.path.dirname(os.path.abspath(args.out)), "kver", args.kver))

    with open(args.out, "wb") as out:
        cpio_newc(fs.entries, out)
    if args.manifest:
        total = 0
        with open(args.manifest, "w") as f:
            for p in sorted(fs.entries):
                e = fs.entries[p]
                size = os.stat(e[1]).st_size if e[0] == "file" else 0
                total += size
                f.write(f"{e[0]:4} {size:>10} /{p}" + (f" -> {e[1]}" if e[0] == "link" else "") + "\n")
        print(f"mkrootfs: {len(fs.entries)} entries, {total / 1e6:.1f} MB of files, "
              f"{len(modules)} modules", file=sys.stderr)


def _write(d, name, text):
    p = os.path.join(d, name)
    with open(p, "w") as f:
        f.write(text + "\n")
    return p


if __name__ == "__main__":
    main()
