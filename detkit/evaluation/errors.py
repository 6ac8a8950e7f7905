"""Why a detector misses: TIDE's error breakdown and detkit's own, from one matching.

TIDE (Bolya, Foley, Hays, Hoffman, ECCV 2020) sorts every false positive and missed object
of a detector into one of six errors, and measures each as the AP an oracle that fixed only
that error would add (dAP), at one IoU threshold (the foreground threshold, 0.5):

- a detection's error, tested in this order on the detections that matched nothing:
  **loc** (its best IoU with an object of its class is in [0.1, 0.5]: right class, poorly
  placed), **cls** (IoU >= 0.5 with an object of another class), **dupe** (IoU >= 0.5 with an
  object of its class that a higher-scoring detection already took), **bkg** (IoU <= 0.1 with
  every object), **both** (the rest: wrong class and poorly placed);
- **miss**: an object no detection matched and no cls or loc error points at.

The oracle fixes: cls and loc turn the error into a true positive of the object it points at
(the highest-scoring such detection per object; the others are removed), if that object is
still free; dupe, bkg and both remove the detection; miss removes the object from the
positives. Two special dAPs: **fp** (every false positive scored below every true one) and
**fn** (every missed object removed from the positives). AP is averaged over the classes
that have objects or detections, at 101 recall points, and each dAP is the fixed AP minus
the AP, clipped at 0 (as TIDE does).

The matching is COCO's at IoU 0.5 (each detection, in descending score per image, takes the
free object of its class it overlaps most at IoU >= 0.5; at most ``max_dets`` detections per
image, over all classes), crowd regions excluded as TIDE does: a detection left unmatched that
lies inside a crowd region of its class (intersection over its own area > 0.5) is left out of
the AP, though still given an error. IoU is pycocotools' (``pycocotools.mask.iou``), the one
COCO evaluation uses. Tests hold every dAP to ``tidecv``'s.

numpy and pycocotools only: importing this module imports neither torch nor detkit's data stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

ERRORS = ("cls", "loc", "both", "dupe", "bkg", "miss")  # TIDE's order
SPECIAL = ("fp", "fn")
_CODE = {name: code for code, name in enumerate(ERRORS)}
NONE = -1  # a true positive: no error
RECALL_POINTS = np.arange(101) / 100  # COCO's 101 recall points (exactly k / 100, as TIDE builds them)


@dataclass
class Matching:
    """Every detection and object of an evaluation, matched once at IoU ``pos_threshold``.

    Detections (``D`` of them, in image order then descending score, at most ``max_dets`` per
    image): image (int64[D], index into ``image_ids``), label (int64[D], category id), score
    (float64[D]), box (float64[D, 4], xywh), tp (bool[D]), ignored (bool[D]: unmatched and inside
    a crowd region of its class, out of the AP), error (int64[D]: index into ``ERRORS``, -1 for a
    true positive), target (int64[D]: the object a cls or loc error points at, else -1),
    matched (int64[D]: the object a true positive took, else -1).

    Objects (``G``, crowd regions excluded): image, label, box (xywh), area, tp (bool[G]: some
    detection matched it), missed (bool[G]: no detection matched it and no cls or loc error
    points at it), density (float64[G]: its highest IoU with another object of its image, any
    class; 0 alone).
    """

    image_ids: list
    det_image: np.ndarray
    det_label: np.ndarray
    det_score: np.ndarray
    det_box: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    error: np.ndarray
    target: np.ndarray
    matched: np.ndarray
    gt_image: np.ndarray
    gt_label: np.ndarray
    gt_box: np.ndarray
    gt_area: np.ndarray
    gt_tp: np.ndarray
    missed: np.ndarray
    density: np.ndarray
    pos_threshold: float
    background_threshold: float


@dataclass
class ErrorBreakdown:
    """TIDE's numbers (fractions of 1, as detkit's AP; TIDE prints them x100).

    ap: AP at the foreground IoU; delta: dAP per error of ``ERRORS``; special: dAP of "fp" and
    "fn"; counts: the detections (objects for "miss") of each error.
    """

    ap: float
    delta: dict[str, float]
    special: dict[str, float]
    counts: dict[str, int]
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"ap": self.ap, "delta_ap": self.delta, "special_delta_ap": self.special, "counts": self.counts,
                **self.extra}

    def table(self) -> str:
        """TIDE's two tables, in AP points."""
        head = "".join(f"{name:>8}" for name in ERRORS)
        main = "".join(f"{100 * self.delta[name]:8.2f}" for name in ERRORS)
        count = "".join(f"{self.counts[name]:8d}" for name in ERRORS)
        special = "".join(f"{name:>8}{100 * self.special[name]:7.2f}" for name in SPECIAL)
        return (f"AP50 {100 * self.ap:.2f}\n"
                f"error {head}\n  dAP {main}\ncount {count}\n"
                f"special dAP {special}")


def match(gt: Mapping, results: Sequence[Mapping], *, pos_threshold: float = 0.5,
          background_threshold: float = 0.1, max_dets: int = 100) -> Matching:
    """Match ``results`` (COCO results: image_id, category_id, bbox xywh, score) to ``gt`` (a
    COCO dict) and give every unmatched detection its TIDE error (module docstring).
    Detections of images absent from ``gt`` are left out, as COCO evaluation does."""
    image_ids = [img["id"] for img in gt["images"]]
    rank = {image_id: i for i, image_id in enumerate(image_ids)}
    annotations = [a for a in gt.get("annotations", []) if a["image_id"] in rank]
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool)
    ann_image = np.array([rank[a["image_id"]] for a in annotations], dtype=np.int64)
    ann_label = np.array([a["category_id"] for a in annotations], dtype=np.int64)
    ann_box = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
    gt_image, gt_label, gt_box = ann_image[~crowd], ann_label[~crowd], ann_box[~crowd]
    crowd_image, crowd_label, crowd_box = ann_image[crowd], ann_label[crowd], ann_box[crowd]

    det_image, det_label, det_score, det_box = _detections(results, rank, max_dets)
    n_det, n_gt = len(det_image), len(gt_image)
    tp = np.zeros(n_det, dtype=bool)
    ignored = np.zeros(n_det, dtype=bool)
    error = np.full(n_det, NONE, dtype=np.int64)
    target = np.full(n_det, -1, dtype=np.int64)
    matched = np.full(n_det, -1, dtype=np.int64)
    gt_tp = np.zeros(n_gt, dtype=bool)
    density = np.zeros(n_gt, dtype=np.float64)

    crowd_order = np.argsort(crowd_image, kind="stable")
    crowd_bounds = _bounds(crowd_image[crowd_order], len(image_ids))
    for i, d, g in _images(det_image, gt_image, len(image_ids)):
        if len(g) > 1:
            density[g] = _densities(gt_box[g])
        if d.start == d.stop:
            continue
        labels = det_label[d]
        if len(g):
            iou = np.asarray(mask_utils.iou(det_box[d], gt_box[g], np.zeros(len(g), dtype=np.uint8)))
            same = labels[:, None] == gt_label[g][None, :]
            class_iou = iou * same
            taken = _greedy(class_iou, pos_threshold)
            hit = taken >= 0
            tp[d.start + np.flatnonzero(hit)] = True
            matched[d.start + np.flatnonzero(hit)] = g[taken[hit]]
            gt_tp[g[taken[hit]]] = True
        else:
            taken = np.full(d.stop - d.start, -1)
        free = taken < 0
        c = crowd_order[crowd_bounds[i]:crowd_bounds[i + 1]]
        if len(c) and free.any():
            inside = np.asarray(mask_utils.iou(det_box[d], crowd_box[c], np.ones(len(c), dtype=np.uint8)))
            inside = (inside > pos_threshold) & (labels[:, None] == crowd_label[c][None, :])
            ignored[d.start + np.flatnonzero(free & inside.any(axis=1))] = True
        rows = np.flatnonzero(free)
        if not len(rows):
            continue
        if not len(g):
            error[d.start + rows] = _CODE["bkg"]
            continue
        error[d.start + rows], pointed = _classify(iou[rows], same[rows], gt_tp[g], pos_threshold,
                                                   background_threshold)
        target[d.start + rows] = np.where(pointed >= 0, g[np.maximum(pointed, 0)], -1)

    usable = np.zeros(n_gt, dtype=bool)
    pointing = target[target >= 0]
    usable[pointing[~gt_tp[pointing]]] = True  # a cls or loc error points at them: not missed
    gt_area = gt_box[:, 2] * gt_box[:, 3]
    return Matching(image_ids, det_image, det_label, det_score, det_box, tp, ignored, error, target, matched,
                    gt_image, gt_label, gt_box, gt_area, gt_tp, ~gt_tp & ~usable, density, pos_threshold,
                    background_threshold)


def tide(gt: Mapping, results: Sequence[Mapping], *, pos_threshold: float = 0.5,
         background_threshold: float = 0.1, max_dets: int = 100) -> ErrorBreakdown:
    """TIDE's six errors and two special errors of ``results`` against ``gt`` (module docstring)."""
    return breakdown(match(gt, results, pos_threshold=pos_threshold, background_threshold=background_threshold,
                           max_dets=max_dets))


def breakdown(m: Matching) -> ErrorBreakdown:
    """TIDE's dAPs of a ``Matching``: each error fixed alone, against the unfixed AP."""
    classes = np.unique(np.concatenate([m.gt_label, m.det_label[~m.ignored]]))
    positives = _count(m.gt_label, classes)
    scored = ~m.ignored  # the detections in the AP
    ap = mean_ap(m.det_label[scored], m.det_score[scored], m.tp[scored], classes, positives)
    delta = {}
    for name in ERRORS:
        if name == "miss":
            fixed = mean_ap(m.det_label[scored], m.det_score[scored], m.tp[scored], classes,
                            positives - _count(m.gt_label[m.missed], classes))
        else:
            fixed = mean_ap(*_fixed(m, _CODE[name]), classes, positives)
        delta[name] = max(fixed - ap, 0.0)
    perfect_precision = mean_ap(m.det_label[scored], m.tp[scored].astype(np.float64), m.tp[scored], classes,
                                positives)
    perfect_recall = mean_ap(m.det_label[scored], m.det_score[scored], m.tp[scored], classes,
                             _count(m.gt_label[m.gt_tp], classes))
    counts = {name: int((m.error == _CODE[name]).sum()) for name in ERRORS if name != "miss"}
    counts["miss"] = int(m.missed.sum())
    return ErrorBreakdown(ap, delta, {"fp": perfect_precision - ap, "fn": perfect_recall - ap},
                          {name: counts[name] for name in ERRORS})


def mean_ap(labels: np.ndarray, scores: np.ndarray, tp: np.ndarray, classes: np.ndarray,
            positives: np.ndarray) -> float:
    """TIDE's (and COCO's) 101-point AP averaged over ``classes`` that have detections or
    positives (int[K], aligned with ``classes``); a class with detections and no positives
    counts as 0. Ties in score keep the given order."""
    aps = per_class_ap(labels, scores, tp, classes, positives)
    defined = aps[~np.isnan(aps)]
    return float(defined.mean()) if len(defined) else 0.0


def per_class_ap(labels: np.ndarray, scores: np.ndarray, tp: np.ndarray, classes: np.ndarray,
                 positives: np.ndarray) -> np.ndarray:
    """float64[K]: the AP of each of ``classes``; NaN for a class with neither detections nor positives."""
    order = np.lexsort((-scores, np.searchsorted(classes, labels)))
    labels, tp = labels[order], tp[order]
    bounds = np.searchsorted(labels, classes, side="left"), np.searchsorted(labels, classes, side="right")
    out = np.full(len(classes), np.nan)
    for k in range(len(classes)):
        hits = tp[bounds[0][k]:bounds[1][k]]
        if not len(hits) and positives[k] == 0:
            continue
        if positives[k] <= 0 or not len(hits):
            out[k] = 0.0
            continue
        true = np.cumsum(hits)
        precision = np.maximum.accumulate((true / np.arange(1, len(hits) + 1))[::-1])[::-1]
        at = np.searchsorted(true / positives[k], RECALL_POINTS, side="left")
        out[k] = np.where(at < len(hits), precision[np.minimum(at, len(hits) - 1)], 0.0).mean()
    return out


def _fixed(m: Matching, code: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, scores, tp) of the AP's detections once the oracle fixed every error ``code``:
    cls and loc errors become true positives of the object they point at (only the first,
    i.e. highest-scoring, per free object; the rest go), the other errors go."""
    keep = ~m.ignored & (m.error != code)
    labels, tp = m.det_label.copy(), m.tp.copy()
    if code in (_CODE["cls"], _CODE["loc"]):
        mine = np.flatnonzero(m.error == code)
        free = mine[(m.target[mine] >= 0) & ~m.gt_tp[np.maximum(m.target[mine], 0)]]
        # the best detection per object over both kinds of error (TIDE keeps one candidate per
        # object, whichever kind it is); detections are in image then score order
        pointing = np.flatnonzero((m.target >= 0) & ((m.error == _CODE["cls"]) | (m.error == _CODE["loc"])))
        first = np.full(len(m.gt_label), -1)
        _, at = np.unique(m.target[pointing], return_index=True)
        first[m.target[pointing[at]]] = pointing[at]
        fixed = free[first[m.target[free]] == free]
        keep[fixed] = True
        tp[fixed] = True
        labels[fixed] = m.gt_label[m.target[fixed]]
    return labels[keep], m.det_score[keep], tp[keep]


def _classify(iou: np.ndarray, same: np.ndarray, taken: np.ndarray, pos: float,
              background: float) -> tuple[np.ndarray, np.ndarray]:
    """(error codes, the object each cls or loc error points at or -1) of unmatched detections'
    IoU rows (R, G) with an image's objects, in TIDE's order of tests."""
    rows = np.arange(len(iou))
    class_iou, other_iou = iou * same, iou * ~same
    best_same, best_other = class_iou.argmax(axis=1), other_iou.argmax(axis=1)
    same_iou, other_best = class_iou[rows, best_same], other_iou[rows, best_other]
    loc = (same_iou >= background) & (same_iou <= pos)
    cls = ~loc & (other_best >= pos)
    dupe = ~loc & ~cls & ((class_iou * taken[None, :]).max(axis=1) >= pos)
    bkg = ~loc & ~cls & ~dupe & (iou.max(axis=1) <= background)
    codes = np.select([loc, cls, dupe, bkg], [_CODE["loc"], _CODE["cls"], _CODE["dupe"], _CODE["bkg"]],
                      _CODE["both"])
    pointed = np.select([loc, cls], [best_same, best_other], -1)
    return codes, pointed


def _greedy(class_iou: np.ndarray, pos: float) -> np.ndarray:
    """int64[D]: the object each detection (rows, in descending score) takes, or -1: the free
    object of its class it overlaps most, at IoU >= ``pos`` (first on ties)."""
    taken = np.full(len(class_iou), -1, dtype=np.int64)
    candidates = np.flatnonzero(class_iou.max(axis=1) >= pos)
    if not len(candidates):
        return taken
    free = class_iou[candidates].copy()
    for row, r in enumerate(candidates):
        j = int(free[row].argmax())
        if free[row, j] >= pos:
            taken[r] = j
            free[:, j] = 0
    return taken


def _densities(boxes: np.ndarray) -> np.ndarray:
    """Each box's highest IoU with another box of the set (the crowd density of issue 16)."""
    iou = np.asarray(mask_utils.iou(boxes, boxes, np.zeros(len(boxes), dtype=np.uint8)))
    np.fill_diagonal(iou, 0)
    return iou.max(axis=1)


def _detections(results: Sequence[Mapping], rank: Mapping, max_dets: int):
    """The results of known images as arrays, in image order then descending score (stable),
    at most ``max_dets`` per image."""
    known = [r for r in results if r["image_id"] in rank]
    image = np.array([rank[r["image_id"]] for r in known], dtype=np.int64)
    label = np.array([r["category_id"] for r in known], dtype=np.int64)
    score = np.array([r["score"] for r in known], dtype=np.float64)
    box = np.array([r["bbox"] for r in known], dtype=np.float64).reshape(-1, 4)
    order = np.lexsort((-score, image))
    image, label, score, box = image[order], label[order], score[order], box[order]
    starts = _bounds(image, len(rank))
    within = np.arange(len(image)) - starts[image]
    keep = within < max_dets
    return image[keep], label[keep], score[keep], box[keep]


def _images(det_image: np.ndarray, gt_image: np.ndarray, n: int):
    """Per image index i < n: (i, its detections as a slice of ``det_image``, which is sorted
    by image, and its objects' indices in the file's order)."""
    det_bounds = _bounds(det_image, n)
    gt_order = np.argsort(gt_image, kind="stable")
    gt_bounds = _bounds(gt_image[gt_order], n)
    for i in range(n):
        yield i, slice(det_bounds[i], det_bounds[i + 1]), gt_order[gt_bounds[i]:gt_bounds[i + 1]]


def _bounds(sorted_images: np.ndarray, n: int) -> np.ndarray:
    """int64[n + 1]: where each image's run starts in an array sorted by image index."""
    return np.searchsorted(sorted_images, np.arange(n + 1), side="left")


def _count(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(classes, labels), minlength=len(classes)).astype(np.int64)


# ------------------------------------------------------------------------------ detkit's breakdowns

# An object's crowd density: its highest IoU with another object of its image (issue 16's
# density, class-agnostic); the buckets: alone, light overlap, overlap below NMS's 0.5, above it
DENSITY_BUCKETS = (("alone", 0.0, 0.0), ("(0, 0.3]", 0.0, 0.3), ("(0.3, 0.5]", 0.3, 0.5), ("> 0.5", 0.5, 1.0))
SIZE_BUCKETS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, np.inf))  # COCO's areas
CONFUSION_SCORE = 0.25  # detections below it are not shown in the confusion matrix (Ultralytics' default)


def density_bucket(density: np.ndarray) -> np.ndarray:
    """int64[G]: the index into ``DENSITY_BUCKETS`` of each density."""
    return np.select([density <= 0, density <= 0.3, density <= 0.5], [0, 1, 2], 3)


def size_bucket(area: np.ndarray) -> np.ndarray:
    """int64[G]: the index into ``SIZE_BUCKETS`` of each area (COCO's: small < 32², large >= 96²)."""
    return np.searchsorted(np.array([32.0**2, 96.0**2]), area, side="right")


def by_bucket(m: Matching, object_bucket: np.ndarray, detection_bucket: np.ndarray, names: Sequence[str]) -> list[dict]:
    """Per bucket of objects: objects, matched, recall, missed (unmatched) and AP at the
    matching's IoU, COCO's way of restricting AP to a range: the other objects are ignored
    (a detection that matched one is left out), and an unmatched detection counts where
    ``detection_bucket`` puts it (-1: in every bucket). The AP averages the classes with
    objects in the bucket; recall and AP are None for a bucket without objects."""
    rows = []
    for b, name in enumerate(names):
        inside = object_bucket == b
        scored = ~m.ignored & np.where(m.tp, inside[np.maximum(m.matched, 0)],
                                       (detection_bucket == b) | (detection_bucket < 0))
        classes = np.unique(m.gt_label[inside])
        ap = None
        if len(classes):
            known = scored & np.isin(m.det_label, classes)
            aps = per_class_ap(m.det_label[known], m.det_score[known], m.tp[known], classes,
                               _count(m.gt_label[inside], classes))
            ap = float(np.nanmean(aps))
        n, hit = int(inside.sum()), int((inside & m.gt_tp).sum())
        rows.append({"bucket": name, "objects": n, "matched": hit, "recall": hit / n if n else None,
                     "missed": n - hit, "ap": ap})
    return rows


def by_crowding(m: Matching) -> list[dict]:
    """``by_bucket`` over ``DENSITY_BUCKETS``: an unmatched detection counts in the bucket of
    the object it overlaps most (IoU above the background threshold, any class), one on
    background in every bucket."""
    return by_bucket(m, density_bucket(m.density), _nearest_object_bucket(m, density_bucket(m.density)),
                     [name for name, _, _ in DENSITY_BUCKETS])


def by_size(m: Matching, areas: np.ndarray | None = None) -> list[dict]:
    """``by_bucket`` over COCO's sizes (``areas``: the objects' annotated areas, else w * h);
    an unmatched detection counts by its own box's area, as COCO does."""
    objects = size_bucket(m.gt_area if areas is None else areas)
    return by_bucket(m, objects, size_bucket(m.det_box[:, 2] * m.det_box[:, 3]), [name for name, _, _ in SIZE_BUCKETS])


def per_class(m: Matching) -> dict[int, float]:
    """Category id -> AP at the matching's IoU (TIDE's per-class AP), for the classes with
    objects or detections."""
    scored = ~m.ignored
    classes = np.unique(np.concatenate([m.gt_label, m.det_label[scored]]))
    aps = per_class_ap(m.det_label[scored], m.det_score[scored], m.tp[scored], classes, _count(m.gt_label, classes))
    return {int(c): float(a) for c, a in zip(classes, aps)}


def confusion(m: Matching, categories: Sequence[int], score_threshold: float = CONFUSION_SCORE) -> np.ndarray:
    """int64[K + 1, K + 1]: rows the true class (``categories`` order, then "background": a
    detection on no object), columns the detected class (then "missed": an object no shown
    detection took). Detections scoring >= ``score_threshold``, crowd-ignored ones left out,
    matched class-agnostically: each, in descending score per image, takes the free object it
    overlaps most at IoU >= the matching's threshold."""
    k = len(categories)
    column = {c: i for i, c in enumerate(categories)}
    out = np.zeros((k + 1, k + 1), dtype=np.int64)
    shown = np.flatnonzero((m.det_score >= score_threshold) & ~m.ignored)
    taken_any = np.zeros(len(m.gt_image), dtype=bool)
    for _, rows, g in _images(m.det_image[shown], m.gt_image, len(m.image_ids)):
        d = shown[rows]
        if not len(d):
            continue
        taken = np.full(len(d), -1)
        if len(g):
            iou = np.asarray(mask_utils.iou(m.det_box[d], m.gt_box[g], np.zeros(len(g), dtype=np.uint8)))
            taken = _greedy(iou, m.pos_threshold)
        hit = taken >= 0
        np.add.at(out, ([column[c] for c in m.gt_label[g[taken[hit]]]], [column[c] for c in m.det_label[d[hit]]]), 1)
        np.add.at(out, (k, [column[c] for c in m.det_label[d[~hit]]]), 1)
        taken_any[g[taken[hit]]] = True
    np.add.at(out, ([column[c] for c in m.gt_label[~taken_any]], k), 1)
    return out


def covered(m: Matching, results: Sequence[Mapping]) -> np.ndarray:
    """bool[G]: the objects some box of ``results`` (COCO results) of their class overlaps at
    IoU >= the matching's threshold. The one definition of "covered" (the compare nms suite's
    recoverable and lost objects use it too)."""
    rank = {image_id: i for i, image_id in enumerate(m.image_ids)}
    image, label, _, box = _detections(results, rank, len(results) + 1)
    return _covered_per_image(m, image, label, box)


def covered_boxes(gt_box: np.ndarray, gt_label: np.ndarray, box: np.ndarray, label: np.ndarray,
                  iou_threshold: float = 0.5) -> np.ndarray:
    """bool[G]: objects (xywh, labels) some box (xywh) of their label overlaps at IoU >= ``iou_threshold``."""
    if not len(gt_box) or not len(box):
        return np.zeros(len(gt_box), dtype=bool)
    iou = np.asarray(mask_utils.iou(box.reshape(-1, 4), gt_box.reshape(-1, 4), np.zeros(len(gt_box), dtype=np.uint8)))
    return ((iou >= iou_threshold) & (label[:, None] == gt_label[None, :])).any(axis=0)


def miss_causes(m: Matching, candidates: Sequence[Mapping], kept: Sequence[Mapping]) -> dict[str, int]:
    """The unmatched objects of a model whose raw candidates (before suppression) and kept
    detections (after it: all of them, also beyond the ``max_dets`` evaluated per image) are
    known, both as COCO results, by cause: "suppressed" (a candidate of its class covered it, no
    kept detection does: the nms suite's "lost", by the same ``covered``), "not_proposed" (no
    candidate covered it), "taken" (a kept detection covers it, yet it is unmatched: that
    detection matched another object, or ranks below the ``max_dets`` per image)."""
    recoverable = covered(m, candidates)
    kept_covers = covered(m, kept)
    unmatched = ~m.gt_tp
    return {"unmatched": int(unmatched.sum()), "suppressed": int((unmatched & recoverable & ~kept_covers).sum()),
            "not_proposed": int((unmatched & ~recoverable).sum()), "taken": int((unmatched & kept_covers).sum())}


def _covered_per_image(m: Matching, image: np.ndarray, label: np.ndarray, box: np.ndarray) -> np.ndarray:
    """bool[G]: objects some box (sorted by image index) of their class covers, image by image."""
    out = np.zeros(len(m.gt_image), dtype=bool)
    for _, d, g in _images(image, m.gt_image, len(m.image_ids)):
        if len(g) and d.start != d.stop:
            out[g] = covered_boxes(m.gt_box[g], m.gt_label[g], box[d], label[d], m.pos_threshold)
    return out


def _nearest_object_bucket(m: Matching, object_bucket: np.ndarray) -> np.ndarray:
    """int64[D]: for each detection, the bucket of the object it overlaps most (any class) if
    that IoU exceeds the background threshold, else -1 (on background)."""
    out = np.full(len(m.det_image), -1, dtype=np.int64)
    for _, d, g in _images(m.det_image, m.gt_image, len(m.image_ids)):
        if d.start == d.stop or not len(g):
            continue
        iou = np.asarray(mask_utils.iou(m.det_box[d], m.gt_box[g], np.zeros(len(g), dtype=np.uint8)))
        best = iou.argmax(axis=1)
        out[d] = np.where(iou.max(axis=1) > m.background_threshold, object_bucket[g[best]], -1)
    return out


# ------------------------------------------------------------------------------ everything at once


def analyse(gt: Mapping, results: Sequence[Mapping], candidates: Sequence[Mapping] | None = None, *,
            pos_threshold: float = 0.5, background_threshold: float = 0.1, max_dets: int = 100,
            confusion_score: float = CONFUSION_SCORE, areas: bool = True) -> dict:
    """Every breakdown of ``results`` against ``gt`` (a COCO dict) as plain values: TIDE's
    ("tide"), per-class AP at the foreground IoU ("per_class_ap"), the confusion matrix
    ("confusion"), AP, recall and misses by crowding and by size ("crowding", "sizes") and,
    with the raw ``candidates`` (COCO results before suppression), the unmatched objects by
    cause ("miss_causes"). ``areas``: size buckets by the annotations' "area" (COCO's), else
    by w * h."""
    m = match(gt, results, pos_threshold=pos_threshold, background_threshold=background_threshold,
              max_dets=max_dets)
    categories = sorted(gt["categories"], key=lambda c: c["id"])
    names = {c["id"]: c.get("name", str(c["id"])) for c in categories}
    out = {
        "tide": breakdown(m).to_dict(),
        "pos_threshold": pos_threshold, "background_threshold": background_threshold,
        "per_class_ap": {names.get(c, str(c)): ap for c, ap in per_class(m).items()},
        "confusion": {"rows": [names[c["id"]] for c in categories] + ["background"],
                      "columns": [names[c["id"]] for c in categories] + ["missed"],
                      "matrix": confusion(m, [c["id"] for c in categories], confusion_score).tolist(),
                      "score_threshold": confusion_score},
        "crowding": by_crowding(m),
        "sizes": by_size(m, _annotated_areas(gt, m) if areas else None),
    }
    if candidates is not None:
        out["miss_causes"] = miss_causes(m, candidates, results)
    return out


def format_analysis(analysis: Mapping) -> str:
    """``analyse``'s numbers as the text ``detkit eval --errors`` prints (AP points)."""
    tide = analysis["tide"]
    lines = [f"TIDE errors at IoU {analysis['pos_threshold']} (dAP: the AP points an oracle fixing only that "
             f"error adds; AP50 {100 * tide['ap']:.2f})",
             "  " + "".join(f"{name:>8}" for name in ERRORS) + "".join(f"{name:>8}" for name in SPECIAL),
             "  " + "".join(f"{100 * tide['delta_ap'][name]:8.2f}" for name in ERRORS)
             + "".join(f"{100 * tide['special_delta_ap'][name]:8.2f}" for name in SPECIAL),
             "  " + "".join(f"{tide['counts'][name]:8d}" for name in ERRORS) + "   (count)"]
    if "miss_causes" in analysis:
        c = analysis["miss_causes"]
        lines.append(f"\nunmatched objects: {c['unmatched']}: suppressed {c['suppressed']} (a raw candidate found "
                     f"it), not proposed {c['not_proposed']}, taken {c['taken']} (a kept box covers it, yet "
                     "it is unmatched)")
    for title, key in (("crowding (an object's max IoU with another)", "crowding"), ("size (COCO's areas)", "sizes")):
        lines.append(f"\nby {title}:\n  {'bucket':<12}{'objects':>8}{'recall':>8}{'missed':>8}{'AP50':>8}")
        for row in analysis[key]:
            recall = f"{row['recall']:8.3f}" if row["recall"] is not None else f"{'-':>8}"
            ap = f"{row['ap']:8.3f}" if row["ap"] is not None else f"{'-':>8}"
            lines.append(f"  {row['bucket']:<12}{row['objects']:8d}{recall}{row['missed']:8d}{ap}")
    return "\n".join(lines)


def _annotated_areas(gt: Mapping, m: Matching) -> np.ndarray:
    """The objects' annotated areas (COCO's size rule), in the matching's object order; w * h
    where an annotation has none."""
    rank = {image_id: i for i, image_id in enumerate(m.image_ids)}
    objects = [a for a in gt.get("annotations", []) if a["image_id"] in rank and not a.get("iscrowd", 0)]
    return np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in objects], dtype=np.float64)
