"""detkit.ops: box operations, the suppressor family and detection losses.

Importable on its own from any project: it needs torch, torchvision and numpy, and the
suppressors' loops are a compiled C++ extension (``detkit.ops._C``, built from
``csrc/suppress.cpp`` by setup.py at install time, nothing compiled at run time); nothing of
detkit's training stack.

    from detkit.ops import soft_nms
    keep, scores = soft_nms(boxes, scores, method="gaussian", sigma=0.5)
"""

from detkit.ops.boxes import (
    box_area,
    box_convert,
    box_iou,
    check_boxes,
    clip_boxes_to_image,
    distance_box_iou,
    generalized_box_iou,
    remove_small_boxes,
)
from detkit.ops.losses import generalized_box_iou_loss, sigmoid_focal_loss, smooth_l1_loss
from detkit.ops.suppression import (
    SUPPRESSORS,
    Suppressor,
    adaptive_nms,
    adaptive_soft_nms,
    batched_adaptive_nms,
    batched_adaptive_soft_nms,
    batched_diou_nms,
    batched_nms,
    batched_soft_nms,
    build_suppressor,
    diou_nms,
    nms,
    soft_nms,
)

__all__ = [
    "SUPPRESSORS",
    "Suppressor",
    "adaptive_nms",
    "adaptive_soft_nms",
    "batched_adaptive_nms",
    "batched_adaptive_soft_nms",
    "batched_diou_nms",
    "batched_nms",
    "batched_soft_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "build_suppressor",
    "check_boxes",
    "clip_boxes_to_image",
    "diou_nms",
    "distance_box_iou",
    "generalized_box_iou",
    "generalized_box_iou_loss",
    "nms",
    "remove_small_boxes",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "soft_nms",
]
