"""Detection losses, thin over torch and torchvision (same numbers), with checked arguments.

- ``sigmoid_focal_loss``: Lin et al. 2017, FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t);
  ``gamma=0`` is alpha-balanced cross-entropy, the survey's ablation.
- ``smooth_l1_loss``: Girshick 2015 (Fast R-CNN), quadratic below ``beta``, linear above.
- ``generalized_box_iou_loss``: Rezatofighi et al. 2019, 1 - GIoU of paired boxes.
"""

from __future__ import annotations

import torch.nn.functional as F
import torchvision.ops
from torch import Tensor

__all__ = ["generalized_box_iou_loss", "sigmoid_focal_loss", "smooth_l1_loss"]

_REDUCTIONS = ("none", "mean", "sum")


def _check(where: str, a: Tensor, b: Tensor, reduction: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{where}: inputs and targets must have the same shape, got {list(a.shape)} and {list(b.shape)}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{where}: reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """Sigmoid focal loss (RetinaNet), elementwise over any shape.

    Args:
        logits (Tensor[*]): raw scores.
        targets (Tensor[*]): 0/1 (or soft) targets, same shape.
        alpha (float or None): weight of the positives in [0, 1] (negatives get 1 - alpha);
            None: no weighting.
        gamma (float): focusing exponent, >= 0; 0 gives (alpha-balanced) cross-entropy.
        reduction: "none", "mean" or "sum".
    """
    _check("sigmoid_focal_loss", logits, targets, reduction)
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"sigmoid_focal_loss: alpha must be in [0, 1] or None, got {alpha!r}")
    if gamma < 0:
        raise ValueError(f"sigmoid_focal_loss: gamma must be >= 0, got {gamma!r}")
    return torchvision.ops.sigmoid_focal_loss(
        logits, targets.to(logits.dtype), alpha=-1 if alpha is None else alpha, gamma=gamma, reduction=reduction
    )


def smooth_l1_loss(inputs: Tensor, targets: Tensor, beta: float = 1.0, reduction: str = "none") -> Tensor:
    """Smooth-L1: 0.5 x^2 / beta where |x| < beta, |x| - 0.5 beta elsewhere; beta = 0 is L1.

    Args:
        inputs, targets (Tensor[*]): same shape, e.g. encoded box deltas.
        beta (float): >= 0; torchvision's RPN uses 1/9, its RoI head 1.
        reduction: "none", "mean" or "sum".
    """
    _check("smooth_l1_loss", inputs, targets, reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta!r}")
    return F.smooth_l1_loss(inputs, targets, beta=beta, reduction=reduction)


def generalized_box_iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """1 - GIoU(boxes1[i], boxes2[i]) for paired boxes.

    Args:
        boxes1, boxes2 (Tensor[N, 4]): (x1, y1, x2, y2), paired row by row.
        reduction: "none", "mean" or "sum".
    """
    _check("generalized_box_iou_loss", boxes1, boxes2, reduction)
    return torchvision.ops.generalized_box_iou_loss(boxes1, boxes2, reduction=reduction, eps=eps)
