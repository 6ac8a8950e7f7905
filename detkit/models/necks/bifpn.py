"""BiFPN, EfficientDet's bidirectional feature pyramid (Tan, Pang, Le, CVPR 2020), on any
backbone's declared levels.

Shorthand: P<k>_in is a level entering a BiFPN layer, P<k>_td its top-down node, P<k>_out the
layer's output; the default ``levels=5`` gives P3..P7 on a backbone's C3..C5.

Before the first layer:
  - each backbone level whose channels differ from ``width`` gets a 1x1 conv + BN, once. (The
    official implementation resamples a backbone level separately for each first-layer node
    that reads it, so its first layer has two more 1x1 convs, for P4 and P5.)
  - the levels above the backbone's are made as in EfficientDet: P6 = down(1x1 conv + BN of
    the last backbone level), P7 = down(P6), with no conv when the channels already match.
Each of the ``repeats`` layers (weights not shared):
  top-down   P<k>_td  = node(P<k>_in, up(P<k+1>_td))                      (P7_td = P7_in)
  bottom-up  P<k>_out = node(P<k>_in, P<k>_td, down(P<k-1>_out))           (P3_out = P3_td)
             P7_out   = node(P7_in, down(P6_out))
where node(x_1..x_n) = BN(pointwise 1x1(depthwise 3x3(SiLU(fusion(x_1..x_n))))),
up = nearest resize to the target's size, down = max pool 3x3 / stride 2 / padding 1, resized
to the target in the rare case odd sizes leave it one off. With the usual backbones (stride-2
convs with padding k // 2) each level is ceil(size / 2) of the one below, which down gives
exactly (EfficientDet's TF "SAME" pooling gives the same sizes, offset by one pixel).

Fusion (``attention``): "fast", the paper's fast normalised fusion, w_i = relu(param_i) and
sum_i w_i x_i / (sum_i w_i + 1e-4); "softmax", w = softmax(param); "sum", an unweighted sum
(the FPN-style ablation; the official D6/D7 configs also use it, "for stability").
BatchNorms use EfficientDet's eps 1e-3 and momentum 0.01 (TF decay 0.99).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.backbones.base import FeatureExtractor, ShapeSpec, checked_layer_norm, layer_norm, level_name

ATTENTIONS = ("fast", "softmax", "sum")


def _norm(norm: bool | str, channels: int) -> nn.Module:
    """GroupNorm ("gn") or EfficientDet's BatchNorm (eps 1e-3, momentum 0.01: TF's decay 0.99)."""
    return layer_norm(norm, channels, eps=1e-3, momentum=0.01)


def _upsample(x: Tensor, size: torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="nearest")


def _downsample(x: Tensor, size: torch.Size | None = None) -> Tensor:
    """Max pool 3x3, stride 2, padding 1: (H, W) -> (ceil(H/2), ceil(W/2)), then resized to
    ``size`` if given and different (a level made by floor-halving)."""
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    if size is not None and x.shape[-2:] != size:
        x = F.interpolate(x, size=size, mode="nearest")
    return x


class Fusion(nn.Module):
    """Fuses ``n_inputs`` maps of one shape into one (see the module docstring for ``attention``).

    The learned weights (``weight``, one per input, initialised to 1) exist for "fast" and
    "softmax" only.
    """

    def __init__(self, n_inputs: int, attention: str = "fast", eps: float = 1e-4):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"bifpn attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        self.n_inputs, self.attention, self.eps = n_inputs, attention, eps
        if attention != "sum":
            self.weight = nn.Parameter(torch.ones(n_inputs))

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        """xs: ``n_inputs`` tensors (N, C, H, W) -> their fusion (N, C, H, W)."""
        assert len(xs) == self.n_inputs, f"fusion of {self.n_inputs} maps got {len(xs)}"
        if self.attention == "sum":
            return sum(xs)
        if self.attention == "fast":
            w = F.relu(self.weight)
            w = w / (w.sum() + self.eps)
        else:
            w = self.weight.softmax(dim=0)
        return sum(w_i * x for w_i, x in zip(w, xs))


class FusionNode(nn.Module):
    """One BiFPN node: fuse its inputs, SiLU, depthwise-separable 3x3 conv (+ BN)."""

    def __init__(self, width: int, n_inputs: int, attention: str, norm: bool | str):
        super().__init__()
        self.fusion = Fusion(n_inputs, attention)
        self.conv = nn.Sequential(
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),  # depthwise
            nn.Conv2d(width, width, 1, bias=not norm),  # pointwise
            *([_norm(norm, width)] if norm else []),
        )

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        return self.conv(self.fusion(xs))


class BiFPNLayer(nn.Module):
    """One top-down + bottom-up pass over ``n_levels`` maps of ``width`` channels, finest first."""

    def __init__(self, width: int, n_levels: int, attention: str, norm: bool | str):
        super().__init__()
        # top_down[i]: P_td at level i (0 = finest), for all but the coarsest level;
        # bottom_up[i - 1]: P_out at level i, for all but the finest (P_out = P_td there).
        self.top_down = nn.ModuleList(FusionNode(width, 2, attention, norm) for _ in range(n_levels - 1))
        self.bottom_up = nn.ModuleList(
            FusionNode(width, 3 if i < n_levels - 1 else 2, attention, norm) for i in range(1, n_levels)
        )

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        td = [xs[-1]]
        for x, node in zip(reversed(xs[:-1]), reversed(self.top_down)):
            td.insert(0, node([x, _upsample(td[0], x.shape[-2:])]))
        out = [td[0]]
        for i, node in enumerate(self.bottom_up, start=1):
            same_level = [xs[i], td[i]] if i < len(xs) - 1 else [xs[i]]
            out.append(node([*same_level, _downsample(out[-1], xs[i].shape[-2:])]))
        return out


class BiFPN(FeatureExtractor):
    """Args:
        in_shapes: the backbone's ``out_shapes``.
        in_levels: which backbone levels to use (default: all), strides doubling level to level.
        width: channels of every BiFPN map (EfficientDet's fpn_num_filters).
        repeats: number of stacked BiFPN layers (fpn_cell_repeats).
        levels: number of output levels; those above the backbone's are made by pooling
            (default 5: P3..P7 on C3..C5).
        norm: BatchNorm after every conv (true or "bn"; the convs then have no bias), GroupNorm
            ("gn": He et al.'s from-scratch recipe), or none (false).
        attention: "fast", "softmax" or "sum" fusion.

    See ``detkit.models.detectors.efficientdet.EFFICIENTDET_SCALING`` for the arguments of D0..D7.
    Outputs P<k> for each input level C<k>, then the pooled levels, all of ``width`` channels.
    """

    def __init__(
        self,
        in_shapes: "OrderedDict[str, ShapeSpec]",
        in_levels: Sequence[str] | None = None,
        width: int = 64,
        repeats: int = 3,
        levels: int = 5,
        norm: bool | str = True,
        attention: str = "fast",
    ):
        super().__init__()
        checked_layer_norm(norm, "bifpn norm")
        self.in_levels = list(in_levels or in_shapes)
        missing = [lvl for lvl in self.in_levels if lvl not in in_shapes]
        if missing:
            raise ValueError(f"bifpn in_levels {missing} are not backbone outputs ({', '.join(in_shapes)})")
        shapes = [in_shapes[lvl] for lvl in self.in_levels]
        strides = [s.stride for s in shapes]
        if any(coarse != 2 * fine for fine, coarse in zip(strides, strides[1:])):
            raise ValueError(f"bifpn in_levels must double in stride level to level, got strides {strides}")
        if levels < max(2, len(shapes)):
            raise ValueError(f"bifpn levels must be at least 2 and the {len(shapes)} input levels, got {levels}")
        if repeats < 1:
            raise ValueError(f"bifpn repeats must be at least 1, got {repeats}")

        self.project = nn.ModuleList(_project(s.channels, width, norm) for s in shapes)
        self.n_pooled = levels - len(shapes)
        self.pool_project = _project(shapes[-1].channels, width, norm) if self.n_pooled else nn.Identity()
        self.layers = nn.Sequential(*(BiFPNLayer(width, levels, attention, norm) for _ in range(repeats)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        strides += [strides[-1] * 2**k for k in range(1, self.n_pooled + 1)]
        self.out_shapes = OrderedDict((level_name("P", s), ShapeSpec(width, s)) for s in strides)

    def forward(self, features: "OrderedDict[str, Tensor]") -> "OrderedDict[str, Tensor]":
        inputs = [features[lvl] for lvl in self.in_levels]
        xs = [project(x) for project, x in zip(self.project, inputs)]
        pooled = self.pool_project(inputs[-1])
        for _ in range(self.n_pooled):
            pooled = _downsample(pooled)
            xs.append(pooled)
        return OrderedDict(zip(self.out_shapes, self.layers(xs)))


def _project(in_channels: int, width: int, norm: bool | str) -> nn.Module:
    """1x1 conv (+ BN) to ``width`` channels, or nothing when the channels already match."""
    if in_channels == width:
        return nn.Identity()
    conv = nn.Conv2d(in_channels, width, 1, bias=not norm)
    return nn.Sequential(conv, _norm(norm, width)) if norm else nn.Sequential(conv)
