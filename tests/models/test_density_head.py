"""Adaptive-NMS density targets: each ground-truth box's highest IoU with another one, by hand."""

import torch

from detkit.models.heads.density_head import density_targets


def test_density_is_the_highest_iou_with_another_box():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],  # a: area 100
        [5.0, 0.0, 15.0, 10.0],  # b: area 100, overlaps a by 5 x 10
        [100.0, 100.0, 110.0, 110.0],  # c: touches nobody
        [0.0, 0.0, 10.0, 12.5],  # d: area 125, holds a whole, overlaps b by 5 x 10
    ])
    # IoU(a, b) = 50 / 150, IoU(a, d) = 100 / 125, IoU(b, d) = 50 / (100 + 125 - 50)
    expected = torch.tensor([max(50 / 150, 100 / 125), max(50 / 150, 50 / 175), 0.0, max(100 / 125, 50 / 175)])
    assert torch.allclose(density_targets(boxes), expected)


def test_a_box_alone_has_density_zero_not_its_iou_with_itself():
    assert torch.equal(density_targets(torch.tensor([[0.0, 0.0, 10.0, 10.0]])), torch.zeros(1))
    assert density_targets(torch.zeros(0, 4)).shape == (0,)
    twins = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    assert torch.allclose(density_targets(twins), torch.ones(2))
