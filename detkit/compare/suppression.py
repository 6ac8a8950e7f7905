"""The suppressor study: one detector's raw candidates, saved once, re-suppressed by each
suppressor, evaluated, and diagnosed.

Because every suppressor sees the same candidates, their differences are the suppressors'
alone (no retraining, no training noise between them). Diagnostics, at IoU 0.5 and within a
class, over each split's ground truth (crowd regions excluded):

- recoverable: objects some raw candidate covers (IoU >= 0.5): the most any suppressor can find;
- covered: objects some kept detection covers (after the detections-per-image cap);
- lost: recoverable but not covered: true positives the suppressor (or the cap) removed;
- at the operating score threshold: detections matched greedily in descending score to the
  best free object (true positives), duplicates (they cover an object already matched) and
  other false positives; recall and precision there.

``crowd_statistics`` asks the question behind Soft-NMS and Adaptive-NMS on ground truth
alone: if a detector returned exactly the true boxes (in random order of score), how many
objects would greedy NMS at each threshold remove? That is a ceiling on recall that no
detector behind that NMS can pass, measured on real COCO layouts and on the synthetic splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from detkit.data.records import DatasetIndex
from detkit.evaluation import detections_to_results, evaluate
from detkit.evaluation.bootstrap import ImageMatches, bootstrap, match_images
from detkit.evaluation import errors
from detkit.evaluation.coco_eval import coco_ground_truth
from detkit.evaluation.miss_rate import mr2
from detkit.models.build import build_postprocess
from detkit.models.heads.density_head import density_targets
from detkit.ops import batched_diou_nms, batched_nms, box_iou

MATCH_IOU = 0.5

# The suppressors compared, each at its paper's setting (detkit.ops defaults)
SUPPRESSORS: dict[str, dict] = {
    "none": {"type": "none"},
    "nms": {"type": "nms", "iou_threshold": 0.5},
    "soft_nms_linear": {"type": "soft_nms", "method": "linear", "iou_threshold": 0.3},
    "soft_nms_gaussian": {"type": "soft_nms", "method": "gaussian", "sigma": 0.5},
    "adaptive_nms": {"type": "adaptive_nms", "iou_threshold": 0.5},
    "diou_nms": {"type": "diou_nms", "iou_threshold": 0.5},
}
# Adaptive-NMS given the oracle's densities (``oracle_densities``): as they are, raised by a
# margin (the IoU of a detection with its object's neighbour scatters around the objects' IoU,
# about half above it, and the rule removes at IoU >= N_M), and counting only neighbours of
# the object's class (suppression is per class): (margin, same_class)
ORACLES: dict[str, tuple[float, bool]] = {"adaptive_nms_oracle": (0.0, False),
                                          "adaptive_nms_oracle_margin": (0.1, False),
                                          "adaptive_nms_oracle_same_class": (0.0, True)}
# detkit's variant N_M = max(N_t, d_M + delta): the margins tried on the training split, the best
# (by AP) applied to the predicted densities ("adaptive_nms_margin"); delta = 0 is the paper's rule
MARGINS = (0.0, 0.05, 0.1, 0.15, 0.2)
TUNING_IMAGES = 250  # training images the margin is chosen on
# What each family's sweep varies: (config, key, sweep list) ("iou" or "sigma" of NMS_DEFAULTS)
FAMILIES: dict[str, tuple[dict, str, str]] = {
    "nms": ({"type": "nms"}, "iou_threshold", "iou"),
    "diou_nms": ({"type": "diou_nms"}, "iou_threshold", "iou"),
    "adaptive_nms": ({"type": "adaptive_nms"}, "iou_threshold", "iou"),
    "soft_nms_linear": ({"type": "soft_nms", "method": "linear"}, "iou_threshold", "iou"),
    "soft_nms_gaussian": ({"type": "soft_nms", "method": "gaussian"}, "sigma", "sigma"),
}


def suppress(raw: Mapping[int, Mapping], config: Mapping, cap: int) -> list[tuple[int, dict]]:
    """Each image's raw candidates through the suppressor of ``config``, the best ``cap`` kept
    (with "keep": their rows among the candidates)."""
    suppressor = build_postprocess(config, "suppressor")
    out = []
    for image_id, det in raw.items():
        keep, scores = suppressor(det["boxes"], det["scores"], det["labels"], det.get("densities"))
        keep, scores = keep[:cap], scores[:cap]
        out.append((image_id, {"boxes": det["boxes"][keep], "scores": scores, "labels": det["labels"][keep],
                               "keep": keep}))
    return out



def needs_densities(config: Mapping) -> bool:
    return build_postprocess(config, "suppressor").needs_densities


def _objects(index: DatasetIndex) -> dict[int, tuple]:
    """image id -> (object boxes, their labels, crowd-region boxes), as tensors."""
    out = {}
    for r in index.records:
        objects = ~r.iscrowd
        out[r.image_id] = (torch.as_tensor(r.boxes[objects], dtype=torch.float32),
                           torch.as_tensor(r.labels[objects]), torch.as_tensor(r.boxes[r.iscrowd], dtype=torch.float32))
    return out


def _operating_point(gt_boxes, gt_labels, crowd, det: Mapping, threshold: float) -> tuple[int, int, int]:
    """(true positives, duplicates, other false positives) of the detections scoring >= threshold."""
    shown = det["scores"] >= threshold
    boxes, labels = det["boxes"][shown].float(), det["labels"][shown]
    order = torch.argsort(det["scores"][shown], descending=True, stable=True)
    boxes, labels = boxes[order], labels[order]
    if len(boxes) == 0:
        return 0, 0, 0
    if len(crowd):  # a detection on a crowd region is neither right nor wrong (COCO's ignore)
        on_crowd = (box_iou(boxes, crowd) >= MATCH_IOU).any(dim=1)
        boxes, labels = boxes[~on_crowd], labels[~on_crowd]
    if len(gt_boxes) == 0:
        return 0, 0, len(boxes)
    iou = box_iou(boxes, gt_boxes)
    iou[labels[:, None] != gt_labels[None, :]] = 0
    matched = torch.zeros(len(gt_boxes), dtype=torch.bool)
    tp = duplicates = other = 0
    for row in iou:
        free = torch.where(matched, torch.zeros_like(row), row)
        best = int(free.argmax())
        if free[best] >= MATCH_IOU:
            matched[best] = True
            tp += 1
        elif bool((row >= MATCH_IOU).any()):
            duplicates += 1
        else:
            other += 1
    return tp, duplicates, other


def _best_objects(det: Mapping, gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(bool[D]: the candidates that cover an object of their class at IoU >= MATCH_IOU,
    int64[D]: the object each overlaps most)."""
    iou = box_iou(det["boxes"].float(), gt_boxes)
    iou[det["labels"][:, None] != gt_labels[None, :]] = 0
    best, which = iou.max(dim=1)
    return best >= MATCH_IOU, which


def oracle_densities(index: DatasetIndex, raw: Mapping[int, Mapping], *, margin: float = 0.0,
                     same_class: bool = False) -> dict[int, dict]:
    """The raw candidates with the oracle's densities, for Adaptive-NMS's ceiling: a candidate
    that covers an object of its class (IoU >= 0.5) gets the true density of the object it
    overlaps most (its max IoU with another object, Liu et al.'s d_i: ``density_targets``; with
    ``same_class`` only with objects of its class), plus ``margin`` (at most 1); the others keep
    their predicted density (0 where the model predicts none)."""
    objects = _objects(index)
    out = {}
    for image_id, det in raw.items():
        gt_boxes, gt_labels, _ = objects[image_id]
        densities = det.get("densities")
        densities = densities.clone().float() if densities is not None else det["boxes"].new_zeros(len(det["boxes"]))
        if len(gt_boxes) and len(det["boxes"]):
            truth = density_targets(gt_boxes, gt_labels if same_class else None)
            matched, which = _best_objects(det, gt_boxes, gt_labels)
            densities[matched] = (truth[which[matched]] + margin).clamp(max=1.0)
        out[image_id] = {**det, "densities": densities}
    return out


def with_margin(raw: Mapping[int, Mapping], margin: float) -> dict[int, dict]:
    """The raw candidates with ``margin`` added to their predicted densities (at most 1)."""
    return {i: {**det, "densities": (det["densities"].float() + margin).clamp(max=1.0)} for i, det in raw.items()}


def choose_margin(index: DatasetIndex, raw: Mapping[int, Mapping], cap: int, margins=MARGINS) -> dict:
    """Adaptive-NMS's margin delta that gives the best AP on ``raw`` (a training split's
    candidates, their predicted densities): {"margins", "AP", "AP50", "chosen"}; a tie goes to
    the smaller margin."""
    adaptive = SUPPRESSORS["adaptive_nms"]
    out: dict = {"margins": list(margins), "AP": [], "AP50": []}
    for margin in margins:
        stats = evaluate(index, detections_to_results(suppress(with_margin(raw, margin), adaptive, cap),
                                                      index.category_ids)).stats
        out["AP"].append(stats["AP"])
        out["AP50"].append(stats["AP50"])
    out["chosen"] = out["margins"][int(np.argmax(out["AP"]))]  # argmax: the first of equal APs
    return out


def density_report(index: DatasetIndex, raw: Mapping[int, Mapping], iou_threshold: float) -> dict:
    """How well the predicted densities of the raw candidates match the truth, on the candidates
    that cover an object (``oracle_densities``' matching; the truth class-agnostic, as the
    model's targets): Pearson's r; of the candidates of crowded objects (true density above
    ``iou_threshold``, N_t), the share predicted above N_t (the ones whose threshold Adaptive-NMS
    raises); of the candidates of lone objects (no other object overlaps them), the share
    predicted at or below N_t. ``objects``: the same shares counted once per object, at the
    object's best-scoring candidate (the one suppression keeps, whose density sets the
    threshold for its neighbours; ties to the first)."""
    objects = _objects(index)
    predicted, truth, best_predicted, best_truth = [], [], [], []
    for image_id, det in raw.items():
        gt_boxes, gt_labels, _ = objects[image_id]
        if not len(gt_boxes) or not len(det["boxes"]) or det.get("densities") is None:
            continue
        matched, which = _best_objects(det, gt_boxes, gt_labels)
        densities, true = det["densities"][matched].double(), density_targets(gt_boxes)[which[matched]].double()
        predicted.append(densities)
        truth.append(true)
        order = torch.argsort(det["scores"][matched], descending=True, stable=True)
        first = _first_of_each(which[matched][order])
        best_predicted.append(densities[order][first])
        best_truth.append(true[order][first])
    p, t = _joined(predicted), _joined(truth)
    out = {"candidates": len(p), "pearson": _pearson(p, t), "iou_threshold": iou_threshold,
           "predicted_mean": _mean(p), "predicted_max": float(p.max()) if len(p) else 0.0, "true_mean": _mean(t),
           **_shares(p, t, iou_threshold)}
    p, t = _joined(best_predicted), _joined(best_truth)
    out["objects"] = {"objects": len(p), "pearson": _pearson(p, t), **_shares(p, t, iou_threshold)}
    return out


def _first_of_each(values: torch.Tensor) -> torch.Tensor:
    """bool[N]: True at the first occurrence of each value."""
    first = torch.zeros(len(values), dtype=torch.bool)
    if len(values):
        _, inverse = torch.unique(values, return_inverse=True)
        positions = torch.full((int(inverse.max()) + 1,), len(values), dtype=torch.int64)
        first[positions.scatter_reduce(0, inverse, torch.arange(len(values)), "amin")] = True
    return first


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def _mean(values: torch.Tensor) -> float:  # of densities, or of flags: a share
    return float(values.double().mean()) if len(values) else 0.0


def _pearson(p: torch.Tensor, t: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([p, t]))[0, 1]) if len(p) > 1 and p.std() > 0 and t.std() > 0 else 0.0


def _shares(p: torch.Tensor, t: torch.Tensor, iou_threshold: float) -> dict:
    """Of the predicted densities ``p`` of crowded truths (``t`` above N_t) the share above N_t;
    of those of lone truths (``t`` = 0) the share at or below."""
    crowded, lone = t > iou_threshold, t == 0
    return {"crowded": int(crowded.sum()), "crowded_predicted_above": _mean(p[crowded] > iou_threshold),
            "lone": int(lone.sum()), "lone_predicted_below": _mean(p[lone] <= iou_threshold)}


def diagnose(index: DatasetIndex, raw: Mapping[int, Mapping], kept: list[tuple[int, dict]],
             score_threshold: float, per_image: dict | None = None, *,
             matching: errors.Matching | None = None, candidates: list[dict] | None = None) -> dict:
    """The diagnostics of the module docstring, summed over the split's images; each image's
    (objects, covered) into ``per_image`` by image id when given (the recall's bootstrap).
    ``matching`` (of the kept detections) and ``candidates`` (the raw ones as COCO results):
    when the caller has them already."""
    objects = _objects(index)
    totals = dict.fromkeys(("objects", "recoverable", "covered", "lost", "tp", "duplicates", "other_fp",
                            "candidates", "kept"), 0)
    # covered, recoverable and lost: the error analysis' definitions (``covered``), one for both
    kept_results = detections_to_results(kept, index.category_ids)
    if matching is None:
        matching = errors.match(coco_ground_truth(index), kept_results)
    if candidates is None:
        candidates = detections_to_results(raw.items(), index.category_ids)
    recoverable = errors.covered(matching, candidates)
    covered = errors.covered(matching, kept_results)
    image_of = np.asarray(matching.image_ids)[matching.gt_image]
    seen = {image_id for image_id, _ in kept}
    inside = np.isin(image_of, list(seen))
    totals["objects"] = int(inside.sum())
    totals["recoverable"] = int((recoverable & inside).sum())
    totals["covered"] = int((covered & inside).sum())
    totals["lost"] = int((recoverable & ~covered & inside).sum())
    if per_image is not None:
        for image_id in seen:
            mine = image_of == image_id
            per_image[image_id] = (int(mine.sum()), int((covered & mine).sum()))
    for image_id, det in kept:
        gt_boxes, gt_labels, crowd = objects[image_id]
        candidates = raw[image_id]
        tp, duplicates, other = _operating_point(gt_boxes, gt_labels, crowd, det, score_threshold)
        totals["tp"] += tp
        totals["duplicates"] += duplicates
        totals["other_fp"] += other
        totals["candidates"] += len(candidates["scores"])
        totals["kept"] += len(det["scores"])
    n, shown = max(1, totals["objects"]), totals["tp"] + totals["duplicates"] + totals["other_fp"]
    return {**totals, "images": len(kept), "recall_covered": totals["covered"] / n,
            "recall_at_threshold": totals["tp"] / n, "precision_at_threshold": totals["tp"] / shown if shown else 0.0,
            "score_threshold": score_threshold}


def evaluate_suppressor(index: DatasetIndex, raw: Mapping[int, Mapping], config: Mapping, cap: int,
                        score_threshold: float, category_ids: list[int], *, matches: bool = False
                        ) -> tuple[dict, object, object]:
    """(row, CocoEvaluation, per-image matches for the bootstrap or None) of one suppressor on
    one split; with ``matches`` the matches carry ``covered``: float64[images, 2], each image's
    objects and the ones a kept detection covers (the recall's bootstrap): ``Paired``."""
    kept = suppress(raw, config, cap)
    results = detections_to_results(kept, category_ids)
    evaluation = evaluate(index, results)
    per_image: dict = {}
    gt = coco_ground_truth(index)
    matching = errors.match(gt, results)
    candidates = detections_to_results(raw.items(), category_ids)
    row = {"config": dict(config), **{k: evaluation.stats[k] for k in ("AP", "AP50", "AP75", "AR100")},
           **diagnose(index, raw, kept, score_threshold, per_image, matching=matching, candidates=candidates)}
    suppressor = build_postprocess(config, "suppressor")
    if suppressor.needs_densities:  # how often the density changed anything: kept boxes whose threshold it raised
        raised = sum(int((raw[i]["densities"][det["keep"]] > suppressor.options["iou_threshold"]).sum())
                     for i, det in kept)
        row["raised"] = raised / max(1, row["kept"])
    if not matches:
        return row, evaluation, None
    row["errors"] = error_summary(matching, candidates, results)
    matched = match_images(gt, results)
    row["MR2"] = mr2(matched)
    covered = np.array([per_image.get(i, (0, 0)) for i in matched.image_ids], dtype=np.float64).reshape(-1, 2)
    return row, evaluation, Paired(matched, covered)


def error_summary(matching: errors.Matching, candidates: list[dict], results: list[dict]) -> dict:
    """Why a suppressor's detections (``results``, matched in ``matching``) miss
    (``detkit.evaluation.errors``): TIDE's dAPs and counts, the unmatched objects by cause
    against the raw ``candidates`` (suppressed: the "lost" of ``diagnose``, by the same
    definition; not proposed; taken) and recall and AP50 by the objects' crowding."""
    return {**errors.breakdown(matching).to_dict(), "miss_causes": errors.miss_causes(matching, candidates, results),
            "crowding": errors.by_crowding(matching)}


@dataclass
class Paired:
    """What the paired bootstrap of one suppressor needs, image by image in ``matches.image_ids``'
    order: the COCO matches (AP, AP50, AR100) and ``covered`` float64[images, 2], each image's
    objects and how many of them a kept detection covers (the recall at IoU 0.5)."""

    matches: ImageMatches
    covered: np.ndarray


def spread(paired: Paired, draws: np.ndarray) -> dict[str, np.ndarray]:
    """Each bootstrap number on each resample of the images (``bootstrap``'s, and
    "recall_covered")."""
    covered = paired.covered[draws]  # (draws, images, 2)
    recall = covered[..., 1].sum(axis=1) / np.maximum(covered[..., 0].sum(axis=1), 1)
    return {**bootstrap(paired.matches, draws), "recall_covered": recall}


DENSITY_BINS = [round(0.1 * i, 1) for i in range(11)]  # 0, 0.1, ..., 1: the density histogram's edges


def crowd_statistics(index: DatasetIndex, thresholds: list[float], seed: int = 0) -> dict:
    """Of a split's objects, the fraction that suppression would remove from perfect detections
    (the true boxes, scored in a random order): greedy NMS and DIoU-NMS at each threshold; the
    fraction with a same-class neighbour at IoU > t; and the histogram of the objects' densities
    (Liu et al.'s d_i, any class) over ``DENSITY_BINS`` ("density_counts"; 0 counts as the first
    bin, the last bin holds 1).

    (Adaptive-NMS has no such ceiling to measure: given an object's true density, its threshold
    equals the IoU with its nearest neighbour, and whether ``IoU >= N_M`` then removes that
    neighbour is decided by rounding.)"""
    rng = np.random.default_rng(seed)
    lost = {"nms": np.zeros(len(thresholds)), "diou_nms": np.zeros(len(thresholds)),
            "neighbour": np.zeros(len(thresholds))}
    total = 0
    densities = []
    for r in index.records:
        objects = ~r.iscrowd
        boxes = torch.as_tensor(r.boxes[objects], dtype=torch.float32)
        labels = torch.as_tensor(r.labels[objects])
        if len(boxes) == 0:
            continue
        total += len(boxes)
        densities.append(density_targets(boxes).numpy())
        scores = torch.as_tensor(rng.random(len(boxes)), dtype=torch.float32)
        iou = box_iou(boxes, boxes)
        iou.fill_diagonal_(0)
        iou[labels[:, None] != labels[None, :]] = 0
        nearest = iou.max(dim=1).values if len(boxes) > 1 else torch.zeros(len(boxes))
        for i, t in enumerate(thresholds):
            lost["nms"][i] += len(boxes) - len(batched_nms(boxes, scores, labels, t))
            lost["diou_nms"][i] += len(boxes) - len(batched_diou_nms(boxes, scores, labels, t))
            lost["neighbour"][i] += int((nearest > t).sum())
    counts = np.histogram(np.concatenate(densities) if densities else np.zeros(0), bins=DENSITY_BINS)[0]
    total = max(1, total)
    return {"thresholds": list(thresholds), "objects": total, "images": len(index.records),
            **{k: (v / total).tolist() for k, v in lost.items()},
            "density_bins": list(DENSITY_BINS), "density_counts": counts.tolist()}
