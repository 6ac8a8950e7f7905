"""Benchmark the error analysis and the `detkit eval` command on bench_eval's results file.

On the deterministic 2,000-image case of tools/bench_eval.py (80 categories, ~16.5k objects,
~103k detections), in this order (libraries run in this process leave threads behind that
slowed the timed processes by up to 2x when they ran first: faster-coco-eval, tidecv):

1. Whole processes, from json files on disk to the printed numbers: a pycocotools script
   (COCO(gt), loadRes(results), evaluate/accumulate/summarize) against
   ``detkit eval --gt G --predictions R`` with and without ``--errors``. Target: >= 8x.
2. In one process, from the loaded lists: COCO evaluation alone (detkit's default backend,
   numpy; and faster-coco-eval), detkit's TIDE breakdown (``errors.tide``), the full analysis
   (``errors.analyse``: TIDE + per-class AP, confusion, crowding, sizes). Target (issue 18):
   the analysis costs at most 2x the COCO evaluation.
3. tidecv on the same lists when installed (its dAPs must agree).

Each timing is the median of --repeats runs, alternated so drifts in the machine's speed hit
every route alike.

Usage: python tools/bench_errors.py [--images 2000] [--repeats 3] [--no-tidecv]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eval import make_case  # noqa: E402

from detkit.evaluation import errors, evaluate  # noqa: E402

PYCOCOTOOLS_SCRIPT = """
import sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt = COCO(sys.argv[1])
dt = gt.loadRes(sys.argv[2])
e = COCOeval(gt, dt, "bbox")
e.evaluate()
e.accumulate()
e.summarize()
"""


def tidecv_breakdown(gt: dict, results: list[dict]) -> dict:
    """tidecv's main dAPs (AP points) from the same lists, crowd annotations as ignore regions."""
    from tidecv import TIDE, Data

    truth = Data("gt", max_dets=100)
    for image in gt["images"]:
        truth.add_image(image["id"], str(image["id"]))
    for a in gt["annotations"]:
        (truth.add_ignore_region if a.get("iscrowd") else truth.add_ground_truth)(a["image_id"], a["category_id"],
                                                                                  a["bbox"])
    detections = Data("dt")
    for r in results:
        detections.add_detection(r["image_id"], r["category_id"], r["score"], r["bbox"])
    tide = TIDE()
    tide.evaluate(truth, detections, mode=TIDE.BOX)
    return tide.get_main_errors()["dt"]


def timed(routes: dict, repeats: int) -> dict:
    samples = {name: [] for name in routes}
    for _ in range(repeats):
        for name, run in routes.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-tidecv", action="store_true", help="skip tidecv (slow: minutes)")
    args = parser.parse_args()
    gt, results = make_case(args.images)
    print(f"{args.images} images, {len(gt['annotations'])} objects, {len(results)} detections; "
          f"median of {args.repeats} runs")

    print("\n1. whole processes, json files to printed numbers")
    with tempfile.TemporaryDirectory() as folder:
        gt_path, results_path = Path(folder) / "gt.json", Path(folder) / "results.json"
        gt_path.write_text(json.dumps(gt))
        results_path.write_text(json.dumps(results))
        script = Path(folder) / "plain.py"
        script.write_text(PYCOCOTOOLS_SCRIPT)
        detkit = [sys.executable, "-m", "detkit.cli", "eval", "--gt", str(gt_path), "--predictions", str(results_path)]
        commands = {"pycocotools script": [sys.executable, str(script), str(gt_path), str(results_path)],
                    "detkit eval --gt --predictions": detkit,
                    "detkit eval ... --errors": detkit + ["--errors"]}
        times = timed({name: (lambda c=c: subprocess.run(c, check=True, capture_output=True))
                       for name, c in commands.items()}, args.repeats)
    base = times["pycocotools script"]
    for name, seconds in times.items():
        print(f"  {name:40} {seconds:7.2f} s   {base / seconds:5.2f}x pycocotools")
    print("\n2. in process, from the loaded lists")
    base_name = "COCO evaluation (numpy, the default)"
    routes = {base_name: lambda: evaluate(gt, results),
              "COCO evaluation (faster-coco-eval)": lambda: evaluate(gt, results, backend="faster-coco-eval"),
              "detkit errors.tide": lambda: errors.tide(gt, results),
              "detkit errors.analyse (everything)": lambda: errors.analyse(gt, results)}
    times = timed(routes, args.repeats)
    base, tide_seconds = times[base_name], times["detkit errors.tide"]
    for name, seconds in times.items():
        print(f"  {name:40} {seconds:7.2f} s   {seconds / base:5.2f}x the COCO evaluation")
    if not args.no_tidecv:  # last: its libraries leave threads that slow the processes timed above
        print("\n3. tidecv, in process, once, on the same lists")
        try:
            start = time.perf_counter()
            theirs = tidecv_breakdown(gt, results)
            seconds = time.perf_counter() - start
        except ImportError:
            print("  tidecv not installed: skipped")
        else:
            ours = errors.tide(gt, results)
            names = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg", "miss": "Miss"}
            worst = max(abs(100 * ours.delta[k] - theirs[v]) for k, v in names.items())
            print(f"  {'tidecv (once)':40} {seconds:7.2f} s   {seconds / tide_seconds:5.1f}x "
                  f"detkit's errors.tide; largest dAP difference {worst:.2g} AP points")


if __name__ == "__main__":
    main()
