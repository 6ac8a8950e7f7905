"""The survey's claims, the papers' published numbers, and a verdict on each from a study's results.

Each claim is checked by a function of ``results`` (the study's results.json) that returns
what was measured and a verdict:

- ``reproduced``: the measured difference has the paper's sign and exceeds twice its noise;
- ``not reproduced at this budget``: within twice its noise, or of the opposite sign;
- ``not measurable here``: the measurement needs what this machine or budget lacks (a GPU).

The noise of a difference between two trained models is the paired bootstrap over the
validation images (both models on the same resamples) and, for each model, the seed
probe's training noise: sigma^2 = var_boot(AP_a - AP_b) + 2 sigma_seed^2. Between
suppressors on one set of raw predictions only the bootstrap applies (same model).
Speed: one model is slower than another when its first latency quartile is above the
other's third (the spreads do not overlap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced at this budget"
NOT_MEASURABLE = "not measurable here"
NOT_TESTED = "not tested"  # the measurement ran, but what the claim is about never came into play
# A suppressor's gain over NMS counts when it clears the noise and a user would notice it: at
# least this much AP, or this much recall at IoU 0.5 (+0.001 AP with the same objects found
# changes no detection a user would look at)
MIN_SUPPRESSOR_AP_GAIN = 0.002
MIN_SUPPRESSOR_RECALL_GAIN = 0.005
# Adaptive-NMS is only tested when the density raised the threshold of some kept boxes
MIN_RAISED_SHARE = 0.05
# ... and judged where it can matter: the oracle's density must recover at least this share of
# the objects NMS loses (else suppression was not what lost them); the predicted density must
# recover at least half of what the oracle does, add no more duplicates than 1% of the objects,
# and not cost AP on the normal split beyond its noise (issue 16)
MIN_ORACLE_RECOVERED = 0.2
MIN_SHARE_OF_ORACLE = 0.5
MAX_EXTRA_DUPLICATES = 0.01
REAL_TIME_FPS = 30.0  # "real time": video rate, the YOLO and SSD papers' yardstick


@dataclass(frozen=True)
class Claim:
    id: str
    suite: str
    claim: str  # as the survey makes it
    source: str  # the paper and table behind the published numbers
    published: str  # the published numbers
    check: Callable[[Mapping], tuple[str, str, str]]  # results -> (measured, verdict, why)
    short: str  # a few words for a table's row ("focal loss vs cross-entropy")


# ------------------------------------------------------------------------------ noise


def seed_sigma(results: Mapping, metric: str = "AP") -> float | None:
    """The seed probe's standard deviation of ``metric`` (None when the study ran none)."""
    probe = results.get("noise", {}).get("seed_probe")
    return probe.get(f"std_{metric}") if probe else None


def difference(results: Mapping, a: str, b: str, metric: str = "AP") -> tuple[float, float]:
    """(metric of run a - of run b, the noise of that difference; see the module docstring)."""
    runs = results["runs"]
    delta = runs[a]["eval"]["stats"][metric] - runs[b]["eval"]["stats"][metric]
    boot = np.asarray(runs[a]["bootstrap"][metric]) - np.asarray(runs[b]["bootstrap"][metric])
    sigma_seed = seed_sigma(results, metric) or 0.0
    return delta, math.sqrt(float(boot.var(ddof=1)) + 2 * sigma_seed**2)


def _n(value: float) -> str:
    """3 decimals, or 2 significant digits below 0.01 (a bootstrap sigma of 0.0004 is not 0.000)."""
    return f"{value:.3f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"


def verdict_better(delta: float, sigma: float) -> tuple[str, str]:
    """The verdict on "a does better than b" from their difference and its noise."""
    if delta > 2 * sigma:
        return REPRODUCED, f"{delta:+.3f} > 2 sigma ({_n(2 * sigma)})"
    if delta < -2 * sigma:
        return NOT_REPRODUCED, f"reversed: {delta:+.3f} < -2 sigma (-{_n(2 * sigma)})"
    return NOT_REPRODUCED, f"within noise: |{delta:+.3f}| <= 2 sigma ({_n(2 * sigma)})"


def verdict_not_worse(delta: float, sigma: float) -> tuple[str, str]:
    """The verdict on "a matches b" (a is not worse than b beyond the noise)."""
    if delta >= -2 * sigma:
        return REPRODUCED, f"{delta:+.3f} >= -2 sigma (-{_n(2 * sigma)})"
    return NOT_REPRODUCED, f"worse: {delta:+.3f} < -2 sigma (-{_n(2 * sigma)})"


def slower(results: Mapping, a: str, b: str, device: str = "cpu") -> bool:
    la, lb = results["runs"][a]["latency"][device], results["runs"][b]["latency"][device]
    return la["q25_ms"] > lb["q75_ms"]


def _ap(results: Mapping, run: str, metric: str = "AP") -> float:
    return results["runs"][run]["eval"]["stats"][metric]


def _has(results: Mapping, *suites: str) -> bool:
    return all(s in results.get("suites", {}) for s in suites)


def _pair(results: Mapping, suite: str) -> tuple[str, str]:
    spec = results["suites"][suite]
    return spec["variant"], spec["baseline"]


def _delta_text(results: Mapping, a: str, b: str) -> tuple[str, float, float]:
    delta, sigma = difference(results, a, b)
    return (f"{a} {_ap(results, a):.3f} vs {b} {_ap(results, b):.3f} AP: {delta:+.3f} (sigma {_n(sigma)})",
            delta, sigma)


# ------------------------------------------------------------------------------ the checks


class _Missing(Exception):
    """The study lacks a run a claim compares (a study of one's own may leave a detector out)."""


def _detector(results: Mapping, kind: str) -> str:
    """The detectors suite's (first) run of a detector type."""
    for name in results["suites"]["detectors"]["runs"]:
        if results["runs"][name]["config"]["model"]["type"] == kind:
            return name
    raise _Missing(f"the detectors suite has no {kind}")


def _one_stage(results: Mapping) -> list[str]:
    """The detectors suite's SSD and YOLO runs (at least one)."""
    found = []
    for kind in ("ssd", "yolo"):
        try:
            found.append(_detector(results, kind))
        except _Missing:
            pass
    if not found:
        raise _Missing("the detectors suite has neither SSD nor YOLO")
    return found


def _check_two_stage_accuracy(results):
    two, ones = _detector(results, "faster_rcnn"), _one_stage(results)
    parts, verdicts = [], []
    for one in ones:
        text, delta, sigma = _delta_text(results, two, one)
        parts.append(text)
        verdicts.append(verdict_better(delta, sigma))
    verdict = REPRODUCED if all(v == REPRODUCED for v, _ in verdicts) else NOT_REPRODUCED
    return "; ".join(parts), verdict, "; ".join(why for _, why in verdicts)


def _check_two_stage_speed(results):
    two, ones = _detector(results, "faster_rcnn"), _one_stage(results)
    lat = {n: results["runs"][n]["latency"]["cpu"] for n in (two, *ones)}
    measured = ", ".join(f"{n} {lat[n]['median_ms']:.1f} ms" for n in (two, *ones)) + " per image on the CPU"
    if all(slower(results, two, one) for one in ones):
        return measured, REPRODUCED, f"{two}'s latency quartiles lie above the one-stage detectors'"
    return measured, NOT_REPRODUCED, f"{two} is not slower than every one-stage detector beyond the latency spread"


def _check_real_time(results):
    ones = _one_stage(results)
    cpu = ", ".join(f"{n} {results['runs'][n]['latency']['cpu']['fps']:.0f} FPS" for n in ones)
    if not all("cuda" in results["runs"][n]["latency"] for n in ones):
        return f"CPU at this input: {cpu}", NOT_MEASURABLE, "the papers' claim is on a GPU and no GPU was present"
    gpu = {n: results["runs"][n]["latency"]["cuda"]["fps"] for n in ones}
    measured = "GPU: " + ", ".join(f"{n} {fps:.0f} FPS" for n, fps in gpu.items()) + f"; CPU: {cpu}"
    if all(fps >= REAL_TIME_FPS for fps in gpu.values()):
        return measured, REPRODUCED, f"every one-stage detector runs at >= {REAL_TIME_FPS:.0f} FPS on the GPU"
    return measured, NOT_REPRODUCED, f"below {REAL_TIME_FPS:.0f} FPS on this GPU at this input"


def _check_retinanet_matches(results):
    text, delta, sigma = _delta_text(results, _detector(results, "retinanet"), _detector(results, "faster_rcnn"))
    verdict, why = verdict_not_worse(delta, sigma)
    return text, verdict, why


def _check_efficientdet_efficiency(results):
    eff, yolo = _detector(results, "efficientdet"), _detector(results, "yolo")
    text, delta, sigma = _delta_text(results, eff, yolo)
    ratio = results["runs"][yolo]["gflops"] / results["runs"][eff]["gflops"]
    verdict, why = verdict_not_worse(delta, sigma)
    if ratio <= 1:
        verdict, why = NOT_REPRODUCED, f"{eff} does not use fewer FLOPs ({ratio:.2f}x)"
    return f"{text}; {yolo} needs {ratio:.1f}x the GFLOPs", verdict, why


def _check_pair(suite: str):
    def check(results):
        variant, baseline = _pair(results, suite)
        text, delta, sigma = _delta_text(results, variant, baseline)
        cost = results["runs"]
        text += (f"; GFLOPs {cost[variant]['gflops']:.2f} vs {cost[baseline]['gflops']:.2f}, "
                 f"parameters {cost[variant]['params'] / 1e6:.2f} M vs {cost[baseline]['params'] / 1e6:.2f} M")
        verdict, why = verdict_better(delta, sigma)
        return text, verdict, why

    return check


def _nms_rows(results, split):
    return results["suites"]["nms"]["splits"][split]["rows"]


def _nms_split(results, preferred: str) -> str:
    splits = list(results["suites"]["nms"]["splits"])
    return preferred if preferred in splits else splits[-1]


def _acted_as_nms(row) -> str:
    """Why an Adaptive-NMS row whose density raised under ``MIN_RAISED_SHARE`` of the thresholds is not tested."""
    return (f"the predicted density raised the threshold of {100 * row['raised']:.1f}% of the kept boxes "
            f"(< {100 * MIN_RAISED_SHARE:.0f}%): it acted as NMS")


def _check_suppressor(name: str, split: str):
    def check(results):
        where = _nms_split(results, split)
        rows = _nms_rows(results, where)
        if name not in rows:
            return "-", NOT_MEASURABLE, f"{name} did not run (it needs densities the model does not predict)"
        row, nms = rows[name], rows["nms"]
        delta, recall_gain = row["AP"] - nms["AP"], row["recall_covered"] - nms["recall_covered"]
        sigma = results["suites"]["nms"]["splits"][where]["sigma_vs_nms"][name]["AP"]
        measured = (f"{where} split: {name} {row['AP']:.3f} vs nms {nms['AP']:.3f} AP: {delta:+.3f} "
                    f"(sigma {_n(sigma)}); recall (IoU 0.5) {row['recall_covered']:.3f} vs {nms['recall_covered']:.3f}")
        if "raised" in row:
            measured += f"; threshold raised for {100 * row['raised']:.1f}% of kept boxes"
            if row["raised"] < MIN_RAISED_SHARE:
                return measured, NOT_TESTED, _acted_as_nms(row)
        verdict, why = verdict_better(delta, sigma)
        if verdict == REPRODUCED and delta < MIN_SUPPRESSOR_AP_GAIN and recall_gain < MIN_SUPPRESSOR_RECALL_GAIN:
            return measured, NOT_REPRODUCED, (f"too small to notice: {delta:+.3f} AP (> 2 sigma, {_n(2 * sigma)}) and "
                                              f"{recall_gain:+.3f} recall, below {MIN_SUPPRESSOR_AP_GAIN} AP and "
                                              f"{MIN_SUPPRESSOR_RECALL_GAIN} recall")
        return measured, verdict, why

    return check


def _check_adaptive(results):
    """Adaptive-NMS with the predicted density against NMS on the densest crowded split (see the
    constants above): every condition must hold for "reproduced"."""
    where = _nms_split(results, "dense" if "dense" in results["suites"]["nms"]["splits"] else "crowded")
    rows, sigmas = _nms_rows(results, where), results["suites"]["nms"]["splits"][where]["sigma_vs_nms"]
    if "adaptive_nms" not in rows:
        return "-", NOT_MEASURABLE, "adaptive_nms did not run (the model predicts no densities)"
    a, nms, sigma = rows["adaptive_nms"], rows["nms"], sigmas["adaptive_nms"]
    oracle = rows.get("adaptive_nms_oracle")
    gains = {m: a[m] - nms[m] for m in ("recall_covered", "AP50", "AP")}
    measured = (f"{where} split: lost {a['lost']} vs nms {nms['lost']}"
                + (f" (oracle {oracle['lost']})" if oracle else "")
                + f"; recall (IoU 0.5) {a['recall_covered']:.3f} vs {nms['recall_covered']:.3f}"
                  f" ({gains['recall_covered']:+.3f}, sigma "
                  f"{_n(sigma['recall_covered']) if 'recall_covered' in sigma else 'not measured'})"
                  f"; AP50 {a['AP50']:.3f} vs {nms['AP50']:.3f} ({gains['AP50']:+.3f}, sigma {_n(sigma['AP50'])})"
                  f"; AP {a['AP']:.3f} vs {nms['AP']:.3f}; duplicates {a['duplicates']} vs {nms['duplicates']}")
    if "raised" in a:
        measured += f"; threshold raised for {100 * a['raised']:.1f}% of kept boxes"
        if a["raised"] < MIN_RAISED_SHARE:
            return measured, NOT_TESTED, _acted_as_nms(a)
    failed = []
    if oracle is None:
        failed.append("no oracle rows to measure it against (a study older than the oracle)")
    else:
        ceiling = nms["lost"] - oracle["lost"]
        if ceiling < MIN_ORACLE_RECOVERED * nms["lost"]:
            return measured, NOT_TESTED, (f"even the oracle's density recovers {ceiling} of the {nms['lost']} objects "
                                          f"NMS loses (< {100 * MIN_ORACLE_RECOVERED:.0f}%): the split does not test it")
        if a["lost"] > nms["lost"] - MIN_SHARE_OF_ORACLE * ceiling:
            failed.append(f"recovers {nms['lost'] - a['lost']} of the oracle's {ceiling}")
    # above twice the paired noise, and for recall also by what a user would notice
    for metric, title, floor in (("recall_covered", "recall", MIN_SUPPRESSOR_RECALL_GAIN), ("AP50", "AP50", 0.0)):
        if metric not in sigma:
            failed.append(f"no paired noise of its {title} (a study older than it)")
        elif gains[metric] <= max(2 * sigma[metric], floor):
            failed.append(f"{title} {gains[metric]:+.3f} <= " + (f"2 sigma ({_n(2 * sigma[metric])})"
                                                                if 2 * sigma[metric] >= floor else f"{floor}"))
    if a["duplicates"] > nms["duplicates"] + MAX_EXTRA_DUPLICATES * max(1, a.get("objects", a["recoverable"])):
        failed.append(f"{a['duplicates'] - nms['duplicates']} more duplicates (> {100 * MAX_EXTRA_DUPLICATES:.0f}% "
                      "of the objects)")
    normal = _nms_split(results, "normal")
    if normal != where and "adaptive_nms" in _nms_rows(results, normal):
        rows_n = _nms_rows(results, normal)
        loss = rows_n["adaptive_nms"]["AP"] - rows_n["nms"]["AP"]
        sigma_n = results["suites"]["nms"]["splits"][normal]["sigma_vs_nms"]["adaptive_nms"]["AP"]
        measured += f"; {normal} split AP {loss:+.3f} (sigma {_n(sigma_n)})"
        if loss < -2 * sigma_n:
            failed.append(f"costs {loss:+.3f} AP on the {normal} split (< -2 sigma)")
    if failed:
        return measured, NOT_REPRODUCED, "; ".join(failed)
    return measured, REPRODUCED, "recovers at least half the oracle's objects, recall and AP50 above 2 sigma"


def _lost_fraction(row) -> tuple[float, float]:
    """(fraction of the recoverable objects a suppressor lost, its binomial standard error)."""
    n = max(1, row["recoverable"])
    p = row["lost"] / n
    return p, math.sqrt(max(p * (1 - p), 1 / n) / n)


def _check_nms_loses_crowds(results):
    splits = list(results["suites"]["nms"]["splits"])
    crowded, normal = _nms_split(results, "crowded"), _nms_split(results, "normal")
    pc, sc = _lost_fraction(_nms_rows(results, crowded)["nms"])
    pn, sn = _lost_fraction(_nms_rows(results, normal)["nms"])
    measured = f"NMS 0.5 removes {100 * pc:.1f}% of the recoverable objects on the {crowded} split"
    if len(splits) > 1:
        measured += f", {100 * pn:.1f}% on the {normal} split"
    stats = {k: v for k, v in results["suites"]["nms"].get("crowd_statistics", {}).items() if "missing" not in v}
    if stats:
        parts = []
        for name, s in stats.items():
            i = min(range(len(s["thresholds"])), key=lambda j: abs(s["thresholds"][j] - 0.5))  # the threshold nearest 0.5
            parts.append(f"{name} {100 * s['nms'][i]:.1f}% at IoU {s['thresholds'][i]}")
        measured += "; of perfect boxes it removes " + ", ".join(parts)
    if len(splits) < 2:
        verdict = REPRODUCED if pc > 2 * sc else NOT_REPRODUCED
        return measured, verdict, f"lost fraction {pc:.3f} vs 2 se {_n(2 * sc)}"
    delta, sigma = pc - pn, math.sqrt(sc**2 + sn**2)
    verdict, why = verdict_better(delta, sigma)
    return measured, verdict, why


CLAIMS: list[Claim] = [
    Claim("two_stage_accuracy", "detectors",
          "Two-stage detectors (Faster R-CNN: region proposals, then a classifier per region) are more accurate than "
          "the one-stage YOLO and SSD.",
          "Redmon et al. 2016, Table 1; Liu et al. 2016, Table 7 (VOC 2007 test)",
          "Faster R-CNN VGG-16 73.2 mAP; YOLO 63.4; SSD300 74.3 (SSD's paper already reverses the claim)",
          _check_two_stage_accuracy, "Faster R-CNN vs YOLO"),
    Claim("two_stage_speed", "detectors", "Two-stage detectors are slow; one-stage detectors are faster.",
          "Liu et al. 2016, Table 7 (Titan X, batch 1)", "Faster R-CNN VGG-16 7 FPS; YOLO 45 FPS; SSD300 46 FPS",
          _check_two_stage_speed, "two-stage slower"),
    Claim("one_stage_real_time", "detectors", f"YOLO and SSD are fast enough for real time (>= {REAL_TIME_FPS:.0f} FPS).",
          "Redmon et al. 2016; Liu et al. 2016 (Titan X GPU)", "YOLO 45 FPS, SSD300 46 FPS",
          _check_real_time, "one-stage real time"),
    Claim("retinanet_matches_two_stage", "detectors",
          "RetinaNet (one-stage with the focal loss) matches two-stage accuracy.",
          "Lin et al. 2017, Table 2 (COCO test-dev)", "RetinaNet R101-FPN 39.1 AP vs Faster R-CNN R101-FPN 36.2",
          _check_retinanet_matches, "RetinaNet vs Faster R-CNN"),
    Claim("efficientdet_efficiency", "detectors",
          "EfficientDet (EfficientNet + BiFPN) reaches a detector's accuracy at a fraction of its FLOPs.",
          "Tan et al. 2020, Table 2 (COCO)", "EfficientDet-D0 33.8 AP at 2.5 B FLOPs vs YOLOv3 33.0 AP at 71 B (28x)",
          _check_efficientdet_efficiency, "EfficientDet vs YOLO"),
    Claim("focal_beats_cross_entropy", "focal",
          "The focal loss fixes the foreground/background imbalance of dense detectors: it beats alpha-balanced "
          "cross-entropy.",
          "Lin et al. 2017, Table 1a-b (RetinaNet R50, 600 px, COCO)", "focal (gamma 2, alpha 0.25) 34.0 AP vs "
          "alpha-balanced CE (alpha 0.75) 31.1", _check_pair("focal"), "focal loss vs cross-entropy"),
    Claim("bifpn_beats_fpn", "necks", "A weighted BiFPN beats an FPN on the same detector and backbone.",
          "Tan et al. 2020, Table 5 (COCO)", "repeated top-down FPN 42.3 AP vs weighted BiFPN 44.4",
          _check_pair("necks"), "BiFPN vs FPN"),
    Claim("efficientnet_beats_resnet", "backbones",
          "EfficientNet backbones make better detectors than ResNets of the same cost.",
          "Tan et al. 2020, Table 4 (COCO); torchvision's ImageNet weights",
          "ResNet-50 + FPN 37.0 AP vs EfficientNet-B3 + FPN 40.3 (B3 has half the FLOPs); ImageNet top-1: "
          "ResNet-18 69.8% vs EfficientNet-B3 82.0% at 1.8 GFLOPs each", _check_pair("backbones"),
          "EfficientNet-B3 vs ResNet-18"),
    Claim("soft_nms_beats_nms", "nms", "Soft-NMS (gaussian decay of the neighbours' scores) improves AP over NMS.",
          "Bodla et al. 2017 (COCO)", "+1.1 AP for Faster R-CNN", _check_suppressor("soft_nms_gaussian", "normal"),
          "Soft-NMS vs NMS"),
    Claim("nms_removes_crowded_objects", "nms",
          "Greedy NMS keeps the best-scoring box and removes overlapping true objects in crowds.",
          "Bodla et al. 2017; Liu et al. 2019 (motivation)", "qualitative", _check_nms_loses_crowds,
          "NMS removes crowded objects"),
    Claim("soft_nms_in_crowds", "nms", "Soft-NMS recovers the crowded objects NMS removes.",
          "Bodla et al. 2017", "gains grow with the overlap of the objects",
          _check_suppressor("soft_nms_gaussian", "crowded"), "Soft-NMS in crowds"),
    Claim("adaptive_nms_in_crowds", "nms",
          "Adaptive-NMS, raising the threshold with the predicted density, beats NMS in crowds.",
          "Liu, Huang, Wang 2019 (CityPersons, CrowdHuman)", "lower miss rate and higher AP than greedy NMS "
          "in crowded pedestrian scenes", _check_adaptive, "Adaptive-NMS in crowds"),
    Claim("diou_nms_in_crowds", "nms", "DIoU-NMS (IoU minus the centres' distance) beats NMS with occlusion.",
          "Zheng et al. 2020", "small AP gains over NMS for YOLOv3 and SSD", _check_suppressor("diou_nms", "crowded"),
          "DIoU-NMS in crowds"),
]

SHORT_NAMES = {claim.id: claim.short for claim in CLAIMS}  # claim id -> its few words, for tables and plots

_PAIR_CLAIMS = {"focal_beats_cross_entropy": "focal", "bifpn_beats_fpn": "necks", "efficientnet_beats_resnet": "backbones"}


def claim_pair(results: Mapping, claim_id: str) -> tuple[str, str] | None:
    """The (variant, baseline) runs whose AP difference decides ``claim_id`` (against SSD or
    YOLO, the first of them, for two-stage accuracy); None for a claim not decided by one
    pair's AP, or whose runs the study lacks."""
    try:
        if claim_id in _PAIR_CLAIMS:
            return _pair(results, _PAIR_CLAIMS[claim_id]) if _has(results, _PAIR_CLAIMS[claim_id]) else None
        if not _has(results, "detectors"):
            return None
        if claim_id == "retinanet_matches_two_stage":
            return _detector(results, "retinanet"), _detector(results, "faster_rcnn")
        if claim_id == "efficientdet_efficiency":
            return _detector(results, "efficientdet"), _detector(results, "yolo")
        if claim_id == "two_stage_accuracy":
            return _detector(results, "faster_rcnn"), _one_stage(results)[0]
    except _Missing:
        return None
    return None


def verdicts(results: Mapping) -> list[dict]:
    """Every claim whose suite is in ``results``: the claim, the published and measured numbers, the verdict."""
    out = []
    for claim in CLAIMS:
        if not _has(results, claim.suite):
            continue
        try:
            measured, verdict, why = claim.check(results)
        except _Missing as missing:
            measured, verdict, why = "-", NOT_MEASURABLE, str(missing)
        out.append({"id": claim.id, "suite": claim.suite, "claim": claim.claim, "source": claim.source,
                    "published": claim.published, "measured": measured, "verdict": verdict, "why": why})
    return out
