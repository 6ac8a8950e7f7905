"""torchrun's DDP needs no search for unused parameters (the trainer builds it without
``find_unused_parameters``): every model of every shipped config, and of the compare study,
gives every trainable parameter a gradient in one training step, even when an image of the
batch has no objects. And the processes stop after the same step."""

import copy
import time
from pathlib import Path

import pytest
import torch

from detkit.config import load_config
from detkit.models import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def small(model: dict) -> dict:
    """The config's model at a CPU test's size: no weights to download, small images."""
    model = copy.deepcopy(model)
    model.setdefault("num_classes", 3)
    if isinstance(model.get("backbone"), dict) and model["backbone"].get("weights"):
        model["backbone"]["weights"] = None
    transform = model.get("transform") or {}
    if "fixed_size" not in transform:
        model["transform"] = {**transform, "min_size": 128, "max_size": 128}
    return model


def unused_parameters(model: torch.nn.Module, size: int) -> list[str]:
    torch.manual_seed(0)
    model.train()
    images = [torch.rand(3, size, size), torch.rand(3, size, size)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [30.0, 20.0, 90.0, 50.0]]),
                "labels": torch.tensor([0, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # a negative image
    sum(model(images, targets).values()).backward()
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_model_uses_all_its_parameters(path):
    model = small(load_config(path)["model"])
    size = (model.get("transform") or {}).get("fixed_size", [128])[0]
    assert unused_parameters(build_model(model), size) == []


def test_every_compare_study_model_uses_all_its_parameters():
    from detkit.compare.study import load_study

    study = load_study("smoke")
    for name, run in study.runs.items():
        model = small(run.config["model"])
        assert unused_parameters(build_model(model), 64) == [], name
    density = small({"type": "retinanet", "backbone": {"type": "resnet", "depth": 18, "norm": "bn",
                                                         "out_levels": ["C3", "C4", "C5"], "frozen_stages": -1},
                     "neck": {"type": "fpn", "out_channels": 16, "extra": "p6p7"},
                     "head": {"depth": 1, "density": True}})
    assert unused_parameters(build_model(density), 64) == []


def _agree(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    from detkit.engine.distributed import World
    from detkit.engine.stopping import Budget

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        budget = Budget(World(rank, 2), max_iters=None, time_limit_min=1)
        first = budget.stop(1)  # just started: nobody is over time
        if rank == 1:
            budget.started = time.monotonic() - 120  # only rank 1's clock is past the limit at step 2...
        second = budget.stop(2)  # ... and both stop there
        third = budget.stop(2)  # asked again at the same step: the same answer, no new collective
        requested = Budget(World(rank, 2), max_iters=None, time_limit_min=None)
        requested.requested = time.monotonic() if rank == 0 else None  # Ctrl-C reached rank 0 alone
        results[rank] = (first, second, third, requested.stop(1), requested.interrupted)
    finally:
        dist.destroy_process_group()


def test_the_processes_stop_after_the_same_step():
    import torch.multiprocessing as mp

    from tests.engine.test_train import free_port

    results = mp.Manager().dict()
    mp.spawn(_agree, args=(free_port(), results), nprocs=2)
    assert results[0] == results[1] == (False, True, True, True, True)
