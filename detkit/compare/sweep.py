"""``detkit compare`` on a study with a ``sweep`` (``--budget cpu-long``): the contested claims
judged again as the budget grows, with each recipe.

Every swept run (``study.py``: the pair and detectors suites' runs, with each recipe, at each
multiple of the epochs) is trained, evaluated and measured on its own, and its part of
results.json is written at once to ``OUT/runs/<run>.json``, with the report and plots
rebuilt from every part there so far. A run whose part is there (with the same config) is
neither trained nor evaluated again: a study longer than one sitting continues from the
parts committed beside its report, on any machine. ``reuse`` takes parts from an earlier
results.json (the cpu study's 1x runs) for runs of exactly its config. ``--suite`` chooses
which runs a sitting trains, not what it reports: results.json keeps every suite whose runs
are recorded under OUT.

Each slice (a recipe at a multiple) is judged like a study of its own, its runs standing in
for the base runs: the verdicts of ``claims.py`` with the bootstrap of each pair and the seed
probe's sigma (measured at 1x with the base recipe, used for every slice: a longer schedule
was not probed). ``results["sweep"]["trends"]`` has, per claim, the difference and its sigma
at each slice; the report shows them against training steps.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Callable, Mapping

from detkit.compare.claims import claim_pair, difference, verdicts
from detkit.compare.runs import _write_json, is_main_process, precise_batchnorm, train_or_load, val_dataset
from detkit.compare.study import Study, suite_runs, suite_specs
from detkit.engine.distributed import init, shutdown
from detkit.engine.run import pick_device
from detkit.evaluation.bootstrap import resample_indices

PARTS = "runs"  # OUT/runs/<run>.json: each run's part of results.json

SWEPT_CLAIMS = ("focal_beats_cross_entropy", "bifpn_beats_fpn", "efficientnet_beats_resnet",
                "retinanet_matches_two_stage", "efficientdet_efficiency", "two_stage_accuracy")
"""The claims whose trend the sweep reports (the contested ones of issue 17, and two-stage accuracy)."""


# train keys that change nothing a run learns: the folder it writes to, and DDP's unused-parameter
# search (added to the configs after the cpu study, which trained in one process)
_NO_EFFECT = ("out", "find_unused_parameters")


def same_run(a: Mapping, b: Mapping) -> bool:
    """Two run configs that train the same model (``_NO_EFFECT`` aside)."""
    def plain(config):
        config = json.loads(json.dumps(config, sort_keys=True, default=str))
        for key in _NO_EFFECT:
            config.get("train", {}).pop(key, None)
        return config
    return plain(a) == plain(b)


def recorded_parts(study: Study, names: list[str], out: Path) -> dict[str, dict]:
    """The parts under ``out/runs`` of ``names`` whose config is the study's for that run."""
    parts = {}
    for name in names:
        path = Path(out) / PARTS / f"{name}.json"
        if path.is_file():
            part = json.loads(path.read_text())
            if same_run(part.get("config", {}), study.runs[name].config):
                parts[name] = part
    return parts


def compare_sweep(study: Study, suites: list[str], out: Path, *, command: str = "", reuse: Mapping | None = None,
                  say: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Train, evaluate and record every run of the sweep not yet recorded under ``out``, then
    write results.json, report.md and the plots (see the module docstring)."""
    from detkit.compare import core

    if "nms" in suites:
        raise ValueError(f"{study.path}: the nms suite compares suppressors on one model, not budgets: run it from "
                         "a study without a sweep (e.g. --budget cpu --suite nms)")
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    if not is_main_process():
        say, progress = (lambda _: None), False
    out = Path(out)
    names = study.runs_for(suites)  # this sitting trains these; results.json keeps every recorded suite
    parts = recorded_parts(study, study.runs_for(_swept_suites(study)), out)
    for name, (theirs, _) in core.recorded_runs(study, suites, reuse).items():
        if name not in parts:
            parts[name] = theirs
            if is_main_process():
                _write_part(out, name, parts[name])
    pending = [name for name in names if name not in parts]
    say(f"{len(names)} runs: {len(names) - len(pending)} recorded in {out / PARTS}, {len(pending)} to train")
    datasets, draws = {}, {}
    world = init(pick_device(study.runs[pending[0]].config["train"]["device"])) if pending else None
    try:
        for i, name in enumerate(pending, start=1):
            run = study.runs[name]
            say(f"[{i}/{len(pending)}] {name}: training ({core._steps(run.config)}) or loading")
            trained = train_or_load(run, progress=progress)
            if not is_main_process():
                continue
            precise_batchnorm(trained, study.measure["precise_bn"])
            if run.dataset not in datasets:
                datasets[run.dataset] = val_dataset(trained.config)
                draws[run.dataset] = resample_indices(len(datasets[run.dataset]), study.measure["bootstrap"],
                                                      seed=study.seed)
            part = core._evaluated(trained, datasets[run.dataset], draws[run.dataset])
            core._measure_cost({name: trained}, {run.dataset: datasets[run.dataset]}, {name: part}, study.measure)
            parts[name] = part
            _write_part(out, name, part)
            del trained
            core.write(_reported(study, suites, parts, command, started, time.monotonic() - clock), out)
    finally:
        if world is not None:
            shutdown(world)
    if not is_main_process():
        return {}
    results = _reported(study, suites, parts, command, started, time.monotonic() - clock)
    core.write(results, out)
    return results


def _swept_suites(study: Study) -> list[str]:
    return [suite for suite in study.chosen(["all"]) if suite != "nms"]


def reported_suites(study: Study, asked: list[str], parts: Mapping[str, dict]) -> list[str]:
    """The suites a sitting's results.json reports, in study order: those asked for, and every
    other swept suite whose runs (the base recipe at the first multiple) are all recorded, so a
    ``--suite`` sitting into a study's folder adds to its report and drops nothing from it."""
    return [suite for suite in _swept_suites(study) if suite in asked or _recorded(study, suite, parts)]


def _recorded(study: Study, suite: str, parts: Mapping[str, dict]) -> bool:
    """Whether ``suite``'s runs (the base recipe at the first multiple) are all in ``parts``."""
    return all(run in parts for run in suite_runs(suite, study.suites[suite]))


def _reported(study: Study, asked: list[str], parts: Mapping[str, dict], command: str,
              started: datetime.datetime, seconds: float) -> dict:
    suites = reported_suites(study, asked, parts)
    wanted = set(study.runs_for(suites))
    return _results(study, suites, {name: part for name, part in parts.items() if name in wanted}, command,
                    started, seconds)


def _write_part(out: Path, name: str, part: Mapping) -> None:
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    _write_json(out / PARTS / f"{name}.json", part)


def _results(study: Study, suites: list[str], parts: Mapping[str, dict], command: str,
             started: datetime.datetime, seconds: float) -> dict:
    from detkit.compare import core

    results: dict = {core.VERSION_KEY: core.SCHEMA_VERSION, "budget": study.budget, "about": study.about,
                     "seed": study.seed, "suites_run": list(suites), "command": command, "study": study.spec,
                     "measure": dict(study.measure), "runs": dict(parts), "suites": {}}
    results["noise"] = core._noise(study, results["runs"])
    specs = suite_specs(study, suites)
    # the suites whose runs (the base recipe at the first multiple) are recorded: a partial sweep's
    # results.json names no run it does not hold
    results["suites"] = {suite: spec for suite, spec in specs.items() if _recorded(study, suite, parts)}
    results["sweep"] = sweep_summary(study, specs, results)
    results["claims"] = next(iter(results["sweep"]["slices"].values()))["claims"]  # the base recipe, first multiple
    results["provenance"] = core.provenance(started, seconds)
    return results


def slice_view(results: Mapping, specs: Mapping, members: Mapping[str, str]) -> dict:
    """``results`` as a study of one slice: its recorded runs under the base runs' names, and the
    suites whose runs are all there (the detectors suite with those of its detectors that are). A
    member not yet recorded is left out, not stood in for by its base run (another recipe or
    budget), so a claim is judged at a slice only on the slice's own runs."""
    recorded = {base: swept for base, swept in members.items() if swept in results["runs"]}
    runs = {name: run for name, run in results["runs"].items() if name not in members}
    runs.update({base: results["runs"][swept] for base, swept in recorded.items()})
    suites = {}
    for suite, spec in specs.items():
        if suite == "detectors":
            suites[suite] = {**spec, "runs": [name for name in spec["runs"] if name in runs]}
        elif spec["variant"] in runs and spec["baseline"] in runs:  # a pair suite, as results.json holds it
            suites[suite] = spec
    return {**results, "runs": runs, "suites": suites}


def sweep_summary(study: Study, specs: Mapping, results: Mapping) -> dict:
    """The sweep's layout (its multiples, recipes, suites and each slice's runs) judged on
    ``results``' runs (``judge_sweep``)."""
    sweep = study.sweep
    slices = {}
    for label, members in sweep["slices"].items():
        recipe, multiple = label.rsplit("@", 1)
        slices[label] = {"recipe": recipe, "multiple": int(multiple[:-1]),
                         "runs": {base: swept for base, swept in members.items()
                                  if any(base in suite_runs(s, study.suites[s]) for s in specs)}}
    layout = {"multiples": list(sweep["multiples"]), "recipes": list(sweep["recipes"]),
              "base_recipe": sweep["base_recipe"], "suites": dict(specs), "slices": slices}
    return judge_sweep({**results, "sweep": layout})


def judge_sweep(results: Mapping) -> dict:
    """``results["sweep"]`` with, per slice, the runs not yet recorded, its steps and its
    verdicts, and per claim of ``SWEPT_CLAIMS`` the difference and its sigma at every slice
    where the claim's own runs are recorded (from results.json alone: ``detkit compare
    --report-only`` re-judges with it). A slice with runs still missing lists only the swept
    claims whose runs it has."""
    sweep = dict(results["sweep"])
    slices, trends = {}, {}
    for label, entry in sweep["slices"].items():
        members = entry["runs"]
        missing = [swept for swept in members.values() if swept not in results["runs"]]
        entry = {**entry, "pending": missing, "steps": None, "claims": []}
        if len(missing) < len(members):
            view = slice_view(results, sweep["suites"], members)
            entry["steps"] = int(max(results["runs"][swept]["steps"] for swept in members.values()
                                     if swept in results["runs"]))
            judged = verdicts(view)
            pairs = {c["id"]: claim_pair(view, c["id"]) for c in judged if c["id"] in SWEPT_CLAIMS}
            entry["claims"] = [claim for claim in judged if not missing or pairs.get(claim["id"]) is not None]
            for claim in entry["claims"]:
                pair = pairs.get(claim["id"])
                if pair is None:
                    continue
                delta, sigma = difference(view, *pair)
                trends.setdefault(claim["id"], []).append({
                    "slice": label, "recipe": entry["recipe"], "multiple": entry["multiple"], "steps": entry["steps"],
                    "variant": pair[0], "baseline": pair[1], "variant_AP": view["runs"][pair[0]]["eval"]["stats"]["AP"],
                    "baseline_AP": view["runs"][pair[1]]["eval"]["stats"]["AP"], "delta": delta, "sigma": sigma,
                    "verdict": claim["verdict"]})
        slices[label] = entry
    return {**sweep, "slices": slices, "trends": trends}
