"""Conversion between COCO json, YOLO txt and VOC xml (``detkit data convert``).

Every format reads into a ``DatasetIndex`` and every index writes to every format, so a
conversion is a read and a write. Evaluation always runs on COCO json: convert a YOLO
or VOC split to COCO to evaluate against it, or let detkit build the COCO ground truth
in memory (``detkit.evaluation.coco_ground_truth``).
"""

from __future__ import annotations

from pathlib import Path

from detkit.data.coco import write_coco
from detkit.data.records import DatasetIndex, place_image
from detkit.data.voc import write_voc
from detkit.data.yolo import write_yolo


def convert(index: DatasetIndex, to: str, out: str | Path, *, split: str = "train", images: str = "copy") -> Path:
    """Write ``index`` in format ``to`` under ``out``; returns the file or folder to open it by.

    Args:
        to: "coco" (out/annotations.json, images in out/images/), "yolo" (out/data.yaml,
            out/images/<split>/, out/labels/<split>/) or "voc" (out/Annotations/,
            out/JPEGImages/, out/ImageSets/Main/<split>.txt).
        images: "copy" the images, "link" them (symbolic links) or "none" (annotations only).

    What a format cannot hold is said in docs/data.md (YOLO has no crowd regions; VOC
    keeps them as ``difficult``).
    """
    out = Path(out)
    if to == "coco":
        for r in index.records:
            place_image(r.path, out / "images" / r.file_name, images)
        return write_coco(index, out / "annotations.json")
    if to == "yolo":
        return write_yolo(index, out, split, images=images)
    if to == "voc":
        return write_voc(index, out, split, images=images)
    raise ValueError(f"convert: 'to' must be coco, yolo or voc, got {to!r}")
