"""Properties of every suppressor on hypothesis-generated boxes, and agreement with the
plain transcriptions of the papers (tests/ops/reference.py)."""

import numpy as np
import torch
import torchvision
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from detkit.ops import (
    adaptive_nms,
    adaptive_soft_nms,
    batched_nms,
    batched_soft_nms,
    diou_nms,
    nms,
    soft_nms,
)
from tests.ops import reference

coordinate = st.floats(-50, 200, allow_nan=False, width=32)
side = st.one_of(st.just(0.0), st.floats(0, 80, width=32))


@st.composite
def box_sets(draw, max_size=40):
    """(boxes float32[N, 4], scores float32[N] without ties, classes int64[N], densities float32[N])."""
    n = draw(st.integers(1, max_size))
    corners = draw(st.lists(st.tuples(coordinate, coordinate, side, side), min_size=n, max_size=n))
    if draw(st.booleans()):  # crowd: jittered copies of the first boxes
        corners = [corners[i % 3] if i % 2 else c for i, c in enumerate(corners)]
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in corners], dtype=torch.float32)
    ranks = draw(st.permutations(range(n)))
    scores = (torch.tensor(ranks, dtype=torch.float32) + 1) / (n + 1)
    classes = torch.tensor(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    densities = torch.tensor(draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)))
    return boxes, scores, classes, densities


threshold = st.floats(0.05, 0.95)


@settings(max_examples=150, deadline=None)
@given(box_sets(), threshold)
def test_hard_nms_properties(case, t):
    boxes, scores, classes, _ = case
    keep = nms(boxes, scores, t)
    assert len(set(keep.tolist())) == len(keep) and (keep >= 0).all() and (keep < len(boxes)).all()
    assert torch.all(scores[keep][1:] < scores[keep][:-1])  # descending
    # (torchvision gives 0/0 = NaN for two zero-area boxes; their IoU is 0)
    iou = torchvision.ops.box_iou(boxes[keep], boxes[keep]).nan_to_num(0).fill_diagonal_(0)
    assert torch.all(iou <= t)  # survivors never overlap beyond the threshold
    # every suppressed box overlaps a higher-scoring survivor beyond the threshold
    removed = sorted(set(range(len(boxes))) - set(keep.tolist()))
    if removed:
        iou_removed = torchvision.ops.box_iou(boxes[removed], boxes[keep]).nan_to_num(0)
        higher = scores[keep][None, :] > scores[removed][:, None]
        assert torch.all(((iou_removed > t) & higher).any(dim=1))
    assert keep.tolist() == reference.nms(boxes.numpy(), scores.numpy(), t)
    batched = batched_nms(boxes, scores, classes, t)
    assert batched.tolist() == reference.nms(boxes.numpy(), scores.numpy(), t, classes.numpy())


@settings(max_examples=100, deadline=None)
@given(box_sets(), threshold, st.sampled_from(["linear", "gaussian"]), st.floats(0.1, 2.0))
def test_soft_nms_properties(case, t, method, sigma):
    boxes, scores, classes, _ = case
    keep, new = batched_soft_nms(boxes, scores.double(), classes, method=method, sigma=sigma, iou_threshold=t)
    assert len(set(keep.tolist())) == len(keep)
    assert torch.all(new <= scores.double()[keep])  # scores never increase
    assert torch.all(new[1:] <= new[:-1])  # kept in descending final score
    assert torch.all(new >= 0.001)
    ref_keep, ref_scores = reference.soft_nms(
        boxes.numpy(), scores.double().numpy(), method, sigma, t, 0.001, classes=classes.numpy()
    )
    assert sorted(zip(keep.tolist(), new.tolist())) == sorted(zip(ref_keep, ref_scores))


@settings(max_examples=100, deadline=None)
@given(box_sets(), threshold, st.randoms(use_true_random=False))
def test_permuting_the_input_keeps_the_same_boxes(case, t, rnd):
    boxes, scores, classes, densities = case
    perm = list(range(len(boxes)))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)

    def same(run):
        a = run(boxes, scores, classes, densities)
        b = run(boxes[perm], scores[perm], classes[perm], densities[perm])
        a_keep, b_keep = (x[0] if isinstance(x, tuple) else x for x in (a, b))
        assert sorted(a_keep.tolist()) == sorted(perm[b_keep].tolist())

    same(lambda b, s, c, d: nms(b, s, t))
    same(lambda b, s, c, d: batched_nms(b, s, c, t))
    same(lambda b, s, c, d: soft_nms(b, s, iou_threshold=t))
    same(lambda b, s, c, d: soft_nms(b, s, method="linear", iou_threshold=t))
    same(lambda b, s, c, d: adaptive_nms(b, s, d, t))
    same(lambda b, s, c, d: adaptive_soft_nms(b, s, d, iou_threshold=t))
    same(lambda b, s, c, d: diou_nms(b, s, t))


@settings(max_examples=100, deadline=None)
@given(box_sets(), threshold)
def test_adaptive_equals_nms_when_every_density_is_below_the_threshold(case, t):
    boxes, scores, _, densities = case
    iou = torchvision.ops.box_iou(boxes, boxes)
    assume(not torch.any(iou == t))  # NMS suppresses at IoU > t, Adaptive-NMS at IoU >= N_M
    low = densities * t  # every d <= N_t
    assert torch.equal(adaptive_nms(boxes, scores, low, t), nms(boxes, scores, t))
    assert adaptive_nms(boxes, scores, densities, t).tolist() == reference.adaptive_nms(
        boxes.numpy(), scores.numpy(), densities.numpy(), t
    )


@settings(max_examples=100, deadline=None)
@given(box_sets(), threshold)
def test_adaptive_removes_exactly_what_a_kept_box_overlaps_at_its_own_threshold(case, t):
    """The threshold's direction: a kept box M removes a later box b iff IoU(M, b) >= max(N_t, d_M),
    so a crowded M (high d_M) spares more neighbours, never fewer, than plain NMS at N_t."""
    boxes, scores, _, densities = case
    keep = adaptive_nms(boxes, scores, densities, t).tolist()
    iou = torchvision.ops.box_iou(boxes, boxes).nan_to_num(0.0)  # two empty boxes: IoU 0, as the kernel
    kept = set(keep)
    for m in keep:
        own = max(t, float(densities[m]))
        for b in range(len(boxes)):
            if b != m and scores[b] < scores[m] and b in kept:
                assert float(iou[m, b]) < own  # a kept later box was out of reach of M (double, as the kernel)
    for b in set(range(len(boxes))) - kept:  # each removed box has a kept, higher-scoring box reaching it
        assert any(scores[m] > scores[b] and float(iou[m, b]) >= max(t, float(densities[m])) for m in keep)


@settings(max_examples=100, deadline=None)
@given(box_sets(), threshold)
def test_diou_nms_keeps_a_superset_of_nms(case, t):
    # DIoU <= IoU, so DIoU-NMS suppresses no more than NMS at each step; a box NMS keeps is
    # kept by DIoU-NMS too only in hindsight, so compare with the paper's loop instead
    boxes, scores, _, _ = case
    keep = diou_nms(boxes, scores, t)
    assert keep.tolist() == reference.diou_nms(boxes.numpy(), scores.numpy(), t)
    assert len(keep) >= 1
    assert np.all(np.isin(nms(boxes, scores, t)[:1].numpy(), keep.numpy()))  # the top box is always kept
