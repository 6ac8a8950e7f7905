"""What every dataset format parses into: image records, categories, and a report of issues.

A format reader (coco.py, yolo.py, voc.py) turns files into a ``DatasetIndex``: one
``ImageRecord`` per image with its annotations as arrays in detkit's box format
(absolute xyxy pixels), the categories in label order, and a ``DataIssues`` report of
what it skipped or repaired. ``DetectionDataset`` (dataset.py) serves samples from an
index; the writers convert an index back to any format.

What is an error and what is a counted skip is documented in docs/data.md.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("detkit.data")


@dataclass
class ImageRecord:
    """One image and its annotations.

    Attributes:
        image_id: the dataset's image id (COCO's id; 1, 2, ... for YOLO and VOC).
        path: the image file.
        file_name: the path relative to the dataset's image root, as the annotations name it.
        width, height: the image size in pixels, from the annotations (0 if unknown until read).
        boxes (float64[N, 4]): (x1, y1, x2, y2), absolute pixels.
        labels (int64[N]): detkit labels, 0 .. C-1 (index into the categories).
        iscrowd (bool[N]): crowd regions (COCO iscrowd, VOC difficult): never training
            targets, but ignored regions in evaluation.
        areas (float64[N]): COCO's "area" (the segment's area, which sets a box's size range
            in COCO evaluation) when the source has one, else the box area.
        annotation_ids (int64[N]): the source's annotation ids (COCO) or running numbers.
    """

    image_id: int
    path: Path
    file_name: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    iscrowd: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    annotation_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class Category:
    """A category: ``id`` as the source numbers it (COCO ids have gaps), ``name``."""

    id: int
    name: str


class DataIssues:
    """Counts what a reader skipped or repaired, keeping the first few examples of each kind.

    Kinds (docs/data.md): "missing image", "unreadable image", "size differs from annotation",
    "empty box", "non-finite box", "box clipped to image", "box outside image".
    """

    EXAMPLES = 5  # examples kept per kind: enough to find the problem, short enough to read

    def __init__(self, source: str):
        self.source = source
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < self.EXAMPLES:
            kept.append(example)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        """One line per kind: how many, and the first examples."""
        lines = []
        for kind, n in sorted(self.counts.items()):
            more = f", ... ({n - self.EXAMPLES} more)" if n > self.EXAMPLES else ""
            lines.append(f"{self.source}: {n} x {kind}: {'; '.join(self.examples[kind])}{more}")
        return "\n".join(lines)

    def log(self) -> None:
        if self:
            log.warning("%s", self.summary())


@dataclass
class DatasetIndex:
    """A parsed dataset: its images, its categories in label order, what was skipped."""

    records: list[ImageRecord]
    categories: list[Category]
    root: Path  # the image root: every record's path lies under it
    source: str  # what was read (a file or folder), for messages
    format: str  # "coco", "yolo" or "voc"
    issues: DataIssues
    coco: dict | None = None  # a COCO source's json as read: the ground truth its evaluation uses

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def category_ids(self) -> list[int]:
        """detkit label -> the source's category id."""
        return [c.id for c in self.categories]


def resolve_under(root: Path, relative: str, where: str) -> Path:
    """``root / relative``, refusing a name that leads out of ``root`` (``..`` or an absolute path).

    Symbolic links inside the root are followed when the file is opened: placing them is the
    dataset owner's choice (``detkit data convert --images link`` makes them), while a name
    in an annotation file is not to be trusted."""
    if Path(relative).is_absolute():
        raise ValueError(f"{where}: image path {relative!r} is absolute: image paths are relative to the "
                         f"dataset's image root ({root}), and none may lead out of it")
    path = Path(os.path.normpath(root / relative))
    if not path.is_relative_to(os.path.normpath(root)):
        raise ValueError(f"{where}: image path {relative!r} escapes the dataset root {root}")
    return path


def real_size(path: Path, width: int, height: int, where: str, issues: DataIssues) -> tuple[int, int]:
    """The image's (width, height) as stored, read from its header (PIL reads no pixels), and
    counted in ``issues`` when the annotations say another size (or none).

    Boxes are clipped to the image: with a wrong annotated size, valid boxes would be
    dropped as "outside the image" without a word. The size on disk is the one the boxes'
    pixels live in, so it is used; the mismatch is reported with both sizes. A file whose
    header cannot be read keeps the annotated size (decoding it will fail and be counted).
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            stored = image.size
    except (OSError, SyntaxError, ValueError):
        return width, height
    if (width, height) != stored:
        annotated = f"{width}x{height}" if width and height else "no size"
        issues.add("size differs from annotation", f"{where}: annotated {annotated}, file {stored[0]}x{stored[1]}")
    return stored


def clean_boxes(
    boxes: np.ndarray, width, height, where, issues: DataIssues
) -> np.ndarray:
    """Which boxes to keep, after clipping them to the image in place.

    Boxes with a non-finite coordinate or no area are dropped; boxes reaching outside the
    image are clipped (dropped if nothing is left). Each case is counted in ``issues`` with
    ``where(i)`` or ``where[i]`` (e.g. "annotation 17 of image 9") as its example.

    Args:
        boxes (float64[N, 4]): xyxy, modified in place by the clipping.
        width, height: the image size, or each box's image's (arrays of N); 0 means unknown
            (no clipping).
        where: a list of N names, or a function from a box's index to its name (built only
            for the boxes reported).

    Returns:
        bool[N]: the boxes to keep.
    """
    n = len(boxes)
    keep = np.ones(n, dtype=bool)
    if not n:
        return keep
    width = np.broadcast_to(np.asarray(width, dtype=np.float64), (n,))
    height = np.broadcast_to(np.asarray(height, dtype=np.float64), (n,))
    sized = (width > 0) & (height > 0)
    upper = np.stack([width, height, width, height], axis=1)
    # overhangs below a pixel are rounding in the source (COCO has many): clip them quietly
    with np.errstate(invalid="ignore"):
        slight = sized & (np.abs(boxes - np.clip(boxes, 0, upper)).max(axis=1) <= 1.0)
    boxes[slight] = np.clip(boxes[slight], 0, upper[slight])
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        suspect = ~finite | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]) | (sized & (
            (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height)))
    name = where if callable(where) else where.__getitem__
    for i in np.flatnonzero(suspect):  # the common case, every box fine, loops over nothing
        box, w, h = boxes[i], int(width[i]), int(height[i])
        if not finite[i]:
            issues.add("non-finite box", f"{name(i)} {box.tolist()}")
            keep[i] = False
        elif box[2] <= box[0] or box[3] <= box[1]:
            issues.add("empty box", f"{name(i)} (width {box[2] - box[0]:g}, height {box[3] - box[1]:g})")
            keep[i] = False
        else:
            clipped = np.clip(box, 0, [w, h, w, h])
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                issues.add("box outside image", f"{name(i)} {box.tolist()} in {w}x{h}")
                keep[i] = False
            else:
                issues.add("box clipped to image", f"{name(i)} {box.tolist()} in {w}x{h}")
                boxes[i] = clipped
    return keep


def place_image(source: Path, target: Path, how: str) -> None:
    """Put an image where a written dataset expects it: ``how`` is "copy", "link" (a
    symbolic link) or "none" (leave it; the dataset then names images it does not hold)."""
    if how not in ("copy", "link", "none"):
        raise ValueError(f"images must be 'copy', 'link' or 'none', got {how!r}")
    if how == "none" or target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if how == "link":
        target.symlink_to(source.resolve())
    else:
        shutil.copy2(source, target)
