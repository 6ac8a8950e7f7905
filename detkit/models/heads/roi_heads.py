"""The second stage of Faster R-CNN: features of each proposal, class scores, refined boxes.

Shorthand: N images; R proposals (RoIs) of the batch; K classes including background
(index 0), so a dataset's label l is class l + 1; D the box head's feature size.

RoIAlign (torchvision's MultiScaleRoIAlign: each RoI pooled from the pyramid level that
suits its size) turns each proposal into a fixed-size feature; a box head (two FC layers,
or convs then an FC) into a vector; the predictor into K class logits and K class-specific
box offsets. In training, ``sample`` first draws 512 RoIs per image at 1:3
foreground:background from the proposals plus the ground-truth boxes; the criterion
(``detectors/faster_rcnn.py``) computes the losses. In evaluation, ``detect`` decodes,
drops background and low scores, and post-processes through the configured suppressor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign

from detkit.models.coders import BoxCoder
from detkit.models.heads.density_head import DensityHead, density_targets
from detkit.models.matchers import BACKGROUND, IGNORED, BalancedSampler, Matcher
from detkit.models.postprocess import checked_cap, checked_postprocess, suppress
from detkit.ops import Suppressor, box_iou, clip_boxes_to_image, remove_small_boxes


class TwoMLPHead(nn.Module):
    """Flatten, then two fully connected layers with ReLU (Faster R-CNN with FPN)."""

    def __init__(self, in_features: int, representation: int = 1024):
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation)
        self.fc7 = nn.Linear(representation, representation)
        self.out_features = representation

    def forward(self, x: Tensor) -> Tensor:
        """(R, C, S, S) -> (R, D)"""
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(start_dim=1)))))


class ConvFCHead(nn.Module):
    """3x3 convs with BatchNorm and ReLU, flatten, then fully connected layers with ReLU
    (torchvision's fasterrcnn_resnet50_fpn_v2: four 256-channel convs and one 1024 FC)."""

    def __init__(self, in_channels: int, resolution: int, convs=(256, 256, 256, 256), fcs=(1024,)):
        super().__init__()
        self.convs = nn.ModuleList()
        for out_channels in convs:
            self.convs.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    nn.ReLU(inplace=True),
                )
            )
            in_channels = out_channels
        features = in_channels * resolution * resolution
        self.fcs = nn.ModuleList()
        for width in fcs:
            self.fcs.append(nn.Linear(features, width))
            features = width
        self.out_features = features
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """(R, C, S, S) -> (R, D)"""
        for conv in self.convs:
            x = conv(x)
        x = x.flatten(start_dim=1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return x


class FastRCNNPredictor(nn.Module):
    """Class logits (K) and class-specific box offsets (4K) from the box head's vector."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(R, D) -> logits (R, K), offsets (R, 4K)"""
        return self.cls_score(x), self.bbox_pred(x)


@dataclass
class RoISamples:
    """Training RoIs of each image and their targets.

    proposals: per image, Tensor[S, 4]; labels: per image, Tensor[S] (0 background, else
    label + 1); regression_targets: per image, Tensor[S, 4] (offsets to the matched ground
    truth); densities: per image, Tensor[S] (the matched object's density, see density_head).
    """

    proposals: list[Tensor]
    labels: list[Tensor]
    regression_targets: list[Tensor]
    densities: list[Tensor]


@dataclass
class RoIOutput:
    """class_logits (Tensor[R, K]), box_regression (Tensor[R, 4K]), densities (Tensor[R] or None),
    density_logits (Tensor[R, B + 1] from a density head with bins, else None)."""

    class_logits: Tensor
    box_regression: Tensor
    densities: Tensor | None
    density_logits: Tensor | None = None


class RoIHeads(nn.Module):
    """Args:
        roi_pool: e.g. ``MultiScaleRoIAlign(["P2", "P3", "P4", "P5"], 7, 2)``.
        box_head: turns pooled features (R, C, S, S) into vectors (R, D).
        predictor: ``FastRCNNPredictor(D, K)``.
        density_head: predicts each RoI's crowd density for Adaptive-NMS (None: off).
        densities_from_rpn: the densities come with the proposals instead (the RPN's density
            subnet, Liu et al.'s design), each RoI keeping its proposal's.
        coder_weights: box-coding weights (10, 10, 5, 5): offsets of comparable magnitude.
        fg_iou, bg_iou: a RoI with IoU >= fg_iou is foreground, below bg_iou background.
        batch_per_image, positive_fraction: RoIs sampled per image (512) at 1:3.
        score_threshold: detections must score above it (0.05).
        min_size: detections narrower or shorter than this (pixels) are dropped.
        detections_per_image: at most this many detections per image (100).
        postprocess: the suppressor (``detkit.ops.Suppressor``, class-aware; NMS at 0.5 if None).
    """

    def __init__(
        self,
        roi_pool: MultiScaleRoIAlign,
        box_head: nn.Module,
        predictor: FastRCNNPredictor,
        density_head: DensityHead | None = None,
        coder_weights=(10.0, 10.0, 5.0, 5.0),
        fg_iou: float = 0.5,
        bg_iou: float = 0.5,
        batch_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_threshold: float = 0.05,
        min_size: float = 1e-2,
        detections_per_image: int = 100,
        postprocess: Suppressor | None = None,
        densities_from_rpn: bool = False,
    ):
        super().__init__()
        if density_head is not None and densities_from_rpn:
            raise ValueError("roi_heads: densities from the RPN's density subnet and from a RoI density head: "
                             "choose one (rpn.density or roi_heads.density_head)")
        self.densities_from_rpn = densities_from_rpn
        self.roi_pool = roi_pool
        self.box_head = box_head
        self.predictor = predictor
        self.density_head = density_head
        self.coder = BoxCoder(coder_weights)
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality=False)
        self.sampler = BalancedSampler(batch_per_image, positive_fraction)
        self.score_threshold = score_threshold
        self.min_size = min_size
        self.set_postprocess(postprocess or Suppressor("nms", {"iou_threshold": 0.5}), cap=detections_per_image)

    def set_postprocess(self, postprocess: Suppressor, cap: int | None = None) -> None:
        """Post-process with another suppressor (and at most ``cap`` detections per image), no retraining."""
        self.postprocess = checked_postprocess(
            postprocess, densities=self.density_head is not None or self.densities_from_rpn, detector="Faster R-CNN",
            hint="enable the density head (model.roi_heads.density_head: true) or the RPN's density subnet "
                 "(model.rpn.density: true) and train with it")
        if cap is not None:
            self.detections_per_image = checked_cap(cap, "Faster R-CNN")

    def forward(self, features: Mapping[str, Tensor], proposals: list[Tensor], image_sizes) -> RoIOutput:
        pooled = self.roi_pool(features, proposals, image_sizes)
        x = self.box_head(pooled)
        logits, offsets = self.predictor(x)
        densities, density_logits = self.density_head(x) if self.density_head is not None else (None, None)
        return RoIOutput(logits, offsets, densities, density_logits)

    @torch.no_grad()
    def densities_at(self, features: Mapping[str, Tensor], image: int, boxes: Tensor, image_sizes) -> Tensor:
        """Tensor[D]: the density head's value for each box (xyxy in the resized image) of image
        ``image``, from the box's own RoI: pooled at the box, through the box head (the
        "box" readout: the final box, not the proposal it was regressed from)."""
        if len(boxes) == 0:
            return boxes.new_zeros(0)
        one = {name: level[image:image + 1] for name, level in features.items()}
        out = [self.density_head(self.box_head(self.roi_pool(one, [chunk], [image_sizes[image]])))[0]
               for chunk in boxes.split(1024)]  # bounded memory
        return torch.cat(out)

    @torch.no_grad()
    def sample(self, proposals: list[Tensor], targets: list[dict], density_same_class: bool = False) -> RoISamples:
        """Training RoIs: the proposals plus the ground-truth boxes, matched and sampled; each
        RoI's density target is its object's (``density_targets``: max IoU with another object,
        of its class only with ``density_same_class``)."""
        out = RoISamples([], [], [], [])
        for boxes, target in zip(proposals, targets):
            gt_boxes = target["boxes"].to(boxes.dtype)
            gt_labels = target["labels"]
            boxes = torch.cat([boxes, gt_boxes])
            if gt_boxes.numel() == 0:
                matched = torch.full((len(boxes),), BACKGROUND, dtype=torch.int64, device=boxes.device)
                labels = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
                gt_boxes = torch.zeros((1, 4), dtype=boxes.dtype, device=boxes.device)
                gt_density = torch.zeros(1, dtype=boxes.dtype, device=boxes.device)
            else:
                matched = self.matcher(box_iou(gt_boxes, boxes))
                labels = gt_labels[matched.clamp(min=0)] + 1
                labels[matched == BACKGROUND] = 0
                labels[matched == IGNORED] = -1
                gt_density = density_targets(gt_boxes, gt_labels if density_same_class else None)
            positive, negative = self.sampler(labels)
            chosen = torch.cat([positive, negative])
            matched_boxes = gt_boxes[matched[chosen].clamp(min=0)]
            out.proposals.append(boxes[chosen])
            out.labels.append(labels[chosen])
            out.regression_targets.append(self.coder.encode(matched_boxes, boxes[chosen]))
            out.densities.append(gt_density[matched[chosen].clamp(min=0)])
        return out

    @torch.no_grad()
    def detect(self, output: RoIOutput, proposals: list[Tensor], image_sizes,
               proposal_densities: list[Tensor] | None = None, density_at=None) -> list[dict]:
        """Detections per image: ``boxes`` (Tensor[D, 4] xyxy, resized image), ``scores``,
        ``labels`` (dataset labels, 0..K-2), and ``densities`` when densities are predicted
        (by the density head, or carried from the proposals: ``proposal_densities``, or read
        at each candidate's box: ``density_at(image, boxes) -> Tensor[D]``)."""
        boxes_all = self.coder.decode(output.box_regression, torch.cat(proposals))  # (R, K, 4)
        scores_all = F.softmax(output.class_logits, -1)
        per_image = [len(p) for p in proposals]
        if output.densities is not None:
            densities_all = output.densities.split(per_image)
        elif self.densities_from_rpn and proposal_densities is not None:
            densities_all = proposal_densities
        else:
            densities_all = [None] * len(per_image)
        detections = []
        for image, (boxes, scores, densities, size) in enumerate(zip(
            boxes_all.split(per_image), scores_all.split(per_image), densities_all, image_sizes
        )):
            boxes, scores, labels, densities = self.candidates(boxes, scores, densities, size)
            if density_at is not None:
                densities = density_at(image, boxes)
            detections.append(suppress(self.postprocess, self.detections_per_image, boxes, scores, labels, densities))
        return detections

    def candidates(self, boxes: Tensor, scores: Tensor, densities: Tensor | None, size
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """One image's (RoI, class) candidates for the suppressor, from its decoded boxes (R, K, 4)
        and softmax scores (R, K): clipped to ``size`` (None: clipped already, as the exported
        graph clips them), background dropped, above the score threshold, not tiny. Labels are
        dataset labels (0..K-2); each keeps its RoI's density."""
        num_classes = scores.shape[-1]
        if size is not None:
            boxes = clip_boxes_to_image(boxes, size)
        labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)
        # drop the background column, then one row per (RoI, class)
        boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
        if densities is not None:
            densities = densities[:, None].expand(-1, num_classes - 1).reshape(-1)
        keep = torch.where(scores > self.score_threshold)[0]
        keep = keep[remove_small_boxes(boxes[keep], self.min_size)]
        densities = densities[keep] if densities is not None else None
        return boxes[keep], scores[keep], labels[keep] - 1, densities  # - 1: the predictor's class 0 is the background
