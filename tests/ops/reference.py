"""Plain transcriptions of the suppressors' papers, for tests only.

Each is the textbook O(N^2) loop with no index and no tricks: select the highest-scoring
box left (ties: lowest index), then treat every other box left. IoU uses the same float
operations as torchvision's kernel, in the boxes' dtype, so hard decisions can be compared
exactly with detkit's compiled loops.
"""

import math

import numpy as np


def iou_row(boxes: np.ndarray, m: int, others: np.ndarray) -> np.ndarray:
    """IoU of box m with boxes[others], in the boxes' dtype; 0 where they do not overlap."""
    b = boxes[others]
    w = np.minimum(boxes[m, 2], b[:, 2]) - np.maximum(boxes[m, 0], b[:, 0])
    h = np.minimum(boxes[m, 3], b[:, 3]) - np.maximum(boxes[m, 1], b[:, 1])
    area_m = (boxes[m, 2] - boxes[m, 0]) * (boxes[m, 3] - boxes[m, 1])
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_m + area - inter)
    return np.where((w > 0) & (h > 0), iou, 0).astype(boxes.dtype)


def diou_row(boxes: np.ndarray, m: int, others: np.ndarray) -> np.ndarray:
    """IoU - rho^2 / c^2 of box m with boxes[others] (Zheng et al. 2020), float64."""
    iou = iou_row(boxes, m, others).astype(np.float64)
    a = boxes[m].astype(np.float64)
    b = boxes[others].astype(np.float64)
    rho2 = ((a[0] + a[2] - b[:, 0] - b[:, 2]) / 2) ** 2 + ((a[1] + a[3] - b[:, 1] - b[:, 3]) / 2) ** 2
    c2 = (np.maximum(a[2], b[:, 2]) - np.minimum(a[0], b[:, 0])) ** 2 + (
        np.maximum(a[3], b[:, 3]) - np.minimum(a[1], b[:, 1])
    ) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(iou > 0, iou - rho2 / c2, iou)


def _pick(scores: np.ndarray, left: list) -> int:
    best = left[0]
    for i in left[1:]:
        if scores[i] > scores[best]:
            best = i
    return best


def greedy(boxes, scores, suppress, classes=None):
    """Hard greedy suppression: suppress(m, others) -> bool mask of boxes to remove.

    Returns kept indices in descending score (ties: ascending index)."""
    boxes = np.asarray(boxes)
    scores = np.asarray(scores, dtype=np.float64)
    classes = np.zeros(len(scores), np.int64) if classes is None else np.asarray(classes)
    left = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    while left:
        m = left[0]
        keep.append(m)
        others = np.array([i for i in left[1:] if classes[i] == classes[m]], dtype=np.int64)
        removed = set(others[suppress(m, others)].tolist()) if len(others) else set()
        left = [i for i in left[1:] if i not in removed]
    return sorted(keep, key=lambda i: (-scores[i], i))


def nms(boxes, scores, iou_threshold, classes=None):
    boxes = np.asarray(boxes)
    return greedy(boxes, scores, lambda m, o: iou_row(boxes, m, o) > iou_threshold, classes)


def adaptive_nms(boxes, scores, densities, iou_threshold, classes=None):
    """Liu et al. 2019, Algorithm 1: N_M = max(N_t, d_M); remove b if IoU(M, b) >= N_M."""
    boxes = np.asarray(boxes)

    def suppress(m, others):
        iou = iou_row(boxes, m, others)
        return (iou >= max(iou_threshold, float(densities[m]))) & (iou > 0)

    return greedy(boxes, scores, suppress, classes)


def diou_nms(boxes, scores, iou_threshold, classes=None):
    boxes = np.asarray(boxes)
    return greedy(boxes, scores, lambda m, o: diou_row(boxes, m, o) > iou_threshold, classes)


def soft_nms(boxes, scores, method, sigma, iou_threshold, score_threshold, densities=None, classes=None):
    """Bodla et al. 2017, Algorithm 1 (with Liu et al.'s N_M when densities are given).

    Returns (kept indices, their final scores), in selection order."""
    boxes = np.asarray(boxes)
    current = np.asarray(scores, dtype=np.float64).copy()
    classes = np.zeros(len(current), np.int64) if classes is None else np.asarray(classes)
    left = [i for i in range(len(current)) if current[i] >= score_threshold]
    keep, kept_scores = [], []
    while left:
        m = min(left, key=lambda i: (-current[i], i))
        keep.append(m)
        kept_scores.append(current[m])
        left.remove(m)
        threshold = iou_threshold if densities is None else max(iou_threshold, float(densities[m]))
        same = np.array([j for j in left if classes[j] == classes[m]], dtype=np.int64)
        if len(same):
            iou = iou_row(boxes, m, same).astype(np.float64)
            for j, o in zip(same.tolist(), iou.tolist()):
                if o <= 0:
                    continue
                if method == "linear":
                    weight = 1.0 - o if o >= threshold else 1.0
                else:
                    gated_out = densities is not None and o < threshold
                    weight = 1.0 if gated_out else math.exp(-(o * o) / sigma)
                current[j] *= weight
                if current[j] < score_threshold:
                    left.remove(j)
    order = sorted(range(len(keep)), key=lambda t: (-kept_scores[t], t))
    return [keep[t] for t in order], [kept_scores[t] for t in order]
