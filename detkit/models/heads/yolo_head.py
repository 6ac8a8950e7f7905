"""YOLOv3's head (Redmon & Farhadi, 2018): on each of three scales its own 3x3 conv (BatchNorm,
LeakyReLU 0.1) and a 1x1 conv to A x (4 box + 1 objectness + K class) outputs per cell.

Shorthand: N images; A anchors per cell; K classes; T all (cell, anchor) positions.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from detkit.models.anchors import flatten_anchors
from detkit.models.backbones.darknet import conv_bn_leaky
from detkit.models.heads.dense_heads import prior_bias


class YOLOHead(nn.Module):
    """Args:
        channels: input channels of each scale.
        num_anchors: A, anchors per cell (3).
        num_classes: K.

    Objectness and class biases start at -log(99) (p = 0.01), so the first steps are not
    dominated by the thousands of empty cells (RetinaNet's prior, used by later YOLOs too).
    """

    def __init__(self, channels: Sequence[int], num_anchors: int, num_classes: int):
        super().__init__()
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.convs = nn.ModuleList(conv_bn_leaky(c, 2 * c, 3) for c in channels)
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
