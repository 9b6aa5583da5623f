#!/usr/bin/env python3
"""Draw gpu-bench's JSON report as a PNG: one panel per workload, one bar per backend (the
median of the workload's primary metric, with every kept sample as a dot), the physical floor
as a dashed line, and n/a / failed backends named in place of their bar."""

import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    with open(src, encoding="utf-8") as f:
        rep = json.load(f)
    wls = rep["workloads"]
    names = [b["name"] for b in rep["backends"]]
    cols = min(3, len(wls))
    rows = math.ceil(len(wls) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, w in enumerate(wls):
        ax = axes[i // cols][i % cols]
        key = w["primary"]
        metric = next(m for m in w["metrics"] if m["key"] == key)
        arrow = "higher is better" if metric["higher_is_better"] else "lower is better"
        ax.set_title(f'{w["name"]}: {metric["label"]}\n({arrow})', fontsize=9)
        top = 0.0
        for j, n in enumerate(names):
            r = w["results"][n]
            if r["status"] != "ok":
                continue
            m = r["metrics"][key]
            if m["median"] is not None:
                top = max(top, m["median"], *[s for s in m["samples"] if s is not None])
        floor = w["floor"]["value"]
        show_floor = floor is not None and top > 0 and floor < 4 * top
        if show_floor:
            top = max(top, floor)
        for j, n in enumerate(names):
            r = w["results"][n]
            if r["status"] != "ok" or r["metrics"][key]["median"] is None:
                label = r.get("reason", r["status"])
                label = label if len(label) < 34 else label[:31] + "..."
                ax.text(j, 0.02 * (top or 1), label, rotation=90, ha="center", va="bottom", fontsize=7)
                continue
            m = r["metrics"][key]
            ax.bar(j, m["median"], color=colours[j % len(colours)], alpha=0.8)
            ax.plot([j] * len(m["samples"]), m["samples"], "k.", markersize=3)
            txt = f'{m["median"]:.4g}'
            if m.get("ratio_vs_baseline") is not None and j > 0:
                txt += f'\nx{m["ratio_vs_baseline"]:.2f}'
            if r.get("floor_fraction") is not None:
                txt += f'\n{100 * r["floor_fraction"]:.1f}% floor'
            ax.text(j, m["median"], txt, ha="center", va="bottom", fontsize=7)
        if show_floor:
            ax.axhline(floor, linestyle="--", color="grey", linewidth=1)
            ax.text(len(names) - 0.5, floor, "floor", ha="right", va="bottom", fontsize=7, color="grey")
        else:
            ax.text(0.99, 0.98, f"floor {floor:.4g} (off scale)", transform=ax.transAxes,
                    ha="right", va="top", fontsize=7, color="grey")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8, rotation=15)
        ax.set_ylim(0, (top or 1) * 1.35)
        ax.tick_params(axis="y", labelsize=7)
    for k in range(len(wls), rows * cols):
        axes[k // cols][k % cols].axis("off")
    m = rep.get("machine", {})
    s = rep.get("settings", {})
    fig.suptitle(
        f'gpu-bench: medians of {s.get("reps")} reps, {s.get("duration_s")} s each; '
        f'{m.get("cpu_model", "?")}, {m.get("cpus", "?")} CPUs; baseline {rep.get("baseline")}',
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: chart.py REPORT.json OUT.png")
    main(sys.argv[1], sys.argv[2])
