"""The quickstart against torchvision's Faster R-CNN: same data, same minutes, same machine.

Trains torchvision's ``FasterRCNN`` with a ResNet-18 + FPN backbone (torchvision's
``resnet_fpn_backbone``, random init, all layers trainable, BatchNorm) and its own detection
defaults (3 anchors per cell per level, 512 sampled RoIs, a 1024-wide box head) on the
quickstart's synthetic training set, with the quickstart's optimizer, learning-rate schedule,
batch size, input size and time budget, then evaluates it with COCO mAP on the same
validation split. detkit's figure is the quickstart's own (``detkit quickstart``, read from
its run folder).

Usage: python tools/bench_quickstart.py [--minutes 7.5] [--detkit-run runs/quickstart]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from detkit.config import load_config
from detkit.engine import prepare
from detkit.engine.distributed import World
from detkit.engine.loop_data import EpochBatches, loader
from detkit.evaluation import detections_to_results, evaluate

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=None, help="budget (default: the quickstart's)")
    parser.add_argument("--detkit-run", default="runs/quickstart", help="the quickstart's run folder")
    args = parser.parse_args()
    config = load_config(REPO / "configs" / "quickstart.yaml")
    cfg, data = config["train"], config["data"]
    minutes = args.minutes or cfg["time_limit_min"]
    run = prepare(config, model=False)  # the quickstart's data, exactly as detkit train reads it
    train_set, val_set = run.train_set, run.val_set
    torch.manual_seed(cfg["seed"])
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                   norm_layer=torch.nn.BatchNorm2d)
    model = FasterRCNN(backbone, num_classes=len(run.class_names) + 1, min_size=256, max_size=256)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg["optimizer"]["lr"], weight_decay=cfg["optimizer"]["weight_decay"])
    steps_per_epoch = len(EpochBatches(train_set, data["batch_size"], seed=cfg["seed"], epoch=0, shuffle=True,
                                       group_aspect_ratio=True, world=World()))
    total, warmup = steps_per_epoch * cfg["epochs"], cfg["schedule"]["warmup_iters"]
    factor = cfg["schedule"]["warmup_factor"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (
        factor + (1 - factor) * s / warmup if s < warmup else 1.0) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    started, step = time.monotonic(), 0
    model.train()
    for epoch in range(cfg["epochs"]):
        train_set.epoch = epoch
        batches = EpochBatches(train_set, data["batch_size"], seed=cfg["seed"], epoch=epoch, shuffle=True,
                               group_aspect_ratio=True, world=World())
        for batch in loader(train_set, batches, data["workers"], cfg["seed"] + epoch):
            images = [img.float() / 255 for img in batch.images]
            targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in batch.targets]
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % 50 == 0:
                print(f"step {step}/{total}  loss {loss.item():.3f}  {time.monotonic() - started:.0f} s", flush=True)
            if time.monotonic() - started > 60 * minutes:
                break
        if time.monotonic() - started > 60 * minutes:
            break
    model.eval()
    detections = []
    with torch.no_grad():
        for i in range(len(val_set)):
            image, target = val_set[i]
            det = model([image.float() / 255])[0]
            detections.append((target["image_id"], {**det, "labels": det["labels"] - 1}))
    theirs = evaluate(val_set.index, detections_to_results(detections, val_set.index.category_ids)).stats
    ours = {}
    metrics = Path(args.detkit_run) / "metrics.jsonl"
    if metrics.is_file():
        evaluations = [json.loads(line) for line in metrics.read_text().splitlines() if "val/AP" in line]
        ours = {k[4:]: v for k, v in evaluations[-1].items() if k.startswith("val/")} if evaluations else {}
    print(f"torchvision Faster R-CNN R18-FPN: {step} steps in {minutes} min: AP {theirs['AP']:.3f}, "
          f"AP50 {theirs['AP50']:.3f}")
    if ours:
        print(f"detkit quickstart ({metrics}): AP {ours['AP']:.3f}, AP50 {ours['AP50']:.3f}")
    print(json.dumps({"torchvision": theirs, "detkit": ours, "torchvision_steps": step,
                      "torch": torch.__version__, "torchvision_version": torchvision.__version__}))


if __name__ == "__main__":
    main()
