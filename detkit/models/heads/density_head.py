"""Crowd density for Adaptive-NMS (Liu, Huang, Wang, CVPR 2019).

The density of an object is its highest IoU with any other object of the image:
d_i = max_{j != i} IoU(b_i, b_j) (0 for an object alone). A detector that predicts it for
each detection lets ``adaptive_nms`` raise the suppression threshold inside crowds
(N_M = max(N_t, d_M)). ``DensityHead`` predicts it from each RoI's box-head vector and is
trained with smooth-L1 towards the density of the ground truth the RoI matched.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detkit.ops import box_iou


def density_targets(boxes: Tensor) -> Tensor:
    """Tensor[M]: each box's max IoU with another box of the set (0 when alone)."""
    if len(boxes) < 2:
        return boxes.new_zeros(len(boxes))
    iou = box_iou(boxes, boxes)
    iou.fill_diagonal_(0)
    return iou.max(dim=1).values


class DensityHead(nn.Module):
    """(R, D) -> (R,) densities in [0, 1]: a hidden layer, then a sigmoid output."""

    def __init__(self, in_features: int, hidden: int = 256):
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, 1)
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.constant_(self.out.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.out(torch.relu(self.hidden(x)))).squeeze(1)
