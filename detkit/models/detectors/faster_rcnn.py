"""Faster R-CNN (Ren et al., NeurIPS 2015): a region proposal network, then a RoI head.

    images -> transform -> backbone -> [neck] -> RPN -> proposals -> RoI heads -> detections
                                                   \\-> (training) criterion <-/

``FasterRCNN.forward`` reads as that pipeline. In training it returns the criterion's
named losses; in evaluation one dict per image with ``boxes`` (xyxy in that image's
pixels), ``scores`` and ``labels`` (0..C-1), and ``densities`` when the density head is on.
"""

from __future__ import annotations

from functools import partial
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.backbones.base import FeatureExtractor
from detkit.models.coders import BoxCoder
from detkit.models.heads.density_head import checked_crowd_weight, density_loss, density_targets
from detkit.models.heads.roi_heads import RoIHeads, RoIOutput, RoISamples
from detkit.models.heads.rpn import RPN, RPNOutput
from detkit.models.matchers import IGNORED, BalancedSampler, Matcher
from detkit.models.transform import DetectionTransform
from detkit.ops import Suppressor, box_iou, smooth_l1_loss


class FasterRCNNCriterion(nn.Module):
    """The losses of Faster R-CNN, each named, weighted in one place.

    RPN: anchors are matched to ground truth (IoU >= 0.7 foreground, < 0.3 background, and
    each object's best anchors foreground), 256 sampled per image at up to 1:1; objectness
    by binary cross-entropy, offsets of the foreground by smooth-L1 (beta 1/9), both over
    the sampled anchors; with the RPN's density subnet, each sampled foreground anchor's
    density towards its object's (smooth-L1, beta 1/9, averaged over them; Liu et al.; a
    binned subnet: cross-entropy over its knots, ``density_loss``).
    RoI head: cross-entropy over the sampled RoIs, smooth-L1 (beta 1/9) on the true class's
    offsets of the foreground RoIs, divided by all sampled RoIs; the density head's smooth-L1
    on foreground RoIs. These are torchvision's definitions (the densities aside).

    Args:
        weights: multipliers of "rpn_objectness", "rpn_box", "rpn_density", "classifier", "box", "density".
        density_same_class: an object's density target counts only objects of its class (as
            class-aware suppression sees them); False: any class, the paper's.
        density_crowd_weight: multiplier of the density loss of crowded targets (above 0.5,
            ``density_loss``); 1: the paper's loss.
    """

    def __init__(
        self,
        rpn_fg_iou: float = 0.7,
        rpn_bg_iou: float = 0.3,
        rpn_batch_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        weights: Mapping[str, float] | None = None,
        density_same_class: bool = False,
        density_crowd_weight: float = 1.0,
    ):
        super().__init__()
        self.density_same_class = bool(density_same_class)
        self.density_crowd_weight = checked_crowd_weight(density_crowd_weight)
        self.rpn_matcher = Matcher(rpn_fg_iou, rpn_bg_iou, allow_low_quality=True)
        self.rpn_sampler = BalancedSampler(rpn_batch_per_image, rpn_positive_fraction)
        self.rpn_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.weights = {"rpn_objectness": 1.0, "rpn_box": 1.0, "rpn_density": 1.0, "classifier": 1.0, "box": 1.0,
                        "density": 1.0}
        for key, value in (weights or {}).items():
            if key not in self.weights:
                raise ValueError(f"criterion.weights.{key}: unknown loss (known: {', '.join(self.weights)})")
            self.weights[key] = float(value)

    def forward(self, rpn: RPNOutput, roi: RoIOutput, samples: RoISamples, targets: list[dict]) -> dict[str, Tensor]:
        losses = {**self.rpn_losses(rpn, targets), **self.roi_losses(roi, samples)}
        return {name: self.weights[name] * value for name, value in losses.items()}

    def rpn_losses(self, rpn: RPNOutput, targets: list[dict]) -> dict[str, Tensor]:
        labels, regression, densities = [], [], []
        with torch.no_grad():
            for target in targets:
                gt = target["boxes"]
                if gt.numel() == 0:
                    labels.append(torch.zeros(len(rpn.anchors), device=gt.device))
                    regression.append(torch.zeros_like(rpn.anchors))
                    densities.append(torch.zeros(len(rpn.anchors), device=gt.device))
                    continue
                matched = self.rpn_matcher(box_iou(gt, rpn.anchors))
                label = (matched >= 0).to(torch.float32)
                label[matched == IGNORED] = -1.0
                labels.append(label)
                regression.append(self.rpn_coder.encode(gt[matched.clamp(min=0)], rpn.anchors))
                truth = density_targets(gt, target["labels"] if self.density_same_class else None)
                densities.append(truth[matched.clamp(min=0)])
        positive, negative = [], []
        offset = 0
        for label in labels:
            pos, neg = self.rpn_sampler(label)
            positive.append(pos + offset)
            negative.append(neg + offset)
            offset += len(label)
        positive, negative = torch.cat(positive), torch.cat(negative)
        sampled = torch.cat([positive, negative])
        objectness = rpn.objectness.flatten()
        deltas = rpn.deltas.reshape(-1, 4)
        labels, regression = torch.cat(labels), torch.cat(regression)
        box = smooth_l1_loss(deltas[positive], regression[positive], beta=1 / 9, reduction="sum") / sampled.numel()
        losses = {
            "rpn_objectness": F.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled]),
            "rpn_box": box,
        }
        if rpn.densities is not None:
            wanted = torch.cat(densities)[positive]
            predicted = rpn.densities.flatten() if rpn.density_logits is None else rpn.density_logits.flatten(0, 1)
            losses["rpn_density"] = density_loss(predicted[positive], wanted,
                                                 self.density_crowd_weight) / max(1, positive.numel())
        return losses

    def roi_losses(self, roi: RoIOutput, samples: RoISamples) -> dict[str, Tensor]:
        labels = torch.cat(samples.labels)
        targets = torch.cat(samples.regression_targets)
        foreground = torch.where(labels > 0)[0]
        offsets = roi.box_regression.reshape(len(labels), -1, 4)
        box = smooth_l1_loss(offsets[foreground, labels[foreground]], targets[foreground], beta=1 / 9,
                             reduction="sum") / labels.numel()
        losses = {"classifier": F.cross_entropy(roi.class_logits, labels), "box": box}
        if roi.densities is not None:
            densities = torch.cat(samples.densities)
            predicted = roi.densities if roi.density_logits is None else roi.density_logits
            losses["density"] = density_loss(predicted[foreground], densities[foreground],
                                             self.density_crowd_weight) / max(len(foreground), 1)
        return losses


DENSITY_READOUTS = ("anchor", "box")


class FasterRCNN(nn.Module):
    """Args:
        backbone: emits the feature levels (``out_shapes``).
        neck: FPN, BiFPN or None (the RPN and RoI head then read backbone levels, e.g. C4).
        rpn: the region proposal network.
        roi_heads: the second stage.
        transform: normalise, resize and batch (defaults: 800 / 1333, ImageNet statistics).
        criterion: the losses (default: torchvision's).
        class_names: names of labels 0..C-1 (for drawing and reports).
        density_readout: where each candidate's density is read: "anchor", the paper's (with the
            RPN's density subnet, carried from the anchor its proposal came from; with the RoI
            density head, from the RoI of its proposal), or "box" (at the final box: the anchor it
            overlaps most, the one training would match its object to; or the RoI density head
            on the box's own RoI).
    """

    def __init__(
        self,
        backbone: FeatureExtractor,
        neck: FeatureExtractor | None,
        rpn: RPN,
        roi_heads: RoIHeads,
        transform: DetectionTransform | None = None,
        criterion: FasterRCNNCriterion | None = None,
        class_names: list[str] | None = None,
        density_readout: str = "anchor",
    ):
        super().__init__()
        self.transform = transform or DetectionTransform()
        self.backbone = backbone
        self.neck = neck
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.criterion = criterion or FasterRCNNCriterion()
        num_classes = roi_heads.predictor.cls_score.out_features - 1
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.set_density_readout(density_readout)

    def set_density_readout(self, readout: str) -> None:
        """Read each candidate's density where its proposal came from ("anchor": its anchor, or
        its proposal's RoI) or at its final box ("box": the anchor the box overlaps most, or the
        box's own RoI); a model without densities only has "anchor"."""
        if readout not in DENSITY_READOUTS:
            raise ValueError(f"density_readout must be one of {', '.join(DENSITY_READOUTS)}, got {readout!r}")
        if readout != "anchor" and self.rpn.density is None and self.roi_heads.density_head is None:
            raise ValueError(f"density_readout {readout!r} reads the predicted densities: enable the RPN's "
                             "density subnet (model.rpn.density: true) or the RoI density head "
                             "(model.roi_heads.density_head: true)")
        self.density_readout = readout

    def features(self, images: Tensor) -> dict[str, Tensor]:
        features = self.backbone(images)
        return self.neck(features) if self.neck is not None else features

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        """Args:
            images: each Tensor[3, H, W] (float in [0, 1] or uint8), sizes may differ.
            targets (training): each with "boxes" (Tensor[K, 4] xyxy pixels) and "labels" (0..C-1).
        """
        if self.training and targets is None:
            raise ValueError("FasterRCNN: training needs targets (boxes and labels per image)")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, targets = self.transform(images, targets)
        features = self.features(batch.tensors)
        rpn = self.rpn(batch, features)
        if self.training:
            samples = self.roi_heads.sample(rpn.proposals, targets, self.criterion.density_same_class)
            roi = self.roi_heads(features, samples.proposals, batch.image_sizes)
            return self.criterion(rpn, roi, samples, targets)
        roi = self.roi_heads(features, rpn.proposals, batch.image_sizes)
        density_at = None
        if self.density_readout == "box" and self.roi_heads.density_head is not None:
            density_at = partial(self.roi_heads.densities_at, features, image_sizes=batch.image_sizes)
        elif self.density_readout == "box":
            density_at = rpn.density_at_boxes
        detections = self.roi_heads.detect(roi, rpn.proposals, batch.image_sizes, rpn.proposal_densities(), density_at)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    @torch.no_grad()
    def propose(self, images: list[Tensor]) -> list[Tensor]:
        """The RPN's proposals (Tensor[P, 4] per image, xyxy in the resized image), for inspection."""
        batch, _ = self.transform(images)
        return self.rpn(batch, self.features(batch.tensors)).proposals

    @property
    def postprocess(self) -> Suppressor:
        """The suppressor of the detections (the RoI heads')."""
        return self.roi_heads.postprocess

    @property
    def detections_per_image(self) -> int:
        return self.roi_heads.detections_per_image

    def set_postprocess(self, postprocess: Suppressor, cap: int | None = None) -> None:
        """Post-process with another suppressor (e.g. ``Suppressor("soft_nms")``), and at most ``cap``
        detections per image, no retraining."""
        self.roi_heads.set_postprocess(postprocess, cap)
