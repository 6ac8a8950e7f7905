"""EfficientNet backbone: levels and channels, truncation, freezing, norms, weights."""

import urllib.error

import pytest
import torch
import torch.hub
import torchvision
from torch import nn
from torchvision.models._utils import _make_divisible
from torchvision.ops import FrozenBatchNorm2d

from detkit.models.backbones.efficientnet import EfficientNet

WIDTH_MULT = {"b0": 1.0, "b1": 1.0, "b2": 1.1, "b3": 1.2, "b4": 1.4, "b5": 1.6, "b6": 1.8, "b7": 2.0}
ALL_LEVELS = ("C1", "C2", "C3", "C4", "C5")


@pytest.mark.parametrize("variant", list(WIDTH_MULT))
def test_every_variant_declares_the_paper_channels(variant):
    # EfficientNet paper, Table 1: B0 stages end with 16, 24, 40, (80), 112, (192), 320 channels,
    # scaled by the variant's width multiplier and rounded to multiples of 8 as torchvision does
    model = EfficientNet(variant, out_levels=ALL_LEVELS)
    expected = [_make_divisible(c * WIDTH_MULT[variant], 8) for c in (16, 24, 40, 112, 320)]
    assert list(model.out_shapes) == list(ALL_LEVELS)
    assert [s.channels for s in model.out_shapes.values()] == expected
    assert [s.stride for s in model.out_shapes.values()] == [2, 4, 8, 16, 32]


def test_b0_taps_are_the_efficientdet_ones():
    shapes = EfficientNet("b0").out_shapes
    assert {lvl: (s.channels, s.stride) for lvl, s in shapes.items()} == {
        "C3": (40, 8),
        "C4": (112, 16),
        "C5": (320, 32),
    }


@pytest.mark.parametrize("variant", ["b0", "b3"])
def test_outputs_match_the_declaration(variant):
    model = EfficientNet(variant, out_levels=ALL_LEVELS).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert list(out) == list(model.out_shapes)
    for lvl, spec in model.out_shapes.items():
        assert out[lvl].shape == (1, spec.channels, 64 // spec.stride, 64 // spec.stride)


def test_matches_torchvision_features_with_the_same_weights(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.efficientnet_b0()
    for m in net.modules():  # non-trivial statistics, so that frozen_bn must carry them over
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    net.eval()
    path = tmp_path / "b0.pth"
    torch.save(net.state_dict(), path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        c3 = net.features[:4](x)
        c4 = net.features[4:6](c3)
        c5 = net.features[6:8](c4)
        for norm in ("bn", "frozen_bn"):
            out = EfficientNet("b0", norm=norm, weights=str(path)).eval()(x)
            for got, expected in zip(out.values(), (c3, c4, c5)):
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_stages_after_the_last_level_are_not_kept():
    model = EfficientNet("b0", out_levels=("C3",))
    assert model.stage_names == ["stem", "stage1", "stage2", "stage3"]
    assert not hasattr(model, "stage4")
    model = EfficientNet("b0", out_levels=("C4", "C2")).eval()
    assert list(model.out_shapes) == ["C2", "C4"]
    assert model.stage_names[-1] == "stage5"
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert [tuple(t.shape) for t in out.values()] == [(1, 24, 8, 8), (1, 112, 2, 2)]


@pytest.mark.parametrize("levels", [("C6",), ("P3",), ("C3", "C0"), ()])
def test_unknown_levels_raise(levels):
    with pytest.raises(ValueError, match="out_levels"):
        EfficientNet("b0", out_levels=levels)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variant="b8"), "variant"),
        (dict(variant="v2_s"), "variant"),
        (dict(frozen_stages=5), "frozen_stages"),
        (dict(frozen_stages=-2), "frozen_stages"),
        (dict(norm="ln"), "norm"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EfficientNet(**kwargs)


def _batchnorms(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize(
    "frozen_stages, frozen",
    [
        (-1, []),
        (0, ["stem"]),
        (1, ["stem", "stage1", "stage2"]),  # up to C2
        (2, ["stem", "stage1", "stage2", "stage3"]),  # up to C3
        (3, ["stem", "stage1", "stage2", "stage3", "stage4", "stage5"]),  # up to C4
        (4, ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7"]),
    ],
)
def test_frozen_stages_freeze_up_to_their_level(frozen_stages, frozen):
    model = EfficientNet("b0", frozen_stages=frozen_stages).train()
    for name in model.stage_names:
        stage = getattr(model, name)
        is_frozen = name in frozen
        assert all(p.requires_grad != is_frozen for p in stage.parameters()), name
        assert all(bn.training != is_frozen for bn in _batchnorms(stage)), name
    model.train(False).train()  # train() again after eval() leaves the frozen stages in eval mode
    assert all(not bn.training for name in frozen for bn in _batchnorms(getattr(model, name)))


def test_frozen_stages_beyond_the_kept_stages_freeze_what_is_kept():
    model = EfficientNet("b0", out_levels=("C3",), frozen_stages=4)
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("variant, eps", [("b0", 1e-5), ("b5", 1e-3)])
def test_frozen_bn_replaces_every_batchnorm_keeping_eps(variant, eps):
    model = EfficientNet(variant, out_levels=("C2",), norm="frozen_bn")
    frozen = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and not _batchnorms(model)
    assert all(m.eps == eps for m in frozen)
    assert all(bn.eps == eps for bn in _batchnorms(EfficientNet(variant, out_levels=("C2",))))


def test_missing_weights_file_raises(tmp_path):
    path = tmp_path / "nowhere" / "b0.pth"
    with pytest.raises(ValueError, match="b0.pth"):
        EfficientNet("b0", weights=str(path))


def test_unknown_weights_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        EfficientNet("b0", weights="IMAGENET1K_V9")


def test_weights_without_network_name_the_url_and_the_local_file_way(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached download to fall back on
    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    url = torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1.url
    with pytest.raises(RuntimeError, match="pass its path") as error:
        EfficientNet("b0", weights="IMAGENET1K_V1")
    assert url in str(error.value)
    assert not list(tmp_path.rglob("*.pth"))
