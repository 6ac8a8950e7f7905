"""Faster R-CNN: the paper's RPN, learning on a handful of images, swappable post-processing."""

import copy

import pytest
import torch

from detkit.models import build_model
from detkit.ops import build_suppressor
from tests.models.conftest import ap50

TINY = {
    "type": "faster_rcnn",
    "num_classes": 5,
    "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1, "norm": "bn"},
    "neck": {"type": "fpn", "out_channels": 64},
    "rpn": {"pre_nms_top_n": [600, 300], "post_nms_top_n": [300, 100]},
    "roi_heads": {"box_head": {"type": "two_mlp", "representation": 256}, "batch_per_image": 128},
    "transform": {"min_size": 128, "max_size": 224},
}


def test_default_rpn_is_the_papers_9_anchors():
    model = build_model({"type": "faster_rcnn", "num_classes": 80})  # the defaults: ResNet-50, FPN P2..P6
    head = model.rpn.head
    assert head.objectness.out_channels == 9 and head.objectness.kernel_size == (1, 1)
    assert head.deltas.out_channels == 36 and head.deltas.kernel_size == (1, 1)
    assert model.rpn.in_levels == ["P2", "P3", "P4", "P5", "P6"] and model.rpn.anchors.num_anchors() == [9] * 5
    assert model.rpn.anchors.sizes[0] == pytest.approx((32.0, 40.3175, 50.7968), abs=1e-3)  # 3 octaves on P2
    assert model.rpn.anchors.aspect_ratios[0] == (0.5, 1.0, 2.0)


def test_c4_rpn_on_a_single_map():
    model = build_model({"type": "faster_rcnn", "num_classes": 3, "neck": None,
                         "backbone": {"type": "resnet", "depth": 18, "out_levels": ["C4"]},
                         "transform": {"min_size": 96, "max_size": 128}})
    assert model.rpn.in_levels == ["C4"] and model.rpn.anchors.sizes == [(128.0, 256.0, 512.0)]
    assert model.rpn.head.objectness.out_channels == 9
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 100, 120)])
    assert set(out[0]) == {"boxes", "scores", "labels"}


@pytest.fixture(scope="module")
def trained(handful):
    index, images, targets = handful
    torch.manual_seed(0)
    model = build_model({**TINY, "roi_heads": {**TINY["roi_heads"], "density_head": True}})
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    history, score = [], 0.0
    for step in range(1, 161):
        model.train()
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        if step % 20 == 0:
            score = ap50(model, index, images, targets)
            if score >= 0.9 and step >= 60:
                break
    return model, history, score


def test_overfits_a_handful_of_images(trained):
    model, history, score = trained
    assert set(model.train()([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[4.0, 4, 30, 30]]),
                                                         "labels": torch.tensor([1])}])) == {
        "rpn_objectness", "rpn_box", "classifier", "box", "density"}
    assert sum(history[-10:]) / 10 < 0.3 * sum(history[:10]) / 10  # the loss falls
    assert score >= 0.9


def test_postprocess_is_swapped_without_retraining(trained, handful):
    model, _, _ = trained
    index, images, targets = handful
    model.eval()
    with torch.no_grad():
        hard = model(images)
        model.set_postprocess(build_suppressor({"type": "soft_nms", "method": "gaussian", "score_threshold": 0.01}))
        soft = model(images)
        model.set_postprocess(build_suppressor({"type": "adaptive_nms", "iou_threshold": 0.5}))
        adaptive = model(images)
        model.set_postprocess(build_suppressor({"type": "nms", "iou_threshold": 0.5}))
    assert sum(len(d["boxes"]) for d in soft) > sum(len(d["boxes"]) for d in hard)  # Soft-NMS keeps decayed boxes
    for d in adaptive:  # densities came from the density head, in [0, 1]
        assert "densities" in d and d["densities"].shape == d["scores"].shape
        assert ((d["densities"] >= 0) & (d["densities"] <= 1)).all()


def test_adaptive_nms_receives_the_densities(trained, handful, monkeypatch):
    model, _, _ = trained
    _, images, _ = handful
    model = copy.deepcopy(model).eval()
    model.set_postprocess(build_suppressor({"type": "adaptive_nms"}))
    seen = []
    import detkit.ops.suppression as suppression

    original = suppression.batched_adaptive_nms

    def spy(boxes, scores, idxs, densities, iou_threshold, **kwargs):
        seen.append(densities)
        return original(boxes, scores, idxs, densities, iou_threshold, **kwargs)

    monkeypatch.setattr(suppression, "batched_adaptive_nms", spy)
    with torch.no_grad():
        model(images[:1])
    assert len(seen) == 1 and seen[0] is not None and len(seen[0]) > 0


def test_adaptive_nms_without_a_density_head_is_refused():
    model = build_model(TINY)
    with pytest.raises(ValueError, match="postprocess: adaptive_nms needs densities: enable the density head"):
        model.set_postprocess(build_suppressor({"type": "adaptive_nms"}))


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"model.rpn.pre_nms_topn: unknown option; did you mean 'pre_nms_top_n'\?"):
        build_model({**TINY, "rpn": {"pre_nms_topn": [1, 2]}})
    with pytest.raises(ValueError, match=r"model.backbone.type: unknown type 'resnt'; did you mean 'resnet'\?"):
        build_model({**TINY, "backbone": {"type": "resnt"}})
    with pytest.raises(ValueError, match=r"model.num_classes must be a positive integer"):
        build_model({**TINY, "num_classes": 0})
    with pytest.raises(ValueError, match=r"model.postprocess.type: unknown type 'nsm'; did you mean 'nms'\?"):
        build_model({**TINY, "postprocess": {"type": "nsm"}})


def test_every_suppressor_of_the_model_is_configured_as_postprocess():
    from detkit.ops import Suppressor

    model = build_model({**TINY, "rpn": {**TINY["rpn"], "postprocess": {"type": "soft_nms", "method": "linear"}},
                         "postprocess": {"type": "diou_nms", "iou_threshold": 0.6}, "roi_heads": {
                             **TINY["roi_heads"], "detections_per_image": 7}})
    assert model.rpn.postprocess == Suppressor("soft_nms", {"method": "linear"})
    assert model.postprocess == Suppressor("diou_nms", {"iou_threshold": 0.6}) and model.detections_per_image == 7
    defaults = build_model(TINY)  # the constructors' defaults: Ren et al.'s 0.7 for proposals, 0.5 for detections
    assert defaults.rpn.postprocess == Suppressor("nms", {"iou_threshold": 0.7})
    assert defaults.postprocess == Suppressor("nms", {"iou_threshold": 0.5}) and defaults.detections_per_image == 100
    defaults.set_postprocess(Suppressor("soft_nms"), cap=5)
    assert defaults.roi_heads.postprocess.type == "soft_nms" and defaults.roi_heads.detections_per_image == 5
    defaults.set_postprocess(Suppressor("nms"))  # the cap stays
    assert defaults.detections_per_image == 5


def test_the_old_rpn_suppressor_key_says_its_new_name():
    with pytest.raises(ValueError, match=r"model.rpn.suppressor is now model.rpn.postprocess"):
        build_model({**TINY, "rpn": {"suppressor": {"type": "nms", "iou_threshold": 0.7}}})


def test_set_postprocess_takes_a_suppressor():
    model = build_model(TINY)
    with pytest.raises(ValueError, match=r"must be a detkit.ops.Suppressor, got dict"):
        model.set_postprocess({"type": "soft_nms"})
    with pytest.raises(ValueError, match=r"detections_per_image must be a positive integer, got 0"):
        model.set_postprocess(build_suppressor({"type": "nms"}), cap=0)
