"""Anchors fitted to a dataset's boxes (``detkit data stats DATASET --anchors CONFIG``).

An anchor-based detector learns an object only through the anchors that match it (Faster
R-CNN's RPN and RetinaNet at IoU >= 0.7 / 0.5, each object's best anchors always kept); anchors
sized for COCO at 800 px leave the small objects of a 256-px dataset with few or none. As
YOLOv5's auto-anchor does for its anchor shapes, this module measures how well a model's
anchors cover the boxes and proposes ones that cover them better, in the form of the config's
own keys, so a config can use them:

- the boxes are taken at the model's input size (its transform's resize) and compared with the
  anchors by the IoU of the two shapes centred on one point (YOLO's measure of fit);
- the aspect ratios (h / w) are the centres of a 1-D k-means on log(h / w) (as many as the
  config has);
- the sizes keep the config's structure: per level, S sizes ``base * 2**(level + s / S)``
  (an octave per level, the pyramid's stride doubling), and ``base`` is the one of a
  geometric grid that maximises the mean best IoU as the matcher sees it: the anchors laid on
  every level's grid of each image, each object's best IoU with any of them (the shapes
  alone cannot choose the level: a shape fits on any, but on a coarse level the nearest
  anchor can sit half a stride from the object's centre);
- both anchor sets are scored that way.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from detkit.data.records import DatasetIndex


def input_boxes(index: DatasetIndex, transform: Mapping) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Each image's boxes (crowd regions apart) scaled as the model's ``transform`` resizes the
    image (``min_size`` / ``max_size``, or ``fixed_size``), with the padded input size (h, w)."""
    fixed = transform.get("fixed_size")
    min_size = transform.get("min_size", 800)
    target = float(min_size[-1] if isinstance(min_size, (list, tuple)) else min_size)
    max_size = float(transform.get("max_size", 1333))
    divisible = int(transform.get("size_divisible", 32))
    boxes, sizes = [], []
    for record in index.records:
        h, w = record.height, record.width
        if not (h and w):
            raise ValueError(f"{index.source}: image {record.file_name} has no size in the annotations; "
                             "anchors are fitted from the annotated sizes")
        if fixed:
            sy, sx = fixed[0] / h, fixed[1] / w
            new_h, new_w = fixed[0], fixed[1]
        else:
            sy = sx = min(target / min(h, w), max_size / max(h, w))
            new_h, new_w = math.floor(h * sy), math.floor(w * sx)
        boxes.append(record.boxes[~record.iscrowd] * np.array([sx, sy, sx, sy]))
        sizes.append((math.ceil(new_h / divisible) * divisible, math.ceil(new_w / divisible) * divisible))
    return boxes, sizes


def shape_iou(shapes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of (w, h) shapes [N, 2] with anchor shapes [M, 2], both centred on one point: [N, M]."""
    inter = np.minimum(shapes[:, None, 0], anchors[None, :, 0]) * np.minimum(shapes[:, None, 1], anchors[None, :, 1])
    union = shapes[:, None].prod(2) + anchors[None, :].prod(2) - inter
    return inter / union


def anchor_shapes(sizes, ratios) -> np.ndarray:
    """(w, h) of every anchor (all levels), as ``AnchorGenerator.base_anchors`` makes them."""
    out = []
    for level_sizes, level_ratios in zip(sizes, ratios):
        for r in level_ratios:
            for s in level_sizes:
                out.append((s / math.sqrt(r), s * math.sqrt(r)))
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def fit_ratios(shapes: np.ndarray, k: int, iterations: int = 50) -> list[float]:
    """k aspect ratios (h / w): the centres of a 1-D k-means on log(h / w), from its quantiles."""
    logs = np.log(shapes[:, 1] / shapes[:, 0])
    if k == 1:
        return [round(float(np.exp(np.median(logs))), 3)]
    centres = np.quantile(logs, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        nearest = np.abs(logs[:, None] - centres[None]).argmin(1)
        centres = np.array([logs[nearest == i].mean() if (nearest == i).any() else centres[i] for i in range(k)])
    return sorted(round(float(np.exp(c)), 3) for c in centres)


def level_sizes(base: float, levels: int, per_level: int) -> list[list[float]]:
    """Per level, ``per_level`` sizes ``base * 2**(level + s / per_level)``, rounded to 0.1 px."""
    return [[round(base * 2 ** (level + s / per_level), 1) for s in range(per_level)] for level in range(levels)]


def fit_anchors(boxes: list[np.ndarray], input_sizes: list[tuple[int, int]], strides: list[int], per_level: int,
                n_ratios: int, sample: int = 300, candidates: int = 32) -> dict:
    """The anchors of the module docstring for each image's ``boxes`` at its padded
    ``input_sizes``, on levels of ``strides``: ``{"sizes", "aspect_ratios"}``. The base is
    chosen by the mean best IoU on the grid (``grid_fit``, on up to ``sample`` images spread
    over the dataset), not by the shapes alone: a shape fits on any level, but on a coarse
    level the nearest anchor can sit half a stride away from the object's centre."""
    shapes = _shapes(boxes)
    ratios = fit_ratios(shapes, n_ratios)
    sides = np.sqrt(shapes.prod(1))
    chosen = np.unique(np.linspace(0, len(boxes) - 1, min(sample, len(boxes))).round().astype(int))
    some_boxes, some_sizes = [boxes[i] for i in chosen], [input_sizes[i] for i in chosen]
    best, best_score = None, -1.0
    # the smallest anchor from a quarter of the 1st percentile of the sides up to their median
    for base in np.geomspace(max(np.quantile(sides, 0.01) / 4, 1.0), max(np.median(sides), 2.0), candidates):
        sizes = level_sizes(float(base), len(strides), per_level)
        score = grid_fit(some_boxes, some_sizes, sizes, [ratios] * len(strides), strides)["mean_best_iou"]
        if score > best_score:
            best, best_score = sizes, score
    return {"sizes": best, "aspect_ratios": ratios}


def _shapes(boxes: list[np.ndarray]) -> np.ndarray:
    """(w, h) of all boxes of positive size, [N, 2]."""
    every = np.concatenate([b for b in boxes if len(b)] or [np.zeros((0, 4))])
    shapes = np.stack([every[:, 2] - every[:, 0], every[:, 3] - every[:, 1]], axis=1)
    return shapes[(shapes > 0).all(1)]


def grid_fit(boxes: list[np.ndarray], input_sizes: list[tuple[int, int]], sizes, ratios, strides: list[int],
             thresholds=(0.5, 0.7)) -> dict:
    """How the anchors on the grid cover the objects: each object's best IoU with any anchor of
    its image (laid on every level's grid, as the model lays them); the mean, and the share at
    or above each threshold."""
    from detkit.models.anchors import AnchorGenerator
    from detkit.ops import box_iou

    generator = AnchorGenerator(sizes, ratios)
    cache, best = {}, []
    for image_boxes, size in zip(boxes, input_sizes):
        if not len(image_boxes):
            continue
        if size not in cache:
            features = [(math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in strides]
            cache[size] = torch.cat(generator(size, features, torch.float32, torch.device("cpu")))
        iou = box_iou(torch.as_tensor(image_boxes, dtype=torch.float32), cache[size])
        best.append(iou.max(dim=1).values.numpy())
    best = np.concatenate(best) if best else np.zeros(0)
    return {"objects": int(best.size), "mean_best_iou": float(best.mean()) if best.size else 0.0,
            **{f"matched_at_{t}": float((best >= t).mean()) if best.size else 0.0 for t in thresholds}}


def model_anchors(model_config: Mapping) -> dict:
    """The anchors of a model config, as built: ``{"type", "keys", "sizes", "aspect_ratios",
    "strides"}``, ``keys`` the config keys that set sizes and ratios. Faster R-CNN and the
    dense detectors with an ``AnchorGenerator`` (RetinaNet, EfficientDet); SSD's default
    boxes and YOLO's anchors are refused (they are set otherwise)."""
    from detkit.models import build_model

    kind = model_config.get("type", "faster_rcnn")
    if kind in ("ssd", "yolo"):
        what = "default boxes (scales of the image)" if kind == "ssd" else "anchor shapes in pixels"
        raise ValueError(f"--anchors: {kind} sets {what}, not sizes per level; fitting is for faster_rcnn, "
                         "retinanet and efficientdet")
    config = {**model_config}
    config.setdefault("num_classes", 1)
    model = build_model(config)
    if kind == "faster_rcnn":
        generator, levels, keys = model.rpn.anchors, model.rpn.in_levels, ("rpn.anchor_sizes", "rpn.aspect_ratios")
    else:
        generator, levels, keys = model.anchors, model.in_levels, ("anchors.sizes", "anchors.aspect_ratios")
    return {"type": kind, "keys": keys, "sizes": [list(s) for s in generator.sizes],
            "aspect_ratios": [list(r) for r in generator.aspect_ratios],
            "strides": [2 ** int(level[1:]) for level in levels]}


def anchor_report(index: DatasetIndex, model_config: Mapping) -> dict:
    """The config's anchors and the fitted ones, each scored on the grid (``grid_fit``)."""
    current = model_anchors(model_config)
    boxes, input_sizes = input_boxes(index, model_config.get("transform") or {})
    shapes = _shapes(boxes)
    if not len(shapes):
        raise ValueError(f"{index.source}: no boxes to fit anchors to")
    per_level = {len(s) for s in current["sizes"]}
    n_ratios = {len(r) for r in current["aspect_ratios"]}
    if len(per_level) != 1 or len(n_ratios) != 1:
        raise ValueError("--anchors: the config's levels have different numbers of sizes or ratios; "
                         "fitting keeps one structure for all levels")
    strides = current["strides"]
    fitted = fit_anchors(boxes, input_sizes, strides, per_level.pop(), n_ratios.pop())
    return {
        "type": current["type"], "keys": current["keys"], "objects": int(len(shapes)),
        "current": {"sizes": current["sizes"], "aspect_ratios": current["aspect_ratios"],
                    **grid_fit(boxes, input_sizes, current["sizes"], current["aspect_ratios"], strides)},
        "fitted": {**fitted, **grid_fit(boxes, input_sizes, fitted["sizes"], fitted["aspect_ratios"], strides)},
    }


def format_anchor_report(report: dict) -> str:
    def line(name: str, entry: dict) -> str:
        return (f"  {name}: mean best IoU {entry['mean_best_iou']:.3f}; objects with an anchor at IoU >= 0.5: "
                f"{100 * entry['matched_at_0.5']:.1f}%, >= 0.7: {100 * entry['matched_at_0.7']:.1f}%")

    sizes_key, ratios_key = report["keys"]
    fitted = report["fitted"]
    ratios = fitted["aspect_ratios"]
    return "\n".join([
        f"anchors ({report['type']}, {report['objects']} objects at the model's input size; each object's best "
        "IoU with the anchors laid on the grid):",
        line("the config's", report["current"]),
        f"    {sizes_key}: {[[round(x, 1) for x in level] for level in report['current']['sizes']]}",
        line("fitted      ", fitted),
        f"    {sizes_key}: {fitted['sizes']}",
        f"    {ratios_key}: {ratios}",
        "  to train with the fitted anchors:",
        f"    --set model.{sizes_key}='{fitted['sizes']}' --set model.{ratios_key}='{ratios}'",
    ])
