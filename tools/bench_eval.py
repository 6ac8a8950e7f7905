"""Benchmark COCO evaluation: detkit's backends against plain pycocotools, in one process.

Builds a deterministic 2,000-image ground truth (80 categories, 1-15 objects per image,
COCO-like sizes) and a detector-like results file (1-3 jittered detections per object plus
false positives, up to 100 per image), then times, end to end from the results list to
the 12 numbers:
  pycocotools            COCO.loadRes + COCOeval evaluate/accumulate/summarize, by hand
  detkit (pycocotools)   detkit.evaluation.evaluate(..., backend="pycocotools")
  detkit (faster)        detkit.evaluation.evaluate(..., backend="faster-coco-eval")
  detkit (numpy)         detkit.evaluation.evaluate(...): the default, detkit.evaluation.coco_numpy
and checks that every route gives the same 12 numbers.

Usage: python tools/bench_eval.py [--images 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

import numpy as np

from detkit.evaluation import STAT_NAMES, evaluate


def make_case(images: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": c + 1, "name": f"class{c}"} for c in range(80)]}
    results = []
    for image_id in range(1, images + 1):
        gt["images"].append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480})
        for _ in range(rng.integers(1, 16)):
            side = float(np.exp(rng.uniform(np.log(8), np.log(400))))
            w, h = side * rng.uniform(0.5, 1.5), side * rng.uniform(0.5, 1.5)
            x, y = rng.uniform(0, 640 - min(w, 600)), rng.uniform(0, 480 - min(h, 460))
            cat = int(rng.integers(1, 81))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": cat,
                                      "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.random() < 0.01)})
            for _ in range(rng.integers(1, 4)):
                j = rng.normal(0, 0.1, 4) * [w, h, w, h]
                results.append({"image_id": image_id, "category_id": cat if rng.random() < 0.9 else int(rng.integers(1, 81)),
                                "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])],
                                "score": float(rng.random())})
        n_fp = int(rng.integers(10, 60))
        for _ in range(n_fp):
            w, h = rng.uniform(5, 200, 2)
            results.append({"image_id": image_id, "category_id": int(rng.integers(1, 81)),
                            "bbox": [float(rng.uniform(0, 600)), float(rng.uniform(0, 440)), float(w), float(h)],
                            "score": float(rng.random() * 0.5)})
    return gt, results


def plain_pycocotools(gt: dict, results: list[dict]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
        coco.createIndex()
        dt = coco.loadRes([dict(r) for r in results])
        e = COCOeval(coco, dt, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return list(e.stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gt, results = make_case(args.images)
    print(f"{args.images} images, {len(gt['annotations'])} objects, {len(results)} detections; "
          f"median of {args.repeats} runs")
    def detkit(backend):
        stats = evaluate(gt, results, backend=backend).stats
        return [stats[k] for k in STAT_NAMES]

    routes = {
        "pycocotools (plain)": lambda: plain_pycocotools(gt, results),
        "detkit, backend pycocotools": lambda: detkit("pycocotools"),
        "detkit, backend faster-coco-eval": lambda: detkit("faster-coco-eval"),
        "detkit, backend numpy (default)": lambda: detkit("numpy"),
    }
    times, stats = {}, {}
    for name, run in routes.items():
        samples = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            stats[name] = run()
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples)
    base = times["pycocotools (plain)"]
    reference = np.array(stats["pycocotools (plain)"])
    for name in routes:
        diff = np.abs(np.array(stats[name]) - reference).max()
        print(f"{name:34} {times[name]:7.2f} s   {base / times[name]:5.2f}x   max |diff| {diff:.1e}")
    print("AP", reference[0], "AP50", reference[1])


if __name__ == "__main__":
    main()
