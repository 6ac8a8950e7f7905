"""The schema of ``detkit compare``'s results.json, and its check (docs/compare/results-schema.md).

    results = load_results(Path("docs/compare/cpu/results.json"))   # read and checked
    validate(results)                                               # ValueError naming the first bad field

results.json is the one record of a study: report.md, the plots, the verdicts and ``--reference``
are all computed from it. ``detkit_compare`` holds its schema version. A field is *required*
when one of those readers reads it; the others ``detkit compare`` writes too, and they are
type-checked when present. Keys the schema does not name are allowed and ignored (a newer
detkit may add fields without a new version); the two closed sets are the suite names (the
report renders each suite) and the claims' verdicts.

The version goes up when a change would mislead or break a reader of the current version: a
required field removed, renamed, retyped or given a new meaning, or a new suite name or
verdict. A file of a newer version than ``SCHEMA_VERSION`` is refused with a message saying
so; one without the version is not a results.json of ``detkit compare``.

``validate`` takes the JSON form of the results (what ``json.loads`` returns); ``core.write``
checks the text it is about to write, so the writer cannot drift from this schema.
"""

from __future__ import annotations

import json
import numbers
import re
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn

from detkit.compare.claims import NOT_MEASURABLE, NOT_REPRODUCED, NOT_TESTED, REPRODUCED
from detkit.compare.study import PAIRS, SUITES

SCHEMA_VERSION = 2  # 2: the verdict "not tested" (claims.NOT_TESTED)
VERSION_KEY = "detkit_compare"  # the version field; its presence also marks the file as detkit compare's
DOCUMENTATION = "docs/compare/results-schema.md"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE, NOT_TESTED)

Where = tuple  # a field's place: the keys and list indices from the top, e.g. ("runs", "ssd", "eval")
Check = Callable[[Any, Where], None]  # raises _Invalid when the value at that place is wrong


class _Invalid(Exception):
    def __init__(self, where: Where, problem: str):
        super().__init__(problem)
        self.where, self.problem = where, problem


def _shown(value: Any) -> str:
    """A value as its JSON reader sees it, short: 'x', 3, null, true, an object, a list of 5."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _expected(what: str, value: Any, where: Where) -> NoReturn:
    raise _Invalid(where, f"expected {what}, got {_shown(value)}")


# ------------------------------------------------------------------------------ the checks the schema is made of


def number(value: Any, where: Where) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _expected("a number", value, where)


def integer(value: Any, where: Where) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _expected("an integer", value, where)


def text(value: Any, where: Where) -> None:
    if not isinstance(value, str):
        _expected("a string", value, where)


def flag(value: Any, where: Where) -> None:
    if not isinstance(value, bool):
        _expected("true or false", value, where)


def nullable(check: Check) -> Check:
    def nullable_check(value, where):
        if value is not None:
            check(value, where)

    return nullable_check


def one_of(*choices: str) -> Check:
    def one_of_check(value, where):
        if value not in choices:
            _expected("one of " + ", ".join(map(repr, choices)), value, where)

    return one_of_check


def list_of(item: Check, *, length: int | None = None, non_empty: bool = False) -> Check:
    def list_check(value, where):
        if not isinstance(value, (list, tuple)):
            _expected("a list", value, where)
        if length is not None and len(value) != length:
            raise _Invalid(where, f"expected a list of {length}, got {_shown(value)}")
        if non_empty and not value:
            raise _Invalid(where, "expected a non-empty list, got an empty one")
        for i, entry in enumerate(value):
            item(entry, (*where, i))

    return list_check


def _an_object(value: Any, where: Where) -> None:
    if not isinstance(value, Mapping):
        _expected("an object", value, where)


def record(required: Mapping[str, Check], optional: Mapping[str, Check] | None = None, *,
           same_length: tuple[str, ...] = ()) -> Check:
    """An object with these fields (others allowed); the lists named in ``same_length``, when
    present, are as long as each other (they are read side by side)."""

    def record_check(value, where):
        _an_object(value, where)
        for key, check in required.items():
            if key not in value:
                raise _Invalid((*where, key), "missing (a required field)")
            check(value[key], (*where, key))
        for key, check in (optional or {}).items():
            if key in value:
                check(value[key], (*where, key))
        present = [key for key in same_length if key in value]
        for key in present[1:]:
            if len(value[key]) != len(value[present[0]]):
                raise _Invalid((*where, key), f"expected {len(value[present[0]])} values (as many as "
                                              f"{present[0]}), got {_shown(value[key])}")

    return record_check


def table(entry: Check, *, required: tuple[str, ...] = (), non_empty: bool = False) -> Check:
    """An object of named entries alike (runs by name, suppressors by name); the ``required``
    names must be there."""

    def table_check(value, where):
        _an_object(value, where)
        if non_empty and not value:
            raise _Invalid(where, "expected at least one entry, got an empty object")
        for key in required:
            if key not in value:
                raise _Invalid((*where, key), "missing (a required entry)")
        for key, item in value.items():
            entry(item, (*where, key))

    return table_check


def by_name(entries: Mapping[str, Check]) -> Check:
    """An object whose keys are some of ``entries``' names, each entry checked by its own check."""

    def by_name_check(value, where):
        _an_object(value, where)
        for key, item in value.items():
            if key not in entries:
                raise _Invalid((*where, key), f"unknown name; expected one of {', '.join(entries)}")
            entries[key](item, (*where, key))

    return by_name_check


ANY_OBJECT = _an_object
NUMBERS = list_of(number)
TEXTS = list_of(text)

# ------------------------------------------------------------------------------ the schema, version 1

LATENCY = record({"median_ms": number, "q25_ms": number, "q75_ms": number, "fps": number},
                 {"images": integer, "device": text})
BUCKET_ROW = record({"bucket": text, "objects": integer, "matched": integer, "missed": integer},
                    {"recall": nullable(number), "ap": nullable(number)})
ERROR_SUMMARY = record({"ap": number, "delta_ap": table(number), "special_delta_ap": table(number),
                        "counts": table(integer)},  # TIDE's (detkit.evaluation.errors)
                       {"miss_causes": table(integer), "crowding": list_of(BUCKET_ROW)})
RUN = record({
    "dataset": text,
    "config": record({"model": record({"type": text})}),  # the rest is a training config (config.py checks those)
    "seed": integer,
    "steps": integer,
    "train_seconds": number,
    "reused": flag,
    "eval": record({"stats": record({m: number for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")}),
                    "pr": record({"recall": NUMBERS, "iou50": NUMBERS}, {"iou75": NUMBERS},
                                 same_length=("recall", "iou50", "iou75"))},
                   {"images": integer, "per_class": table(number), "check": table(number)}),
    "bootstrap": record({"AP": NUMBERS}, {m: NUMBERS for m in ("AP50", "AP75", "AR100")},
                        same_length=("AP", "AP50", "AP75", "AR100")),
    "loss": list_of(list_of(number, length=2)),  # [step, total loss]; empty when loaded from weights
    "params": integer,
    "gflops": number,
    "input": list_of(integer, length=2),  # (height, width)
    "latency": table(LATENCY, required=("cpu",)),  # by device: cpu, and cuda when there was a GPU
}, {"errors": ERROR_SUMMARY,  # why it misses (detkit.evaluation.errors); newer studies only
    "threads": list_of(integer)})  # torch CPU threads it trained on (two: resumed on another); newer studies only
SUPPRESSOR_ROW = record({
    "config": ANY_OBJECT, **{m: number for m in ("AP", "AP50", "AP75", "AR100", "recall_covered",
                                                   "recall_at_threshold", "precision_at_threshold")},
    **{count: integer for count in ("recoverable", "lost", "duplicates", "other_fp", "kept", "images")},
}, {**{count: integer for count in ("objects", "covered", "tp", "candidates")}, "score_threshold": number,
    "MR2": number,  # log-average miss rate (evaluation/miss_rate.py); rows of the named suppressors
    "raised": number,  # Adaptive-NMS: share of kept boxes whose threshold the density raised above N_t
    "oracle_margin": number,  # Adaptive-NMS on the oracle's densities (+ this margin) ...
    "oracle_same_class": flag,  # ... counting only neighbours of the object's class
    "margin": number,  # Adaptive-NMS on the predicted densities + this margin (chosen on the training split)
    "readout": text,  # Adaptive-NMS with the densities read at each final box ("box")
    "errors": ERROR_SUMMARY})  # why it misses; rows of the named suppressors
DENSITY_REPORT = record({"candidates": integer, "pearson": number, "iou_threshold": number, "crowded": integer,
                         "crowded_predicted_above": number, "lone": integer, "lone_predicted_below": number},
                        {"predicted_mean": number, "predicted_max": number, "true_mean": number,
                         # the shares once per object, at its best-scoring candidate (newer studies)
                         "objects": record({"objects": integer, "pearson": number, "crowded": integer,
                                            "crowded_predicted_above": number, "lone": integer,
                                            "lone_predicted_below": number})})
SWEEP = record({"key": text, "values": NUMBERS, "AP": NUMBERS, "recall_covered": NUMBERS},
               {"AP50": NUMBERS}, same_length=("values", "AP", "AP50", "recall_covered"))
NMS_SPLIT = record({
    "dataset": text,
    "min_pair_iou": nullable(number),
    "images": integer,
    "rows": table(SUPPRESSOR_ROW, required=("nms",)),  # the other rows are judged against nms
    "sigma_vs_nms": table(record({"AP": number}, {"AP50": number, "AR100": number, "recall_covered": number})),
    "sweep": table(SWEEP),
}, {"cap": integer, "densities": DENSITY_REPORT,  # densities: when the model predicts them
    "densities_box_readout": DENSITY_REPORT})  # ... read at each final box (Faster R-CNN's RPN density subnet)
MARGIN = record({"margins": NUMBERS, "AP": NUMBERS, "AP50": NUMBERS, "chosen": number},
                same_length=("margins", "AP", "AP50"))  # Adaptive-NMS's margin, chosen on training images
SUPPRESSOR_TABLES = record({"splits": table(NMS_SPLIT, non_empty=True)}, {"margin": MARGIN})
CROWD_STATISTICS = record({"split": text, "thresholds": NUMBERS, "objects": integer, "images": integer,
                           "nms": NUMBERS, "diou_nms": NUMBERS, "neighbour": NUMBERS},
                          {"density_bins": NUMBERS, "density_counts": list_of(integer)},  # histogram: edges, counts
                          same_length=("thresholds", "nms", "diou_nms", "neighbour"))
DATASET_MISSING = record({"missing": text})  # the dataset was not found: why


def crowd_statistics(value: Any, where: Where) -> None:
    missing = isinstance(value, Mapping) and "missing" in value
    (DATASET_MISSING if missing else CROWD_STATISTICS)(value, where)


PAIR_SUITE = record({"baseline": text, "variant": text}, {"roles": table(text)})
SUITE_RECORDS = {
    "detectors": record({"runs": list_of(text, non_empty=True)}),
    **{suite: PAIR_SUITE for suite in PAIRS},
    "nms": record({"run": text, "score_threshold": number, "splits": table(NMS_SPLIT, non_empty=True)},
                  {"crowd_statistics": table(crowd_statistics), "margin": MARGIN,
                   "also": table(SUPPRESSOR_TABLES)}),  # also: further runs' tables, by run name
}
assert set(SUITE_RECORDS) == set(SUITES), "every suite of study.py has its record here"
SEED_PROBE = record({"run": text, "seeds": list_of(integer), "AP": NUMBERS, "AP50": NUMBERS, "std_AP": number},
                    {"runs": TEXTS, "std_AP50": number}, same_length=("runs", "seeds", "AP", "AP50"))
CLAIM = record({**{key: text for key in ("id", "suite", "claim", "source", "published", "measured", "why")},
                "verdict": one_of(*VERDICTS)})
REPRODUCTION = record({
    "command": text,
    "started": nullable(text),
    "runs": table(record({**{key: number for key in ("AP", "reference_AP", "delta_AP", "delta_AP50", "noise_AP")},
                          "within_noise": flag, "identical": flag}, {"latency_ratio": number})),
    "verdicts_changed": TEXTS,
})
PROVENANCE = record({
    "started": text,
    "seconds": number,
    "python": text,
    "platform": text,
    "cpu": text,
    "cores": nullable(integer),
    "torch_threads": integer,
    "gpu": nullable(text),
    "packages": table(nullable(text), required=("detkit", "torch")),
})
MEASURE = record({"latency_images": integer, "warmup": integer, "precise_bn": integer},
                 {"bootstrap": integer, "seed_probe": nullable(ANY_OBJECT)})
TREND_POINT = record({"slice": text, "recipe": text, "multiple": integer, "steps": integer, "variant": text,
                      "baseline": text, "variant_AP": number, "baseline_AP": number, "delta": number, "sigma": number,
                      "verdict": one_of(*VERDICTS)})
SWEEP = record({"multiples": list_of(integer, non_empty=True), "recipes": TEXTS, "suites": ANY_OBJECT,
                "slices": table(record({"recipe": text, "multiple": integer, "runs": table(text), "pending": TEXTS,
                                        "steps": nullable(integer), "claims": list_of(CLAIM)})),
                "trends": table(list_of(TREND_POINT))}, {"base_recipe": text})
RESULTS = record({
    "budget": text,
    "seed": integer,
    "command": text,
    "study": record({}, {"budget": text, "recipe": ANY_OBJECT, "measure": ANY_OBJECT}),
    "runs": table(RUN),
    "suites": by_name(SUITE_RECORDS),  # a suite of another name is a new version: the report renders each
    "noise": record({"bootstrap_draws": integer, "seed_probe": nullable(SEED_PROBE)}),
    "provenance": PROVENANCE,
}, {"about": text, "suites_run": TEXTS, "measure": MEASURE, "claims": list_of(CLAIM), "reference": REPRODUCTION,
    "sweep": SWEEP})


# ------------------------------------------------------------------------------ validate

_MISSING = object()  # a version key that is not there (None would be a null there)


def validate(results: Mapping, *, source: str = "results.json") -> None:
    """Raise a ValueError naming ``source``, the JSON path of the first problem in ``results``
    and what was expected there; return None when ``results`` follows the schema."""
    try:
        _an_object(results, ())
        _version(results.get(VERSION_KEY, _MISSING))
        RESULTS(results, ())
        _references(results)
    except _Invalid as invalid:
        raise ValueError(f"{source}: {dotted(invalid.where) or '(top level)'}: {invalid.problem}; "
                         f"see {DOCUMENTATION} for the fields") from None


def load_results(path: str | Path) -> dict:
    """results.json at ``path``, read and validated (a ValueError names the file and the field)."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except ValueError as error:  # not JSON, or not text
        raise ValueError(f"{path}: not JSON ({error}); expected a results.json written by detkit compare") from None
    validate(results, source=str(path))
    return results


def dotted(where: Where) -> str:
    """runs.ssd.eval.stats.AP, claims[3].verdict, runs["retinanet.seed+1"].seed."""
    out = ""
    for key in where:
        if isinstance(key, int):
            out += f"[{key}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            out += f".{key}" if out else key
        else:
            out += f"[{json.dumps(key)}]"
    return out



def _version(version: Any) -> None:
    where = (VERSION_KEY,)
    if version is _MISSING:
        raise _Invalid(where, "missing: a results.json of detkit compare carries its schema version here, "
                              "so this file is not one")
    integer(version, where)
    if version > SCHEMA_VERSION:
        from detkit import __version__

        raise _Invalid(where, f"schema version {version}: written by a newer detkit than this one (detkit "
                              f"{__version__} reads versions up to {SCHEMA_VERSION}); upgrade detkit "
                              "(pip install -U detkit) to read it")
    if version < 1:
        raise _Invalid(where, f"expected a schema version from 1 to {SCHEMA_VERSION}, got {version}")


def _references(results: Mapping) -> None:
    """The names one part gives of another exist, and the bootstraps have one value per draw:
    the readers look these up and subtract them without asking."""
    runs = results["runs"]

    def a_run(name: str, where: Where) -> None:
        if name not in runs:
            raise _Invalid(where, f"{name!r} is not a run of this file (runs has {', '.join(runs) or 'none'})")

    for suite, spec in results["suites"].items():
        if suite == "detectors":
            for i, name in enumerate(spec["runs"]):
                a_run(name, ("suites", suite, "runs", i))
        elif suite == "nms":
            a_run(spec["run"], ("suites", suite, "run"))
            tables = {(): spec, **{("also", name): part for name, part in spec.get("also", {}).items()}}
            for at, part in tables.items():
                if at:
                    a_run(at[1], ("suites", suite, *at))
                for label, split in part["splits"].items():
                    for name in split["rows"]:
                        if name != "nms" and name not in split["sigma_vs_nms"]:
                            raise _Invalid(("suites", suite, *at, "splits", label, "sigma_vs_nms", name),
                                           "missing (every suppressor but nms has its noise against nms)")
        else:
            for role in ("baseline", "variant"):
                a_run(spec[role], ("suites", suite, role))
    probe = results["noise"]["seed_probe"]
    if probe:
        a_run(probe["run"], ("noise", "seed_probe", "run"))
    draws = results["noise"]["bootstrap_draws"]
    for name, run in runs.items():
        if len(run["bootstrap"]["AP"]) != draws:
            raise _Invalid(("runs", name, "bootstrap", "AP"),
                           f"expected {draws} values (noise.bootstrap_draws), got {_shown(run['bootstrap']['AP'])}")
