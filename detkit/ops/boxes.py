"""Box operations. detkit's one internal box format is absolute ``xyxy``.

``boxes (Tensor[N, 4])``: ``(x1, y1, x2, y2)`` in absolute pixels, ``x1 <= x2`` and
``y1 <= y2``. Other formats exist only at the edges (datasets, COCO export):

- ``xywh``: top-left corner, width, height (COCO json);
- ``cxcywh``: centre, width, height (YOLO txt, normalised there).

torchvision already does these well, so they are torchvision's functions, re-exported
under one roof; ``check_boxes`` is detkit's own: the validation every op and dataset
runs on user input, with errors that say what is wrong and where.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    distance_box_iou,
    generalized_box_iou,
    remove_small_boxes,
)

__all__ = [
    "box_area",
    "box_convert",
    "box_iou",
    "check_boxes",
    "clip_boxes_to_image",
    "distance_box_iou",
    "generalized_box_iou",
    "remove_small_boxes",
]


def _first(mask: Tensor) -> int:
    """Index of the first True entry of a 1-D bool tensor."""
    return int(mask.nonzero()[0, 0])


def check_boxes(boxes: Tensor, name: str = "boxes", where: str = "", *, values: bool = True) -> None:
    """Raise ``ValueError`` unless ``boxes`` is a float ``Tensor[N, 4]`` of finite xyxy boxes.

    Args:
        boxes: the boxes to check.
        name: how the message calls the argument.
        where: put before the message (a function name, a file), to say where.
        values: also check the values (finite, x1 <= x2, y1 <= y2), not only the type and shape.

    The message names the first offending box and its coordinates, e.g.
    ``nms: boxes[17] = (5.0, 3.0, 2.0, 9.0) has x2 < x1``.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{prefix}{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{prefix}{name} must have shape [N, 4] (x1, y1, x2, y2), got {list(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"{prefix}{name} must be a floating-point tensor, got {boxes.dtype}")
    if not values or boxes.numel() == 0:
        return
    finite = torch.isfinite(boxes).all(dim=1)
    if not bool(finite.all()):
        i = _first(~finite)
        raise ValueError(f"{prefix}{name}[{i}] = {_fmt(boxes[i])} is not finite (NaN or inf)")
    inverted = (boxes[:, 2:] < boxes[:, :2]).any(dim=1)
    if bool(inverted.any()):
        i = _first(inverted)
        axis = "x2 < x1" if boxes[i, 2] < boxes[i, 0] else "y2 < y1"
        raise ValueError(f"{prefix}{name}[{i}] = {_fmt(boxes[i])} has {axis}; boxes must be (x1, y1, x2, y2)")


def _fmt(box: Tensor) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in box.tolist()) + ")"
