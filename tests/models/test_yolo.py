"""YOLO (v3 style): which scale, anchor and cell answer for an object, decoding by hand, the
default model, the common output dict, and learning a handful of images."""

import math

import pytest
import torch

from detkit.models import build_model
from detkit.models.detectors.yolo import YOLO, assign
from detkit.ops import build_suppressor
from tests.models.conftest import overfit

TINY_ANCHORS = [[[8, 8], [12, 20], [20, 12]], [[24, 24], [32, 48], [48, 32]], [[64, 64], [96, 64], [64, 96]]]
TINY_YOLO = {  # ResNet-18 + a 64-channel FPN on C3..C5, letterboxed to 128 px
    "type": "yolo",
    "num_classes": 5,
    "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1, "norm": "bn", "out_levels": ["C3", "C4", "C5"]},
    "neck": {"type": "fpn", "out_channels": 64, "extra": None},
    "anchors": TINY_ANCHORS,
    "transform": {"min_size": 128, "max_size": 128, "size_divisible": 128},
}
GRIDS, STRIDES = [(16, 16), (8, 8), (4, 4)], [8, 16, 32]  # a 128 x 128 batch


def test_responsible_scale_anchor_and_cell_by_hand():
    targets = [
        # 10 x 18 centred at (20, 28): shape IoU with (12, 20) is 180 / 240 = 0.75, the best of the
        # nine (8 x 8: 0.36, 20 x 12: 0.40, 24 x 24: 0.31): scale 0 (stride 8), anchor 1, cell (2, 3)
        {"boxes": torch.tensor([[15.0, 19.0, 25.0, 37.0]]), "labels": torch.tensor([4])},
        # 80 x 70 centred at (64, 64): 96 x 64 matches best (5120 / 6624 = 0.77 against 64 x 64's
        # 0.73): scale 2 (stride 32), anchor 1, cell (2, 2), the centre on the cell's corner
        {"boxes": torch.tensor([[24.0, 29.0, 104.0, 99.0]]), "labels": torch.tensor([0])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # nothing to assign
    ]
    result = assign(targets, torch.tensor(TINY_ANCHORS, dtype=torch.float32), STRIDES, GRIDS, (128, 128))
    assert result.image.tolist() == [0, 1]
    assert result.level.tolist() == [0, 2] and result.anchor.tolist() == [1, 1]
    assert result.cell_x.tolist() == [2, 2] and result.cell_y.tolist() == [3, 2]
    assert result.index.tolist() == [(3 * 16 + 2) * 3 + 1, (2 * 4 + 2) * 3 + 1]  # (y * W + x) * A + a
    expected = torch.tensor([[0.5, 0.5, math.log(10 / 12), math.log(18 / 20)],
                             [0.0, 0.0, math.log(80 / 96), math.log(70 / 64)]])
    assert torch.allclose(result.offsets, expected, atol=1e-6)
    assert result.labels.tolist() == [4, 0]
    assert torch.allclose(result.weights, torch.tensor([2 - 180 / 128**2, 2 - 5600 / 128**2]))


def test_a_centre_on_the_image_edge_stays_in_the_grid():
    targets = [{"boxes": torch.tensor([[120.0, 120.0, 128.0, 128.0]]), "labels": torch.tensor([1])}]
    result = assign(targets, torch.tensor(TINY_ANCHORS, dtype=torch.float32), STRIDES, GRIDS, (128, 128))
    assert result.level.tolist() == [0] and result.cell_x.tolist() == [15] and result.cell_y.tolist() == [15]


def test_decode_by_hand():
    anchors = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    out = torch.zeros(1, 2 * 2 * 2, 6)  # a 2 x 2 grid, 2 anchors, 1 class
    out[0, 3, :4] = torch.tensor([0.0, 0.0, math.log(2.0), 0.0])  # cell (0, 1), anchor 1, twice as wide
    boxes = YOLO.decode(out, (2, 2), 16, anchors)[0]
    assert torch.allclose(boxes[0], torch.tensor([8 - 5.0, 8 - 10.0, 8 + 5.0, 8 + 10.0]))  # centre (0.5, 0.5) x 16
    assert torch.allclose(boxes[3], torch.tensor([24 - 30.0, 8 - 20.0, 24 + 30.0, 8 + 20.0]))


def test_default_is_yolov3_on_darknet53():
    model = build_model({"type": "yolo", "num_classes": 80})
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 52  # Darknet-53: 52 convolutions (+ the classifier's layer)
    assert model.in_levels == ["P3", "P4", "P5"] and model.anchor_sizes.shape == (3, 3, 2)
    assert [out.out_channels for out in model.head.outputs] == [3 * 85] * 3
    assert model.transform.max_size == 416 and model.transform.size_divisible == 416  # letterbox 416


def test_train_and_eval_on_mixed_sizes_give_the_common_output():
    torch.manual_seed(0)
    model = build_model({**TINY_YOLO, "score_threshold": 0.0})
    images = [torch.rand(3, 96, 160), torch.rand(3, 150, 100)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model.train()(images, targets)
    assert set(losses) == {"box_regression", "objectness", "classification"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        detections = model(images)
    for detection, image in zip(detections, images):
        assert set(detection) == {"boxes", "scores", "labels"} and len(detection["boxes"]) == 100
        h, w = image.shape[-2:]  # in the image's own pixels, the letterbox padding removed
        assert (detection["boxes"][:, 2] <= w + 1e-3).all() and (detection["boxes"][:, 3] <= h + 1e-3).all()
    with pytest.raises(ValueError, match="adaptive_nms needs densities, which YOLO does not predict"):
        model.set_postprocess(build_suppressor({"type": "adaptive_nms"}))


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"model.anchors: need one list of \(w, h\) per scale"):
        build_model({**TINY_YOLO, "anchors": TINY_ANCHORS[:2]})
    with pytest.raises(ValueError, match=r"model.backbone.out_levels|darknet53 out_levels must be among C3, C4, C5"):
        build_model({"type": "yolo", "num_classes": 2, "backbone": {"type": "darknet53", "out_levels": ["C2"]}})


def test_overfits_a_handful_of_images(handful):
    torch.manual_seed(0)
    model = build_model(TINY_YOLO)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                                weight_decay=1e-4)
    history, score, step = overfit(model, handful, optimizer, 200)
    assert sum(history[-10:]) / 10 < 0.5 * sum(history[:10]) / 10  # the loss falls (BCE on tx, ty has a floor)
    assert score >= 0.9, f"AP50 {score:.3f} after {step} steps"


def test_yolo_on_efficientnet_with_a_pyramid_neck():
    config = {**TINY_YOLO, "backbone": {"type": "efficientnet", "variant": "b0", "out_levels": ["C3", "C4", "C5"]},
              "neck": {"type": "bifpn", "width": 32, "repeats": 1, "levels": 3}}
    model = build_model(config)
    assert model.in_levels == ["P3", "P4", "P5"]
    losses = model.train()([torch.rand(3, 100, 120)], [{"boxes": torch.tensor([[5.0, 5.0, 50.0, 60.0]]),
                                                        "labels": torch.tensor([1])}])
    assert set(losses) == {"box_regression", "objectness", "classification"}
    model.eval()
    with torch.no_grad():
        assert set(model([torch.rand(3, 90, 70)])[0]) == {"boxes", "scores", "labels"}
