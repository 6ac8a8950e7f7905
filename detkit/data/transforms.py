"""Augmentation and resizing through albumentations, built from config, boxes kept with the image.

``train_transforms`` and ``eval_transforms`` take the keyword arguments that a config's
``data.train_transforms`` / ``data.eval_transforms`` mappings hold, one to one; each
returns a ``Transforms``: ``transforms(image, boxes, labels, iscrowd) -> (image, boxes,
labels, iscrowd, affine)`` with boxes in absolute xyxy. Boxes that a crop cuts are
clipped to it, and dropped when less than ``min_visibility`` of their area stays in
view. Evaluation pipelines (resizes and pads) are invertible: ``affine = (sx, sy, ox,
oy)`` maps original to returned coordinates, so predictions on a resized or letterboxed
image go back to the original (``detkit.data.boxes_to_original``); training pipelines
(flips, crops) report NaNs.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

with warnings.catch_warnings():  # albumentations checks PyPI for updates on import; keep it quiet
    warnings.simplefilter("ignore")
    import albumentations as A
import cv2

from detkit.config import unknown_key

PAD_FILL = 114  # grey letterbox padding, as YOLO implementations use
# masks (when a caller passes them) resample by pixel centres: edges move by <= 0.5 px per resize
MASK_RESAMPLING = cv2.INTER_NEAREST_EXACT


_PROBE = -1  # label of the whole-image box that measures the geometry of invertible pipelines


class Transforms:
    """A fixed albumentations pipeline; an invertible one (resizes and pads only) also
    reports the affine map it applied, measured on a whole-image probe box, exactly as
    the boxes themselves are mapped."""

    def __init__(self, ops: Sequence[A.BasicTransform], min_visibility: float = 0.0, *, invertible: bool = False):
        self.ops = list(ops)
        self.invertible = invertible
        self.compose = None
        if self.ops:
            self.compose = A.Compose(
                self.ops,
                bbox_params=A.BboxParams(
                    format="pascal_voc", label_fields=["labels", "iscrowd"], min_visibility=min_visibility, clip=True
                ),
            )

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, iscrowd: np.ndarray):
        """Args: image (uint8[H, W, 3]), boxes (float[N, 4] xyxy), labels (int[N]), iscrowd (bool[N]).

        Returns: image, boxes (float32[M, 4]), labels (int64[M]), iscrowd (bool[M]), and
        affine (sx, sy, ox, oy) if the pipeline is invertible, else NaNs."""
        height, width = image.shape[:2]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        iscrowd = np.asarray(iscrowd, dtype=bool).reshape(-1)
        if not self.ops:  # nothing to do (e.g. evaluation when the model resizes)
            return image, boxes.astype(np.float32), labels, iscrowd, (1.0, 1.0, 0.0, 0.0)
        if self.invertible:
            boxes = np.concatenate([boxes, [[0.0, 0.0, width, height]]])
            labels = np.append(labels, _PROBE)
            iscrowd = np.append(iscrowd, False)
        out = self.compose(image=image, bboxes=boxes, labels=labels, iscrowd=iscrowd)
        boxes = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        iscrowd = np.asarray(out["iscrowd"], dtype=bool).reshape(-1)
        affine = (float("nan"),) * 4
        if self.invertible:
            probe = labels == _PROBE
            x0, y0, x1, y1 = boxes[probe][0]
            affine = ((x1 - x0) / width, (y1 - y0) / height, x0, y0)
            boxes, labels, iscrowd = boxes[~probe], labels[~probe], iscrowd[~probe]
        return out["image"], boxes.astype(np.float32), labels, iscrowd, affine

    def __repr__(self) -> str:
        return f"Transforms({', '.join(type(op).__name__ for op in self.ops)})"


def _geometry(resize: Sequence[int] | None, size: Sequence[int] | None, letterbox: int | None) -> list:
    """The resizing ops shared by train and eval: at most one of the three."""
    chosen = [name for name, v in (("resize", resize), ("size", size), ("letterbox", letterbox)) if v]
    if len(chosen) > 1:
        raise ValueError(f"choose one of resize, size and letterbox, got {', '.join(chosen)}")
    if resize:
        # torchvision's detection resize: shorter side to min_size unless the longer exceeds max_size
        min_size, max_size = resize
        return [
            A.SmallestMaxSize(max_size=int(min_size), mask_interpolation=MASK_RESAMPLING),
            A.LongestMaxSize(max_size=int(max_size), mask_interpolation=MASK_RESAMPLING),
        ]
    if size:
        height, width = size
        return [A.Resize(height=int(height), width=int(width), mask_interpolation=MASK_RESAMPLING)]
    if letterbox:
        # fixed-size detectors (SSD, YOLO): keep the aspect ratio, pad to a square; the image
        # top-left, padded right and bottom, as the models' transform pads (one convention)
        return [
            A.LongestMaxSize(max_size=int(letterbox), mask_interpolation=MASK_RESAMPLING),
            A.PadIfNeeded(int(letterbox), int(letterbox), position="top_left", border_mode=cv2.BORDER_CONSTANT,
                          fill=PAD_FILL),
        ]
    return []


def train_transforms(
    *,
    hflip: float = 0.5,
    scale: Sequence[float] | None = (0.8, 1.25),
    crop: float = 0.0,
    crop_size: Sequence[int] | None = None,
    color: float = 0.5,
    min_visibility: float = 0.3,
    resize: Sequence[int] | None = None,
    size: Sequence[int] | None = None,
    letterbox: int | None = None,
) -> Transforms:
    """Training augmentation.

    Args:
        hflip: probability of a horizontal flip (most object classes are left-right symmetric).
        scale: (low, high) range of a random rescale (scale jitter); None: off.
        crop: probability of a box-safe random crop (a crop that keeps every box whole).
        crop_size: (height, width) of a plain random crop (padded if the image is smaller):
            boxes it cuts are clipped, or dropped under ``min_visibility``; None: off.
        color: probability of colour jitter (brightness, contrast, saturation +-20%, hue +-2%).
        min_visibility: a box keeping less than this fraction of its area after the
            transforms is dropped (0.3: a third of an object is still an object).
        resize, size, letterbox: resizing after augmentation, as for ``eval_transforms``.
    """
    _check_probability(hflip=hflip, crop=crop, color=color, min_visibility=min_visibility)
    ops: list = []
    if crop:
        ops.append(A.BBoxSafeRandomCrop(erosion_rate=0.0, p=crop))
    if crop_size:
        height, width = crop_size
        ops.append(A.RandomCrop(int(height), int(width), pad_if_needed=True, border_mode=cv2.BORDER_CONSTANT,
                                fill=PAD_FILL))
    if scale:
        low, high = scale
        if not 0 < low <= high:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {list(scale)}")
        ops.append(A.RandomScale(scale_limit=(low - 1.0, high - 1.0), mask_interpolation=MASK_RESAMPLING, p=1.0))
    if hflip:
        ops.append(A.HorizontalFlip(p=hflip))
    if color:
        ops.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=color))
    ops += _geometry(resize, size, letterbox)
    return Transforms(ops, min_visibility)


def eval_transforms(
    *, resize: Sequence[int] | None = None, size: Sequence[int] | None = None, letterbox: int | None = None
) -> Transforms:
    """Evaluation resizing, invertible through the returned affine.

    Args:
        resize: (min_size, max_size): scale the shorter side to min_size unless the longer
            side would exceed max_size (torchvision's detection models: 800, 1333).
        size: (height, width): resize to exactly this size (aspect ratio not kept).
        letterbox: side: scale the longer side to it and pad to a square (fixed-size
            detectors: SSD 300, YOLO 416/640), padding in grey to the right and bottom, as
            ``models.transform`` pads. (For a data pipeline outside a run: in a run config the
            input size is set by ``model.transform`` alone.)
    """
    return Transforms(_geometry(resize, size, letterbox), invertible=True)


def build_transforms(config: Mapping[str, Any] | None, *, train: bool, where: str = "transforms") -> Transforms:
    """``train_transforms(**config)`` or ``eval_transforms(**config)``, naming an unknown key."""
    factory = train_transforms if train else eval_transforms
    config = dict(config or {})
    known = inspect.signature(factory).parameters
    for key in config:
        if key not in known:
            raise unknown_key(key, known, where)
    return factory(**config)


def _check_probability(**values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
