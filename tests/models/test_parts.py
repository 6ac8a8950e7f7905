"""The parts every detector reuses: anchors, box coding, matching, sampling, transform, FPN."""

import math

import pytest
import torch
import torchvision
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detkit.models.anchors import AnchorGenerator, octave_sizes
from detkit.models.backbones.base import ShapeSpec
from detkit.models.coders import BoxCoder
from detkit.models.matchers import BACKGROUND, IGNORED, BalancedSampler, Matcher
from detkit.models.necks.fpn import FPN
from detkit.models.transform import DetectionTransform


def test_base_anchors_by_hand():
    base = AnchorGenerator([(32,)], [(0.5, 1.0, 2.0)]).cell_anchors[0]
    # ratio h/w = 0.5: w = 32 / sqrt(0.5) = 45.25, h = 22.63 -> rounded half extents 23, 11
    assert base.tolist() == [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]]


def test_anchor_order_and_shifts():
    generator = AnchorGenerator([(16, 32)], [(1.0,)])
    (anchors,) = generator((64, 64), [(2, 3)], torch.float32, "cpu")
    assert anchors.shape == (2 * 3 * 2, 4)
    # cell (y=1, x=2) is cell 5; its second anchor (size 32) is row 5 * 2 + 1; strides: 64 // 2 = 32 in y,
    assert anchors[11].tolist() == [2 * 21 - 16, 1 * 32 - 16, 2 * 21 + 16, 1 * 32 + 16]  # stride_x = 64 // 3 = 21


def test_anchors_equal_torchvisions():
    sizes, ratios = ((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3
    ours = AnchorGenerator(sizes, ratios)
    theirs = TVAnchorGenerator(sizes, ratios)
    feature_sizes = [(25, 38), (13, 19), (7, 10)]
    images = ImageList(torch.zeros(1, 3, 800, 1216), [(800, 1200)])
    expected = theirs(images, [torch.zeros(1, 1, h, w) for h, w in feature_sizes])[0]
    actual = torch.cat(ours((800, 1216), feature_sizes, torch.float32, "cpu"))
    assert torch.equal(actual, expected)
    assert octave_sizes(32) == pytest.approx((32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)))


def test_box_coding_round_trip_and_by_hand():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    reference = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    boxes = torch.tensor([[2.0, 4.0, 12.0, 44.0]])  # centre (7, 24) vs (5, 10); w same; h doubled
    offsets = coder.encode(boxes, reference)
    assert offsets[0].tolist() == pytest.approx([10 * 2 / 10, 10 * 14 / 20, 0.0, 5 * math.log(2)])
    assert torch.allclose(coder.decode(offsets, reference)[:, 0], boxes, atol=1e-5)
    clipped = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), reference)  # dw clamped at log(1000/16)
    assert (clipped[0, 0, 2] - clipped[0, 0, 0]).item() == pytest.approx(10 * 1000 / 16, rel=1e-5)


def test_matcher_rules():
    iou = torch.tensor([[0.9, 0.5, 0.2, 0.1], [0.1, 0.65, 0.25, 0.0]])
    assert Matcher(0.7, 0.3)(iou).tolist() == [0, IGNORED, BACKGROUND, BACKGROUND]
    # low-quality matching: ground truth 1 has no anchor >= 0.7, its best anchor (1) becomes its match
    assert Matcher(0.7, 0.3, allow_low_quality=True)(iou).tolist() == [0, 1, BACKGROUND, BACKGROUND]


def test_sampler_balances():
    torch.manual_seed(0)
    labels = torch.tensor([1] * 10 + [0] * 1000 + [-1] * 50)
    pos, neg = BalancedSampler(256, 0.5)(labels)
    assert len(pos) == 10 and len(neg) == 246  # few positives: negatives fill the batch
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all() and len(set(neg.tolist())) == 246


def test_transform_equals_torchvisions():
    images = [torch.rand(3, 200, 300), torch.rand(3, 181, 243)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 100.0, 150.0]])}] * 2
    ours = DetectionTransform(320, 512).eval()
    theirs = GeneralizedRCNNTransform(320, 512, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
    batch, our_targets = ours(images, targets)
    image_list, their_targets = theirs(images, [dict(t) for t in targets])
    assert torch.equal(batch.tensors, image_list.tensors)
    assert batch.image_sizes == [tuple(s) for s in image_list.image_sizes]
    assert torch.equal(our_targets[0]["boxes"], their_targets[0]["boxes"])
    assert targets[0]["boxes"][0, 0] == 10.0  # the caller's targets are untouched
    uint8 = ours([(images[0] * 255).round().to(torch.uint8)])[0].tensors  # uint8 input is scaled
    assert uint8.dtype == torch.float32


@pytest.mark.parametrize("norm", [False, True])
def test_fpn_equals_torchvisions(norm):
    shapes = {"C2": ShapeSpec(64, 4), "C3": ShapeSpec(128, 8), "C4": ShapeSpec(256, 16), "C5": ShapeSpec(512, 32)}
    ours = FPN(shapes, out_channels=32, extra="pool", norm=norm).eval()
    theirs = torchvision.ops.FeaturePyramidNetwork(
        [64, 128, 256, 512], 32, torchvision.ops.feature_pyramid_network.LastLevelMaxPool(),
        norm_layer=torch.nn.BatchNorm2d if norm else None).eval()
    state = {k.replace("inner_blocks", "lateral").replace("layer_blocks", "output"): v
             for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state)
    features = {k: torch.rand(1, s.channels, 64 // s.stride * 4, 96 // s.stride * 4) for k, s in shapes.items()}
    expected = list(theirs(dict(zip("0123", features.values()))).values())
    actual = ours(features)
    assert list(actual) == ["P2", "P3", "P4", "P5", "P6"]
    assert list(ours.out_shapes.values()) == [ShapeSpec(32, s) for s in (4, 8, 16, 32, 64)]
    assert all(torch.equal(a, e) for a, e in zip(actual.values(), expected))


def test_fpn_p6p7_from_input_or_output():
    shapes = {"C3": ShapeSpec(16, 8), "C4": ShapeSpec(32, 16), "C5": ShapeSpec(64, 32)}
    for source in ("output", "input"):
        fpn = FPN(shapes, out_channels=8, extra="p6p7", extra_from=source)
        out = fpn({k: torch.rand(1, s.channels, 256 // s.stride, 256 // s.stride) for k, s in shapes.items()})
        assert list(out) == ["P3", "P4", "P5", "P6", "P7"]
        assert [v.shape[-1] for v in out.values()] == [32, 16, 8, 4, 2]
        assert fpn.p6.in_channels == (64 if source == "input" else 8)
