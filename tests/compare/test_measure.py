"""Cost measurements: latency statistics with the models taking turns, FLOPs by formula."""

import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from detkit.compare.measure import gflops, input_size, latency
from detkit.models import build_model


class Sleeper(nn.Module):
    def __init__(self, seconds, log, name):
        super().__init__()
        self.seconds, self.log, self.name = seconds, log, name

    def forward(self, images):
        self.log.append(self.name)
        time.sleep(self.seconds)
        return [{}]


def test_latency_takes_turns_and_reports_its_spread():
    log = []
    models = {"fast": Sleeper(0.002, log, "fast"), "slow": Sleeper(0.012, log, "slow")}
    images = [torch.zeros(3, 8, 8) for _ in range(5)]
    timed = latency(models, images, warmup=1)
    assert log == ["fast", "slow"] + ["fast", "slow"] * 5  # warm-up, then turns image by image
    for name, seconds in (("fast", 0.002), ("slow", 0.012)):
        t = timed[name]
        assert t["images"] == 5 and t["device"] == "cpu"
        assert t["q25_ms"] <= t["median_ms"] <= t["q75_ms"]
        assert 1000 * seconds <= t["median_ms"] < 1000 * seconds + 20
        assert t["fps"] == pytest.approx(1000 / t["median_ms"])
    with pytest.raises(ValueError, match="at least one image"):
        latency(models, [])


class OneConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)

    def forward(self, images):
        return self.conv(images[0][None])


def test_gflops_count_two_per_multiply_add():
    image = torch.rand(3, 64, 96)
    # 8 output channels x 32 x 48 positions, each 3 x 3 x 3 multiply-adds
    assert gflops(OneConv(), image) == pytest.approx(2 * 8 * 32 * 48 * 27 / 1e9)


def test_input_size_is_what_the_network_sees():
    model = build_model({"type": "retinanet", "num_classes": 3, "transform": {"min_size": 64, "max_size": 100},
                         "backbone": {"type": "resnet", "depth": 18, "out_levels": ["C3", "C4", "C5"], "norm": "bn"},
                         "neck": {"type": "fpn", "out_channels": 16, "extra": "p6p7"}})
    assert input_size(model, torch.rand(3, 64, 90)) == [64, 96]  # resized to 64 x 90, padded to /32


class FakeDetector(Sleeper):
    def transform(self, images):
        return SimpleNamespace(tensors=torch.zeros(1, 3, 8, 8)), None


class FakeDataset:
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(3, 8, 8), {}


def test_the_models_of_one_dataset_take_turns():
    from detkit.compare.core import _measure_cost
    from detkit.compare.runs import TrainedRun
    from detkit.compare.study import Run

    log = []
    trained = {name: TrainedRun(Run(name, {}, "shapes", probe_of="a" if name == "a.seed+1" else None),
                                FakeDetector(0.0, log, name), {}, 0, 0.0, False) for name in ("a", "b", "a.seed+1")}
    runs = {name: {} for name in trained}
    _measure_cost(trained, {"shapes": FakeDataset()}, runs, {"latency_images": 3, "warmup": 0})
    assert log[3:] == ["a", "b"] * 3  # after one FLOP-counting call each, the timed calls alternate
    assert runs["a.seed+1"]["latency"] == runs["a"]["latency"]  # a probe is not timed again
    assert runs["b"]["latency"]["cpu"]["images"] == 3
