"""SSD: the paper's SSD300, hard negative mining by hand, SSD heads on other backbones, the
common output dict, and learning a handful of images."""

import pytest
import torch
import torch.nn.functional as F

from detkit.models import build_model
from detkit.models.detectors.ssd import SSDCriterion
from detkit.ops import build_suppressor
from tests.models.conftest import overfit

TINY_SSD = {  # SSD heads on ResNet-18 + FPN P3..P7, 128 px
    "type": "ssd",
    "num_classes": 5,
    "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1, "norm": "bn", "out_levels": ["C3", "C4", "C5"]},
    "neck": {"type": "fpn", "out_channels": 64, "extra": "p6p7"},
    "anchors": {"aspect_ratios": [[2]] * 5, "scales": [0.1, 0.2, 0.37, 0.54, 0.71, 0.88], "steps": [8, 16, 32, 64, 128]},
    "transform": {"fixed_size": [128, 128], "min_size": 128, "max_size": 128, "mean": [0.485, 0.456, 0.406],
                  "std": [0.229, 0.224, 0.225], "size_divisible": 32},
}


def test_ssd300_is_the_papers():
    model = build_model({"type": "ssd", "num_classes": 20})  # the defaults: SSD300 on VGG-16
    assert model.in_levels == ["conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]
    assert model.anchors.num_anchors() == [4, 6, 6, 6, 4, 4]
    assert [conv.out_channels for conv in model.head.classification] == [4 * 21, 6 * 21, 6 * 21, 6 * 21, 4 * 21, 4 * 21]
    assert model.transform.fixed_size == (300, 300)
    model.eval()
    with torch.no_grad():
        maps = model.backbone(torch.zeros(1, 3, 300, 300))
    boxes = model.anchors((300, 300), [m.shape[-2:] for m in maps.values()], torch.float32, "cpu")
    assert sum(len(b) for b in boxes) == 8732  # the paper's default-box count
    assert model.criterion.negative_ratio == 3.0


def test_hard_negative_mining_by_hand():
    # 6 default boxes, one object of class 0 matching box 0 exactly: 1 positive, so the 3 hardest
    # of the 5 negatives (highest background loss) enter the classification loss
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10],
                            [80, 0, 90, 10], [100, 0, 110, 10]])
    logits = torch.tensor([[0.0, 2.0], [0.0, 3.0], [0.0, -1.0], [0.0, 1.0], [0.0, 0.5], [0.0, -2.0]])[None]
    outputs = {"logits": logits, "deltas": torch.zeros(1, 6, 4)}
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}]
    losses = SSDCriterion()(outputs, anchors, targets)
    ce = F.cross_entropy(logits[0], torch.tensor([1, 0, 0, 0, 0, 0]), reduction="none")
    assert losses["classification"].item() == pytest.approx((ce[0] + ce[1] + ce[3] + ce[4]).item(), rel=1e-6)
    assert losses["box_regression"].item() == pytest.approx(0.0, abs=1e-6)  # a perfect default box
    ratio_1 = SSDCriterion(negative_ratio=1.0)(outputs, anchors, targets)
    assert ratio_1["classification"].item() == pytest.approx((ce[0] + ce[1]).item(), rel=1e-6)


def test_each_object_gets_its_best_default_box_below_the_threshold():
    anchors = torch.tensor([[0.0, 0, 100, 100], [200, 200, 210, 210]])
    matched = SSDCriterion().match(torch.tensor([[0.0, 0, 30, 30]]), anchors)  # IoU 0.09 < 0.5
    assert matched.tolist() == [0, -1]


def test_train_and_eval_on_mixed_sizes_give_the_common_output():
    torch.manual_seed(0)
    model = build_model({**TINY_SSD, "score_threshold": 0.0})
    images = [torch.rand(3, 96, 160), torch.rand(3, 150, 100)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model.train()(images, targets)
    assert set(losses) == {"classification", "box_regression"} and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        detections = model(images)
    for detection, image in zip(detections, images):
        assert set(detection) == {"boxes", "scores", "labels"} and len(detection["boxes"]) == 200
        h, w = image.shape[-2:]  # back in the image's own pixels
        assert (detection["boxes"][:, 2] <= w + 1e-3).all() and (detection["boxes"][:, 3] <= h + 1e-3).all()
        assert int(detection["labels"].min()) >= 0 and int(detection["labels"].max()) < 5
    model.set_postprocess(build_suppressor({"type": "soft_nms", "method": "linear"}))
    with torch.no_grad():
        assert len(model(images[:1])[0]["boxes"]) == 200
    with pytest.raises(ValueError, match="adaptive_nms needs densities, which SSD does not predict"):
        model.set_postprocess(build_suppressor({"type": "adaptive_nms"}))


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"model.anchors: 6 levels of default boxes for 5 feature maps"):
        build_model({**TINY_SSD, "anchors": {}})
    with pytest.raises(ValueError, match=r"criterion.negative_ratio must be > 0, got 0"):
        build_model({**TINY_SSD, "criterion": {"negative_ratio": 0}})


def test_overfits_a_handful_of_images(handful):
    torch.manual_seed(0)
    model = build_model(TINY_SSD)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                                weight_decay=1e-4)
    history, score, step = overfit(model, handful, optimizer, 200)
    assert sum(history[-10:]) / 10 < 0.2 * sum(history[:10]) / 10
    assert score >= 0.9, f"AP50 {score:.3f} after {step} steps"


def test_ssd_heads_on_efficientnet_with_bifpn():
    config = {**TINY_SSD, "backbone": {"type": "efficientnet", "variant": "b0", "out_levels": ["C3", "C4", "C5"]},
              "neck": {"type": "bifpn", "width": 32, "repeats": 1}}
    model = build_model(config)
    assert model.in_levels == ["P3", "P4", "P5", "P6", "P7"]
    target = {"boxes": torch.tensor([[5.0, 5.0, 50.0, 60.0]]), "labels": torch.tensor([1])}
    # two images: BatchNorm needs more than one value per channel on the 1 x 1 P7 map
    losses = model.train()([torch.rand(3, 100, 120), torch.rand(3, 80, 90)], [target, target])
    assert all(torch.isfinite(v) for v in losses.values())
