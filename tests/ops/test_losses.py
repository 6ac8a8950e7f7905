"""Losses: hand-computed values, the focal / cross-entropy switch, torchvision agreement."""

import math

import pytest
import torch
import torch.nn.functional as F

from detkit.ops import generalized_box_iou_loss, sigmoid_focal_loss, smooth_l1_loss


def test_focal_loss_by_hand():
    # one positive with p = sigmoid(0) = 0.5: -alpha (1 - p)^gamma log p
    logits, targets = torch.zeros(2), torch.tensor([1.0, 0.0])
    loss = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0)
    assert loss[0].item() == pytest.approx(0.25 * 0.25 * math.log(2))
    assert loss[1].item() == pytest.approx(0.75 * 0.25 * math.log(2))  # negatives get 1 - alpha


def test_gamma_zero_is_alpha_balanced_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(64, generator=g), (torch.rand(64, generator=g) > 0.7).float()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weight = 0.25 * targets + 0.75 * (1 - targets)
    assert torch.allclose(sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=0), weight * ce)
    assert torch.allclose(sigmoid_focal_loss(logits, targets, alpha=None, gamma=0, reduction="sum"), ce.sum())


def test_focal_down_weights_easy_examples():
    easy = sigmoid_focal_loss(torch.tensor([4.0]), torch.tensor([1.0]), alpha=None)
    ce = F.binary_cross_entropy_with_logits(torch.tensor([4.0]), torch.tensor([1.0]))
    assert easy.item() == pytest.approx(ce.item() * (1 - torch.sigmoid(torch.tensor(4.0)).item()) ** 2)


def test_smooth_l1_by_hand():
    x = torch.tensor([0.05, -0.5, 2.0])
    loss = smooth_l1_loss(x, torch.zeros(3), beta=1 / 9)
    assert loss.tolist() == pytest.approx([0.5 * 0.05**2 * 9, 0.5 - 0.5 / 9, 2.0 - 0.5 / 9])
    assert smooth_l1_loss(x, torch.zeros(3), beta=0, reduction="sum").item() == pytest.approx(2.55)


def test_giou_loss_by_hand():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3]])  # IoU 1/7; enclosing 9, union 7 -> GIoU 1/7 - 2/9
    assert generalized_box_iou_loss(a, b).item() == pytest.approx(1 - (1 / 7 - 2 / 9), abs=1e-6)
    assert generalized_box_iou_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: sigmoid_focal_loss(torch.zeros(2), torch.zeros(3)), "inputs and targets must have the same shape"),
        (lambda: sigmoid_focal_loss(torch.zeros(2), torch.zeros(2), alpha=1.5), "alpha must be in \\[0, 1\\] or None"),
        (lambda: sigmoid_focal_loss(torch.zeros(2), torch.zeros(2), gamma=-1), "gamma must be >= 0"),
        (lambda: smooth_l1_loss(torch.zeros(2), torch.zeros(2), reduction="avg"), "reduction must be one of"),
        (lambda: smooth_l1_loss(torch.zeros(2), torch.zeros(2), beta=-1), "beta must be >= 0"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
