"""The data a run reads: datasets from config (the synthetic one generated on first use),
and a batch sampler whose order is a function of (seed, epoch) alone.

Because the order of an epoch, the augmentation of each sample (seeded by seed, epoch and
index) and the batches of each process are all derived, never accumulated, a run resumed
at batch k of epoch e sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from detkit.data import DetectionDataset, build_transforms, collate, open_dataset
from detkit.data.collate import _Indexed
from detkit.data.records import DatasetIndex
from detkit.engine.distributed import World, barrier


def resolve_datasets(config: Mapping) -> tuple[DatasetIndex, DatasetIndex | None]:
    """(train index, val index) from ``config["data"]``; a ``synthetic`` entry generates the
    built-in dataset on first use (train and val from different seeds) and reads it."""
    data = config["data"]
    if data.get("synthetic"):
        from detkit.data.synthetic import generate

        synth = dict(data["synthetic"])
        unknown = set(synth) - {"out", "images", "val_images", "size", "seed", "crowded"}
        if unknown:
            raise ValueError(f"data.synthetic: unknown keys {sorted(unknown)} "
                             "(known: out, images, val_images, size, seed, crowded)")
        out = Path(synth.get("out", "data/shapes"))
        seed, size, crowded = synth.get("seed", 0), synth.get("size", 256), synth.get("crowded", False)
        train_json = generate(out / "train", synth.get("images", 1000), seed, size=size, crowded=crowded, progress=True)
        val_json = generate(out / "val", synth.get("val_images", 200), seed + 1, size=size, crowded=crowded,
                            progress=True)
        return open_dataset(train_json), open_dataset(val_json)
    if not data.get("train"):
        raise ValueError("data.train is required (a dataset: {path: ...}), or data.synthetic")
    train = _open(data["train"], "data.train")
    val = _open(data["val"], "data.val") if data.get("val") else None
    if val is not None and val.class_names != train.class_names:
        raise ValueError(f"data.val has classes {val.class_names[:5]}... but data.train {train.class_names[:5]}...")
    return train, val


def resolve_datasets_once(config: Mapping, world: World) -> tuple[DatasetIndex, DatasetIndex | None]:
    """``resolve_datasets`` in every process of ``world``, the main one first: a synthetic
    dataset is generated once, by it, while the others wait at a barrier and then read it."""
    if world.main:
        indices = resolve_datasets(config)
    barrier(world)
    if not world.main:
        indices = resolve_datasets(config)
    return indices


def _open(entry, where: str) -> DatasetIndex:
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, Mapping) or "path" not in entry:
        raise ValueError(f"{where} must be a path or {{path: ..., split: ..., names: ...}}, got {entry!r}")
    unknown = set(entry) - {"path", "split", "names", "image_root", "format"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: path, split, names, image_root, format)")
    path = Path(entry["path"])
    if not path.exists():
        raise ValueError(f"{where}.path: {path} does not exist")
    names = entry.get("names")
    if isinstance(names, str) and Path(names).is_file():
        names = [n.strip() for n in Path(names).read_text().splitlines() if n.strip()]
    index = open_dataset(path, split=entry.get("split"), names=names, image_root=entry.get("image_root"),
                         format=entry.get("format"))
    if not index.records:
        raise ValueError(f"{where}: the dataset {path} has no images")
    return index


class SeededDataset(DetectionDataset):
    """A DetectionDataset whose augmentation of sample i in epoch e depends on (seed, e, i) only."""

    def __init__(self, index, transforms, *, seed: int, keep_crowd: bool = False):
        super().__init__(index, transforms, keep_crowd=keep_crowd)
        self.seed, self.epoch = seed, 0

    def __getitem__(self, i: int):
        if self.transforms is not None and self.transforms.compose is not None:
            seed = int(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0])
            self.transforms.compose.set_random_seed(seed)
        return super().__getitem__(i)


class EpochBatches(Sampler[list[int]]):
    """The batches of one process for one epoch: a permutation seeded by (seed, epoch),
    optionally grouped by aspect ratio, cut into batches, dealt round-robin to the processes,
    starting at batch ``start`` (to resume mid-epoch).
    """

    def __init__(self, dataset: DetectionDataset, batch_size: int, *, seed: int, epoch: int, shuffle: bool,
                 group_aspect_ratio: bool, world: World, start: int = 0):
        self.dataset, self.batch_size = dataset, batch_size
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        self.group = group_aspect_ratio
        self.world, self.start = world, start

    def all_batches(self) -> list[list[int]]:
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)).tolist()
        else:
            order = list(range(n))
        if not self.group:
            batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        else:
            landscape = [r >= 1.0 for r in self.dataset.aspect_ratios()]
            batches, waiting = [], {False: [], True: []}
            for i in order:
                group = waiting[landscape[i]]
                group.append(i)
                if len(group) == self.batch_size:
                    batches.append(list(group))
                    group.clear()
            batches += [g for g in waiting.values() if g]
        # every process gets the same number of batches (DDP steps in lockstep): drop the remainder
        usable = len(batches) - len(batches) % self.world.size if self.world.size > 1 else len(batches)
        return batches[self.world.rank:usable:self.world.size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.all_batches()[self.start:])

    def __len__(self) -> int:
        return max(0, len(self.all_batches()) - self.start)


GEOMETRY = ("resize", "size", "letterbox")  # the input size: the model's transform alone sets it in a run


def check_no_geometry(data: Mapping) -> None:
    """A run's input size is set in one place, ``model.transform``; resizing in the data
    transforms as well would resize twice (and pad two ways)."""
    for key in ("train_transforms", "eval_transforms"):
        for option in GEOMETRY:
            if (data.get(key) or {}).get(option) is not None:
                raise ValueError(
                    f"data.{key}.{option}: a run's input size is set once, in model.transform (min_size, max_size, "
                    "size_divisible, fixed_size; e.g. {min_size: 416, max_size: 416, size_divisible: 416} "
                    "letterboxes to 416 x 416, the image top-left, padded right and bottom); remove it here")


def make_datasets(config: Mapping, train_index: DatasetIndex, val_index: DatasetIndex | None):
    """(training set, evaluation set or None) with the config's augmentation; the resizing is the model's."""
    data, seed = config["data"], config["train"]["seed"]
    check_no_geometry(data)
    train = SeededDataset(train_index, build_transforms(data["train_transforms"], train=True,
                                                        where="data.train_transforms"), seed=seed)
    val = None
    if val_index is not None:
        val = DetectionDataset(val_index, build_transforms(data["eval_transforms"], train=False,
                                                           where="data.eval_transforms"), keep_crowd=True)
    return train, val


def loader(dataset, sampler: Sampler, workers: int, seed: int = 0) -> DataLoader:
    """A DataLoader with its own generator: creating its iterator draws worker seeds from it, not
    from torch's global generator, so the model's random draws do not depend on when an epoch
    (or a resumed run) started."""
    return DataLoader(_Indexed(dataset), batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed),
                      worker_init_fn=ignore_interrupts if workers else None)


def ignore_interrupts(worker_id: int) -> None:
    """Loader processes leave Ctrl-C to the training process, which finishes its step and saves
    (a worker that died of the SIGINT sent to the whole terminal would fail that step)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
