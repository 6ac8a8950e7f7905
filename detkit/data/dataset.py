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

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Found:
    """A dataset inside a folder: its format, its split (None: the folder is one split), and
    the path its reader takes."""

    format: str
    split: str | None
    source: Path

    def describe(self, folder: Path) -> str:
        what = {"coco": "COCO json", "yolo": "YOLO labels", "voc": "VOC xml"}[self.format]
        return f"{what} {self.source.relative_to(folder)}"


def _splits(folder: Path, found: list[Found]) -> str:
    """"train2017 (COCO json annotations/instances_train2017.json, YOLO labels images/train2017), ..."."""
    by_split: dict[str, list[str]] = {}
    for f in found:
        by_split.setdefault(f.split, []).append(f.describe(folder))
    text = ", ".join(f"{split} ({'; '.join(what)})" for split, what in by_split.items())
    return text + ("; YOLO labels also need --names (or a data.yaml)" if any(f.format == "yolo" for f in found) else "")


class SeveralDatasets(ValueError):
    """A folder holds several splits and the caller did not choose one."""

    def __init__(self, path: Path, found: list[Found]):
        self.path, self.found = path, found
        super().__init__(f"{path}: holds several datasets; choose one with --split: {_splits(path, found)}")


def datasets_in(folder: Path) -> list[Found]:
    """The splits a folder holds in the usual layouts: ``annotations/instances_<split>.json``
    (COCO) and ``images/<split>`` with ``labels/<split>`` (YOLO), in that order."""
    found = [Found("coco", p.stem.removeprefix("instances_"), p)
             for p in sorted((folder / "annotations").glob("instances_*.json"))]
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        found += [Found("yolo", p.name, p) for p in sorted((folder / "images").iterdir())
                  if p.is_dir() and (folder / "labels" / p.name).is_dir()]
    return found


def detect_format(path: Path, split: str | None) -> tuple[str, Path]:
    """(format, the path its reader takes) for a dataset path; see ``open_dataset``.

    Raises:
        SeveralDatasets: a folder with several splits and no ``split`` chosen.
        ValueError: nothing readable at ``path``, or a ``split`` it does not have.
    """
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix == ".json":
            if split is not None:
                raise ValueError(f"split {split!r}: {path} is a COCO json, which is one split; drop the split, or "
                                 "give the folder that holds annotations/instances_<split>.json")
            return "coco", path
        if path.suffix in (".yaml", ".yml"):
            return "yolo", path  # load_yolo checks the split against the YAML's keys
        raise ValueError(f"{path}: not a dataset file (expected a COCO .json or a YOLO data .yaml)")
    if (path / "Annotations").is_dir():
        return "voc", path  # load_voc checks the split against ImageSets/Main/
    yaml_file = next((path / n for n in ("data.yaml", "data.yml") if (path / n).is_file()), None)
    found = datasets_in(path)
    if split is not None:
        chosen = [f for f in found if f.split == split]
        if chosen:
            return chosen[0].format, chosen[0].source
        if yaml_file is not None:
            return "yolo", yaml_file
        have = _splits(path, found) if found else (
            "one split: annotations.json" if (path / "annotations.json").is_file() else "none")
        raise ValueError(f"split {split!r}: {path} has no such split (splits: {have})")
    if (path / "annotations.json").is_file():
        return "coco", path / "annotations.json"
    if yaml_file is not None:
        return "yolo", yaml_file
    if len(found) == 1:
        return found[0].format, found[0].source
    if found:
        raise SeveralDatasets(path, found)
    if path.name != "labels" and "images" in path.parts:
        return "yolo", path
    raise ValueError(
        f"{path}: cannot tell the dataset format: expected a COCO json (or a folder with annotations.json, "
        "or annotations/instances_<split>.json), a YOLO data YAML (or images/<split> and labels/<split> folders), "
        "or a VOC folder (Annotations/, JPEGImages/)"
    )


def read_names(names: str | list[str] | None) -> list[str] | None:
    """Class names given as a list, a file with one per line, or a comma-separated string."""
    if names is None or isinstance(names, list):
        return names
    if Path(names).is_file():
        return [n.strip() for n in Path(names).read_text().splitlines() if n.strip()]
    return [n.strip() for n in names.split(",") if n.strip()]


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
    """An RGB image (uint8[H, W, 3]); OSError if the file is empty, corrupt or truncated.

    OpenCV decodes (faster than PIL here); it would fill a truncated JPEG with grey rows
    and only warn, so a JPEG must end with its end-of-image marker (allowing trailing
    padding).
    """
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:  # cv2.imdecode raises cv2.error on an empty buffer
        raise OSError(f"{path}: empty file (0 bytes)")
    if data[:2].tobytes() == _JPEG_START and _JPEG_END not in data[-64:].tobytes():
        raise OSError(f"{path}: truncated JPEG (no end-of-image marker)")
    try:
        image = cv2.imdecode(data, _DECODE)
    except cv2.error as error:  # a decoder that gives up by raising rather than returning None
        raise OSError(f"{path}: not a readable image ({str(error).strip().splitlines()[-1]})") from None
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
