"""YOLOv3's head (Redmon & Farhadi, 2018): on each of three scales its own 3x3 conv (BatchNorm,
or GroupNorm for training from scratch; LeakyReLU 0.1) and a 1x1 conv to A x (4 box + 1 objectness + K class) outputs per cell.

Shorthand: N images; A anchors per cell; K classes; T all (cell, anchor) positions.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from detkit.models.anchors import flatten_anchors
from detkit.models.backbones.base import layer_norm
from detkit.models.heads.dense_heads import prior_bias


class YOLOHead(nn.Module):
    """Args:
        channels: input channels of each scale.
        num_anchors: A, anchors per cell (3).
        num_classes: K.
        norm: after each 3x3 conv, "bn" (YOLOv3's BatchNorm) or "gn" (GroupNorm, He et al.'s
            recipe for training from scratch).

    Objectness and class biases start at -log(99) (p = 0.01), so the first steps are not
    dominated by the thousands of empty cells (RetinaNet's prior, used by later YOLOs too).
    """

    def __init__(self, channels: Sequence[int], num_anchors: int, num_classes: int, norm: str = "bn"):
        super().__init__()
        if norm not in ("bn", "gn"):
            raise ValueError(f"yolo head norm must be 'bn' or 'gn', got {norm!r}")
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), layer_norm(norm, 2 * c),
                          nn.LeakyReLU(0.1, inplace=True)) for c in channels)
        self.outputs = nn.ModuleList(nn.Conv2d(2 * c, num_anchors * (5 + num_classes), 1) for c in channels)
        for out in self.outputs:
            nn.init.normal_(out.weight, std=0.01)
            bias = out.bias.detach().view(num_anchors, 5 + num_classes)
            bias.zero_()
            bias[:, 4:] = prior_bias()

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Per scale, (N, H * W * A, 5 + K): tx, ty, tw, th, objectness, class logits."""
        return [flatten_anchors(out(conv(f)), 5 + self.num_classes)
                for conv, out, f in zip(self.convs, self.outputs, features)]
