"""The suppressor family: NMS, Soft-NMS, Adaptive-NMS, DIoU-NMS, one calling convention.

Every function takes ``boxes (Tensor[N, 4])`` in absolute xyxy and ``scores (Tensor[N])``,
and returns the indices of the kept boxes as int64, in descending order of their
(final) score. The soft variants also return the final scores of the kept boxes,
aligned with the indices. Each has a class-aware ``batched_`` twin that takes
``idxs (Tensor[N])``, the class of each box, right after ``scores``, and never lets
boxes of different classes interact.

``build_suppressor`` turns a config mapping such as
``{"type": "soft_nms", "method": "gaussian", "sigma": 0.5}`` into the callable every
detector post-processes through.

Exact definitions, defaults and where they differ from torchvision, mmcv and the
original papers' code: docs/ops.md. Speed: docs/benchmarks.md.

On the CPU the loops run compiled (``csrc/suppress.cpp``, built by setup.py as
``detkit.ops._C``; no JIT, nothing to warm up). On other devices hard ``nms``/``batched_nms`` run torchvision's kernel;
the other suppressors copy the boxes to the CPU, run the same compiled loop and return
the indices on the input's device (the greedy loop is sequential by nature; a few
thousand boxes cross the bus in microseconds).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torchvision
from torch import Tensor

from detkit.ops.boxes import check_boxes

__all__ = [
    "Suppressor",
    "SUPPRESSORS",
    "adaptive_nms",
    "adaptive_soft_nms",
    "batched_adaptive_nms",
    "batched_adaptive_soft_nms",
    "batched_diou_nms",
    "batched_nms",
    "batched_soft_nms",
    "build_suppressor",
    "diou_nms",
    "nms",
    "soft_nms",
]

try:
    from detkit.ops import _C
except ImportError as error:  # pragma: no cover - a broken install
    raise ImportError(
        "detkit.ops._C, the compiled suppressors, is missing: reinstall detkit from its source "
        "folder with a C++17 compiler present (pip install -e .)"
    ) from error


# --------------------------------------------------------------------------- validation


def _check_tensor(t: Any, n: int, name: str, where: str, *, what: str, floating: bool) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{where}: {name} must have shape [{n}] ({what}), got {list(t.shape)}")
    if floating and not t.is_floating_point():
        raise ValueError(f"{where}: {name} must be a floating-point tensor, got {t.dtype}")
    if not floating and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise ValueError(f"{where}: {name} must be an integer tensor, got {t.dtype}")


def _check_structure(where, boxes, scores, idxs=None, densities=None) -> None:
    """Types, shapes, dtypes and devices: cheap checks that read no values."""
    check_boxes(boxes, "boxes", where, values=False)
    n = boxes.shape[0]
    _check_tensor(scores, n, "scores", where, what="one per box", floating=True)
    if idxs is not None:
        _check_tensor(idxs, n, "idxs", where, what="a class per box", floating=False)
    if densities is not None:
        _check_tensor(densities, n, "densities", where, what="one per box", floating=True)
    for name, t in (("scores", scores), ("idxs", idxs), ("densities", densities)):
        if t is not None and t.device != boxes.device:
            raise ValueError(f"{where}: {name} is on {t.device} but boxes are on {boxes.device}")


def _check_values(where, boxes, scores, densities=None) -> None:
    """Finite coordinates with x1 <= x2 and y1 <= y2, finite scores and densities (torch ops)."""
    check_boxes(boxes, "boxes", where)
    for name, t in (("scores", scores), ("densities", densities)):
        if t is None or t.numel() == 0:
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0, 0])
            raise ValueError(f"{where}: {name}[{i}] = {float(t[i])} is not finite")


def _check_number(value: Any, name: str, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        expected = "> 0" if positive else ">= 0"
        raise ValueError(f"{where}: {name} must be a finite number {expected}, got {value!r}")
    return value


# --------------------------------------------------------------------------- dispatch


def _empty_keep(boxes: Tensor) -> Tensor:
    return torch.empty(0, dtype=torch.int64, device=boxes.device)


def _compute_dtype(t: Tensor) -> torch.dtype:
    """float16/bfloat16 are computed in float32; float32 and float64 as they are."""
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def _descending(scores: np.ndarray) -> np.ndarray:
    """Box ids in descending score, ties by ascending id (int64[N])."""
    if scores.dtype == np.float32:
        # one unique uint64 key per box: the score's bits, ordered descending, then the id;
        # a plain (SIMD) sort of unique keys is deterministic and ~6x faster than a stable sort
        bits = (scores + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into 0.0
        ascending = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
        key = ((~ascending).astype(np.uint64) << np.uint64(32)) | np.arange(scores.shape[0], dtype=np.uint64)
        return (np.sort(key) & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return np.argsort(-scores, kind="stable")


def _run_kernel(where, boxes, scores, idxs, densities):
    """Validate, order and group the boxes on the CPU for a ``_C`` kernel.

    Returns numpy arrays: boxes (float32/64[N, 4]), scores (float64[N]), order (ids in
    descending score, ties by ascending id), grouped order and group_start (as the kernels
    take them), densities (float64[N] or [0]).
    """
    b = boxes.detach().to("cpu", _compute_dtype(boxes)).contiguous().numpy()
    s = scores.detach().to("cpu", torch.float64 if scores.dtype == torch.float64 else torch.float32).numpy()
    s64 = s.astype(np.float64)
    d = np.empty(0) if densities is None else densities.detach().to("cpu", torch.float64).contiguous().numpy()
    if _C.first_invalid(b, s64, d)[0]:
        _check_values(where, boxes, scores, densities)  # raises, with the details
    order = _descending(s)
    if idxs is None:
        grouped, group_start = order, np.array([0, order.shape[0]], dtype=np.int64)
    else:
        classes = idxs.detach().to("cpu", torch.int64).numpy()
        lowest, highest = classes.min(), classes.max()
        if highest - lowest <= 4 * classes.shape[0]:
            classes, n_classes = np.ascontiguousarray(classes - lowest), int(highest - lowest) + 1
        else:  # sparse ids: number them densely
            unique, classes = np.unique(classes, return_inverse=True)
            n_classes = unique.shape[0]
        grouped = np.empty_like(order)
        group_start = np.array(_C.group_by_class(order, classes.astype(np.int64), n_classes, grouped), np.int64)
    return b, s64, order, grouped, group_start, d


def _hard(where, boxes, scores, idxs, densities, iou_threshold, criterion) -> Tensor:
    """Check the arguments, then run the compiled hard-suppression loop; returns keep.

    Hard NMS on a non-CPU device runs torchvision's kernel there."""
    _check_structure(where, boxes, scores, idxs, densities)
    iou_threshold = _check_number(iou_threshold, "iou_threshold", where)
    if boxes.shape[0] == 0:
        return _empty_keep(boxes)
    if boxes.device.type != "cpu" and criterion == _C.CRITERION_IOU:
        _check_values(where, boxes, scores)
        dtype = _compute_dtype(boxes)
        boxes, scores = boxes.to(dtype), scores.to(dtype)
        if idxs is None:
            return torchvision.ops.nms(boxes, scores, iou_threshold)
        return torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold)
    b, _, order, grouped, group_start, d = _run_kernel(where, boxes, scores, idxs, densities)
    kept = np.zeros(b.shape[0], dtype=np.uint8)
    _C.hard_suppress(b, grouped, group_start, iou_threshold, d, criterion, kept)
    return torch.from_numpy(order[kept[order].view(bool)]).to(boxes.device)


def _soft(where, boxes, scores, idxs, densities, method, sigma, iou_threshold, score_threshold, *, gated):
    """Check the arguments, then run the compiled Soft-NMS loop; returns (keep, final scores)."""
    _check_structure(where, boxes, scores, idxs, densities)
    method = _check_method(method, where, ("gaussian", "linear"))
    sigma = _check_number(sigma, "sigma", where, positive=True)
    iou_threshold = _check_number(iou_threshold, "iou_threshold", where)
    score_threshold = _check_number(score_threshold, "score_threshold", where)
    if boxes.shape[0] == 0:
        return _empty_keep(boxes), scores.new_empty(0)
    b, s, _, grouped, group_start, d = _run_kernel(where, boxes, scores, idxs, densities)
    decay = _C.DECAY_LINEAR if method == "linear" else _C.DECAY_GAUSSIAN
    keep = np.empty(b.shape[0], dtype=np.int64)
    kept_scores = np.empty(b.shape[0], dtype=np.float64)
    n = _C.soft_suppress(
        b, s, grouped, group_start, iou_threshold, d, decay, gated, sigma, score_threshold, keep, kept_scores
    )
    keep, kept_scores = keep[:n], kept_scores[:n]
    if group_start.shape[0] > 2:  # several groups, each in descending score: merge them
        merged = np.argsort(-kept_scores, kind="stable")
        keep, kept_scores = keep[merged], kept_scores[merged]
    return (
        torch.from_numpy(keep).to(boxes.device),
        torch.from_numpy(kept_scores).to(boxes.device, scores.dtype),
    )


def _check_method(method: Any, where: str, allowed: tuple[str, ...]) -> str:
    if method not in allowed:
        raise ValueError(f"{where}: method must be one of {', '.join(map(repr, allowed))}, got {method!r}")
    return method


# --------------------------------------------------------------------------- hard NMS


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, exactly as ``torchvision.ops.nms``.

    Repeatedly keeps the highest-scoring box left and discards every box whose IoU with
    it is greater than ``iou_threshold`` (no +1 pixel in widths).

    Args:
        boxes (Tensor[N, 4]): (x1, y1, x2, y2), absolute pixels, x1 <= x2, y1 <= y2.
        scores (Tensor[N]): one score per box.
        iou_threshold (float): discard boxes with IoU > iou_threshold, >= 0.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, in descending score
        (ties: ascending index).
    """
    return _hard("nms", boxes, scores, None, None, iou_threshold, _C.CRITERION_IOU)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware ``nms``, exactly as ``torchvision.ops.batched_nms``.

    Args:
        boxes (Tensor[N, 4]), scores (Tensor[N]), iou_threshold: as for ``nms``.
        idxs (Tensor[N]): integer class of each box; boxes of different classes never
            suppress each other.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, in descending score.
    """
    if idxs is None:
        raise ValueError("batched_nms: idxs is required (the class of each box); use nms for none")
    return _hard("batched_nms", boxes, scores, idxs, None, iou_threshold, _C.CRITERION_IOU)


# --------------------------------------------------------------------------- Soft-NMS


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al., ICCV 2017): decay the neighbours' scores instead of removing them.

    Repeatedly keeps the box M with the highest current score, then rescores every box b
    left:

    - ``method="linear"``: s_b <- s_b * (1 - IoU(M, b)) when IoU(M, b) >= iou_threshold;
    - ``method="gaussian"``: s_b <- s_b * exp(-IoU(M, b)^2 / sigma), for every b.

    A box whose score falls below ``score_threshold`` is dropped.

    Args:
        boxes (Tensor[N, 4]), scores (Tensor[N]): as for ``nms``.
        method: "gaussian" or "linear".
        sigma (float): the gaussian's sigma, > 0.
        iou_threshold (float): N_t of the linear method, >= 0.
        score_threshold (float): the minimum final score of a kept box, >= 0.

    Returns:
        keep (Tensor[K], int64): indices of the kept boxes, in descending final score
        (ties: ascending index).
        scores (Tensor[K]): their final scores, in the input's dtype.
    """
    return batched_soft_nms(
        boxes,
        scores,
        None,
        method=method,
        sigma=sigma,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        _where="soft_nms",
    )


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor | None,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    _where: str = "batched_soft_nms",
) -> tuple[Tensor, Tensor]:
    """Class-aware ``soft_nms``: ``idxs (Tensor[N])`` gives the integer class of each box."""
    return _soft(_where, boxes, scores, idxs, None, method, sigma, iou_threshold, score_threshold, gated=False)


# --------------------------------------------------------------------------- Adaptive-NMS


def adaptive_nms(boxes: Tensor, scores: Tensor, densities: Tensor, iou_threshold: float) -> Tensor:
    """Adaptive-NMS (Liu, Huang, Wang, CVPR 2019): a suppression threshold per box from its density.

    Repeatedly keeps the highest-scoring box M left; its threshold is
    N_M = max(iou_threshold, d_M), and every box b left with IoU(M, b) >= N_M is
    discarded. In a crowd (high d_M) overlapping neighbours survive; an isolated box
    (d_M <= iou_threshold) suppresses as plain NMS does. Boxes that do not overlap never
    suppress each other.

    Args:
        boxes (Tensor[N, 4]), scores (Tensor[N]): as for ``nms``.
        densities (Tensor[N]): predicted density of each box (the max IoU of its object
            with any other object of the image).
        iou_threshold (float): N_t, >= 0.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, in descending score.
    """
    return batched_adaptive_nms(boxes, scores, None, densities, iou_threshold, _where="adaptive_nms")


def batched_adaptive_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor | None,
    densities: Tensor,
    iou_threshold: float,
    _where: str = "batched_adaptive_nms",
) -> Tensor:
    """Class-aware ``adaptive_nms``: ``idxs (Tensor[N])`` gives the integer class of each box."""
    if densities is None:
        raise ValueError(f"{_where}: densities are required (one per box; a model's density head predicts them)")
    return _hard(_where, boxes, scores, idxs, densities, iou_threshold, _C.CRITERION_ADAPTIVE)


def adaptive_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    densities: Tensor,
    *,
    method: str = "linear",
    iou_threshold: float = 0.5,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
) -> tuple[Tensor, Tensor]:
    """Adaptive-NMS with Soft-NMS decay: boxes with IoU(M, b) >= N_M = max(iou_threshold, d_M)
    are decayed (linear: by 1 - IoU; gaussian: by exp(-IoU^2 / sigma)) instead of removed,
    and dropped once their score is below ``score_threshold``.

    Returns:
        keep (Tensor[K], int64) in descending final score, and their final scores.
    """
    return batched_adaptive_soft_nms(
        boxes,
        scores,
        None,
        densities,
        method=method,
        iou_threshold=iou_threshold,
        sigma=sigma,
        score_threshold=score_threshold,
        _where="adaptive_soft_nms",
    )


def batched_adaptive_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor | None,
    densities: Tensor,
    *,
    method: str = "linear",
    iou_threshold: float = 0.5,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    _where: str = "batched_adaptive_soft_nms",
) -> tuple[Tensor, Tensor]:
    """Class-aware ``adaptive_soft_nms``: ``idxs (Tensor[N])`` gives the integer class of each box."""
    if densities is None:
        raise ValueError(f"{_where}: densities are required (one per box; a model's density head predicts them)")
    return _soft(_where, boxes, scores, idxs, densities, method, sigma, iou_threshold, score_threshold, gated=True)


# --------------------------------------------------------------------------- DIoU-NMS


def diou_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """DIoU-NMS (Zheng et al., AAAI 2020): NMS whose overlap also weighs the centres' distance.

    Repeatedly keeps the highest-scoring box M left and discards every box b with
    IoU(M, b) - rho^2(M, b) / c^2 > iou_threshold, where rho is the distance between the
    boxes' centres and c the diagonal of the smallest box enclosing both. Two boxes that
    overlap a lot but sit side by side (two objects) survive more often than under NMS.

    Args:
        boxes (Tensor[N, 4]), scores (Tensor[N]): as for ``nms``.
        iou_threshold (float): >= 0.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, in descending score.
    """
    return batched_diou_nms(boxes, scores, None, iou_threshold, _where="diou_nms")


def batched_diou_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor | None, iou_threshold: float, _where: str = "batched_diou_nms"
) -> Tensor:
    """Class-aware ``diou_nms``: ``idxs (Tensor[N])`` gives the integer class of each box."""
    return _hard(_where, boxes, scores, idxs, None, iou_threshold, _C.CRITERION_DIOU)


# --------------------------------------------------------------------------- from config


def _run_nms(boxes, scores, idxs, densities, *, iou_threshold):
    keep = batched_nms(boxes, scores, idxs, iou_threshold)
    return keep, scores[keep]


def _run_soft_nms(boxes, scores, idxs, densities, **options):
    return batched_soft_nms(boxes, scores, idxs, **options)


def _run_adaptive_nms(boxes, scores, idxs, densities, *, iou_threshold, method):
    if method == "hard":
        keep = batched_adaptive_nms(boxes, scores, idxs, densities, iou_threshold)
        return keep, scores[keep]
    return batched_adaptive_soft_nms(boxes, scores, idxs, densities, method=method, iou_threshold=iou_threshold)


def _run_diou_nms(boxes, scores, idxs, densities, *, iou_threshold):
    keep = batched_diou_nms(boxes, scores, idxs, iou_threshold)
    return keep, scores[keep]


def _run_none(boxes, scores, idxs, densities):
    """No suppression: every box, in descending score (ties by ascending index), its score kept.
    The reference a study compares suppressors against, and how raw candidates are read out."""
    _check_structure("none", boxes, scores, idxs, densities)
    _check_values("none", boxes, scores, densities)
    s = scores.detach().to("cpu", torch.float64 if scores.dtype == torch.float64 else torch.float32).numpy()
    keep = torch.from_numpy(_descending(s)).to(boxes.device)
    return keep, scores[keep]


@dataclass(frozen=True)
class _Spec:
    run: Callable
    defaults: dict  # each option's default
    needs_densities: bool = False


# One table from config name to function and defaults; docs/ops.md explains each default.
SUPPRESSORS: dict[str, _Spec] = {
    "nms": _Spec(_run_nms, {"iou_threshold": 0.5}),  # torchvision's detection models use 0.5
    "soft_nms": _Spec(
        _run_soft_nms,
        # Bodla et al.: sigma 0.5 (gaussian), N_t 0.3 (linear); 0.001 drops only negligible boxes
        {"method": "gaussian", "sigma": 0.5, "iou_threshold": 0.3, "score_threshold": 0.001},
    ),
    "adaptive_nms": _Spec(
        # Liu et al. use N_t = 0.5 with hard suppression; "linear"/"gaussian" decay instead
        _run_adaptive_nms,
        {"iou_threshold": 0.5, "method": "hard"},
        needs_densities=True,
    ),
    "diou_nms": _Spec(_run_diou_nms, {"iou_threshold": 0.5}),  # Zheng et al. use 0.5 on YOLOv3/SSD
    "none": _Spec(_run_none, {}),  # keep everything: raw candidates, and the no-suppression reference
}


@dataclass(frozen=True)
class Suppressor:
    """A configured suppressor: ``keep, scores = suppressor(boxes, scores, labels, densities)``.

    ``keep`` indexes the input boxes in descending final score, ``scores`` are the final
    scores of the kept boxes (rescored by the soft variants). Boxes of different labels
    never interact unless ``class_agnostic``. An option left out takes its default
    (``SUPPRESSORS``), so ``Suppressor("soft_nms", {"method": "linear"})`` is complete; a
    config mapping becomes one through ``build_suppressor``, which names the config key of a
    mistake. A suppressor is a value: equal configurations compare equal.
    """

    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        if self.type not in SUPPRESSORS:
            raise ValueError(f"Suppressor: {_unknown(self.type, SUPPRESSORS)}")
        if not isinstance(self.class_agnostic, bool):
            raise ValueError(f"Suppressor: class_agnostic must be true or false, got {self.class_agnostic!r}")
        spec = SUPPRESSORS[self.type]
        given = dict(self.options or {})
        for key in given:
            if key not in spec.defaults:
                raise ValueError(f"Suppressor.{key}: {_unknown(key, spec.defaults, what=f'option of {self.type}')}")
        options = {**spec.defaults, **given}
        _check_options(self.type, options, "Suppressor")
        object.__setattr__(self, "options", MappingProxyType(options))  # read-only: checked once, stays so

    def __hash__(self) -> int:
        return hash((self.type, tuple(sorted(self.options.items())), self.class_agnostic))

    def __reduce__(self):  # copies and pickles (a model's deepcopy for EMA) rebuild it from plain values
        return type(self), (self.type, dict(self.options), self.class_agnostic)

    @property
    def needs_densities(self) -> bool:
        return SUPPRESSORS[self.type].needs_densities

    def config(self) -> dict:
        """The mapping ``build_suppressor`` makes this suppressor from (every option spelled out)."""
        return {"type": self.type, **self.options, **({"class_agnostic": True} if self.class_agnostic else {})}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Suppressor({self.type!r}{', ' + options if options else ''}" + \
            (", class_agnostic=True)" if self.class_agnostic else ")")

    def __call__(
        self, boxes: Tensor, scores: Tensor, labels: Tensor, densities: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if self.needs_densities and densities is None:
            raise ValueError(
                f"suppressor {self.type!r} needs a density per box: enable the model's density head "
                "or choose another suppressor"
            )
        idxs = None if self.class_agnostic else labels
        return SUPPRESSORS[self.type].run(boxes, scores, idxs, densities, **self.options)


def build_suppressor(config: Mapping[str, Any] | Suppressor, where: str = "suppressor") -> Suppressor:
    """Build a ``Suppressor`` from a config mapping.

    Args:
        config: ``{"type": name, **options}``, optionally ``class_agnostic: bool``. ``type``
            is one of ``SUPPRESSORS``; each option left out takes its default. A
            ``Suppressor`` is returned as it is.
        where: the config key the mapping came from, named in error messages.

    Raises:
        ValueError: unknown type or option (with the nearest known name), or a bad value.

    Example:
        >>> build_suppressor({"type": "soft_nms", "method": "gaussian", "sigma": 0.5})
    """
    if isinstance(config, Suppressor):
        return config
    if not isinstance(config, Mapping):
        raise ValueError(f"{where} must be a mapping with a 'type' key, got {config!r}")
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in SUPPRESSORS:
        raise ValueError(f"{where}.type: {_unknown(kind, SUPPRESSORS)}")
    class_agnostic = config.pop("class_agnostic", False)
    if not isinstance(class_agnostic, bool):
        raise ValueError(f"{where}.class_agnostic must be true or false, got {class_agnostic!r}")
    spec = SUPPRESSORS[kind]
    for key in config:
        if key not in spec.defaults:
            raise ValueError(f"{where}.{key}: {_unknown(key, spec.defaults, what=f'option of {kind}')}")
    _check_options(kind, {**spec.defaults, **config}, where)  # here, to name the config key
    return Suppressor(kind, config, class_agnostic)


def _check_options(kind: str, options: dict, where: str) -> None:
    for key, value in options.items():
        if key == "method":
            allowed = ("hard", "linear", "gaussian") if kind == "adaptive_nms" else ("gaussian", "linear")
            _check_method(value, f"{where}.method", allowed)
        else:
            _check_number(value, key, where, positive=key == "sigma")


def _unknown(name: Any, known, what: str = "type") -> str:
    names = sorted(known)
    hint = difflib.get_close_matches(str(name), names, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"unknown {what} {name!r}{suggestion} (known: {', '.join(names)})"
