"""GroupNorm variants (issue 17, He et al.'s recipe for training from scratch): ResNet and
EfficientNet backbones, the FPN and BiFPN necks, the RPN's and EfficientDet's heads build with
GroupNorm, train a step, and save and load."""

import io

import pytest
import torch
from torch import nn

from detkit.models import build_model

GN_FASTER_RCNN = {
    "type": "faster_rcnn", "num_classes": 3,
    "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1, "norm": "gn"},
    "neck": {"type": "fpn", "out_channels": 32, "norm": "gn"},
    "rpn": {"pre_nms_top_n": [200, 100], "post_nms_top_n": [100, 50], "head_norm": "gn"},
    "roi_heads": {"box_head": {"type": "two_mlp", "representation": 64}, "batch_per_image": 32},
    "transform": {"min_size": 96, "max_size": 96},
}
GN_RETINANET = {
    "type": "retinanet", "num_classes": 3,
    "backbone": {"type": "efficientnet", "variant": "b0", "frozen_stages": -1, "norm": "gn",
                 "out_levels": ["C3", "C4", "C5"]},
    "neck": {"type": "fpn", "out_channels": 32, "extra": "p6p7", "norm": "gn"},
    "head": {"depth": 1},
    "transform": {"min_size": 96, "max_size": 96},
}
GN_EFFICIENTDET = {
    "type": "efficientdet", "scale": "d0", "num_classes": 3,
    "backbone": {"frozen_stages": -1, "norm": "gn"}, "neck": {"norm": "gn", "repeats": 1},
    "head": {"norm": "gn", "depth": 1, "density": True},
    "transform": {"min_size": 128, "max_size": 128},
}
TARGETS = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [40.0, 30.0, 90.0, 80.0]]), "labels": torch.tensor([0, 2])}]


@pytest.mark.parametrize("config", [GN_FASTER_RCNN, GN_RETINANET, GN_EFFICIENTDET],
                         ids=["resnet-fpn-rpn", "efficientnet-fpn", "efficientnet-bifpn-head"])
def test_group_norm_variants_build_train_a_step_and_round_trip(config):
    torch.manual_seed(0)
    model = build_model(config)
    norms = [m for m in model.modules() if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d))]
    assert norms and all(isinstance(m, nn.GroupNorm) for m in norms)  # no BatchNorm left anywhere
    assert all(m.num_channels % m.num_groups == 0 and m.num_groups <= 32 for m in norms)
    size = config["transform"]["min_size"]
    images = [torch.rand(3, size, size)]
    losses = model.train()(images, TARGETS)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for m in norms for p in m.parameters())  # GroupNorm's affine learns
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    again = build_model(config)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    model.eval(), again.eval()
    with torch.no_grad():
        first, second = model(images)[0], again(images)[0]
    assert torch.equal(first["boxes"], second["boxes"]) and torch.equal(first["scores"], second["scores"])


def test_efficientnet_group_norm_divides_its_channels():
    """32 groups where the channels allow it, else the largest divisor below 32 (B0's 16, 24, 40)."""
    from detkit.models.backbones.efficientnet import EfficientNet

    groups = {m.num_channels: m.num_groups for m in EfficientNet("b0", norm="gn").modules()
              if isinstance(m, nn.GroupNorm)}
    assert groups[16] == 16 and groups[24] == 8 and groups[40] == 8 and groups[32] == 32 and groups[96] == 32


def test_group_norm_refuses_pretrained_weights_and_unknown_norms():
    from detkit.models.backbones.resnet import ResNet
    from detkit.models.necks.fpn import FPN

    with pytest.raises(ValueError, match=r"resnet18: norm 'gn' trains from scratch .* hold BatchNorm statistics"):
        ResNet(18, norm="gn", weights="DEFAULT")
    with pytest.raises(ValueError, match=r"norm must be 'frozen_bn', 'bn' or 'gn', got 'ln'"):
        ResNet(18, norm="ln")
    with pytest.raises(ValueError, match=r"fpn norm must be false, true \(or 'bn'\) or 'gn', got 'ln'"):
        FPN(ResNet(18, norm="gn").out_shapes, norm="ln")
    with pytest.raises(ValueError, match=r"bifpn norm must be false, true \(or 'bn'\) or 'gn', got 'ln'"):
        build_model({**GN_EFFICIENTDET, "neck": {"norm": "ln"}})
    with pytest.raises(ValueError, match=r"rpn head_norm must be false, true \(or 'bn'\) or 'gn', got 'ln'"):
        build_model({**GN_FASTER_RCNN, "rpn": {"head_norm": "ln"}})
    with pytest.raises(ValueError, match=r"efficientdet head norm must be 'bn' or 'gn', got 'ln'"):
        build_model({**GN_EFFICIENTDET, "head": {"norm": "ln"}})
