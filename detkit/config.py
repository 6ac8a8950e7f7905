"""Configs: run configs (YAML with one level of ``base:``, ``--set`` overrides, defaults,
checks), and the errors every part that reads a config mapping raises."""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


def _nearest(value: object, known: Iterable[str]) -> tuple[str, str]:
    """("; did you mean 'x'?" or "", the known names listed)."""
    names = sorted(known)
    hint = difflib.get_close_matches(str(value), names, n=1)
    return (f"; did you mean {hint[0]!r}?" if hint else ""), ", ".join(names)


def unknown_key(key: str, known: Iterable[str], where: str, what: str = "option") -> ValueError:
    """The error for a config key nobody reads, suggesting the nearest known one.

    >>> unknown_key("sigm", ["sigma", "method"], "postprocess")
    ValueError("postprocess.sigm: unknown option; did you mean 'sigma'? (known: method, sigma)")
    """
    suggestion, names = _nearest(key, known)
    return ValueError(f"{where}.{key}: unknown {what}{suggestion} (known: {names})")


def unknown_choice(value: object, known: Iterable[str], where: str, what: str = "type") -> ValueError:
    """The error for a value outside its choices, suggesting the nearest.

    >>> unknown_choice("resnt", ["resnet", "efficientnet"], "model.backbone.type")
    ValueError("model.backbone.type: unknown type 'resnt'; did you mean 'resnet'? (known: efficientnet, resnet)")
    """
    suggestion, names = _nearest(value, known)
    return ValueError(f"{where}: unknown {what} {value!r}{suggestion} (known: {names})")


# ------------------------------------------------------------------------------ run configs
#
# A run config has three sections: ``model`` (read by detkit.models.build_model, which checks
# its own keys), ``data`` and ``train`` (checked here against DEFAULTS). Every default below
# carries the reason for its value.

ANY = object()  # a default that accepts any value (checked by the code that reads it)

DEFAULTS: dict[str, Any] = {
    "model": ANY,  # checked by detkit.models.build_model
    "data": {
        "train": ANY,  # {path, split, names, image_root}: a dataset for open_dataset
        "val": ANY,  # the same, evaluated every train.eval_every epochs
        "synthetic": None,  # {out, images, val_images, size, seed, crowded}: generated on first use
        "train_transforms": {},  # detkit.data.train_transforms arguments
        "eval_transforms": {},  # detkit.data.eval_transforms arguments (resizing stays in the model)
        "batch_size": 4,  # images per step per process: what a 2-core CPU or a small GPU takes
        "workers": 2,  # loader processes: one per spare core
        "group_aspect_ratio": True,  # portrait and landscape images batched apart: less padding
    },
    "train": {
        "epochs": 12,  # the "1x" schedule of the detection literature
        "max_iters": None,  # stop after this many steps (smoke runs), None: all epochs
        "time_limit_min": None,  # stop at the end of the step that crosses this many minutes
        "optimizer": {"type": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4},  # Detectron's 16-image recipe
        "schedule": {"type": "step", "milestones": [8, 11], "gamma": 0.1,  # epochs where lr drops x0.1
                     "warmup_iters": 500, "warmup_factor": 0.001},  # linear warmup keeps early steps stable
        "clip_grad_norm": None,  # a max gradient norm, or None
        "amp": False,  # mixed precision (CUDA only; ignored on CPU)
        "ema": None,  # {decay: 0.9998}: evaluate an exponential moving average of the weights
        "eval_every": 1,  # epochs between COCO evaluations on data.val
        "checkpoint_every": 0,  # also checkpoint every N steps inside an epoch (0: at epoch ends only)
        "log_every": 20,  # steps between metric lines in metrics.jsonl
        "seed": 0,  # the run's seed: data order, augmentation, initialisation
        "deterministic": False,  # deterministic algorithms (exact resume on CPU; slower on GPU)
        "sync_bn": False,  # SyncBatchNorm across processes (torchrun)
        "device": "auto",  # "auto" (CUDA when present), "cpu" or "cuda"
        "out": None,  # the run folder (default: runs/<config name>)
        "threads": None,  # torch CPU threads (None: torch's default)
    },
}


def merge(base: dict, override: Mapping) -> dict:
    """``override`` over ``base``, mapping by mapping. A mapping that names another ``type``
    than the one it overrides replaces it: a part of one kind never inherits another kind's
    arguments (``backbone: {type: efficientnet}`` over a ResNet drops ``depth``)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and \
                value.get("type", out[key].get("type")) == out[key].get("type"):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def shipped_configs() -> Path:
    """configs/ beside the package (a source checkout), or inside it (an installed copy)."""
    here = Path(__file__).resolve().parent
    for folder in (here.parent / "configs", here / "configs"):
        if (folder / "quickstart.yaml").is_file():
            return folder
    raise ValueError("configs/quickstart.yaml not found beside the detkit package")


def read_yaml(path: Path) -> dict:
    """yaml.safe_load with errors that name the file, line and column."""
    if not path.is_file():
        raise ValueError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ValueError(f"{path}{at}: malformed YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config is a mapping (model:, data:, train:), got {type(data).__name__}")
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """A run config: the file, merged over its ``base:`` (one level, relative to the file),
    then ``key.sub=value`` overrides (values parsed as YAML), then the defaults, checked.

    Raises:
        ValueError: a missing or malformed file, a base that has a base, an unknown key (with
            the nearest known one), a value of the wrong type, a bad override.
    """
    path = Path(path)
    config = read_config(path)
    for item in overrides or []:
        config = merge(config, parse_override(item))
    config.setdefault("name", path.stem)
    return check(config)


def read_config(path: str | Path) -> dict:
    """A config file merged over its ``base:`` (one level, relative to the file), unchecked."""
    path = Path(path)
    config = read_yaml(path)
    base = config.pop("base", None)
    if base is not None:
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        parent = read_yaml(base_path)
        if "base" in parent:
            raise ValueError(f"{base_path}: a base config cannot have a base of its own (one level of base:)")
        config = merge(parent, config)
    return config


def parse_override(item: str) -> dict:
    """``"train.optimizer.lr=0.01"`` -> ``{"train": {"optimizer": {"lr": 0.01}}}``."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValueError(f"--set {item!r}: expected key.subkey=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError(f"--set {item!r}: the value is not valid YAML") from None
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def check(config: dict) -> dict:
    """Fill the defaults of ``data`` and ``train`` and check every key and type against DEFAULTS."""
    config = dict(config)
    for key in config:
        if key not in DEFAULTS and key != "name":
            raise unknown_key(key, [*DEFAULTS, "name"], "config", "section")
    if not isinstance(config.get("model"), dict):
        raise ValueError("config.model: a model mapping is required (type: faster_rcnn, num_classes: ...)")
    for section in ("data", "train"):
        config[section] = _check_section(config.get(section) or {}, DEFAULTS[section], section)
    return config


def _check_section(values: Mapping, defaults: Mapping, where: str) -> dict:
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping, got {values!r}")
    out = {}
    for key, value in values.items():
        if key not in defaults:
            raise unknown_key(key, defaults, where)
        out[key] = _check_value(value, defaults[key], f"{where}.{key}")
    for key, default in defaults.items():
        out.setdefault(key, None if default is ANY else copy.deepcopy(default))
    return out


_NUMBER = (int, float)


def _check_value(value: Any, default: Any, where: str) -> Any:
    if default is ANY or default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
    elif isinstance(default, _NUMBER):
        if isinstance(value, bool) or not isinstance(value, _NUMBER):
            raise ValueError(f"{where} must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and not float(value).is_integer():
            raise ValueError(f"{where} must be a whole number, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, got {value!r}")
    elif isinstance(default, dict):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        if default and "type" not in default:  # a fixed-key section: check it key by key
            return _check_section(value, default, where)
        return {**default, **value} if default and value.get("type", default.get("type")) == default.get("type") \
            else dict(value)
    return value


def save_config(config: Mapping, path: str | Path) -> Path:
    """Write the resolved config (YAML) next to a run's outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False))
    return path
