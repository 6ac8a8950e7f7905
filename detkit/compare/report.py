"""report.md from results.json: the verdicts first, then the noise the verdicts are judged
against, each suite's tables and pictures, and the provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import yaml

from detkit.compare.claims import NOT_MEASURABLE, NOT_TESTED, REPRODUCED, SHORT_NAMES
from detkit.compare.study import MEASURE_DEFAULTS, PAIRS, RECIPE_NAMES

SUITE_TITLES = {
    "detectors": "Detectors: two-stage against one-stage",
    "focal": "Focal loss against alpha-balanced cross-entropy (RetinaNet)",
    "necks": "FPN against BiFPN (same detector and backbone)",
    "backbones": "ResNet against EfficientNet (matched ImageNet cost)",
    "nms": "Suppressors: NMS, Soft-NMS, Adaptive-NMS, DIoU-NMS on the same raw predictions",
}
IMAGENET_META = {  # backbone -> torchvision weights whose metadata gives ImageNet accuracy and cost
    ("resnet", 18): "ResNet18_Weights", ("resnet", 34): "ResNet34_Weights", ("resnet", 50): "ResNet50_Weights",
    ("resnet", 101): "ResNet101_Weights", **{("efficientnet", f"b{i}"): f"EfficientNet_B{i}_Weights" for i in range(8)},
}


def _f(value: float, digits: int = 3) -> str:
    return "-" if value is None or value < 0 else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list], numbers_from: int | None = None) -> list[str]:
    """A Markdown table; columns from ``numbers_from`` on are right-aligned (numbers)."""
    align = ["---:" if numbers_from is not None and i >= numbers_from else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]


def architecture(config: Mapping) -> str:
    """"faster_rcnn, resnet-18 + fpn 64" from a run config's model section."""
    model = config["model"]
    backbone = model.get("backbone") or {}
    kind = backbone.get("type", {"ssd": "vgg16_ssd", "yolo": "darknet53", "efficientdet": "efficientnet"}.get(
        model["type"], "resnet"))
    depth = backbone.get("depth") or backbone.get("variant") or ("b0" if kind == "efficientnet" else
                                                                 50 if kind == "resnet" else "")
    neck = model.get("neck", {"type": {"efficientdet": "bifpn", "ssd": None}.get(model["type"], "fpn")}) or {}
    if not neck.get("type"):
        neck = {}
    neck_text = f" + {neck['type']} {neck.get('out_channels') or neck.get('width') or ''}".rstrip() if neck else ""
    scale = f" ({model['scale']})" if model.get("scale") else ""
    return f"{model['type']}{scale}, {kind}-{depth}{neck_text}".replace("-,", ",")


def _pm(run: Mapping) -> str:
    import numpy as np

    return f"{_f(run['eval']['stats']['AP'])} ± {np.std(run['bootstrap']['AP'], ddof=1):.3f}"


def _model_rows(results: Mapping, names: list[str]) -> tuple[list[str], list[list]]:
    gpu = any("cuda" in results["runs"][n]["latency"] for n in names)
    header = ["run", "architecture", "input", "params (M)", "GFLOPs", "CPU ms (quartiles)", "CPU FPS",
              *(["GPU ms"] if gpu else []), "AP ± boot", "AP50", "AP75", "APs", "APm", "APl", "train (min)"]
    rows = []
    for name in names:
        run = results["runs"][name]
        s, cpu = run["eval"]["stats"], run["latency"]["cpu"]
        rows.append([f"`{name}`", architecture(run["config"]), "x".join(map(str, run["input"])),
                     f"{run['params'] / 1e6:.2f}", f"{run['gflops']:.2f}",
                     f"{cpu['median_ms']:.1f} ({cpu['q25_ms']:.1f}-{cpu['q75_ms']:.1f})", f"{cpu['fps']:.0f}",
                     *([f"{run['latency']['cuda']['median_ms']:.1f}" if 'cuda' in run['latency'] else "-"] if gpu else []),
                     _pm(run), _f(s["AP50"]), _f(s["AP75"]), _f(s["APs"]), _f(s["APm"]), _f(s["APl"]),
                     f"{run['train_seconds'] / 60:.1f}" + (" (reused)" if run["reused"] else "")])
    return header, rows


def _claims_of(results: Mapping, suite: str) -> list[dict]:
    return [c for c in results.get("claims", []) if c["suite"] == suite]


def _verdict(claim: Mapping) -> str:
    mark = {REPRODUCED: "**reproduced**", NOT_MEASURABLE: "*not measurable here*", NOT_TESTED: "*not tested*"}.get(
        claim["verdict"], "**not reproduced at this budget**")
    return f"{mark} ({claim['why']})"


def verdict_table(claims: list[dict]) -> list[str]:
    """The claims as a Markdown table: suite, claim, published, measured, verdict (report.md and survey.md)."""
    return _table(["suite", "claim", "published", "measured here", "verdict"],
                  [[c["suite"], c["claim"], f"{c['published']} ({c['source']})", c["measured"], _verdict(c)]
                   for c in claims])


def write_report(results: Mapping, out: Path, plots: list[Path]) -> Path:
    lines = [f"# detkit compare: the {results['budget']} budget", ""]
    if results["budget"] == "smoke":
        lines += ["> **Smoke budget.** This run checks the machinery; its numbers and verdicts mean nothing.", ""]
    lines += [results.get("about", ""), ""]
    lines += _header(results) + [""]
    shown = {p.name for p in plots}
    if results.get("sweep"):
        first = next(iter(results["sweep"]["slices"]))
        lines += [f"## Verdicts at {first}", "", *verdict_table(results.get("claims", [])), ""]
        lines += _sweep_section(results, shown) + [""]
    else:
        lines += ["## Verdicts", "", *verdict_table(results.get("claims", [])), ""]
    lines += _noise_section(results) + [""]
    for suite in results["suites"]:
        lines += [f"## {SUITE_TITLES[suite]}", ""]
        if suite == "nms":
            lines += _nms_section(results)
        else:
            lines += _model_suite(results, suite, shown)
        claims = _claims_of(results, suite)
        if claims:
            lines += ["", *[f"- {c['claim']} {_verdict(c)}: {c['measured']}." for c in claims]]
        lines.append("")
    if "training.png" in shown:
        lines += ["## Training", "", "Loss against step for each run (log scale): whether the budget ended a run "
                  "still learning shows here.", "", "![training loss](training.png)", ""]
    if results.get("reference"):
        lines += _reproduction(results) + [""]
    lines += _provenance(results)
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _sweep_section(results: Mapping, shown: set[str]) -> list[str]:
    """The claims as the budget grows: every claim's difference and its noise at each recipe and
    multiple with the verdict there, one plot per claim, then the runs not yet recorded."""
    sweep = results["sweep"]
    lines = ["## As the budget grows", "",
             f"Each run trained at {', '.join(f'{k}x' for k in sweep['multiples'])} the recipe's steps (each a full "
             f"schedule of its own), with each recipe ({', '.join(sweep['recipes'])}); every slice judged as a study "
             "of its own: the paired bootstrap of its two runs and the seed probe's sigma measured at "
             f"{next(iter(sweep['slices']))} (longer schedules were not probed).", "", *sweep_table(results), ""]
    claims = {c["id"]: c for s in sweep["slices"].values() for c in s["claims"]}
    for claim_id in sweep["trends"]:
        if f"sweep_{claim_id}.png" in shown:
            lines += [f"### {claims[claim_id]['claim']}", "",
                      f"![{claim_id} against training steps](sweep_{claim_id}.png)", ""]
    pending = {label: s["pending"] for label, s in sweep["slices"].items() if s["pending"]}
    if pending:
        lines += ["Not yet recorded (`detkit compare --plan` shows the time left):", ""]
        lines += [f"- {label}: {', '.join(f'`{r}`' for r in runs)}" for label, runs in pending.items()]
    return lines


def sweep_table(results: Mapping) -> list[str]:
    """A sweep's claims at every recorded recipe and multiple as one Markdown table: the runs'
    AP, their difference, its 2 sigma and the verdict (report.md and survey.md)."""
    rows = [[SHORT_NAMES[claim_id], RECIPE_NAMES.get(p["recipe"], p["recipe"]), f"{p['steps']:,} ({p['multiple']}x)",
             f"`{p['variant']}` {_f(p['variant_AP'])}", f"`{p['baseline']}` {_f(p['baseline_AP'])}",
             f"{p['delta']:+.3f}", f"{2 * p['sigma']:.3f}",
             "**reproduced**" if p["verdict"] == REPRODUCED else _short_verdict(p["verdict"])]
            for claim_id, points in results["sweep"]["trends"].items()
            for p in sorted(points, key=lambda p: (p["recipe"], p["steps"]))]
    return _table(["claim", "recipe", "steps", "variant AP", "baseline AP", "difference", "2 sigma", "verdict"],
                  rows, numbers_from=2)


def _short_verdict(verdict: str) -> str:
    return {REPRODUCED: "reproduced", NOT_MEASURABLE: "not measurable", NOT_TESTED: "not tested"}.get(
        verdict, "not reproduced")


def _header(results: Mapping) -> list[str]:
    p = results["provenance"]
    m = results.get("measure") or {**MEASURE_DEFAULTS, **(results["study"].get("measure") or {})}
    gpu = p["gpu"] or "no GPU"
    norms = (f"after its BatchNorm statistics are recomputed over {m['precise_bn']} training batches (precise BN, "
             "every model alike)" if m["precise_bn"] else "with the BatchNorm statistics it trained with")
    method = (f" Each model is evaluated at the end of its budget (its last weights), {norms}; latency is timed on "
              f"{m['latency_images']} validation images after {m['warmup']} warm-up calls.")
    trained = sum(r["train_seconds"] for r in results["runs"].values()) / 60
    earlier = sum(r["train_seconds"] for r in results["runs"].values() if r["reused"] and "reused_from" not in r) / 60
    recorded = [r for r in results["runs"].values() if "reused_from" in r]
    spent = f"; its {len(results['runs'])} runs trained for {trained:.0f} min in all" + (
        f" ({earlier:.0f} min of it in an earlier invocation, whose finished runs this one loaded)" if earlier else "")
    if recorded:
        sources = sorted({f"`{r['reused_from']}`" for r in recorded})
        spent += (f"; {len(recorded)} of them recorded from the results of {', '.join(sources)} (neither trained "
                  "nor evaluated again)")
    return [f"Produced by `{results['command']}` on {p['started']} in {p['seconds'] / 60:.0f} min{spent}: {p['cpu']}, "
            f"{p['cores']} cores ({p['torch_threads']} torch threads), {gpu}; detkit {p['packages']['detkit']}, "
            f"torch {p['packages']['torch']}, seed {results['seed']}.{method} Everything below is in "
            "`results.json`; the plots are drawn from it."]


def _noise_section(results: Mapping) -> list[str]:
    noise = results["noise"]
    lines = ["## Noise: what a difference means here", "",
             f"- **Evaluation sample.** Each AP is measured on the validation split's images; `± boot` is the standard "
             f"deviation of AP over {noise['bootstrap_draws']} bootstrap resamples of those images. Two runs on one "
             "split share the resamples, so the noise of their difference is paired."]
    probe = noise.get("seed_probe")
    if probe:
        values = ", ".join(f"{ap:.3f}" for ap in probe["AP"])
        lines.append(f"- **Training seed.** `{probe['run']}` trained with seeds {probe['seeds']}: AP {values} "
                     f"(AP50 {', '.join(f'{v:.3f}' for v in probe['AP50'])}), sigma_seed = {probe['std_AP']:.3f} AP. "
                     "This is also the noise to expect from rerunning the study on another machine or software "
                     "build (floating-point differences grow like a change of seed).")
    else:
        lines.append("- **Training seed: not measured** (the study ran no seed probe). The verdicts below count only "
                     "the evaluation sample's noise, so they overstate how sure a difference between models is.")
    lines += ["- **A difference between two models counts** when it exceeds 2 sigma, sigma^2 = var_boot(difference) + "
              "2 sigma_seed^2. Between suppressors on one model's saved predictions only the bootstrap applies.",
              "- **Rerunning with the same seed** on the same machine and software gives the same weights, hence the "
              "same AP to the last digit: training on the CPU is deterministic here (data order, augmentation and "
              "initialisation all derive from the seed). Latency is a median over images; reruns move it by about "
              "its quartile spread (shown in the tables)."]
    return lines


def _model_suite(results: Mapping, suite: str, shown: set[str]) -> list[str]:
    spec = results["suites"][suite]
    names = list(spec["runs"]) if suite == "detectors" else [spec["baseline"], spec["variant"]]
    header, rows = _model_rows(results, names)
    lines = _table(header, rows, numbers_from=2)
    if suite in PAIRS:
        import numpy as np

        from detkit.compare.claims import difference

        delta, sigma = difference(results, spec["variant"], spec["baseline"])
        boot = np.asarray(results["runs"][spec["variant"]]["bootstrap"]["AP"]) - np.asarray(
            results["runs"][spec["baseline"]]["bootstrap"]["AP"])
        lines += ["", f"Difference `{spec['variant']}` - `{spec['baseline']}`: {delta:+.3f} AP; noise sigma = "
                  f"{sigma:.3f} (paired bootstrap {boot.std(ddof=1):.3f}, with the training seed's)."]
        if suite == "backbones":
            lines += ["", *_imagenet_rows(results, names)]
    errors = {n: results["runs"][n]["errors"] for n in names if "errors" in results["runs"][n]}
    if errors:
        lines += ["", *_error_table(errors, "run")]
    if suite == "detectors":
        lines += ["", *(f"![{n}]({n}.png)" for n in ("speed_accuracy", "ap_by_size", "pr_curves") if f"{n}.png" in shown)]
    return lines


ERROR_COLUMNS = ("cls", "loc", "both", "dupe", "bkg", "miss")


def _error_table(errors: Mapping[str, Mapping], what: str) -> list[str]:
    """Why each run (or suppressor) misses: TIDE's dAP50 per error and the special ones, in AP
    points; with raw candidates, the unmatched objects by cause; recall and AP50 of the most
    crowded objects (density > 0.5)."""
    causes = any("miss_causes" in e for e in errors.values())
    header = [what, "AP50 (TIDE)", *(f"d{name}" for name in ERROR_COLUMNS), "dFP", "dFN",
              *(["unmatched", "suppressed", "not proposed", "taken"] if causes else []),
              "recall (d > 0.5)", "AP50 (d > 0.5)"]
    rows = []
    for name, e in errors.items():
        crowded = next((row for row in e.get("crowding", []) if row["bucket"] == "> 0.5"), None)
        c = e.get("miss_causes")
        rows.append([f"`{name}`", f"{100 * e['ap']:.1f}", *(f"{100 * e['delta_ap'][k]:.2f}" for k in ERROR_COLUMNS),
                     f"{100 * e['special_delta_ap']['fp']:.2f}", f"{100 * e['special_delta_ap']['fn']:.2f}",
                     *([c["unmatched"], c["suppressed"], c["not_proposed"], c["taken"]] if causes and c else
                       ["-"] * 4 if causes else []),
                     _f(crowded["recall"]) if crowded and crowded["recall"] is not None else "-",
                     _f(crowded["ap"]) if crowded and crowded["ap"] is not None else "-"])
    return ["Why it misses (`detkit.evaluation.errors`, docs/evaluation.md): TIDE's errors at IoU 0.5, each as the "
            "AP50 points an oracle fixing only it would add (cls: wrong class, loc: poorly placed, both, dupe: "
            "duplicate, bkg: on background, miss: no detection at all; FP / FN: every false positive / missed "
            "object fixed)" + ("; the unmatched objects by cause: suppressed (a raw candidate covered it: the "
                               "`lost` above), not proposed, taken (a kept box covers it, yet it is unmatched: that box matched another "
                               "object or ranks below the 100 per image COCO evaluates)"
                               if causes else "") + "; recall and AP50 of the objects whose density exceeds 0.5.",
            "", *_table(header, rows, numbers_from=1), ""]


def _imagenet_rows(results: Mapping, names: list[str]) -> list[str]:
    """The backbones' ImageNet accuracy and cost as torchvision publishes them (its weights'
    metadata; nothing is downloaded): the advantage pretraining would bring, absent from scratch."""
    import torchvision

    rows = []
    for name in names:
        backbone = results["runs"][name]["config"]["model"].get("backbone") or {}
        key = (backbone.get("type"), backbone.get("depth") or backbone.get("variant"))
        if key not in IMAGENET_META:
            continue
        weights = getattr(torchvision.models, IMAGENET_META[key]).IMAGENET1K_V1
        rows.append([f"`{name}`", f"{key[0]}-{key[1]}", f"{weights.meta['_metrics']['ImageNet-1K']['acc@1']:.1f}%",
                     f"{weights.meta['_ops']:.2f}", f"{weights.meta['num_params'] / 1e6:.1f}"])
    if not rows:
        return []
    return ["torchvision's ImageNet classifiers of these backbones (224 px; from its weights' metadata):", "",
            *_table(["run", "backbone", "ImageNet top-1", "GFLOPs (multiply-adds)", "params (M)"], rows, 2)]


def _nms_section(results: Mapping) -> list[str]:
    nms = results["suites"]["nms"]
    t = nms["score_threshold"]
    lines = ["Each model is read out once per split without suppression (every candidate above its score threshold, "
             "saved), then each suppressor at its paper's setting, then the model's cap of detections per image. "
             "`recoverable`: objects some raw candidate covers at IoU 0.5 (the most any suppressor can keep); `lost`: "
             f"recoverable objects no kept detection covers. At score >= {t}: true positives, duplicates (a second "
             "detection of a matched object) and other false positives. `adaptive_nms` uses the model's predicted "
             "densities (N_M = max(N_t, d_M), the paper's rule); `adaptive_nms_margin` adds the margin delta chosen "
             "on the training split (detkit's variant); the `adaptive_nms_oracle` rows give each candidate the true "
             "density of the object it covers: the ceiling a perfect density predictor would reach.", ""]
    lines += _suppressor_part(nms["run"], nms, results, t, judged=True)
    for name, part in (nms.get("also") or {}).items():
        lines += _suppressor_part(name, part, results, t, judged=False)
    stats = nms.get("crowd_statistics") or {}
    if stats:
        lines += ["### The recall ceiling of greedy suppression: perfect boxes", "",
                  "If a detector returned exactly the true boxes (scores in random order), the share of true objects "
                  "that suppression at each IoU threshold would remove; `neighbour` is the share with a same-class "
                  "neighbour above the threshold.", ""]
        rows = []
        for name, s in stats.items():
            if "missing" in s:
                rows.append([f"`{name}`", "not found", "", "", "", s["missing"]])
                continue
            for kind in ("nms", "diou_nms", "neighbour"):
                rows.append([f"`{name}` ({s['split']})", s["images"], s["objects"], kind,
                             ", ".join(f"{t}: {100 * v:.1f}%" for t, v in zip(s["thresholds"], s[kind])), ""])
        lines += [*_table(["dataset", "images", "objects", "suppressor", "removed at IoU threshold", "note"], rows), ""]
        histograms = {name: s for name, s in stats.items() if "density_counts" in s}
        if histograms:
            edges = next(iter(histograms.values()))["density_bins"]
            header = ["dataset", "objects", *(f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])), "> 0.5"]
            rows = [[f"`{name}` ({s['split']})", s["objects"],
                     *(f"{100 * c / max(1, s['objects']):.1f}%" for c in s["density_counts"]),
                     f"{100 * sum(c for a, c in zip(s['density_bins'], s['density_counts']) if a >= 0.5) / max(1, s['objects']):.1f}%"]
                    for name, s in histograms.items()]
            lines += ["The objects' densities (each object's max IoU with another object of its image, Liu et al.'s "
                      "d_i): the share of the objects per bin. Adaptive-NMS at N_t = 0.5 can only differ from NMS for "
                      "objects above 0.5.", "", *_table(header, rows, 1), "", "![densities](crowd_densities.png)", ""]
    lines += ["![suppressors](nms.png)", "", "![sweep](nms_sweep.png)"]
    return lines


def _suppressor_part(name: str, part: Mapping, results: Mapping, t: float, *, judged: bool) -> list[str]:
    """One model's tables: each split's rows, density report and sweeps, and its margin."""
    run = results["runs"][name]
    role = "its rows decide the verdicts" if judged else "its tables are shown, the verdicts are the first model's"
    lines = [f"### `{name}`: {architecture(run['config'])}, trained on `{run['dataset']}` ({role})", ""]
    if part.get("margin"):
        m = part["margin"]
        tried = ", ".join(f"{d:g}: {_f(ap)}" for d, ap in zip(m["margins"], m["AP"]))
        lines += [f"Adaptive-NMS's margin, chosen on the first training images by AP (delta: AP): {tried}; chosen "
                  f"delta = {m['chosen']:g}.", ""]
    for label, split in part["splits"].items():
        subset = f", only images with a same-class pair at IoU >= {split['min_pair_iou']}" if split["min_pair_iou"] else ""
        lines += [f"#### {label} split: `{split['dataset']}` val ({split['images']} images{subset})", ""]
        header = ["suppressor", "config", "AP", "AP50", "AP75", "AR100", "AP vs nms (sigma)", "recall IoU.5",
                  "recall vs nms (sigma)", "recoverable", "lost", f"recall @{t}", f"precision @{t}", f"duplicates @{t}",
                  f"other FP @{t}", "kept / image"]
        extra = [(key, title) for key, title in (("MR2", "MR-2"), ("raised", "threshold raised"))
                 if any(key in row for row in split["rows"].values())]  # written by newer studies only
        rows = []
        for row_name, row in split["rows"].items():
            sigma = split["sigma_vs_nms"].get(row_name)
            nms_row = split["rows"]["nms"]
            delta = f"{row['AP'] - nms_row['AP']:+.3f} ({sigma['AP']:.3f})" if sigma else "-"
            recall = (f"{row['recall_covered'] - nms_row['recall_covered']:+.3f} ({sigma['recall_covered']:.3f})"
                      if sigma and "recall_covered" in sigma else "-")
            config = ", ".join(f"{k}={v}" for k, v in row["config"].items() if k != "type") or "-"
            if "oracle_margin" in row:
                margin = row["oracle_margin"]
                config += (", density: the oracle's" + (" (same class)" if row.get("oracle_same_class") else "")
                           + (f" + {margin:g}" if margin else ""))
            if "margin" in row:
                config += f", density: predicted + {row['margin']:g}"
            if "readout" in row:
                config += f", density: read at each {row['readout']}"
            rows.append([f"`{row_name}`", config, _f(row["AP"]), _f(row["AP50"]), _f(row["AP75"]), _f(row["AR100"]),
                         delta, _f(row["recall_covered"]), recall, row["recoverable"], row["lost"],
                         _f(row["recall_at_threshold"]), _f(row["precision_at_threshold"]), row["duplicates"],
                         row["other_fp"], f"{row['kept'] / max(1, row['images']):.1f}",
                         *(_f(row[key]) if key in row else "-" for key, _ in extra)])
        lines += [*_table(header + [title for _, title in extra], rows, numbers_from=2), ""]
        errors = {row_name: row["errors"] for row_name, row in split["rows"].items() if "errors" in row}
        if errors:
            lines += _error_table(errors, "suppressor")
        if split.get("densities"):
            lines += _density_lines(label, split["densities"])
        if split.get("densities_box_readout"):
            lines += _density_lines(label, split["densities_box_readout"], "read at each final box")
        lines += _sweep_tables(label, split["sweep"])
    return lines


def _density_lines(label: str, d: Mapping, how: str = "") -> list[str]:
    """How the predicted densities compare with the truth (``suppression.density_report``)."""
    n_t = d["iou_threshold"]
    how = f" ({how})" if how else ""
    return [f"Predicted densities{how} on the {label} split, on the {d['candidates']} raw candidates that cover an object: "
            f"Pearson r {_f(d['pearson'])} with the object's true density; of the {d['crowded']} candidates of crowded "
            f"objects (true density > {n_t:g}), {100 * d['crowded_predicted_above']:.1f}% predicted above {n_t:g} (their "
            f"threshold raised); of the {d['lone']} candidates of lone objects, {100 * d['lone_predicted_below']:.1f}% "
            f"predicted at or below {n_t:g}.", ""] + _density_object_lines(d)


def _density_object_lines(d: Mapping) -> list[str]:
    """The density report's shares counted once per object (newer studies)."""
    if "objects" not in d:
        return []
    o, n_t = d["objects"], d["iou_threshold"]
    return [f"Once per object, at its best-scoring candidate (the box suppression keeps, whose density sets its "
            f"neighbours' threshold): {o['objects']} objects, Pearson r {_f(o['pearson'])}; of the {o['crowded']} "
            f"crowded objects {100 * o['crowded_predicted_above']:.1f}% predicted above {n_t:g}; of the {o['lone']} "
            f"lone objects {100 * o['lone_predicted_below']:.1f}% at or below.", ""]


def _sweep_tables(label: str, sweep: Mapping) -> list[str]:
    """AP (and recall at IoU 0.5) of each suppressor family at each setting: one table per
    swept parameter (the IoU threshold, gaussian Soft-NMS's sigma)."""
    lines = []
    for key, title in (("iou_threshold", "IoU threshold"), ("sigma", "sigma")):
        families = {f: e for f, e in sweep.items() if e["key"] == key}
        if not families:
            continue
        values = next(iter(families.values()))["values"]
        rows = [[f"`{f}`", *(f"{_f(ap)} / {_f(r)}" for ap, r in zip(e["AP"], e["recall_covered"]))]
                for f, e in families.items()]
        lines += [f"Sweep of the {title} ({label} split): AP / recall at IoU 0.5.", "",
                  *_table([f"suppressor \\ {title}", *map(str, values)], rows, 1), ""]
    return lines


def _reproduction(results: Mapping) -> list[str]:
    ref = results["reference"]
    rows = []
    for name, r in ref["runs"].items():
        rows.append([f"`{name}`", _f(r["reference_AP"]), _f(r["AP"]), f"{r['delta_AP']:+.4f}", f"{r['delta_AP50']:+.4f}",
                     f"{r['noise_AP']:.3f}", "identical" if r["identical"] else ("yes" if r["within_noise"] else "**no**"),
                     f"{r['latency_ratio']:.2f}" if "latency_ratio" in r else "-"])
    changed = ", ".join(ref["verdicts_changed"]) or "none"
    return ["## Reproduction against an earlier run", "",
            f"Reference: `{ref['command']}` ({ref['started']}). Each run's AP now and then; 'within noise' means "
            "|difference| <= 2 sigma_seed (the bootstrap's sigma when no seed probe ran).", "",
            *_table(["run", "AP then", "AP now", "difference", "AP50 difference", "noise (2 sigma)", "within noise",
                     "latency now / then"], rows, 1), "", f"Verdicts that changed: {changed}."]


def _provenance(results: Mapping) -> list[str]:
    p = results["provenance"]
    packages = ", ".join(f"{k} {v}" for k, v in p["packages"].items() if v)
    recipe = yaml.safe_dump(results["study"].get("recipe", {}), sort_keys=False).strip()
    lines = ["## Provenance", "", f"- Python {p['python']} on {p['platform']}; {packages}.",
             f"- The study: `{results['study'].get('budget', results['budget'])}` "
             f"(detkit's `configs/compare/{results['budget']}.yaml`); the recipe every run shares:", "", "```yaml",
             recipe, "```", "", "Each run's full config (model, data, train) is in `results.json` under "
             "`runs.<name>.config`; the run folders hold their checkpoints, `config.yaml` and `metrics.jsonl`.", ""]
    rows = [[f"`{n}`", r["dataset"], r["seed"], r["steps"], f"{r['train_seconds'] / 60:.1f}",
             " then ".join(map(str, r["threads"])) if "threads" in r else "-", architecture(r["config"])]
            for n, r in results["runs"].items()]
    lines += _table(["run", "dataset", "seed", "steps", "train (min)", "torch threads", "architecture"], rows, 2)
    threads = p["torch_threads"]
    other = [f"`{n}`" for n, r in results["runs"].items() if r.get("threads", [threads]) != [threads]]
    if other:
        lines += ["", f"Trained on another torch thread count than this invocation's {threads}, or resumed on "
                  f"one: {', '.join(other)}. A different count sums in another order, so these are not bitwise the "
                  f"runs a straight {threads}-thread training gives."]
    if any("threads" not in r for r in results["runs"].values()):
        lines += ["", "torch threads \"-\": not recorded (the run was recorded before detkit recorded it)."]
    return lines
