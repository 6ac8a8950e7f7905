"""From a config to a ready run: the one way every command gets its data, model and device.

    config -> prepare() -> Prepared(config (resolved), class_names, train_set, val_set, model, device)

``detkit train``, ``eval``, ``predict``, ``quickstart`` and ``compare``, and the tools, all
start here, so a config means the same thing to each of them: the datasets are resolved the
same way (a synthetic one generated on first use, by one process under torchrun), the model
config is completed from the data (``num_classes``, ``class_names``) or from the checkpoint,
and the model is built (from ``train.seed``) or loaded on the device ``train.device`` names.

    from detkit.config import load_config
    from detkit.engine import prepare
    run = prepare(load_config("configs/quickstart.yaml"), weights="runs/quickstart/best.pth")
    detections = run.model([image])        # image: Tensor[3, H, W], uint8 or float in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from detkit.checkpoints import load_checked, load_weights
from detkit.data import DetectionDataset
from detkit.engine.distributed import World
from detkit.engine.loop_data import SeededDataset, check_no_geometry, make_datasets, resolve_datasets_once
from detkit.models import build_model


@dataclass
class Prepared:
    """A run ready to train, evaluate or predict.

    config: the config with its model section completed (num_classes, class_names) and
        ``postprocess`` as given; what a checkpoint of this run records.
    class_names: the names of labels 0..C-1.
    train_set, val_set: the datasets (None when not asked for, or no ``data.val``).
    model: on ``device``; in eval mode when loaded from weights, else fresh from ``train.seed``.
    device: "cpu", "cuda" or "cuda:<local rank>" under torchrun.
    """

    config: dict
    class_names: list[str]
    train_set: SeededDataset | None
    val_set: DetectionDataset | None
    model: torch.nn.Module | None
    device: str


def pick_device(name: str, world: World = World()) -> str:
    """``train.device`` (auto, cpu or cuda) as a torch device; under torchrun each process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available")
    elif name not in ("cpu", "cuda"):
        raise ValueError(f"train.device must be auto, cpu or cuda, got {name!r}")
    return f"cuda:{world.local_rank}" if name == "cuda" and world.size > 1 else name


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


def load_model(config: Mapping, weights: str | Path, device: str = "cpu"):
    """``build_model(config["model"])`` with the weights of a detkit checkpoint (or a bare
    state dict) loaded, in eval mode: ``prepare(config, weights=..., data=False).model``.

    The model config must name its classes (``num_classes``); a checkpoint written by
    ``detkit train`` carries the resolved config, whose model section is used when the given
    one lacks them. Weights of another architecture fail with the mismatching keys named.
    """
    return prepare(config, weights=weights, device=device, data=False).model


def _model_config_and_state(config: Mapping, weights: str | Path) -> tuple[dict, dict]:
    """(the model config, completed from the checkpoint's own where it lacks the classes; the state dict)."""
    saved = load_weights(weights, "--weights")
    state = saved.get("model", saved) if isinstance(saved, dict) else saved
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--weights: {weights} holds no model state dict")
    model_config = dict(config["model"])
    trained = (saved.get("config") or {}).get("model", {}) if isinstance(saved, dict) else {}
    for key in ("num_classes", "class_names"):
        if model_config.get(key) is None and trained.get(key) is not None:
            model_config[key] = trained[key]
    if model_config.get("num_classes") is None:
        raise ValueError("model.num_classes is not set and the weights do not say it (use a checkpoint of "
                         "detkit train, or set model.num_classes)")
    return model_config, state


def prepare(config: Mapping, *, weights: str | Path | None = None, device: str | None = None, data: bool = True,
            model: bool = True, world: World = World()) -> Prepared:
    """Resolve ``config`` (a checked run config, ``detkit.config.load_config``) into a ready run.

    Args:
        weights: a checkpoint to load (``detkit train``'s, or a bare state dict); None builds
            the model fresh, its initial weights drawn from ``train.seed`` (the same in every
            process).
        device: where the model goes; None: ``train.device`` (auto picks CUDA when present).
        data: resolve the datasets (``data.train``, ``data.val`` or ``data.synthetic``, which
            is generated on first use, by the main process of ``world`` while the others
            wait) and complete the model config from them. Without data (``detkit predict``),
            the class names come from the config or the checkpoint.
        model: build (or load) the model; False for a run that only needs its data.
        world: the torchrun processes (one process by default).

    Raises:
        ValueError: a config, dataset or checkpoint a user can fix, named.
    """
    config = dict(config)
    device = device or pick_device(config["train"]["device"], world)
    if "data" in config:
        check_no_geometry(config["data"])  # before any data is read or model built
    train_set = val_set = None
    if data:
        train_index, val_index = resolve_datasets_once(config, world)
        config["model"] = complete_model_config(config, train_index.class_names)
        train_set, val_set = make_datasets(config, train_index, val_index)
    built = None
    if model and weights is not None:
        model_config, state = _model_config_and_state(config, weights)
        config["model"] = model_config
        built = build_model(model_config)
        load_checked(built, state, f"--weights {weights}")
        built = built.to(device).eval()
    elif model:
        torch.manual_seed(config["train"]["seed"])  # the same initial weights in every process
        built = build_model(config["model"]).to(device)
    class_names = list(config["model"].get("class_names") or [])
    if built is not None:
        class_names = list(built.class_names)
    return Prepared(config, class_names, train_set, val_set, built, device)
