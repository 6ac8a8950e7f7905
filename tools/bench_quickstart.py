"""The quickstart against torchvision's Faster R-CNN: same data, same steps, same machine.

Trains torchvision's ``FasterRCNN`` (random init, every layer trainable, BatchNorm) on the
quickstart's synthetic training set for the quickstart's number of steps (``train.max_iters``),
with its optimizer, learning-rate schedule, batch, data order, input size and gradient
clipping, then evaluates it with COCO mAP on the same validation split.

Two set-ups of the peer:

- ``matched`` (the default), as a torchvision user would tune it for this data, through
  torchvision's own arguments: the quickstart's anchors (fitted to the shapes by
  ``detkit data stats --anchors``), a 64-channel FPN (``BackboneWithFPN``) on ResNet-18, a
  256-wide two-layer box head, 128 sampled RoIs per image and the quickstart's proposal
  counts. The two models then have the same architecture: what differs is the code.
- ``defaults``: torchvision's detection defaults (256-channel FPN, 1024-wide box head, 512
  RoIs, anchors 32-512 px): about 6x the compute per step here.

detkit's figure is the quickstart's own (``detkit quickstart``, read from its run folder's
metrics at the same step).

Usage: python tools/bench_quickstart.py [--setup matched|defaults] [--steps N] [--detkit-run runs/quickstart]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torchvision
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from detkit.config import load_config
from detkit.engine import prepare
from detkit.engine.distributed import World
from detkit.engine.loop_data import EpochBatches, loader
from detkit.evaluation import detections_to_results, evaluate

REPO = Path(__file__).resolve().parent.parent


def peer(config: dict, num_classes: int, setup: str) -> FasterRCNN:
    """torchvision's Faster R-CNN for the quickstart's data (module docstring)."""
    size = config["model"]["transform"]["min_size"]
    if setup == "defaults":
        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                       norm_layer=torch.nn.BatchNorm2d)
        return FasterRCNN(backbone, num_classes=num_classes + 1, min_size=size, max_size=size)
    model, rpn, roi = config["model"], config["model"]["rpn"], config["model"]["roi_heads"]
    width, hidden = model["neck"]["out_channels"], roi["box_head"]["representation"]
    backbone = BackboneWithFPN(resnet18(weights=None, norm_layer=torch.nn.BatchNorm2d),
                               {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}, [64, 128, 256, 512],
                               width, extra_blocks=LastLevelMaxPool())
    anchors = AnchorGenerator(tuple(tuple(level) for level in rpn["anchor_sizes"]),
                              (tuple(rpn["aspect_ratios"]),) * len(rpn["anchor_sizes"]))
    (pre_train, pre_test), (post_train, post_test) = rpn["pre_nms_top_n"], rpn["post_nms_top_n"]
    return FasterRCNN(backbone, min_size=size, max_size=size, rpn_anchor_generator=anchors,
                      rpn_pre_nms_top_n_train=pre_train, rpn_pre_nms_top_n_test=pre_test,
                      rpn_post_nms_top_n_train=post_train, rpn_post_nms_top_n_test=post_test,
                      box_head=TwoMLPHead(width * 7 * 7, hidden), box_predictor=FastRCNNPredictor(hidden, num_classes + 1),
                      box_batch_size_per_image=roi["batch_per_image"])


def detkit_at(run: Path, step: int) -> dict:
    """The quickstart's validation numbers at ``step`` (its metrics.jsonl), or {}."""
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return {}
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    evaluations = [r for r in rows if "val/AP" in r and r.get("step", step) <= step]
    return {k[4:]: v for k, v in evaluations[-1].items() if k.startswith("val/")} if evaluations else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", choices=["matched", "defaults"], default="matched")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the quickstart's max_iters)")
    parser.add_argument("--detkit-run", default="runs/quickstart", help="the quickstart's run folder")
    args = parser.parse_args()
    config = load_config(REPO / "configs" / "quickstart.yaml")
    cfg, data = config["train"], config["data"]
    steps = args.steps or cfg["max_iters"]
    run = prepare(config, model=False)  # the quickstart's data, exactly as detkit train reads it
    train_set, val_set = run.train_set, run.val_set
    torch.manual_seed(cfg["seed"])
    model = peer(config, len(run.class_names), args.setup)
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
            if cfg.get("clip_grad_norm"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip_grad_norm"])
            optimizer.step()
            schedule.step()
            step += 1
            if step % 50 == 0:
                print(f"step {step}/{steps}  loss {loss.item():.3f}  {time.monotonic() - started:.0f} s", flush=True)
            if step >= steps:
                break
        if step >= steps:
            break
    seconds = time.monotonic() - started
    model.eval()
    detections = []
    with torch.no_grad():
        for i in range(len(val_set)):
            image, target = val_set[i]
            det = model([image.float() / 255])[0]
            detections.append((target["image_id"], {**det, "labels": det["labels"] - 1}))
    theirs = evaluate(val_set.index, detections_to_results(detections, val_set.index.category_ids)).stats
    ours = detkit_at(Path(args.detkit_run), step)
    print(f"torchvision Faster R-CNN R18-FPN ({args.setup}): {step} steps in {seconds / 60:.1f} min: "
          f"AP {theirs['AP']:.3f}, AP50 {theirs['AP50']:.3f}")
    if ours:
        print(f"detkit quickstart ({args.detkit_run}): AP {ours['AP']:.3f}, AP50 {ours['AP50']:.3f}")
    print(json.dumps({"torchvision": theirs, "detkit": ours, "steps": step, "setup": args.setup,
                      "torchvision_seconds": round(seconds, 1), "torch": torch.__version__,
                      "torchvision_version": torchvision.__version__}))


if __name__ == "__main__":
    main()
