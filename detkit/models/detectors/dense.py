"""Dense one-stage detectors: RetinaNet (Lin et al., ICCV 2017) and EfficientDet (Tan et al., CVPR 2020).

    images -> transform -> backbone -> neck -> dense head -> (criterion | detect) -> detections

Every anchor of every pyramid level predicts K class probabilities (sigmoids, no background
class) and 4 box offsets. Training matches anchors to ground truth (IoU >= 0.5 foreground,
< 0.4 background, between ignored; each object's best anchors are foreground) and uses the
focal loss, which down-weights the many easy background anchors, instead of sampling.
Detection keeps, per level, the 1,000 best (anchor, class) pairs scoring above 0.05, decodes
and clips them, then post-processes through the configured suppressor. The arithmetic is
torchvision's RetinaNet's, so its weights give its detections. EfficientDet is the same
machinery with an EfficientNet backbone, a BiFPN and separable-conv heads.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from detkit.models.anchors import AnchorGenerator
from detkit.models.backbones.base import FeatureExtractor, read_levels
from detkit.models.coders import BoxCoder
from detkit.models.heads.density_head import checked_crowd_weight, density_loss, density_targets
from detkit.models.matchers import IGNORED, Matcher
from detkit.models.transform import DetectionTransform
from detkit.models.postprocess import checked_cap, checked_postprocess, suppress, top_pairs
from detkit.ops import (
    Suppressor,
    box_iou,
    clip_boxes_to_image,
    generalized_box_iou_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
)

BOX_LOSSES = ("l1", "smooth_l1", "giou")
CLASSIFICATION_LOSSES = ("focal", "cross_entropy")


class DenseCriterion(nn.Module):
    """The losses of a dense detector, named, weighted in one place.

    "classification": sigmoid focal loss over the non-ignored anchors, summed and divided by the
    foreground count of the image, averaged over images. ``classification_loss="cross_entropy"``
    sets gamma to 0: alpha-balanced cross-entropy, the focal-loss ablation of the survey (Lin et
    al.'s Table 1a: best at alpha 0.75); ``alpha=None`` removes the balancing.
    "box_regression": L1 on the offsets (RetinaNet), smooth-L1, or GIoU on the decoded boxes
    (torchvision's v2), over the foreground, same normalisation. "density": smooth-L1 towards
    the matched object's density, when the head predicts densities (cross-entropy over the
    knots when its density subnet has bins: ``density_loss``).

    Args:
        fg_iou, bg_iou: matching thresholds (0.5 / 0.4).
        classification_loss: "focal" or "cross_entropy" (alpha-balanced, gamma 0).
        alpha, gamma: the focal loss's (0.25, 2; EfficientDet: gamma 1.5); gamma is ignored
            by "cross_entropy".
        box_loss: "l1", "smooth_l1" or "giou".
        box_beta: smooth-L1's beta (EfficientDet: 0.1).
        weights: multipliers of "classification", "box_regression", "density".
        density_same_class, density_crowd_weight: the density targets and loss, as in
            ``FasterRCNNCriterion``.
    """

    def __init__(self, fg_iou: float = 0.5, bg_iou: float = 0.4, classification_loss: str = "focal",
                 alpha: float | None = 0.25, gamma: float = 2.0, box_loss: str = "l1", box_beta: float = 1.0,
                 weights: Mapping[str, float] | None = None, density_same_class: bool = False,
                 density_crowd_weight: float = 1.0):
        super().__init__()
        self.density_same_class = bool(density_same_class)
        self.density_crowd_weight = checked_crowd_weight(density_crowd_weight)
        if classification_loss not in CLASSIFICATION_LOSSES:
            raise ValueError(f"criterion.classification_loss must be one of {', '.join(CLASSIFICATION_LOSSES)}, "
                             f"got {classification_loss!r}")
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"criterion.box_loss must be one of {', '.join(BOX_LOSSES)}, got {box_loss!r}")
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality=True)
        self.classification_loss = classification_loss
        self.alpha, self.box_loss, self.box_beta = alpha, box_loss, box_beta
        self.gamma = 0.0 if classification_loss == "cross_entropy" else gamma
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.weights = {"classification": 1.0, "box_regression": 1.0, "density": 1.0}
        for key, value in (weights or {}).items():
            if key not in self.weights:
                raise ValueError(f"criterion.weights.{key}: unknown loss (known: {', '.join(self.weights)})")
            self.weights[key] = float(value)

    def forward(self, outputs: Mapping[str, Tensor], anchors: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        classification, regression, density = [], [], []
        # unbind, not outputs[...][i]: indexing one image's slice would make backward fill a
        # zero gradient of the whole batch's (N, T, K) logits per image (2% of a RetinaNet step)
        per_image = {key: value.unbind(0) for key, value in outputs.items()}
        for i, target in enumerate(targets):
            gt_boxes, gt_labels = target["boxes"], target["labels"]
            with torch.no_grad():
                if gt_boxes.numel() == 0:
                    matched = torch.full((len(anchors),), -1, dtype=torch.int64, device=anchors.device)
                else:
                    matched = self.matcher(box_iou(gt_boxes, anchors))
            foreground = matched >= 0
            n_fg = max(1, int(foreground.sum()))
            logits = per_image["logits"][i]
            onehot = torch.zeros_like(logits)
            onehot[foreground, gt_labels[matched[foreground]]] = 1.0
            valid = matched != IGNORED
            classification.append(
                sigmoid_focal_loss(logits[valid], onehot[valid], alpha=self.alpha, gamma=self.gamma,
                                   reduction="sum") / n_fg)
            gt = gt_boxes[matched[foreground]]
            deltas, reference = per_image["deltas"][i][foreground], anchors[foreground]
            if self.box_loss == "giou":
                box = generalized_box_iou_loss(self.coder.decode(deltas, reference)[:, 0], gt, reduction="sum")
            elif self.box_loss == "l1":
                box = nn.functional.l1_loss(deltas, self.coder.encode(gt, reference), reduction="sum")
            else:
                box = smooth_l1_loss(deltas, self.coder.encode(gt, reference), beta=self.box_beta, reduction="sum")
            regression.append(box / n_fg)
            if "densities" in outputs:
                truth = density_targets(gt_boxes, gt_labels if self.density_same_class else None)
                wanted = truth[matched[foreground]] if gt_boxes.numel() else gt_boxes.new_zeros(0)
                predicted = per_image["density_logits" if "density_logits" in outputs else "densities"][i]
                density.append(density_loss(predicted[foreground], wanted, self.density_crowd_weight) / n_fg)
        losses = {"classification": sum(classification) / len(targets),
                  "box_regression": sum(regression) / max(1, len(targets))}
        if density:
            losses["density"] = sum(density) / len(targets)
        return {name: self.weights[name] * value for name, value in losses.items()}


class DenseDetector(nn.Module):
    """Args:
        backbone, neck: feature extractors (the neck may be None).
        head: ``RetinaHead`` or ``EfficientDetHead``.
        anchors: one entry of sizes per level of ``in_levels``.
        in_levels: the levels the head runs on (P3..P7).
        transform, criterion: as for Faster R-CNN.
        score_threshold: (anchor, class) pairs must score above it (0.05).
        top_k: pairs kept per level before suppression (1,000).
        detections_per_image: at most this many detections (300).
        postprocess: the suppressor (``detkit.ops.Suppressor``, class-aware; NMS at 0.5 if None).
        class_names: names of labels 0..K-1.
        name: what to call it ("retinanet", "efficientdet").
    """

    def __init__(self, backbone: FeatureExtractor, neck: FeatureExtractor | None, head: nn.Module,
                 anchors: AnchorGenerator, in_levels: list[str], transform: DetectionTransform | None = None,
                 criterion: DenseCriterion | None = None, score_threshold: float = 0.05, top_k: int = 1000,
                 detections_per_image: int = 300, postprocess: Suppressor | None = None,
                 class_names: list[str] | None = None, name: str = "retinanet"):
        super().__init__()
        self.name = name
        self.transform = transform or DetectionTransform()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.anchors, self.in_levels = anchors, list(in_levels)
        self.criterion = criterion or DenseCriterion()
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.score_threshold, self.top_k = score_threshold, top_k
        self.set_postprocess(postprocess or Suppressor("nms", {"iou_threshold": 0.5}), cap=detections_per_image)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(head.num_classes)]

    def set_postprocess(self, postprocess: Suppressor, cap: int | None = None) -> None:
        """Post-process with another suppressor (and at most ``cap`` detections per image), no retraining."""
        self.postprocess = checked_postprocess(
            postprocess, densities=getattr(self.head, "density", None) is not None, detector=self.name,
            hint="enable the density head (model.head.density: true) and train with it")
        if cap is not None:
            self.detections_per_image = checked_cap(cap, self.name)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        if self.training and targets is None:
            raise ValueError(f"{self.name}: training needs targets (boxes and labels per image)")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, targets = self.transform(images, targets)
        maps = read_levels(self.backbone, self.neck, batch.tensors, self.in_levels)
        outputs = self.head(maps)
        anchors = self.anchors(batch.tensors.shape[-2:], [m.shape[-2:] for m in maps], maps[0].dtype, maps[0].device)
        if self.training:
            return self.criterion(outputs, torch.cat(anchors), targets)
        per_level = [len(a) for a in anchors]
        detections = self.detect(outputs, anchors, per_level, batch.image_sizes)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    @torch.no_grad()
    def detect(self, outputs, anchors: list[Tensor], per_level: list[int], image_sizes) -> list[dict]:
        """Per image: the top-k (anchor, class) pairs of each level above the score threshold,
        decoded, clipped, then suppressed across levels."""
        detections = []
        for i, size in enumerate(image_sizes):
            boxes, scores, labels, densities = [], [], [], []
            level_logits = outputs["logits"][i].split(per_level)
            level_deltas = outputs["deltas"][i].split(per_level)
            level_densities = outputs["densities"][i].split(per_level) if "densities" in outputs else None
            for lvl, (logits, deltas, anchor) in enumerate(zip(level_logits, level_deltas, anchors)):
                top, anchor_index, label = top_pairs(torch.sigmoid(logits), self.score_threshold, self.top_k)
                decoded = self.coder.decode(deltas[anchor_index], anchor[anchor_index])[:, 0]
                boxes.append(clip_boxes_to_image(decoded, size))
                scores.append(top)
                labels.append(label)
                if level_densities is not None:
                    densities.append(level_densities[lvl][anchor_index])
            boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            densities = torch.cat(densities) if densities else None
            detections.append(suppress(self.postprocess, self.detections_per_image, boxes, scores, labels, densities))
        return detections
