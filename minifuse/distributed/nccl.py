"""The NCCL engine (CuPy's ``cupy.cuda.nccl``): one GPU per process, CuPy buffers.

Every collective runs on this group's own CUDA stream: the stream first waits for what the
current stream has queued (the gradient being ready), and ``wait`` makes the current stream wait
for the collective, so that neither stream blocks the host and backward kernels keep running on
the current stream while NCCL moves data.
"""
from __future__ import annotations

import numpy as np

from ..device import Device
from . import rendezvous
from .process_group import ReduceOp

__all__ = ["NCCLGroup"]

# ncclDataType_t and ncclRedOp_t codes (nccl.h); CuPy names most, not bfloat16 in every version.
_NCCL_DTYPES = {"int8": 0, "uint8": 1, "int32": 2, "int64": 4, "float16": 6, "float32": 7, "float64": 8, "bfloat16": 9}
_NCCL_OPS = {ReduceOp.SUM: 0, ReduceOp.MAX: 2, ReduceOp.MIN: 3}


def _id_to_bytes(uid):
    """NCCL's unique id as bytes for the rendezvous (CuPy 14 returns bytes, earlier CuPy signed chars)."""
    return bytes(uid) if isinstance(uid, (bytes, bytearray)) else bytes(b & 0xFF for b in uid)


def _id_from_bytes(data):
    return tuple(b - 256 if b > 127 else b for b in data)


class NCCLGroup:
    name = "nccl"
    DTYPES = tuple(_NCCL_DTYPES)

    def __init__(self, rank=None, world_size=None, timeout_s=300.0):
        import cupy
        from cupy.cuda import nccl
        self.xp = cupy

        def make_id():
            return _id_to_bytes(nccl.get_unique_id())

        if rendezvous.under_mpi() and rank is None and world_size is None:
            self.rank, self.world_size, local_rank, uid = rendezvous.from_mpi(make_id)
        else:
            self.rank, self.world_size, local_rank, uid = rendezvous.from_environment(
                make_id, rank, world_size, timeout_s)
        index = local_rank % cupy.cuda.runtime.getDeviceCount()
        cupy.cuda.Device(index).use()
        self.device = Device(f"cuda:{index}")
        try:                 # CuPy 14 takes the unique id as bytes
            self.comm = nccl.NcclCommunicator(self.world_size, bytes(uid), self.rank)
        except TypeError:    # earlier CuPy as a tuple of signed chars (refused before any NCCL call)
            self.comm = nccl.NcclCommunicator(self.world_size, _id_from_bytes(uid), self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def accepts(self, array):
        return type(array).__module__.startswith("cupy") and array.device.id == self.device.index

    def wire_dtype(self, dtype):
        return np.dtype(dtype) if np.dtype(dtype).name in _NCCL_DTYPES else None

    def _launch(self, call):
        self.stream.wait_event(self.xp.cuda.get_current_stream().record())
        call(self.stream.ptr)
        return self.stream.record()

    def all_reduce(self, buf, op):
        code = _NCCL_DTYPES[buf.dtype.name]
        return self._launch(lambda s: self.comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, code,
                                                          _NCCL_OPS[op], s))

    def broadcast(self, buf, src):
        code = _NCCL_DTYPES[buf.dtype.name]
        return self._launch(lambda s: self.comm.bcast(buf.data.ptr, buf.size, code, src, s))

    def wait(self, event):
        self.xp.cuda.get_current_stream().wait_event(event)

    def test(self, event):
        return event.done

    def progress(self, events):
        pass    # the GPU moves NCCL's kernels on by itself

    def barrier(self):
        one = self.xp.ones(1, self.xp.float32)
        self.wait(self.all_reduce(one, ReduceOp.SUM))
        self.xp.cuda.get_current_stream().synchronize()

    def close(self):
        self.stream.synchronize()
        self.comm.destroy()
