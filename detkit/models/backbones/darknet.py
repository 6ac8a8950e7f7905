"""Darknet-53 (Redmon & Farhadi, YOLOv3, 2018): 53 convolutions, residual blocks of a 1x1 and a
3x3 conv, each conv followed by BatchNorm and LeakyReLU(0.1), downsampling by stride-2 3x3 convs.

    stem 3x3/32 -> [3x3/2, 1 block] 64 -> [3x3/2, 2 blocks] 128 (C2) -> [3x3/2, 8 blocks] 256 (C3)
    -> [3x3/2, 8 blocks] 512 (C4) -> [3x3/2, 4 blocks] 1024 (C5)

torchvision has no Darknet, so there are no torchvision weights for it; ``weights`` takes a
local .pth file with this module's names.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import Tensor, nn

from detkit.models.backbones.base import FeatureExtractor, ShapeSpec
from detkit.checkpoints import load_weights

STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))  # (channels, residual blocks), C1..C5


def conv_bn_leaky(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.1, inplace=True))


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.reduce = conv_bn_leaky(channels, channels // 2, 1)
        self.expand = conv_bn_leaky(channels // 2, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.expand(self.reduce(x))


class Darknet53(FeatureExtractor):
    """Args:
        out_levels: which of "C3", "C4", "C5" to return (YOLOv3 reads all three).
        weights: None (random) or a local .pth state dict of this module.
    """

    def __init__(self, out_levels: Sequence[str] = ("C3", "C4", "C5"), weights: str | None = None):
        super().__init__()
        known = {f"C{k + 1}": k for k in range(len(STAGES))}
        unknown = [lvl for lvl in out_levels if lvl not in known or known[lvl] < 2]
        if unknown or not out_levels:
            raise ValueError(f"darknet53 out_levels must be among C3, C4, C5, got {list(out_levels)}")
        self.stem = conv_bn_leaky(3, 32, 3)
        channels, stages = 32, []
        for out_channels, blocks in STAGES:
            stages.append(nn.Sequential(conv_bn_leaky(channels, out_channels, 3, stride=2),
                                        *(Residual(out_channels) for _ in range(blocks))))
            channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.out_shapes = OrderedDict((lvl, ShapeSpec(STAGES[known[lvl]][0], 2 ** (known[lvl] + 1)))
                                      for lvl in sorted(out_levels))
        if weights is not None:
            self.load_state_dict(load_weights(weights, "darknet53"))

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.stem(x)
        out = OrderedDict()
        for k, stage in enumerate(self.stages):
            x = stage(x)
            if f"C{k + 1}" in self.out_shapes:
                out[f"C{k + 1}"] = x
        return out
