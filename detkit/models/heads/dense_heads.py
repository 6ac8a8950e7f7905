"""Heads of one-stage dense detectors: per anchor of every level, class logits and box offsets.

Shorthand: N images; A anchors per cell; K classes (sigmoid outputs, no background); H, W a
level's size; T all anchors of an image.

``RetinaHead`` (Lin et al., ICCV 2017): a classification subnet and a box subnet, each four
3x3 convs with ReLU (optionally GroupNorm) and a 3x3 output conv, shared across levels. The
classification output's bias starts at -log((1 - pi) / pi), pi = 0.01, so every anchor first
predicts background with probability 0.99 and the focal loss is not swamped by the easy
negatives at the start. ``EfficientDetHead`` (Tan et al., CVPR 2020): the same two subnets of
depthwise-separable convs with swish, weights shared across levels but a BatchNorm per level.
Both can add a density subnet (A outputs) for Adaptive-NMS: RetinaHead the paper's
(``DensitySubnet``: the features reduced, concatenated with the class logits and offsets, a
5x5 conv), EfficientDetHead a third subnet of its own kind.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from detkit.models.anchors import flatten_anchors
from detkit.models.backbones.base import layer_norm
from detkit.models.heads.density_head import DensitySubnet

PRIOR_PROBABILITY = 0.01  # Lin et al.: the initial foreground probability of every anchor


def prior_bias(probability: float = PRIOR_PROBABILITY) -> float:
    return -math.log((1 - probability) / probability)


class RetinaSubnet(nn.Module):
    """Four 3x3 convs (+ GroupNorm(32) when ``norm``) with ReLU, then a 3x3 conv to ``outputs`` channels."""

    def __init__(self, channels: int, outputs: int, depth: int = 4, norm: bool = False, bias: float = 0.0):
        super().__init__()
        self.conv = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(channels, channels, 3, padding=1, bias=not norm),
                    *([nn.GroupNorm(32, channels)] if norm else []),
                    nn.ReLU(inplace=True),
                )
                for _ in range(depth)
            )
        )
        self.out = nn.Conv2d(channels, outputs, 3, padding=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.constant_(layer.bias, 0)
        nn.init.constant_(self.out.bias, bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.conv(x))


class RetinaHead(nn.Module):
    """Args:
        channels: input channels of every level.
        num_anchors: A.
        num_classes: K.
        depth: convs per subnet (4).
        norm: GroupNorm in the subnets (torchvision's retinanet_resnet50_fpn_v2).
        density: add Adaptive-NMS's density subnet (``DensitySubnet`` on the class logits and
            offsets): true, or its arguments (``{channels: 128, bins: 10}``).
    """

    def __init__(self, channels: int, num_anchors: int, num_classes: int, depth: int = 4, norm: bool = False,
                 density: bool | dict = False):
        super().__init__()
        self.num_classes = num_classes
        self.classification = RetinaSubnet(channels, num_anchors * num_classes, depth, norm, prior_bias())
        self.regression = RetinaSubnet(channels, num_anchors * 4, depth, norm)
        self.density = None
        if density:
            options = {} if density is True else dict(density)
            self.density = DensitySubnet(channels, num_anchors, scores_per_anchor=num_classes, **options)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        """Per anchor of all levels: "logits" (N, T, K), "deltas" (N, T, 4), ("densities" (N, T))."""
        logits = [self.classification(f) for f in features]
        deltas = [self.regression(f) for f in features]
        out = {
            "logits": torch.cat([flatten_anchors(x, self.num_classes) for x in logits], 1),
            "deltas": torch.cat([flatten_anchors(x, 4) for x in deltas], 1),
        }
        if self.density is not None:
            out["densities"], density_logits = self.density.flatten(self.density(features, logits, deltas))
            if density_logits is not None:  # a binned subnet: (N, T, B + 1), what its loss needs
                out["density_logits"] = density_logits
        return out


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 then pointwise 1x1 (EfficientDet's building block)."""

    def __init__(self, channels: int, outputs: int, bias: bool = True):
        super().__init__(nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                         nn.Conv2d(channels, outputs, 1, bias=bias))


class EfficientDetSubnet(nn.Module):
    """``depth`` separable convs shared across levels, each followed by a per-level BatchNorm
    (EfficientDet's eps 1e-3, momentum 0.01) or GroupNorm (``norm`` "gn") and swish, then a
    separable output conv."""

    def __init__(self, channels: int, outputs: int, depth: int, levels: int, bias: float = 0.0,
                 norm: str = "bn"):
        super().__init__()
        self.convs = nn.ModuleList(SeparableConv(channels, channels, bias=False) for _ in range(depth))
        self.norms = nn.ModuleList(
            nn.ModuleList(layer_norm(norm, channels, eps=1e-3, momentum=0.01) for _ in range(depth))
            for _ in range(levels)
        )
        self.out = SeparableConv(channels, outputs)
        nn.init.constant_(self.out[1].bias, bias)

    def forward(self, x: Tensor, level: int) -> Tensor:
        for conv, norm in zip(self.convs, self.norms[level]):
            x = nn.functional.silu(norm(conv(x)))
        return self.out(x)


class EfficientDetHead(nn.Module):
    """Args:
        channels: the BiFPN width; num_anchors: A; num_classes: K; depth: convs per subnet
        (3 for D0..D2, 4 for D3..D5, 5 for D6..D7); levels: pyramid levels (5);
        density: add the Adaptive-NMS density subnet;
        norm: "bn" (EfficientDet's per-level BatchNorm) or "gn" (GroupNorm, for training from scratch).
    """

    def __init__(self, channels: int, num_anchors: int, num_classes: int, depth: int = 3, levels: int = 5,
                 density: bool = False, norm: str = "bn"):
        super().__init__()
        if norm not in ("bn", "gn"):
            raise ValueError(f"efficientdet head norm must be 'bn' or 'gn', got {norm!r}")
        self.num_classes = num_classes
        self.classification = EfficientDetSubnet(channels, num_anchors * num_classes, depth, levels, prior_bias(),
                                                 norm)
        self.regression = EfficientDetSubnet(channels, num_anchors * 4, depth, levels, norm=norm)
        self.density = EfficientDetSubnet(channels, num_anchors, depth, levels, norm=norm) if density else None

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        out = {
            "logits": torch.cat([flatten_anchors(self.classification(f, i), self.num_classes)
                                 for i, f in enumerate(features)], 1),
            "deltas": torch.cat([flatten_anchors(self.regression(f, i), 4) for i, f in enumerate(features)], 1),
        }
        if self.density is not None:
            out["densities"] = torch.cat([flatten_anchors(torch.sigmoid(self.density(f, i)), 1)
                                          for i, f in enumerate(features)], 1).squeeze(2)
        return out
