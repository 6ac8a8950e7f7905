"""Benchmark detkit's Faster R-CNN or RetinaNet R50-FPN against torchvision's, side by side in one
process, on CPU.

Both models carry the same weights (detkit's is made by ``from_torchvision`` from
torchvision's randomly initialised one) and the same settings (input size, thresholds),
so they compute the same detections; the script checks that, then times:

  inference   eval-mode forward of one image, median of --repeats runs
  train step  forward + backward + SGD step on a batch of 2 images with 5 boxes each
(the two models alternate, run by run, so the machine's drifts hit both alike)

and counts parameters and GFLOPs (torch.utils.flop_counter, multiply-adds x 2, at the
benchmark's input size and at torchvision's published setting) next to torchvision's
published figures (Faster R-CNN: 41.8 M and 134.4 GFLOPs; RetinaNet: 34.0 M and 151.5).

Usage: python tools/bench_models.py [--model retinanet_resnet50_fpn] [--size 512] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from detkit.models import from_torchvision

# torchvision's published (parameters in M, GFLOPs at 800 x 1333) and the label shift to detkit's
# labels (Faster R-CNN's class 0 is the background; RetinaNet has none)
# (SSD300's input is always 300 x 300: its published GFLOPs are at that size)
MODELS = {"fasterrcnn_resnet50_fpn": (41.8, 134.4, 1), "retinanet_resnet50_fpn": (34.0, 151.5, 0),
          "ssd300_vgg16": (35.6, 34.9, 1)}


def timed_pair(a, b, repeats: int) -> tuple[float, float]:
    """Median seconds of a() and b(), called alternately so that drifts in the machine's speed
    (other processes, clocks) hit both alike."""
    a(), b()  # warm-up
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((a, times_a), (b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def gflops(model, images) -> float:
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(images)
    return counter.get_total_flops() / 1e9


def train_step(model, images, targets, labels_offset: int):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        model.train()
        batch_targets = [{"boxes": t["boxes"], "labels": t["labels"] - labels_offset} for t in targets]
        losses = model(images, batch_targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(MODELS), default="fasterrcnn_resnet50_fpn")
    parser.add_argument("--size", type=int, default=512, help="shorter side of the resized input (torchvision: 800)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fixed = args.model.startswith("ssd")  # SSD300 resizes every image to 300 x 300
    if fixed:
        args.size = 300
    max_size = round(args.size * 1333 / 800)
    sizes = {} if fixed else {"min_size": args.size, "max_size": max_size}
    published_params, published_flops, label_shift = MODELS[args.model]
    reference = getattr(torchvision.models.detection, args.model)(
        weights=None, weights_backbone=None, **sizes
    )
    model = from_torchvision(args.model, reference.state_dict())
    if not fixed:
        model.transform.min_size, model.transform.max_size = (args.size,), max_size
    image = torch.rand(3, 480, 640)
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 480, 640, generator=g), torch.rand(3, 427, 640, generator=g)]
    xy = torch.rand(2, 5, 2, generator=g) * 300
    targets = [{"boxes": torch.cat([xy[i], xy[i] + 40 + torch.rand(5, 2, generator=g) * 200], 1),
                "labels": torch.randint(1, 91, (5,), generator=g)} for i in range(2)]

    reference.eval()
    model.eval()
    with torch.no_grad():
        same = [len(a["boxes"]) == len(b["boxes"]) for a, b in zip(reference([image]), model([image]))]

    with torch.no_grad():
        t_ref, t_ours = timed_pair(lambda: reference([image]), lambda: model([image]), args.repeats)
    s_ref, s_ours = timed_pair(train_step(reference, images, targets, 0), train_step(model, images, targets, label_shift),
                               max(3, args.repeats // 2))
    params_ref = sum(p.numel() for p in reference.parameters())
    params_ours = sum(p.numel() for p in model.parameters())
    flops_ref, flops_ours = gflops(reference, [image]), gflops(model, [image])
    big = torch.rand(3, 800, 1333)  # COCO-typical: 800 x 1333 after resizing
    if not fixed:
        reference.transform.min_size, reference.transform.max_size = (800,), 1333
        model.transform.min_size, model.transform.max_size = (800,), 1333
    flops_ref_800, flops_ours_800 = gflops(reference, [big]), gflops(model, [big])
    big_name = "300 x 300" if fixed else "800 x 1333"

    print(f"# {args.model}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads, "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}; input 480x640 resized to "
          f"{'300 x 300' if fixed else f'{args.size} (max {max_size})'}; median of {args.repeats}")
    print("| | torchvision | detkit | detkit / torchvision |")
    print("|---|---:|---:|---:|")
    print(f"| inference, 1 image (s) | {t_ref:.3f} | {t_ours:.3f} | {t_ours / t_ref:.2f} |")
    print(f"| train step, 2 images (s) | {s_ref:.3f} | {s_ours:.3f} | {s_ours / s_ref:.2f} |")
    print(f"| parameters (M) | {params_ref / 1e6:.2f} (published {published_params}) | {params_ours / 1e6:.2f} | "
          f"{params_ours / params_ref:.3f} |")
    if not fixed:
        print(f"| GFLOPs at {args.size} px | {flops_ref:.1f} | {flops_ours:.1f} | {flops_ours / flops_ref:.3f} |")
    print(f"| GFLOPs at {big_name} | {flops_ref_800:.1f} (published {published_flops}) | {flops_ours_800:.1f} | "
          f"{flops_ours_800 / flops_ref_800:.3f} |")
    print(f"same number of detections: {all(same)}")
    if args.model.startswith("retinanet"):
        efficientdet_row(image, images, targets, args.repeats)


def efficientdet_row(image, images, targets, repeats: int) -> None:
    """detkit's EfficientDet-D0 (90 classes, its own 512-px input) on the same images: no peer
    in torchvision, shown beside RetinaNet for scale."""
    from detkit.models import build_model

    model = build_model({"type": "efficientdet", "scale": "d0", "num_classes": 90})
    model.eval()
    with torch.no_grad():
        t, _ = timed_pair(lambda: model([image]), lambda: None, repeats)
    s, _ = timed_pair(train_step(model, images, targets, 0), lambda: None, max(3, repeats // 2))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"EfficientDet-D0 (detkit, 512 px): inference {t:.3f} s, train step {s:.3f} s, {params:.2f} M parameters "
          f"(paper 3.9), {gflops(model, [image]):.2f} GFLOPs (paper 2.5)")


if __name__ == "__main__":
    main()
