"""Soft-NMS: mmcv's expected values, ensemble-boxes, the paper's algorithm, batched, bad input."""

import json
import math

import numpy as np
import pytest
import torch

from detkit.ops import batched_soft_nms, soft_nms
from tests.conftest import shared_path
from tests.ops import reference
from tests.ops.cases import clustered_boxes, random_boxes


def mmcv_case():
    return json.loads(shared_path("peer", "nms", "EXPECTED.json").read_text())["mmcv_small_case"]


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_mmcv_expected_values(method):
    case = mmcv_case()
    expected = case["soft_nms (iou_threshold=0.3, sigma=0.5, min_score=0.01, offset=0)"][method]
    boxes = torch.tensor(case["boxes_xyxy"], dtype=torch.float32)
    scores = torch.tensor(case["scores"], dtype=torch.float32)
    keep, new_scores = soft_nms(boxes, scores, method=method, sigma=0.5, iou_threshold=0.3, score_threshold=0.01)
    assert keep.tolist() == expected["inds"]
    assert new_scores.dtype == torch.float32
    assert np.allclose(new_scores.numpy(), expected["scores"], atol=1e-6, rtol=0)


def test_gaussian_by_hand():
    # two boxes with IoU 1/3: the second decays by exp(-(1/3)^2 / 0.5)
    boxes = torch.tensor([[0, 0, 2, 1], [1, 0, 3, 1.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    keep, new = soft_nms(boxes, scores, method="gaussian", sigma=0.5)
    assert keep.tolist() == [0, 1]
    assert new[1].item() == pytest.approx(0.8 * math.exp(-(1 / 9) / 0.5), abs=1e-12)


def test_linear_threshold_is_inclusive():
    # IoU exactly 1/3: decayed when N_t = 1/3 (IoU >= N_t), untouched above it
    boxes = torch.tensor([[0, 0, 2, 1], [1, 0, 3, 1.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    _, at = soft_nms(boxes, scores, method="linear", iou_threshold=1 / 3)
    _, above = soft_nms(boxes, scores, method="linear", iou_threshold=0.34)
    assert at[1].item() == pytest.approx(0.8 * (2 / 3), abs=1e-12)
    assert above[1].item() == 0.8


def test_decay_reorders_and_drops():
    # box 1 overlaps box 0 completely (IoU 1): linear decay sends it to 0, below the threshold
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60.0]])
    scores = torch.tensor([0.9, 0.85, 0.8, 0.1])
    keep, new = soft_nms(boxes, scores, method="linear", iou_threshold=0.3)
    assert keep.tolist() == [0, 2, 3]  # box 2 (IoU 0.5) decays to 0.4, still above box 3
    assert new.tolist() == pytest.approx([0.9, 0.4, 0.1])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_against_ensemble_boxes(seed, method):
    ensemble_boxes = pytest.importorskip("ensemble_boxes")
    from ensemble_boxes.ensemble_boxes_nms import cpu_soft_nms_float

    boxes, scores = (clustered_boxes if seed % 2 else random_boxes)(600, seed)
    boxes = boxes.clamp(min=0) / 1200  # ensemble-boxes works on normalised boxes
    # and turns the IoU with a zero-area box into 0/0 = NaN: leave those out
    solid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores = boxes[solid], scores[solid]
    keep, new = soft_nms(boxes.double(), scores.double(), method=method, sigma=0.5, iou_threshold=0.3)
    # cpu_soft_nms_float takes (y1, x1, y2, x2) columns, keeps scores > thresh; methods 1 linear, 2 gaussian
    dets = boxes.double().numpy()[:, [1, 0, 3, 2]].copy()
    theirs = cpu_soft_nms_float(dets, scores.double().numpy().copy(), Nt=0.3, sigma=0.5, thresh=0.001,
                                method=1 if method == "linear" else 2)
    assert sorted(keep.tolist()) == sorted(theirs.tolist())
    assert ensemble_boxes  # the peer was importable


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_against_the_papers_algorithm(seed, method):
    boxes, scores = (clustered_boxes if seed % 2 else random_boxes)(400, seed)
    keep, new = soft_nms(boxes, scores.double(), method=method, sigma=0.5, iou_threshold=0.3, score_threshold=0.01)
    ref_keep, ref_scores = reference.soft_nms(boxes.numpy(), scores.double().numpy(), method, 0.5, 0.3, 0.01)
    assert keep.tolist() == ref_keep
    assert np.allclose(new.numpy(), ref_scores, rtol=1e-12, atol=0)


def test_batched_equals_per_class_runs():
    boxes, scores = clustered_boxes(3000, 4, objects=30)
    idxs = torch.randint(0, 6, (3000,), generator=torch.Generator().manual_seed(0)) * 7 - 3
    keep, new = batched_soft_nms(boxes, scores, idxs)
    per_class = {}
    for c in idxs.unique().tolist():
        members = (idxs == c).nonzero()[:, 0]
        k, s = soft_nms(boxes[members], scores[members])
        per_class.update(zip(members[k].tolist(), s.tolist()))
    assert dict(zip(keep.tolist(), new.tolist())) == per_class
    assert torch.all(new[1:] <= new[:-1])  # one descending list across classes


def test_scores_never_increase_and_threshold_holds():
    boxes, scores = clustered_boxes(2000, 9)
    keep, new = soft_nms(boxes, scores, score_threshold=0.05)
    assert torch.all(new <= scores[keep])
    assert torch.all(new >= 0.05)
    assert torch.all(new[1:] <= new[:-1])


def test_empty_and_dtypes():
    keep, new = soft_nms(torch.empty(0, 4, dtype=torch.float64), torch.empty(0, dtype=torch.float64))
    assert keep.dtype == torch.int64 and keep.shape == (0,) and new.dtype == torch.float64
    boxes, scores = random_boxes(200, 1)
    keep16, new16 = soft_nms(boxes.half(), scores.half())
    assert new16.dtype == torch.float16


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(method="cubic"), "soft_nms: method must be one of 'gaussian', 'linear', got 'cubic'"),
        (dict(sigma=0), "soft_nms: sigma must be a finite number > 0, got 0.0"),
        (dict(iou_threshold=-1), "soft_nms: iou_threshold must be a finite number >= 0"),
        (dict(score_threshold=float("inf")), "soft_nms: score_threshold must be a finite number >= 0"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", "\\(").replace(")", "\\)")):
        soft_nms(torch.zeros(2, 4), torch.zeros(2), **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    boxes, scores = clustered_boxes(5000, 2)
    idxs = torch.randint(0, 10, (5000,), generator=torch.Generator().manual_seed(1))
    keep, new = batched_soft_nms(boxes.cuda(), scores.cuda(), idxs.cuda())
    assert keep.device.type == "cuda" and new.device.type == "cuda"
    ref_keep, ref_new = batched_soft_nms(boxes, scores, idxs)
    assert torch.equal(keep.cpu(), ref_keep) and torch.equal(new.cpu(), ref_new)
