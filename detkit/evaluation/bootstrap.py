"""How much a COCO AP would move with another sample of images: the bootstrap over images.

COCO's AP is not a mean over images, so its sampling noise is estimated by resampling the
images with replacement and recomputing AP on each resample (Efron's bootstrap). The
expensive part of COCO evaluation, matching detections to ground truth in each image, does
not depend on which images are drawn, so it runs once (pycocotools' ``evaluate``, as
``coco_numpy.match`` computes it for all images at once), and each
resample only re-accumulates the per-image matches, with the arithmetic of pycocotools'
``accumulate`` (101 recall points, the precision envelope, categories without ground truth
left out). On the identity resample the numbers are pycocotools' own (tested to 1e-12).

    matches = match_images(gt, results)            # once per results file
    stats = accumulate(matches)                    # AP, AP50, AP75, AR100 of all images
    draws = resample_indices(len(matches.image_ids), 200, seed=0)
    ap = [accumulate(matches, idx)["AP"] for idx in draws]

Sharing ``draws`` between two results files on the same images gives the paired bootstrap
of their difference, which is what a comparison needs: both see the same hard images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from detkit.evaluation import coco_numpy
from detkit.evaluation.coco_eval import check_results

SUMMARY = ("AP", "AP50", "AP75", "AR100")


@dataclass
class ImageMatches:
    """Per-image COCO matches at area "all", 100 detections per image.

    image_ids: the images, in the order the other fields index them.
    per_class[k][i]: for category k and image i, None (no ground truth, no detections) or
        (scores float64[D], matched bool[T, D], det_ignored bool[T, D], gt_not_ignored int),
        the detections being that image's best 100 of category k in descending score.
    iou_thresholds (float64[T]), recall_thresholds (float64[R]).
    """

    image_ids: list[int]
    per_class: list[list[tuple | None]]
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray


def match_images(gt: Mapping, results: list[dict]) -> ImageMatches:
    """pycocotools' per-image matching (bbox, area all, maxDets 100), once, from
    ``coco_numpy.match`` (its dtMatches, dtIgnore and gtIgnore, computed for all images at once)."""
    arrays = check_results(results, "results", gt)
    m = coco_numpy.match(gt, arrays)
    n = len(m.image_ids)
    thresholds = len(coco_numpy.IOU_THRESHOLDS)
    per_class: list[list[tuple | None]] = [[None] * n for _ in m.category_ids]
    counted = np.bincount(m.gt_key[~m.gt_ignored[0]], minlength=len(m.category_ids) * n)
    for key in np.unique(m.gt_key):  # groups with objects (crowd regions too), detections or not
        per_class[key // n][key % n] = _no_detections(thresholds, int(counted[key]))
    if len(m.det_key):
        starts, sizes = coco_numpy.segments(m.det_key)
        for start, size in zip(starts.tolist(), sizes.tolist()):
            key, s = int(m.det_key[start]), slice(start, start + size)
            per_class[key // n][key % n] = (m.score[s], m.counted[0][:, s], m.det_ignored[0][:, s], int(counted[key]))
    return ImageMatches([int(i) for i in m.image_ids], per_class, coco_numpy.IOU_THRESHOLDS.copy(),
                        coco_numpy.RECALL_THRESHOLDS.copy())


def _no_detections(thresholds: int, gt_count: int) -> tuple:
    return np.zeros(0), np.zeros((thresholds, 0), bool), np.zeros((thresholds, 0), bool), gt_count


def accumulate(matches: ImageMatches, indices: Sequence[int] | np.ndarray | None = None) -> dict[str, float]:
    """AP, AP50, AP75 and AR100 of the images ``indices`` (positions in ``matches.image_ids``,
    repeats allowed; None: every image once), as pycocotools' ``accumulate`` + ``summarize``.
    -1 where no category has ground truth among them."""
    order = np.arange(len(matches.image_ids)) if indices is None else np.asarray(indices)
    thresholds, points = len(matches.iou_thresholds), matches.recall_thresholds
    precision, recall = [], []  # per category with ground truth: [T, R] and [T]
    for row in matches.per_class:
        entries = [row[i] for i in order if row[i] is not None]
        gt_count = sum(e[3] for e in entries)
        if gt_count == 0:
            continue
        scores = np.concatenate([e[0] for e in entries])
        ranked = np.argsort(-scores, kind="mergesort")  # pycocotools' tie order
        matched = np.concatenate([e[1] for e in entries], axis=1)[:, ranked]
        ignored = np.concatenate([e[2] for e in entries], axis=1)[:, ranked]
        tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
        fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
        rc = tp / gt_count
        pr = tp / (tp + fp + np.spacing(1))
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # the precision envelope
        q = np.zeros((thresholds, len(points)))
        for t in range(thresholds):
            at = np.searchsorted(rc[t], points, side="left")
            inside = at < rc.shape[1]  # recall points never reached keep precision 0
            q[t, inside] = pr[t, at[inside]]
        precision.append(q)
        recall.append(rc[:, -1] if rc.shape[1] else np.zeros(thresholds))
    if not precision:
        return {name: -1.0 for name in SUMMARY}
    p, r = np.stack(precision, axis=2), np.stack(recall, axis=1)  # [T, R, K], [T, K]
    t50 = int(np.argmin(np.abs(matches.iou_thresholds - 0.5)))
    t75 = int(np.argmin(np.abs(matches.iou_thresholds - 0.75)))
    return {"AP": float(p.mean()), "AP50": float(p[t50].mean()), "AP75": float(p[t75].mean()),
            "AR100": float(r.mean())}


def resample_indices(n: int, draws: int, seed: int = 0) -> np.ndarray:
    """int64[draws, n]: ``draws`` resamples of positions 0..n-1 with replacement."""
    if n < 1 or draws < 1:
        raise ValueError(f"bootstrap needs at least one image and one draw, got {n} images, {draws} draws")
    return np.random.default_rng(seed).integers(0, n, size=(draws, n))


def bootstrap(matches: ImageMatches, draws: np.ndarray) -> dict[str, np.ndarray]:
    """Each summary number (``SUMMARY``) on each resample: float64[len(draws)] per name."""
    values = [accumulate(matches, idx) for idx in draws]
    return {name: np.array([v[name] for v in values]) for name in SUMMARY}
