"""Pictures of an evaluation: precision-recall curves."""

from __future__ import annotations

from pathlib import Path

from detkit.evaluation.coco_eval import CocoEvaluation


def plot_pr_curves(evaluation: CocoEvaluation, path: str | Path, *, ious=(0.5, 0.75), per_class: int = 10) -> Path:
    """A PNG: the mean precision-recall curve at each IoU in ``ious`` (area all, 100
    detections), and the curves at IoU 0.5 of the ``per_class`` classes with the most AP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for iou in ious:
        recall, precision = evaluation.pr_curve(iou)
        if (precision > -1).any():
            ap = evaluation.stats["AP50" if iou == 0.5 else "AP75"] if iou in (0.5, 0.75) else precision.mean()
            left.plot(recall, precision.clip(0), label=f"IoU {iou:.2f}: AP {ap:.3f}")
    left.set(title="all classes", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    left.legend(loc="lower left")
    curves = [(name, *evaluation.pr_curve(0.5, name)) for name in evaluation.class_names]
    ranked = sorted(((p.mean(), name, r, p) for name, r, p in curves if (p > -1).all()), key=lambda c: -c[0])
    for ap50, name, recall, precision in ranked[:per_class]:
        right.plot(recall, precision, label=f"{name} (AP50 {ap50:.3f})")
    right.set(title="per class, IoU 0.50", xlabel="recall", xlim=(0, 1), ylim=(0, 1.02))
    if ranked:
        right.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_errors(analysis: dict, folder: str | Path) -> list[Path]:
    """Two PNGs of ``detkit.evaluation.errors.analyse``'s numbers: errors.png (TIDE's dAP per
    error and the special dAPs as bars; AP50 and recall by crowding bucket and by size) and
    confusion.png (the confusion matrix as a heat map, each true class's row as shares)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from detkit.evaluation.errors import ERRORS, SPECIAL

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tide = analysis["tide"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    names = list(ERRORS) + list(SPECIAL)
    values = [100 * tide["delta_ap"][n] for n in ERRORS] + [100 * tide["special_delta_ap"][n] for n in SPECIAL]
    colours = ["#d62728", "#ff7f0e", "#8c564b", "#9467bd", "#7f7f7f", "#1f77b4", "#bcbd22", "#17becf"]
    bars = axes[0].barh(names[::-1], values[::-1], color=colours[::-1])
    axes[0].bar_label(bars, fmt="%.2f", fontsize=8)
    axes[0].axhline(1.5, color="black", lw=0.6)
    axes[0].margins(x=0.15)  # room for the labels
    axes[0].set(title=f"TIDE: dAP50 per error (AP50 {100 * tide['ap']:.1f})", xlabel="AP points an oracle fix adds")
    for ax, key, title in ((axes[1], "crowding", "by crowding (max IoU with another object)"),
                           (axes[2], "sizes", "by size (COCO areas)")):
        rows = analysis[key]
        x = np.arange(len(rows))
        ap = [row["ap"] or 0.0 for row in rows]
        recall = [row["recall"] or 0.0 for row in rows]
        ax.bar(x - 0.2, ap, 0.4, label="AP50")
        ax.bar(x + 0.2, recall, 0.4, label="recall")
        ax.set_xticks(x, [f"{row['bucket']}\n{row['objects']} objects" for row in rows], fontsize=8)
        ax.set(title=title, ylim=(0, 1))
        ax.legend(fontsize=8)
    fig.tight_layout()
    errors_png = folder / "errors.png"
    fig.savefig(errors_png, dpi=110)
    plt.close(fig)

    confusion = analysis["confusion"]
    matrix = np.asarray(confusion["matrix"], dtype=np.float64)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = min(2 + 0.35 * len(matrix), 30)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(confusion["columns"])), confusion["columns"], rotation=90, fontsize=7)
    ax.set_yticks(range(len(confusion["rows"])), confusion["rows"], fontsize=7)
    if len(matrix) <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, int(count), ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set(xlabel="detected as", ylabel="true class",
           title=f"confusion at IoU {analysis['pos_threshold']}, score >= {confusion['score_threshold']} (row shares)")
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    confusion_png = folder / "confusion.png"
    fig.savefig(confusion_png, dpi=110)
    plt.close(fig)
    return [errors_png, confusion_png]
