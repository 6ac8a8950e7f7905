"""The last step of every detector: candidates -> the configured suppressor -> the detections cap.

Every detector decodes its own candidates (per anchor, cell or RoI) and then hands them here,
so the suppressor is applied, capped and swapped the same way in all of them:

    candidates (boxes, scores, labels[, densities]) -> Suppressor -> best ``cap`` -> detection dict

A detector holds one ``Suppressor`` (``detkit.ops``) as ``model.postprocess`` and its cap as
``model.detections_per_image``; ``model.set_postprocess(suppressor, cap=None)`` swaps either
without retraining, and ``Suppressor("none")`` with no cap reads out the raw candidates.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.ops import Suppressor


def top_pairs(scores: Tensor, threshold: float, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The k best (position, class) pairs scoring above ``threshold``.

    Args: scores (Tensor[T, K]): per position (anchor, cell) and class.
    Returns: their scores (descending), positions and classes, each Tensor[<= k].
    """
    flat = scores.flatten()
    candidates = torch.where(flat > threshold)[0]
    top, order = flat[candidates].topk(min(k, len(candidates)))
    candidates = candidates[order]
    num_classes = scores.shape[-1]
    return top, torch.div(candidates, num_classes, rounding_mode="floor"), candidates % num_classes


def checked_postprocess(postprocess: Suppressor, *, densities: bool, detector: str, hint: str = "") -> Suppressor:
    """``postprocess`` if ``detector`` can run it: a ``Suppressor`` (a config mapping is built
    by ``detkit.models.build``), needing densities only where the detector predicts them;
    ``hint`` says how to make a detector of this kind predict them, where it can."""
    if not isinstance(postprocess, Suppressor):
        raise ValueError(f"{detector}: the post-processing must be a detkit.ops.Suppressor, got "
                         f"{type(postprocess).__name__} (a config mapping {{type: ..., ...}} becomes one through "
                         "detkit.ops.build_suppressor, or Suppressor(type, options))")
    if postprocess.needs_densities and not densities:
        if hint:  # the detector can predict densities, but this one was built without
            raise ValueError(f"postprocess: {postprocess.type} needs densities: {hint}")
        raise ValueError(f"postprocess: {postprocess.type} needs densities, which {detector} does not predict")
    return postprocess


def checked_cap(cap: int, detector: str) -> int:
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"{detector}: detections_per_image must be a positive integer, got {cap!r}")
    return cap


def suppress(postprocess: Suppressor, cap: int, boxes: Tensor, scores: Tensor, labels: Tensor,
             densities: Tensor | None = None) -> dict[str, Tensor]:
    """One image's detections: the candidates through ``postprocess``, the best ``cap`` kept.

    Args:
        boxes (Tensor[N, 4]): xyxy pixels; scores, labels (Tensor[N]); densities (Tensor[N] or None).

    Returns:
        {"boxes", "scores" (final, rescored by the soft suppressors), "labels"(, "densities")},
        in descending final score.
    """
    keep, kept_scores = postprocess(boxes, scores, labels, densities)
    keep, kept_scores = keep[:cap], kept_scores[:cap]
    detection = {"boxes": boxes[keep], "scores": kept_scores, "labels": labels[keep]}
    if densities is not None:
        detection["densities"] = densities[keep]
    return detection
