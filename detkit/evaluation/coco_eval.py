"""COCO evaluation: detections -> COCO results -> COCOeval, with pycocotools' numbers.

    gt = coco_ground_truth(index)                       # the json as read, or built from YOLO/VOC
    results = detections_to_results(detections, index.category_ids)
    evaluation = evaluate(gt, results)                  # .stats["AP"], .per_class, .table()

Three backends compute the same numbers: ``pycocotools`` (the reference), ``numpy``
(``detkit.evaluation.coco_numpy``: its rules vectorised over all images at once, the default)
and ``faster-coco-eval`` (a C++ re-implementation). Tests hold each to pycocotools' values at
1e-12 on the peers' data and on random cases; docs/benchmarks.md has the timings.

Detections are ``{"boxes": Tensor[K, 4] xyxy in the original image's pixels,
"scores": Tensor[K], "labels": Tensor[K]}`` with labels 0..C-1; results are COCO's
``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` with the dataset's own
category ids.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from detkit.data.coco import read_json, to_coco_dict
from detkit.data.records import DatasetIndex
from detkit.evaluation import coco_numpy

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_STAT_LINES = (  # pycocotools' summary lines, in STAT_NAMES order
    ("Average Precision", "(AP)", "0.50:0.95", "all", 100),
    ("Average Precision", "(AP)", "0.50", "all", 100),
    ("Average Precision", "(AP)", "0.75", "all", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "small", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "medium", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "large", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 1),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 10),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "small", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "medium", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "large", 100),
)
BACKENDS = ("auto", "numpy", "pycocotools", "faster-coco-eval")


def coco_ground_truth(index: DatasetIndex) -> dict:
    """The COCO ground truth of a dataset: the json exactly as read for a COCO source
    (so the numbers are the ones pycocotools gives on that file), else built from the index."""
    if index.coco is not None:
        return index.coco
    return to_coco_dict(index)


def detections_to_results(
    detections: Iterable[tuple[int, Mapping]], category_ids: Sequence[int]
) -> list[dict]:
    """COCO results from ``(image_id, detection)`` pairs.

    Args:
        detections: image id and ``{"boxes": [K, 4] xyxy, "scores": [K], "labels": [K]}``
            (tensors or arrays), boxes in the original image's pixels.
        category_ids: detkit label -> the dataset's category id.
    """
    results = []
    for image_id, det in detections:
        boxes = np.asarray(_numpy(det["boxes"]), dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(_numpy(det["scores"]), dtype=np.float64).reshape(-1)
        labels = np.asarray(_numpy(det["labels"]), dtype=np.int64).reshape(-1)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        for box, score, label in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
            results.append({"image_id": int(image_id), "category_id": int(category_ids[label]), "bbox": box,
                            "score": score})
    return results


def results_to_detections(results: list[dict], category_ids: Sequence[int]) -> dict[int, dict]:
    """The inverse of ``detections_to_results``: per image id, boxes (float64 xyxy), scores, labels."""
    label_of = {cid: label for label, cid in enumerate(category_ids)}
    grouped: dict[int, list[dict]] = {}
    for r in results:
        grouped.setdefault(int(r["image_id"]), []).append(r)
    out = {}
    for image_id, rs in grouped.items():
        boxes = np.array([r["bbox"] for r in rs], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        out[image_id] = {
            "boxes": boxes,
            "scores": np.array([r["score"] for r in rs], dtype=np.float64),
            "labels": np.array([label_of[r["category_id"]] for r in rs], dtype=np.int64),
        }
    return out


def load_results(path: str | Path, gt: Mapping | None = None) -> list[dict]:
    """Read a COCO results file: a list of detections, or a dict with them under "annotations".

    Checks every result (by position in the file) for image_id, category_id, a bbox of 4
    finite numbers with w, h >= 0 and a finite score; with ``gt``, also that the image and
    category exist there.
    """
    return _load_checked(Path(path), gt)[0]


def _load_checked(path: Path, gt: Mapping | None) -> tuple[list[dict], coco_numpy.Detections]:
    data = read_json(path)
    results = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(results, list):
        raise ValueError(f"{path}: a COCO results file is a list of detections (or a dict with 'annotations')")
    return results, check_results(results, str(path), gt)


def check_results(results: list, where: str, gt: Mapping | None = None) -> coco_numpy.Detections:
    """Raise ValueError naming the first bad result (by position); see ``load_results``.
    Returns the results as arrays."""
    arrays = _results_look_valid(results, gt)
    if arrays is not None:
        return arrays
    images = {img["id"] for img in gt["images"]} if gt is not None else None
    categories = {c["id"] for c in gt["categories"]} if gt is not None else None
    for i, r in enumerate(results):
        at = f"{where}: result {i}"
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= r.keys():
            raise ValueError(f"{at}: needs image_id, category_id, bbox and score, got {r!r}")
        box = r["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise ValueError(f"{at}: bbox must be [x, y, width, height], got {box!r}")
        if not all(np.isfinite(box)) or box[2] < 0 or box[3] < 0:
            raise ValueError(f"{at}: bbox {box} must be finite with width, height >= 0")
        if not isinstance(r["score"], (int, float)) or not np.isfinite(r["score"]):
            raise ValueError(f"{at}: score must be a finite number, got {r['score']!r}")
        if images is not None and r["image_id"] not in images:
            raise ValueError(f"{at}: image_id {r['image_id']} is not in the ground truth")
        if categories is not None and r["category_id"] not in categories:
            raise ValueError(f"{at}: category_id {r['category_id']} is not in the ground truth")
    # valid, though not in the plain json types (numpy numbers, True as a score): as arrays
    return coco_numpy.Detections.from_results(results)


def _results_look_valid(results: list, gt: Mapping | None) -> coco_numpy.Detections | None:
    """The common case in one vectorised pass: the arrays, or None to send ``check_results``
    looking for the culprit."""
    try:
        boxes, scores = [r["bbox"] for r in results], [r["score"] for r in results]
        image_ids = np.array([r["image_id"] for r in results])
        category_ids = np.array([r["category_id"] for r in results])
    except (TypeError, KeyError):
        return None
    # the types first: numpy would turn "0.5" or True into numbers
    if not {type(v) for v in scores} <= {int, float} or not {type(b) for b in boxes} <= {list, tuple}:
        return None
    try:
        boxes = np.array(boxes)
    except ValueError:  # ragged
        return None
    if len(results) and (boxes.shape != (len(results), 4) or boxes.dtype.kind not in "iuf"):
        return None
    boxes, scores = boxes.astype(np.float64).reshape(len(results), 4), np.array(scores, dtype=np.float64)
    if not (np.isfinite(boxes).all() and (boxes[:, 2:] >= 0).all() and np.isfinite(scores).all()):
        return None
    if image_ids.dtype.kind not in "iu" or category_ids.dtype.kind not in "iu":
        if len(results):
            return None
        image_ids, category_ids = image_ids.astype(np.int64), category_ids.astype(np.int64)
    if gt is not None:
        if not np.isin(np.unique(image_ids), [img["id"] for img in gt["images"]]).all():
            return None
        if not np.isin(np.unique(category_ids), [c["id"] for c in gt["categories"]]).all():
            return None
    return coco_numpy.Detections(image_ids, category_ids, boxes, scores)


@dataclass
class CocoEvaluation:
    """The outcome of a COCO bbox evaluation.

    Attributes:
        stats: the 12 standard numbers by name (``STAT_NAMES``); -1 where undefined (no
            ground truth in that size range), as pycocotools reports.
        per_class: AP@[.5:.95] of each category by name (-1: no ground truth).
        precision (float64[T, R, K, A, M]): COCOeval's precision array (IoU thresholds,
            recall points, categories, area ranges all/small/medium/large, max detections
            1/10/100); -1 where undefined.
        iou_thresholds (float64[T]), recall_thresholds (float64[R]).
        class_names: the categories of axis K.
        backend: which library computed it.
    """

    stats: dict[str, float]
    per_class: dict[str, float]
    precision: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    class_names: list[str]
    backend: str
    extra: dict = field(default_factory=dict)

    def table(self) -> str:
        """The 12 lines pycocotools prints."""
        lines = []
        for (title, short, iou, area, dets), name in zip(_STAT_LINES, STAT_NAMES):
            lines.append(
                f" {title:<18} {short} @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ] = {self.stats[name]:0.3f}"
            )
        return "\n".join(lines)

    def pr_curve(self, iou: float = 0.5, category: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision) at one IoU threshold, area all, 100 detections; the mean over
        categories (with ground truth) unless ``category`` names one."""
        t = int(np.argmin(np.abs(self.iou_thresholds - iou)))
        p = self.precision[t, :, :, 0, -1]  # [R, K]
        if category is not None:
            curve = p[:, self.class_names.index(category)]
        else:
            defined = p[:, (p > -1).any(axis=0)]
            curve = defined.mean(axis=1) if defined.size else np.full(p.shape[0], -1.0)
        return self.recall_thresholds.copy(), curve

    def to_dict(self) -> dict:
        out = {**self.stats, "per_class_AP": self.per_class, "backend": self.backend}
        if "errors" in self.extra:
            out["errors"] = self.extra["errors"]
        return out


def evaluate(
    gt: Mapping | str | Path | DatasetIndex, results: list[dict] | str | Path, *, backend: str = "auto"
) -> CocoEvaluation:
    """COCO bbox evaluation of ``results`` against ``gt``.

    Args:
        gt: a COCO dict, a COCO json path, or a ``DatasetIndex`` (``coco_ground_truth``).
        results: COCO results (list or file).
        backend: "numpy" (and "auto"), "pycocotools" or "faster-coco-eval": the same numbers.
    """
    if isinstance(gt, DatasetIndex):
        gt = coco_ground_truth(gt)
    elif not isinstance(gt, Mapping):
        gt = read_json(Path(gt))
    if not isinstance(results, list):
        results, arrays = _load_checked(Path(results), gt)
    else:
        arrays = check_results(results, "results", gt)
    return _evaluate(gt, results, arrays, backend)


def _evaluate(gt: Mapping, results: list[dict], arrays: coco_numpy.Detections, backend: str) -> CocoEvaluation:
    """``evaluate`` of checked results (``arrays``: the same, as ``check_results`` returns them)."""
    backend = _choose(backend)
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    if not results:
        return _no_detections(gt, names, backend)
    if backend == "numpy":
        numbers = coco_numpy.evaluate(gt, arrays)
        return CocoEvaluation(stats=dict(zip(STAT_NAMES, (float(v) for v in numbers.stats))),
                              per_class=_per_class(numbers.precision, names), precision=numbers.precision,
                              iou_thresholds=numbers.iou_thresholds, recall_thresholds=numbers.recall_thresholds,
                              class_names=names, backend=backend)
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        coco_gt = COCO(_copy_for_coco(gt))
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *args: None)
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = _copy_for_coco(gt)
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = np.asarray(evaluator.eval["precision"], dtype=np.float64)
    return CocoEvaluation(
        stats=dict(zip(STAT_NAMES, (float(v) for v in evaluator.stats[:12]))),
        per_class=_per_class(precision, names),
        precision=precision,
        iou_thresholds=np.asarray(evaluator.params.iouThrs, dtype=np.float64),
        recall_thresholds=np.asarray(evaluator.params.recThrs, dtype=np.float64),
        class_names=names,
        backend=backend,
    )


def evaluate_file(gt: str | Path, predictions: str | Path, *, backend: str = "auto",
                  errors: bool = False) -> CocoEvaluation:
    """``detkit eval --gt GT --predictions R``: a COCO results file against a COCO instances json,
    the ground truth read and checked as a dataset (each bad annotation named by its id). With
    ``errors``, the error analysis (``detkit.evaluation.errors.analyse``) in ``extra["errors"]``."""
    from detkit.data.coco import load_coco

    index = load_coco(gt, images=False)
    results, arrays = _load_checked(Path(predictions), index.coco)
    evaluation = _evaluate(coco_ground_truth(index), results, arrays, backend)
    if errors:
        from detkit.evaluation.errors import analyse

        evaluation.extra["errors"] = analyse(coco_ground_truth(index), arrays)
    return evaluation


def _choose(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return "numpy" if backend == "auto" else backend


def _copy_for_coco(gt: Mapping) -> dict:
    """A shallow copy with the keys COCO tools expect (they write into annotations)."""
    data = dict(gt)
    data["annotations"] = [dict(a) for a in gt.get("annotations", [])]
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    return data


def _per_class(precision: np.ndarray, names: list[str]) -> dict[str, float]:
    """AP@[.5:.95] per category: the mean of its defined precisions (area all, 100 detections)."""
    out = {}
    for k, name in enumerate(names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[name] = float(p.mean()) if p.size else -1.0
    return out


def _no_detections(gt: Mapping, names: list[str], backend: str) -> CocoEvaluation:
    """No detections at all: 0 wherever there is ground truth (pycocotools cannot load an
    empty result list), -1 where a size range has none."""
    ranges = {"all": (0, 1e10), "small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, 1e10)}
    present = {
        name: any(lo <= a.get("area", 0) < hi and not a.get("iscrowd", 0) for a in gt.get("annotations", []))
        for name, (lo, hi) in ranges.items()
    }
    areas = ("all", "all", "all", "small", "medium", "large", "all", "all", "all", "small", "medium", "large")
    stats = {name: 0.0 if present[area] else -1.0 for name, area in zip(STAT_NAMES, areas)}
    with_gt = {a["category_id"] for a in gt.get("annotations", []) if not a.get("iscrowd", 0)}
    ids = [c["id"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    per_class = {n: 0.0 if cid in with_gt else -1.0 for n, cid in zip(names, ids)}
    iou = np.linspace(0.5, 0.95, 10)
    recall = np.linspace(0.0, 1.0, 101)
    precision = np.full((10, 101, len(names), 4, 3), -1.0)
    for k, cid in enumerate(ids):
        if cid in with_gt:
            precision[:, :, k] = 0.0
    return CocoEvaluation(stats, per_class, precision, iou, recall, names, backend, {"note": "no detections"})


def _numpy(value):
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def write_json(evaluation: CocoEvaluation, path: str | Path) -> Path:
    """The 12 numbers under their usual names, the per-class AP and the backend."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(evaluation.to_dict(), indent=2))
    return path
