"""detkit's detectors side by side, each from its shipped config, on CPU, in one process.

For each config (random weights, the config's own input size and thresholds): inference on one
480 x 640 image and one training step (forward, backward, SGD) on two images with 5 boxes each,
medians of --repeats runs, the detectors taking turns run by run; parameters; GFLOPs
(torch.utils.flop_counter: 2 x multiply-adds) at that input. Torchvision peers, where they
exist, are in tools/bench_models.py.

Usage: python tools/bench_detectors.py [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from detkit.config import load_config
from detkit.engine import prepare

REPO = Path(__file__).resolve().parent.parent
CONFIGS = ["faster_rcnn_r50_fpn", "retinanet_r50_fpn", "ssd300_vgg16", "yolov3_darknet53", "efficientdet_d0"]


def build(name: str):
    """The config's model as ``detkit train`` would start it (``prepare``), without its data."""
    config = load_config(REPO / "configs" / f"{name}.yaml")
    if config["model"].get("backbone", {}).get("weights"):
        config["model"]["backbone"] = {**config["model"]["backbone"], "weights": None}  # random weights: no download
    return prepare(config, data=False, device="cpu").model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 480, 640, generator=g)
    images = [torch.rand(3, 480, 640, generator=g), torch.rand(3, 427, 640, generator=g)]
    xy = torch.rand(2, 5, 2, generator=g) * 300
    targets = [{"boxes": torch.cat([xy[i], xy[i] + 40 + torch.rand(5, 2, generator=g) * 200], 1),
                "labels": torch.randint(0, 80, (5,), generator=g)} for i in range(2)]
    models = {name: build(name) for name in CONFIGS}
    optimizers = {name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-5)
                  for name, m in models.items()}

    def infer(name):
        models[name].eval()
        with torch.no_grad():
            models[name]([image])

    def step(name):
        models[name].train()
        loss = sum(models[name](images, [dict(t) for t in targets]).values())
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    times = {name: {"infer": [], "step": []} for name in CONFIGS}
    for name in CONFIGS:  # warm-up
        infer(name), step(name)
    for _ in range(args.repeats):
        for name in CONFIGS:
            for kind, fn in (("infer", infer), ("step", step)):
                start = time.perf_counter()
                fn(name)
                times[name][kind].append(time.perf_counter() - start)

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads, "
          f"torch {torch.__version__}; one 480 x 640 image (train: 2 images); median of {args.repeats}")
    print("| detector (config) | input | params (M) | GFLOPs | inference (s) | train step (s) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, model in models.items():
        model.eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model([image])
        batch, _ = model.transform([image])
        size = "x".join(str(s) for s in batch.tensors.shape[-2:])
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"| {name} | {size} | {params:.2f} | {counter.get_total_flops() / 1e9:.1f} | "
              f"{statistics.median(times[name]['infer']):.3f} | {statistics.median(times[name]['step']):.3f} |")


if __name__ == "__main__":
    main()
