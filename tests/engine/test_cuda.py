"""A training run on the GPU with mixed precision: it trains, its checkpoint carries the AMP
scaler, a run killed mid-epoch resumes from it with the scaler restored, and the weights load
on a machine without a GPU. Skipped without CUDA (CI has none)."""

import math

import pytest
import torch

from detkit.checkpoints import load_weights
from detkit.config import load_config
from detkit.models import build_model
from tests.engine.test_train import logged, run, steps

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_mixed_precision_run_resumes_after_a_kill_and_loads_on_the_cpu(tmp_path, write_config):
    config = write_config(checkpoint_every=1, device="cuda", amp=True)  # 3 steps per epoch, 2 epochs
    straight = run(["train", config, "--out", tmp_path / "straight"])
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = run(["train", config, "--out", tmp_path / "killed"], env={"KILL_AFTER": "5"})
    assert killed.returncode == -9
    saved = load_weights(tmp_path / "killed" / "last.pth")
    assert saved["state"]["iteration"] == 4
    assert saved["scaler"] and saved["scaler"]["scale"] > 0  # the AMP scaler travels with the checkpoint
    resumed = run(["train", config, "--out", tmp_path / "killed", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    records, expected = logged(tmp_path / "killed"), logged(tmp_path / "straight")
    assert steps(records) == steps(expected)
    losses = [r["loss"] for r in records if "loss" in r]
    assert all(math.isfinite(loss) for loss in losses)
    # CUDA's atomics (RoIAlign's backward) do not add in a fixed order, so the resumed run is
    # the uninterrupted one up to float rounding, not to the bit as on the CPU
    assert losses == pytest.approx([r["loss"] for r in expected if "loss" in r], rel=1e-2)
    weights = load_weights(tmp_path / "killed" / "last.pth")["model"]
    assert {v.device.type for v in weights.values()} == {"cpu"}
    model = build_model(load_config(tmp_path / "killed" / "config.yaml")["model"])
    model.load_state_dict(weights)
    model.eval()
    with torch.no_grad():
        detections = model([torch.rand(3, 96, 96)])
    assert detections[0]["boxes"].device.type == "cpu"
