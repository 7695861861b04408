"""``minifuse.utils.data``: datasets, samplers and the DataLoader, with PyTorch's names.

A ``Dataset`` maps an index to a sample; a sampler yields indices; ``DataLoader`` groups them into
batches (``BatchSampler``) and stacks the samples into tensors (``default_collate``). Any object
with ``__iter__`` and ``__len__`` that yields indices can be passed as ``sampler=``.
"""
from .dataloader import DataLoader, default_collate
from .dataset import Dataset, Subset, TensorDataset, random_split
from .distributed import DistributedSampler
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler

__all__ = ["Dataset", "TensorDataset", "Subset", "random_split", "Sampler", "SequentialSampler",
           "RandomSampler", "BatchSampler", "DistributedSampler", "DataLoader", "default_collate"]
