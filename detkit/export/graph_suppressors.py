"""detkit's suppressors as TorchScript loops, for graphs exported to ONNX.

``detkit.ops`` runs its suppressors as compiled C++ loops, which an exported graph cannot hold.
These are the same algorithms written with tensor operations inside a ``while`` loop that
``torch.jit.script`` compiles and the TorchScript ONNX exporter turns into an ONNX ``Loop`` with
a data-dependent trip count: exact, not an approximation, for any number of candidates.

Each matches its ``detkit.ops`` twin (the class-aware ``batched_`` form every detector uses):

- the box taken next is the highest (current) score left, ties to the lowest index (ONNX's
  ArgMax takes the first maximum, as the kernels' heap does);
- IoU with torchvision's arithmetic in the boxes' float type (the kernels' ``iou``), then
  compared in float64 with the threshold, as the kernels compare ``double(iou)``;
- hard NMS removes IoU > N_t, Adaptive-NMS IoU >= max(N_t, d_M), DIoU-NMS IoU - rho^2 / c^2 >
  N_t (in float64), each only for overlapping pairs (IoU > 0) of the same class;
- Soft-NMS decays in float64 (linear: by 1 - IoU where IoU >= N_t; gaussian: by
  exp(-IoU^2 / sigma); the adaptive forms gate both at max(N_t, d_M)) and drops a box once its
  score is below ``score_threshold``; the kept boxes come out in descending final score, ties in
  the order of their classes, then of their picking, as ``batched_soft_nms`` merges them.

Outputs: ``keep`` (int64[K]: indices into the candidates, in that order) and the final scores
(float64[K]; equal to the input scores for the hard suppressors).

With a ``limit`` (a detector's cap of detections) the loop stops once the first ``limit`` of
that order are known, which is what the detector keeps: every box is picked at the highest
score left and scores only decay, so the picked scores never rise; after ``limit`` picks, once
the best score left is below the last one picked, no later box can rank among the first
``limit`` (a tie with it keeps the loop going). One step per kept box instead of one per
candidate: the loop's cost with thousands of candidates (Soft-NMS keeps every box above its
score threshold).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

CRITERION_IOU, CRITERION_ADAPTIVE, CRITERION_DIOU = 0, 1, 2
DECAY_LINEAR, DECAY_GAUSSIAN = 0, 1


def iou_row(boxes: Tensor, m: Tensor) -> Tensor:
    """[N] IoU of box m with every box, with the kernels' arithmetic: w = min(x2) - max(x1), h
    likewise, 0 unless both are positive, inter / (area_m + area_b - inter), areas
    (x2 - x1) * (y2 - y1), all in the boxes' type; then float64, as the kernels compare it.
    One row per step keeps the loop's memory linear in the candidates."""
    a = boxes[m]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    w = torch.minimum(a[2], boxes[:, 2]) - torch.maximum(a[0], boxes[:, 0])
    h = torch.minimum(a[3], boxes[:, 3]) - torch.maximum(a[1], boxes[:, 1])
    inter = w * h
    iou = inter / (area[m] + area - inter)
    return torch.where((w > 0) & (h > 0), iou, torch.zeros_like(iou)).to(torch.float64)


def diou_penalty_row(boxes: Tensor, m: Tensor) -> Tensor:
    """[N] rho^2 / c^2 of DIoU between box m and every box, in float64 (the kernel's arithmetic)."""
    a, b = boxes[m].to(torch.float64), boxes.to(torch.float64)
    dx = (a[0] + a[2] - b[:, 0] - b[:, 2]) * 0.5
    dy = (a[1] + a[3] - b[:, 1] - b[:, 3]) * 0.5
    cw = torch.maximum(boxes[m, 2], boxes[:, 2]).to(torch.float64) - torch.minimum(boxes[m, 0], boxes[:, 0]).to(
        torch.float64)
    ch = torch.maximum(boxes[m, 3], boxes[:, 3]).to(torch.float64) - torch.minimum(boxes[m, 1], boxes[:, 1]).to(
        torch.float64)
    return (dx * dx + dy * dy) / (cw * cw + ch * ch)


def best(alive: Tensor, score: Tensor) -> Tensor:
    """The index of the highest score among ``alive``, the first of equals (ONNX ArgMax's rule)."""
    return torch.argmax(torch.where(alive, score, torch.full_like(score, -float("inf"))))


def finished(alive: Tensor, score: Tensor, count: int, limit: int, last: Tensor) -> bool:
    """Whether the loop can stop: nothing is left, or ``limit`` (> 0) boxes are picked and the
    best score left is below ``last``, the last one picked (module docstring)."""
    if not bool(alive.any()):
        return True
    if limit <= 0 or count < limit:
        return False
    return bool(score[best(alive, score)] < last)


@torch.jit.script
def hard_suppress(boxes: Tensor, scores: Tensor, labels: Tensor, densities: Tensor, iou_threshold: float,
                  criterion: int, limit: int) -> Tuple[Tensor, Tensor]:
    """NMS, Adaptive-NMS or DIoU-NMS (``criterion``), class-aware; ``densities`` is read by
    Adaptive-NMS only (pass any [N] tensor otherwise); at most the first ``limit`` (> 0)."""
    score = scores.to(torch.float64)
    alive = torch.ones_like(labels, dtype=torch.bool)
    keep = torch.zeros_like(labels, dtype=torch.int64)
    count = 0
    while bool(alive.any()) and (limit <= 0 or count < limit):
        m = best(alive, score)
        keep[count] = m
        count += 1
        iou = iou_row(boxes, m)
        touching = (iou > 0) & (labels == labels[m])
        if criterion == 1:
            removed = iou >= torch.clamp(densities[m].to(torch.float64), min=iou_threshold)
        elif criterion == 2:
            removed = iou - diou_penalty_row(boxes, m) > iou_threshold
        else:
            removed = iou > iou_threshold
        alive = alive & ~(removed & touching)
        alive[m] = False
    keep = keep[:count]
    return keep, score[keep]


@torch.jit.script
def soft_suppress(boxes: Tensor, scores: Tensor, labels: Tensor, densities: Tensor, use_densities: bool,
                  decay: int, sigma: float, iou_threshold: float, score_threshold: float,
                  limit: int) -> Tuple[Tensor, Tensor]:
    """Soft-NMS (``decay`` linear or gaussian), class-aware; with ``use_densities`` the
    adaptive form (Adaptive-NMS's threshold max(N_t, d_M) gates the decay); at most the first
    ``limit`` (> 0) of its order."""
    current = scores.to(torch.float64)
    alive = current >= score_threshold
    picked = torch.zeros_like(labels, dtype=torch.int64)
    final = torch.zeros_like(current)
    count = 0
    last = torch.zeros([1], dtype=torch.float64, device=boxes.device)[0]
    while not finished(alive, current, count, limit, last):
        m = best(alive, current)
        last = current[m]
        picked[count] = m
        final[count] = current[m]
        count += 1
        alive[m] = False
        if use_densities:
            threshold = torch.clamp(densities[m].to(torch.float64), min=iou_threshold)
        else:
            threshold = torch.full([1], iou_threshold, dtype=torch.float64, device=boxes.device)[0]
        iou = iou_row(boxes, m)
        hit = alive & (iou > 0) & (labels == labels[m])
        if decay == 0 or use_densities:
            hit = hit & (iou >= threshold)
        weight = 1.0 - iou if decay == 0 else torch.exp(-(iou * iou) / sigma)
        current = torch.where(hit, current * weight, current)
        alive = alive & ~(hit & (current < score_threshold))
    picked, final = picked[:count], final[:count]
    # batched_soft_nms's order: descending final score, ties by class, then by picking
    rank = torch.argsort(labels[picked] * (count + 1) + torch.arange(count, device=boxes.device))
    picked, final = picked[rank], final[rank]
    wanted = count if limit <= 0 else min(count, limit)
    out = torch.zeros([wanted], dtype=torch.int64, device=boxes.device)
    left = torch.ones([count], dtype=torch.bool, device=boxes.device)
    for k in range(wanted):  # a selection sort: ArgMax takes the first of equal scores, a stable order
        at = best(left, final)
        out[k] = at
        left[at] = False
    return picked[out], final[out]


def graph_suppress(suppressor, boxes: Tensor, scores: Tensor, labels: Tensor,
                   densities: Tensor | None, limit: int = 0) -> tuple[Tensor, Tensor]:
    """A ``detkit.ops.Suppressor``'s graph twin on one image's candidates: (keep, final scores
    in the scores' dtype), as ``suppressor(boxes, scores, labels, densities)`` returns them, or
    their first ``limit`` when it is > 0 (module docstring). Raises ValueError for a suppressor
    no graph can hold ("none": its order needs a stable sort, which ONNX lacks)."""
    kind, options = suppressor.type, suppressor.options
    if densities is None:
        densities = scores  # read by the adaptive forms only, which need a model's densities
    if kind in ("nms", "diou_nms") or (kind == "adaptive_nms" and options["method"] == "hard"):
        criterion = {"nms": CRITERION_IOU, "diou_nms": CRITERION_DIOU, "adaptive_nms": CRITERION_ADAPTIVE}[kind]
        keep, final = hard_suppress(boxes, scores, labels, densities, float(options["iou_threshold"]), criterion,
                                    int(limit))
    elif kind in ("soft_nms", "adaptive_nms"):
        decay = DECAY_LINEAR if options["method"] == "linear" else DECAY_GAUSSIAN
        keep, final = soft_suppress(boxes, scores, labels, densities, kind == "adaptive_nms", decay,
                                    float(options.get("sigma", 0.5)), float(options["iou_threshold"]),
                                    float(options.get("score_threshold", 0.001)), int(limit))
    else:
        raise ValueError(f"export: postprocess type {kind!r} cannot be exported (no suppression keeps every "
                         "candidate in a stable score order, which ONNX has no operator for); export with a "
                         "suppressor: nms, soft_nms, adaptive_nms or diou_nms")
    return keep, final.to(scores.dtype)
