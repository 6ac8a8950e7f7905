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
from detkit.engine.loop_data import EpochBatches, loader, make_datasets, resolve_datasets_once
from detkit.engine.stopping import Budget, Interrupted
from detkit.models import build_model


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


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"train.device must be auto, cpu or cuda, got {name!r}")
    return name


def complete_model_config(config: Mapping, class_names: list[str]) -> dict:
    """The model config with num_classes and class_names taken from the dataset when absent."""
    model = dict(config["model"])
    if model.get("num_classes") is None:
        model["num_classes"] = len(class_names)
    elif model["num_classes"] != len(class_names):
        raise ValueError(f"model.num_classes is {model['num_classes']} but the dataset has {len(class_names)} classes "
                         f"({', '.join(class_names[:6])}{' ...' if len(class_names) > 6 else ''})")
    model.setdefault("class_names", list(class_names))
    return model


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


def train(config: Mapping, *, resume: bool = False, progress: bool = True) -> RunResult:
    """Run ``config`` (a checked run config, ``detkit.config.load_config``) to the end."""
    cfg = config["train"]
    device = pick_device(cfg["device"])
    world = init(device)
    if world.size > 1 and device == "cuda":
        device = f"cuda:{world.local_rank}"
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    out = Path(cfg["out"] or Path("runs") / config.get("name", "run"))
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg["seed"] + world.rank)
    np.random.seed(cfg["seed"] + world.rank)
    random.seed(cfg["seed"] + world.rank)

    train_index, val_index = resolve_datasets_once(config, world)
    model_config = complete_model_config(config, train_index.class_names)
    resolved = {**config, "model": model_config, "train": {**cfg, "out": str(out)}}
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temporaries(out)
        if stale:
            print(f"removed {len(stale)} partial checkpoint files left in {out} by a run killed while saving")
        save_config(resolved, out / "config.yaml")
    train_set, val_set = make_datasets(resolved, train_index, val_index)

    torch.manual_seed(cfg["seed"])  # the same initial weights in every process
    model = build_model(model_config).to(device)
    if cfg["sync_bn"] and world.size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    data = config["data"]
    steps_per_epoch = len(EpochBatches(train_set, data["batch_size"], seed=cfg["seed"], epoch=0, shuffle=True,
                                       group_aspect_ratio=data["group_aspect_ratio"], world=world))
    if steps_per_epoch == 0:
        raise ValueError(f"data.train has {len(train_set)} images: too few for one batch per process "
                         f"({world.size} processes)")
    optimizer = build_optimizer(cfg["optimizer"], model)
    schedule = build_schedule(cfg["schedule"], optimizer, steps_per_epoch, cfg["epochs"])
    scaler = torch.amp.GradScaler("cuda") if cfg["amp"] and device_type == "cuda" else None
    ema = None
    if cfg["ema"]:
        decay = float(cfg["ema"].get("decay", 0.9998))
        # use_buffers: BatchNorm statistics are averaged too, so the averaged model can be evaluated
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)
    state = RunState()
    last, best = out / "last.pth", out / "best.pth"
    if resume:
        if not last.is_file():
            raise ValueError(f"--resume: no checkpoint to resume from at {last}")
        saved = load_weights(last, "--resume")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        if ema is not None and saved.get("ema"):
            ema.load_state_dict(saved["ema"])
        state = RunState(**saved["state"])
        set_rng_state(saved["rng"][world.rank] if isinstance(saved["rng"], list) else saved["rng"])
    net = model
    if world.size > 1:
        # every detkit model uses all its trainable parameters in every step (tests/engine/test_ddp.py),
        # so DDP need not search the graph for unused ones after each backward
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[world.local_rank] if device_type == "cuda" else None,
            find_unused_parameters=cfg["find_unused_parameters"])
    log = MetricsLog(out, world.main)
    budget = Budget(world, max_iters=cfg["max_iters"], time_limit_min=cfg["time_limit_min"], device=device)
    total_steps = cfg["max_iters"] or steps_per_epoch * cfg["epochs"]

    def save_last() -> None:
        rngs = gather(rng_state(), world)
        if world.main:
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "schedule": schedule.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                         "ema": ema.state_dict() if ema else None, "state": vars(state).copy(), "rng": rngs,
                         "config": json.loads(json.dumps(resolved))}, last)

    def out_of_budget() -> bool:
        return budget.stop(state.iteration)

    def _epochs():
        evaluation = None
        while state.epoch < cfg["epochs"] and not out_of_budget():
            train_set.epoch = state.epoch
            batches = EpochBatches(train_set, data["batch_size"], seed=cfg["seed"], epoch=state.epoch, shuffle=True,
                                   group_aspect_ratio=data["group_aspect_ratio"], world=world, start=state.batch)
            bar.set_description(f"epoch {state.epoch + 1}/{cfg['epochs']}")
            skipped = train_one_epoch(
                net, loader(train_set, batches, data["workers"], cfg["seed"] + state.epoch), optimizer, schedule,
                device=device_type, state=state, scaler=scaler, ema=ema, clip_grad_norm=cfg["clip_grad_norm"], log=log,
                log_every=cfg["log_every"], checkpoint=save_last, checkpoint_every=cfg["checkpoint_every"],
                stop=out_of_budget, progress=bar, world=world)
            skipped = [i for part in gather(skipped, world) for i in part]  # every process's, reported by one
            if skipped and world.main:
                paths = [str(train_set.index.records[i].path) for i in skipped[:3]]
                bar.write(f"epoch {state.epoch + 1}: {len(skipped)} unreadable images skipped: {paths}")
                log.write({"epoch": state.epoch + 1, "skipped_images": len(skipped)}, state.iteration)
            finished_epoch = state.batch >= len(batches) + batches.start
            if finished_epoch:
                state.epoch, state.batch = state.epoch + 1, 0
            sync_buffers(model, world)  # one model everywhere before evaluating and saving
            if budget.interrupted:  # Ctrl-C or SIGTERM: save where the run is, evaluate nothing
                save_last()
                raise Interrupted(f"interrupted after step {state.iteration}: {last} holds it; continue with --resume")
            at_end = state.epoch >= cfg["epochs"] or out_of_budget()
            if val_set is not None and (at_end or (finished_epoch and state.epoch % cfg["eval_every"] == 0)):
                evaluation, _ = evaluate_model(ema.module if ema else model, val_set, device=device, world=world,
                                               batch_size=data["batch_size"], workers=data["workers"])
                model.train()
                stats = evaluation.stats if evaluation else {}
                state.history.append({"epoch": state.epoch, "iteration": state.iteration, **stats})
                log.write({"epoch": state.epoch, "iteration": state.iteration, **{f"val/{k}": v for k, v in stats.items()}},
                          state.iteration)
                if world.main:
                    bar.write(f"epoch {state.epoch}: val AP {stats.get('AP', -1):.3f}, AP50 {stats.get('AP50', -1):.3f}")
                if stats and stats["AP"] > state.best_ap:
                    state.best_ap = stats["AP"]
                    if world.main:
                        weights = (ema.module if ema else model).state_dict()
                        save_atomic({"model": weights, "state": vars(state).copy(),
                                     "config": json.loads(json.dumps(resolved))}, best)
            save_last()
        return evaluation

    bar = tqdm(total=total_steps, initial=state.iteration, desc="training", unit="step", dynamic_ncols=True,
               disable=not (progress and world.main))
    try:
        with budget:
            evaluation = _epochs()
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
        print(f"stopped by train.time_limit_min ({cfg['time_limit_min']:g} min) at step {state.iteration} "
              f"of {steps_per_epoch * cfg['epochs']}")
    return RunResult(out, last, best if best.is_file() else None, state, evaluation, main=world.main)


