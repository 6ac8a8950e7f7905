"""Run a detector over a dataset and evaluate it (COCO), in one process or across torchrun's.

``evaluate_checkpoint(config, weights)`` is ``detkit eval CONFIG --weights W``: the prepared
run's model on its ``data.val``; ``evaluate_model(model, dataset)`` the same for any model.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from detkit.data import boxes_to_original, collate
from detkit.data.collate import _Indexed
from detkit.engine.distributed import World, gather
from detkit.engine.loop_data import ignore_interrupts
from detkit.engine.run import prepare
from detkit.evaluation import CocoEvaluation, coco_ground_truth, detections_to_results, evaluate
from detkit.ops import Suppressor


@torch.no_grad()
def predict(model, dataset, *, device, world: World = World(), batch_size: int = 2, workers: int = 0,
            progress: bool = True) -> tuple[list[tuple[int, dict]], list[int]]:
    """Detections of every image of ``dataset`` this process is dealt (every world.size-th),
    in the original images' pixels, as (image_id, detection) pairs on the CPU; and the
    dataset indices that could not be read."""
    model.eval()
    indices = list(range(world.rank, len(dataset), world.size))
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    loader = DataLoader(_Indexed(dataset), batch_sampler=batches, num_workers=workers, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0),  # leaves torch's global generator alone
                        worker_init_fn=ignore_interrupts if workers else None)
    out, skipped = [], []
    for batch in tqdm(loader, desc="evaluating", unit="batch", disable=not (progress and world.main), leave=False):
        skipped += batch.skipped
        if not batch.images:
            continue
        detections = model([img.to(device) for img in batch.images])
        for target, det in zip(batch.targets, detections):
            det = {k: v.detach().cpu() for k, v in det.items()}
            det["boxes"] = boxes_to_original(det["boxes"].double(), target["affine"]).float()
            out.append((target["image_id"], det))
    return out, skipped


def evaluate_model(model, dataset, *, device, world: World = World(), batch_size: int = 2, workers: int = 0,
                   backend: str = "auto") -> tuple[CocoEvaluation | None, list[dict]]:
    """COCO evaluation of ``model`` on ``dataset`` (a DetectionDataset with an invertible,
    i.e. evaluation, transform). Every process predicts its share; the results are
    gathered and evaluated once, on every process (only the main one needs to print).

    Returns the evaluation (None if there are no images) and the COCO results."""
    mine, skipped = predict(model, dataset, device=device, world=world, batch_size=batch_size, workers=workers)
    everything = [pair for part in gather(mine, world) for pair in part]
    everything.sort(key=lambda pair: pair[0])
    skipped = [i for part in gather(skipped, world) for i in part]
    if skipped and world.main:
        print(f"warning: {len(skipped)} unreadable images left out of the evaluation (counted as missed): "
              f"{[str(dataset.index.records[i].path) for i in skipped[:3]]}")
    results = detections_to_results(everything, dataset.index.category_ids)
    if not dataset.index.records:
        return None, results
    return evaluate(dataset.index, results, backend=backend), results


def evaluate_checkpoint(config: Mapping, weights: str | Path, *, postprocess: Mapping[str, Any] | None = None,
                        backend: str = "auto", device: str | None = None, errors: bool = False) -> CocoEvaluation:
    """COCO evaluation of the checkpoint ``weights`` of ``config``'s model on its ``data.val``.

    ``postprocess`` (``{type: soft_nms, sigma: 0.5}``) replaces the config's suppressor: the
    same trained model post-processed another way, no retraining. With ``errors``, the error
    analysis (``detkit.evaluation.errors.analyse``) goes in ``extra["errors"]``; the model runs
    a second time without its suppressor, so that each unmatched object is known as
    suppressed or never proposed.
    """
    if postprocess is not None:
        config = {**config, "model": {**config["model"], "postprocess": postprocess}}
    run = prepare(config, weights=weights, device=device)
    if run.val_set is None:
        raise ValueError(f"{config.get('name', 'the config')}: no data.val to evaluate on")
    batch_size = config["data"]["batch_size"]
    evaluation, results = evaluate_model(run.model, run.val_set, device=run.device, batch_size=batch_size,
                                         backend=backend)
    if evaluation is None:
        raise ValueError(f"{config.get('name', 'the config')}: data.val has no images")
    if errors:
        from detkit.evaluation.errors import analyse

        with raw_candidates(run.model):
            raw, _ = predict(run.model, run.val_set, device=run.device, batch_size=batch_size)
        candidates = detections_to_results(raw, run.val_set.index.category_ids)
        evaluation.extra["errors"] = analyse(coco_ground_truth(run.val_set.index), results, candidates)
    return evaluation


@contextlib.contextmanager
def raw_candidates(model) -> Iterator[int]:
    """Within it, ``model`` outputs every candidate that scored above its score threshold,
    unsuppressed and uncapped (suppressor ``none``); yields the detections-per-image cap its
    own post-processing applies after suppressing. Restores the model on exit."""
    suppressor, cap = model.postprocess, model.detections_per_image
    model.set_postprocess(Suppressor("none"), cap=sys.maxsize)
    try:
        yield cap
    finally:
        model.set_postprocess(suppressor, cap=cap)
