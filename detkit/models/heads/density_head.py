"""Crowd density for Adaptive-NMS (Liu, Huang, Wang, CVPR 2019).

The density of an object is its highest IoU with any other object of the image:
d_i = max_{j != i} IoU(b_i, b_j) (0 for an object alone). A detector that predicts it for
each detection lets ``adaptive_nms`` raise the suppression threshold inside crowds
(N_M = max(N_t, d_M)). Two predictors:

- ``DensitySubnet``, the paper's: beside the RPN (two-stage) or a dense head, a 1x1 conv
  reduces each level's features, the objectness and box-offset maps are concatenated to them,
  and a 5x5 conv predicts one density per anchor; a positive anchor's target is the density of
  the object it matched (smooth-L1). Each proposal carries its anchor's density through the
  proposals' top-k and suppression, the RoI head and the final suppression. With ``bins``
  (detkit's variant) it predicts a distribution over the densities 0, 1/B, ..., 1 instead,
  trained by cross-entropy towards the two knots around the target (weights by proximity, as
  GFL's distribution focal loss, Li et al. 2020, without the focal term); its density is the
  distribution's mean. A classifier does not settle on the targets' mean the way a regression
  does when they are bimodal (lone objects at 0, crowds around 0.6).
- ``DensityHead``: from each RoI's box-head vector, trained towards the density of the ground
  truth the RoI matched (detkit's predictor, the measured alternative: on the compare study's
  dense crowds its densities correlate better with the truth than the subnet's, Pearson 0.81
  against 0.76, docs/survey.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detkit.models.anchors import flatten_anchors
from detkit.ops import box_iou, smooth_l1_loss


def density_targets(boxes: Tensor, labels: Tensor | None = None) -> Tensor:
    """Tensor[M]: each box's max IoU with another box of the set (0 when alone); with
    ``labels``, only with boxes of its own label (as class-aware suppression sees them)."""
    if len(boxes) < 2:
        return boxes.new_zeros(len(boxes))
    iou = box_iou(boxes, boxes)
    iou.fill_diagonal_(0)
    if labels is not None:
        iou[labels[:, None] != labels[None, :]] = 0
    return iou.max(dim=1).values


CROWDED = 0.5  # the density above which Adaptive-NMS (N_t = 0.5) raises a threshold


def checked_crowd_weight(crowd_weight: float) -> float:
    """``criterion.density_crowd_weight`` as a float, refused unless > 0."""
    if not crowd_weight > 0:
        raise ValueError(f"criterion.density_crowd_weight must be > 0, got {crowd_weight!r}")
    return float(crowd_weight)


def density_loss(predicted: Tensor, wanted: Tensor, crowd_weight: float = 1.0) -> Tensor:
    """Summed loss between predicted and target densities (Tensor[M]), each term of a crowded
    target (above ``CROWDED``) times ``crowd_weight``: with 1 the paper's loss; above 1 the
    rarer crowded targets pull harder, so the predictions do not settle near the mean below
    N_t (detkit's variant, measured in the nms suite).

    ``predicted``: Tensor[M] of densities (smooth-L1, beta 1/9, Liu et al.), or Tensor[M, B + 1]
    of logits over the knots 0, 1/B, ..., 1 (a ``DensitySubnet`` with bins: cross-entropy
    towards the two knots around each target, ``knot_targets``)."""
    if predicted.dim() == 2:
        loss = -(knot_targets(wanted, predicted.shape[1] - 1) * torch.log_softmax(predicted, dim=1)).sum(dim=1)
    else:
        loss = smooth_l1_loss(predicted, wanted, beta=1 / 9)
    if crowd_weight != 1.0:
        loss = loss * torch.where(wanted > CROWDED, crowd_weight, 1.0)
    return loss.sum()


def knot_targets(wanted: Tensor, bins: int) -> Tensor:
    """Tensor[M] of densities in [0, 1] -> Tensor[M, bins + 1]: each density split between the
    two knots k/bins around it, each weighted by its nearness (a knot itself: one-hot), so
    the distribution's mean is the density."""
    x = wanted.clamp(0, 1) * bins
    low = x.floor().clamp(max=bins - 1)
    high_weight = x - low
    out = wanted.new_zeros(len(wanted), bins + 1)
    out.scatter_(1, low.long()[:, None], (1 - high_weight)[:, None])
    out.scatter_add_(1, low.long()[:, None] + 1, high_weight[:, None])
    return out


def binned_density(logits: Tensor) -> Tensor:
    """Tensor[..., B + 1] of logits over the knots 0, 1/B, ..., 1 -> Tensor[...]: the
    distribution's mean."""
    knots = torch.linspace(0, 1, logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return torch.softmax(logits, dim=-1) @ knots


def checked_bins(bins) -> int:
    """A density predictor's ``bins``: 0 (one sigmoid density) or an integer >= 2."""
    if bins != 0 and not (isinstance(bins, int) and not isinstance(bins, bool) and bins >= 2):
        raise ValueError(f"density bins must be 0 (one sigmoid density per anchor) or an integer >= 2, got {bins!r}")
    return bins


class DensitySubnet(nn.Module):
    """Liu et al.'s density subnet: per level, (N, C, H, W) features with the head's (N, A * S, H, W)
    scores and (N, 4A, H, W) offsets -> (N, A, H, W) densities in [0, 1].

    reduce: 1x1 conv C -> ``channels`` (+ ReLU); then concat [reduced, scores, offsets]
    -> 5x5 conv -> A channels -> sigmoid. Shared across levels, as the heads are. Beside the
    RPN the scores are its objectness (S = 1); beside a one-stage head (RetinaNet) its class
    logits (S = K), the paper's design carried over: the subnet sees what the detector scored
    and where it placed each anchor's box.

    With ``bins`` = B, the 5x5 conv predicts A * (B + 1) logits instead: per anchor a
    distribution over the densities 0, 1/B, ..., 1, whose mean is the density (detkit's
    variant; ``density_loss`` trains it).

    Args:
        in_channels: C, the channels of every level.
        num_anchors: A, anchors per cell.
        channels: the reduced width (the paper does not state it; 128 by default).
        scores_per_anchor: S (1 beside the RPN, K beside a one-stage head).
        bins: 0 for the paper's one sigmoid density per anchor; B >= 2 for a distribution over
            B + 1 knots.
        detach: the density loss trains the subnet alone: its inputs (features, scores, offsets)
            are detached, so it cannot pull the detector's features towards densities (detkit's
            variant; the paper trains them jointly).
        convs: 3x3 conv + ReLU layers (``channels`` wide) between the concatenation and the 5x5
            conv (detkit's variant; 0, the paper's): each widens the context one density sees by
            two cells, from 5x5 to 5 + 2 * convs. A neighbour overlapping an object at IoU 0.3
            lies up to about three strides away on the object's level, at the 5x5's edge.
    """

    def __init__(self, in_channels: int, num_anchors: int, channels: int = 128, scores_per_anchor: int = 1,
                 bins: int = 0, detach: bool = False, convs: int = 0):
        super().__init__()
        self.bins = checked_bins(bins)
        if not isinstance(detach, bool):
            raise ValueError(f"density detach must be true or false, got {detach!r}")
        self.detach = detach
        if not isinstance(convs, int) or isinstance(convs, bool) or convs < 0:
            raise ValueError(f"density convs must be a whole number >= 0, got {convs!r}")
        self.values = bins + 1 if bins else 1  # outputs per anchor
        self.reduce = nn.Conv2d(in_channels, channels, 1)
        width = channels + (scores_per_anchor + 4) * num_anchors
        self.context = nn.ModuleList(nn.Conv2d(width if i == 0 else channels, channels, 3, padding=1)
                                     for i in range(convs))
        self.predict = nn.Conv2d(channels if convs else width, num_anchors * self.values, 5, padding=2)
        for layer in (self.reduce, *self.context, self.predict):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def forward(self, features: list[Tensor], objectness: list[Tensor], deltas: list[Tensor]) -> list[Tensor]:
        """Per level (N, A * V, H, W): densities (V = 1, sigmoid) or logits over the knots (V = B + 1)."""
        out = []
        for feature, logits, offsets in zip(features, objectness, deltas):
            if self.detach:
                feature, logits, offsets = feature.detach(), logits.detach(), offsets.detach()
            x = torch.cat([torch.relu(self.reduce(feature)), logits, offsets], dim=1)  # (N, channels + (S+4)A, H, W)
            for conv in self.context:
                x = torch.relu(conv(x))
            y = self.predict(x)
            out.append(y if self.bins else torch.sigmoid(y))
        return out

    def flatten(self, maps: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """``forward``'s maps -> (densities Tensor[N, T], logits Tensor[N, T, B + 1] or None
        without bins), T the anchors of all levels in the anchors' order."""
        values = torch.cat([flatten_anchors(m, self.values) for m in maps], dim=1)
        if not self.bins:
            return values.squeeze(2), None
        return binned_density(values), values


class DensityHead(nn.Module):
    """(R, D) box-head vectors -> (densities Tensor[R] in [0, 1], logits Tensor[R, B + 1] or
    None): a hidden layer, then a sigmoid density, or with ``bins`` = B logits over the
    knots 0, 1/B, ..., 1 read as their distribution's mean (as ``DensitySubnet``'s bins)."""

    def __init__(self, in_features: int, hidden: int = 256, bins: int = 0):
        super().__init__()
        self.bins = checked_bins(bins)
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, bins + 1 if bins else 1)
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.constant_(self.out.bias, 0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        y = self.out(torch.relu(self.hidden(x)))
        if self.bins:
            return binned_density(y), y
        return torch.sigmoid(y).squeeze(1), None
