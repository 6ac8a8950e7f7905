"""build_suppressor: every suppressor from a config mapping, with clear errors."""

import pytest
import torch

from detkit.ops import (
    SUPPRESSORS,
    adaptive_nms,
    batched_adaptive_soft_nms,
    batched_diou_nms,
    batched_nms,
    batched_soft_nms,
    build_suppressor,
)
from tests.ops.cases import clustered_boxes


@pytest.fixture(scope="module")
def case():
    boxes, scores = clustered_boxes(1500, 0)
    labels = torch.randint(0, 4, (1500,), generator=torch.Generator().manual_seed(0))
    densities = torch.rand(1500, generator=torch.Generator().manual_seed(1))
    return boxes, scores, labels, densities


def test_each_type_runs_its_function(case):
    boxes, scores, labels, densities = case
    keep, s = build_suppressor({"type": "nms", "iou_threshold": 0.6})(boxes, scores, labels)
    assert torch.equal(keep, batched_nms(boxes, scores, labels, 0.6)) and torch.equal(s, scores[keep])

    keep, s = build_suppressor({"type": "soft_nms", "method": "linear", "sigma": 0.7})(boxes, scores, labels)
    expected = batched_soft_nms(boxes, scores, labels, method="linear", sigma=0.7)
    assert torch.equal(keep, expected[0]) and torch.equal(s, expected[1])

    keep, s = build_suppressor({"type": "diou_nms"})(boxes, scores, labels)
    assert torch.equal(keep, batched_diou_nms(boxes, scores, labels, 0.5))

    keep, s = build_suppressor({"type": "adaptive_nms", "method": "linear"})(boxes, scores, labels, densities)
    expected = batched_adaptive_soft_nms(boxes, scores, labels, densities, method="linear", iou_threshold=0.5)
    assert torch.equal(keep, expected[0]) and torch.equal(s, expected[1])


def test_none_keeps_every_box_in_descending_score():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 9, 9], [50, 50, 60, 60.]])
    scores = torch.tensor([0.2, 0.9, 0.2, 0.5])
    keep, kept = build_suppressor({"type": "none"})(boxes, scores, torch.tensor([0, 0, 0, 1]))
    assert keep.tolist() == [1, 3, 0, 2]  # ties by ascending index, like every suppressor
    assert torch.equal(kept, scores[keep])
    with pytest.raises(ValueError, match=r"suppressor.iou_threshold: unknown option"):
        build_suppressor({"type": "none", "iou_threshold": 0.5})
    with pytest.raises(ValueError, match=r"scores\[0\] = nan is not finite"):
        build_suppressor({"type": "none"})(boxes, torch.tensor([float("nan"), 0, 0, 0]), torch.zeros(4, dtype=torch.long))


def test_class_agnostic(case):
    boxes, scores, labels, densities = case
    suppress = build_suppressor({"type": "adaptive_nms", "class_agnostic": True})
    keep, _ = suppress(boxes, scores, labels, densities)
    assert torch.equal(keep, adaptive_nms(boxes, scores, densities, 0.5))


def test_defaults_are_the_papers():
    s = build_suppressor({"type": "soft_nms"})
    assert s.options == {"method": "gaussian", "sigma": 0.5, "iou_threshold": 0.3, "score_threshold": 0.001}
    assert build_suppressor({"type": "nms"}).options == {"iou_threshold": 0.5}
    assert build_suppressor({"type": "adaptive_nms"}).needs_densities
    assert set(SUPPRESSORS) == {"nms", "soft_nms", "adaptive_nms", "diou_nms", "none"}


@pytest.mark.parametrize(
    "config,message",
    [
        ({"type": "soft_nsm"}, "postprocess.suppressor.type: unknown type 'soft_nsm'; did you mean 'soft_nms'?"),
        ({}, "postprocess.suppressor.type: unknown type None"),
        ({"type": "soft_nms", "sigm": 0.5}, "postprocess.suppressor.sigm: unknown option of soft_nms 'sigm'; "
                                             "did you mean 'sigma'?"),
        ({"type": "nms", "iou_threshold": -0.5}, "postprocess.suppressor: iou_threshold must be a finite number >= 0"),
        ({"type": "nms", "iou_threshold": "high"}, "postprocess.suppressor: iou_threshold must be a number"),
        ({"type": "soft_nms", "method": "box"}, "postprocess.suppressor.method: method must be one of"),
        ({"type": "nms", "class_agnostic": "yes"}, "postprocess.suppressor.class_agnostic must be true or false"),
    ],
)
def test_config_errors(config, message):
    with pytest.raises(ValueError) as error:
        build_suppressor(config, where="postprocess.suppressor")
    assert str(error.value).startswith(message)


def test_adaptive_without_densities_says_what_to_do(case):
    boxes, scores, labels, _ = case
    with pytest.raises(ValueError, match="needs a density per box: enable the model's density head"):
        build_suppressor({"type": "adaptive_nms"})(boxes, scores, labels)


def test_a_suppressor_is_a_value():
    a = build_suppressor({"type": "soft_nms", "sigma": 0.3})
    assert a == build_suppressor({"sigma": 0.3, "type": "soft_nms"})
    assert build_suppressor(a) is a


def test_a_suppressor_made_directly_is_complete_checked_and_read_only():
    import copy
    import pickle

    from detkit.ops import Suppressor

    direct = Suppressor("soft_nms", {"method": "linear"})
    assert direct == build_suppressor({"type": "soft_nms", "method": "linear"})
    assert direct.options == {"method": "linear", "sigma": 0.5, "iou_threshold": 0.3, "score_threshold": 0.001}
    assert Suppressor("nms", None) == Suppressor("nms") and Suppressor("nms").config() == {"type": "nms",
                                                                                           "iou_threshold": 0.5}
    assert build_suppressor(direct.config()) == direct and len({direct, copy.deepcopy(direct)}) == 1
    assert pickle.loads(pickle.dumps(direct)) == direct
    with pytest.raises(TypeError):
        direct.options["sigma"] = 0.0  # checked once, so it cannot change afterwards
    with pytest.raises(ValueError, match=r"Suppressor.sigm: unknown option of soft_nms 'sigm'; did you mean 'sigma'"):
        Suppressor("soft_nms", {"sigm": 0.5})
    with pytest.raises(ValueError, match=r"Suppressor: iou_threshold must be a finite number >= 0"):
        Suppressor("nms", {"iou_threshold": -1})
    with pytest.raises(ValueError, match=r"class_agnostic must be true or false, got 'yes'"):
        Suppressor("nms", class_agnostic="yes")
