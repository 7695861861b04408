"""``DataLoader``: batches of a dataset's samples, stacked into tensors."""
from __future__ import annotations

import numbers

import numpy as np

from ... import functions
from ...tensor import Tensor
from .sampler import BatchSampler, RandomSampler, SequentialSampler

__all__ = ["DataLoader", "default_collate"]


def default_collate(batch):
    """Stack a list of samples into one batch, as PyTorch: tensors and NumPy arrays along a new
    first dim; Python ints to int64, floats to float64, bools to bool tensors; tuples and lists
    field by field (into a list; a namedtuple stays one), dicts key by key; strings and anything else stay a list."""
    first = batch[0]
    if isinstance(first, Tensor):
        if any(t.requires_grad for t in batch):
            return functions.stack(batch)             # recorded, so gradients reach the samples
        return Tensor(first.xp.stack([t.data for t in batch]))
    if isinstance(first, np.ndarray):
        return Tensor(np.stack(batch))
    if isinstance(first, (bool, np.bool_)):
        return Tensor(np.array(batch, dtype=bool))
    if isinstance(first, numbers.Integral):
        return Tensor(np.array(batch, dtype=np.int64))
    if isinstance(first, numbers.Real):
        return Tensor(np.array(batch, dtype=np.float64))
    if isinstance(first, dict):
        return {k: default_collate([s[k] for s in batch]) for k in first}
    if isinstance(first, (tuple, list)) and not isinstance(first, str):
        if any(len(s) != len(first) for s in batch):
            raise RuntimeError("default_collate: every sample in a batch must have the same number of fields")
        fields = [default_collate(list(f)) for f in zip(*batch)]
        return type(first)(*fields) if hasattr(first, "_fields") else fields   # a list, as PyTorch
    return list(batch)


class DataLoader:
    """Iterate over ``dataset`` in batches: ``for x, y in DataLoader(ds, batch_size=64, shuffle=True)``.

    The indices come from ``sampler`` (default: ``RandomSampler`` with ``shuffle``, drawing from
    ``generator``, else ``SequentialSampler``), grouped by ``BatchSampler(sampler, batch_size,
    drop_last)`` or taken from ``batch_sampler``; ``collate_fn`` (default ``default_collate``)
    turns each list of samples into the batch. Loading runs in the calling process.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, drop_last=False, generator=None):
        if num_workers != 0:
            raise ValueError(f"DataLoader: num_workers must be 0 (samples load in the calling process), "
                             f"got {num_workers}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler and shuffle=True are mutually exclusive (the sampler "
                             "decides the order)")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("DataLoader: batch_sampler is mutually exclusive with batch_size, shuffle, "
                                 "sampler and drop_last")
            batch_size, drop_last = None, False
        else:
            if sampler is None:
                sampler = (RandomSampler(dataset, generator=generator) if shuffle
                           else SequentialSampler(dataset))
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self.generator = generator

    def __iter__(self):
        for indices in self.batch_sampler:
            yield self.collate_fn([self.dataset[i] for i in indices])

    def __len__(self):
        return len(self.batch_sampler)
