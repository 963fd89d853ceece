"""A training data stream whose position is a pure function of the iteration, so that
``--resume`` continues with exactly the batches an uninterrupted run would have seen.

detectron2's training loader groups images by aspect ratio *after* loading them, in
the main process, and seeds augmentation per worker: where it stands after k batches
depends on history it does not save. Here the batches of indices are formed from the
sampler's index stream and the images' sizes alone (cheap to replay), and each image's
augmentation is seeded by (stream seed, batch number, position in batch). Resuming at
iteration k replays k batches of indices (no image is read) and goes on from there.
``PairedDataLoader`` steps a source and a target stream together, one batch of each.
"""
import contextlib
import itertools
import logging
import random
from typing import Callable, Iterator, List, Optional

import numpy as np
import torch
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler
from detectron2.utils import comm
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def seeded_rng(seed: int):
    """Seed python, numpy and torch (CPU) inside the block, restore them afterwards."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def batch_index_stream(
    sampler, aspect_groups: Optional[List[int]], batch_size: int
) -> Iterator[List[int]]:
    """Batches of dataset indices: consecutive sampler indices, one batch per aspect
    group when ``aspect_groups`` is given (as detectron2's grouping does)."""
    indices = iter(sampler)
    if aspect_groups is None:
        while True:
            yield list(itertools.islice(indices, batch_size))
    buckets = {}
    for idx in indices:
        bucket = buckets.setdefault(aspect_groups[idx], [])
        bucket.append(idx)
        if len(bucket) == batch_size:
            yield list(bucket)
            bucket.clear()


class _BatchDataset(IterableDataset):
    def __init__(self, dataset_dicts, mapper, make_batches: Callable[[], Iterator[List[int]]], seed: int, start: int):
        self.dataset_dicts = dataset_dicts
        self.mapper = mapper
        self.make_batches = make_batches
        self.seed = seed
        self.start = start

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        batches = itertools.islice(self.make_batches(), self.start, None)
        for number, indices in enumerate(batches, start=self.start):
            # DataLoader takes batches from its workers in turn, so worker w serves
            # batches w, w + n, w + 2n, ... and the order is kept.
            if (number - self.start) % num_workers != worker:
                continue
            out = []
            for pos, idx in enumerate(indices):
                with seeded_rng(hash((self.seed, comm.get_rank(), number, pos)) % 2**31):
                    out.append(self.mapper(dict(self.dataset_dicts[idx])))
            yield out


def _identity(batch):
    return batch


class ResumableTrainLoader:
    """Infinite training batches (lists of mapped dicts), ``batch_size`` per process.

    ``set_start(k)`` before iterating makes the stream begin at its k-th batch; the
    trainer calls it with the iteration it resumes from. ``seed`` fixes the order; it
    is saved in checkpoints so a resumed run uses the same one.
    ``pin_memory`` puts the images in page-locked memory (training on a GPU), so their
    copy to the device is faster and can run asynchronously.
    """

    def __init__(self, dataset_dicts, mapper, *, total_batch_size: int, aspect_ratio_grouping: bool, num_workers: int, seed: int, repeat_factors=None, pin_memory: bool = False):
        world = comm.get_world_size()
        if total_batch_size <= 0 or total_batch_size % world != 0:
            raise ValueError(
                f"Total batch size ({total_batch_size}) must be a positive multiple of the number of processes ({world})."
            )
        self.dataset_dicts = dataset_dicts
        self.mapper = mapper
        self.batch_size = total_batch_size // world
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.repeat_factors = repeat_factors
        self.aspect_groups = (
            [int(d["width"] > d["height"]) if "width" in d and "height" in d else 0 for d in dataset_dicts]
            if aspect_ratio_grouping
            else None
        )
        self.seed = int(seed)
        self.start = 0

    def set_start(self, batch: int):
        self.start = int(batch)

    def _batches(self):
        if self.repeat_factors is not None:
            sampler = RepeatFactorTrainingSampler(self.repeat_factors, seed=self.seed)
        else:
            sampler = TrainingSampler(len(self.dataset_dicts), seed=self.seed)
        return batch_index_stream(sampler, self.aspect_groups, self.batch_size)

    def __iter__(self):
        dataset = _BatchDataset(self.dataset_dicts, self.mapper, self._batches, self.seed, self.start)
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_identity,
            # its own generator: creating the iterator must not consume the global RNG
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=False,
            pin_memory=self.pin_memory,
        )
        return iter(loader)


class PairedDataLoader:
    """Yields ``(source_batch, target_batch)`` from two infinite loaders, one pair a step."""

    def __init__(self, source, target):
        self.source = source
        self.target = target

    def set_start(self, batch: int):
        self.source.set_start(batch)
        self.target.set_start(batch)

    def __iter__(self):
        yield from zip(self.source, self.target)
