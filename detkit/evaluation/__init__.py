"""detkit.evaluation: COCO mAP identical to pycocotools, per-class AP, PR curves."""

from detkit.evaluation.coco_eval import (
    STAT_NAMES,
    CocoEvaluation,
    coco_ground_truth,
    detections_to_results,
    evaluate,
    evaluate_file,
    load_results,
    results_to_detections,
    write_json,
)
from detkit.evaluation.plots import plot_pr_curves

__all__ = [
    "STAT_NAMES",
    "CocoEvaluation",
    "coco_ground_truth",
    "detections_to_results",
    "evaluate",
    "evaluate_file",
    "load_results",
    "plot_pr_curves",
    "results_to_detections",
    "write_json",
]
