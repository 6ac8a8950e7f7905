"""Recomputing BatchNorm statistics ("precise BN", Wu & Johnson, 2021).

EfficientDet's BatchNorms keep running statistics with momentum 0.01 (TensorFlow's decay
0.99), an average over the last ~100 steps: after a short run they still remember the
untrained network, and the eval-mode model lags the trained one. Recomputing them as an
exact average over a few batches of the current weights closes that gap.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[tuple[list, list]]) -> int:
    """Replace every trainable BatchNorm's running mean and variance by their average over
    ``batches`` (pairs of images and targets, as the model's training call takes them).

    Frozen BatchNorms (``FrozenBatchNorm2d``) are left alone. The model's train/eval mode and
    the layers' momentum are restored. Returns the number of batches seen.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches seen
    model.train()
    seen = 0
    for images, targets in batches:
        model(images, targets)
        seen += 1
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)
    return seen
