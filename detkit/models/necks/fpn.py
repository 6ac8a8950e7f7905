"""Feature Pyramid Network (Lin et al., CVPR 2017), on any backbone's declared levels.

Top-down: each level's 1x1 lateral conv plus the nearest-upsampled level above, then a 3x3
conv; optional extra levels above the last: "pool" (P6 as a stride-2 subsample of the last
output, Faster R-CNN's RPN) or "p6p7" (P6, P7 by stride-2 3x3 convs, RetinaNet). The
arithmetic is torchvision's FeaturePyramidNetwork, so its weights load and give the same maps.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.backbones.base import FeatureExtractor, ShapeSpec, checked_layer_norm, layer_norm, level_name




def _conv(in_channels: int, out_channels: int, kernel: int, norm: bool | str, stride: int = 1) -> nn.Module:
    """conv (+ BatchNorm when ``norm`` is true or "bn", GroupNorm when "gn"; the conv then has
    no bias), as torchvision's Conv2dNormActivation."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=not norm)
    if not norm:
        return nn.Sequential(conv)
    return nn.Sequential(conv, layer_norm(norm, out_channels))


class FPN(FeatureExtractor):
    """Args:
        in_shapes: the backbone's ``out_shapes``.
        in_levels: which backbone levels to use (default: all), in increasing stride.
        out_channels: channels of every output level.
        extra: None, "pool" or "p6p7" (see the module docstring).
        extra_from: "output" (P6 from the last output, torchvision's choice when the channels
            match) or "input" (from the last backbone level, the RetinaNet paper's C5).
        norm: BatchNorm after each conv (true or "bn": torchvision's fasterrcnn_resnet50_fpn_v2),
            GroupNorm ("gn": He et al.'s from-scratch recipe), or none (false).

    Outputs P<k> for each input level C<k>, then P<k+1>, P<k+2> for the extra levels.
    """

    def __init__(
        self,
        in_shapes: "OrderedDict[str, ShapeSpec]",
        in_levels: Sequence[str] | None = None,
        out_channels: int = 256,
        extra: str | None = "pool",
        extra_from: str = "output",
        norm: bool | str = False,
    ):
        super().__init__()
        checked_layer_norm(norm, "fpn norm")
        self.in_levels = list(in_levels or in_shapes)
        missing = [lvl for lvl in self.in_levels if lvl not in in_shapes]
        if missing:
            raise ValueError(f"fpn in_levels {missing} are not backbone outputs ({', '.join(in_shapes)})")
        if extra not in (None, "pool", "p6p7"):
            raise ValueError(f"fpn extra must be null, 'pool' or 'p6p7', got {extra!r}")
        if extra_from not in ("output", "input"):
            raise ValueError(f"fpn extra_from must be 'output' or 'input', got {extra_from!r}")
        shapes = [in_shapes[lvl] for lvl in self.in_levels]
        self.lateral = nn.ModuleList(_conv(s.channels, out_channels, 1, norm) for s in shapes)
        self.output = nn.ModuleList(_conv(out_channels, out_channels, 3, norm) for _ in shapes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        self.extra = extra
        self.extra_from_input = extra_from == "input"
        if extra == "p6p7":
            source = shapes[-1].channels if self.extra_from_input else out_channels
            self.p6 = nn.Conv2d(source, out_channels, 3, 2, 1)
            self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
            for conv in (self.p6, self.p7):
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.constant_(conv.bias, 0)
        strides = [s.stride for s in shapes]
        strides += [strides[-1] * 2] * (extra == "pool") + [strides[-1] * 2, strides[-1] * 4] * (extra == "p6p7")
        self.out_shapes = OrderedDict((level_name("P", s), ShapeSpec(out_channels, s)) for s in strides)

    def forward(self, features: "OrderedDict[str, Tensor]") -> "OrderedDict[str, Tensor]":
        inputs = [features[lvl] for lvl in self.in_levels]
        top = self.lateral[-1](inputs[-1])
        outputs = [self.output[-1](top)]
        for i in range(len(inputs) - 2, -1, -1):
            lateral = self.lateral[i](inputs[i])
            top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.output[i](top))
        if self.extra == "pool":
            outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2, padding=0))
        elif self.extra == "p6p7":
            p6 = self.p6(inputs[-1] if self.extra_from_input else outputs[-1])
            outputs += [p6, self.p7(F.relu(p6))]
        return OrderedDict(zip(self.out_shapes, outputs))
