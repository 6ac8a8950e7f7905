"""Training runs: exact resume after SIGKILL, atomic checkpoints, the non-finite guard, torchrun."""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from click.testing import CliRunner

from detkit.checkpoints import load_weights
from detkit.cli import main
from detkit.config import load_config
from detkit.engine import NonFiniteLoss, train
from tests.engine.conftest import tiny_config

# runs `detkit train` in this interpreter after wrapping save_atomic: SIGKILL the process right
# after the Nth write of last.pth (KILL_AFTER) or in the middle of writing it (KILL_DURING)
RUNNER = textwrap.dedent("""
    import os, signal, sys
    import torch
    import detkit.checkpoints as checkpoints
    import detkit.engine.trainer as engine
    after, during = int(os.environ.get("KILL_AFTER", 0)), int(os.environ.get("KILL_DURING", 0))
    calls = [0]
    original = checkpoints.save_atomic

    def save(state, path):
        if path.name != "last.pth":
            return original(state, path)
        calls[0] += 1
        if calls[0] == during:
            real_save = torch.save
            def half_then_die(obj, f):
                real_save(obj, f)
                f.truncate(f.tell() // 2)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            torch.save = half_then_die
        out = original(state, path)
        if calls[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    engine.save_atomic = save

    # SIGNAL_AT_STEP: this process sends itself SIGNAL (INT or TERM) when step N is logged, that
    # is in the middle of the training loop, as a Ctrl-C in the terminal would arrive
    at_step, name = int(os.environ.get("SIGNAL_AT_STEP", 0)), os.environ.get("SIGNAL", "INT")
    write = engine.MetricsLog.write

    def write_then_signal(self, record, step):
        write(self, record, step)
        if "loss" in record and record["iteration"] == at_step:
            os.kill(os.getpid(), getattr(signal, "SIG" + name))

    engine.MetricsLog.write = write_then_signal
    from detkit.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def run(args, env=None):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True,
                          env=environment, timeout=600)


def final_weights(folder):
    return load_weights(folder / "last.pth")["model"]


def logged(folder):
    """The records of a run's metrics.jsonl, in the order they were written."""
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def steps(records):
    """(epoch, iteration) of each training step logged."""
    return [(r["epoch"], r["iteration"]) for r in records if "loss" in r]


def test_resume_after_sigkill_mid_epoch_is_exact(tmp_path, write_config):
    config = write_config(checkpoint_every=1)  # 3 steps per epoch, 2 epochs
    straight = run(["train", config, "--out", tmp_path / "straight"])
    assert straight.returncode == 0, straight.stderr[-2000:]
    # last.pth is written after steps 1, 2, 3, at the end of epoch 1, after step 4: kill there
    killed = run(["train", config, "--out", tmp_path / "killed"], env={"KILL_AFTER": "5"})
    assert killed.returncode == -9
    state = load_weights(tmp_path / "killed" / "last.pth")["state"]
    assert (state["iteration"], state["epoch"], state["batch"]) == (4, 1, 1)
    assert steps(logged(tmp_path / "killed")) == [(1, 1), (1, 2), (1, 3), (2, 4)]
    resumed = run(["train", config, "--out", tmp_path / "killed", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # the resumed run logged steps 5 and 6 only (a restart would log 1 to 6 again), with the
    # losses of the uninterrupted run, and evaluated epoch 1 no second time
    records, expected = logged(tmp_path / "killed"), logged(tmp_path / "straight")
    assert steps(records) == steps(expected) == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses == pytest.approx([r["loss"] for r in expected if "loss" in r], abs=1e-5)
    assert [r["epoch"] for r in records if "val/AP" in r] == [1, 2]
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), atol=1e-6, rtol=0), key
    assert load_weights(tmp_path / "killed" / "last.pth")["state"]["iteration"] == 6


def test_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path, write_config):
    config = write_config(checkpoint_every=1)
    killed = run(["train", config, "--out", tmp_path / "run"], env={"KILL_DURING": "3"})
    assert killed.returncode == -9
    saved = load_weights(tmp_path / "run" / "last.pth")  # loads: the half-written file never replaced it
    assert saved["state"]["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    # the half-written temporary stays until the run starts again, which removes it
    assert len(list((tmp_path / "run").glob(".last.pth.*.tmp"))) == 1
    resumed = run(["train", config, "--out", tmp_path / "run", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "removed 1 partial checkpoint files" in resumed.stdout
    assert not list((tmp_path / "run").glob(".*.tmp"))
    assert load_weights(tmp_path / "run" / "last.pth")["state"]["iteration"] == 6


@pytest.mark.parametrize("name", ["INT", "TERM"])
def test_ctrl_c_or_sigterm_saves_the_step_and_resumes_exactly(tmp_path, write_config, name):
    config = write_config()  # 3 steps per epoch, 2 epochs, checkpoints at epoch ends only
    straight = run(["train", config, "--out", tmp_path / "straight"])
    assert straight.returncode == 0, straight.stderr[-2000:]
    stopped = run(["train", config, "--out", tmp_path / "stopped"], env={"SIGNAL_AT_STEP": "5", "SIGNAL": name})
    assert stopped.returncode == 1, stopped.stderr[-2000:]
    assert "stopping after this step" in stopped.stderr and "Traceback" not in stopped.stderr
    assert "interrupted after step 5" in stopped.stderr and "continue with --resume" in stopped.stderr
    # the checkpoint holds step 5 (the last periodic one was step 3, at the end of epoch 1)
    state = load_weights(tmp_path / "stopped" / "last.pth")["state"]
    assert (state["iteration"], state["epoch"], state["batch"]) == (5, 1, 2)
    assert [r["epoch"] for r in logged(tmp_path / "stopped") if "val/AP" in r] == [1]  # no evaluation at the stop
    resumed = run(["train", config, "--out", tmp_path / "stopped", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert steps(logged(tmp_path / "stopped")) == steps(logged(tmp_path / "straight"))
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "stopped")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, write_config):
    config = load_config(write_config(checkpoint_every=1, out=str(tmp_path / "nan")))
    config["train"]["optimizer"] = {"type": "sgd", "lr": 1e12}
    config["train"]["schedule"] = {"type": "step", "milestones": []}
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at iteration \d+ \(epoch 1, batch \d+\)"):
        train(config, progress=False)
    saved = load_weights(tmp_path / "nan" / "last.pth")
    assert saved["state"]["iteration"] >= 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_run_folder_has_config_metrics_and_best(tmp_path, write_config):
    config = load_config(write_config(out=str(tmp_path / "run"), epochs=1))
    result = train(config, progress=False)
    folder = tmp_path / "run"
    assert (folder / "config.yaml").is_file() and (folder / "best.pth").is_file()
    resolved = load_config(folder / "config.yaml")
    assert resolved["model"]["num_classes"] == 5 and resolved["model"]["class_names"][0] == "ellipse"
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert any('"loss"' in line for line in lines) and any('"val/AP"' in line for line in lines)
    assert result.evaluation is not None and 0 <= result.evaluation.stats["AP"] <= 1


def free_port() -> int:
    """A TCP port nobody listens on now (the system picks it), for torchrun's rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(shutil.which("torchrun") is None and not (sys.platform.startswith("linux")), reason="torchrun")
def test_torchrun_two_processes_equal_a_single_process_evaluation(tmp_path, write_config):
    config = write_config(out=str(tmp_path / "ddp"), epochs=1)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "detkit.cli", "train", str(config)],
        capture_output=True, text=True, env=environment, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    # rank 0 alone prints the run folder and the COCO table (and the progress bar, on stderr)
    assert launched.stdout.count("run folder:") == 1, launched.stdout
    assert launched.stdout.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all") == 1
    assert launched.stderr.count("epoch 1/1") >= 1 and "find_unused_parameters" not in launched.stderr
    distributed = [r for r in logged(tmp_path / "ddp") if "val/AP" in r][-1]
    single = load_config(config)
    from detkit.engine import evaluate_model, load_model
    from detkit.engine.loop_data import make_datasets, resolve_datasets

    train_index, val_index = resolve_datasets(single)
    _, val_set = make_datasets(single, train_index, val_index)
    model = load_model(single, tmp_path / "ddp" / "last.pth")
    evaluation, results = evaluate_model(model, val_set, device="cpu")
    # two empty evaluations would match too: the model must have found something
    assert results and any(value > 0 for value in evaluation.stats.values()), evaluation.stats
    for key, value in evaluation.stats.items():
        assert distributed[f"val/{key}"] == pytest.approx(value, abs=1e-12), key


def test_torchrun_skips_a_step_together_when_one_process_drew_only_unreadable_images(tmp_path, write_config, shapes):
    from detkit.data import DetectionDataset, open_dataset
    from detkit.engine.distributed import World
    from detkit.engine.loop_data import EpochBatches

    data = tmp_path / "data"
    shutil.copytree(shapes / "train", data)
    index = open_dataset(data / "annotations.json")
    path = write_config(out=str(tmp_path / "ddp"), epochs=1)
    seed = load_config(path)["train"]["seed"]
    # 6 images, batches of 2, 2 processes: one batch each; blank every image of rank 1's
    (batch,) = EpochBatches(DetectionDataset(index), 2, seed=seed, epoch=0, shuffle=True, group_aspect_ratio=True,
                            world=World(1, 2)).all_batches()
    for i in batch:
        index.records[i].path.write_bytes(b"")
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "detkit.cli", "train", str(path), "--set", f"data.train.path={data / 'annotations.json'}"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "epoch 1: 2 unreadable images skipped" in launched.stdout + launched.stderr  # rank 1's, said by rank 0
    assert not [r for r in logged(tmp_path / "ddp") if "loss" in r]  # neither process stepped alone


def test_ctrl_c_under_torchrun_saves_one_agreed_step_and_resumes_exactly(tmp_path, write_config):
    import signal
    import time

    config = write_config(epochs=3)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(out, *extra):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(free_port()), "-m", "detkit.cli", "train", str(config), "--set", "data.batch_size=1",
                   "--out", str(out), *extra]  # 6 images, one each: 3 steps per epoch
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
                                start_new_session=True)  # a process group of its own, as a terminal's job is

    straight = launch(tmp_path / "straight")
    assert straight.wait(timeout=300) == 0, straight.stderr.read()[-3000:]
    stopped = launch(tmp_path / "stopped")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not [r for r in _logged_or_empty(tmp_path / "stopped") if "loss" in r]:
        time.sleep(0.05)
    os.killpg(stopped.pid, signal.SIGINT)  # Ctrl-C: the terminal signals torchrun and both workers
    assert stopped.wait(timeout=120) != 0
    err = stopped.stderr.read()
    assert "interrupted after step" in err and "continue with --resume" in err, err[-3000:]
    saved = load_weights(tmp_path / "stopped" / "last.pth")
    # the checkpoint holds the last step taken, with both processes' random generators
    assert saved["state"]["iteration"] == max(r["iteration"] for r in logged(tmp_path / "stopped") if "loss" in r)
    assert len(saved["rng"]) == 2
    resumed = launch(tmp_path / "stopped", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-3000:]
    assert steps(logged(tmp_path / "stopped")) == steps(logged(tmp_path / "straight"))
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "stopped")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _logged_or_empty(folder):
    try:
        return logged(folder)
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or a line half-written
        return []


def test_schedules_by_hand():
    from detkit.engine.trainer import build_schedule

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = build_schedule({"type": "step", "milestones": [2], "gamma": 0.1, "warmup_iters": 4,
                               "warmup_factor": 0.2}, optimizer, steps_per_epoch=3, epochs=3)
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.1, 0.1])  # warmup, then x0.1 at epoch 2 (step 6)
    optimizer = torch.optim.SGD([param], lr=1.0)
    cosine = build_schedule({"type": "cosine"}, optimizer, steps_per_epoch=5, epochs=2)
    for _ in range(5):
        optimizer.step()
        cosine.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)  # half way: cos(pi / 2)
    with pytest.raises(ValueError, match=r"train.schedule.milestone: unknown option of step"):
        build_schedule({"type": "step", "milestone": [1]}, optimizer, 1, 1)
    with pytest.raises(ValueError, match=r"train.optimizer.momentum: unknown option of adamw"):
        from detkit.engine.trainer import build_optimizer

        build_optimizer({"type": "adamw", "momentum": 0.9}, torch.nn.Linear(2, 2))


def test_ema_run_evaluates_the_average(tmp_path, write_config):
    config = load_config(write_config(out=str(tmp_path / "ema"), epochs=1, ema={"decay": 0.9}, amp=True))
    result = train(config, progress=False)  # amp is ignored on the CPU
    best = load_weights(tmp_path / "ema" / "best.pth")["model"]
    last = load_weights(tmp_path / "ema" / "last.pth")
    assert last["ema"] is not None and result.evaluation is not None
    assert not torch.equal(best["rpn.head.objectness.weight"], last["model"]["rpn.head.objectness.weight"])


ONE_STAGE = {
    "retinanet": {"type": "retinanet", "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1, "norm": "bn",
                                                    "out_levels": ["C3", "C4", "C5"]},
                  "neck": {"type": "fpn", "out_channels": 32, "extra": "p6p7"}, "head": {"depth": 1},
                  "transform": {"min_size": 96, "max_size": 96}},
    "efficientdet": {"type": "efficientdet", "scale": "d0", "neck": {"width": 32, "repeats": 1},
                     "head": {"depth": 1, "density": True},
                     "transform": {"min_size": 96, "max_size": 96, "size_divisible": 128}},
    "ssd": {"type": "ssd", "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1, "norm": "bn",
                                        "out_levels": ["C3", "C4", "C5"]},
            "neck": {"type": "fpn", "out_channels": 32, "extra": None},
            "anchors": {"aspect_ratios": [[2]] * 3, "scales": [0.1, 0.3, 0.6, 0.9], "steps": [8, 16, 32]},
            "transform": {"fixed_size": [96, 96], "min_size": 96, "max_size": 96, "size_divisible": 32}},
    "yolo": {"type": "yolo", "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1, "norm": "bn",
                                          "out_levels": ["C3", "C4", "C5"]},
             "neck": {"type": "fpn", "out_channels": 32, "extra": None},
             "anchors": [[[8, 8], [12, 20], [20, 12]], [[24, 24], [32, 48], [48, 32]], [[64, 64], [96, 64], [64, 96]]],
             "transform": {"min_size": 96, "max_size": 96, "size_divisible": 96}},
}


@pytest.mark.parametrize("kind", list(ONE_STAGE))
def test_one_stage_detectors_train_and_evaluate_from_a_config(kind, tmp_path, shapes):
    """Every one-stage detector through detkit train, then detkit eval with another suppressor."""
    config = tiny_config(shapes, epochs=1, out=str(tmp_path / kind))
    config["model"] = ONE_STAGE[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(config))
    result = train(load_config(path), progress=False)
    assert result.evaluation is not None and 0 <= result.evaluation.stats["AP"] <= 1
    weights = tmp_path / kind / "last.pth"
    postprocess = "{type: adaptive_nms}" if kind == "efficientdet" else "{type: soft_nms}"
    out = tmp_path / "metrics.json"
    evaluated = CliRunner().invoke(main, ["eval", str(path), "--weights", str(weights), "--postprocess", postprocess,
                                          "--json", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    assert set(json.loads(out.read_text())) >= {"AP", "AP50", "AR100"}
