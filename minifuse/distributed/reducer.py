"""Gradient buckets for data-parallel training: all-reduce each bucket as soon as it is ready.

The parameters are split into buckets of at most ``bucket_cap_bytes`` (one dtype and device
each), in reverse registration order, which is about the order in which backward finishes their
gradients (the last layer first). A parameter's post-accumulate-grad hook copies its gradient into
its bucket's flat buffer; when a bucket's last gradient has arrived the bucket's non-blocking
all-reduce (AVG) starts, while backward goes on computing the earlier layers' gradients. Buckets
start in index order on every rank, because MPI and NCCL match collectives by order. When the
walk is done (a queued engine callback) the buckets still waiting start, with zeros for the
gradients this rank did not produce (a parameter no rank used gets a zero gradient); every reduction is waited for, and each parameter's
``.grad`` becomes its slice of the averaged buffer.
"""
from __future__ import annotations

import time

from ..autograd import engine
from .collectives import all_reduce
from .process_group import ReduceOp, current

__all__ = ["Reducer"]


class _Bucket:
    def __init__(self, params, wire_dtype, xp):
        self.params, self.wire_dtype, self.xp = params, wire_dtype, xp
        self.offsets, size = [], 0
        for p in params:
            self.offsets.append(size)
            size += p.data.size
        self.size = size
        self.reset()

    def reset(self):
        self.buffer, self.work, self.filled = None, None, [False] * len(self.params)

    def put(self, k, grad):
        if self.buffer is None:       # a fresh buffer each backward: last step's .grad views stay valid
            self.buffer = self.xp.empty(self.size, self.wire_dtype)
        o = self.offsets[k]
        self.buffer[o:o + grad.size] = grad.reshape(-1)
        self.filled[k] = True

    def ready(self):
        return all(self.filled)

    def fill_missing(self):
        for k, p in enumerate(self.params):
            if not self.filled[k]:
                self.put(k, self.xp.zeros(p.data.size, self.wire_dtype))


class Reducer:
    """Averages the gradients of ``params`` over all ranks during each backward (see the module)."""

    def __init__(self, params, bucket_cap_bytes):
        from ..tensor import Tensor
        self._Tensor = Tensor
        self.group = current("DistributedDataParallel")
        self.sync = True                # False under no_sync(): gradients stay local and accumulate
        self.buckets, self._where = [], {}
        self._build(params, bucket_cap_bytes)
        self._next, self._backward = 0, None    # the backward whose gradients the buckets hold
        self.last_wait_s = 0.0          # time the last backward spent waiting for reductions at its end
        self.last_started_early = 0     # buckets the last backward started from hooks, before its end
        self.handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in params]

    def _build(self, params, cap):
        group, current_params, key, size = self.group, [], None, 0
        for p in reversed(params):
            wire = group.wire_dtype(p.dtype)
            p_key = (wire, str(p.device))
            nbytes = p.data.size * wire.itemsize
            if current_params and (p_key != key or size + nbytes > cap):
                self._add_bucket(current_params, key[0])
                current_params, size = [], 0
            current_params.append(p)
            key, size = p_key, size + nbytes
        if current_params:
            self._add_bucket(current_params, key[0])

    def _add_bucket(self, params, wire):
        bucket = _Bucket(params, wire, self.group.xp)
        for k, p in enumerate(params):
            self._where[id(p)] = (bucket, k)
        self.buckets.append(bucket)

    def _on_grad(self, p):
        if not self.sync:
            return
        if self._backward is not engine.current_backward():
            self._abandon()             # a backward that raised may have left buckets half done
            engine.queue_callback(self._finish)
            self._backward = engine.current_backward()
        bucket, k = self._where[id(p)]
        bucket.put(k, p.grad.data)
        if bucket.ready():
            self._start_ready()
        self.group.progress([b.work._handle for b in self.buckets if b.work is not None])

    def _start_ready(self):
        while self._next < len(self.buckets) and self.buckets[self._next].ready():
            bucket = self.buckets[self._next]
            bucket.work = all_reduce(bucket.buffer, ReduceOp.AVG, async_op=True)
            self._next += 1

    def _finish(self):
        t = time.perf_counter()
        self.last_started_early = self._next
        for bucket in self.buckets[self._next:]:
            bucket.fill_missing()       # a gradient this rank did not produce counts as zeros
        self._start_ready()
        for bucket in self.buckets:
            bucket.work.wait()
            for p, o in zip(bucket.params, bucket.offsets):
                grad = bucket.buffer[o:o + p.data.size].reshape(p.shape)
                p.grad = self._Tensor(grad if grad.dtype == p.dtype else grad.astype(p.dtype))
            bucket.reset()
        self._next, self._backward = 0, None
        self.last_wait_s = time.perf_counter() - t

    def _abandon(self):
        for bucket in self.buckets:
            if bucket.work is not None:
                bucket.work.wait()      # the engine may still write into the buffer until then
            bucket.reset()
        self._next = 0

    def remove(self):
        for h in self.handles:
            h.remove()
