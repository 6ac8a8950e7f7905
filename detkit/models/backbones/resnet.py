"""ResNet-18/34/50/101 backbones from torchvision, emitting C2..C5."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torchvision
from torch import Tensor

from detkit.models.backbones.base import (FeatureExtractor, FrozenModules, ShapeSpec, load_pretrained, no_pretrained_group_norm,
                                         norm_layer)

RESNETS = {  # depth: (torchvision builder, weights enum, channels of C2..C5)
    18: (torchvision.models.resnet18, torchvision.models.ResNet18_Weights, (64, 128, 256, 512)),
    34: (torchvision.models.resnet34, torchvision.models.ResNet34_Weights, (64, 128, 256, 512)),
    50: (torchvision.models.resnet50, torchvision.models.ResNet50_Weights, (256, 512, 1024, 2048)),
    101: (torchvision.models.resnet101, torchvision.models.ResNet101_Weights, (256, 512, 1024, 2048)),
}
STAGES = ("layer1", "layer2", "layer3", "layer4")  # C2, C3, C4, C5


class ResNet(FrozenModules, FeatureExtractor):
    """A torchvision ResNet without its classifier, returning the requested stages.

    Args:
        depth: 18, 34, 50 or 101.
        out_levels: which of "C2".."C5" to return; stages after the last one are not built
            (a C4 detector's backbone ends at layer3).
        frozen_stages: stages kept fixed, counting the stem as 0 (-1: none; 1: stem and
            C2, torchvision's default of 3 trainable layers).
        norm: "frozen_bn", "bn" or "gn" (GroupNorm, from scratch only).
        weights: None (random), a torchvision enum name ("DEFAULT", "IMAGENET1K_V1", ...) or
            a local .pth file of the classification model.

    Submodules keep torchvision's names (conv1, bn1, layer1..layer4), so its state dicts load.
    """

    def __init__(
        self,
        depth: int = 50,
        out_levels: Sequence[str] = ("C2", "C3", "C4", "C5"),
        frozen_stages: int = 1,
        norm: str = "frozen_bn",
        weights: str | None = None,
    ):
        super().__init__()
        if depth not in RESNETS:
            raise ValueError(f"resnet depth must be one of {sorted(RESNETS)}, got {depth!r}")
        builder, enum_class, channels = RESNETS[depth]
        levels = {f"C{k + 2}": k for k in range(4)}
        unknown = [lvl for lvl in out_levels if lvl not in levels]
        if unknown or not out_levels:
            raise ValueError(f"resnet out_levels must be among C2, C3, C4, C5, got {list(out_levels)}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        no_pretrained_group_norm(norm, weights, f"resnet{depth}")
        net = builder(weights=None, norm_layer=norm_layer(norm))
        if weights is not None:
            net.load_state_dict(load_pretrained(weights, enum_class, what=f"resnet{depth}"))
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.last = max(levels[lvl] for lvl in out_levels)
        for k in range(self.last + 1):
            setattr(self, STAGES[k], getattr(net, STAGES[k]))
        self.out_levels = list(out_levels)
        self.out_shapes = OrderedDict(
            (lvl, ShapeSpec(channels[levels[lvl]], 4 * 2 ** levels[lvl])) for lvl in sorted(out_levels)
        )
        for k in range(min(frozen_stages, self.last + 1) + 1):  # stages not built need no freezing
            self.freeze(*(["conv1", "bn1"] if k == 0 else [STAGES[k - 1]]))

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = OrderedDict()
        for k in range(self.last + 1):
            x = getattr(self, STAGES[k])(x)
            if f"C{k + 2}" in self.out_shapes:
                out[f"C{k + 2}"] = x
        return out
