"""ResNet backbones: levels, freezing, normalisation, pretrained weights and their errors."""

import urllib.error

import pytest
import torch
import torch.hub
import torchvision

from detkit.models.backbones.base import ShapeSpec
from detkit.models.backbones.resnet import ResNet


@pytest.mark.parametrize("depth,channels", [(18, (64, 128, 256, 512)), (50, (256, 512, 1024, 2048))])
def test_levels_and_declared_shapes(depth, channels):
    net = ResNet(depth).eval()
    assert list(net.out_shapes.values()) == [ShapeSpec(c, s) for c, s in zip(channels, (4, 8, 16, 32))]
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in out.values()] == list(channels)


def test_c4_only_backbone_stops_after_layer3():
    net = ResNet(18, out_levels=["C4"], frozen_stages=3)
    assert not hasattr(net, "layer4") and list(net.out_shapes) == ["C4"]


def test_frozen_stages_and_norm():
    net = ResNet(18, frozen_stages=1, norm="bn")
    net.train()
    assert not net.conv1.weight.requires_grad and not any(p.requires_grad for p in net.layer1.parameters())
    assert all(p.requires_grad for p in net.layer2.parameters())
    assert not net.bn1.training and not net.layer1[0].bn1.training and net.layer2[0].bn1.training
    assert isinstance(ResNet(18).bn1, torchvision.ops.FrozenBatchNorm2d)  # the default: frozen BN
    with pytest.raises(ValueError, match="norm must be 'frozen_bn', 'bn' or 'gn'"):
        ResNet(18, norm="ln")


def test_weights_from_a_local_file_equal_torchvisions(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    net = ResNet(18, weights=str(tmp_path / "r18.pth"), norm="bn").eval()
    assert torch.equal(net.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)


def test_weight_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="resnet18: weights file .*missing.pth does not exist"):
        ResNet(18, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="resnet18: unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        ResNet(18, weights="IMAGENET9K")

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached copy to fall back on
    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    with pytest.raises(RuntimeError, match=r"cannot download ResNet18_Weights.IMAGENET1K_V1 from https://.*pass its path"):
        ResNet(18, weights="IMAGENET1K_V1")


def test_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"resnet18: refusing to load .*evil.pth: it carries pickled code"):
        ResNet(18, weights=str(tmp_path / "evil.pth"))
