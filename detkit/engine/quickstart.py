"""``detkit quickstart``: train the small Faster R-CNN of configs/quickstart.yaml on the built-in
synthetic shapes, evaluate it, and draw its detections on a few validation images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from detkit.engine.inference import Predictions, predict_checkpoint
from detkit.engine.trainer import RunResult, train


@dataclass
class Quickstart:
    """The training run (its checkpoint, evaluation and metrics) and the drawn predictions."""

    run: RunResult
    predictions: Predictions

    @property
    def checkpoint(self) -> Path:
        return self.run.best or self.run.last


def quickstart(config: Mapping, *, pictures: int = 8, progress: bool = True) -> Quickstart:
    """Train ``config`` (configs/quickstart.yaml, or a variant of it) to the end of its budget,
    then draw the best checkpoint's detections on the first ``pictures`` validation images into
    ``<train.out>/predictions``."""
    if not (config["data"].get("synthetic") or {}).get("out"):
        raise ValueError("quickstart: data.synthetic.out is required (the built-in synthetic dataset's folder, "
                         "whose val/images are drawn)")
    result = train(config, progress=progress)
    val_images = sorted((Path(config["data"]["synthetic"]["out"]) / "val" / "images").glob("*.jpg"))[:pictures]
    predictions = predict_checkpoint(config, val_images, result.best or result.last, result.out / "predictions",
                                     progress=False)
    return Quickstart(result, predictions)
