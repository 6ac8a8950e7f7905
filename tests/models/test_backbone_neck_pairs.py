"""Every backbone with every neck: builds, runs, and emits what it declares."""

import pytest
import torch

from detkit.models import build_backbone, build_model, build_neck

BACKBONES = [{"type": "resnet", "depth": d} for d in (18, 34, 50, 101)] + [
    {"type": "efficientnet", "variant": f"b{i}"} for i in range(8)
]
NECKS = [
    {"type": "fpn", "out_channels": 32, "extra": "pool"},
    {"type": "fpn", "out_channels": 32, "extra": "p6p7"},
    {"type": "bifpn", "width": 32, "repeats": 1},
]


def label(config):
    return "-".join(str(v) for v in config.values())


@pytest.fixture(scope="module", params=BACKBONES, ids=label)
def backbone(request):
    torch.manual_seed(0)
    return build_backbone(request.param).eval()


@pytest.mark.parametrize("neck_config", NECKS, ids=label)
def test_pair_runs_and_matches_its_declaration(backbone, neck_config):
    neck = build_neck(neck_config, backbone.out_shapes).eval()
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 64, 96))
        for name, shape in backbone.out_shapes.items():
            assert features[name].shape[1] == shape.channels
            assert features[name].shape[-1] == -(-96 // shape.stride)  # ceil: odd sizes round up
        out = neck(features)
    assert list(out) == list(neck.out_shapes)
    for name, shape in neck.out_shapes.items():
        assert out[name].shape[1] == shape.channels
        assert int(name[1:]) == shape.stride.bit_length() - 1  # P<k> has stride 2**k


@pytest.mark.parametrize(
    "backbone_config,neck_config",
    [({"type": "efficientnet", "variant": "b0"}, {"type": "bifpn", "width": 32, "repeats": 1}),
     ({"type": "resnet", "depth": 18}, {"type": "bifpn", "width": 32, "repeats": 1}),
     ({"type": "efficientnet", "variant": "b0"}, {"type": "fpn", "out_channels": 32})],
)
def test_faster_rcnn_on_other_backbones_and_necks(backbone_config, neck_config):
    model = build_model({"type": "faster_rcnn", "num_classes": 3, "backbone": backbone_config, "neck": neck_config,
                         "rpn": {"in_levels": ["P3", "P4", "P5", "P6"]},
                         "roi_heads": {"in_levels": ["P3", "P4", "P5"]},
                         "transform": {"min_size": 192, "max_size": 256}})
    model.train()
    losses = model([torch.rand(3, 90, 120)], [{"boxes": torch.tensor([[10.0, 10, 60, 70]]), "labels": torch.tensor([2])}])
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        assert set(model([torch.rand(3, 90, 120)])[0]) == {"boxes", "scores", "labels"}
