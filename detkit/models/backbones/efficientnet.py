"""EfficientNet-B0..B7 backbones from torchvision (Tan & Le, ICML 2019), emitting C1..C5.

Each level is the output of the last torchvision stage (``features[i]``) of its stride:
C1 = features[1], C2 = features[2], C3 = features[3], C4 = features[5], C5 = features[7].
The final 1x1 conv (features[8], 1280 channels on b0) belongs to the classifier and is never
kept; C3..C5 are the maps EfficientDet's BiFPN reads as P3..P5.

Channels per level (strides 2, 4, 8, 16, 32), as ``out_shapes`` computes them from the built
model, with the width/depth multipliers torchvision scales B0's stage table by (channels
rounded to multiples of 8) and the parameters of features[0..7]:

    variant  width  depth    C1  C2  C3  C4   C5    params up to C5
    b0       1.0    1.0      16  24  40  112  320    3.60M
    b1       1.0    1.1      16  24  40  112  320    6.10M
    b2       1.1    1.2      16  24  48  120  352    7.20M
    b3       1.2    1.4      24  32  48  136  384   10.10M
    b4       1.4    1.8      24  32  56  160  448   16.74M
    b5       1.6    2.2      24  40  64  176  512   27.29M
    b6       1.8    2.6      32  40  72  200  576   39.40M
    b7       2.0    3.1      32  48  80  224  640   62.14M

Compound scaling also raises the input resolution per variant (EfficientDet: 512 for D0 ...
1536 for D7); that is the detector's business, the backbone is convolutional at any size.
In training mode the blocks keep torchvision's stochastic depth (drop probability rising
linearly to 0.2 over the blocks, as EfficientDet's backbones use).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from detkit.models.backbones.base import (
    FeatureExtractor,
    FrozenModules,
    ShapeSpec,
    group_norm,
    level_name,
    load_pretrained,
    no_pretrained_group_norm,
    norm_layer,
)

EFFICIENTNETS = {  # variant: (torchvision builder, weights enum)
    "b0": (torchvision.models.efficientnet_b0, torchvision.models.EfficientNet_B0_Weights),
    "b1": (torchvision.models.efficientnet_b1, torchvision.models.EfficientNet_B1_Weights),
    "b2": (torchvision.models.efficientnet_b2, torchvision.models.EfficientNet_B2_Weights),
    "b3": (torchvision.models.efficientnet_b3, torchvision.models.EfficientNet_B3_Weights),
    "b4": (torchvision.models.efficientnet_b4, torchvision.models.EfficientNet_B4_Weights),
    "b5": (torchvision.models.efficientnet_b5, torchvision.models.EfficientNet_B5_Weights),
    "b6": (torchvision.models.efficientnet_b6, torchvision.models.EfficientNet_B6_Weights),
    "b7": (torchvision.models.efficientnet_b7, torchvision.models.EfficientNet_B7_Weights),
}
NUM_STAGES = 8  # features[0] (stem) .. features[7]; features[8] is the classifier's 1x1 conv


class EfficientNet(FrozenModules, FeatureExtractor):
    """A torchvision EfficientNet without its classifier head, returning the requested levels.

    Args:
        variant: "b0" .. "b7".
        out_levels: which of "C1".."C5" to return; stages after the last one are not kept
            (a C4 detector's backbone ends at features[5]).
        frozen_stages: parts kept fixed, counted by level as in resnet.py: -1 none; 0 the stem
            (features[0]); k >= 1 the stem and every stage up to level C<k+1> (1: up to C2,
            features[2]; 2: up to C3, features[3]; 4: the whole backbone). Stages that are not
            kept (see out_levels) need no freezing.
        norm: "bn" (torchvision's BatchNorm: eps 1e-5, momentum 0.1 on b0..b4; eps 1e-3,
            momentum 0.01 on b5..b7) or "frozen_bn" (each BatchNorm replaced, after the weights
            are loaded, by a FrozenBatchNorm2d with its statistics, affine and eps; torchvision's
            b5..b7 builders fix their own norm_layer, so it cannot be passed to them), or "gn"
            (each BatchNorm replaced by a GroupNorm of 32 groups, or the largest divisor of its
            channels below 32; from scratch only).
        weights: None (random), a torchvision enum name ("DEFAULT", "IMAGENET1K_V1") or a local
            .pth file of torchvision's classification model.

    Submodules: ``stem`` is torchvision's features[0] and ``stage<i>`` its features[i], so a
    torchvision state dict maps over by renaming "features.0." to "stem." and "features.<i>."
    to "stage<i>." (the weights argument takes torchvision's files as they are).
    """

    def __init__(
        self,
        variant: str = "b0",
        out_levels: Sequence[str] = ("C3", "C4", "C5"),
        frozen_stages: int = 0,
        norm: str = "bn",
        weights: str | None = None,
    ):
        super().__init__()
        if variant not in EFFICIENTNETS:
            raise ValueError(f"efficientnet variant must be one of {', '.join(EFFICIENTNETS)}, got {variant!r}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        frozen_norm = norm_layer(norm) is FrozenBatchNorm2d  # norm_layer rejects unknown names
        no_pretrained_group_norm(norm, weights, f"efficientnet_{variant}")
        builder, enum_class = EFFICIENTNETS[variant]
        net = builder(weights=None)
        if weights is not None:
            net.load_state_dict(load_pretrained(weights, enum_class, what=f"efficientnet_{variant}"))
        stages = list(net.features[:NUM_STAGES])
        stride, ends = 1, {}  # level name -> (index of the last stage of that stride, stride)
        for i, stage in enumerate(stages):
            stride *= math.prod(m.stride[0] for m in stage.modules() if isinstance(m, nn.Conv2d))
            ends[level_name("C", stride)] = (i, stride)
        unknown = [lvl for lvl in out_levels if lvl not in ends]
        if unknown or not out_levels:
            raise ValueError(f"efficientnet out_levels must be among {', '.join(ends)}, got {list(out_levels)}")

        levels = sorted(set(out_levels), key=ends.get)
        self.last = ends[levels[-1]][0]
        self.stage_names = ["stem", *(f"stage{i}" for i in range(1, self.last + 1))]
        for name, stage in zip(self.stage_names, stages):
            if frozen_norm:
                stage = _replace_batchnorm(stage, _frozen)
            elif norm == "gn":
                stage = _replace_batchnorm(stage, lambda bn: group_norm(bn.num_features))
            setattr(self, name, stage)
        self.taps = {ends[lvl][0]: lvl for lvl in levels}  # stage index -> the level it emits
        # a level ends on an MBConv stack (stage 1 ends C1, not the stem), which knows its out_channels
        self.out_shapes = OrderedDict(
            (lvl, ShapeSpec(stages[ends[lvl][0]][-1].out_channels, ends[lvl][1])) for lvl in levels
        )
        if frozen_stages >= 0:
            frozen_up_to = 0 if frozen_stages == 0 else ends[f"C{frozen_stages + 1}"][0]
            self.freeze(*self.stage_names[: frozen_up_to + 1])  # only the kept stages

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        out = OrderedDict()
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.taps:
                out[self.taps[i]] = x
        return out


def _replace_batchnorm(module: nn.Module, replacement) -> nn.Module:
    """``module`` with each BatchNorm2d (in place, recursively) replaced by ``replacement(bn)``."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, replacement(child))
        else:
            _replace_batchnorm(child, replacement)
    return module


@torch.no_grad()
def _frozen(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    """A FrozenBatchNorm2d holding ``bn``'s running statistics, affine parameters and eps."""
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    for key in ("weight", "bias", "running_mean", "running_var"):
        getattr(frozen, key).copy_(getattr(bn, key))
    return frozen
