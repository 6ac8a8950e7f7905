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

Every image is matched at once (the greedy steps run over the detections' rank within their
image, all images together), so the whole analysis costs less than the COCO evaluation.
numpy only: importing this module imports neither torch nor detkit's data stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from detkit.evaluation.coco_numpy import Detections, box_iou, group_pairs, least_counts as _least_counts, segments

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
    # every (detection, object of its image) pair, any class, by detection: for the breakdowns
    pair_det: np.ndarray = field(default=None, repr=False)
    pair_gt: np.ndarray = field(default=None, repr=False)
    pair_iou: np.ndarray = field(default=None, repr=False)
    by_score: np.ndarray = field(default=None, repr=False)  # the detections by descending score (stable)

    def score_order(self, keep: np.ndarray) -> np.ndarray:
        """The detections ``keep`` selects (bool[D]), by descending score (stable), as indices
        into the selection: ``per_class_ap``'s ``by_score`` for arrays indexed by ``keep``."""
        return (np.cumsum(keep) - 1)[self.by_score[keep[self.by_score]]]


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


def match(gt: Mapping, results: Sequence[Mapping] | Detections, *, pos_threshold: float = 0.5,
          background_threshold: float = 0.1, max_dets: int = 100) -> Matching:
    """Match ``results`` (COCO results: image_id, category_id, bbox xywh, score; or their
    ``coco_numpy.Detections``) to ``gt`` (a
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

    det_image, det_label, det_score, det_box = _detections(results, image_ids, max_dets)
    n_det, n_gt = len(det_image), len(gt_image)
    error = np.full(n_det, NONE, dtype=np.int64)
    target = np.full(n_det, -1, dtype=np.int64)

    # every (detection, object of its image) pair: by detection, the objects in file order
    pd, pg = group_pairs(det_image, gt_image)
    iou = box_iou(det_box[pd], gt_box[pg], np.zeros(len(pd), dtype=bool))
    same = det_label[pd] == gt_label[pg]
    matched = _greedy(pd, pg, np.where(same, iou, 0.0), _rank_in_image(det_image), n_det, n_gt, pos_threshold)
    tp = matched >= 0
    gt_tp = np.zeros(n_gt, dtype=bool)
    gt_tp[matched[tp]] = True

    # an unmatched detection inside a crowd region of its class is left out of the AP
    cd, cc = group_pairs(det_image, crowd_image)
    inside = (box_iou(det_box[cd], crowd_box[cc], np.ones(len(cd), dtype=bool)) > pos_threshold) & (
        det_label[cd] == crowd_label[cc])
    ignored = np.zeros(n_det, dtype=bool)
    ignored[cd[inside]] = True
    ignored &= ~tp

    # the unmatched detections' errors: on an image without objects, background
    error[~tp & (np.bincount(pd, minlength=n_det) == 0)] = _CODE["bkg"]
    rows = ~tp[pd]
    if rows.any():
        dets, codes, pointed = _classify(pd[rows], pg[rows], iou[rows], same[rows], gt_tp, pos_threshold,
                                         background_threshold)
        error[dets], target[dets] = codes, pointed

    density = np.zeros(n_gt, dtype=np.float64)  # each object's highest IoU with another of its image
    ga, gb = group_pairs(gt_image, gt_image)
    other = ga != gb
    ga, gb = ga[other], gb[other]
    np.maximum.at(density, ga, box_iou(gt_box[ga], gt_box[gb], np.zeros(len(ga), dtype=bool)))

    usable = np.zeros(n_gt, dtype=bool)
    pointing = target[target >= 0]
    usable[pointing[~gt_tp[pointing]]] = True  # a cls or loc error points at them: not missed
    gt_area = gt_box[:, 2] * gt_box[:, 3]
    return Matching(image_ids, det_image, det_label, det_score, det_box, tp, ignored, error, target, matched,
                    gt_image, gt_label, gt_box, gt_area, gt_tp, ~gt_tp & ~usable, density, pos_threshold,
                    background_threshold, pd, pg, iou, np.argsort(-det_score, kind="stable"))


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
    order = m.score_order(scored)
    ap = mean_ap(m.det_label[scored], m.det_score[scored], m.tp[scored], classes, positives, by_score=order)
    delta = {}
    for name in ERRORS:
        if name == "miss":
            fixed = mean_ap(m.det_label[scored], m.det_score[scored], m.tp[scored], classes,
                            positives - _count(m.gt_label[m.missed], classes), by_score=order)
        else:
            keep, labels, tp = _fixed(m, _CODE[name])
            fixed = mean_ap(labels, m.det_score[keep], tp, classes, positives, by_score=m.score_order(keep))
        delta[name] = max(fixed - ap, 0.0)
    perfect_precision = mean_ap(m.det_label[scored], m.tp[scored].astype(np.float64), m.tp[scored], classes,
                                positives)
    perfect_recall = mean_ap(m.det_label[scored], m.det_score[scored], m.tp[scored], classes,
                             _count(m.gt_label[m.gt_tp], classes), by_score=order)
    counts = {name: int((m.error == _CODE[name]).sum()) for name in ERRORS if name != "miss"}
    counts["miss"] = int(m.missed.sum())
    return ErrorBreakdown(ap, delta, {"fp": perfect_precision - ap, "fn": perfect_recall - ap},
                          {name: counts[name] for name in ERRORS})


def mean_ap(labels: np.ndarray, scores: np.ndarray, tp: np.ndarray, classes: np.ndarray,
            positives: np.ndarray, *, by_score: np.ndarray | None = None) -> float:
    """TIDE's (and COCO's) 101-point AP averaged over ``classes`` that have detections or
    positives (int[K], aligned with ``classes``); a class with detections and no positives
    counts as 0. Ties in score keep the given order. ``by_score``: see ``per_class_ap``."""
    aps = per_class_ap(labels, scores, tp, classes, positives, by_score=by_score)
    defined = aps[~np.isnan(aps)]
    return float(defined.mean()) if len(defined) else 0.0


def per_class_ap(labels: np.ndarray, scores: np.ndarray, tp: np.ndarray, classes: np.ndarray,
                 positives: np.ndarray, *, by_score: np.ndarray | None = None) -> np.ndarray:
    """float64[K]: the AP of each of ``classes``; NaN for a class with neither detections nor
    positives. ``by_score``: the detections' order by descending score (stable), when the
    caller knows it (``Matching.score_order``), which spares a sort."""
    column = np.searchsorted(classes, labels)
    if by_score is None:
        order = np.lexsort((-scores, column))
    else:
        order = by_score[np.argsort(column[by_score], kind="stable")]
    column, tp = column[order], tp[order]
    first = np.searchsorted(column, np.arange(len(classes)), side="left")
    count = np.searchsorted(column, np.arange(len(classes)), side="right") - first
    out = np.where((count == 0) & (positives == 0), np.nan, 0.0)
    scored = np.flatnonzero((count > 0) & (positives > 0))
    if not len(scored):
        return out
    # per class: true positives so far, precision, its envelope (from the right)
    cumulative, before = np.cumsum(tp), np.zeros(len(classes), dtype=np.int64)
    before[count > 0] = cumulative[first[count > 0]] - tp[first[count > 0]]
    true = cumulative - np.repeat(before, count)  # int, restarting per class
    precision = true / (np.arange(len(tp)) - np.repeat(first, count) + 1)
    for k in scored:
        run = slice(first[k], first[k] + count[k])
        precision[run] = np.maximum.accumulate(precision[run][::-1])[::-1]
    # the first detection whose recall true / positives reaches each point, every class at once:
    # on the integer counts (recall >= r exactly when true >= the least such count), each class's
    # run of counts offset so that the runs stay apart in one sorted array
    width = count.max() + 2
    keys = true + np.repeat(np.arange(len(classes)) * width, count)
    least = _least_counts(positives[scored].astype(np.float64), RECALL_POINTS)
    wanted = scored[:, None] * width + np.minimum(least, width - 1)
    at = np.searchsorted(keys, wanted, side="left")
    found = at < (first + count)[scored][:, None]
    out[scored] = np.where(found, precision[np.minimum(at, len(tp) - 1)], 0.0).mean(axis=1)
    return out


def _fixed(m: Matching, code: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(which detections, bool[D]; their labels; tp) of the AP once the oracle fixed every error ``code``:
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
    return keep, labels[keep], tp[keep]


def _classify(det: np.ndarray, gt: np.ndarray, iou: np.ndarray, same: np.ndarray, taken: np.ndarray, pos: float,
              background: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(detections, their error codes, the object each cls or loc error points at or -1) from the
    pairs (``det``, ``gt``, IoU, same class) of unmatched detections with their images' objects
    (sorted by detection), ``taken``: the objects a detection matched; TIDE's order of tests."""
    starts, sizes = segments(det)
    class_iou, other_iou = np.where(same, iou, 0.0), np.where(same, 0.0, iou)
    same_iou, best_same = _segment_max(class_iou, starts, sizes)
    other_best, best_other = _segment_max(other_iou, starts, sizes)
    loc = (same_iou >= background) & (same_iou <= pos)
    cls = ~loc & (other_best >= pos)
    dupe = ~loc & ~cls & (np.maximum.reduceat(np.where(taken[gt], class_iou, 0.0), starts) >= pos)
    bkg = ~loc & ~cls & ~dupe & (np.maximum.reduceat(iou, starts) <= background)
    codes = np.select([loc, cls, dupe, bkg], [_CODE["loc"], _CODE["cls"], _CODE["dupe"], _CODE["bkg"]],
                      _CODE["both"])
    pointed = np.select([loc, cls], [gt[best_same], gt[best_other]], -1)
    return det[starts], codes, pointed


def _segment_max(values: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per segment: the largest value and the first position holding it (numpy's argmax rule)."""
    best = np.maximum.reduceat(values, starts)
    at = np.where(values == np.repeat(best, sizes), np.arange(len(values)), len(values))
    return best, np.minimum.reduceat(at, starts)


def _greedy(pd: np.ndarray, pg: np.ndarray, value: np.ndarray, step: np.ndarray, n_det: int, n_gt: int,
            pos: float) -> np.ndarray:
    """int64[n_det]: the object each detection takes, or -1, by the pairs (``pd``, ``pg``,
    ``value``: their IoU, 0 where not allowed) sorted by detection: in the order of ``step``
    (each detection's rank within its image), each takes the free object of highest value if it
    reaches ``pos`` (the first on ties), every image at once."""
    taken = np.full(n_det, -1, dtype=np.int64)
    if not len(pd):
        return taken
    order = np.argsort(step[pd], kind="stable")
    pd, pg, value = pd[order], pg[order], value[order]
    bounds = np.searchsorted(step[pd], np.arange(step[pd].max() + 2))
    used = np.zeros(n_gt, dtype=bool)
    for r in range(len(bounds) - 1):
        s = slice(bounds[r], bounds[r + 1])
        if s.start == s.stop:
            continue
        det, gt = pd[s], pg[s]
        starts, sizes = segments(det)
        best, at = _segment_max(np.where(used[gt], 0.0, value[s]), starts, sizes)
        hit = best >= pos
        taken[det[starts[hit]]] = gt[at[hit]]
        used[gt[at[hit]]] = True
    return taken


def _rank_in_image(image: np.ndarray) -> np.ndarray:
    """int64[D]: each detection's position within its image (``image`` sorted)."""
    if not len(image):
        return np.zeros(0, dtype=np.int64)
    starts, sizes = segments(image)
    return np.arange(len(image)) - np.repeat(starts, sizes)


def _detections(results: Sequence[Mapping] | Detections, image_ids: list, max_dets: int):
    """The results (COCO results, or their arrays) of known images as arrays, in image order
    (``image_ids``' order) then descending score (stable), at most ``max_dets`` per image."""
    arrays = results if isinstance(results, Detections) else Detections.from_results(results)
    known = np.array(image_ids)
    sorter = np.argsort(known, kind="stable")
    at = np.searchsorted(known, arrays.image_ids, sorter=sorter).clip(max=max(len(known) - 1, 0))
    inside = np.flatnonzero(known[sorter[at]] == arrays.image_ids) if len(known) else np.zeros(0, dtype=np.int64)
    image = sorter[at[inside]].astype(np.int64)
    label = arrays.category_ids[inside].astype(np.int64)
    score, box = arrays.scores[inside], arrays.boxes[inside].reshape(-1, 4)
    order = np.lexsort((-score, image))
    image, label, score, box = image[order], label[order], score[order], box[order]
    keep = _rank_in_image(image) < max_dets
    return image[keep], label[keep], score[keep], box[keep]


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
                               _count(m.gt_label[inside], classes), by_score=m.score_order(known))
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
    aps = per_class_ap(m.det_label[scored], m.det_score[scored], m.tp[scored], classes, _count(m.gt_label, classes),
                       by_score=m.score_order(scored))
    return {int(c): float(a) for c, a in zip(classes, aps)}


def confusion(m: Matching, categories: Sequence[int], score_threshold: float = CONFUSION_SCORE) -> np.ndarray:
    """int64[K + 1, K + 1]: rows the true class (``categories`` order, then "background": a
    detection on no object), columns the detected class (then "missed": an object no shown
    detection took). Detections scoring >= ``score_threshold``, crowd-ignored ones left out,
    matched class-agnostically: each, in descending score per image, takes the free object it
    overlaps most at IoU >= the matching's threshold."""
    k = len(categories)
    out = np.zeros((k + 1, k + 1), dtype=np.int64)
    keep = (m.det_score >= score_threshold) & ~m.ignored
    shown = np.flatnonzero(keep)
    pairs = keep[m.pair_det]
    pd = (np.cumsum(keep) - 1)[m.pair_det[pairs]]  # as indices into ``shown``
    taken = _greedy(pd, m.pair_gt[pairs], m.pair_iou[pairs], _rank_in_image(m.det_image[shown]), len(shown),
                    len(m.gt_image), m.pos_threshold)
    hit = taken >= 0
    column = _columns(categories)
    np.add.at(out, (column(m.gt_label[taken[hit]]), column(m.det_label[shown[hit]])), 1)
    np.add.at(out, (k, column(m.det_label[shown[~hit]])), 1)
    taken_any = np.zeros(len(m.gt_image), dtype=bool)
    taken_any[taken[hit]] = True
    np.add.at(out, (column(m.gt_label[~taken_any]), k), 1)
    return out


def _columns(categories: Sequence[int]):
    """category ids -> their positions in ``categories``, as a vectorised function."""
    ids = np.asarray(categories)
    sorter = np.argsort(ids, kind="stable")
    return lambda labels: sorter[np.searchsorted(ids, labels, sorter=sorter)]


def covered(m: Matching, results: Sequence[Mapping]) -> np.ndarray:
    """bool[G]: the objects some box of ``results`` (COCO results) of their class overlaps at
    IoU >= the matching's threshold. The one definition of "covered" (the compare nms suite's
    recoverable and lost objects use it too)."""
    image, label, _, box = _detections(results, m.image_ids, np.inf)
    pd, pg = group_pairs(image, m.gt_image)
    hit = box_iou(box[pd], m.gt_box[pg], np.zeros(len(pd), dtype=bool)) >= m.pos_threshold
    out = np.zeros(len(m.gt_image), dtype=bool)
    out[pg[hit & (label[pd] == m.gt_label[pg])]] = True
    return out


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


def _nearest_object_bucket(m: Matching, object_bucket: np.ndarray) -> np.ndarray:
    """int64[D]: for each detection, the bucket of the object it overlaps most (any class, the
    first on ties) if that IoU exceeds the background threshold, else -1 (on background)."""
    out = np.full(len(m.det_image), -1, dtype=np.int64)
    pd, pg = m.pair_det, m.pair_gt
    if not len(pd):
        return out
    starts, sizes = segments(pd)
    best, at = _segment_max(m.pair_iou, starts, sizes)
    out[pd[starts]] = np.where(best > m.background_threshold, object_bucket[pg[at]], -1)
    return out


# ------------------------------------------------------------------------------ everything at once


def analyse(gt: Mapping, results: Sequence[Mapping] | Detections,
            candidates: Sequence[Mapping] | Detections | None = None, *,
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
