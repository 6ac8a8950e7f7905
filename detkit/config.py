"""Configs: run configs (YAML with one level of ``base:``, ``--set`` overrides, defaults,
checks), and the errors every part that reads a config mapping raises."""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from dataclasses import dataclass
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


# ------------------------------------------------------------------------------ YAML


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3``, ``5E4`` and ``2e+1`` as numbers.

    PyYAML resolves YAML 1.1, whose floats need a dot and a signed exponent (``1.0e-3``), so
    ``lr: 1e-3`` would arrive as the string ``'1e-3'``; YAML 1.2 (and every other language's
    reader) takes it as a number, and so do detkit's configs and ``--set``.
    """


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, where: str) -> Any:
    """``text`` read by ``ConfigLoader``; a malformed text is a ValueError naming ``where``
    with the line and column."""
    try:
        return yaml.load(text, Loader=ConfigLoader)  # ConfigLoader is a SafeLoader: no tag runs code
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ValueError(f"{where}{at}: malformed YAML: {getattr(error, 'problem', None) or error}") from None


# ------------------------------------------------------------------------------ numbers


@dataclass(frozen=True)
class Number:
    """What a numeric config value may be: a whole number or not, and its range.

    >>> Number(low=1, integer=True).check(0, "train.epochs")
    ValueError("train.epochs must be at least 1, got 0")
    """

    low: float | None = None  # the smallest value allowed
    high: float | None = None  # the largest value allowed
    integer: bool = False
    open_low: bool = False  # ``low`` itself is not allowed (``> low``)
    open_high: bool = False
    why: str = ""  # said after a value out of range

    def check(self, value: Any, where: str) -> int | float:
        """``value`` (an integral float made an int for a whole-number key), or ValueError."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        if self.integer:
            if not float(value).is_integer():
                raise ValueError(f"{where} must be a whole number, got {value!r}")
            value = int(value)
        elif math.isnan(value):
            raise ValueError(f"{where} must be a number, got {value!r}")
        why = f" ({self.why})" if self.why else ""
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            bound = f"greater than {self.low:g}" if self.open_low else f"at least {self.low:g}"
            raise ValueError(f"{where} must be {bound}, got {value!r}{why}")
        if self.high is not None and (value >= self.high if self.open_high else value > self.high):
            bound = f"less than {self.high:g}" if self.open_high else f"at most {self.high:g}"
            raise ValueError(f"{where} must be {bound}, got {value!r}{why}")
        return value


POSITIVE = Number(0, open_low=True)
NON_NEGATIVE = Number(0)
COUNT = Number(0, integer=True)
FRACTION = Number(0, 1, open_high=True)


def check_options(options: Mapping, spec: Mapping[str, Any], where: str, what: str = "option") -> dict:
    """``options`` checked key by key against ``spec`` (key -> a ``Number``, ``bool`` or
    ``list`` of a ``Number``); an unknown key names the nearest known one."""
    out = dict(options)
    for key, value in options.items():
        if key not in spec:
            raise unknown_key(key, spec, where, what)
        out[key] = check_typed(value, spec[key], f"{where}.{key}")
    return out


def check_typed(value: Any, kind: Any, where: str) -> Any:
    """``value`` checked against ``kind``: a ``Number``, ``bool``, or a list of kinds (one
    per item, or one for all)."""
    if isinstance(kind, Number):
        return kind.check(value, where)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(kind, list):
        if not isinstance(value, (list, tuple)) or (len(kind) > 1 and len(value) != len(kind)):
            size = f" of {len(kind)}" if len(kind) > 1 else ""
            raise ValueError(f"{where} must be a list{size}, got {value!r}")
        return [check_typed(v, kind[min(i, len(kind) - 1)], f"{where}[{i}]") for i, v in enumerate(value)]
    return value


# The options of each train.optimizer and train.schedule type (the trainer builds from these)
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": POSITIVE, "momentum": Number(0, 1), "weight_decay": NON_NEGATIVE, "nesterov": bool},
    "adamw": {"lr": POSITIVE, "betas": [FRACTION, FRACTION], "weight_decay": NON_NEGATIVE, "eps": POSITIVE},
}
_WARMUP = {"warmup_iters": COUNT, "warmup_factor": Number(0, 1, open_low=True)}
SCHEDULES: dict[str, dict[str, Any]] = {
    "step": {"milestones": [COUNT], "gamma": POSITIVE, **_WARMUP},
    "cosine": {"min_factor": Number(0, 1), **_WARMUP},
}


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
        "find_unused_parameters": False,  # DDP: true only for a model whose steps leave parameters unused (slower)
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
    """A YAML config file (``ConfigLoader``: safe, and ``1e-3`` is a number), with errors that
    name the file, line and column."""
    if not path.is_file():
        raise ValueError(f"{path}: config file does not exist")
    data = parse_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
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
        value = parse_yaml(text, "--set")
    except ValueError:
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


# The range of every numeric data and train key (checked whenever the key is set, null allowed
# where the default is null). A run that could not train is refused here, before anything starts.
LIMITS: dict[str, Number] = {
    "data.batch_size": Number(1, integer=True),
    "data.workers": COUNT,
    "train.epochs": Number(1, integer=True, why="a run of no epochs trains nothing"),
    "train.max_iters": Number(1, integer=True, why="null: all epochs"),
    "train.time_limit_min": Number(0, open_low=True, why="null: no limit"),
    "train.clip_grad_norm": Number(0, open_low=True, why="null: no clipping"),
    "train.eval_every": Number(1, integer=True),
    "train.checkpoint_every": Number(0, integer=True, why="0: at epoch ends only"),
    "train.log_every": Number(1, integer=True),
    "train.seed": COUNT,
    "train.threads": Number(1, integer=True, why="null: torch's default"),
}
# Mappings whose options depend on their type: type -> option -> kind
TYPED: dict[str, dict[str, dict[str, Any]]] = {"train.optimizer": OPTIMIZERS, "train.schedule": SCHEDULES}
EMA = {"decay": Number(0, 1, open_low=True, open_high=True)}


def _check_value(value: Any, default: Any, where: str) -> Any:
    if value is None:
        return value
    if where in LIMITS:
        return LIMITS[where].check(value, where)
    if where in TYPED:
        return _check_typed_mapping(value, default, TYPED[where], where)
    if where == "train.ema":
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be null or a mapping like {{decay: 0.9998}}, got {value!r}")
        return check_options(value, EMA, where)
    if default is ANY or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        return Number(integer=isinstance(default, int)).check(value, where)
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


def _check_typed_mapping(value: Any, default: Mapping, kinds: Mapping[str, Mapping], where: str) -> dict:
    """A ``{type: ..., options}`` mapping over its default (merged when of the default's type),
    its type one of ``kinds`` and every option of the right kind and range."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping, got {value!r}")
    kind = value.get("type", default.get("type"))
    if kind not in kinds:
        raise unknown_choice(kind, kinds, f"{where}.type")
    merged = {**default, **value} if kind == default.get("type") else dict(value)
    options = {k: v for k, v in merged.items() if k != "type"}
    return {"type": kind, **check_options(options, kinds[kind], where, f"option of {kind}")}


def save_config(config: Mapping, path: str | Path) -> Path:
    """Write the resolved config (YAML) next to a run's outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False))
    return path
