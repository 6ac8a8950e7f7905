"""A comparison study: the runs to train, the data they train on, the one recipe they share
(the equal, declared budget), and the suites that compare them.

A study is a YAML file; the budgets ship as ``configs/compare/{smoke,cpu,cpu-long,full}.yaml``::

    budget: cpu
    seed: 0                       # every run's training seed (detkit compare --seed)
    datasets:                     # data sections of run configs, by name
      shapes: {synthetic: {out: data/compare/shapes, images: 1000, val_images: 250}}
    recipe:                       # merged into every run: the budget is equal by construction
      data: {batch_size: 4, train_transforms: {hflip: 0.5}}
      train: {epochs: 6, optimizer: {type: adamw, lr: 0.001}}
    runs:
      retinanet: {data: shapes, model: {type: retinanet, ...}}
      retinanet_ce: {from: retinanet, model: {criterion: {classification_loss: cross_entropy}}}
      faster_rcnn: {config: ../faster_rcnn_r50_fpn.yaml}   # a run config file, relative to the study
    suites:
      detectors: {runs: [faster_rcnn, retinanet]}
      focal: {focal: retinanet, cross_entropy: retinanet_ce}
      necks: {fpn: ..., bifpn: ...}
      backbones: {resnet: ..., efficientnet: ...}
      nms: {run: ..., also: [...], splits: {normal: shapes, crowded: {dataset: crowded, min_pair_iou: 0.5}}}
    measure: {latency_images: 30, warmup: 3, bootstrap: 200, seed_probe: {run: retinanet, seeds: 2}}

A study can build on another (``base: cpu.yaml``, relative to the study file): the base's keys
with this file's merged over them, except ``suites``, which this file replaces when it gives
them. A ``sweep`` retrains the runs of the pair and detectors suites at several budgets and
recipes (``configs/compare/cpu-long.yaml``)::

    sweep:
      multiples: [1, 2, 4]        # each run at 1x, 2x and 4x the recipe's epochs, each a full schedule
      base_recipe: bn             # what the runs as written are called in the report
      recipes:                    # the same runs with other model settings, every swept run named
        gn: {retinanet: {backbone: {norm: gn}}, ...}

A swept run is named ``<run>[+<recipe>][@<k>x]`` (``retinanet+gn@4x``); ``<run>`` itself is
the base recipe at 1x, so a study's finished runs and its recorded results serve its sweep.

A run's config is built in this order, later over earlier: the ``config`` file (or the run
named by ``from``), the dataset named by ``data`` (its train/val/synthetic replace the
file's), the recipe, the run's own ``model``/``data``/``train`` keys; then its seed and run
folder. Every key is checked, and a mistake names the study file and the key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from detkit.config import (check, merge, parse_override, read_config, read_yaml, shipped_configs, unknown_choice,
                           unknown_key)

BUDGETS = ("smoke", "cpu", "cpu-long", "full")
SUITES = ("detectors", "focal", "necks", "backbones", "nms")
RECIPE_NAMES = {"bn": "BatchNorm", "gn": "GroupNorm"}  # a sweep's recipes as its tables and plots name them
PAIRS = {"focal": ("cross_entropy", "focal"), "necks": ("fpn", "bifpn"), "backbones": ("resnet", "efficientnet")}
"""The two-run suites: (baseline role, variant role). Each claim says the variant does better."""

_TOP_KEYS = ("base", "budget", "about", "seed", "datasets", "recipe", "runs", "suites", "measure", "sweep")
_SWEEP_KEYS = ("multiples", "base_recipe", "recipes")
_RUN_KEYS = ("config", "from", "data", "model", "train", "weights")
_DATA_SOURCES = ("train", "val", "synthetic")  # the keys a dataset entry gives a run's data section
MEASURE_DEFAULTS: dict[str, Any] = {
    "latency_images": 30,  # images each model is timed on (batch 1), the models taking turns per image
    "warmup": 3,  # untimed calls first: allocator and thread-pool start-up are not inference
    "bootstrap": 200,  # resamples of the val images behind every AP's noise estimate
    "seed_probe": None,  # {run, seeds}: that run retrained with more seeds, for the training noise
    # training batches BatchNorm statistics are recomputed over before evaluating (0: the trained ones); it
    # helps when a schedule is too short for momentum-0.01 running averages, and it hurt here at 1,250 steps
    "precise_bn": 0,
}
NMS_DEFAULTS: dict[str, Any] = {
    "also": [],  # further runs whose raw candidates the suite re-suppresses: their tables, no verdicts
    "score_threshold": 0.5,  # the operating point of the duplicates / recall-at-a-threshold diagnostics
    "sweep": {  # thresholds each family is swept over (IoU for all but gaussian Soft-NMS's sigma)
        "iou": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        "sigma": [0.1, 0.25, 0.5, 0.75, 1.0],
    },
    "crowd_statistics": {},  # {dataset: split}: how many true objects greedy NMS would remove from perfect boxes
}


@dataclass
class Run:
    """One trained model of the study.

    name: the run's name (its folder under the runs directory).
    config: a checked run config (model, data, train) for ``detkit.engine.train``.
    dataset: the name of the dataset it trains and is evaluated on.
    weights: a checkpoint to evaluate instead of training (``weights:`` in the study).
    probe_of: for a seed probe's extra run, the run it retrains with another seed.
    """

    name: str
    config: dict
    dataset: str
    weights: str | None = None
    probe_of: str | None = None


@dataclass
class Study:
    budget: str
    path: Path
    about: str
    seed: int
    datasets: dict[str, dict]
    runs: dict[str, Run]
    suites: dict[str, dict]
    measure: dict
    spec: dict = field(default_factory=dict)  # the study as read (with overrides), for results.json
    # with a sweep: {"multiples", "base_recipe", "recipes" (names, the base first), "runs" (the swept
    # runs' base names), "slices": {"<recipe>@<k>x": {base name: swept run name}}}; else None
    sweep: dict | None = None

    def runs_for(self, suites: list[str]) -> list[str]:
        """The runs that ``suites`` need, in study order, with the seed probe's when any
        suite compares trained models (the noise their verdicts are judged against)."""
        wanted: set[str] = set()
        for suite in suites:
            wanted |= set(suite_runs(suite, self.suites[suite]))
        probe = self.measure.get("seed_probe")
        if probe and any(s != "nms" for s in suites):
            wanted |= {probe["run"], *probe_names(probe)}
        if self.sweep is not None and any(s != "nms" for s in suites):
            for members in self.sweep["slices"].values():
                wanted |= {swept for base, swept in members.items() if base in wanted}
        return [name for name in self.runs if name in wanted]

    def chosen(self, suites) -> list[str]:
        """``--suite`` values (``all`` for every suite the study has) as this study's suites, in
        order; a suite named that the study lacks is an error naming the ones it has."""
        chosen = [s for s in SUITES if s in self.suites] if "all" in suites else list(dict.fromkeys(suites))
        missing = [s for s in chosen if s not in self.suites]
        if missing:
            raise ValueError(f"--suite: the study {self.path} has no suite {', '.join(missing)} "
                             f"(it has {', '.join(self.suites)})")
        return chosen

    def plan(self, suites: list[str], out: Path | None = None, reuse: Mapping | None = None) -> list[str]:
        """``detkit compare --plan``: a line per run the suites need (model, data, steps, folder);
        whether it is recorded (in ``reuse``; with a sweep also under ``out``) and, with a sweep,
        for the rest the training time its recorded relatives took per step."""
        from detkit.compare.report import architecture

        names = self.runs_for(suites)
        lines = [f"{self.path}: {len(names)} runs for {', '.join(suites)}"]
        from detkit.compare.core import recorded_runs

        done: dict = {name: entry for name, (entry, _) in recorded_runs(self, suites, reuse).items()}
        if self.sweep is not None and out is not None:
            from detkit.compare.sweep import recorded_parts

            done.update(recorded_parts(self, names, out))
        left = 0.0
        for name in names:
            run = self.runs[name]
            train = run.config["train"]
            line = (f"  {name:<24} {architecture(run.config):<44} data {run.dataset:<10} "
                    f"{train['epochs']} epochs x batch {run.config['data']['batch_size']}, seed {train['seed']}, "
                    f"-> {train['out']}")
            if self.sweep is None and name in done:
                line += "  [recorded from --reuse]"
            if self.sweep is not None and out is not None:
                if name in done:
                    line += "  [recorded]"
                else:
                    minutes = _estimate_minutes(name, run, done)
                    left += minutes or 0.0
                    line += f"  [to train: ~{minutes:.0f} min]" if minutes else "  [to train]"
            lines.append(line)
        if self.sweep is not None and out is not None:
            lines.append(f"{len(done)} of {len(names)} recorded under {Path(out) / 'runs'}; ~{left / 60:.1f} h of "
                         "training left, estimated per epoch from the fastest recorded run of the same model and recipe")
        return lines


def suite_specs(study: Study, suites: list[str]) -> dict:
    """results.json's ``suites`` entries of the model suites among ``suites``."""
    specs = {}
    for suite in suites:
        if suite == "detectors":
            specs["detectors"] = {"runs": suite_runs(suite, study.suites[suite])}
        elif suite in PAIRS:
            baseline, variant = (study.suites[suite][role] for role in PAIRS[suite])
            specs[suite] = {"baseline": baseline, "variant": variant,
                            "roles": {role: study.suites[suite][role] for role in PAIRS[suite]}}
    return specs


def _estimate_minutes(name: str, run: Run, done: Mapping[str, Mapping]) -> float | None:
    """Minutes to train ``run``: the fastest recorded run of the same base run and recipe (any
    multiple; else of the same base run, any recipe) per epoch, times its epochs; None with none.
    The fastest, because a run slowed by a shared machine says nothing about an unloaded one."""
    for stem in (lambda n: n.split("@")[0], lambda n: n.split("@")[0].split("+")[0]):
        per_epoch = [part["train_seconds"] / part["config"]["train"]["epochs"]
                     for other, part in done.items() if stem(other) == stem(name) and part.get("steps")]
        if per_epoch:
            return min(per_epoch) / 60 * run.config["train"]["epochs"]
    return None


def suite_runs(suite: str, spec: Mapping) -> list[str]:
    if suite == "detectors":
        return list(spec["runs"])
    if suite == "nms":
        return [spec["run"], *spec.get("also", [])]
    return [spec[role] for role in PAIRS[suite]]


def probe_names(probe: Mapping) -> list[str]:
    """The seed probe's extra runs: ``<run>.seed+1`` ... ``<run>.seed+<seeds>``."""
    return [f"{probe['run']}.seed+{k}" for k in range(1, int(probe["seeds"]) + 1)]


def study_path(budget: str) -> Path:
    """``configs/compare/<budget>.yaml`` for a budget name; any other value is a study file's path."""
    if budget in BUDGETS:
        return shipped_configs() / "compare" / f"{budget}.yaml"
    path = Path(budget)
    if path.suffix not in (".yaml", ".yml"):
        raise unknown_choice(budget, BUDGETS, "--budget", "budget (or a study .yaml)")
    return path


def load_study(budget: str, overrides: list[str] | None = None, *, seed: int | None = None,
               runs_dir: str | Path | None = None) -> Study:
    """The study of ``budget`` (a name or a study file), with ``--set`` overrides, every run's
    config built and checked, run folders under ``runs_dir`` (default:
    ``runs/compare/<study>-seed<seed>``, so that another seed never meets this one's runs)."""
    path = study_path(budget)
    spec = _read_study(path)
    for item in overrides or []:
        spec = merge(spec, parse_override(item))
    where = str(path)
    for key in spec:
        if key not in _TOP_KEYS:
            raise unknown_key(key, _TOP_KEYS, where, "study key")
    for key in ("datasets", "runs", "suites"):
        if not isinstance(spec.get(key), Mapping) or not spec[key]:
            raise ValueError(f"{where}: {key} must be a non-empty mapping")
    seed = int(spec.get("seed", 0) if seed is None else seed)
    runs_dir = Path("runs") / "compare" / f"{path.stem}-seed{seed}" if runs_dir is None else runs_dir
    measure = _measure(spec.get("measure") or {}, f"{where}: measure")
    datasets = {name: dict(entry) for name, entry in spec["datasets"].items()}
    for name, entry in datasets.items():
        for key in entry:
            if key not in _DATA_SOURCES:
                raise unknown_key(key, _DATA_SOURCES, f"{where}: datasets.{name}")
    recipe = spec.get("recipe") or {}
    for key in recipe:
        if key not in ("data", "train"):
            raise unknown_key(key, ("data", "train"), f"{where}: recipe", "section")
    raw: dict[str, dict] = {}
    runs: dict[str, Run] = {}
    for name, entry in spec["runs"].items():
        raw[name], dataset = _raw_run(name, entry, raw, runs, datasets, recipe, path)
        runs[name] = _run(name, raw[name], dataset, seed, runs_dir, entry.get("weights"), where)
    probe = measure.get("seed_probe")
    if probe:
        if probe["run"] not in runs:
            raise unknown_choice(probe["run"], runs, f"{where}: measure.seed_probe.run", "run")
        for k, probe_name in enumerate(probe_names(probe), start=1):
            base = runs[probe["run"]]
            runs[probe_name] = _run(probe_name, raw[probe["run"]], base.dataset, seed + k, runs_dir, None, where)
            runs[probe_name].probe_of = probe["run"]
    suites = {name: _suite(name, suite, runs, datasets, f"{where}: suites.{name}")
              for name, suite in spec["suites"].items()}
    sweep = None
    if spec.get("sweep") is not None:
        sweep = _sweep(spec["sweep"], suites, raw, runs, seed, runs_dir, f"{where}: sweep")
    return Study(str(spec.get("budget", path.stem)), path, str(spec.get("about", "")).strip(), seed, datasets,
                 runs, suites, measure, spec, sweep)


def _read_study(path: Path, seen: tuple = ()) -> dict:
    """The study file at ``path`` over its ``base`` (recursively): mappings merged, ``suites``
    replaced when the file gives them."""
    spec = read_yaml(path)
    if "base" not in spec:
        return spec
    base = path.parent / str(spec.pop("base"))
    if base.resolve() in seen or base.resolve() == path.resolve():
        raise ValueError(f"{path}: base: {base} leads back to itself")
    if not base.is_file():
        raise ValueError(f"{path}: base: {base} does not exist (a study file, relative to this one)")
    under = _read_study(base, (*seen, path.resolve()))
    if "suites" in spec:
        under.pop("suites", None)
    return merge(under, spec)


def swept_name(run: str, recipe: str | None, multiple: int) -> str:
    """``run`` trained with ``recipe`` (None: the base recipe) for ``multiple`` x its epochs."""
    return run + (f"+{recipe}" if recipe else "") + (f"@{multiple}x" if multiple != 1 else "")


def _sweep(values: Any, suites: Mapping, raw: dict, runs: dict, seed: int, runs_dir, where: str) -> dict:
    """Check the sweep and add its runs to ``runs``: every run of the pair and detectors
    suites, with each recipe, at each multiple of its epochs (each a full schedule: a 4x run
    anneals over 4x the steps, not the 1x run continued)."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping ({', '.join(_SWEEP_KEYS)}), got {values!r}")
    for key in values:
        if key not in _SWEEP_KEYS:
            raise unknown_key(key, _SWEEP_KEYS, where)
    multiples = values.get("multiples")
    if not isinstance(multiples, list) or not multiples or any(
            isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in multiples) or multiples != sorted(set(multiples)):
        raise ValueError(f"{where}.multiples must be increasing whole numbers >= 1, e.g. [1, 2, 4], got {multiples!r}")
    base_recipe = str(values.get("base_recipe", "base"))
    recipes = values.get("recipes") or {}
    if not isinstance(recipes, Mapping):
        raise ValueError(f"{where}.recipes must map a recipe's name to {{run: model settings}}, got {recipes!r}")
    swept = [name for name in runs if any(name in suite_runs(s, spec) for s, spec in suites.items() if s != "nms")]
    if not swept:
        raise ValueError(f"{where}: the study has no pair or detectors suite whose runs it could sweep")
    for recipe, models in recipes.items():
        if not isinstance(recipe, str) or not recipe.isidentifier() or recipe == base_recipe:
            raise ValueError(f"{where}.recipes: {recipe!r} must be a name (letters, digits, _) other than "
                             f"the base recipe's ({base_recipe})")
        if not isinstance(models, Mapping):
            raise ValueError(f"{where}.recipes.{recipe} must map each swept run to its model settings, got {models!r}")
        missing = [name for name in swept if name not in models]
        if missing:
            raise ValueError(f"{where}.recipes.{recipe}: no model settings for {', '.join(missing)} (each swept run "
                             f"needs its own: {', '.join(swept)}; {{}} for none)")
        for name in models:
            if name not in swept:
                raise unknown_choice(name, swept, f"{where}.recipes.{recipe}", "swept run")
    slices: dict[str, dict[str, str]] = {}
    for multiple in multiples:
        for recipe in [None, *recipes]:
            members = slices[f"{recipe or base_recipe}@{multiple}x"] = {}
            for name in swept:
                members[name] = swept_name(name, recipe, multiple)
                if members[name] in runs:
                    continue
                config = merge(raw[name], {"model": recipes[recipe][name]}) if recipe else copy.deepcopy(raw[name])
                for key in ("epochs", "max_iters"):
                    if config.get("train", {}).get(key):
                        config["train"][key] = int(config["train"][key]) * multiple
                runs[members[name]] = _run(members[name], config, runs[name].dataset, seed, runs_dir, None,
                                           f"{where}: {members[name]}")
    return {"multiples": list(multiples), "base_recipe": base_recipe, "recipes": [base_recipe, *recipes],
            "runs": swept, "slices": slices}


def _raw_run(name: str, entry: Any, raw: dict, runs: dict, datasets: dict, recipe: Mapping,
             path: Path) -> tuple[dict, str]:
    where = f"{path}: runs.{name}"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a mapping (config / from, data, model, train), got {entry!r}")
    for key in entry:
        if key not in _RUN_KEYS:
            raise unknown_key(key, _RUN_KEYS, where)
    if "config" in entry and "from" in entry:
        raise ValueError(f"{where}: give config (a file) or from (another run), not both")
    dataset = entry.get("data")
    if "config" in entry:
        config = read_config(path.parent / entry["config"])
    elif "from" in entry:
        if entry["from"] not in raw:
            raise ValueError(f"{where}.from: {entry['from']!r} is not a run defined above it "
                             f"(runs so far: {', '.join(raw) or 'none'})")
        config = copy.deepcopy(raw[entry["from"]])
        dataset = dataset or runs[entry["from"]].dataset
    else:
        config = {}
    if isinstance(dataset, str):
        if dataset not in datasets:
            raise unknown_choice(dataset, datasets, f"{where}.data", "dataset")
        config = with_dataset(config, datasets[dataset])
    elif dataset is not None:
        raise ValueError(f"{where}.data must name one of the datasets ({', '.join(datasets)}), got {dataset!r}")
    else:
        raise ValueError(f"{where}: data (one of the datasets: {', '.join(datasets)}) is required")
    config = merge(config, recipe)
    own = {key: entry[key] for key in ("model", "train") if key in entry}
    config = merge(config, own)
    if "model" not in config:
        raise ValueError(f"{where}: a model (or a config file with one) is required")
    return config, dataset


def with_dataset(config: Mapping, dataset: Mapping) -> dict:
    """``config`` with its data sources (train, val, synthetic) replaced by ``dataset``'s; the
    loader settings and transforms stay."""
    data = {k: v for k, v in (config.get("data") or {}).items() if k not in _DATA_SOURCES}
    return {**config, "data": {**data, **copy.deepcopy(dict(dataset))}}


def _run(name: str, raw: dict, dataset: str, seed: int, runs_dir, weights, where: str) -> Run:
    config = merge(raw, {"train": {"seed": seed, "out": str(Path(runs_dir) / name)}})
    config["name"] = name
    try:
        checked = check(config)
    except ValueError as error:
        raise ValueError(f"{where}: runs.{name}: {error}") from None
    return Run(name, checked, dataset, weights)


def _measure(values: Mapping, where: str) -> dict:
    out = dict(MEASURE_DEFAULTS)
    for key, value in values.items():
        if key not in MEASURE_DEFAULTS:
            raise unknown_key(key, MEASURE_DEFAULTS, where)
        out[key] = value
    for key, least in (("latency_images", 1), ("bootstrap", 2), ("warmup", 0), ("precise_bn", 0)):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < least:
            raise ValueError(f"{where}.{key} must be a whole number >= {least}, got {out[key]!r}")
    probe = out["seed_probe"]
    if probe is not None:
        if not isinstance(probe, Mapping) or set(probe) != {"run", "seeds"} or not isinstance(probe["seeds"], int) \
                or probe["seeds"] < 1:
            raise ValueError(f"{where}.seed_probe must be {{run: <a run>, seeds: <extra seeds, >= 1>}}, got {probe!r}")
    return out


def _suite(name: str, spec: Any, runs: Mapping[str, Run], datasets: Mapping, where: str) -> dict:
    if name not in SUITES:
        raise unknown_choice(name, SUITES, where.rsplit(".", 1)[0], "suite")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping, got {spec!r}")
    roles = {"detectors": ("runs",), "nms": ("run", "splits", *NMS_DEFAULTS)}.get(name) or PAIRS[name]
    for key in spec:
        if key not in roles:
            raise unknown_key(key, roles, where)
    spec = dict(spec)
    if name == "nms":
        spec = {**copy.deepcopy(NMS_DEFAULTS), **spec}
        spec["splits"] = {label: _split(split, datasets, f"{where}.splits.{label}")
                          for label, split in (spec.get("splits") or {}).items()}
        if not spec["splits"]:
            raise ValueError(f"{where}.splits: at least one split to evaluate on, e.g. {{normal: <dataset>}}")
        for dataset, split in spec["crowd_statistics"].items():
            if dataset not in datasets:
                raise unknown_choice(dataset, datasets, f"{where}.crowd_statistics", "dataset")
            if split not in ("train", "val"):
                raise ValueError(f"{where}.crowd_statistics.{dataset} must be train or val, got {split!r}")
    if name == "nms":
        also = spec.get("also", [])
        if not isinstance(also, list) or spec.get("run") in also:
            raise ValueError(f"{where}.also must be a list of runs besides its run ({spec.get('run')}), got {also!r}")
        for run in also:
            if run not in runs:
                raise unknown_choice(run, runs, f"{where}.also", "run")
    for key in [k for k in roles if k in ("runs", "run") or k in PAIRS.get(name, ())]:
        if key not in spec:
            raise ValueError(f"{where}.{key} is required")
        for run in spec[key] if key == "runs" else [spec[key]]:
            if run not in runs:
                raise unknown_choice(run, runs, f"{where}.{key}", "run")
    if name in PAIRS:
        baseline, variant = (runs[spec[role]] for role in PAIRS[name])
        if baseline.dataset != variant.dataset:
            raise ValueError(f"{where}: {baseline.name} and {variant.name} must train on the same dataset to be "
                             f"compared, got {baseline.dataset} and {variant.dataset}")
    return spec


def _split(split: Any, datasets: Mapping, where: str) -> dict:
    """A split to evaluate on: a dataset's val split, optionally only its images holding a
    same-class pair of objects that overlap at IoU >= min_pair_iou (a crowded subset)."""
    split = {"dataset": split} if isinstance(split, str) else dict(split or {})
    for key in split:
        if key not in ("dataset", "min_pair_iou"):
            raise unknown_key(key, ("dataset", "min_pair_iou"), where)
    if split.get("dataset") not in datasets:
        raise unknown_choice(split.get("dataset"), datasets, f"{where}.dataset", "dataset")
    return {"dataset": split["dataset"], "min_pair_iou": split.get("min_pair_iou")}
