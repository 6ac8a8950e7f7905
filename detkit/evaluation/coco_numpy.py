"""COCO's bbox evaluation in numpy: pycocotools' ``COCOeval`` (evaluate, accumulate,
summarize) with its numbers, without its per-image Python loops.

pycocotools matches each (image, category) separately, detection by detection, once per area
range; that loop is most of its time. Here every group is matched at once: the greedy
matching runs over the detections' rank within their group (at most 100 steps), and each step
decides, for every group, area range and IoU threshold together, which object the detection
of that rank takes. The rules are pycocotools' to the letter, including its tie-breaks:

- per (image, category), the detections in descending score (ties: file order), the best 100;
- a detection takes the object it overlaps most among those still free (crowd regions are
  never used up) at IoU >= the threshold, preferring objects not ignored (in the area range,
  not crowd) to ignored ones; among equal IoUs the last object in file order;
- IoU is ``pycocotools.mask.iou``'s arithmetic (a crowd region's IoU is the intersection over
  the detection's area); an object's size is its annotation's ``area``, a detection's w * h,
  both ranges inclusive at both ends;
- a detection is left out of the AP when it matched an ignored object, or matched nothing and
  lies outside the area range; a match to an object whose annotation id is 0 counts as no
  match (pycocotools tests the matched id for truth);
- accumulation per category over all images (descending score, ties in image-id then rank
  order), 101 recall points, the precision envelope, categories without objects left at -1;
  the 12 summary numbers as ``COCOeval.summarize`` averages them.

Tests hold every number (stats, precision, recall) to pycocotools' at 1e-12 on the peers'
data and on random cases built to hit the edge cases (crowds, ties, sizes at the range
bounds, more than 100 detections per group).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

# pycocotools' Params, built with its own expressions so that the floats are the same
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0**2, 1e5**2), (0**2, 32**2), (32**2, 96**2), (96**2, 1e5**2))  # all, small, medium, large
AREA_NAMES = ("all", "small", "medium", "large")
# COCOeval.summarize's 12 numbers: (precision?, IoU threshold or None, area range, max detections)
SUMMARY = ((True, None, "all", 100), (True, 0.5, "all", 100), (True, 0.75, "all", 100),
           (True, None, "small", 100), (True, None, "medium", 100), (True, None, "large", 100),
           (False, None, "all", 1), (False, None, "all", 10), (False, None, "all", 100),
           (False, None, "small", 100), (False, None, "medium", 100), (False, None, "large", 100))


@dataclass
class Detections:
    """COCO results as arrays, in file order: image ids, category ids, boxes (float64[N, 4],
    xywh), scores (float64[N])."""

    image_ids: np.ndarray
    category_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    @classmethod
    def from_results(cls, results: Sequence[Mapping]) -> "Detections":
        return cls(np.array([r["image_id"] for r in results]), np.array([r["category_id"] for r in results]),
                   np.array([r["bbox"] for r in results], dtype=np.float64).reshape(len(results), 4),
                   np.array([r["score"] for r in results], dtype=np.float64))


@dataclass
class CocoNumbers:
    """What ``COCOeval`` leaves in ``eval`` and ``stats``: precision float64[T, R, K, A, M],
    recall float64[T, K, A, M] (-1 where a category has no objects), stats float64[12]."""

    precision: np.ndarray
    recall: np.ndarray
    stats: np.ndarray
    iou_thresholds: np.ndarray = field(default_factory=IOU_THRESHOLDS.copy)
    recall_thresholds: np.ndarray = field(default_factory=RECALL_THRESHOLDS.copy)


def box_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of the pairs (d[i], g[i]), xywh, with ``pycocotools.mask.iou``'s arithmetic (bbIou):
    the same operations in the same order, so the same doubles."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da, ga = d[:, 2] * d[:, 3], g[:, 2] * g[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


@dataclass
class Matches:
    """pycocotools' ``evaluate`` step, for every (category, image) group at once.

    Groups are keyed ``category position * len(image_ids) + image position`` (positions in the
    sorted ids). Detections (D: each group's best 100, by group, then descending score):
    key, rank within the group, score, counted (bool[A, T, D]: matched an object, as
    pycocotools' dtMatches > 0), ignored (bool[A, T, D]: its dtIgnore). Objects (G, crowd
    regions included): key, ignored (bool[A, G]: its gtIgnore)."""

    image_ids: np.ndarray
    category_ids: np.ndarray
    det_key: np.ndarray
    rank: np.ndarray
    score: np.ndarray
    counted: np.ndarray
    det_ignored: np.ndarray
    gt_key: np.ndarray
    gt_ignored: np.ndarray


def evaluate(gt: Mapping, results: Sequence[Mapping] | Detections) -> CocoNumbers:
    """pycocotools' bbox evaluation of ``results`` (COCO results, or ``Detections``) against
    ``gt`` (a COCO dict). Detections of images or categories absent from ``gt`` are left out,
    as pycocotools' ``_prepare`` does."""
    m = match(gt, results)
    n_images, n_cats = len(m.image_ids), len(m.category_ids)
    tps, fps = m.counted & ~m.det_ignored, ~m.counted & ~m.det_ignored
    positives = np.stack([np.bincount(m.gt_key[~ig] // n_images, minlength=n_cats) for ig in m.gt_ignored])  # [A, K]
    precision, recall = _accumulate(m.det_key // n_images, m.det_key % n_images, m.rank, m.score, tps, fps, positives)
    return CocoNumbers(precision, recall, _summarize(precision, recall))


def match(gt: Mapping, results: Sequence[Mapping] | Detections) -> Matches:
    """pycocotools' per-image matching (``COCOeval.evaluate``) of every group: ``Matches``."""
    dets = results if isinstance(results, Detections) else Detections.from_results(results)
    image_ids = np.unique(np.array([img["id"] for img in gt["images"]]))
    category_ids = np.unique(np.array([c["id"] for c in gt["categories"]]))
    n_images = len(image_ids)

    # the objects (crowd regions included: they are ignored objects), grouped by (category, image)
    anns = gt.get("annotations", [])
    g_image, g_inside = _positions(image_ids, np.array([a["image_id"] for a in anns]))
    g_cat, g_known = _positions(category_ids, np.array([a["category_id"] for a in anns]))
    keep = np.flatnonzero(g_inside & g_known)
    g_box = np.array([anns[i]["bbox"] for i in keep], dtype=np.float64).reshape(-1, 4)
    g_area = np.array([anns[i]["area"] if "area" in anns[i] else anns[i]["bbox"][2] * anns[i]["bbox"][3]
                       for i in keep], dtype=np.float64)
    g_crowd = np.array([bool(anns[i].get("iscrowd", 0)) for i in keep], dtype=bool)
    g_zero_id = np.array([anns[i].get("id", 1) == 0 for i in keep], dtype=bool)
    g_key = g_cat[keep] * n_images + g_image[keep]
    order = np.argsort(g_key, kind="stable")  # by group, file order within
    g_key, g_box, g_area, g_crowd, g_zero_id = g_key[order], g_box[order], g_area[order], g_crowd[order], g_zero_id[order]
    lo, hi = np.array(AREA_RANGES).T
    ignored = g_crowd[None, :] | (g_area[None, :] < lo[:, None]) | (g_area[None, :] > hi[:, None])  # [A, G]

    # the detections: by group, descending score (ties: file order), the best 100 of each
    d_image, d_inside = _positions(image_ids, dets.image_ids)
    d_cat, d_known = _positions(category_ids, dets.category_ids)
    inside = np.flatnonzero(d_inside & d_known)
    d_key = d_cat[inside] * n_images + d_image[inside]
    order = inside[np.lexsort((-dets.scores[inside], d_key))]
    d_key = d_cat[order] * n_images + d_image[order]
    starts, sizes = segments(d_key) if len(order) else (np.zeros(0, dtype=np.int64),) * 2
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    top = rank < MAX_DETS[-1]
    order, d_key, rank = order[top], d_key[top], rank[top]
    d_box, d_score = dets.boxes[order], dets.scores[order]
    d_area = d_box[:, 2] * d_box[:, 3]
    outside = (d_area[None, :] < lo[:, None]) | (d_area[None, :] > hi[:, None])  # [A, D]

    match = _match(d_key, d_box, rank, g_key, g_box, g_crowd, ignored)  # [A, T, D]: the object taken, or -1
    taken = match >= 0
    which = np.maximum(match, 0)
    counted = taken & ~g_zero_id[which] if len(g_key) else taken
    matched_ignored = ignored[np.arange(len(ignored))[:, None, None], which] if len(g_key) else taken
    det_ignored = (taken & matched_ignored) | (~counted & outside[:, None, :])
    return Matches(image_ids, category_ids, d_key, rank, d_score, counted, det_ignored, g_key, ignored)


def _positions(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each id's position in ``sorted_ids``, whether it is there)."""
    if not len(ids) or not len(sorted_ids):
        return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
    at = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
    return at.astype(np.int64), sorted_ids[at] == ids


def group_pairs(a_group: np.ndarray, b_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64[P], int64[P]): every (i, j) with ``a_group[i] == b_group[j]``, ordered by i, then j."""
    order = np.argsort(b_group, kind="stable")
    first = np.searchsorted(b_group[order], a_group, side="left")
    count = np.searchsorted(b_group[order], a_group, side="right") - first
    pa = np.repeat(np.arange(len(a_group)), count)
    offset = np.arange(len(pa)) - np.repeat(np.cumsum(count) - count, count)
    return pa, order[first[pa] + offset]


def segments(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, sizes) of the runs of equal keys in a non-empty sorted array (``reduceat``'s indices)."""
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return starts, np.diff(np.r_[starts, len(sorted_keys)])


def _match(d_key, d_box, rank, g_key, g_box, g_crowd, ignored) -> np.ndarray:
    """pycocotools' greedy matching of every group at once: int64[A, T, D], the object (row of
    the grouped objects) each detection takes per area range and IoU threshold, -1 for none."""
    n_area, n_iou = ignored.shape[0], len(IOU_THRESHOLDS)
    match = np.full((n_area, n_iou, len(d_key)), -1, dtype=np.int64)
    # every (detection, object of its group) pair, by detection rank, then detection, then object
    pair_det, pair_gt = group_pairs(d_key, g_key)
    if not len(pair_det):
        return match
    steps = np.argsort(rank[pair_det], kind="stable")
    pair_det, pair_gt = pair_det[steps], pair_gt[steps]
    pair_iou = box_iou(d_box[pair_det], g_box[pair_gt], g_crowd[pair_gt])
    bounds = np.searchsorted(rank[pair_det], np.arange(rank.max() + 2))
    # pycocotools compares with min(t, 1 - 1e-10): an IoU of exactly 1 matches at every threshold
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[None, :, None]
    used = np.zeros((n_area, n_iou, len(g_key)), dtype=bool)
    for r in range(len(bounds) - 1):
        s = slice(bounds[r], bounds[r + 1])
        if s.start == s.stop:
            continue
        det, gt, iou = pair_det[s], pair_gt[s], pair_iou[s]
        seg, size = segments(det)  # one per detection
        eligible = (iou[None, None, :] >= thresholds) & (~used[:, :, gt] | g_crowd[gt][None, None, :])
        counted = ~ignored[:, gt][:, None, :]
        # objects not ignored first: ignored ones only where no counted one is eligible
        prefer = np.logical_or.reduceat(eligible & counted, seg, axis=2)
        eligible &= counted | ~np.repeat(prefer, size, axis=2)
        score = np.where(eligible, iou[None, None, :], -1.0)
        best = np.maximum.reduceat(score, seg, axis=2)
        winner = eligible & (score == np.repeat(best, size, axis=2))
        at = np.maximum.reduceat(np.where(winner, np.arange(len(det)), -1), seg, axis=2)  # last of equals
        a, t, j = np.nonzero(at >= 0)
        chosen = gt[at[a, t, j]]
        used[a, t, chosen] = True
        match[a, t, det[seg[j]]] = chosen
    return match


def _accumulate(d_cat, d_image, rank, score, tps, fps, positives) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' ``accumulate``: precision [T, R, K, A, M] and recall [T, K, A, M].

    Its per-threshold ``searchsorted(rc, recThrs)`` is done on the integer true-positive
    counts instead: rc = tp / n >= r exactly when tp >= c(r, n), the least integer with
    c / n >= r in floating point, so every row is looked up at once, with its float numbers."""
    n_iou, n_rec, (n_area, n_cats) = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), positives.shape
    precision = -np.ones((n_iou, n_rec, n_cats, n_area, len(MAX_DETS)))
    recall = -np.ones((n_iou, n_cats, n_area, len(MAX_DETS)))
    # per category, descending score; ties in the order pycocotools concatenates: image, rank
    order = np.lexsort((rank, d_image, -score, d_cat))
    d_cat, rank, tps, fps = d_cat[order], rank[order], tps[:, :, order], fps[:, :, order]
    bounds = np.searchsorted(d_cat, np.arange(n_cats + 1))
    for k in range(n_cats):
        areas = np.flatnonzero(positives[:, k] > 0)  # pycocotools leaves the others at -1
        if not len(areas):
            continue
        n = positives[areas, k].astype(np.float64)
        least = least_counts(n)  # int64[a, R]
        mine = slice(bounds[k], bounds[k + 1])
        tps_k, fps_k = tps[areas, :, mine], fps[areas, :, mine]
        for m, max_det in enumerate(MAX_DETS):
            shown = np.flatnonzero(rank[mine] < max_det)
            nd = len(shown)
            if not nd:
                recall[:, k, areas, m] = 0
                precision[:, :, k, areas, m] = 0
                continue
            tp = np.cumsum(tps_k[:, :, shown], axis=2)  # int [a, T, nd]
            fp = np.cumsum(fps_k[:, :, shown], axis=2).astype(float)
            tp_float = tp.astype(float)
            recall[:, k, areas, m] = (tp_float[:, :, -1] / n[:, None]).T
            pr = tp_float / (fp + tp_float + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]  # the envelope, from the right
            # the first index with rc >= r, per row: integer keys, rows kept apart by an offset
            rows = np.arange(len(areas) * n_iou).reshape(len(areas), n_iou) * (nd + 2)
            keys = (tp + rows[:, :, None]).ravel()
            wanted = rows[:, :, None] + np.minimum(least, nd + 1)[:, None, :]  # [a, T, R]
            at = np.searchsorted(keys, wanted, side="left") - (rows // (nd + 2) * nd)[:, :, None]
            found = np.take_along_axis(pr, np.minimum(at, nd - 1), axis=2)
            precision[:, :, k, areas, m] = np.where(at < nd, found, 0.0).transpose(1, 2, 0)
    return precision, recall


def least_counts(n: np.ndarray, points: np.ndarray = RECALL_THRESHOLDS) -> np.ndarray:
    """int64[len(n), R]: for each object count n and recall point r, the least integer c with
    c / n >= r as float64 division (the test pycocotools' searchsorted makes on tp / n)."""
    guess = np.maximum(np.floor(points[None, :] * n[:, None]) - 1, 0)
    steps = sum(((guess + i) / n[:, None] < points[None, :]) for i in range(4))
    return (guess + steps).astype(np.int64)


def _summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """``COCOeval.summarize``'s 12 numbers, indexed and averaged as it does."""
    stats = np.zeros(len(SUMMARY))
    for i, (is_precision, iou, area, max_det) in enumerate(SUMMARY):
        a, m = [AREA_NAMES.index(area)], [MAX_DETS.index(max_det)]
        s = precision if is_precision else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, a, m] if is_precision else s[:, :, a, m]
        stats[i] = -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])
    return stats
