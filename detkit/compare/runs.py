"""The study's models: trained once (or resumed, or loaded), evaluated, and read out raw.

Each run trains with ``detkit.engine.train`` into its own folder under the runs directory.
When the run has finished there before (``compare.json`` beside its checkpoints records the
config it finished with), the checkpoint is loaded instead: rerunning a study, or another
suite of it, never trains a model twice, and an interrupted study continues from the last
checkpoint of the run it was in. A folder holding a run of another config is refused.
The final weights (``last.pth``, the end of the budget) are what is evaluated: picking the
best epoch on the validation split would select on the numbers being compared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from detkit.checkpoints import load_weights
from detkit.compare.study import Run
from detkit.data import DetectionDataset
from detkit.data.records import DatasetIndex
from detkit.engine import evaluate_model, load_model, predict, prepare, train
from detkit.engine.evaluate import raw_candidates
from detkit.engine.distributed import World
from detkit.engine.distributed import current as current_world
from detkit.engine.loop_data import EpochBatches, loader
from detkit.evaluation import CocoEvaluation, coco_ground_truth
from detkit.models import recalibrate_batchnorm
from detkit.ops import box_iou

RECORD = "compare.json"  # in a run folder: the config it finished with, its steps and seconds


@dataclass
class TrainedRun:
    run: Run
    model: torch.nn.Module
    config: dict  # the resolved run config (num_classes and class names filled in)
    steps: int
    train_seconds: float
    reused: bool  # loaded from an earlier finished run rather than trained now
    device: str = "cpu"  # where the model is (its config's train.device)
    threads: tuple[int, ...] = ()  # torch CPU threads it trained on, in order (two: resumed on another count)


def is_main_process() -> bool:
    """False in the processes torchrun starts besides rank 0 (they train, and write nothing)."""
    return int(os.environ.get("RANK", "0")) == 0


def _comparable(config: Mapping) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def _differences(saved: Any, wanted: Any, where: str = "") -> list[str]:
    """The config keys whose values differ ("train.out: 'a' then, 'b' now"), depth first."""
    if isinstance(saved, Mapping) and isinstance(wanted, Mapping):
        return [d for key in sorted(set(saved) | set(wanted), key=str)
                for d in _differences(saved.get(key), wanted.get(key), f"{where}.{key}" if where else str(key))]
    return [] if saved == wanted else [f"{where}: {saved!r} then, {wanted!r} now"]


def train_or_load(run: Run, *, progress: bool = True) -> TrainedRun:
    """The run's trained model, on its config's device: loaded if its folder holds this config
    finished, else trained, resumed from ``last.pth`` when an interrupted training of this
    config left one."""
    out = Path(run.config["train"]["out"])
    # under torchrun every process reads the data: rank 0 generates a synthetic set first (two
    # processes writing one dataset at once made the torchrun test flake)
    prepared = prepare(run.config, model=False, world=current_world())
    resolved, device = prepared.config, prepared.device
    if run.weights:
        return TrainedRun(run, load_model(resolved, run.weights, device), resolved, 0, 0.0, True, device)
    path = out / RECORD
    record = json.loads(path.read_text()) if path.is_file() else None
    if record is None and (out / "last.pth").is_file():
        raise ValueError(f"{out} holds a checkpoint that detkit compare did not write: delete the folder, or "
                         "give detkit compare another --runs folder")
    if record is not None and _comparable(record["config"]) != _comparable(run.config):
        differ = ", ".join(_differences(record["config"], json.loads(_comparable(run.config)))[:3])
        raise ValueError(f"{out} holds a run of another config than study run {run.name!r} ({differ}): delete the "
                         "folder, or give detkit compare another --runs folder")
    if record is not None and record["finished"]:
        model = load_model(resolved, out / "last.pth", device)
        return TrainedRun(run, model, resolved, record["steps"], record["seconds"], True, device,
                          tuple(record.get("threads", ())))
    resume = record is not None and (out / "last.pth").is_file()
    record = {"config": run.config, "finished": False, "steps": 0, "seconds": record["seconds"] if resume else 0.0,
              "threads": record.get("threads", []) if resume else []}
    writes = is_main_process()
    if writes:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(path, record)
    started = time.monotonic()
    try:
        result = train(run.config, resume=resume, progress=progress)
        record.update(finished=True, steps=result.state.iteration)
    finally:  # an interrupted run keeps the seconds it spent, so a resumed one reports its whole cost
        record["seconds"] += time.monotonic() - started
        # a thread count sums in another order: a run resumed on another count is not bitwise a straight one
        if record["threads"][-1:] != [torch.get_num_threads()]:
            record["threads"].append(torch.get_num_threads())
        if writes:
            _write_json(path, record)
    model = load_model(resolved, result.last, device)
    return TrainedRun(run, model, resolved, record["steps"], record["seconds"], False, device,
                      tuple(record["threads"]))


def _write_json(path: Path, data) -> None:
    """Written beside and renamed into place: a kill never leaves half a record."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(data, indent=1, default=str))
    os.replace(partial, path)


@torch.no_grad()
def precise_batchnorm(trained: TrainedRun, batches: int) -> int:
    """Recompute the model's BatchNorm statistics over the first ``batches`` training batches
    of its seed's first epoch ("precise BN", as Detectron2 does before evaluating): after a
    short schedule, momentum-0.01 BatchNorms (EfficientDet's) still remember the untrained
    network. The same whatever ran before (the random draws are the run's seed's); returns
    the batches seen (0: nothing done)."""
    if batches <= 0:
        return 0
    config = trained.config
    train_set = prepare(config, model=False).train_set
    order = EpochBatches(train_set, config["data"]["batch_size"], seed=config["train"]["seed"], epoch=0,
                         shuffle=True, group_aspect_ratio=config["data"]["group_aspect_ratio"], world=World())

    def first_batches():
        for i, batch in enumerate(loader(train_set, order, 0, config["train"]["seed"])):
            if i == batches:
                return
            yield ([img.to(trained.device) for img in batch.images],
                   [{"boxes": t["boxes"].to(trained.device), "labels": t["labels"].to(trained.device)}
                    for t in batch.targets])

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):  # stochastic depth draws in train mode: seeded, no one else's
        torch.manual_seed(config["train"]["seed"])
        seen = recalibrate_batchnorm(trained.model, first_batches())
    trained.model.eval()
    return seen


# ------------------------------------------------------------------------------ evaluation data


def val_dataset(config: Mapping, min_pair_iou: float | None = None) -> DetectionDataset:
    """The config's validation split as an evaluation dataset (optionally only its crowded
    images: see ``crowded_subset``)."""
    val = prepare(config, model=False).val_set
    if val is None:
        raise ValueError(f"run {config.get('name')}: its data has no val split to evaluate on")
    if min_pair_iou is None:
        return val
    return DetectionDataset(crowded_subset(val.index, min_pair_iou), val.transforms, keep_crowd=True)


def train_subset(config: Mapping, images: int) -> DetectionDataset:
    """The first ``images`` images of the config's training split, as an evaluation dataset
    (the validation transforms: no augmentation), for choosing settings on training data."""
    prepared = prepare(config, model=False)
    index = prepared.train_set.index
    return DetectionDataset(_restricted(index, index.records[:images]), prepared.val_set.transforms, keep_crowd=True)


def _restricted(index: DatasetIndex, records: list) -> DatasetIndex:
    """``index`` with only ``records``, its COCO ground truth restricted to them."""
    gt = coco_ground_truth(index)
    ids = {r.image_id for r in records}
    coco = {**gt, "images": [img for img in gt["images"] if img["id"] in ids],
            "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
    return dataclasses.replace(index, records=list(records), coco=coco)


def crowded_subset(index: DatasetIndex, min_pair_iou: float) -> DatasetIndex:
    """The images of ``index`` holding two objects of one class whose boxes overlap at IoU >=
    ``min_pair_iou`` (the case where greedy NMS at that threshold removes a true object),
    with the ground truth restricted to them."""
    keep = []
    for record in index.records:
        objects = ~record.iscrowd
        boxes, labels = torch.as_tensor(record.boxes[objects]), torch.as_tensor(record.labels[objects])
        if len(boxes) > 1:
            iou = box_iou(boxes, boxes)
            iou.fill_diagonal_(0)
            iou[labels[:, None] != labels[None, :]] = 0
            if float(iou.max()) >= min_pair_iou:
                keep.append(record)
    if not keep:
        raise ValueError(f"{index.source}: no image holds a same-class pair at IoU >= {min_pair_iou}")
    return _restricted(index, keep)


def evaluate(trained: TrainedRun, dataset: DetectionDataset) -> tuple[CocoEvaluation, list[dict]]:
    evaluation, results = evaluate_model(trained.model, dataset, device=trained.device,
                                         batch_size=trained.config["data"]["batch_size"])
    if evaluation is None:
        raise ValueError(f"run {trained.run.name}: the evaluation split has no images")
    return evaluation, results


# ------------------------------------------------------------------------------ raw candidates


@contextlib.contextmanager
def density_readout(model, readout: str) -> Iterator[None]:
    """Within it, ``model`` (a Faster R-CNN with predicted densities) reads each candidate's
    density with ``readout`` ("anchor" or "box"); restores its own on exit."""
    own = model.density_readout
    model.set_density_readout(readout)
    try:
        yield
    finally:
        model.set_density_readout(own)


def has_box_readout(model) -> bool:
    """True for a model whose densities can also be read at each box (``density_readout``)."""
    return hasattr(model, "set_density_readout") and (
        getattr(model.rpn, "density", None) is not None or getattr(model.roi_heads, "density_head", None) is not None)


def read_raw(trained: TrainedRun, dataset: DetectionDataset) -> tuple[dict, int]:
    """{image_id: {"boxes", "scores", "labels"(, "densities")}} before suppression, in the
    original images' pixels, and the model's detections-per-image cap."""
    with raw_candidates(trained.model) as cap:
        pairs, skipped = predict(trained.model, dataset, device=trained.device,
                                 batch_size=trained.config["data"]["batch_size"], progress=False)
    if skipped:
        raise ValueError(f"{len(skipped)} images of {dataset.index.source} could not be read")
    return {image_id: det for image_id, det in pairs}, cap


def save_raw(raw: Mapping[int, Mapping], cap: int, path: Path, made_by: Mapping) -> Path:
    """The raw candidates as plain tensors (read back with ``weights_only``), with the cap and
    what made them (``made_by``: plain values)."""
    from detkit.checkpoints import save_atomic

    return save_atomic({"cap": cap, "made_by": dict(made_by), "images": {int(k): dict(v) for k, v in raw.items()}},
                       path)


def load_raw(path: Path) -> tuple[dict, int, dict]:
    """(raw candidates, cap, what made them) as ``save_raw`` wrote them."""
    saved = load_weights(path, "raw candidates")
    return saved["images"], int(saved["cap"]), saved.get("made_by", {})


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def first_images(dataset: DetectionDataset, n: int) -> list[torch.Tensor]:
    """The first ``n`` readable images of ``dataset`` (uint8 [3, H, W], as the model gets them)."""
    images = []
    for i in range(len(dataset)):
        sample = dataset[i]
        if sample is not None:
            images.append(sample[0])
        if len(images) == n:
            break
    return images
