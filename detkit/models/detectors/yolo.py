"""YOLO in the YOLOv3 style (Redmon & Farhadi, 2018): one pass, three scales, three anchors each.

    images -> letterbox (416 x 416) -> backbone (Darknet-53: C3..C5) -> neck (FPN) -> YOLO head
           -> (criterion | detect)

Each cell of each scale predicts, per anchor, a box (tx, ty, tw, th), an objectness and K class
probabilities (sigmoids). A box decodes as centre ((sigmoid(tx) + x) * stride, ...) and size
(anchor_w * exp(tw), ...). Training assigns every object to one "responsible" prediction: the
anchor, among all nine, whose shape best matches the object's (IoU of the two boxes centred
together) picks the scale, and the cell that contains the object's centre the position.
Other predictions that already overlap an object at IoU > 0.5 are left out of the objectness
loss. Losses: binary cross-entropy for tx, ty, objectness and classes, squared error for tw,
th, box terms weighted by 2 - w h / image area (small objects count more), all summed and
divided by the number of images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.backbones.base import FeatureExtractor, read_levels
from detkit.models.heads.yolo_head import YOLOHead
from detkit.models.transform import DetectionTransform
from detkit.models.postprocess import checked_cap, checked_postprocess, suppress, top_pairs
from detkit.ops import Suppressor, box_iou, clip_boxes_to_image

# YOLOv3's COCO anchors (w, h) in pixels at 416 px, three per scale (strides 8, 16, 32)
YOLOV3_ANCHORS = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)], [(116, 90), (156, 198), (373, 326)]]
# longer side 416, then padded (bottom-right) to a multiple of 416: a 416 x 416 letterbox
LETTERBOX_416 = {"min_size": 416, "max_size": 416, "size_divisible": 416}
MAX_LOG_SCALE = math.log(1000.0 / 16)  # as the other box coders: exp() cannot blow up


@dataclass
class Assignment:
    """The responsible predictions of one batch, one entry per object.

    image, level, anchor, cell_y, cell_x (Tensor[M] int64): where it is predicted;
    index (Tensor[M] int64): its row in that level's (H * W * A) predictions;
    offsets (Tensor[M, 4]): targets tx, ty in [0, 1), tw, th = log(size / anchor);
    labels (Tensor[M] int64); weights (Tensor[M]): 2 - w h / image area.
    """

    image: Tensor
    level: Tensor
    anchor: Tensor
    cell_y: Tensor
    cell_x: Tensor
    index: Tensor
    offsets: Tensor
    labels: Tensor
    weights: Tensor


def shape_iou(sizes: Tensor, anchors: Tensor) -> Tensor:
    """Tensor[M, B]: IoU of (w, h) sizes with anchor (w, h) sizes, the boxes centred together."""
    inter = torch.min(sizes[:, None, 0], anchors[None, :, 0]) * torch.min(sizes[:, None, 1], anchors[None, :, 1])
    return inter / (sizes[:, None].prod(2) + anchors[None].prod(2) - inter)


def assign(targets: list[dict], anchors: Tensor, strides: Sequence[int], grid_sizes: Sequence[Sequence[int]],
           image_size: Sequence[int]) -> Assignment:
    """Each object's responsible (scale, anchor, cell).

    Args:
        targets: per image, "boxes" (Tensor[K, 4] xyxy in the batch's pixels) and "labels".
        anchors (Tensor[L, A, 2]): (w, h) per scale and anchor.
        strides: per scale; grid_sizes: per scale (H, W); image_size: the batch's (h, w).

    Two objects falling on the same prediction: the later one wins (as in Darknet).
    """
    num_anchors = anchors.shape[1]
    rows = []
    for i, target in enumerate(targets):
        boxes = target["boxes"]
        if boxes.numel() == 0:
            continue
        sizes = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        best = shape_iou(sizes, anchors.reshape(-1, 2).to(sizes)).argmax(1)
        level, anchor = torch.div(best, num_anchors, rounding_mode="floor"), best % num_anchors
        stride = torch.tensor(strides, dtype=sizes.dtype, device=sizes.device)[level]
        heights = torch.tensor([g[0] for g in grid_sizes], device=sizes.device)[level]
        widths = torch.tensor([g[1] for g in grid_sizes], device=sizes.device)[level]
        grid = centres / stride[:, None]
        cell_x = grid[:, 0].floor().long().clamp(max=widths - 1).clamp(min=0)
        cell_y = grid[:, 1].floor().long().clamp(max=heights - 1).clamp(min=0)
        tx, ty = grid[:, 0] - cell_x, grid[:, 1] - cell_y
        wh = torch.log(sizes / anchors.to(sizes)[level, anchor])
        area = float(image_size[0]) * float(image_size[1])
        rows.append((torch.full_like(level, i), level, anchor, cell_y, cell_x,
                     (cell_y * widths + cell_x) * num_anchors + anchor,
                     torch.stack((tx, ty, wh[:, 0], wh[:, 1]), 1), target["labels"],
                     2.0 - sizes.prod(1) / area))
    if not rows:
        empty = torch.zeros(0, dtype=torch.int64, device=anchors.device)
        return Assignment(empty, empty, empty, empty, empty, empty, torch.zeros(0, 4, device=anchors.device), empty,
                          torch.zeros(0, device=anchors.device))
    return Assignment(*(torch.cat(parts) for parts in zip(*rows)))


class YOLOCriterion(nn.Module):
    """The YOLOv3 losses, named, weighted in one place.

    Args:
        ignore_iou: predictions overlapping an object above this (0.5) are left out of the
            objectness loss unless responsible.
        weights: multipliers of "box_regression", "objectness", "classification".
    """

    def __init__(self, ignore_iou: float = 0.5, weights: Mapping[str, float] | None = None):
        super().__init__()
        if not 0 < ignore_iou <= 1:
            raise ValueError(f"criterion.ignore_iou must be in (0, 1], got {ignore_iou!r}")
        self.ignore_iou = ignore_iou
        self.weights = {"box_regression": 1.0, "objectness": 1.0, "classification": 1.0}
        for key, value in (weights or {}).items():
            if key not in self.weights:
                raise ValueError(f"criterion.weights.{key}: unknown loss (known: {', '.join(self.weights)})")
            self.weights[key] = float(value)

    def forward(self, outputs: list[Tensor], boxes: list[Tensor], assignment: Assignment,
                targets: list[dict]) -> dict[str, Tensor]:
        """Args: outputs and boxes (decoded, xyxy), per scale (N, T_l, 5 + K) and (N, T_l, 4)."""
        num_images = outputs[0].shape[0]
        box_loss, objectness, classification = [], [], []
        for level, (out, decoded) in enumerate(zip(outputs, boxes)):
            mine = assignment.level == level
            image, index = assignment.image[mine], assignment.index[mine]
            responsible = torch.zeros(out.shape[:2], dtype=torch.bool, device=out.device)
            responsible[image, index] = True
            with torch.no_grad():  # predictions that already find an object are not punished as empty
                ignore = torch.zeros_like(responsible)
                for i, target in enumerate(targets):
                    if target["boxes"].numel():
                        ignore[i] = box_iou(decoded[i], target["boxes"]).max(1).values > self.ignore_iou
                keep = responsible | ~ignore
            objectness.append(F.binary_cross_entropy_with_logits(out[..., 4][keep], responsible[keep].to(out.dtype),
                                                                 reduction="sum"))
            predicted = out[image, index]
            weights, offsets = assignment.weights[mine], assignment.offsets[mine]
            xy = F.binary_cross_entropy_with_logits(predicted[:, :2], offsets[:, :2], reduction="none").sum(1)
            wh = (predicted[:, 2:4] - offsets[:, 2:]).pow(2).sum(1)
            box_loss.append((weights * (xy + wh)).sum())
            onehot = F.one_hot(assignment.labels[mine], out.shape[-1] - 5).to(out.dtype)
            classification.append(F.binary_cross_entropy_with_logits(predicted[:, 5:], onehot, reduction="sum"))
        losses = {"box_regression": sum(box_loss) / num_images, "objectness": sum(objectness) / num_images,
                  "classification": sum(classification) / num_images}
        return {name: self.weights[name] * value for name, value in losses.items()}


class YOLO(nn.Module):
    """Args:
        backbone, neck: feature extractors (the neck may be None).
        head: ``YOLOHead``.
        anchors: per scale, A (w, h) anchor sizes in input pixels.
        in_levels: the three scales the head reads (P3, P4, P5).
        transform: letterbox to 416 x 416 by default (longer side 416, padded).
        criterion: ``YOLOCriterion``.
        score_threshold: objectness x class probability must exceed it (0.01).
        top_k: (position, class) pairs kept per scale before suppression (1,000).
        detections_per_image: at most this many (100).
        postprocess: the suppressor (``detkit.ops.Suppressor``, class-aware; NMS at 0.45 if None).
        class_names: names of labels 0..K-1.
    """

    def __init__(self, backbone: FeatureExtractor, neck: FeatureExtractor | None, head: YOLOHead,
                 anchors: Sequence[Sequence[Sequence[float]]], in_levels: list[str],
                 transform: DetectionTransform | None = None, criterion: YOLOCriterion | None = None,
                 score_threshold: float = 0.01, top_k: int = 1000, detections_per_image: int = 100,
                 postprocess: Suppressor | None = None, class_names: list[str] | None = None):
        super().__init__()
        self.name = "yolo"
        self.transform = transform or DetectionTransform(**LETTERBOX_416)
        self.backbone, self.neck, self.head = backbone, neck, head
        self.register_buffer("anchor_sizes", torch.tensor(anchors, dtype=torch.float32), persistent=False)
        self.in_levels = list(in_levels)
        self.criterion = criterion or YOLOCriterion()
        self.score_threshold, self.top_k = score_threshold, top_k
        self.set_postprocess(postprocess or Suppressor("nms", {"iou_threshold": 0.45}), cap=detections_per_image)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(head.num_classes)]

    def set_postprocess(self, postprocess: Suppressor, cap: int | None = None) -> None:
        """Post-process with another suppressor (and at most ``cap`` detections per image), no retraining."""
        self.postprocess = checked_postprocess(postprocess, densities=False, detector="YOLO")
        if cap is not None:
            self.detections_per_image = checked_cap(cap, "YOLO")

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        if self.training and targets is None:
            raise ValueError("yolo: training needs targets (boxes and labels per image)")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, targets = self.transform(images, targets)
        maps = read_levels(self.backbone, self.neck, batch.tensors, self.in_levels)
        outputs = self.head(maps)
        image_size = batch.tensors.shape[-2:]
        grids = [tuple(m.shape[-2:]) for m in maps]
        strides = [image_size[0] // g[0] for g in grids]
        boxes = [self.decode(out, grid, stride, self.anchor_sizes[lvl])
                 for lvl, (out, grid, stride) in enumerate(zip(outputs, grids, strides))]
        if self.training:
            assignment = assign(targets, self.anchor_sizes, strides, grids, image_size)
            return self.criterion(outputs, boxes, assignment, targets)
        detections = self.detect(outputs, boxes, batch.image_sizes)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    @staticmethod
    def decode(out: Tensor, grid: Sequence[int], stride: int, anchors: Tensor) -> Tensor:
        """(N, H * W * A, 5 + K) predictions -> (N, H * W * A, 4) xyxy boxes in input pixels."""
        height, width = grid
        num_anchors = anchors.shape[0]
        ys, xs = torch.meshgrid(torch.arange(height, device=out.device), torch.arange(width, device=out.device),
                                indexing="ij")
        # (H, W) cells -> (H * W * A, 2), cell-major then anchor, as the predictions
        cells = torch.stack((xs, ys), -1).reshape(-1, 1, 2).expand(-1, num_anchors, 2).reshape(-1, 2).to(out.dtype)
        sizes = anchors.to(out.dtype).repeat(height * width, 1)
        centre = (torch.sigmoid(out[..., :2]) + cells) * stride
        half = sizes * torch.exp(out[..., 2:4].clamp(max=MAX_LOG_SCALE)) / 2
        return torch.cat((centre - half, centre + half), -1)

    @torch.no_grad()
    def detect(self, outputs: list[Tensor], boxes: list[Tensor], image_sizes) -> list[dict]:
        """Per image: per scale, the top-k (position, class) pairs above the score threshold,
        clipped, then suppressed across scales."""
        detections = []
        for i, size in enumerate(image_sizes):
            all_boxes, all_scores, all_labels = [], [], []
            for out, decoded in zip(outputs, boxes):
                scores = torch.sigmoid(out[i, :, 4:5]) * torch.sigmoid(out[i, :, 5:])  # objectness x class
                top, position, label = top_pairs(scores, self.score_threshold, self.top_k)
                all_boxes.append(clip_boxes_to_image(decoded[i, position], size))
                all_scores.append(top)
                all_labels.append(label)
            found, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
            detections.append(suppress(self.postprocess, self.detections_per_image, found, scores, labels))
        return detections
