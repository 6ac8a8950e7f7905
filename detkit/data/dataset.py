"""One dataset class for every format, and ``open_dataset``, which tells the format from a path.

A sample is ``(image, target)``:

- ``image (Tensor[3, H, W], uint8)``: RGB, after the transforms (models convert to float);
- ``target``: ``boxes (Tensor[N, 4], float32)`` absolute xyxy in the returned image,
  ``labels (Tensor[N], int64)`` in 0..C-1, ``iscrowd (Tensor[N], bool)``, ``image_id
  (int)``, ``orig_size`` and ``size`` ((height, width) before and after the transforms),
  ``affine (Tensor[4], float64)``: (sx, sy, ox, oy) with x_returned = x_original * sx + ox
  (``boxes_to_original`` inverts it, so predictions land in the original image).

An image that cannot be decoded (corrupt or truncated file) gives ``None`` instead of a
sample; ``collate`` drops it and reports it with the batch, so one bad file never stops a
run and is never dropped silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch import Tensor

from detkit.data.coco import load_coco
from detkit.data.records import DatasetIndex
from detkit.data.voc import load_voc
from detkit.data.yolo import load_yolo

FORMATS = ("coco", "yolo", "voc")


def detect_format(path: Path, split: str | None) -> tuple[str, Path]:
    """(format, the path its reader takes) for a dataset path; see ``open_dataset``."""
    if path.is_file():
        if path.suffix == ".json":
            return "coco", path
        if path.suffix in (".yaml", ".yml"):
            return "yolo", path
    elif path.is_dir():
        if (path / "Annotations").is_dir():
            return "voc", path
        if (path / "annotations.json").is_file():
            return "coco", path / "annotations.json"
        if split and (path / "annotations" / f"instances_{split}.json").is_file():
            return "coco", path / "annotations" / f"instances_{split}.json"
        for name in ("data.yaml", "data.yml"):
            if (path / name).is_file():
                return "yolo", path / name
        if split and (path / "images" / split).is_dir() and (path / "labels").is_dir():
            return "yolo", path / "images" / split
        if path.name != "labels" and "images" in path.parts:
            return "yolo", path
    else:
        raise ValueError(f"{path}: no such file or folder")
    raise ValueError(
        f"{path}: cannot tell the dataset format: expected a COCO json (or a folder with annotations.json, "
        "or annotations/instances_<split>.json), a YOLO data YAML (or images/<split> and labels/<split> folders), "
        "or a VOC folder (Annotations/, JPEGImages/)"
    )


def open_dataset(
    path: str | Path,
    *,
    split: str | None = None,
    image_root: str | Path | None = None,
    names: list[str] | None = None,
    format: str | None = None,
) -> DatasetIndex:
    """Read a dataset in any supported format, telling the format from ``path``.

    Args:
        path: a COCO json; a folder with ``annotations.json`` or
            ``annotations/instances_<split>.json``; a YOLO data YAML, a folder with
            ``data.yaml``, or an ``images/<split>`` folder (with ``labels/<split>``); a VOC
            folder (``Annotations/``, ``JPEGImages/``).
        split: the split to read (YOLO YAML key, VOC ImageSets list, COCO instances_<split>).
        image_root: COCO only: the folder the json's file names are relative to.
        names: YOLO folders without a YAML: the class names.
        format: "coco", "yolo" or "voc" to skip detection.
    """
    path = Path(path)
    detected, source = detect_format(path, split) if format is None else (format, path)
    if detected == "coco":
        return load_coco(source, image_root)
    if detected == "yolo":
        return load_yolo(source, split or "train", names)
    if detected == "voc":
        return load_voc(source, split)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")


_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
# decode as stored: annotations refer to the stored pixels, so EXIF rotation must not apply
_DECODE = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def read_image(path: Path) -> np.ndarray:
    """An RGB image (uint8[H, W, 3]); OSError if the file is corrupt or truncated.

    OpenCV decodes (faster than PIL here); it would fill a truncated JPEG with grey rows
    and only warn, so a JPEG must end with its end-of-image marker (allowing trailing
    padding).
    """
    data = np.fromfile(path, dtype=np.uint8)
    if data[:2].tobytes() == _JPEG_START and _JPEG_END not in data[-64:].tobytes():
        raise OSError(f"{path}: truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(data, _DECODE)
    if image is None:
        raise OSError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class DetectionDataset(torch.utils.data.Dataset):
    """Samples of a ``DatasetIndex`` (see the module docstring for the sample schema).

    Args:
        index: the parsed dataset (``open_dataset``).
        transforms: ``transforms(image, boxes, labels, iscrowd) -> (image, boxes, labels, iscrowd,
            affine)``,
            e.g. from ``detkit.data.transforms``; None leaves the image as it is.
        keep_crowd: keep crowd regions in the targets (for showing and statistics);
            training leaves them out, as they are not objects to learn.
    """

    def __init__(self, index: DatasetIndex, transforms: Callable | None = None, *, keep_crowd: bool = False):
        self.index = index
        self.transforms = transforms
        self.keep_crowd = keep_crowd

    def __len__(self) -> int:
        return len(self.index.records)

    def aspect_ratios(self) -> list[float]:
        """Width / height of each image, from the annotations (1.0 when unknown)."""
        return [r.width / r.height if r.width and r.height else 1.0 for r in self.index.records]

    def __getitem__(self, i: int) -> tuple[Tensor, dict] | None:
        record = self.index.records[i]
        try:
            image = read_image(record.path)
        except (OSError, SyntaxError, ValueError):
            return None  # collate reports it
        keep = slice(None) if self.keep_crowd else ~record.iscrowd
        boxes, labels, iscrowd = record.boxes[keep], record.labels[keep], record.iscrowd[keep]
        height, width = image.shape[:2]
        affine = (1.0, 1.0, 0.0, 0.0)
        if self.transforms is not None:
            image, boxes, labels, iscrowd, affine = self.transforms(image, boxes, labels, iscrowd)
        target = {
            "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64)),
            "iscrowd": torch.as_tensor(np.asarray(iscrowd, dtype=bool)),
            "image_id": record.image_id,
            "orig_size": (height, width),
            "size": tuple(image.shape[:2]),
            "affine": torch.tensor(affine, dtype=torch.float64),
        }
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), target


def boxes_to_original(boxes: Tensor, affine: Tensor) -> Tensor:
    """Map boxes (Tensor[N, 4], xyxy in a transformed image) back to the original image."""
    sx, sy, ox, oy = affine.tolist()
    scale = boxes.new_tensor([sx, sy, sx, sy])
    offset = boxes.new_tensor([ox, oy, ox, oy])
    return (boxes - offset) / scale
