"""Matching predictions (anchors, proposals) to ground truth, and sampling them for the loss."""

from __future__ import annotations

import torch
from torch import Tensor

BACKGROUND = -1  # best IoU below the low threshold
IGNORED = -2  # best IoU between the thresholds: neither foreground nor background


class Matcher:
    """Each prediction gets the index of its best-overlapping ground truth if the IoU is at
    least ``high``, ``BACKGROUND`` if it is below ``low``, ``IGNORED`` in between.

    Args:
        high, low: the thresholds (RPN: 0.7 / 0.3, Ren et al.; RoI head: 0.5 / 0.5).
        allow_low_quality: also match each ground truth to the predictions that overlap it
            most (ties included) even below ``high``, so no object is left without a
            positive (Ren et al.'s second rule for the RPN).
    """

    def __init__(self, high: float, low: float, allow_low_quality: bool = False):
        if not 0 <= low <= high <= 1:
            raise ValueError(f"matcher thresholds need 0 <= low <= high <= 1, got low={low}, high={high}")
        self.high, self.low, self.allow_low_quality = high, low, allow_low_quality

    def __call__(self, iou: Tensor) -> Tensor:
        """Args: iou (Tensor[M, N]): M ground-truth boxes by N predictions, M >= 1.

        Returns: Tensor[N] (int64): a ground-truth index, BACKGROUND or IGNORED."""
        best, matches = iou.max(dim=0)
        original = matches.clone() if self.allow_low_quality else None
        matches[best < self.low] = BACKGROUND
        matches[(best >= self.low) & (best < self.high)] = IGNORED
        if original is not None:
            best_per_gt = iou.max(dim=1).values
            predictions = torch.where(iou == best_per_gt[:, None])[1]
            matches[predictions] = original[predictions]
        return matches


class BalancedSampler:
    """Draws up to ``per_image`` predictions per image, at most ``positive_fraction`` of them
    positive, the rest negative (RPN: 256 at 1:1; RoI head: 512 at 1:3).

    Uses torch's global random generator (``torch.randperm``), so runs are reproducible
    under ``torch.manual_seed``.
    """

    def __init__(self, per_image: int, positive_fraction: float):
        if per_image < 1 or not 0 < positive_fraction <= 1:
            raise ValueError(f"sampler needs per_image >= 1 and 0 < positive_fraction <= 1, "
                             f"got {per_image}, {positive_fraction}")
        self.per_image, self.positive_fraction = per_image, positive_fraction

    def __call__(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Args: labels (Tensor[N]): >= 1 positive, 0 negative, < 0 ignored.

        Returns: positive and negative indices (int64)."""
        positive = torch.where(labels >= 1)[0]
        negative = torch.where(labels == 0)[0]
        n_pos = min(positive.numel(), int(self.per_image * self.positive_fraction))
        n_neg = min(negative.numel(), self.per_image - n_pos)
        pos = positive[torch.randperm(positive.numel(), device=positive.device)[:n_pos]]
        neg = negative[torch.randperm(negative.numel(), device=negative.device)[:n_neg]]
        return pos, neg
