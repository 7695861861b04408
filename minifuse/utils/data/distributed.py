"""``DistributedSampler``: each rank reads its own shard of the dataset's indices (PyTorch's rules).

The indices 0..n-1 (shuffled with ``seed + epoch`` when ``shuffle``) are made a multiple of the
number of replicas, by repeating indices from the start (padding) or, with ``drop_last``, by
dropping the tail; rank r takes every ``num_replicas``-th index from r. So every rank gets the same
number of samples, and together, in one epoch, the ranks read every sample (some twice when padded).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["DistributedSampler"]


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"DistributedSampler: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


class DistributedSampler:
    """Yields this rank's indices into ``dataset`` (anything with ``len``).

    num_replicas / rank default to the process group's world size and rank. Call
    ``set_epoch(epoch)`` before each epoch for a new shuffle that all ranks agree on.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        from ... import distributed as dist
        if num_replicas is None:
            num_replicas = dist.get_world_size()
        if rank is None:
            rank = dist.get_rank()
        self.num_replicas = _check_int("num_replicas", num_replicas, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"DistributedSampler: rank must be in 0..{self.num_replicas - 1}, got {rank}")
        try:
            n = len(dataset)
        except TypeError:
            raise TypeError(f"DistributedSampler: argument 'dataset' must have a length, got "
                            f"{type(dataset).__name__}") from None
        self.dataset, self.shuffle, self.drop_last = dataset, bool(shuffle), bool(drop_last)
        self.seed, self.epoch = _check_int("seed", seed, 0), 0
        if self.drop_last:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch):
        """The epoch whose shuffle ``__iter__`` yields (the same on every rank)."""
        self.epoch = _check_int("epoch", epoch, 0)

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            indices = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            indices = np.arange(n)
        if self.total_size > n and n > 0:               # pad by repeating from the start
            indices = np.resize(indices, self.total_size)
        indices = indices[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.num_replicas].tolist())
