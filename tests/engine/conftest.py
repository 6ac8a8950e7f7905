"""A tiny run config on a tiny synthetic dataset, and a checkpoint trained on it, shared by the
engine tests."""

import pytest
import yaml
from click.testing import CliRunner

from detkit.cli import main
from detkit.data.synthetic import generate


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate(root / "train", 6, seed=1, size=96)
    generate(root / "val", 4, seed=2, size=96)
    return root


def tiny_config(shapes, **train) -> dict:
    return {
        "model": {
            "type": "faster_rcnn",
            "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1, "norm": "bn"},
            "neck": {"type": "fpn", "out_channels": 32},
            "rpn": {"pre_nms_top_n": [200, 100], "post_nms_top_n": [100, 50]},
            "roi_heads": {"box_head": {"type": "two_mlp", "representation": 64}, "batch_per_image": 32},
            "transform": {"min_size": 96, "max_size": 96},
        },
        "data": {
            "train": {"path": str(shapes / "train" / "annotations.json")},
            "val": {"path": str(shapes / "val" / "annotations.json")},
            "batch_size": 2,
            "workers": 0,
            "train_transforms": {"hflip": 0.5, "scale": [0.8, 1.2], "color": 0.5},
        },
        "train": {"epochs": 2, "optimizer": {"type": "sgd", "lr": 0.005, "momentum": 0.9},
                  "schedule": {"type": "step", "milestones": [1], "warmup_iters": 2}, "seed": 3,
                  "deterministic": True, "threads": 1, "log_every": 1, **train},
    }


@pytest.fixture
def write_config(tmp_path, shapes):
    def write(name="tiny", **train):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tiny_config(shapes, **train)))
        return path

    return write


@pytest.fixture(scope="session")
def trained(tmp_path_factory, shapes):
    """(config, weights): the tiny config trained one epoch by ``detkit train``, for the tests
    that only read a checkpoint (evaluation, prediction, post-processing)."""
    root = tmp_path_factory.mktemp("trained")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(shapes, epochs=1, out=str(root / "run"))))
    result = CliRunner().invoke(main, ["train", str(config)])
    assert result.exit_code == 0, result.output
    return config, root / "run" / "last.pth"
