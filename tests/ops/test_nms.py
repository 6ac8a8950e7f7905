"""Hard NMS: agreement with torchvision and mmcv, dtypes, devices, bad input."""

import json

import numpy as np
import pytest
import torch
import torchvision

from detkit.ops import batched_nms, nms
from tests.conftest import shared_path
from tests.ops.cases import clustered_boxes, random_boxes

# 24 seeded cases: (n, classes, iou_threshold, distribution)
CASES = [
    (1, 1, 0.5, "uniform"),
    (2, 1, 0.0, "uniform"),
    (17, 3, 0.5, "uniform"),
    (100, 1, 0.3, "uniform"),
    (100, 80, 0.5, "clustered"),
    (500, 10, 0.7, "clustered"),
    (1000, 1, 0.5, "uniform"),
    (1000, 80, 0.5, "uniform"),
    (2000, 5, 0.1, "clustered"),
    (3000, 80, 0.6, "clustered"),
    (4000, 1, 0.5, "clustered"),
    (5000, 1, 0.5, "uniform"),
    (5000, 80, 0.5, "clustered"),
    (6000, 20, 0.45, "uniform"),
    (7000, 2, 0.9, "clustered"),
    (8000, 80, 0.3, "uniform"),
    (9000, 40, 0.5, "clustered"),
    (10000, 1, 0.5, "uniform"),
    (10000, 80, 0.5, "uniform"),
    (10000, 80, 0.7, "clustered"),
    (10000, 1, 0.0, "clustered"),
    (10000, 7, 1.0, "uniform"),
    (300, 1, 0.5, "tiny"),
    (3000, 13, 0.5, "huge"),
]


def make_case(seed, n, n_classes, distribution):
    if distribution == "clustered":
        boxes, scores = clustered_boxes(n, seed)
    elif distribution == "tiny":  # sub-pixel boxes, negative coordinates
        boxes, scores = random_boxes(n, seed, canvas=2.0, max_side=0.5)
        boxes -= 1.0
    elif distribution == "huge":  # a few image-sized boxes among small ones
        boxes, scores = random_boxes(n, seed)
        boxes[::50, 2:] += 900
    else:
        boxes, scores = random_boxes(n, seed)
    idxs = torch.randint(0, n_classes, (n,), generator=torch.Generator().manual_seed(seed + 1))
    return boxes, scores, idxs


@pytest.mark.parametrize("seed,case", list(enumerate(CASES)))
def test_nms_equals_torchvision(seed, case):
    n, _, threshold, distribution = case
    boxes, scores, _ = make_case(seed, n, 1, distribution)
    expected = torchvision.ops.nms(boxes, scores, threshold)
    assert torch.equal(nms(boxes, scores, threshold), expected)


@pytest.mark.parametrize("seed,case", list(enumerate(CASES)))
def test_batched_nms_equals_torchvision(seed, case):
    n, n_classes, threshold, distribution = case
    boxes, scores, idxs = make_case(seed, n, n_classes, distribution)
    # torchvision.ops.batched_nms runs nms per class above 1000 boxes on the CPU, but below
    # it shifts each class by (max coordinate + 1) * class, which rounds the coordinates of
    # high classes; its per-class path is the definition, and the public function equals it
    # whenever the shift does not change a decision
    expected = torchvision.ops.boxes._batched_nms_vanilla(boxes, scores, idxs, threshold)
    assert torch.equal(batched_nms(boxes, scores, idxs, threshold), expected)
    if n > 1000:
        assert torch.equal(batched_nms(boxes, scores, idxs, threshold), torchvision.ops.batched_nms(
            boxes, scores, idxs, threshold))


def test_batched_nms_sparse_class_ids():
    boxes, scores, idxs = make_case(7, 2000, 30, "clustered")
    sparse = idxs * 1_000_003 - 5  # far apart, some negative
    expected = torchvision.ops.boxes._batched_nms_vanilla(boxes, scores, idxs, 0.5)
    assert torch.equal(batched_nms(boxes, scores, sparse, 0.5), expected)


def test_float64_and_half_inputs():
    boxes, scores, idxs = make_case(3, 3000, 10, "clustered")
    b64, s64 = boxes.double(), scores.double()
    assert torch.equal(nms(b64, s64, 0.5), torchvision.ops.nms(b64, s64, 0.5))
    # float16/bfloat16 are computed in float32
    for dtype in (torch.float16, torch.bfloat16):
        b, s = boxes.to(dtype), scores.to(dtype)
        assert torch.equal(nms(b, s, 0.5), torchvision.ops.nms(b.float(), s.float(), 0.5))


def test_torchvision_fp16_case():
    case = json.loads(shared_path("peer", "nms", "EXPECTED.json").read_text())["torchvision_fp16_case"]
    boxes = torch.tensor(case["boxes"])
    scores = torch.tensor(case["scores"])
    keep32 = nms(boxes, scores, case["iou_threshold"])
    keep16 = nms(boxes.half(), scores.half(), case["iou_threshold"])
    assert keep32.tolist() == keep16.tolist() == case["keep (our recomputation)"]


def test_mmcv_small_case():
    case = json.loads(shared_path("peer", "nms", "EXPECTED.json").read_text())["mmcv_small_case"]
    boxes = torch.tensor(case["boxes_xyxy"], dtype=torch.float32)
    scores = torch.tensor(case["scores"])
    keep = nms(boxes, scores, case["nms"]["iou_threshold"])
    assert keep.tolist() == case["nms"]["inds"]
    dets = torch.cat([boxes[keep], scores[keep, None]], dim=1)
    assert torch.allclose(dets, torch.tensor(case["nms"]["dets"], dtype=torch.float32))


def test_mmcv_batched_nms_data():
    data = np.load(shared_path("peer", "nms", "batched_nms_data.npz"))
    boxes, scores = torch.from_numpy(data["boxes"]), torch.from_numpy(data["scores"])
    idxs = torch.from_numpy(data["idxs"])
    keep = batched_nms(boxes, scores, idxs, 0.7)
    assert keep.tolist() == data["keep"].tolist()
    # mmcv's own assertion: with score_threshold 0.5 and max_num 100, keep[:100]
    high = (scores > 0.5).nonzero()[:, 0]
    assert high[batched_nms(boxes[high], scores[high], idxs[high], 0.7)][:100].tolist() == data["keep"][:100].tolist()


def test_ties_keep_the_lower_index():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [20, 20, 30, 30.0]])
    scores = torch.tensor([0.5, 0.5, 0.9, 0.9])
    assert nms(boxes, scores, 0.5).tolist() == [2, 0]


def test_threshold_is_strict():
    # IoU of these two boxes is exactly 0.5: torchvision keeps both at 0.5 (IoU > t suppresses)
    boxes = torch.tensor([[0, 0, 2, 1], [0, 0, 1, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]


@pytest.mark.parametrize("fn", ["nms", "batched_nms"])
def test_empty_input(fn):
    boxes, scores, idxs = torch.empty(0, 4), torch.empty(0), torch.empty(0, dtype=torch.int64)
    keep = nms(boxes, scores, 0.5) if fn == "nms" else batched_nms(boxes, scores, idxs, 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,) and keep.device == boxes.device


BAD = [
    ("boxes must have shape \\[N, 4\\]", torch.zeros(3, 5), torch.zeros(3), 0.5),
    ("boxes must have shape \\[N, 4\\]", torch.zeros(4), torch.zeros(1), 0.5),
    ("scores must have shape \\[3\\]", torch.zeros(3, 4), torch.zeros(2), 0.5),
    ("boxes must be a floating-point tensor", torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3), 0.5),
    ("scores must be a floating-point tensor", torch.zeros(3, 4), torch.zeros(3, dtype=torch.int32), 0.5),
    ("boxes\\[1\\] = \\(0, 0, nan, 1\\) is not finite", torch.tensor([[0, 0, 1, 1], [0, 0, float("nan"), 1]]),
     torch.zeros(2), 0.5),
    ("boxes\\[0\\] = \\(0, 0, inf, 1\\) is not finite", torch.tensor([[0, 0, float("inf"), 1.0]]), torch.zeros(1), 0.5),
    ("boxes\\[1\\] = \\(5, 0, 2, 1\\) has x2 < x1", torch.tensor([[0, 0, 1, 1], [5, 0, 2, 1.0]]), torch.zeros(2), 0.5),
    ("boxes\\[0\\] = \\(0, 5, 1, 2\\) has y2 < y1", torch.tensor([[0, 5, 1, 2.0]]), torch.zeros(1), 0.5),
    ("scores\\[1\\] = nan is not finite", torch.zeros(2, 4), torch.tensor([0.5, float("nan")]), 0.5),
    ("iou_threshold must be a finite number >= 0, got -0.1", torch.zeros(2, 4), torch.zeros(2), -0.1),
    ("iou_threshold must be a finite number >= 0, got nan", torch.zeros(2, 4), torch.zeros(2), float("nan")),
    ("iou_threshold must be a number", torch.zeros(2, 4), torch.zeros(2), "0.5"),
    ("boxes must be a torch.Tensor, got list", [[0, 0, 1, 1]], torch.zeros(1), 0.5),
]


@pytest.mark.parametrize("message,boxes,scores,threshold", BAD)
def test_bad_input_names_what_and_where(message, boxes, scores, threshold):
    with pytest.raises(ValueError, match="^nms: " + message):
        nms(boxes, scores, threshold)


def test_bad_idxs():
    boxes, scores = torch.zeros(3, 4), torch.zeros(3)
    with pytest.raises(ValueError, match="batched_nms: idxs must be an integer tensor, got torch.float32"):
        batched_nms(boxes, scores, torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="batched_nms: idxs must have shape \\[3\\]"):
        batched_nms(boxes, scores, torch.zeros(2, dtype=torch.int64), 0.5)


def test_input_is_not_modified():
    boxes, scores, idxs = make_case(1, 500, 4, "clustered")
    before = boxes.clone(), scores.clone(), idxs.clone()
    batched_nms(boxes, scores, idxs, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(before, (boxes, scores, idxs)))


def test_non_contiguous_input():
    boxes, scores, _ = make_case(2, 1000, 1, "uniform")
    wide = torch.cat([boxes, boxes], dim=1)[:, :4]  # a strided view
    assert not wide.is_contiguous()
    assert torch.equal(nms(wide, scores[::1], 0.5), torchvision.ops.nms(boxes, scores, 0.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    boxes, scores, idxs = make_case(5, 5000, 20, "clustered")
    cuda = [t.cuda() for t in (boxes, scores, idxs)]
    keep = nms(cuda[0], cuda[1], 0.5)
    assert keep.device.type == "cuda"
    assert torch.equal(keep.cpu(), nms(boxes, scores, 0.5))
    assert torch.equal(batched_nms(*cuda, 0.5).cpu(), batched_nms(boxes, scores, idxs, 0.5))
    half = nms(cuda[0].half(), cuda[1].half(), 0.5)
    assert torch.equal(half.cpu(), nms(boxes.half(), scores.half(), 0.5))
