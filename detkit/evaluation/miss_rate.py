"""The log-average miss rate MR⁻² of pedestrian and crowd benchmarks (Caltech, CityPersons,
CrowdHuman), on COCO's per-image matches.

Dollár et al. (PAMI 2012): rank every detection of the split by score; after the k best, the
miss rate is MR = 1 - TP / objects and the false positives per image FPPI = FP / images.
MR⁻² is the geometric mean of the miss rate sampled at nine FPPI values evenly spaced in log
space from 10⁻² to 10⁰, each sample being the miss rate at the largest FPPI not above it (1
where no detection has been counted yet), a miss rate of 0 counted as 1e-10. Lower is better.

The matches are pycocotools' (``bootstrap.match_images``: per image and class, greedy in
descending score, IoU ≥ 0.5, crowd regions ignored, the best 100 detections of an image and
class), so MR⁻² and AP judge the same matching. Several classes are pooled: a detection
counts for the class it names, every object of every class is one to find.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from detkit.evaluation.bootstrap import ImageMatches

FPPI_POINTS = np.logspace(-2.0, 0.0, 9)  # 10^-2, 10^-1.75, ..., 10^0


def miss_rate_curve(matches: ImageMatches, iou: float = 0.5, indices: Sequence[int] | np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(FPPI, miss rate) after each detection in descending score (float64[D] each), over the
    images ``indices`` (positions in ``matches.image_ids``, repeats allowed; None: all once)."""
    t = int(np.argmin(np.abs(matches.iou_thresholds - iou)))
    if abs(matches.iou_thresholds[t] - iou) > 1e-9:
        raise ValueError(f"miss rate at IoU {iou}: the matches have IoU thresholds {matches.iou_thresholds.tolist()}")
    order = np.arange(len(matches.image_ids)) if indices is None else np.asarray(indices)
    entries = [row[i] for row in matches.per_class for i in order if row[i] is not None]
    objects = sum(e[3] for e in entries)
    if not entries or objects == 0:
        return np.zeros(0), np.zeros(0)
    scores = np.concatenate([e[0] for e in entries])
    matched = np.concatenate([e[1][t] for e in entries])
    counted = ~np.concatenate([e[2][t] for e in entries])  # a detection on a crowd region counts for nothing
    ranked = np.argsort(-scores, kind="mergesort")  # pycocotools' tie order
    matched = matched[ranked][counted[ranked]]
    tp = np.cumsum(matched, dtype=np.float64)
    fp = np.cumsum(~matched, dtype=np.float64)
    return fp / len(order), 1.0 - tp / objects


def log_average_miss_rate(fppi: np.ndarray, miss_rate: np.ndarray, points: np.ndarray = FPPI_POINTS) -> float:
    """MR⁻² of a (FPPI, miss rate) curve: the geometric mean of the miss rate at ``points``."""
    fppi = np.concatenate([[-np.inf], np.asarray(fppi, np.float64)])
    miss_rate = np.concatenate([[1.0], np.asarray(miss_rate, np.float64)])
    sampled = [miss_rate[np.flatnonzero(fppi <= p)[-1]] for p in points]
    return float(np.exp(np.mean(np.log(np.maximum(1e-10, sampled)))))


def mr2(matches: ImageMatches, indices: Sequence[int] | np.ndarray | None = None) -> float:
    """MR⁻² at IoU 0.5 of the images ``indices`` (None: all): ``log_average_miss_rate`` of
    ``miss_rate_curve``; 1.0 when the split has no objects."""
    return log_average_miss_rate(*miss_rate_curve(matches, 0.5, indices))
