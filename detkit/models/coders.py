"""Box coding: boxes as offsets (dx, dy, dw, dh) from reference boxes (anchors, proposals).

dx = wx (x_c - x_c_ref) / w_ref, dy likewise, dw = ww log(w / w_ref), dh likewise
(Girshick et al., R-CNN). Decoding clamps dw, dh at log(1000 / 16) so exp() cannot blow up.
The operations are torchvision's BoxCoder's, in the same order.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


class BoxCoder:
    """Args:
        weights: (wx, wy, ww, wh): (1, 1, 1, 1) for the RPN, (10, 10, 5, 5) for the RoI head,
            so regression targets have comparable magnitude at each stage.
        clip: the largest dw, dh decoded.
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), clip: float = math.log(1000.0 / 16)):
        self.weights = tuple(float(w) for w in weights)
        self.clip = clip

    def encode(self, boxes: Tensor, reference: Tensor) -> Tensor:
        """Offsets (Tensor[N, 4]) that turn ``reference`` (Tensor[N, 4]) into ``boxes`` (Tensor[N, 4])."""
        wx, wy, ww, wh = (torch.tensor(w, dtype=boxes.dtype, device=boxes.device) for w in self.weights)
        ref_w = reference[:, 2:3] - reference[:, 0:1]
        ref_h = reference[:, 3:4] - reference[:, 1:2]
        ref_x = reference[:, 0:1] + 0.5 * ref_w
        ref_y = reference[:, 1:2] + 0.5 * ref_h
        w = boxes[:, 2:3] - boxes[:, 0:1]
        h = boxes[:, 3:4] - boxes[:, 1:2]
        x = boxes[:, 0:1] + 0.5 * w
        y = boxes[:, 1:2] + 0.5 * h
        return torch.cat(
            (wx * (x - ref_x) / ref_w, wy * (y - ref_y) / ref_h, ww * torch.log(w / ref_w), wh * torch.log(h / ref_h)),
            dim=1,
        )

    def decode(self, offsets: Tensor, reference: Tensor) -> Tensor:
        """Boxes from offsets.

        Args:
            offsets (Tensor[N, 4 * K]): K sets of offsets per reference box (K classes).
            reference (Tensor[N, 4]): xyxy.

        Returns:
            Tensor[N, K, 4]: xyxy boxes.
        """
        reference = reference.to(offsets.dtype)
        widths = reference[:, 2] - reference[:, 0]
        heights = reference[:, 3] - reference[:, 1]
        ctr_x = reference[:, 0] + 0.5 * widths
        ctr_y = reference[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = offsets[:, 0::4] / wx
        dy = offsets[:, 1::4] / wy
        dw = torch.clamp(offsets[:, 2::4] / ww, max=self.clip)
        dh = torch.clamp(offsets[:, 3::4] / wh, max=self.clip)
        pred_x = dx * widths[:, None] + ctr_x[:, None]
        pred_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = torch.tensor(0.5, dtype=offsets.dtype, device=offsets.device) * (torch.exp(dw) * widths[:, None])
        half_h = torch.tensor(0.5, dtype=offsets.dtype, device=offsets.device) * (torch.exp(dh) * heights[:, None])
        boxes = torch.stack((pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h), dim=2)
        return boxes.reshape(offsets.shape[0], offsets.shape[1] // 4, 4)
