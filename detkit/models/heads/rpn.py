"""Region Proposal Network (Ren et al., NeurIPS 2015): objectness and box offsets per anchor.

Shorthand: N images; L levels; A anchors per cell; H, W a level's feature size; T the anchors
of all levels of an image (sum of H * W * A).

The head slides a 3x3 conv over each level, then a 1x1 conv with A outputs (objectness
logits) and a 1x1 conv with 4A outputs (box offsets): Ren et al.'s A = 9 anchors (3 sizes
x 3 aspect ratios) give 9 and 36 channels. ``RPN`` decodes the offsets against the anchors
into proposals, keeps the ``pre_nms_top_n`` best of each level, clips them to the image,
drops tiny ones and suppresses duplicates per level with the configured suppressor (NMS at
0.7 by default), keeping ``post_nms_top_n``. With a ``DensitySubnet`` (Adaptive-NMS, Liu et
al.) it also predicts a crowd density per anchor, and each proposal carries its anchor's.
Its training targets and losses are computed by the detector's criterion
(``detectors/faster_rcnn.py``), not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from detkit.models.anchors import AnchorGenerator
from detkit.models.backbones.base import checked_layer_norm, layer_norm
from detkit.models.coders import BoxCoder
from detkit.models.heads.density_head import DensitySubnet
from detkit.models.postprocess import checked_postprocess
from detkit.models.transform import ImageBatch
from detkit.ops import Suppressor, box_iou, clip_boxes_to_image, remove_small_boxes


class RPNHead(nn.Module):
    """Args:
        in_channels: channels of every input level.
        num_anchors: A, anchors per cell.
        depth: 3x3 convs before the two 1x1 convs (torchvision's v2 model uses 2).
        norm: BatchNorm after each 3x3 conv (true or "bn"), GroupNorm ("gn"), or none (false).
    """

    def __init__(self, in_channels: int, num_anchors: int, depth: int = 1, norm: bool | str = False):
        super().__init__()
        checked_layer_norm(norm, "rpn head_norm")
        self.conv = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=not norm),
                    *([layer_norm(norm, in_channels)] if norm else []),
                    nn.ReLU(inplace=True),
                )
                for _ in range(depth)
            )
        )
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.constant_(layer.bias, 0)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: objectness logits (Tensor[N, A, H, W]) and offsets (Tensor[N, 4A, H, W])."""
        logits, deltas = [], []
        for feature in features:
            t = self.conv(feature)
            logits.append(self.objectness(t))
            deltas.append(self.deltas(t))
        return logits, deltas


@dataclass
class RPNOutput:
    """proposals: per image, Tensor[P, 4] xyxy in the resized image (detached).
    scores: per image, Tensor[P], their objectness probabilities.
    objectness (Tensor[N, T]): logits of every anchor; deltas (Tensor[N, T, 4]): their offsets.
    anchors (Tensor[T, 4]): the anchors (the same for every image of the batch).
    anchor_index: per image, Tensor[P]: the anchor (row of ``anchors``) each proposal came from.
    densities (Tensor[N, T] or None): every anchor's predicted crowd density (density subnet).
    density_logits (Tensor[N, T, B + 1] or None): with a binned density subnet, its logits.
    """

    proposals: list[Tensor]
    scores: list[Tensor]
    objectness: Tensor
    deltas: Tensor
    anchors: Tensor
    anchor_index: list[Tensor]
    densities: Tensor | None = None
    density_logits: Tensor | None = None

    def proposal_densities(self) -> list[Tensor] | None:
        """Per image, each proposal's density: its anchor's (None without a density subnet)."""
        if self.densities is None:
            return None
        return [d.detach()[index] for d, index in zip(self.densities, self.anchor_index)]

    def density_at_boxes(self, image: int, boxes: Tensor) -> Tensor:
        """Tensor[D]: for each box (xyxy in the resized image) of image ``image``, the predicted
        density of the anchor it overlaps most (the anchor its object would be matched to)."""
        if len(boxes) == 0:
            return boxes.new_zeros(0)
        best = torch.cat([box_iou(chunk, self.anchors).argmax(dim=1) for chunk in boxes.split(256)])  # bounded memory
        return self.densities[image].detach()[best]


def flatten_levels(logits: list[Tensor], deltas: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-level maps to per-anchor rows, in the anchors' order (cell-major, then anchor).

    Returns: objectness (Tensor[N, T]) and deltas (Tensor[N, T, 4])."""
    flat_logits, flat_deltas = [], []
    for logit, delta in zip(logits, deltas):
        n, a, h, w = logit.shape
        flat_logits.append(logit.permute(0, 2, 3, 1).reshape(n, -1))  # (N, A, H, W) -> (N, H*W*A)
        flat_deltas.append(delta.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))  # -> (N, H*W*A, 4)
    return torch.cat(flat_logits, dim=1), torch.cat(flat_deltas, dim=1)


class RPN(nn.Module):
    """Args:
        anchors: the anchor generator (one entry of sizes per input level).
        head: the ``RPNHead``.
        in_levels: the feature levels it runs on (e.g. P2..P6, or C4 alone).
        pre_nms_top_n: (train, test) proposals kept per level before suppression.
        post_nms_top_n: (train, test) proposals kept per image after it.
        postprocess: the suppressor of the proposals, applied per level (``detkit.ops.Suppressor``;
            NMS at 0.7 if None, as Ren et al.).
        score_threshold: minimum objectness probability of a proposal.
        min_size: proposals narrower or shorter than this (pixels) are dropped.
        density: a ``DensitySubnet`` predicting each anchor's crowd density (None: off).
    """

    def __init__(
        self,
        anchors: AnchorGenerator,
        head: RPNHead,
        in_levels: Sequence[str],
        pre_nms_top_n: Sequence[int] = (2000, 1000),
        post_nms_top_n: Sequence[int] = (2000, 1000),
        postprocess: Suppressor | None = None,
        score_threshold: float = 0.0,
        min_size: float = 1e-3,
        density: DensitySubnet | None = None,
    ):
        super().__init__()
        self.anchors = anchors
        self.head = head
        self.density = density
        self.in_levels = list(in_levels)
        if len(self.in_levels) != len(anchors.sizes):
            raise ValueError(f"rpn: {len(self.in_levels)} in_levels but anchor sizes for {len(anchors.sizes)}")
        self.pre_nms_top_n = tuple(pre_nms_top_n)
        self.post_nms_top_n = tuple(post_nms_top_n)
        default = Suppressor("nms", {"iou_threshold": 0.7})  # Ren et al.'s
        self.postprocess = checked_postprocess(postprocess or default, densities=False, detector="RPN")
        self.score_threshold = score_threshold
        self.min_size = min_size
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))

    def forward(self, batch: ImageBatch, features: Mapping[str, Tensor]) -> RPNOutput:
        maps = [features[lvl] for lvl in self.in_levels]
        logits, deltas = self.head(maps)
        densities = density_logits = None
        if self.density is not None:
            densities, density_logits = self.density.flatten(self.density(maps, logits, deltas))
        per_level = [int(lg[0].numel()) for lg in logits]  # H * W * A of each level
        anchors = torch.cat(
            self.anchors(batch.tensors.shape[-2:], [m.shape[-2:] for m in maps], maps[0].dtype, maps[0].device)
        )
        objectness, deltas = flatten_levels(logits, deltas)
        n = objectness.shape[0]
        proposals = self.coder.decode(deltas.detach().reshape(-1, 4), anchors.repeat(n, 1)).view(n, -1, 4)
        boxes, scores, anchor_index = self.select(proposals, objectness.detach(), per_level, batch.image_sizes)
        return RPNOutput(boxes, scores, objectness, deltas, anchors, anchor_index, densities, density_logits)

    def select(self, proposals: Tensor, objectness: Tensor, per_level: list[int], image_sizes
               ) -> tuple[list, list, list]:
        """The best proposals of each image: top-k per level, clip, drop tiny, suppress per level.
        Returns per image their boxes, objectness probabilities and anchors (rows of T)."""
        stage = 0 if self.training else 1
        top_n, post_n = self.pre_nms_top_n[stage], self.post_nms_top_n[stage]
        levels = torch.cat([torch.full((k,), i, dtype=torch.int64, device=proposals.device)
                            for i, k in enumerate(per_level)])
        chosen, start = [], 0
        for level_logits in objectness.split(per_level, dim=1):
            k = min(top_n, level_logits.shape[1])
            chosen.append(level_logits.topk(k, dim=1).indices + start)
            start += level_logits.shape[1]
        chosen = torch.cat(chosen, dim=1)  # (N, K)
        rows = torch.arange(objectness.shape[0], device=objectness.device)[:, None]
        probabilities = torch.sigmoid(objectness[rows, chosen])
        boxes_out, scores_out, index_out = [], [], []
        for boxes, scores, lvl, index, size in zip(proposals[rows, chosen], probabilities, levels[chosen], chosen,
                                                   image_sizes):
            boxes = clip_boxes_to_image(boxes, size)
            keep = remove_small_boxes(boxes, self.min_size)
            keep = keep[scores[keep] >= self.score_threshold]
            boxes, scores, lvl, index = boxes[keep], scores[keep], lvl[keep], index[keep]
            keep, scores = self.postprocess(boxes, scores, lvl)
            boxes_out.append(boxes[keep[:post_n]])
            scores_out.append(scores[:post_n])
            index_out.append(index[keep[:post_n]])
        return boxes_out, scores_out, index_out
