"""Benchmark detkit.ops' suppressors against their peers, side by side in one process, on CPU.

Peers: torchvision.ops.nms / batched_nms (C++), ensemble-boxes' soft_nms (numpy, the
pip package ensemble-boxes). Every row checks that both give the same kept boxes, then
prints the median time of each and the ratio peer / detkit (above 1: detkit is faster).

Box distributions:
  uniform    corners uniform on a 1000 x 1000 canvas, sides uniform in [1, 100) px
  clustered  detector-like: jittered boxes around 50 objects (sizes 10-200 px), as a
             detector's raw output before post-processing

Usage: python tools/bench_ops.py [--repeats R] [--markdown]
Method and results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torchvision

import detkit.ops as ops


def uniform(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = 1 + torch.rand(n, 2, generator=g) * 99
    scores = (torch.randperm(n, generator=g).float() + 1) / (n + 1)  # no ties
    return torch.cat([xy, xy + wh], 1), scores


def clustered(n: int, seed: int, objects: int = 50):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(objects, 2, generator=g) * 1000
    sizes = 10 + torch.rand(objects, 2, generator=g) * 190
    which = torch.randint(0, objects, (n,), generator=g)
    c = centres[which] + sizes[which] * 0.1 * torch.randn(n, 2, generator=g)
    wh = sizes[which] * (1 + 0.15 * torch.randn(n, 2, generator=g)).abs()
    scores = (torch.randperm(n, generator=g).float() + 1) / (n + 1)
    return torch.cat([c - wh / 2, c + wh / 2], 1), scores


DISTRIBUTIONS = {"uniform": uniform, "clustered": clustered}


def timed(fn, repeats: int) -> float:
    """Median wall time of fn() in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def first_call_seconds() -> tuple[float, float]:
    """In a fresh interpreter with torch and torchvision imported: seconds to import detkit.ops,
    and seconds of its first nms + soft_nms calls (a JIT would pay its compile here)."""
    code = (
        "import time, torch, torchvision; t0 = time.perf_counter(); import detkit.ops as o; "
        "t1 = time.perf_counter(); b = torch.rand(100, 4).sort(1).values; s = torch.rand(100); "
        "o.nms(b, s, 0.5); o.soft_nms(b, s); print(t1 - t0, time.perf_counter() - t1)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, called = out.stdout.split()
    return float(imported), float(called)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per row (median reported)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()

    rows = []

    def row(name, dist, n, ours, peer_name, peer, same):
        t_ours, t_peer = timed(ours, args.repeats), timed(peer, args.repeats)
        rows.append((name, dist, n, peer_name, t_peer, t_ours, t_peer / t_ours, same))

    for dist, make in DISTRIBUTIONS.items():
        for n in (1000, 5000, 20000):
            boxes, scores = make(n, seed=n)
            same = torch.equal(ops.nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))
            row("nms", dist, n, lambda: ops.nms(boxes, scores, 0.5), "torchvision.ops.nms",
                lambda: torchvision.ops.nms(boxes, scores, 0.5), same)

    for dist, make in DISTRIBUTIONS.items():
        n = 10_000
        boxes, scores = make(n, seed=7)
        idxs = torch.randint(0, 80, (n,), generator=torch.Generator().manual_seed(8))
        same = torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5), torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))
        row("batched_nms (80 classes)", dist, n, lambda: ops.batched_nms(boxes, scores, idxs, 0.5),
            "torchvision.ops.batched_nms", lambda: torchvision.ops.batched_nms(boxes, scores, idxs, 0.5), same)

    try:
        from ensemble_boxes.ensemble_boxes_nms import cpu_soft_nms_float
    except ImportError:
        cpu_soft_nms_float = None
        print("ensemble-boxes is not installed (pip install ensemble-boxes): Soft-NMS rows skipped")
    if cpu_soft_nms_float is not None:
        for dist, make in DISTRIBUTIONS.items():
            n = 5000
            boxes, scores = make(n, seed=11)
            boxes = (boxes.clamp(0, 1100) / 1100).double()  # ensemble-boxes takes normalised boxes
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores = boxes[valid], scores[valid].double()  # each kept box keeps its own score
            dets = boxes.numpy()[:, [1, 0, 3, 2]].copy()  # its columns are (y1, x1, y2, x2)

            def peer():
                return cpu_soft_nms_float(dets.copy(), scores.numpy().copy(), Nt=0.3, sigma=0.5, thresh=0.001, method=2)

            keep, _ = ops.soft_nms(boxes, scores, method="gaussian", sigma=0.5)
            same = sorted(keep.tolist()) == sorted(peer().tolist())
            row("soft_nms gaussian", dist, len(boxes), lambda: ops.soft_nms(boxes, scores), "ensemble_boxes soft_nms",
                peer, same)

    # suppressors no peer ships: absolute times
    alone = []
    for dist, make in DISTRIBUTIONS.items():
        n = 5000
        boxes, scores = make(n, seed=13)
        densities = torch.rand(n, generator=torch.Generator().manual_seed(14))
        alone.append(("adaptive_nms", dist, n, timed(lambda: ops.adaptive_nms(boxes, scores, densities, 0.5), args.repeats)))
        alone.append(("diou_nms", dist, n, timed(lambda: ops.diou_nms(boxes, scores, 0.5), args.repeats)))
        alone.append(("soft_nms linear", dist, n, timed(lambda: ops.soft_nms(boxes, scores, method="linear"), args.repeats)))

    first = first_call_seconds()
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), torchvision {torchvision.__version__}, "
          f"python {platform.python_version()}; median of {args.repeats} calls")
    if args.markdown:
        print("| op | boxes | N | peer | peer ms | detkit ms | speed-up | same output |")
        print("|---|---|---:|---|---:|---:|---:|---|")
        for name, dist, n, peer_name, tp, to, ratio, same in rows:
            print(f"| {name} | {dist} | {n:,} | {peer_name} | {tp:.2f} | {to:.2f} | {ratio:.1f}x | {'yes' if same else 'NO'} |")
        print()
        print("| op (no peer) | boxes | N | detkit ms |")
        print("|---|---|---:|---:|")
        for name, dist, n, t in alone:
            print(f"| {name} | {dist} | {n:,} | {t:.2f} |")
    else:
        print(f"{'op':26} {'boxes':10} {'N':>6}  {'peer':28} {'peer ms':>9} {'detkit ms':>10} {'ratio':>7}  same")
        for name, dist, n, peer_name, tp, to, ratio, same in rows:
            print(f"{name:26} {dist:10} {n:>6}  {peer_name:28} {tp:9.2f} {to:10.2f} {ratio:6.1f}x  {same}")
        for name, dist, n, t in alone:
            print(f"{name:26} {dist:10} {n:>6}  {'(no peer)':28} {'':9} {t:10.2f}")
    print(f"\nfresh process: import detkit.ops {first[0] * 1e3:.1f} ms (torch and torchvision already imported); "
          f"first nms + soft_nms calls {first[1] * 1e3:.1f} ms (compiled ahead, no JIT)")
    if not all(r[-1] for r in rows):
        sys.exit("some rows gave different outputs")


if __name__ == "__main__":
    main()
