"""SSD (Liu et al., ECCV 2016): one pass over several feature maps of falling resolution.

    images -> transform (fixed 300 x 300) -> backbone (VGG-16: 6 maps) -> SSD head -> (criterion | detect)

Every default box of every map predicts K + 1 class scores (softmax, background first) and 4
offsets (coded with weights 10, 10, 5, 5). Training matches default boxes to ground truth (IoU
>= 0.5, and each object's best default box), then the multibox loss: smooth-L1 on the
foreground's offsets plus cross-entropy over the foreground and the hardest negatives, 3 per
positive ("hard negative mining"), both divided by the number of positives. Detection keeps,
per class, the 400 best boxes above 0.01 and post-processes them through the configured
suppressor (NMS at 0.45 by default), 200 per image. The arithmetic is torchvision's
``ssd300_vgg16``'s, so its weights give its detections.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.anchors import DefaultBoxes
from detkit.models.backbones.base import FeatureExtractor, read_levels
from detkit.models.coders import BoxCoder
from detkit.models.heads.ssd_head import SSDHead
from detkit.models.matchers import Matcher
from detkit.models.transform import DetectionTransform
from detkit.models.postprocess import checked_cap, checked_postprocess, suppress
from detkit.ops import Suppressor, box_iou, clip_boxes_to_image, smooth_l1_loss

SSD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # offsets of comparable size for centres and sides
# every image stretched to 300 x 300; VGG's Caffe weights expect mean-subtracted 0..255 pixels
SSD300_TRANSFORM = {"min_size": 300, "max_size": 300, "mean": (0.48235, 0.45882, 0.40784), "std": (1 / 255.0,) * 3,
                    "size_divisible": 1, "fixed_size": (300, 300)}


class SSDCriterion(nn.Module):
    """The multibox loss, named losses weighted in one place.

    Args:
        iou_threshold: a default box is foreground at IoU >= this (0.5); each object's best
            default box is foreground whatever its IoU.
        negative_ratio: hardest negatives per positive in the classification loss (3).
        weights: multipliers of "classification", "box_regression".
    """

    def __init__(self, iou_threshold: float = 0.5, negative_ratio: float = 3.0,
                 weights: Mapping[str, float] | None = None):
        super().__init__()
        if negative_ratio <= 0:
            raise ValueError(f"criterion.negative_ratio must be > 0, got {negative_ratio!r}")
        self.matcher = Matcher(iou_threshold, iou_threshold)
        self.negative_ratio = float(negative_ratio)
        self.coder = BoxCoder(SSD_BOX_WEIGHTS)
        self.weights = {"classification": 1.0, "box_regression": 1.0}
        for key, value in (weights or {}).items():
            if key not in self.weights:
                raise ValueError(f"criterion.weights.{key}: unknown loss (known: {', '.join(self.weights)})")
            self.weights[key] = float(value)

    def match(self, gt_boxes: Tensor, anchors: Tensor) -> Tensor:
        """Tensor[T]: the ground-truth index of each default box, or < 0 (background)."""
        if gt_boxes.numel() == 0:
            return torch.full((len(anchors),), -1, dtype=torch.int64, device=anchors.device)
        iou = box_iou(gt_boxes, anchors)
        matched = self.matcher(iou)
        best = iou.max(dim=1).indices  # each object's best default box is its own, even below the threshold
        matched[best] = torch.arange(len(best), dtype=torch.int64, device=best.device)
        return matched

    def forward(self, outputs: Mapping[str, Tensor], anchors: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        box_losses, classes = [], []
        deltas = outputs["deltas"].unbind(0)  # not [i]: see DenseCriterion
        for i, target in enumerate(targets):
            with torch.no_grad():
                matched = self.match(target["boxes"], anchors)
            foreground = torch.where(matched >= 0)[0]
            gt = target["boxes"][matched[foreground]]
            wanted = self.coder.encode(gt, anchors[foreground])
            box_losses.append(smooth_l1_loss(deltas[i][foreground], wanted, beta=1.0, reduction="sum"))
            cls = torch.zeros(len(anchors), dtype=torch.int64, device=anchors.device)
            cls[foreground] = target["labels"][matched[foreground]] + 1  # 0 is the background
            classes.append(cls)
        classes = torch.stack(classes)  # (N, T)
        logits = outputs["logits"]
        # (N, T, K + 1) -> (N * T, K + 1) -> per-box losses (N, T)
        per_box = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), classes.reshape(-1),
                                  reduction="none").view(classes.shape)
        positive = classes > 0
        n_negative = self.negative_ratio * positive.sum(1, keepdim=True)
        negative_loss = per_box.clone()
        negative_loss[positive] = -float("inf")
        rank = negative_loss.sort(1, descending=True)[1].sort(1)[1]  # each box's rank among the negatives
        hardest = rank < n_negative
        n = max(1, int(positive.sum()))
        losses = {"classification": (per_box[positive].sum() + per_box[hardest].sum()) / n,
                  "box_regression": torch.stack(box_losses).sum() / n}
        return {name: self.weights[name] * value for name, value in losses.items()}


class SSD(nn.Module):
    """Args:
        backbone: emits the feature maps (``out_shapes``), e.g. ``VGG16SSD``.
        neck: None (SSD300) or a neck over the backbone (FPN, BiFPN) whose levels the head reads.
        head: ``SSDHead``.
        anchors: ``DefaultBoxes``, one entry per level of ``in_levels``.
        in_levels: the maps the head reads (all of the backbone's by default).
        transform: fixed 300 x 300 input by default, VGG's Caffe mean and 0..255 scale.
        criterion: the multibox loss.
        score_threshold: (box, class) pairs must score above it (0.01).
        top_k: pairs kept per class before suppression (400).
        detections_per_image: at most this many detections (200).
        postprocess: the suppressor (``detkit.ops.Suppressor``, class-aware; NMS at 0.45 if None).
        class_names: names of labels 0..K-1.
    """

    def __init__(self, backbone: FeatureExtractor, head: SSDHead, anchors: DefaultBoxes, in_levels: list[str],
                 transform: DetectionTransform | None = None, criterion: SSDCriterion | None = None,
                 score_threshold: float = 0.01, top_k: int = 400, detections_per_image: int = 200,
                 neck: FeatureExtractor | None = None, postprocess: Suppressor | None = None,
                 class_names: list[str] | None = None):
        super().__init__()
        self.name = "ssd"
        self.transform = transform or DetectionTransform(**SSD300_TRANSFORM)
        self.backbone, self.neck, self.head = backbone, neck, head
        self.anchors, self.in_levels = anchors, list(in_levels)
        self.criterion = criterion or SSDCriterion()
        self.coder = BoxCoder(SSD_BOX_WEIGHTS)
        self.score_threshold, self.top_k = score_threshold, top_k
        self.set_postprocess(postprocess or Suppressor("nms", {"iou_threshold": 0.45}), cap=detections_per_image)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(head.num_classes)]

    def set_postprocess(self, postprocess: Suppressor, cap: int | None = None) -> None:
        """Post-process with another suppressor (and at most ``cap`` detections per image), no retraining."""
        self.postprocess = checked_postprocess(postprocess, densities=False, detector="SSD")
        if cap is not None:
            self.detections_per_image = checked_cap(cap, "SSD")

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        if self.training and targets is None:
            raise ValueError("ssd: training needs targets (boxes and labels per image)")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, targets = self.transform(images, targets)
        maps = read_levels(self.backbone, self.neck, batch.tensors, self.in_levels)
        outputs = self.head(maps)
        anchors = torch.cat(self.anchors(batch.tensors.shape[-2:], [m.shape[-2:] for m in maps], maps[0].dtype,
                                         maps[0].device))
        if self.training:
            return self.criterion(outputs, anchors, targets)
        detections = self.detect(outputs, anchors, batch.image_sizes)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    @torch.no_grad()
    def detect(self, outputs: Mapping[str, Tensor], anchors: Tensor, image_sizes) -> list[dict]:
        """Per image and class: the top-k boxes above the score threshold, then suppressed."""
        detections = []
        probabilities = F.softmax(outputs["logits"], dim=-1)
        for deltas, scores, size in zip(outputs["deltas"], probabilities, image_sizes):
            decoded = clip_boxes_to_image(self.coder.decode(deltas, anchors)[:, 0], size)
            boxes, kept_scores, labels = [], [], []
            for label in range(1, scores.shape[-1]):
                score = scores[:, label]
                candidates = torch.where(score > self.score_threshold)[0]
                top, order = score[candidates].topk(min(self.top_k, len(candidates)))
                boxes.append(decoded[candidates[order]])
                kept_scores.append(top)
                labels.append(torch.full_like(order, label - 1))
            boxes, kept_scores, labels = torch.cat(boxes), torch.cat(kept_scores), torch.cat(labels)
            detections.append(suppress(self.postprocess, self.detections_per_image, boxes, kept_scores, labels))
        return detections
