"""Training parity with torchvision: detkit's RetinaNet and Faster R-CNN trained side by side
with torchvision's, from identical weights, on identical batches, with the same optimizer.

Per family, and per seed:

1. torchvision's builder (``retinanet_resnet50_fpn``, ``fasterrcnn_resnet50_fpn``) with random
   weights drawn from the seed, at the input size ``--size``; detkit's model from the same state
   dict (``detkit.models.from_torchvision``), its transform set to the same size.
2. The first batch: every loss term of both, and the largest relative difference of any
   parameter's gradient (the training arithmetic, before any drift).
3. ``--steps`` steps of AdamW (lr 1e-3 after a linear warm-up over a fifth of the steps,
   weight decay 1e-4, gradients clipped at norm 10: the compare study's recipe) on the same
   batches of detkit's synthetic shapes, in the same order; the losses of both side by side.
4. COCO AP of both on the same validation images.

RetinaNet draws no random numbers in training, so its losses agree step for step until the
float rounding of two different implementations compounds. Faster R-CNN samples anchors and
RoIs at random: its runs are compared over ``--seeds`` seeds (the spread of each side says
how far apart two runs of the same implementation land).

Usage: python tools/bench_train_parity.py [--family retinanet|faster_rcnn|all] [--steps 150]
       [--size 192] [--batch 2] [--seeds 3] [--first-seed 0] [--json out.json]
Results, machine and method: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.models import detection as tvd

from detkit.data import DetectionDataset, eval_transforms
from detkit.data.coco import load_coco
from detkit.data.synthetic import generate
from detkit.evaluation import detections_to_results, evaluate
from detkit.models import from_torchvision
from detkit.models.torchvision_compat import detkit_key

FAMILIES = {
    # builder, torchvision's label offset, loss names (torchvision -> detkit)
    "retinanet": ("retinanet_resnet50_fpn", 0, {"classification": "classification",
                                               "bbox_regression": "box_regression"}),
    "faster_rcnn": ("fasterrcnn_resnet50_fpn", 1, {"loss_objectness": "rpn_objectness", "loss_rpn_box_reg": "rpn_box",
                                                  "loss_classifier": "classifier", "loss_box_reg": "box"}),
}
LR, WEIGHT_DECAY, CLIP = 1e-3, 1e-4, 10.0


def pair(family: str, num_classes: int, size: int, seed: int):
    """(torchvision model, detkit model) with the same random weights, both at ``size`` px."""
    builder, offset, _ = FAMILIES[family]
    torch.manual_seed(seed)
    theirs = getattr(tvd, builder)(weights=None, weights_backbone=None, num_classes=num_classes + offset,
                                   min_size=size, max_size=size)
    ours = from_torchvision(builder, theirs.state_dict())
    ours.transform.min_size, ours.transform.max_size = (size,), size
    return theirs, ours


def optimizer_of(model: torch.nn.Module, steps: int):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR,
                                  weight_decay=WEIGHT_DECAY)
    warmup = max(1, steps // 5)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    return optimizer, schedule


def losses_of(model, family: str, images, targets, theirs: bool) -> dict[str, torch.Tensor]:
    """Named as detkit names them; torchvision's labels shifted by its background offset."""
    _, offset, names = FAMILIES[family]
    if not theirs:
        return model(images, targets)
    shifted = [{"boxes": t["boxes"], "labels": t["labels"] + offset} for t in targets]
    return {names[k]: v for k, v in model(images, shifted).items()}


def first_step(theirs, ours, family: str, images, targets, seed: int) -> dict:
    """Both models' loss terms and gradients on one batch (the same random state for each)."""
    out = {}
    grads = {}
    for side, model in (("torchvision", theirs), ("detkit", ours)):
        model.train()
        model.zero_grad()
        torch.manual_seed(seed)
        losses = losses_of(model, family, images, targets, side == "torchvision")
        sum(losses.values()).backward()
        out[side] = {k: float(v.detach()) for k, v in losses.items()}
        grads[side] = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    worst, compared = 0.0, 0
    for name, a in grads["torchvision"].items():
        b = grads["detkit"].get(detkit_key(FAMILIES[family][0], name))
        if b is None:
            continue
        scale = a.abs().max().item()
        if scale > 0:
            worst = max(worst, (a - b).abs().max().item() / scale)
            compared += 1
    out["gradient_max_relative_difference"] = worst
    out["gradients_compared"] = compared
    for model in (theirs, ours):
        model.zero_grad()
    return out


def train(model, family: str, batches: list, steps: int, seed: int, theirs: bool) -> list[dict]:
    model.train()
    optimizer, schedule = optimizer_of(model, steps)
    torch.manual_seed(seed)
    history = []
    for step in range(steps):
        images, targets = batches[step % len(batches)]
        losses = losses_of(model, family, images, targets, theirs)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], CLIP)
        optimizer.step()
        schedule.step()
        history.append({"total": float(total.detach()), **{k: float(v.detach()) for k, v in losses.items()}})
    return history


def average_precision(model, family: str, val_set, theirs: bool) -> dict:
    model.eval()
    offset = FAMILIES[family][1] if theirs else 0
    detections = []
    with torch.no_grad():
        for i in range(len(val_set)):
            image, target = val_set[i]
            det = model([image.float() / 255])[0]
            detections.append((target["image_id"], {**det, "labels": det["labels"] - offset}))
    stats = evaluate(val_set.index, detections_to_results(detections, val_set.index.category_ids)).stats
    return {"AP": stats["AP"], "AP50": stats["AP50"]}


def load_batches(data: Path, size: int, batch: int, steps: int, val_images: int):
    """The first ``steps`` batches of the synthetic training set (fixed order, no augmentation,
    images as floats in [0, 1]) and the validation set."""
    generate(data / "train", images=steps * batch, seed=0, size=size)  # already there: nothing is written
    generate(data / "val", images=val_images, seed=1, size=size)
    train_set = DetectionDataset(load_coco(data / "train" / "annotations.json"), eval_transforms())
    val_set = DetectionDataset(load_coco(data / "val" / "annotations.json"), eval_transforms())
    batches = []
    for start in range(0, min(len(train_set), steps * batch), batch):
        samples = [train_set[i] for i in range(start, min(start + batch, len(train_set)))]
        batches.append(([s[0].float() / 255 for s in samples],
                        [{"boxes": s[1]["boxes"], "labels": s[1]["labels"]} for s in samples]))
    return batches, val_set, len(train_set.index.categories)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=[*FAMILIES, "all"], default="all")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--size", type=int, default=192, help="image side, px (the data is generated at it)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per family (RetinaNet: 1 suffices)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="start at this seed (one seed per run when a run must fit a working stretch)")
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--data", default=None,
                        help="synthetic data folder (default: data/parity-<size>-<steps x batch>: one per training set)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each seed's report as it ends, also into a log file
    data = Path(args.data or f"data/parity-{args.size}-{args.steps * args.batch}")
    batches, val_set, num_classes = load_batches(data, args.size, args.batch, args.steps, args.val_images)
    families = list(FAMILIES) if args.family == "all" else [args.family]
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "torchvision": torchvision.__version__},
               "steps": args.steps, "size": args.size, "batch": args.batch, "families": {}}
    for family in families:
        seeds = 1 if family == "retinanet" else args.seeds
        runs = []
        for seed in range(args.first_seed, args.first_seed + seeds):
            started = time.monotonic()
            theirs, ours = pair(family, num_classes, args.size, seed)
            first = first_step(theirs, ours, family, *batches[0], seed)
            history = {"torchvision": train(theirs, family, batches, args.steps, seed, True),
                       "detkit": train(ours, family, batches, args.steps, seed, False)}
            ap = {"torchvision": average_precision(theirs, family, val_set, True),
                  "detkit": average_precision(ours, family, val_set, False)}
            runs.append({"seed": seed, "first_step": first, "history": history, "ap": ap,
                         "seconds": time.monotonic() - started})
            report(family, runs[-1], args.steps)
            if args.json:  # after every seed: a run cut short keeps the seeds it finished
                results["families"][family] = summary(runs)
                Path(args.json).write_text(json.dumps(results, indent=1))
        results["families"][family] = summary(runs)
        print_summary(family, results["families"][family])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def report(family: str, run: dict, steps: int) -> None:
    first = run["first_step"]
    print(f"\n{family}, seed {run['seed']}: first batch, loss terms (torchvision / detkit):")
    for name in first["detkit"]:
        a, b = first["torchvision"][name], first["detkit"][name]
        print(f"  {name:16s} {a:10.5f} {b:10.5f}   diff {b - a:+.2e}")
    print(f"  gradients: largest difference {first['gradient_max_relative_difference']:.1e} of the tensor's "
          f"largest value, over {first['gradients_compared']} parameters")
    print(f"  {'step':>5s} {'torchvision':>12s} {'detkit':>12s}")
    for step in sorted({0, 1, 4, 9, 24, 49, 99, 149, 199, 299, steps - 1}):
        if step < steps:
            print(f"  {step + 1:5d} {run['history']['torchvision'][step]['total']:12.4f} "
                  f"{run['history']['detkit'][step]['total']:12.4f}")
    print(f"  AP / AP50: torchvision {run['ap']['torchvision']['AP']:.3f} / {run['ap']['torchvision']['AP50']:.3f}, "
          f"detkit {run['ap']['detkit']['AP']:.3f} / {run['ap']['detkit']['AP50']:.3f}  ({run['seconds']:.0f} s)")


def summary(runs: list[dict]) -> dict:
    """Per side: the mean loss of the last tenth of the steps and AP, per seed and their mean."""
    out = {"runs": runs, "sides": {}}
    for side in ("torchvision", "detkit"):
        tail = [float(np.mean([h["total"] for h in r["history"][side][-max(1, len(r["history"][side]) // 10):]]))
                for r in runs]
        out["sides"][side] = {"final_loss": tail, "AP": [r["ap"][side]["AP"] for r in runs],
                              "AP50": [r["ap"][side]["AP50"] for r in runs]}
    return out


def print_summary(family: str, result: dict) -> None:
    def stat(values):
        return f"{np.mean(values):.4f}" + (f" +- {np.std(values, ddof=1):.4f}" if len(values) > 1 else "")

    print(f"\n{family}: over {len(result['runs'])} seed(s)")
    for key in ("final_loss", "AP", "AP50"):
        a, b = result["sides"]["torchvision"][key], result["sides"]["detkit"][key]
        print(f"  {key:10s} torchvision {stat(a)}   detkit {stat(b)}")


if __name__ == "__main__":
    main()
