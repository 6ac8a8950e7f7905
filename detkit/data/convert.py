"""Conversion between COCO json, YOLO txt and VOC xml (``detkit data convert``).

Every format reads into a ``DatasetIndex`` and every index writes to every format, so a
conversion is a read and a write. Evaluation always runs on COCO json: convert a YOLO
or VOC split to COCO to evaluate against it, or let detkit build the COCO ground truth
in memory (``detkit.evaluation.coco_ground_truth``).
"""

from __future__ import annotations

import os
from pathlib import Path

from detkit.data.coco import write_coco
from detkit.data.records import DatasetIndex, place_image
from detkit.data.voc import write_voc
from detkit.data.yolo import label_path, write_yolo


def convert(index: DatasetIndex, to: str, out: str | Path, *, split: str = "train", images: str = "copy",
            force: bool = False) -> Path:
    """Write ``index`` in format ``to`` under ``out``; returns the file or folder to open it by.

    Args:
        to: "coco" (out/annotations.json, images in out/images/), "yolo" (out/data.yaml,
            out/images/<split>/, out/labels/<split>/) or "voc" (out/Annotations/,
            out/JPEGImages/, out/ImageSets/Main/<split>.txt).
        images: "copy" the images, "link" them (symbolic links) or "none" (annotations only).
            An image already at its place is never overwritten.
        force: write even where the conversion would replace the source's own annotation
            files (refused otherwise: the annotations skipped when reading would be lost).

    What a format cannot hold is said in docs/data.md (YOLO has no crowd regions; VOC
    keeps them as ``difficult``); COCO to COCO keeps every field detkit does not read.
    """
    if to not in ("coco", "yolo", "voc"):
        raise ValueError(f"convert: 'to' must be coco, yolo or voc, got {to!r}")
    out = Path(out)
    clashes = [t for t in _written(to, out, split) if any(_overlap(t, s) for s in _source_files(index))]
    if clashes and not force:
        raise ValueError(f"convert: writing to {out} would overwrite the source's own annotations ({clashes[0]}); "
                         "choose another --out, or pass --force to replace them"
                         + (f" ({sum(index.issues.counts.values())} annotations or images skipped when reading "
                            "would be lost)" if index.issues else ""))
    if to == "coco":
        for r in index.records:
            place_image(r.path, out / "images" / r.file_name, images)
        return write_coco(index, out / "annotations.json")
    if to == "yolo":
        return write_yolo(index, out, split, images=images)
    return write_voc(index, out, split, images=images)


def _written(to: str, out: Path, split: str) -> list[Path]:
    """The annotation files and folders a conversion to ``to`` writes into (images apart)."""
    if to == "coco":
        return [out / "annotations.json"]
    if to == "yolo":
        return [out / "labels" / split, out / "data.yaml"]
    return [out / "Annotations", out / "ImageSets" / "Main" / f"{split}.txt", out / "categories.txt"]


def _source_files(index: DatasetIndex) -> set[Path]:
    """The annotation files and folders ``index`` was read from."""
    source = Path(index.source)
    if index.format == "yolo":
        folders = {label_path(r.path).parent for r in index.records}
        return folders | ({source} if source.suffix in (".yaml", ".yml") else set())
    if index.format == "voc":
        return {source / "Annotations", source / "ImageSets", source / "categories.txt"}
    return {source}


def _overlap(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one path, or one lies inside the other."""
    a, b = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return a == b or a in b.parents or b in a.parents
