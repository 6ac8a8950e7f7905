"""RetinaNet and EfficientDet: the papers' parts, the focal-loss switch, Adaptive-NMS densities,
the common output dict, and learning a handful of images."""

import math

import pytest
import torch
import torch.nn.functional as F

from detkit.config import load_config
from detkit.models import build_model, recalibrate_batchnorm
from detkit.models.detectors.dense import DenseCriterion
from detkit.ops import build_suppressor
from tests.conftest import REPO
from tests.models.conftest import overfit

TINY_RETINANET = {
    "type": "retinanet",
    "num_classes": 5,
    "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1, "norm": "bn", "out_levels": ["C3", "C4", "C5"]},
    "neck": {"type": "fpn", "out_channels": 64, "extra": "p6p7"},
    "head": {"depth": 2},
    "transform": {"min_size": 128, "max_size": 224},
}
TINY_EFFICIENTDET = {
    "type": "efficientdet",
    "scale": "d0",
    "num_classes": 5,
    "neck": {"width": 64, "repeats": 2},
    "head": {"depth": 2},
    "transform": {"min_size": 128, "max_size": 192, "size_divisible": 128},
}
TINY = {"retinanet": TINY_RETINANET, "efficientdet": TINY_EFFICIENTDET}
# EfficientDet (Tan et al., Table 2) parameters at COCO's 90 classes, in millions
PAPER_PARAMS = {"d0": 3.9, "d1": 6.6, "d2": 8.1, "d3": 12.0, "d4": 20.7, "d5": 33.7, "d6": 51.9, "d7": 51.9}


def test_retinanet_is_the_papers():
    model = build_model({"type": "retinanet", "num_classes": 80})  # defaults: ResNet-50, FPN P3..P7
    assert model.in_levels == ["P3", "P4", "P5", "P6", "P7"]
    assert model.anchors.num_anchors() == [9] * 5  # 3 octave scales x 3 aspect ratios
    assert model.anchors.sizes[0] == pytest.approx((32.0, 40.3175, 50.7968), abs=1e-3)
    assert model.anchors.sizes[-1][0] == 512.0
    head = model.head
    for subnet in (head.classification, head.regression):
        assert len(subnet.conv) == 4 and all(block[0].kernel_size == (3, 3) for block in subnet.conv)
    assert head.classification.out.out_channels == 9 * 80 and head.regression.out.out_channels == 9 * 4
    criterion = model.criterion
    assert (criterion.alpha, criterion.gamma, criterion.classification_loss) == (0.25, 2.0, "focal")


@pytest.mark.parametrize("kind", ["retinanet", "efficientdet"])
def test_prior_probability_initialises_the_class_bias(kind):
    # Lin et al.: b = -log((1 - pi) / pi), pi = 0.01, so every anchor starts at p(object) = 0.01
    model = build_model(TINY[kind])
    out = model.head.classification.out
    bias = out.bias if kind == "retinanet" else out[1].bias
    assert torch.allclose(bias, torch.full_like(bias, -math.log(99.0)))
    model.eval()
    with torch.no_grad():
        logits = model.head([torch.zeros(1, model.head.classification.out.in_channels if kind == "retinanet"
                                         else 64, 4, 4)] * 5)["logits"]
    if kind == "retinanet":  # std-0.01 weights on zero features: every probability is pi exactly
        assert torch.allclose(torch.sigmoid(logits), torch.full_like(logits, 0.01), atol=1e-6)
    regression = model.head.regression.out
    assert torch.equal((regression.bias if kind == "retinanet" else regression[1].bias),
                       torch.zeros(regression.out_channels if kind == "retinanet" else regression[1].out_channels))


def hand_case():
    """Three anchors, one object of class 0: anchor 0 is the object (IoU 1, foreground),
    anchor 1 is far (background), anchor 2 overlaps it 0.45 (between 0.4 and 0.5: ignored)."""
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 4.5]])
    outputs = {"logits": torch.tensor([[[0.0, 1.0], [-1.0, 2.0], [5.0, 5.0]]]),
               "deltas": torch.tensor([[[0.1, -0.2, 0.3, 0.0], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]]])}
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0])}]
    return outputs, anchors, targets


def by_hand(x: float, positive: bool, alpha: float, gamma: float) -> float:
    """-alpha_t (1 - p_t)^gamma log p_t, for one logit."""
    p = 1 / (1 + math.exp(-x))
    p_t, alpha_t = (p, alpha) if positive else (1 - p, 1 - alpha)
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


def test_focal_and_cross_entropy_losses_by_hand():
    outputs, anchors, targets = hand_case()
    # valid anchors 0 and 1; targets (1, 0) and (0, 0); one foreground anchor normalises
    elements = [(0.0, True), (1.0, False), (-1.0, False), (2.0, False)]
    focal = DenseCriterion(alpha=0.25, gamma=2.0)(outputs, anchors, targets)
    assert focal["classification"].item() == pytest.approx(sum(by_hand(x, t, 0.25, 2.0) for x, t in elements),
                                                           rel=1e-6)
    assert focal["box_regression"].item() == pytest.approx(0.1 + 0.2 + 0.3, rel=1e-6)  # L1 to a perfect anchor
    # the switch: alpha-balanced cross-entropy, whatever gamma says
    ce = DenseCriterion(classification_loss="cross_entropy", alpha=0.75, gamma=2.0)(outputs, anchors, targets)
    expected = sum(by_hand(x, t, 0.75, 0.0) for x, t in elements)
    assert ce["classification"].item() == pytest.approx(expected, rel=1e-6)
    weights = torch.tensor([0.75, 0.25, 0.25, 0.25])  # and the same as torch's weighted BCE
    peer = F.binary_cross_entropy_with_logits(torch.tensor([0.0, 1.0, -1.0, 2.0]), torch.tensor([1.0, 0, 0, 0]),
                                              weight=weights, reduction="sum")
    assert ce["classification"].item() == pytest.approx(peer.item(), rel=1e-6)
    # an easy background anchor (p = 0.018) weighs (1 - p_t)^2 = 3e-4 as much under the focal loss
    outputs["logits"][0, 1] = torch.tensor([-4.0, -4.0])
    outputs = {k: v.double() for k, v in outputs.items()}  # the difference below needs float64
    easy = [DenseCriterion(classification_loss=loss)(outputs, anchors, targets)["classification"].item()
            - by_hand(0.0, True, 0.25, gamma) - by_hand(1.0, False, 0.25, gamma)
            for loss, gamma in (("focal", 2.0), ("cross_entropy", 0.0))]
    assert easy[0] / easy[1] == pytest.approx((1 / (1 + math.exp(4.0))) ** 2, rel=1e-4)


def test_loss_switch_from_config():
    config = load_config(REPO / "configs" / "retinanet_r50_fpn_ce.yaml")["model"]
    config["backbone"] = {**config["backbone"], "weights": None}
    model = build_model(config)
    assert (model.criterion.classification_loss, model.criterion.gamma, model.criterion.alpha) == \
        ("cross_entropy", 0.0, 0.75)
    with pytest.raises(ValueError, match="criterion.classification_loss must be one of focal, cross_entropy"):
        build_model({**TINY_RETINANET, "criterion": {"classification_loss": "softmax"}})


@pytest.mark.parametrize("scale", list(PAPER_PARAMS))
def test_efficientdet_parameters_match_the_paper(scale):
    model = build_model({"type": "efficientdet", "scale": scale, "num_classes": 90})
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(PAPER_PARAMS[scale], rel=0.05)
    if scale == "d0":
        assert model.transform.min_size == (512,) and model.criterion.gamma == 1.5


@pytest.mark.parametrize("kind", ["retinanet", "efficientdet"])
def test_train_and_eval_on_mixed_sizes_give_the_common_output(kind):
    torch.manual_seed(0)
    model = build_model({**TINY[kind], "score_threshold": 0.0})
    images = [torch.rand(3, 96, 160), torch.rand(3, 150, 100)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # a negative image
    losses = model.train()(images, targets)
    assert set(losses) == {"classification", "box_regression"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        detections = model(images)
    for detection, image in zip(detections, images):
        assert set(detection) == {"boxes", "scores", "labels"}
        assert len(detection["boxes"]) == model.detections_per_image  # threshold 0 keeps a full set
        h, w = image.shape[-2:]
        boxes = detection["boxes"]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert detection["labels"].dtype == torch.int64 and int(detection["labels"].max()) < 5
        assert (detection["scores"][:-1] >= detection["scores"][1:]).all()


def test_densities_flow_into_adaptive_nms():
    torch.manual_seed(0)
    model = build_model({**TINY_RETINANET, "head": {"depth": 2, "density": True}, "score_threshold": 0.0,
                         "detections_per_image": 1000})
    images = [torch.rand(3, 128, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0], [20.0, 12.0, 70.0, 52.0]]),
                "labels": torch.tensor([1, 1])}]
    assert set(model.train()(images, targets)) == {"classification", "box_regression", "density"}
    model.eval()

    def count(postprocess, density_bias):
        model.head.density.predict.weight.data.zero_()  # the density: sigmoid(bias) at every anchor
        model.head.density.predict.bias.data.fill_(density_bias)
        model.set_postprocess(build_suppressor(postprocess))
        with torch.no_grad():
            detection = model(images)[0]
        assert torch.allclose(detection["densities"], torch.sigmoid(torch.tensor(density_bias)), atol=0.05)
        return len(detection["boxes"])

    hard = count({"type": "nms", "iou_threshold": 0.5}, -10.0)
    # low densities: N_M = max(Nt, d_M) = Nt, Adaptive-NMS is NMS
    assert count({"type": "adaptive_nms", "iou_threshold": 0.5}, -10.0) == hard
    # a dense crowd everywhere (d ~ 0.99): only near-duplicates are suppressed, so far more survive
    assert count({"type": "adaptive_nms", "iou_threshold": 0.5}, 5.0) > 2 * hard
    with pytest.raises(ValueError, match="adaptive_nms needs densities: enable the density head"):
        build_model(TINY_RETINANET).set_postprocess(build_suppressor({"type": "adaptive_nms"}))


def test_retinanet_density_subnet_is_the_papers_and_each_detection_reads_its_anchor():
    """Beside the class and box subnets: a 1x1 reduction of each level concatenated with the level's
    A*K class logits and 4A offsets, a 5x5 conv to A densities, flattened in the anchors' order
    (the logits' order); and each detection reports the density of the anchor it came from."""
    torch.manual_seed(0)
    model = build_model({**TINY_RETINANET, "head": {"depth": 1, "density": True}}).eval()
    head, subnet = model.head, model.head.density
    assert subnet.reduce.kernel_size == (1, 1) and subnet.reduce.out_channels == 128
    assert subnet.predict.kernel_size == (5, 5) and subnet.predict.in_channels == 128 + 9 * (5 + 4)
    assert subnet.predict.out_channels == 9
    features = [torch.randn(1, 64, 6, 5), torch.randn(1, 64, 3, 3)]
    with torch.no_grad():
        out = head(features)
        logits = [head.classification(f) for f in features]
        maps = subnet(features, logits, [head.regression(f) for f in features])
    level, a, y, x = 1, 4, 2, 1
    index = 6 * 5 * 9 + (y * 3 + x) * 9 + a  # level 0's anchors first; cell-major, then anchor
    assert float(out["densities"][0, index]) == pytest.approx(float(maps[level][0, a, y, x]))
    assert torch.allclose(out["logits"][0, index], logits[level][0, a * 5:(a + 1) * 5, y, x])

    # detect(): silenced offsets make each detection's box its anchor; a distinct density per anchor
    anchors = [torch.tensor([[10.0, 10.0, 40.0, 40.0], [60.0, 60.0, 90.0, 90.0]]), torch.tensor([[5.0, 70.0, 50.0, 120.0]])]
    logits = torch.full((1, 3, 5), -10.0)
    logits[0, [0, 1, 2], [1, 3, 0]] = 5.0  # each anchor confident in one class
    outputs = {"logits": logits, "deltas": torch.zeros(1, 3, 4), "densities": torch.tensor([[0.61, 0.72, 0.83]])}
    model.set_postprocess(build_suppressor({"type": "none"}))
    (detection,) = model.detect(outputs, anchors, [2, 1], [(128, 128)])
    by_box = {tuple(b.tolist()): float(d) for b, d in zip(detection["boxes"], detection["densities"])}
    assert by_box == pytest.approx({(10.0, 10.0, 40.0, 40.0): 0.61, (60.0, 60.0, 90.0, 90.0): 0.72,
                                    (5.0, 70.0, 50.0, 120.0): 0.83})


@pytest.mark.parametrize("kind", ["retinanet", "efficientdet"])
def test_overfits_a_handful_of_images(kind, handful):
    index, images, targets = handful
    torch.manual_seed(0)
    model = build_model(TINY[kind])
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "retinanet":
        optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    else:  # separable convs and swish learn faster with AdamW from scratch
        optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)

    def recalibrate(model):
        # BatchNorm momentum 0.01 (EfficientDet's) averages ~100 steps: recompute the statistics
        # of the current weights before evaluating, as a short run's user would
        recalibrate_batchnorm(model, [(images, targets)])

    history, score, step = overfit(model, handful, optimizer, 240, before_eval=recalibrate)
    assert sum(history[-10:]) / 10 < 0.2 * sum(history[:10]) / 10  # the loss falls
    assert score >= 0.9, f"AP50 {score:.3f} after {step} steps"


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"model.anchors.ratios: unknown option; did you mean 'aspect_ratios'\?"):
        build_model({**TINY_RETINANET, "anchors": {"ratios": [1.0]}})
    with pytest.raises(ValueError, match=r"model.scale: unknown scale 'd9'"):
        build_model({**TINY_EFFICIENTDET, "scale": "d9"})
    with pytest.raises(ValueError, match=r"model.head.deph: unknown option; did you mean 'depth'\?"):
        build_model({**TINY_RETINANET, "head": {"deph": 2}})
