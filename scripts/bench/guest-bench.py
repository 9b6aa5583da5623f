#!/usr/bin/env python3
"""Guest workloads in the benchmark, as users measure: the tests' QEMU + Linux guest runs
Debian's glmark2-es2-drm (off-screen, a fixed list of scenes; scripts/guest/workloads/glmark2.sh)
against each backend, interleaved (round 1: A B C ..., round 2: A B C ...), and reports the
median score and per-scene FPS of each, with ratios against the first backend. A backend that
cannot run the workload is reported with the reason, never dropped.

Backends (a name and how to run it; see --list):
  ours-virgl        our daemon --renderer virglrenderer, QEMU 10 (host), vhost-user-gpu-pci
                    (target/release/vhost-user-gpu, or $GUEST_BENCH_OURS)
  ours-software     our daemon --renderer software (2D: the guest renders with its own llvmpipe)
  qemu-c            QEMU's C backend /usr/lib/qemu/vhost-user-gpu (2D, as ours-software)
  qemu-virgl-inprocess  QEMU 10's own virtio-gpu-gl-pci (virgl inside QEMU, no vhost-user
                    socket), the no-socket reference: -display egl-headless,rendernode=/dev/null
                    (no render node here: Mesa's GBM falls back to its software rasterizer, so
                    virglrenderer runs on llvmpipe in QEMU's process, as ours-virgl does in ours)
  ours-virgl-sid    our daemon built in the sid chroot (libvirglrenderer 1.3.0), QEMU 11.1
  vhost-device-gpu  rust-vmm's vhost-device-gpu 0.2.0 (scripts/bench/peers.sh), same chroot
With --workload pageflip the same backends run Debian's kmscube for --flips frames, each a KMS
page flip the device completes (the flip's flush through the daemon to QEMU's display), and the
table shows kmscube's frames per second.
With --workload vulkan (the Vulkan guest image; its vkcheck renders and computes with exact
results, then times --secs seconds of each: submit + fence wait, again and again):
  ours-venus-sid    our daemon (sid build, libvirglrenderer 1.3.0 and its render server)
                    --hostmem 256M, QEMU 11.1's vhost-user-test-device-pci (the device that
                    passes blob and context-init features and the host-visible region through)
  qemu-venus-inprocess  QEMU 11.1's own virtio-gpu-gl-pci,venus=on,blob=on,hostmem=256M, the
                    no-socket reference (display as for qemu-virgl-inprocess)
  vhost-device-gpu-venus  vhost-device-gpu 0.2.0 the same way as ours-venus-sid
  lavapipe-in-guest the guest's own CPU Vulkan driver (lavapipe under TCG) beside our daemon's
                    software renderer, the reference that uses no host GPU path at all
The guest runs under TCG (no KVM here): scores measure the whole stack, guest CPU emulation
included, and compare backends only with each other in the same run.

  scripts/bench/guest-bench.py [--rounds 3] [--secs 3] [--backends a,b,...] [--json PATH]
                               [--strict]

--strict (the CI smoke run): exit 1 unless every run of every backend gave a score and every
backend that renders on the host (virgl) shows a guest GL_RENDERER naming virgl.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
RUN_GUEST = os.path.join(REPO, "scripts/e2e/run-guest.py")
PEER = os.path.join(REPO, "target/peers/vhost-device-gpu-0.2.0/bin/vhost-device-gpu")
# Our daemon on the host: target/release by default, $GUEST_BENCH_OURS for another build (the CI smoke
# run uses the debug build the tests made).
OURS = os.environ.get("GUEST_BENCH_OURS", os.path.join(REPO, "target/release/vhost-user-gpu"))
# The sid chroot's build: target/sid/release by default, $GUEST_BENCH_OURS_SID for another.
OURS_SID = os.environ.get("GUEST_BENCH_OURS_SID",
                          os.path.join(REPO, "target/sid/release/vhost-user-gpu"))
QEMU_C = "/usr/lib/qemu/vhost-user-gpu"
QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
# QEMU's in-process virgl needs a GL display. egl-headless wants a DRM render node; there is none
# here, and rendernode=/dev/null makes Mesa's GBM fall back to its software rasterizer: no X
# server, no D-Bus bus, no extra package (ui-egl-headless is in qemu-system-modules-opengl).
# $GUEST_BENCH_INPROCESS_DISPLAY sets another -display value (e.g. sdl,gl=on under an X server) to
# compare.
INPROCESS_DISPLAY = os.environ.get("GUEST_BENCH_INPROCESS_DISPLAY",
                                   "egl-headless,rendernode=/dev/null")

# name -> (backend command, extra run-guest.py arguments, what it needs to exist, whether the
# guest should render through virgl on the host)
BACKENDS = {
    "ours-virgl": (f"{OURS} --socket-path {{sock}} --renderer virglrenderer", [], OURS, True),
    "ours-software": (f"{OURS} --socket-path {{sock}} --renderer software", [], OURS, False),
    "qemu-c": (f"{QEMU_C} --socket-path {{sock}}", [], QEMU_C, False),
    "qemu-virgl-inprocess": ("none", ["--qemu-gpu", "virtio-gpu-gl-pci",
                                      "--display", INPROCESS_DISPLAY], QEMU, True),
    "ours-virgl-sid": (f"{OURS_SID} --socket-path {{sock}} --renderer virglrenderer",
                       ["--qemu-chroot", "sid", "--backend-chroot", "sid"], OURS_SID, True),
    "vhost-device-gpu": (f"{PEER} --gpu-mode virglrenderer --socket-path {{sock}}",
                         ["--qemu-chroot", "sid", "--backend-chroot", "sid"], PEER, True),
}

SID = ["--qemu-chroot", "sid", "--backend-chroot", "sid"]
VENUS_DEVICE = ["--gpu-device", "test-device", "--guest-arg", "vkicd=virtio"]
# --workload vulkan: name -> (backend command, extra run-guest.py arguments, what it needs to
# exist, the guest's Vulkan device name must contain this)
VK_BACKENDS = {
    "ours-venus-sid": (f"{OURS_SID} --socket-path {{sock}} --renderer virglrenderer --hostmem 256M",
                       SID + VENUS_DEVICE, OURS_SID, "Venus"),
    "qemu-venus-inprocess": ("none", ["--qemu-gpu", "virtio-gpu-gl-pci,venus=on,blob=on,hostmem=256M",
                                      "--display", INPROCESS_DISPLAY, "--qemu-chroot", "sid",
                                      "--guest-arg", "vkicd=virtio"], QEMU, "Venus"),
    "vhost-device-gpu-venus": (f"{PEER} --gpu-mode virglrenderer --socket-path {{sock}}",
                               SID + VENUS_DEVICE, PEER, "Venus"),
    "lavapipe-in-guest": (f"{OURS} --socket-path {{sock}} --renderer software",
                          ["--guest-arg", "vkicd=lvp"], OURS, "llvmpipe"),
}


def guest_artefacts(vulkan=False):
    out = subprocess.run([os.path.join(REPO, "scripts/guest/build.sh")]
                         + (["--vulkan"] if vulkan else []), check=True,
                         capture_output=True, text=True).stdout
    vals = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return vals["KERNEL"], vals["INITRD"]


def not_built(needs):
    return {"status": "n/a", "why": f"{needs} not built (scripts/bench/peers.sh --prepare-only "
                                    "or cargo build --release)"}


def run_guest(cmd, extra, kernel, initrd, workload, out_dir, timeout):
    """One boot of the test guest running `workload`: (run-guest.py's process, the serial log,
    seconds)."""
    argv = [sys.executable, RUN_GUEST, "--backend", cmd, "--kernel", kernel, "--initrd", initrd,
            "--workload", workload, "--out", out_dir, "--timeout", str(timeout)] + extra
    env = dict(os.environ, EGL_PLATFORM="surfaceless")
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    try:
        with open(os.path.join(out_dir, "serial.log"), "rb") as f:
            serial = f.read().decode("utf-8", "replace")
    except OSError:
        serial = ""
    return p, serial, wall


def failed(p, guest_errors, wall):
    """A failed run: run-guest.py's failure lines, then the first of the guest's own errors."""
    why = [l.strip()[len("failure: "):] for l in p.stdout.splitlines()
           if l.strip().startswith("failure:")]
    return {"status": "failed", "why": "; ".join(why + guest_errors[:1])[:200] or "no result",
            "wall_s": wall}


def one_run(name, kernel, initrd, secs, out_dir):
    cmd, extra, needs, _ = BACKENDS[name]
    if not os.path.exists(needs):
        return not_built(needs)
    p, serial, wall = run_guest(cmd, ["--guest-arg", f"glmark_secs={secs}"] + extra, kernel,
                                initrd, "glmark2", out_dir, 60 + 8 * secs * 4)
    score = re.search(r"^E2E-GLMARK2-SCORE: (\d+)", serial, re.M)
    scenes = {m.group(1): int(m.group(2))
              for m in re.finditer(r"^E2E-GLMARK2-SCENE: (\S+) (\d+)", serial, re.M)}
    renderer = re.search(r"^E2E-GL-RENDERER: (.*)$", serial, re.M)
    if p.returncode != 0 or not score:
        return failed(p, [l for l in serial.splitlines() if l.startswith("glmark2:") and "Error" in l],
                      wall)
    return {"status": "ok", "score": int(score.group(1)), "scenes": scenes,
            "renderer": renderer.group(1).strip() if renderer else "", "wall_s": wall}


def one_vulkan_run(name, kernel, initrd, secs, out_dir):
    cmd, extra, needs, _ = VK_BACKENDS[name]
    if not os.path.exists(needs):
        return not_built(needs)
    p, serial, wall = run_guest(cmd, ["--guest-arg", f"vkbench={secs}", "--expect-vulkan", "pass"]
                                + extra, kernel, initrd, "vulkan", out_dir, 240 + 4 * secs)
    rates = {m.group(1): float(m.group(2)) for m in re.finditer(
        r"^E2E-VKCHECK: VKCHECK-BENCH: (\S+) \d+ submits in [\d.]+ s = ([\d.]+)/s", serial, re.M)}
    device = re.search(r"^E2E-VKCHECK: VKCHECK-DEVICE: (.*?) driver=", serial, re.M)
    checked = re.search(r"^E2E-VKCHECK: VKCHECK-RESULT: PASS", serial, re.M)
    if p.returncode != 0 or not checked or set(rates) != {"render", "compute"}:
        return failed(p, [l.split("VKCHECK-ERROR: ", 1)[1] for l in serial.splitlines()
                          if "VKCHECK-ERROR: " in l], wall)
    return {"status": "ok", "rates": rates, "device": device.group(1).strip() if device else "",
            "wall_s": wall}


def one_pageflip_run(name, kernel, initrd, flips, out_dir):
    cmd, extra, needs, _ = BACKENDS[name]
    if not os.path.exists(needs):
        return not_built(needs)
    p, serial, wall = run_guest(cmd, ["--guest-arg", f"flips={flips}"] + extra, kernel, initrd,
                                "pageflip", out_dir, 120 + flips)
    flip = re.search(r"^E2E-PAGEFLIP: (\d+) ([\d.]+) ([\d.]+)", serial, re.M)
    renderer = re.search(r"^E2E-GL-RENDERER: (.*)$", serial, re.M)
    mode = re.search(r"^E2E-MODE: (.*)$", serial, re.M)
    if p.returncode != 0 or not flip:
        return failed(p, [l for l in serial.splitlines() if l.startswith("kmscube:")
                          and ("error" in l.lower() or "failed" in l.lower())], wall)
    return {"status": "ok", "fps": float(flip.group(3)), "frames": int(flip.group(1)),
            "renderer": renderer.group(1).strip() if renderer else "",
            "mode": mode.group(1).strip() if mode else "", "wall_s": wall}


def pageflip_main(args, names):
    kernel, initrd = guest_artefacts()
    results = run_rounds(names, args.rounds, lambda n, r: one_pageflip_run(
        n, kernel, initrd, args.flips, os.path.join(REPO, "target/bench/guest-pageflip", f"{n}-{r}")),
        "fps")
    rows = [["metric"] + names,
            metric_row("page flips/s", names, results, lambda x: x["fps"], lambda v: f"{v:.1f}"),
            seen_row("guest GL renderer", names, results, "renderer"),
            seen_row("mode", names, results, "mode"),
            wall_row("wall s per run (boot + kmscube)", names, results)]
    return report(f"kmscube -c {args.flips} in the test guest (TCG): every frame a KMS page flip the device "
           f"completes; kmscube's own frames per second (after its first frame), medians of "
           f"{args.rounds} interleaved rounds; (xR) = against {names[0]}.", rows, args.json,
           {"workload": "pageflip", "rounds": args.rounds, "flips": args.flips, "results": results},
           args.strict, gl_renderer_wrong)


def run_rounds(names, rounds, run, shown):
    """Every backend once per round, interleaved; a backend that is n/a is not run again."""
    results = {n: [] for n in names}
    for r in range(rounds):
        for n in names:
            if results[n] and results[n][-1]["status"] == "n/a":
                continue
            res = run(n, r)
            results[n].append(res)
            print(f"round {r + 1} {n:<23} {res['status']:<6} {res.get(shown, res.get('why'))} "
                  f"({res.get('wall_s', 0):.0f} s)", file=sys.stderr)
    return results


def metric_row(label, names, results, value, fmt):
    """One table row: the median of `value(run)` over the ok runs of each backend, with its ratio
    against the first backend; a backend without a value shows why."""
    def med(rs):
        vals = [v for v in (value(x) for x in rs if x["status"] == "ok") if v is not None]
        return statistics.median(vals) if vals else None
    b = med(results[names[0]])
    row = [label]
    for n in names:
        v = med(results[n])
        if v is None:
            bad = [x for x in results[n] if x["status"] != "ok"]
            row.append(f"{bad[0]['status']}: {bad[0]['why'][:100]}" if bad else "-")
        elif n == names[0] or not b:
            row.append(fmt(v))
        else:
            row.append(f"{fmt(v)} (x{v / b:.2f})")
    return row


def report(title, rows, json_path, data, strict, wrong):
    """Prints the markdown table and writes the JSON; the exit status: with --strict (`strict`),
    1 where a run failed or `wrong(name, run)` says why an ok run does not count."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(title + "\n")
    for i, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(data, f, indent=1)
    print(f"\nwrote {json_path}")
    return strict_failures(rows[0][1:], data["results"], wrong) if strict else 0


def gl_renderer_wrong(name, run):
    """--strict for the GL workloads: a virgl backend's guest GL_RENDERER must name virgl."""
    if BACKENDS[name][3] and "virgl" not in run["renderer"].lower():
        return f"guest GL_RENDERER {run['renderer']!r} does not name virgl"
    return ""


def strict_failures(names, results, wrong):
    """--strict: every run not ok, and every ok run for which `wrong(name, run)` says why."""
    bad = []
    for n in names:
        for r, x in enumerate(results[n]):
            why = f"{x['status']}: {x.get('why', '')}" if x["status"] != "ok" else wrong(n, x)
            if why:
                bad.append(f"{n} round {r + 1}: {why}")
    for b in bad:
        print(f"guest-bench: strict: {b}", file=sys.stderr)
    return 1 if bad else 0


def seen_row(label, names, results, key):
    """A row of what the runs reported under `key` (the first run that did), "-" where none."""
    return [label] + [next((x[key] for x in results[n] if x.get(key)), "-") for n in names]


def wall_row(label, names, results):
    walls = {n: [x["wall_s"] for x in results[n] if "wall_s" in x] for n in names}
    return [label] + [f"{statistics.median(walls[n]):.0f}" if walls[n] else "-" for n in names]


def vulkan_main(args, names):
    kernel, initrd = guest_artefacts(vulkan=True)
    results = run_rounds(names, args.rounds, lambda n, r: one_vulkan_run(
        n, kernel, initrd, args.secs, os.path.join(REPO, "target/bench/guest-vulkan", f"{n}-{r}")),
        "rates")
    rows = [["metric"] + names]
    for key in ["render", "compute"]:
        rows.append(metric_row(f"{key} submits/s", names, results,
                               lambda x, key=key: x["rates"][key], lambda v: f"{v:.0f}"))
    rows.append(seen_row("guest Vulkan device", names, results, "device"))
    rows.append(wall_row("wall s per run (boot + checks + bench)", names, results))
    return report(f"vkcheck --bench in the Vulkan test guest (TCG): a 64x64 render pass (clear, draw, copy "
           f"to a host-visible buffer) and a 65536-word compute dispatch, each submitted and waited "
           f"for with a fence for {args.secs} s after its exact check; medians of {args.rounds} "
           f"interleaved rounds; (xR) = against {names[0]}.", rows, args.json,
           {"workload": "vulkan", "rounds": args.rounds, "secs": args.secs, "results": results},
           args.strict, lambda n, x: (
               "" if VK_BACKENDS[n][3].lower() in x["device"].lower()
               else f"guest Vulkan device {x['device']!r} does not name {VK_BACKENDS[n][3]}"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=3, help="seconds per glmark2 scene")
    ap.add_argument("--workload", choices=["glmark2", "pageflip", "vulkan"], default="glmark2",
                    help="glmark2 (default); pageflip: kmscube's page flips per second (--flips "
                         "frames); vulkan: vkcheck --bench in the Vulkan guest image, on the "
                         "--workload vulkan backends (--secs: seconds per part)")
    ap.add_argument("--flips", type=int, default=300, help="kmscube frames per pageflip run")
    ap.add_argument("--backends", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 unless every run scored and every virgl backend's guest "
                         "GL_RENDERER names virgl (the CI smoke run)")
    args = ap.parse_args()
    if args.list:
        print(__doc__.split("Backends")[1].split("The guest runs")[0])
        return 0
    known = VK_BACKENDS if args.workload == "vulkan" else BACKENDS
    names = [n for n in (args.backends or ",".join(known)).split(",") if n]
    for n in names:
        if n not in known:
            ap.error(f"unknown {args.workload} backend {n!r} (--list)")
    if not 1 <= args.rounds <= 50 or not 1 <= args.secs <= 60:
        ap.error("--rounds 1..50, --secs 1..60")
    if not 10 <= args.flips <= 100000:
        ap.error("--flips 10..100000")
    if args.json is None:
        args.json = os.path.join(REPO, "target/bench", {"glmark2": "guest.json"}.get(
            args.workload, f"guest-{args.workload}.json"))
    if args.workload == "vulkan":
        return vulkan_main(args, names)
    if args.workload == "pageflip":
        return pageflip_main(args, names)
    kernel, initrd = guest_artefacts()
    results = run_rounds(names, args.rounds, lambda n, r: one_run(
        n, kernel, initrd, args.secs, os.path.join(REPO, "target/bench/guest", f"{n}-{r}")),
        "score")
    # The table: median score and scene FPS per backend, ratio against the first.
    scenes = sorted({s for rs in results.values() for x in rs for s in x.get("scenes", {})})
    rows = [["metric"] + names]
    rows.append(metric_row("glmark2 score", names, results, lambda x: x["score"],
                           lambda v: f"{v:g}"))
    for scene in scenes:
        rows.append(metric_row(f"{scene} FPS", names, results,
                               lambda x, scene=scene: x["scenes"].get(scene), lambda v: f"{v:g}"))
    rows.append(seen_row("guest GL renderer", names, results, "renderer"))
    rows.append(wall_row("wall s per run (boot + glmark2)", names, results))
    return report(f"glmark2-es2-drm --off-screen in the test guest (TCG), {args.secs} s per scene, "
           f"medians of {args.rounds} interleaved rounds; (xR) = against {names[0]}.", rows,
           args.json, {"rounds": args.rounds, "secs": args.secs, "results": results}, args.strict,
           gl_renderer_wrong)


if __name__ == "__main__":
    sys.exit(main())
