"""SSD's head (Liu et al., ECCV 2016): on each feature map its own 3x3 convs, one to the class
scores (K + 1 per default box, background first) and one to the 4 box offsets.

Shorthand: N images; A_l default boxes per cell of level l; K classes; T all default boxes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from detkit.models.anchors import flatten_anchors


def _convs(channels: Sequence[int], outputs: Sequence[int]) -> nn.ModuleList:
    convs = nn.ModuleList(nn.Conv2d(c, o, kernel_size=3, padding=1) for c, o in zip(channels, outputs))
    for conv in convs:
        nn.init.xavier_uniform_(conv.weight)
        nn.init.constant_(conv.bias, 0.0)
    return convs


class SSDHead(nn.Module):
    """Args:
        channels: input channels of each level.
        num_anchors: default boxes per cell of each level.
        num_classes: K (the head predicts K + 1 scores, index 0 the background).
    """

    def __init__(self, channels: Sequence[int], num_anchors: Sequence[int], num_classes: int):
        super().__init__()
        if len(channels) != len(num_anchors):
            raise ValueError(f"ssd head: {len(channels)} levels of channels but {len(num_anchors)} of anchors")
        self.num_classes = num_classes
        self.classification = _convs(channels, [a * (num_classes + 1) for a in num_anchors])
        self.regression = _convs(channels, [a * 4 for a in num_anchors])

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        """Per default box of all levels: "logits" (N, T, K + 1), "deltas" (N, T, 4)."""
        return {
            "logits": torch.cat([flatten_anchors(conv(f), self.num_classes + 1)
                                 for conv, f in zip(self.classification, features)], 1),
            "deltas": torch.cat([flatten_anchors(conv(f), 4) for conv, f in zip(self.regression, features)], 1),
        }
