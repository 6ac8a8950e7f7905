"""The study's pictures, drawn from results.json alone (so ``--report-only`` redraws them).

    speed_accuracy.png   AP against CPU latency, marker area proportional to parameters
    ap_by_size.png       AP of small, medium and large objects, per suite
    pr_curves.png        mean precision-recall at IoU 0.5, per suite
    training.png         training loss against step, per suite
    nms.png              AP, AP50 and recall of each suppressor on each split
    nms_sweep.png        AP against each suppressor's threshold; NMS's recall ceiling on perfect boxes
    sweep_<claim>.png    with a sweep: the claim's AP difference and its 2-sigma band against training
                         steps, one line per recipe
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from detkit.compare.claims import SHORT_NAMES
from detkit.compare.study import RECIPE_NAMES

MODEL_SUITES = ("detectors", "focal", "necks", "backbones")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _suite_runs(results: Mapping, suite: str) -> list[str]:
    spec = results["suites"][suite]
    return list(spec["runs"]) if suite == "detectors" else [spec["baseline"], spec["variant"]]


def _model_suites(results: Mapping) -> list[str]:
    return [s for s in MODEL_SUITES if s in results["suites"]]


def _suite_panels(results: Mapping, height: float):
    """A figure with one panel per model suite: (figure, [(axes, suite), ...])."""
    suites = _model_suites(results)
    fig, axes = _pyplot().subplots(1, len(suites), figsize=(4.2 * len(suites), height), squeeze=False)
    return fig, list(zip(axes[0], suites))


def plot_all(results: Mapping, out: Path) -> list[Path]:
    """Every picture whose suite ran, in ``out``; returns their paths."""
    paths = []
    if _model_suites(results):
        paths += [speed_accuracy(results, out / "speed_accuracy.png"), ap_by_size(results, out / "ap_by_size.png"),
                  pr_curves(results, out / "pr_curves.png"), training(results, out / "training.png")]
    for claim, points in (results.get("sweep") or {}).get("trends", {}).items():
        paths.append(budget_trend(claim, points, out / f"sweep_{claim}.png"))
    if "nms" in results["suites"]:
        paths += [nms_bars(results, out / "nms.png"), nms_sweep(results, out / "nms_sweep.png")]
        stats = results["suites"]["nms"].get("crowd_statistics") or {}
        if any("density_counts" in s for s in stats.values()):
            paths.append(crowd_densities(results, out / "crowd_densities.png"))
    return paths


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def speed_accuracy(results: Mapping, path: Path) -> Path:
    plt = _pyplot()
    names = list(dict.fromkeys(n for s in _model_suites(results) for n in _suite_runs(results, s)))
    runs = results["runs"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    largest = max(runs[n]["params"] for n in names)
    for i, name in enumerate(names):
        run = runs[name]
        x, y = run["latency"]["cpu"]["median_ms"], run["eval"]["stats"]["AP"]
        ax.scatter([x], [y], s=60 + 900 * run["params"] / largest, alpha=0.55, color=f"C{i % 10}",
                   edgecolors="black", linewidths=0.6)
        ax.errorbar([x], [y], xerr=[[x - run["latency"]["cpu"]["q25_ms"]], [run["latency"]["cpu"]["q75_ms"] - x]],
                    color=f"C{i % 10}", capsize=3, linewidth=1)
    aps = [runs[n]["eval"]["stats"]["AP"] for n in names]
    ax.set_ylim(0, max(aps) * 1.15 + 0.02)
    ax.margins(x=0.12)
    _place_labels(fig, ax, [(runs[n]["latency"]["cpu"]["median_ms"], runs[n]["eval"]["stats"]["AP"],
                             f"{n}\n{runs[n]['params'] / 1e6:.1f} M, {runs[n]['gflops']:.1f} GFLOPs") for n in names])
    ax.set(xlabel="CPU latency per image (ms, median; bars: quartiles)", ylabel="COCO AP (val)",
           title=f"Speed against accuracy ({results['budget']} budget); marker area ~ parameters")
    ax.grid(alpha=0.3)
    return _save(fig, path)


_LABEL_OFFSETS = ((10, 8, "left", "bottom"), (10, -8, "left", "top"), (-10, 8, "right", "bottom"),
                  (-10, -8, "right", "top"), (0, 18, "center", "bottom"), (0, -18, "center", "top"))


def _place_labels(fig, ax, points) -> None:
    """Annotate each (x, y, text) at the first offset around its point whose text overlaps no
    label placed before it (the last offset tried stays when all overlap)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed = []
    for x, y, text in sorted(points, key=lambda p: -p[1]):
        for dx, dy, ha, va in _LABEL_OFFSETS:
            label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7, ha=ha, va=va)
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(other) for other in placed):
                break
            if (dx, dy) != _LABEL_OFFSETS[-1][:2]:
                label.remove()
        placed.append(box)


def ap_by_size(results: Mapping, path: Path) -> Path:
    fig, panels = _suite_panels(results, 3.8)
    metrics = ("AP", "APs", "APm", "APl")
    for ax, suite in panels:
        names = _suite_runs(results, suite)
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            stats = results["runs"][name]["eval"]["stats"]
            values = [max(stats[m], 0.0) for m in metrics]
            ax.bar([j + i * width for j in range(len(metrics))], values, width, label=name, color=f"C{i}")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], ["all", "small", "medium", "large"])
        ax.set(title=suite, ylabel="COCO AP")
        ax.set_ylim(0, max(max(results["runs"][n]["eval"]["stats"][m], 0.0) for n in names for m in metrics) * 1.3
                    + 1e-3)  # head room for the legend above the bars
        ax.legend(fontsize=7, ncol=min(len(names), 3), loc="upper left")
    return _save(fig, path)


def pr_curves(results: Mapping, path: Path) -> Path:
    fig, panels = _suite_panels(results, 3.8)
    for ax, suite in panels:
        for i, name in enumerate(_suite_runs(results, suite)):
            pr = results["runs"][name]["eval"]["pr"]
            ap50 = results["runs"][name]["eval"]["stats"]["AP50"]
            ax.plot(pr["recall"], [max(p, 0.0) for p in pr["iou50"]], color=f"C{i}", label=f"{name} (AP50 {ap50:.3f})")
        ax.set(title=f"{suite}: IoU 0.5, all classes", xlabel="recall", ylabel="precision", xlim=(0, 1),
               ylim=(0, 1.02))
        ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def training(results: Mapping, path: Path) -> Path:
    fig, panels = _suite_panels(results, 3.6)
    for ax, suite in panels:
        for i, name in enumerate(_suite_runs(results, suite)):
            loss = results["runs"][name]["loss"]
            if loss:
                ax.plot([s for s, _ in loss], [v for _, v in loss], color=f"C{i}", label=name, linewidth=1)
        ax.set(title=f"{suite}: training loss", xlabel="step", yscale="log")
        ax.legend(fontsize=7)
    return _save(fig, path)


def nms_bars(results: Mapping, path: Path) -> Path:
    plt = _pyplot()
    splits = results["suites"]["nms"]["splits"]
    fig, axes = plt.subplots(1, len(splits), figsize=(6.2 * len(splits), 4), squeeze=False)
    metrics = (("AP", "AP"), ("AP50", "AP50"), ("recall_covered", "recall (IoU 0.5)"))
    for ax, (label, split) in zip(axes[0], splits.items()):
        names = list(split["rows"])
        width = 0.8 / len(metrics)
        for j, (key, title) in enumerate(metrics):
            values = [split["rows"][n][key] for n in names]
            bars = ax.bar([i + j * width for i in range(len(names))], values, width, label=title, color=f"C{j}")
            ax.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
        ax.set_xticks([i + width for i in range(len(names))],
                      [n.replace("_", "\n") + f"\n(lost {split['rows'][n]['lost']})" for n in names], fontsize=7)
        ax.set(title=f"{label} split ({split['images']} images): same raw predictions", ylim=(0, 1.28))
        ax.set_xlabel("suppressor (lost: recoverable objects no kept detection covers)", fontsize=7)
        ax.legend(fontsize=7, loc="upper left", ncol=len(metrics))
    return _save(fig, path)


def nms_sweep(results: Mapping, path: Path) -> Path:
    plt = _pyplot()
    nms = results["suites"]["nms"]
    splits = nms["splits"]
    stats = {k: v for k, v in nms.get("crowd_statistics", {}).items() if "missing" not in v}
    columns = len(splits) + (1 if stats else 0)
    fig, axes = plt.subplots(1, columns, figsize=(4.8 * columns, 4.6), squeeze=False)
    for ax, (label, split) in zip(axes[0], splits.items()):
        for i, (family, entry) in enumerate(split["sweep"].items()):
            if entry["key"] == "iou_threshold":
                ax.plot(entry["values"], entry["AP"], marker="o", color=f"C{i}", label=family)
        handles = ax.get_legend_handles_labels()[0]
        gaussian = split["sweep"].get("soft_nms_gaussian")
        if gaussian:
            top = ax.twiny()
            top.plot(gaussian["values"], gaussian["AP"], marker="s", linestyle="--", color="black",
                     label="soft_nms_gaussian (top axis: sigma)")
            top.set_xlabel("gaussian Soft-NMS sigma", fontsize=8)
            handles += top.get_legend_handles_labels()[0]
        ax.set(title=f"{label} split", xlabel="IoU threshold", ylabel="COCO AP")
        # below the panel: inside, the curves of a crowded split fill every corner
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
        ax.grid(alpha=0.3)
    if stats:
        ax = axes[0][-1]
        for i, (name, s) in enumerate(stats.items()):
            ax.plot(s["thresholds"], [100 * v for v in s["nms"]], marker="o", color=f"C{i}", label=f"{name}: NMS")
            ax.plot(s["thresholds"], [100 * v for v in s["diou_nms"]], marker="x", linestyle=":", color=f"C{i}",
                    label=f"{name}: DIoU-NMS")
        ax.set(title="perfect boxes: true objects suppressed", xlabel="IoU threshold",
               ylabel="% of the true objects")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def crowd_densities(results: Mapping, path: Path) -> Path:
    """The histogram of the objects' densities of each dataset of ``crowd_statistics``, as shares."""
    plt = _pyplot()
    stats = {k: v for k, v in results["suites"]["nms"]["crowd_statistics"].items() if "density_counts" in v}
    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.1 / (len(stats) + 1)
    for i, (name, s) in enumerate(stats.items()):
        edges, counts = s["density_bins"], s["density_counts"]
        shares = [100 * c / max(1, s["objects"]) for c in counts]
        ax.bar([a + (i + 0.5) * width for a in edges[:-1]], shares, width, align="edge", color=f"C{i}",
               label=f"{name} ({s['split']}, {s['objects']} objects)")
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1)
    ax.text(0.51, ax.get_ylim()[1] * 0.95, "N_t = 0.5: Adaptive-NMS acts above", fontsize=7, va="top")
    ax.set(title="objects' densities (max IoU with another object)", xlabel="density", ylabel="% of the objects",
           xticks=edges)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def budget_trend(claim: str, points: list[Mapping], path: Path) -> Path:
    """One claim of a sweep: variant AP - baseline AP against training steps, +- 2 sigma, per recipe."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    recipes = list(dict.fromkeys(p["recipe"] for p in points))
    for i, recipe in enumerate(recipes):
        mine = sorted((p for p in points if p["recipe"] == recipe), key=lambda p: p["steps"])
        steps = [p["steps"] * (1 + 0.03 * (i - (len(recipes) - 1) / 2)) for p in mine]  # side by side, not on top
        deltas, bands = np.array([p["delta"] for p in mine]), np.array([2 * p["sigma"] for p in mine])
        ax.fill_between(steps, deltas - bands, deltas + bands, color=f"C{i}", alpha=0.15, linewidth=0)
        ax.errorbar(steps, deltas, yerr=bands, marker="o", capsize=4, color=f"C{i}",
                    label=f"{RECIPE_NAMES.get(recipe, recipe)} (+- 2 sigma)")
    ax.axhline(0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xscale("log", base=2)
    ticks = sorted({p["steps"] for p in points})
    ax.set_xlim(ticks[0] / 1.5, ticks[-1] * 1.5)  # the recipes' small offsets stay small beside one budget
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.minorticks_off()
    first = points[0]
    ax.set_xlabel("training steps")
    ax.set_ylabel(f"AP: {first['variant']} - {first['baseline']}")
    ax.set_title(SHORT_NAMES.get(claim, claim))
    ax.legend(fontsize=8)
    return _save(fig, path)

