"""What is in a dataset: images, objects per class, object sizes against COCO's ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detkit.data.records import DatasetIndex

# COCO's size ranges, by area in pixels: small < 32^2 <= medium < 96^2 <= large
SMALL, LARGE = 32**2, 96**2


def dataset_stats(index: DatasetIndex) -> dict:
    """Counts of a dataset (crowd regions apart); sizes use the box area, sqrt(w * h) in px."""
    boxes = [r.boxes[~r.iscrowd] for r in index.records]
    labels = np.concatenate([r.labels[~r.iscrowd] for r in index.records] or [np.zeros(0, np.int64)])
    all_boxes = np.concatenate(boxes or [np.zeros((0, 4))]).reshape(-1, 4)
    areas = (all_boxes[:, 2] - all_boxes[:, 0]) * (all_boxes[:, 3] - all_boxes[:, 1])
    per_class = np.bincount(labels, minlength=len(index.categories))
    return {
        "source": index.source,
        "format": index.format,
        "images": len(index.records),
        "images_without_objects": sum(1 for b in boxes if len(b) == 0),
        "objects": int(len(labels)),
        "crowd_regions": int(sum(r.iscrowd.sum() for r in index.records)),
        "objects_per_class": {c.name: int(n) for c, n in zip(index.categories, per_class)},
        "sizes": {
            "small (< 32^2)": int((areas < SMALL).sum()),
            "medium": int(((areas >= SMALL) & (areas < LARGE)).sum()),
            "large (>= 96^2)": int((areas >= LARGE).sum()),
        },
        "side_px": np.sqrt(areas).tolist(),
        "skipped": dict(index.issues.counts),
    }


def stats_of(dataset: str | Path, *, split: str | None = None, names: list[str] | None = None
             ) -> tuple[list[dict], list[str]]:
    """``detkit data stats``: the numbers of ``dataset``, or of each of its splits when it is a
    folder of several (``../shared/data/coco128``) and none is chosen; and notes for the
    reader (that several are shown, a split that could not be read and why)."""
    from detkit.data.dataset import SeveralDatasets, open_dataset

    try:
        return [dataset_stats(open_dataset(dataset, split=split, names=names))], []
    except SeveralDatasets as several:
        every, notes = [], [f"{several.path} holds several datasets; each is shown (choose one with --split)"]
        for found in several.found:
            try:
                every.append(dataset_stats(open_dataset(found.source, names=names)))
            except ValueError as error:
                notes.append(f"{found.split} ({found.format}): not shown: {error}")
        return every, notes


def format_stats(stats: dict) -> str:
    """A readable report with a text histogram of object sizes."""
    lines = [
        f"{stats['source']} ({stats['format']})",
        f"  images: {stats['images']} ({stats['images_without_objects']} without objects)",
        f"  objects: {stats['objects']} (+ {stats['crowd_regions']} crowd regions)",
        "  objects per class:",
    ]
    width = max((len(n) for n in stats["objects_per_class"]), default=0)
    for name, n in stats["objects_per_class"].items():
        lines.append(f"    {name:<{width}}  {n}")
    lines.append("  object sizes (COCO ranges, by box area):")
    total = max(stats["objects"], 1)
    for name, n in stats["sizes"].items():
        lines.append(f"    {name:<16} {n:>7}  {'#' * round(40 * n / total)}")
    sides = np.asarray(stats["side_px"])
    if sides.size:
        edges = np.array([0, 8, 16, 32, 64, 96, 128, 256, 512, np.inf])
        counts, _ = np.histogram(sides, edges)
        lines.append("  box side sqrt(w*h) in px (COCO: small < 32 <= medium < 96 <= large):")
        for lo, hi, n in zip(edges[:-1], edges[1:], counts):
            label = f"{int(lo)}-{int(hi)}" if np.isfinite(hi) else f"{int(lo)}+"
            lines.append(f"    {label:>9} {n:>7}  {'#' * round(40 * n / total)}")
    if stats["skipped"]:
        lines.append("  skipped or repaired: " + ", ".join(f"{k}: {v}" for k, v in stats["skipped"].items()))
    return "\n".join(lines)


def plot_sizes(stats: dict, path: str | Path) -> Path:
    """A PNG histogram of box sides with COCO's small/medium/large boundaries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    sides = np.asarray(stats["side_px"])
    fig, ax = plt.subplots(figsize=(7, 4))
    if sides.size:
        ax.hist(sides, bins=np.geomspace(max(sides.min(), 1), sides.max() + 1, 40), color="#4c72b0")
    ax.set_xscale("log")
    for edge, name in ((32, "small | medium"), (96, "medium | large")):
        ax.axvline(edge, color="#c44e52", linestyle="--")
        ax.text(edge, ax.get_ylim()[1] * 0.95, f" {name}", color="#c44e52", fontsize=8, va="top")
    ax.set(xlabel="box side sqrt(w*h), px", ylabel="objects", title=f"{stats['source']}: {stats['objects']} objects")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
