"""What a model costs: parameters, GFLOPs at its input, and latency per image.

Latency is the wall time of ``model([image])`` in eval mode (resizing, the network, decoding
and suppression; batch 1), on each of the same images for every model. The models take
turns image by image, so a drift in the machine's speed (another process, clocks, heat)
hits all of them alike; each gets ``warmup`` untimed calls first. The spread of the
per-image times (quartiles) is reported with the median: it is the noise of the number.
"""

from __future__ import annotations

import statistics
import time
from typing import Mapping

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def gflops(model: torch.nn.Module, image: torch.Tensor) -> float:
    """2 x multiply-adds of one eval-mode forward on ``image`` (torch.utils.flop_counter), in billions."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model([image])
    return counter.get_total_flops() / 1e9


def input_size(model: torch.nn.Module, image: torch.Tensor) -> list[int]:
    """(height, width) of the padded tensor the network sees for ``image``."""
    batch, _ = model.transform([image])
    return [int(s) for s in batch.tensors.shape[-2:]]


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def latency(models: Mapping[str, torch.nn.Module], images: list[torch.Tensor], *, device: str = "cpu",
            warmup: int = 3) -> dict[str, dict]:
    """Per model: median and quartiles of the milliseconds per image over ``images``, and FPS.

    Models stay on their device and are put back on it (the images are moved once)."""
    if not images:
        raise ValueError("latency needs at least one image")
    images = [img.to(device) for img in images]
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()
        for i in range(warmup):
            model([images[i % len(images)]])
    for image in images:
        for name, model in models.items():
            _synchronize(device)
            start = time.perf_counter()
            model([image])
            _synchronize(device)
            times[name].append(1000 * (time.perf_counter() - start))
    out = {}
    for name, ms in times.items():
        q25, q75 = np.percentile(ms, [25, 75])
        median = statistics.median(ms)
        out[name] = {"median_ms": median, "q25_ms": float(q25), "q75_ms": float(q75), "fps": 1000 / median,
                     "images": len(ms), "device": device}
    return out
