"""docs/benchmarks.md's Faster R-CNN training-parity table quotes the committed per-seed runs
(docs/parity/faster_rcnn-400-seed*.json, written by tools/bench_train_parity.py)."""

import json
import statistics
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_parity_table_is_the_three_seeds_runs():
    table = (DOCS / "benchmarks.md").read_text()
    gaps = []
    for seed in (0, 1, 2):
        run = json.loads((DOCS / "parity" / f"faster_rcnn-400-seed{seed}.json").read_text())
        (entry,) = run["families"]["faster_rcnn"]["runs"]
        tv, dk = entry["ap"]["torchvision"], entry["ap"]["detkit"]
        assert entry["seed"] == seed and run["steps"] == 400 and len(entry["history"]["detkit"]) == 400
        row = (f"| seed {seed}: AP / AP50 | {tv['AP']:.4f} / {tv['AP50']:.4f} | {dk['AP']:.4f} / {dk['AP50']:.4f} | "
               f"{dk['AP'] - tv['AP']:+.4f} / {dk['AP50'] - tv['AP50']:+.4f} |")
        assert row in table
        gaps.append(dk["AP"] - tv["AP"])
    assert f"| +{statistics.mean(gaps):.4f} ± {statistics.stdev(gaps):.4f} |" in table
