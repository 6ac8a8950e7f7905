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
