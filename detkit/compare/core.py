"""``detkit compare``: train (or load) a study's runs, measure them, run its suites, and write
results.json, report.md and the plots.

    results = compare(load_study("cpu"), ["focal", "nms"], Path("out"))

The steps, in order: train or load every run the suites need (``runs.py``); evaluate each on
its dataset's validation split, with a bootstrap over the images shared by all runs on that
split (``detkit.evaluation.bootstrap``); measure parameters, GFLOPs and latency, the models
taking turns (``measure.py``); the seed probe's spread; the suites (the pairs' differences,
the suppressor study of ``suppression.py``); the verdicts (``claims.py``); then the files
(``report.py``, ``plots.py``). Everything the report shows is in results.json, so the report
and plots can be rebuilt from it alone (``detkit compare --report-only``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from tqdm import tqdm

from detkit.compare.claims import verdicts
from detkit.compare.measure import gflops, input_size, latency
from detkit.compare.runs import (
    TrainedRun,
    is_main_process,
    evaluate,
    first_images,
    load_raw,
    parameters,
    precise_batchnorm,
    read_raw,
    save_raw,
    train_or_load,
    density_readout,
    has_box_readout,
    train_subset,
    val_dataset,
)
from detkit.compare.schema import SCHEMA_VERSION, VERSION_KEY, load_results, validate
from detkit.compare.study import Study, probe_names, suite_specs, with_dataset
from detkit.compare.suppression import (
    FAMILIES,
    ORACLES,
    SUPPRESSORS,
    TUNING_IMAGES,
    choose_margin,
    crowd_statistics,
    density_report,
    evaluate_suppressor,
    needs_densities,
    oracle_densities,
    spread,
    with_margin,
)
from detkit.engine.distributed import init, shutdown
from detkit.engine.loop_data import resolve_datasets
from detkit.engine.run import pick_device
from detkit.evaluation import errors
from detkit.evaluation.bootstrap import accumulate, bootstrap, match_images, resample_indices
from detkit.evaluation.coco_eval import coco_ground_truth


def compare(study: Study, suites: list[str], out: Path, *, command: str = "", reference: Mapping | None = None,
            say: Callable[[str], None] = print, progress: bool = True, reuse: Mapping | None = None) -> dict:
    """Run ``suites`` of ``study``; write and return the results (see the module docstring).
    ``reuse``: an earlier results.json whose runs of the same config are recorded from it
    instead of trained and evaluated (``recorded_runs``). A study with a sweep runs in
    ``sweep.py``."""
    if study.sweep is not None:
        from detkit.compare.sweep import compare_sweep

        return compare_sweep(study, suites, out, command=command, reuse=reuse, say=say, progress=progress)
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    if not is_main_process():  # under torchrun one process speaks
        say, progress = (lambda _: None), False
    recorded = recorded_runs(study, suites, reuse)
    if recorded:
        say(f"{len(recorded)} runs recorded from {reuse.get('command') or 'the reused results.json'}: "
            f"{', '.join(recorded)}")
    names = [name for name in study.runs_for(suites) if name not in recorded]
    trained: dict[str, TrainedRun] = {}
    # under torchrun the processes join their group once, for all the trainings (see distributed.init)
    world = init(pick_device(study.runs[names[0]].config["train"]["device"])) if names else None
    try:
        for i, name in enumerate(names, start=1):
            say(f"[{i}/{len(names)}] {name}: training ({_steps(study.runs[name].config)}) or loading")
            trained[name] = train_or_load(study.runs[name], progress=progress)
    finally:
        if world is not None:
            shutdown(world)
    if not is_main_process():  # under torchrun every process trains; one evaluates and writes
        return {}
    results: dict = {VERSION_KEY: SCHEMA_VERSION, "budget": study.budget, "about": study.about,
                     "seed": study.seed, "suites_run": list(suites), "command": command, "study": study.spec,
                     "measure": dict(study.measure), "runs": {}, "suites": {}}
    if study.measure["precise_bn"]:
        say(f"recomputing BatchNorm statistics over {study.measure['precise_bn']} training batches (precise BN)")
    say("evaluating every run on its validation split, with the bootstrap over its images")
    draws, datasets = {}, {}
    for name, run in trained.items():
        precise_batchnorm(run, study.measure["precise_bn"])
        if run.run.dataset not in datasets:
            datasets[run.run.dataset] = val_dataset(run.config)
            draws[run.run.dataset] = resample_indices(len(datasets[run.run.dataset]), study.measure["bootstrap"],
                                                      seed=study.seed)
        results["runs"][name] = _evaluated(run, datasets[run.run.dataset], draws[run.run.dataset])
    results["runs"].update({name: entry for name, (entry, _) in recorded.items()})
    say("measuring parameters, GFLOPs and latency (the models take turns, image by image)")
    _measure_cost(trained, datasets, results["runs"], study.measure)
    results["runs"] = {name: results["runs"][name] for name in study.runs_for(suites)}  # the study's order
    results["noise"] = _noise(study, results["runs"])
    tables = {name: table for name, (_, table) in recorded.items() if table is not None}
    for suite in suites:
        say(f"suite {suite}")
        results["suites"][suite] = (_nms_suite(study, trained, progress, tables) if suite == "nms"
                                    else suite_specs(study, [suite])[suite])
    results["claims"] = verdicts(results)
    if reference is not None:
        results["reference"] = reproduction(results, reference)
    results["provenance"] = provenance(started, time.monotonic() - clock)
    write(results, out)
    return results


def write(results: Mapping, out: Path) -> list[Path]:
    """results.json, report.md and the plots into ``out``."""
    from detkit.compare.plots import plot_all
    from detkit.compare.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    partial = out / "results.json.tmp"
    text = dumps(results)
    validate(json.loads(text), source=str(path))  # what readers load back follows the schema (schema.py)
    partial.write_text(text)
    os.replace(partial, path)
    plots = plot_all(results, out)
    return [path, write_report(results, out, plots), *plots]


def rebuild_report(out: Path) -> list[Path]:
    """``detkit compare --report-only``: report.md and the plots again from ``out/results.json``,
    its claims re-judged by today's rules (``claims.py``); nothing is trained or evaluated."""
    path = Path(out) / "results.json"
    if not path.is_file():
        raise ValueError(f"--report-only: {path} does not exist (run detkit compare first)")
    results = load_results(path)
    results["claims"] = verdicts(results)  # the numbers judged by today's rules
    if results.get("sweep"):
        from detkit.compare.sweep import judge_sweep

        results["sweep"] = judge_sweep(results)
        results["claims"] = next(iter(results["sweep"]["slices"].values()))["claims"]
    results[VERSION_KEY] = SCHEMA_VERSION  # and written as this version's file (every older one is a subset)
    return write(results, Path(out))


def dumps(results: Mapping) -> str:
    """Indented JSON with each list of numbers on one line (bootstraps, curves stay readable)."""
    text = json.dumps(results, indent=1, default=_plain)
    return re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _steps(config: Mapping) -> str:
    train = config["train"]
    return f"{train['max_iters']} steps" if train["max_iters"] else f"{train['epochs']} epochs"


# ------------------------------------------------------------------------------ per run


def _evaluated(run: TrainedRun, dataset, draws: np.ndarray) -> dict:
    evaluation, coco_results = evaluate(run, dataset)
    matches = match_images(coco_ground_truth(dataset.index), coco_results)
    spread = bootstrap(matches, draws)
    recall, iou50 = evaluation.pr_curve(0.5)
    _, iou75 = evaluation.pr_curve(0.75)
    return {
        "dataset": run.run.dataset, "config": run.run.config, "seed": run.run.config["train"]["seed"],
        "steps": run.steps, "train_seconds": run.train_seconds, "reused": run.reused,
        "eval": {"images": len(dataset), "stats": evaluation.stats, "per_class": evaluation.per_class,
                 "pr": {"recall": recall.tolist(), "iou50": iou50.tolist(), "iou75": iou75.tolist()},
                 "check": accumulate(matches)},  # the bootstrap's own accumulation of all images (= stats)
        "bootstrap": {metric: [round(float(v), 6) for v in values] for metric, values in spread.items()},
        "loss": _losses(Path(run.run.config["train"]["out"]) / "metrics.jsonl"),
        "errors": _error_summary(dataset, coco_results),
        **({"threads": list(run.threads)} if run.threads else {}),
    }


def _error_summary(dataset, coco_results: list[dict]) -> dict:
    """Why a run misses: TIDE's dAPs and counts and its recall and AP50 by crowding."""
    matching = errors.match(coco_ground_truth(dataset.index), coco_results)
    return {**errors.breakdown(matching).to_dict(), "crowding": errors.by_crowding(matching)}


def _losses(path: Path) -> list[list[float]]:
    """[(iteration, total loss)] logged during training (empty when loaded from weights)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[r["iteration"], r["loss"]] for r in rows if "loss" in r]


def _measure_cost(trained: Mapping[str, TrainedRun], datasets: Mapping, runs: dict, measure: Mapping) -> None:
    shared = {name: first_images(dataset, measure["latency_images"]) for name, dataset in datasets.items()}
    images = {name: shared[run.run.dataset] for name, run in trained.items()}  # one list per dataset: see _turns
    for name, run in trained.items():
        first = images[name][0].to(run.device)
        runs[name].update(params=parameters(run.model), gflops=gflops(run.model, first),
                          input=input_size(run.model, first), latency={})
    models = {name: run.model for name, run in trained.items() if not run.run.probe_of}  # a probe costs the same
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        for model in models.values():
            model.to(device)
        for name, timing in _turns(models, images, device, measure["warmup"]).items():
            runs[name]["latency"][device] = timing
    for name, run in trained.items():
        run.model.to(run.device)
        if run.run.probe_of:
            runs[name]["latency"] = runs[run.run.probe_of]["latency"]


def _turns(models, images, device, warmup):
    """Latency with each model on its own dataset's images; the models of one dataset (one
    list of images) take turns image by image."""
    groups: dict[int, dict] = {}
    for name, model in models.items():
        groups.setdefault(id(images[name]), {})[name] = model
    out = {}
    for group in groups.values():
        out.update(latency(group, images[next(iter(group))], device=device, warmup=warmup))
    return out


def _noise(study: Study, runs: Mapping) -> dict:
    noise = {"bootstrap_draws": study.measure["bootstrap"], "seed_probe": None}
    probe = study.measure.get("seed_probe")
    if probe and probe["run"] in runs and all(n in runs for n in probe_names(probe)):
        members = [probe["run"], *probe_names(probe)]
        entry = {"run": probe["run"], "runs": members, "seeds": [runs[n]["seed"] for n in members]}
        for metric in ("AP", "AP50"):
            values = [runs[n]["eval"]["stats"][metric] for n in members]
            entry[metric] = values
            entry[f"std_{metric}"] = float(np.std(values, ddof=1))
        noise["seed_probe"] = entry
    return noise


# ------------------------------------------------------------------------------ the suppressor study


def recorded_runs(study: Study, suites: list[str], reuse: Mapping | None) -> dict[str, tuple[dict, dict | None]]:
    """The runs of ``suites`` that ``reuse`` (an earlier results.json) holds with the same config
    (``sweep.same_run``): name -> (its entry of ``runs``, marked reused, with ``reused_from``;
    its nms table, or None outside the nms suite). A run of the nms suite is recorded only with
    its table for the same splits: the verdict run's needs the sweeps (the reused study's
    verdict run's); a table recorded as the verdict run's serves as an ``also`` table without
    them. The rest is trained (or loaded) and evaluated."""
    from detkit.compare.sweep import same_run

    if not reuse:
        return {}
    source = reuse.get("command") or "an earlier results.json"
    theirs_nms = reuse.get("suites", {}).get("nms") or {}
    spec = study.suites["nms"] if "nms" in suites else None
    out = {}
    for name in study.runs_for(suites):
        theirs = reuse.get("runs", {}).get(name)
        if not theirs or not same_run(theirs["config"], study.runs[name].config):
            continue
        table = None
        if spec is not None and name in (spec["run"], *spec["also"]):
            if theirs_nms.get("run") == name:
                table = {key: theirs_nms[key] for key in ("splits", "margin") if key in theirs_nms}
                if name != spec["run"]:  # an also table: without the sweeps
                    table["splits"] = {label: {**split, "sweep": {}} for label, split in table["splits"].items()}
            elif name != spec["run"] and name in theirs_nms.get("also", {}):
                table = theirs_nms["also"][name]
            if table is None or not _same_splits(table["splits"], spec["splits"]):
                continue
        out[name] = ({**theirs, "reused": True, "reused_from": source}, table)
    return out


def _same_splits(recorded: Mapping, splits: Mapping) -> bool:
    """A recorded nms table measured on the study's splits (labels, datasets, pair filters)."""
    return set(recorded) == set(splits) and all(
        recorded[label]["dataset"] == split["dataset"] and recorded[label]["min_pair_iou"] == split["min_pair_iou"]
        for label, split in splits.items())


def _nms_suite(study: Study, trained: Mapping[str, TrainedRun], progress: bool,
               recorded: Mapping[str, dict] | None = None) -> dict:
    """The nms suite's entry: the verdict run's tables with the sweeps, the others' without;
    a run's table in ``recorded`` (``recorded_runs``) is taken as it is."""
    spec, recorded = study.suites["nms"], recorded or {}

    def tables(name: str, sweeps: bool) -> dict:
        return recorded[name] if name in recorded else _suppressor_tables(study, trained[name], progress, sweeps)

    suite = {"run": spec["run"], "score_threshold": float(spec["score_threshold"]),
             **tables(spec["run"], True), "crowd_statistics": {}}
    if spec["also"]:
        suite["also"] = {name: tables(name, False) for name in spec["also"]}
    for dataset_name, which in spec["crowd_statistics"].items():
        try:
            train_index, val_index = resolve_datasets({"data": study.datasets[dataset_name]})
        except ValueError as error:  # e.g. coco128 absent beside a pip-installed detkit: say so, go on
            suite["crowd_statistics"][dataset_name] = {"missing": str(error)}
            continue
        index = val_index if which == "val" else train_index
        suite["crowd_statistics"][dataset_name] = {"split": which, **crowd_statistics(index, spec["sweep"]["iou"])}
    return suite


def _suppressor_tables(study: Study, run: TrainedRun, progress: bool, sweeps: bool = True) -> dict:
    """One run's part of the nms suite: {"splits": each split's rows, noise, sweeps (empty
    without ``sweeps``) and density report} and, when the model predicts densities, {"margin":
    Adaptive-NMS's margin chosen on its training split}."""
    spec = study.suites["nms"]
    threshold = float(spec["score_threshold"])
    out: dict = {"splits": {}}
    made_by = {"precise_bn": study.measure["precise_bn"]}
    adaptive, margin = SUPPRESSORS["adaptive_nms"], None
    for label, split in spec["splits"].items():
        dataset = val_dataset(with_dataset(run.config, study.datasets[split["dataset"]]), split["min_pair_iou"])
        raw, cap = _raw_once(run, dataset, label, {**split, **made_by})
        has_densities = all("densities" in det for det in raw.values())
        if has_densities and margin is None:  # chosen once, on the run's own training images
            train = train_subset(run.config, TUNING_IMAGES)
            train_raw, train_cap = _raw_once(run, train, "train", {"images": TUNING_IMAGES, **made_by})
            out["margin"] = choose_margin(train.index, train_raw, train_cap)
            margin = out["margin"]["chosen"]
        suppressors = {n: c for n, c in SUPPRESSORS.items() if has_densities or not needs_densities(c)}
        families = {f: v for f, v in FAMILIES.items()
                    if sweeps and (has_densities or not needs_densities(v[0]))}
        index, ids = dataset.index, dataset.index.category_ids
        bar = tqdm(total=len(suppressors) + sum(len(spec["sweep"][v[2]]) for v in families.values()),
                   desc=f"suppressing ({run.run.name}, {label})", unit="setting", disable=not progress, leave=False)
        rows, paired = {}, {}
        for name, config in suppressors.items():
            rows[name], _, paired[name] = evaluate_suppressor(index, raw, config, cap, threshold, ids, matches=True)
            bar.update()
        if has_densities:
            # detkit's variant: the predicted densities + the margin chosen on the training split
            rows["adaptive_nms_margin"], _, paired["adaptive_nms_margin"] = evaluate_suppressor(
                index, with_margin(raw, margin), adaptive, cap, threshold, ids, matches=True)
            rows["adaptive_nms_margin"]["margin"] = margin
            # the ceiling: the true density of the object each candidate covers
            for name, (oracle_margin, same_class) in ORACLES.items():
                oracle = oracle_densities(index, raw, margin=oracle_margin, same_class=same_class)
                rows[name], _, paired[name] = evaluate_suppressor(index, oracle, adaptive, cap, threshold, ids,
                                                                  matches=True)
                rows[name]["oracle_margin"] = oracle_margin
                rows[name]["oracle_same_class"] = same_class
        box_raw = None
        if has_densities and has_box_readout(run.model):  # the readout variant: the density at each final box
            with density_readout(run.model, "box"):
                box_raw, _ = _raw_once(run, dataset, f"{label}_box_readout", {**split, **made_by})
            rows["adaptive_nms_box_readout"], _, paired["adaptive_nms_box_readout"] = evaluate_suppressor(
                index, box_raw, adaptive, cap, threshold, ids, matches=True)
            rows["adaptive_nms_box_readout"]["readout"] = "box"
        draws = resample_indices(len(index.records), study.measure["bootstrap"], seed=study.seed)
        spreads = {name: spread(p, draws) for name, p in paired.items()}
        sigma = {name: {metric: float(np.std(spreads[name][metric] - spreads["nms"][metric], ddof=1))
                        for metric in ("AP", "AP50", "AR100", "recall_covered")} for name in rows if name != "nms"}
        sweep = {}
        for family, (base, key, values) in families.items():
            entry = {"key": key, "values": list(spec["sweep"][values]), "AP": [], "AP50": [], "recall_covered": []}
            for value in entry["values"]:
                row, _, _ = evaluate_suppressor(index, raw, {**base, key: value}, cap, threshold, ids)
                for metric in ("AP", "AP50", "recall_covered"):
                    entry[metric].append(row[metric])
                bar.update()
            sweep[family] = entry
        bar.close()
        out["splits"][label] = {"dataset": split["dataset"], "min_pair_iou": split["min_pair_iou"],
                                "images": len(index.records), "cap": cap, "rows": rows, "sigma_vs_nms": sigma,
                                "sweep": sweep}
        if has_densities:
            out["splits"][label]["densities"] = density_report(index, raw, adaptive["iou_threshold"])
        if box_raw is not None:
            out["splits"][label]["densities_box_readout"] = density_report(index, box_raw, adaptive["iou_threshold"])
    return out


def _raw_once(run: TrainedRun, dataset, label: str, made_by: Mapping) -> tuple[dict, int]:
    """The run's raw candidates on a split, read out once and saved in its run folder
    (``raw_<split>.pt``); read back when what made them (the split, precise BN) is unchanged."""
    path = Path(run.run.config["train"]["out"]) / f"raw_{label}.pt"
    if path.is_file():
        raw, cap, saved_by = load_raw(path)
        if saved_by == dict(made_by):
            return raw, cap
    raw, cap = read_raw(run, dataset)
    save_raw(raw, cap, path, made_by)
    return raw, cap


# ------------------------------------------------------------------------------ provenance and reproduction


def provenance(started: datetime.datetime, seconds: float) -> dict:
    """Package versions and hardware: what a reader needs to rerun the study."""
    from importlib import metadata

    versions = {}
    for package in ("detkit", "torch", "torchvision", "numpy", "pycocotools", "faster-coco-eval", "albumentations",
                    "opencv-python-headless", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"started": started.isoformat(timespec="seconds"), "seconds": round(seconds, 1),
            "python": platform.python_version(), "platform": platform.platform(), "cpu": _cpu_name(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "packages": versions}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def reproduction(results: Mapping, reference: Mapping) -> dict:
    """This run's numbers against ``reference`` (an earlier results.json): per run present in
    both, the AP, AP50 and latency differences, and whether each AP difference lies within the
    noise this study states (2 x the seed probe's sigma, or the bootstrap's when it ran none)."""
    rows = {}
    sigma_seed = (results.get("noise", {}).get("seed_probe") or {}).get("std_AP")
    for name, run in results["runs"].items():
        theirs = reference.get("runs", {}).get(name)
        if not theirs:
            continue
        ap, ap50 = run["eval"]["stats"]["AP"], run["eval"]["stats"]["AP50"]
        ref_ap, ref_ap50 = theirs["eval"]["stats"]["AP"], theirs["eval"]["stats"]["AP50"]
        sigma = sigma_seed if sigma_seed is not None else float(np.std(run["bootstrap"]["AP"], ddof=1))
        row = {"AP": ap, "reference_AP": ref_ap, "delta_AP": ap - ref_ap, "delta_AP50": ap50 - ref_ap50,
               "noise_AP": 2 * sigma, "within_noise": abs(ap - ref_ap) <= 2 * sigma,
               "identical": ap == ref_ap and ap50 == ref_ap50}
        ours_ms, ref_ms = run.get("latency", {}).get("cpu"), theirs.get("latency", {}).get("cpu")
        if ours_ms and ref_ms:
            row["latency_ratio"] = ours_ms["median_ms"] / ref_ms["median_ms"]
        rows[name] = row
    same_claims = {c["id"]: c["verdict"] for c in results.get("claims", [])}
    ref_claims = {c["id"]: c["verdict"] for c in reference.get("claims", [])}
    changed = [i for i in same_claims if i in ref_claims and same_claims[i] != ref_claims[i]]
    return {"command": reference.get("command", ""), "started": reference.get("provenance", {}).get("started"),
            "runs": rows, "verdicts_changed": changed}
