"""Batching: a collate for images of different sizes, aspect-ratio grouping, the DataLoader.

A batch is a ``Batch``: a list of images (each ``Tensor[3, H, W]``, sizes may differ;
the model's transform resizes and pads them), their targets, and the dataset indices of
the samples that could not be read (``skipped``): the training loop counts and reports
those, so a corrupt file costs one sample, never the run, and never goes unnoticed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Sampler


@dataclass
class Batch:
    images: list[Tensor]
    targets: list[dict]
    indices: list[int]  # dataset index of each sample
    skipped: list[int] = field(default_factory=list)  # dataset indices that could not be read

    def __len__(self) -> int:
        return len(self.images)


class _Indexed(torch.utils.data.Dataset):
    """Wraps a dataset so each sample carries its index (for the skipped list)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return i, self.dataset[i]


def collate(items: list[tuple[int, tuple[Tensor, dict] | None]]) -> Batch:
    """Collate (index, sample) pairs; a ``None`` sample (unreadable image) goes to ``skipped``."""
    batch = Batch([], [], [])
    for i, sample in items:
        if sample is None:
            batch.skipped.append(i)
        else:
            batch.images.append(sample[0])
            batch.targets.append(sample[1])
            batch.indices.append(i)
    return batch


class AspectRatioBatchSampler(BatchSampler):
    """Batches of images on the same side of a 1:1 aspect ratio (portrait or landscape), so
    padding a batch to one size wastes little (torchvision's GroupedBatchSampler idea).

    Args:
        sampler: yields dataset indices (random for training).
        aspect_ratios: width / height of each image of the dataset.
        batch_size: images per batch; the leftovers of each group end the epoch as smaller batches.
    """

    def __init__(self, sampler: Sampler[int], aspect_ratios: Sequence[float], batch_size: int):
        self.sampler = sampler
        self.groups = [int(r >= 1.0) for r in aspect_ratios]
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        waiting: dict[int, list[int]] = {0: [], 1: []}
        for i in self.sampler:
            group = waiting[self.groups[i]]
            group.append(i)
            if len(group) == self.batch_size:
                yield list(group)
                group.clear()
        for group in waiting.values():
            if group:
                yield group

    def __len__(self) -> int:
        counts = [0, 0]
        for i in self.sampler:
            counts[self.groups[i]] += 1
        return sum(math.ceil(c / self.batch_size) for c in counts)


def make_loader(
    dataset,
    *,
    batch_size: int,
    shuffle: bool,
    workers: int = 0,
    group_aspect_ratio: bool = False,
    sampler: Sampler[int] | None = None,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader of ``Batch`` es.

    Args:
        dataset: a ``DetectionDataset`` (or anything with that sample schema).
        batch_size: images per batch.
        shuffle: random order (ignored when ``sampler`` is given).
        workers: loader processes (0: load in the main process).
        group_aspect_ratio: batch portrait and landscape images apart (needs
            ``dataset.aspect_ratios()``).
        sampler: an explicit index sampler (e.g. a DistributedSampler).
        generator: the random generator of the shuffle, for reproducible order.
    """
    if sampler is None:
        sampler = (
            torch.utils.data.RandomSampler(dataset, generator=generator)
            if shuffle
            else torch.utils.data.SequentialSampler(dataset)
        )
    if group_aspect_ratio:
        batch_sampler = AspectRatioBatchSampler(sampler, dataset.aspect_ratios(), batch_size)
    else:
        batch_sampler = BatchSampler(sampler, batch_size, drop_last=False)
    return DataLoader(
        _Indexed(dataset),
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
    )
