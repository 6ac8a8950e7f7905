"""``detkit train``: the training run, from a config to checkpoints, metrics and evaluations.

``train(config)`` sets up (devices, torchrun, data, model, optimizer, schedule, resume) and
then runs ``train_one_epoch`` per epoch, a plain loop you can read top to bottom. What it
guarantees:

* checkpoints (``last.pth`` each epoch and every ``checkpoint_every`` steps, ``best.pth`` at
  the best COCO AP) are written atomically: a crash, a kill or Ctrl-C leaves the previous
  one whole;
* ``resume=True`` continues exactly where ``last.pth`` stopped: model, optimizer, schedule,
  AMP scaler, EMA, random generators, and the data order of the epoch (derived from the seed
  and the epoch, see ``loop_data.py``);
* a non-finite loss stops the run with the iteration named, before anything is saved from it;
* an unreadable image costs one sample and is reported at the end of the epoch;
* Ctrl-C or SIGTERM stops the run after the step in progress with a resumable ``last.pth``
  (``Interrupted``), and the time limit stops every torchrun process after the same step
  (``stopping.py``); partial checkpoint files left by a kill are removed when the run starts.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from tqdm import tqdm

from detkit.checkpoints import load_weights, remove_stale_temporaries, save_atomic
from detkit.config import OPTIMIZERS, SCHEDULES, check_options, save_config, unknown_choice
from detkit.engine.distributed import World, barrier, everyone, gather, init, shutdown, sync_buffers
from detkit.engine.evaluate import evaluate_model
from detkit.engine.loop_data import EpochBatches, loader
from detkit.engine.run import Prepared, pick_device, prepare
from detkit.engine.stopping import Budget, Interrupted


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss; nothing from that step was saved."""


@dataclass
class RunState:
    """Where a run is: the epoch, the next batch in it, the steps taken, the best AP so far."""

    epoch: int = 0
    batch: int = 0
    iteration: int = 0
    best_ap: float = -1.0
    history: list = field(default_factory=list)


@dataclass
class RunResult:
    out: Path
    last: Path
    best: Path | None
    state: RunState
    evaluation: Any = None  # the last CocoEvaluation
    main: bool = True  # this process is the one that prints and writes (rank 0 under torchrun)


# ------------------------------------------------------------------------------ setup


def build_optimizer(config: Mapping, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters; options as in ``detkit.config.OPTIMIZERS``."""
    options = dict(config)
    kind = options.pop("type", "sgd")
    if kind not in OPTIMIZERS:
        raise unknown_choice(kind, OPTIMIZERS, "train.optimizer.type")
    options = check_options(options, OPTIMIZERS[kind], "train.optimizer", f"option of {kind}")
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "sgd":
        return torch.optim.SGD(params, **options)
    return torch.optim.AdamW(params, **options)


def build_schedule(config: Mapping, optimizer, steps_per_epoch: int, epochs: int):
    """A per-step LambdaLR: linear warmup, then step decay at epoch milestones or cosine to 0;
    options as in ``detkit.config.SCHEDULES``."""
    options = dict(config)
    kind = options.pop("type", "step")
    if kind not in SCHEDULES:
        raise unknown_choice(kind, SCHEDULES, "train.schedule.type")
    options = check_options(options, SCHEDULES[kind], "train.schedule", f"option of {kind}")
    warmup, factor = int(options.get("warmup_iters", 0)), float(options.get("warmup_factor", 0.001))
    total = max(1, steps_per_epoch * epochs)
    milestones = [m * steps_per_epoch for m in options.get("milestones", [])]
    gamma, floor = float(options.get("gamma", 0.1)), float(options.get("min_factor", 0.0))

    def multiplier(step: int) -> float:
        warm = factor + (1 - factor) * step / warmup if step < warmup else 1.0
        if kind == "step":
            return warm * gamma ** sum(step >= m for m in milestones)
        return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(s if not isinstance(s, list) else tuple(s) for s in state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class MetricsLog:
    """metrics.jsonl (one JSON object per line), and TensorBoard when it is installed."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.board = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(out / "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                pass

    def write(self, record: Mapping, step: int) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.board is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "iteration"):
                    self.board.add_scalar(key, value, step)


# ------------------------------------------------------------------------------ the loop


def train_one_epoch(model, batches, optimizer, schedule, *, device: str, state: RunState, scaler, ema,
                    clip_grad_norm: float | None, log: MetricsLog, log_every: int, checkpoint: Callable[[], None],
                    checkpoint_every: int, stop: Callable[[], bool], progress, world: World = World()) -> list[int]:
    """One pass over ``batches`` (the rest of the epoch); returns the unreadable samples' indices.

    A batch whose every image was unreadable is no step; under torchrun no process steps then
    (each DDP step needs every process), so the processes agree on it first, as they do on a
    non-finite loss (all stop)."""
    model.train()
    skipped = []
    for batch in batches:
        skipped += batch.skipped
        state.batch += 1
        losses = None
        if everyone(bool(batch.images), world):
            images = [img.to(device, non_blocking=True) for img in batch.images]
            targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in batch.targets]
            with torch.autocast(device_type=device, enabled=scaler is not None):
                losses = model(images, targets)
                loss = sum(losses.values())
            if not everyone(bool(torch.isfinite(loss)), world):  # every process stops, not only the one
                raise NonFiniteLoss(
                    f"non-finite loss at iteration {state.iteration + 1} (epoch {state.epoch + 1}, batch {state.batch}):"
                    f" {', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())}; "
                    "nothing from this step was saved; lower train.optimizer.lr or set train.clip_grad_norm"
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
        schedule.step()
        state.iteration += 1
        if losses is not None:
            lr = optimizer.param_groups[0]["lr"]
            progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
            if state.iteration % log_every == 0:
                log.write({"epoch": state.epoch + 1, "iteration": state.iteration, "lr": lr, "loss": loss.item(),
                           **{k: v.item() for k, v in losses.items()}}, state.iteration)
        progress.update(1)
        if checkpoint_every and state.iteration % checkpoint_every == 0:
            checkpoint()
        if stop():
            break
    return skipped


@dataclass
class Training:
    """What the loop carries besides the model: the prepared run, where it writes, and the
    optimisation state (optimizer, schedule, AMP scaler, EMA, where the run is)."""

    run: Prepared
    world: World
    out: Path
    resolved: dict  # the config a checkpoint records (model completed, train.out filled in)
    net: torch.nn.Module  # the model, wrapped in DDP under torchrun
    optimizer: torch.optim.Optimizer
    schedule: Any
    scaler: Any
    ema: Any
    steps_per_epoch: int
    state: RunState = field(default_factory=RunState)

    @property
    def last(self) -> Path:
        return self.out / "last.pth"

    @property
    def best(self) -> Path:
        return self.out / "best.pth"

    @property
    def averaged(self) -> torch.nn.Module:
        """The model that is evaluated and kept as best: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.run.model


def train(config: Mapping, *, resume: bool = False, progress: bool = True) -> RunResult:
    """Run ``config`` (a checked run config, ``detkit.config.load_config``) to the end."""
    cfg = config["train"]
    world = init(pick_device(cfg["device"]))
    seed_process(cfg, world)
    run = prepare(config, world=world)
    out = Path(cfg["out"] or Path("runs") / config.get("name", "run"))
    resolved = {**run.config, "train": {**cfg, "out": str(out)}}
    open_run_folder(out, resolved, world)
    training = setup(run, resolved, out, world)
    if resume:
        restore(training)
    log = MetricsLog(out, world.main)
    budget = Budget(world, max_iters=cfg["max_iters"], time_limit_min=cfg["time_limit_min"], device=run.device)
    bar = tqdm(total=cfg["max_iters"] or training.steps_per_epoch * cfg["epochs"], initial=training.state.iteration,
               desc="training", unit="step", dynamic_ncols=True, disable=not (progress and world.main))
    evaluation = None
    try:
        with budget:
            while training.state.epoch < cfg["epochs"] and not budget.stop(training.state.iteration):
                finished_epoch = run_epoch(training, log, bar, budget)
                sync_buffers(run.model, world)  # one model everywhere before evaluating and saving
                if budget.interrupted:  # Ctrl-C or SIGTERM: save where the run is, evaluate nothing
                    save_last(training)
                    raise Interrupted(f"interrupted after step {training.state.iteration}: {training.last} holds it; "
                                      "continue with --resume")
                at_end = training.state.epoch >= cfg["epochs"] or budget.stop(training.state.iteration)
                due = at_end or (finished_epoch and training.state.epoch % cfg["eval_every"] == 0)
                if run.val_set is not None and due:
                    evaluation = evaluate_and_keep_best(training, log, bar)
                save_last(training)
    except RuntimeError as error:
        if "find_unused_parameters" in str(error) and not cfg["find_unused_parameters"]:
            raise ValueError("this model has trainable parameters that a training step does not use, which DDP "
                             "(torchrun) must be told: set train.find_unused_parameters: true") from None
        raise
    finally:
        bar.close()
        barrier(world)
        shutdown(world)
    if budget.over_time and world.main:
        print(f"stopped by train.time_limit_min ({cfg['time_limit_min']:g} min) at step {training.state.iteration} "
              f"of {training.steps_per_epoch * cfg['epochs']}")
    best = training.best if training.best.is_file() else None
    return RunResult(out, training.last, best, training.state, evaluation, main=world.main)


# ------------------------------------------------------------------------------ the steps of a run


def seed_process(cfg: Mapping, world: World) -> None:
    """Threads, determinism and the random generators of this process (seed + rank: each
    process draws its own augmentations; the model's initial weights come from the seed alone)."""
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg["seed"] + world.rank)
    np.random.seed(cfg["seed"] + world.rank)
    random.seed(cfg["seed"] + world.rank)


def open_run_folder(out: Path, resolved: Mapping, world: World) -> None:
    """The run folder with the resolved config.yaml, rid of partial checkpoints a kill left (main process)."""
    if not world.main:
        return
    out.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temporaries(out)
    if stale:
        print(f"removed {len(stale)} partial checkpoint files left in {out} by a run killed while saving")
    save_config(resolved, out / "config.yaml")


def setup(run: Prepared, resolved: dict, out: Path, world: World) -> Training:
    """Optimizer, schedule, AMP, EMA and DDP around the prepared model."""
    cfg = resolved["train"]
    model = run.model
    if cfg["sync_bn"] and world.size > 1:
        model = run.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    steps_per_epoch = len(epoch_batches(run.train_set, resolved, world, epoch=0))
    if steps_per_epoch == 0:
        raise ValueError(f"data.train has {len(run.train_set)} images: too few for one batch per process "
                         f"({world.size} processes)")
    optimizer = build_optimizer(cfg["optimizer"], model)
    schedule = build_schedule(cfg["schedule"], optimizer, steps_per_epoch, cfg["epochs"])
    cuda = run.device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda") if cfg["amp"] and cuda else None
    ema = None
    if cfg["ema"]:
        decay = float(cfg["ema"].get("decay", 0.9998))
        # use_buffers: BatchNorm statistics are averaged too, so the averaged model can be evaluated
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)
    net = model
    if world.size > 1:
        # every detkit model uses all its trainable parameters in every step (tests/engine/test_ddp.py),
        # so DDP need not search the graph for unused ones after each backward
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[world.local_rank] if cuda else None, find_unused_parameters=cfg["find_unused_parameters"])
    return Training(run, world, out, resolved, net, optimizer, schedule, scaler, ema, steps_per_epoch)


def epoch_batches(dataset, config: Mapping, world: World, *, epoch: int, start: int = 0) -> EpochBatches:
    data = config["data"]
    return EpochBatches(dataset, data["batch_size"], seed=config["train"]["seed"], epoch=epoch, shuffle=True,
                        group_aspect_ratio=data["group_aspect_ratio"], world=world, start=start)


def restore(training: Training) -> None:
    """Continue exactly where ``last.pth`` stopped: weights, optimizer, schedule, scaler, EMA,
    where the run is and this process's random generators."""
    if not training.last.is_file():
        raise ValueError(f"--resume: no checkpoint to resume from at {training.last}")
    saved = load_weights(training.last, "--resume")
    training.run.model.load_state_dict(saved["model"])
    training.optimizer.load_state_dict(saved["optimizer"])
    training.schedule.load_state_dict(saved["schedule"])
    if training.scaler is not None and saved.get("scaler"):
        training.scaler.load_state_dict(saved["scaler"])
    if training.ema is not None and saved.get("ema"):
        training.ema.load_state_dict(saved["ema"])
    training.state = RunState(**saved["state"])
    rank = training.world.rank
    set_rng_state(saved["rng"][rank] if isinstance(saved["rng"], list) else saved["rng"])


def run_epoch(training: Training, log: MetricsLog, bar, budget: Budget) -> bool:
    """The rest of the current epoch (from ``state.batch``); reports the unreadable images
    of every process; returns whether the epoch finished (not cut by the budget)."""
    run, state, world, cfg = training.run, training.state, training.world, training.resolved["train"]
    run.train_set.epoch = state.epoch
    batches = epoch_batches(run.train_set, training.resolved, world, epoch=state.epoch, start=state.batch)
    bar.set_description(f"epoch {state.epoch + 1}/{cfg['epochs']}")
    skipped = train_one_epoch(
        training.net, loader(run.train_set, batches, training.resolved["data"]["workers"], cfg["seed"] + state.epoch),
        training.optimizer, training.schedule, device="cuda" if run.device.startswith("cuda") else "cpu", state=state,
        scaler=training.scaler, ema=training.ema, clip_grad_norm=cfg["clip_grad_norm"], log=log,
        log_every=cfg["log_every"], checkpoint=lambda: save_last(training), checkpoint_every=cfg["checkpoint_every"],
        stop=lambda: budget.stop(state.iteration), progress=bar, world=world)
    skipped = [i for part in gather(skipped, world) for i in part]  # every process's, reported by one
    if skipped and world.main:
        paths = [str(run.train_set.index.records[i].path) for i in skipped[:3]]
        bar.write(f"epoch {state.epoch + 1}: {len(skipped)} unreadable images skipped: {paths}")
        log.write({"epoch": state.epoch + 1, "skipped_images": len(skipped)}, state.iteration)
    finished = state.batch >= len(batches) + batches.start
    if finished:
        state.epoch, state.batch = state.epoch + 1, 0
    return finished


def evaluate_and_keep_best(training: Training, log: MetricsLog, bar):
    """COCO evaluation of the (averaged) model on data.val, logged; best.pth when AP improved."""
    run, state, world = training.run, training.state, training.world
    data = training.resolved["data"]
    evaluation, _ = evaluate_model(training.averaged, run.val_set, device=run.device, world=world,
                                   batch_size=data["batch_size"], workers=data["workers"])
    run.model.train()
    stats = evaluation.stats if evaluation else {}
    state.history.append({"epoch": state.epoch, "iteration": state.iteration, **stats})
    log.write({"epoch": state.epoch, "iteration": state.iteration, **{f"val/{k}": v for k, v in stats.items()}},
              state.iteration)
    if world.main:
        bar.write(f"epoch {state.epoch}: val AP {stats.get('AP', -1):.3f}, AP50 {stats.get('AP50', -1):.3f}")
    if stats and stats["AP"] > state.best_ap:
        state.best_ap = stats["AP"]
        if world.main:
            save_atomic({"model": training.averaged.state_dict(), "state": vars(state).copy(),
                         "config": json.loads(json.dumps(training.resolved))}, training.best)
    return evaluation


def save_last(training: Training) -> None:
    """``last.pth``: everything ``restore`` needs, every process's random generators included."""
    rngs = gather(rng_state(), training.world)
    if training.world.main:
        save_atomic({"model": training.run.model.state_dict(), "optimizer": training.optimizer.state_dict(),
                     "schedule": training.schedule.state_dict(),
                     "scaler": training.scaler.state_dict() if training.scaler else None,
                     "ema": training.ema.state_dict() if training.ema else None, "state": vars(training.state).copy(),
                     "rng": rngs, "config": json.loads(json.dumps(training.resolved))}, training.last)
