"""BiFPN: declared shapes on any backbone's levels and odd sizes, gradients, fusion arithmetic."""

import math
from collections import OrderedDict

import pytest
import torch

from detkit.models.backbones.base import ShapeSpec
from detkit.models.detectors.efficientdet import EFFICIENTDET_SCALING
from detkit.models.necks.bifpn import BiFPN, Fusion

EFFICIENTNET_B0 = (40, 112, 320)  # C3..C5 channels
RESNET50 = (512, 1024, 2048)


def _shapes(channels, strides=(8, 16, 32)):
    return OrderedDict((f"C{s.bit_length() - 1}", ShapeSpec(c, s)) for c, s in zip(channels, strides))


def _features(shapes, height, width, batch=2, halve=math.ceil):
    """Random backbone maps of the declared channels; each level's size is ``halve``(size / 2)
    of the one below, ceil as stride-2 convs with padding k // 2 give."""
    out = OrderedDict()
    h, w, stride = height, width, 1
    for lvl, spec in shapes.items():
        while stride < spec.stride:
            h, w, stride = halve(h / 2), halve(w / 2), stride * 2
        out[lvl] = torch.randn(batch, spec.channels, h, w)
    return out


@pytest.mark.parametrize("channels", [EFFICIENTNET_B0, RESNET50])
@pytest.mark.parametrize("size", [(64, 64), (97, 131), (128, 96)])
def test_outputs_have_the_declared_shapes(channels, size):
    shapes = _shapes(channels)
    neck = BiFPN(shapes, width=16, repeats=2)
    assert {lvl: (s.channels, s.stride) for lvl, s in neck.out_shapes.items()} == {
        "P3": (16, 8),
        "P4": (16, 16),
        "P5": (16, 32),
        "P6": (16, 64),
        "P7": (16, 128),
    }
    with torch.no_grad():
        out = neck.eval()(_features(shapes, *size))
    assert list(out) == list(neck.out_shapes)
    for lvl, spec in neck.out_shapes.items():
        assert out[lvl].shape == (2, 16, math.ceil(size[0] / spec.stride), math.ceil(size[1] / spec.stride)), lvl


def test_floor_halved_levels_are_size_matched():
    # 104 -> C3 13, C4 6, C5 3: pooling 13 gives 7, resized to C4's 6
    shapes = _shapes(EFFICIENTNET_B0)
    features = _features(shapes, 104, 104, halve=math.floor)
    with torch.no_grad():
        out = BiFPN(shapes, width=8, repeats=1).eval()(features)
    assert [tuple(t.shape[-2:]) for t in out.values()] == [(13, 13), (6, 6), (3, 3), (2, 2), (1, 1)]


def test_in_levels_and_levels():
    shapes = _shapes((24, 40, 112, 320), strides=(4, 8, 16, 32))
    neck = BiFPN(shapes, in_levels=["C3", "C4"], width=8, repeats=1, levels=4)
    assert list(neck.out_shapes) == ["P3", "P4", "P5", "P6"]
    neck = BiFPN(shapes, width=8, repeats=1, levels=4)  # no pooled level: no extra projection
    assert list(neck.out_shapes) == ["P2", "P3", "P4", "P5"]
    with torch.no_grad():
        out = neck.eval()(_features(shapes, 32, 32, batch=1))
    assert [t.shape[-1] for t in out.values()] == [8, 4, 2, 1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_levels=["C3", "C6"]), "not backbone outputs"),
        (dict(in_levels=["C3", "C5"]), "double in stride"),
        (dict(levels=2), "levels"),
        (dict(repeats=0), "repeats"),
        (dict(attention="mean"), "attention"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BiFPN(_shapes(EFFICIENTNET_B0), **kwargs)


@pytest.mark.parametrize("attention", ["fast", "softmax", "sum"])
def test_gradients_reach_every_parameter(attention):
    torch.manual_seed(0)
    shapes = _shapes(EFFICIENTNET_B0)
    neck = BiFPN(shapes, width=8, repeats=2, attention=attention).train()
    # big enough for P6 to differ from P7 (at 1x1 both are the same map, whose two fusion
    # weights then get equal gradients, zero under softmax)
    out = neck(_features(shapes, 160, 96))
    # a plain sum of BatchNorm outputs does not depend on their inputs in training mode,
    # so weight each output by a fixed random map
    loss = sum((t * torch.randn_like(t)).sum() for t in out.values())
    loss.backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fast_fusion_is_a_normalised_weighted_sum():
    fusion = Fusion(3, "fast")
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([1.0, 3.0, -2.0]))  # relu -> 1, 3, 0
    xs = [torch.full((1, 2, 3, 3), v) for v in (1.0, 2.0, 100.0)]
    expected = (1 * 1.0 + 3 * 2.0 + 0 * 100.0) / (1 + 3 + 0 + 1e-4)
    torch.testing.assert_close(fusion(xs), torch.full((1, 2, 3, 3), expected))


def test_softmax_and_sum_fusions():
    xs = [torch.full((1, 1, 2, 2), v) for v in (4.0, 8.0)]
    softmax = Fusion(2, "softmax")
    with torch.no_grad():
        softmax.weight.copy_(torch.tensor([0.0, math.log(3.0)]))  # softmax -> 1/4, 3/4
    torch.testing.assert_close(softmax(xs), torch.full((1, 1, 2, 2), 4.0 / 4 + 8.0 * 3 / 4))
    plain = Fusion(2, "sum")
    assert not list(plain.parameters())
    torch.testing.assert_close(plain(xs), torch.full((1, 1, 2, 2), 12.0))


def test_fusion_weights_start_at_one():
    neck = BiFPN(_shapes(EFFICIENTNET_B0), width=8, repeats=1)
    weights = [p for name, p in neck.named_parameters() if name.endswith("fusion.weight")]
    assert len(weights) == 8 and all(torch.equal(w, torch.ones_like(w)) for w in weights)


def test_d0_parameter_count():
    d0 = EFFICIENTDET_SCALING["d0"]
    neck = BiFPN(_shapes(EFFICIENTNET_B0), width=d0["width"], repeats=d0["repeats"])
    w = 64
    projections = sum(c * w + 2 * w for c in (40, 112, 320, 320))  # C3, C4, C5, and C5 for P6: 1x1 conv + BN
    node = 9 * w + w * w + 2 * w  # depthwise 3x3 + pointwise 1x1 + BN, no conv bias
    layer = 8 * node + 4 * 2 + 3 * 3 + 2  # 4 top-down, 3 middle and 1 top bottom-up nodes; fusion weights
    assert projections + 3 * layer == 166_457
    assert sum(p.numel() for p in neck.parameters()) == projections + 3 * layer
