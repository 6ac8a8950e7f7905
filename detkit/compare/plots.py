"""The study's pictures, drawn from results.json alone (so ``--report-only`` redraws them).

    speed_accuracy.png   AP against CPU latency, marker area proportional to parameters
    ap_by_size.png       AP of small, medium and large objects, per suite
    pr_curves.png        mean precision-recall at IoU 0.5, per suite
    training.png         training loss against step, per suite
    nms.png              AP, AP50 and recall of each suppressor on each split
    nms_sweep.png        AP against each suppressor's threshold; NMS's recall ceiling on perfect boxes
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

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
    if "nms" in results["suites"]:
        paths += [nms_bars(results, out / "nms.png"), nms_sweep(results, out / "nms_sweep.png")]
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
        ax.annotate(f"{name}\n{run['params'] / 1e6:.1f} M, {run['gflops']:.1f} GFLOPs", (x, y), fontsize=7,
                    xytext=(6, 6), textcoords="offset points")
    ax.set(xlabel="CPU latency per image (ms, median; bars: quartiles)", ylabel="COCO AP (val)",
           title=f"Speed against accuracy ({results['budget']} budget); marker area ~ parameters")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _save(fig, path)


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
        ax.legend(fontsize=7)
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
        ax.set_xticks([i + width for i in range(len(names))], [n.replace("_", "\n") for n in names], fontsize=7)
        lost = ", ".join(f"{n} {split['rows'][n]['lost']}" for n in names)
        ax.set(title=f"{label} split ({split['images']} images): same raw predictions", ylim=(0, 1.1))
        ax.set_xlabel(f"objects lost to suppression: {lost}", fontsize=7)
        ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def nms_sweep(results: Mapping, path: Path) -> Path:
    plt = _pyplot()
    nms = results["suites"]["nms"]
    splits = nms["splits"]
    stats = {k: v for k, v in nms.get("crowd_statistics", {}).items() if "missing" not in v}
    columns = len(splits) + (1 if stats else 0)
    fig, axes = plt.subplots(1, columns, figsize=(4.8 * columns, 4), squeeze=False)
    for ax, (label, split) in zip(axes[0], splits.items()):
        for i, (family, entry) in enumerate(split["sweep"].items()):
            if entry["key"] == "iou_threshold":
                ax.plot(entry["values"], entry["AP"], marker="o", color=f"C{i}", label=family)
        gaussian = split["sweep"].get("soft_nms_gaussian")
        if gaussian:
            top = ax.twiny()
            top.plot(gaussian["values"], gaussian["AP"], marker="s", linestyle="--", color="black",
                     label="soft_nms_gaussian (top axis: sigma)")
            top.set_xlabel("gaussian Soft-NMS sigma", fontsize=8)
            top.legend(fontsize=7, loc="lower right")
        ax.set(title=f"{label} split", xlabel="IoU threshold", ylabel="COCO AP")
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(alpha=0.3)
    if stats:
        ax = axes[0][-1]
        for i, (name, s) in enumerate(stats.items()):
            ax.plot(s["thresholds"], [100 * v for v in s["nms"]], marker="o", color=f"C{i}", label=f"{name}: NMS")
            ax.plot(s["thresholds"], [100 * v for v in s["diou_nms"]], marker="x", linestyle=":", color=f"C{i}",
                    label=f"{name}: DIoU-NMS")
        ax.set(title="perfect boxes: objects greedy suppression removes", xlabel="IoU threshold",
               ylabel="% of the true objects")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)
