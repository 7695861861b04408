"""``DistributedDataParallel``: one model replica per process, gradients averaged during backward.

Each rank runs the wrapped module on its own share of the batch. At wrap time every parameter and
buffer is broadcast from rank 0, so all replicas start equal; during each backward the gradients
are averaged over the ranks in buckets (``minifuse.distributed.reducer``) while backward still
runs; after it every rank holds the same ``.grad`` (the gradient of the mean loss over the whole
batch when the ranks' batches are equally large) and the same optimizer step keeps the replicas
equal. docs/distributed.md explains the timing.
"""
from __future__ import annotations

import contextlib

from ...distributed.collectives import broadcast
from ...distributed.process_group import current
from ...distributed.reducer import Reducer
from ..module import Module

__all__ = ["DistributedDataParallel"]


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training on the initialised process group.

    bucket_cap_mb: the largest bucket of gradients reduced by one collective (PyTorch's default 25).
    broadcast_buffers: broadcast rank 0's buffers before each forward (PyTorch's default True).
    """

    def __init__(self, module, bucket_cap_mb=25, broadcast_buffers=True):
        super().__init__()
        group = current("DistributedDataParallel")
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: argument 'module' must be a minifuse.nn.Module, "
                            f"got {type(module).__name__}")
        if not isinstance(bucket_cap_mb, (int, float)) or not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}")
        params = [p for p in module.parameters() if p.requires_grad]
        for name, p in module.named_parameters():
            if not group.accepts(p.data):
                raise TypeError(f"DistributedDataParallel: parameter {name!r} is on {p.device}; this rank's "
                                f"{group.name!r} group works on {group.device}: call module.to(dist.get_device()) first")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self._sync_from_rank0(list(module.parameters()) + list(module.buffers()))
        object.__setattr__(self, "reducer", Reducer(params, bucket_cap_mb * 2**20))

    @staticmethod
    def _sync_from_rank0(tensors):
        # a boolean buffer (a mask) travels as its bytes: neither engine reduces booleans
        arrays = [t.data.view("uint8") if t.dtype == bool else t.data for t in tensors if t is not None]
        works = [broadcast(a, 0, async_op=True) for a in arrays]
        for w in works:
            w.wait()

    def forward(self, *args, **kwargs):
        if self.broadcast_buffers and current("DistributedDataParallel").world_size > 1:
            self._sync_from_rank0(list(self.module.buffers()))
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate gradients locally, without communication; the first
        backward after it averages the accumulated gradients (gradient accumulation)."""
        old, self.reducer.sync = self.reducer.sync, False
        try:
            yield
        finally:
            self.reducer.sync = old
