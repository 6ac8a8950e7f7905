"""Benchmark data loading: detkit's dataset against torchvision's CocoDetection, same loader.

Both read coco128 (128 COCO train images, COCO json), decode each image, letterbox it to
640 px (longest side 640, padded to 640 x 640) with its boxes, and batch it through a
torch DataLoader with the same number of workers and batch size. Reports images/s over
several epochs after a warm-up epoch.

Usage: python tools/bench_data.py [--workers 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
COCO128 = REPO.parent / "shared" / "data" / "coco128"


def detkit_loader(workers: int, batch_size: int, train: bool):
    from detkit.data import DetectionDataset, eval_transforms, make_loader, open_dataset, train_transforms

    index = open_dataset(COCO128 / "annotations" / "instances_train2017.json")
    transforms = train_transforms(letterbox=640) if train else eval_transforms(letterbox=640)
    return make_loader(DetectionDataset(index, transforms), batch_size=batch_size, shuffle=False, workers=workers)


def torchvision_loader(workers: int, batch_size: int, train: bool):
    import torchvision
    from torchvision.transforms import v2

    steps = [v2.Resize(size=None, max_size=640), v2.CenterCrop(640)]  # CenterCrop pads a smaller image
    if train:
        steps = [v2.RandomHorizontalFlip(), v2.RandomAffine(degrees=0, scale=(0.8, 1.25)),
                 v2.ColorJitter(0.2, 0.2, 0.2, 0.02), *steps]
    dataset = torchvision.datasets.CocoDetection(
        str(COCO128 / "images" / "train2017"), str(COCO128 / "annotations" / "instances_train2017.json"),
        transforms=v2.Compose([v2.ToImage(), *steps, v2.ToPureTensor()]),
    )
    dataset = torchvision.datasets.wrap_dataset_for_transforms_v2(dataset, target_keys=("boxes", "labels", "image_id"))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                       collate_fn=lambda items: tuple(zip(*items)), persistent_workers=workers > 0)


def images_per_second(loader, epochs: int) -> float:
    for _ in loader:  # warm-up: worker start, file cache
        pass
    start, n = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            n += len(batch.images) if hasattr(batch, "images") else len(batch[0])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    import contextlib
    import io

    print(f"coco128 (128 images), letterbox 640, {args.workers} workers, batch {args.batch_size}, "
          f"{args.epochs} epochs after a warm-up")
    for train in (False, True):
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints while indexing
            ours = detkit_loader(args.workers, args.batch_size, train)
            theirs = torchvision_loader(args.workers, args.batch_size, train)
        a, b = images_per_second(ours, args.epochs), images_per_second(theirs, args.epochs)
        kind = "train (flip, scale, colour, letterbox)" if train else "eval (letterbox)"
        print(f"{kind:40} detkit {a:6.1f} img/s   torchvision {b:6.1f} img/s   ratio {a / b:4.2f}")


if __name__ == "__main__":
    main()
