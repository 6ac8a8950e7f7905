"""Adaptive-NMS and DIoU-NMS: the papers' algorithms, hand-built crowds, bad input."""

import numpy as np
import pytest
import torch

from detkit.ops import (
    adaptive_nms,
    adaptive_soft_nms,
    batched_adaptive_nms,
    batched_diou_nms,
    diou_nms,
    nms,
)
from tests.ops import reference
from tests.ops.cases import clustered_boxes, random_boxes

# two pedestrians side by side, each with a duplicate detection
CROWD = torch.tensor(
    [
        [0, 0, 40, 100],  # person A
        [10, 0, 50, 100],  # person B: IoU(A, B) = 30 / 50 = 0.6
        [1, 1, 41, 101],  # duplicate of A: IoU 0.93 with A
        [11, 1, 51, 101],  # duplicate of B: IoU 0.93 with B, 0.62 with A
    ],
    dtype=torch.float32,
)
CROWD_SCORES = torch.tensor([0.95, 0.9, 0.6, 0.5])


def test_adaptive_with_low_densities_is_nms():
    for seed in range(8):
        boxes, scores = (clustered_boxes if seed % 2 else random_boxes)(3000, seed)
        densities = torch.rand(3000, generator=torch.Generator().manual_seed(seed)) * 0.5  # all <= N_t
        assert torch.equal(adaptive_nms(boxes, scores, densities, 0.5), nms(boxes, scores, 0.5))


def test_adaptive_keeps_both_objects_of_a_crowd():
    from detkit.ops import box_iou

    iou_ab = box_iou(CROWD[:1], CROWD[1:2]).item()
    assert 0.5 < iou_ab < 0.7  # two real objects that overlap heavily
    # plain NMS at 0.5 removes person B
    assert nms(CROWD, CROWD_SCORES, 0.5).tolist() == [0]
    # the density head says both sit in a crowd (d = IoU(A, B) with the other object)
    densities = torch.full((4,), iou_ab + 0.05)
    keep = adaptive_nms(CROWD, CROWD_SCORES, densities, 0.5)
    assert keep.tolist() == [0, 1]  # both people kept, both duplicates (IoU ~0.9) removed
    # an isolated object (low density) suppresses as NMS does
    assert adaptive_nms(CROWD, CROWD_SCORES, torch.zeros(4), 0.5).tolist() == [0]


def test_adaptive_threshold_is_inclusive():
    boxes = torch.tensor([[0, 0, 2, 1], [0, 0, 1, 1.0]])  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8])
    assert adaptive_nms(boxes, scores, torch.zeros(2), 0.5).tolist() == [0]  # IoU >= N_M
    assert adaptive_nms(boxes, scores, torch.tensor([0.6, 0.0]), 0.5).tolist() == [0, 1]  # N_M = d_M
    # the threshold is the selected box's density, not the other's
    assert adaptive_nms(boxes, scores, torch.tensor([0.0, 0.6]), 0.5).tolist() == [0]


@pytest.mark.parametrize("seed", range(4))
def test_adaptive_against_the_papers_algorithm(seed):
    boxes, scores = (clustered_boxes if seed % 2 else random_boxes)(500, seed)
    densities = torch.rand(500, generator=torch.Generator().manual_seed(seed))
    idxs = torch.randint(0, 3, (500,), generator=torch.Generator().manual_seed(seed))
    keep = batched_adaptive_nms(boxes, scores, idxs, densities, 0.4)
    expected = reference.adaptive_nms(boxes.numpy(), scores.numpy(), densities.numpy(), 0.4, idxs.numpy())
    assert keep.tolist() == expected


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_adaptive_soft_against_the_papers_algorithm(seed, method):
    boxes, scores = (clustered_boxes if seed % 2 else random_boxes)(300, seed)
    densities = torch.rand(300, generator=torch.Generator().manual_seed(seed))
    keep, new = adaptive_soft_nms(boxes, scores.double(), densities, method=method, iou_threshold=0.4)
    ref_keep, ref_scores = reference.soft_nms(
        boxes.numpy(), scores.double().numpy(), method, 0.5, 0.4, 0.001, densities=densities.double().numpy()
    )
    assert keep.tolist() == ref_keep
    assert np.allclose(new.numpy(), ref_scores, rtol=1e-12, atol=0)


def test_adaptive_soft_decays_only_above_the_boxs_threshold():
    boxes = torch.tensor([[0, 0, 2, 1], [1, 0, 3, 1.0]], dtype=torch.float64)  # IoU 1/3
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    _, low = adaptive_soft_nms(boxes, scores, torch.zeros(2, dtype=torch.float64), iou_threshold=0.3)
    _, high = adaptive_soft_nms(boxes, scores, torch.tensor([0.5, 0.0], dtype=torch.float64), iou_threshold=0.3)
    assert low[1].item() == pytest.approx(0.8 * 2 / 3)
    assert high[1].item() == 0.8


def test_diou_by_hand():
    # equal boxes side by side with IoU 1/3; rho^2 / c^2 = 1 / (9 + 1) = 0.1 -> DIoU 0.2333
    boxes = torch.tensor([[0, 0, 2, 1], [1, 0, 3, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert diou_nms(boxes, scores, 0.24).tolist() == [0, 1]
    assert diou_nms(boxes, scores, 0.23).tolist() == [0]
    assert nms(boxes, scores, 0.24).tolist() == [0]  # plain IoU 1/3 > 0.24 suppresses


@pytest.mark.parametrize("seed", range(4))
def test_diou_against_the_papers_algorithm(seed):
    boxes, scores = (clustered_boxes if seed % 2 else random_boxes)(600, seed)
    idxs = torch.randint(0, 4, (600,), generator=torch.Generator().manual_seed(seed))
    keep = batched_diou_nms(boxes, scores, idxs, 0.3)
    assert keep.tolist() == reference.diou_nms(boxes.numpy(), scores.numpy(), 0.3, idxs.numpy())


def test_diou_agrees_with_torchvision_distance_box_iou():
    import torchvision

    boxes, scores = clustered_boxes(400, 3)
    boxes = boxes.double()
    keep = diou_nms(boxes, scores, 0.4)
    diou = torchvision.ops.distance_box_iou(boxes, boxes, eps=0)
    # every pair of kept boxes has DIoU <= 0.4, and every removed box has a kept box above it with DIoU > 0.4
    kept = keep.tolist()
    assert (diou[keep][:, keep].fill_diagonal_(0) <= 0.4 + 1e-9).all()
    for j in set(range(400)) - set(kept):
        assert any(scores[i] > scores[j] and diou[i, j] > 0.4 - 1e-9 for i in kept)


def test_missing_densities():
    with pytest.raises(ValueError, match="adaptive_nms: densities are required"):
        adaptive_nms(torch.zeros(2, 4), torch.zeros(2), None, 0.5)
    with pytest.raises(ValueError, match="adaptive_nms: densities must have shape \\[2\\]"):
        adaptive_nms(torch.zeros(2, 4), torch.zeros(2), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="adaptive_nms: densities\\[1\\] = nan is not finite"):
        adaptive_nms(torch.zeros(2, 4), torch.zeros(2), torch.tensor([0.1, float("nan")]), 0.5)


def test_empty():
    e = torch.empty(0, 4)
    assert adaptive_nms(e, torch.empty(0), torch.empty(0), 0.5).shape == (0,)
    assert diou_nms(e, torch.empty(0), 0.5).shape == (0,)
    keep, new = adaptive_soft_nms(e, torch.empty(0), torch.empty(0))
    assert keep.shape == new.shape == (0,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    boxes, scores = clustered_boxes(4000, 2)
    densities = torch.rand(4000, generator=torch.Generator().manual_seed(0))
    idxs = torch.randint(0, 5, (4000,), generator=torch.Generator().manual_seed(1))
    on = [t.cuda() for t in (boxes, scores, idxs, densities)]
    assert torch.equal(batched_adaptive_nms(*on, 0.5).cpu(), batched_adaptive_nms(boxes, scores, idxs, densities, 0.5))
    assert torch.equal(batched_diou_nms(*on[:3], 0.5).cpu(), batched_diou_nms(boxes, scores, idxs, 0.5))
