"""The MPI engine (mpi4py): NumPy buffers, non-blocking collectives (``Iallreduce``, ``Ibcast``).

MPI moves a non-blocking collective forward only inside MPI calls, unless the library runs a
progress thread; ``progress()`` is such a call (``MPI_Testall``), made by
``DistributedDataParallel`` between buckets so that a reduction advances while backward computes.
"""
from __future__ import annotations

import os

import numpy as np

from ..device import CPU
from .process_group import ReduceOp

__all__ = ["MPIGroup"]


class MPIGroup:
    name = "mpi"
    xp = np
    device = CPU
    DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "int64")

    def __init__(self, rank=None, world_size=None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()        # our own communicator: no clash with the user's messages
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self._ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.MAX: MPI.MAX, ReduceOp.MIN: MPI.MIN}
        try:
            self._check_launch(rank, world_size)
        except ValueError:
            self.close()
            raise

    def _check_launch(self, rank, world_size):
        """MPI decides the ranks; what the caller or another launcher's environment says must agree."""
        env_world = os.environ.get("WORLD_SIZE")
        if world_size is None and env_world is not None and env_world != str(self.world_size):
            # e.g. processes of a torchrun-style launcher: each one is an MPI world of its own
            raise ValueError(f"init_process_group: WORLD_SIZE={env_world} in the environment, but MPI has "
                             f"{self.world_size} process(es); start MPI ranks with mpiexec -n N")
        for name, given, actual in (("rank", rank, self.rank), ("world_size", world_size, self.world_size)):
            if given is not None and given != actual:
                raise ValueError(f"init_process_group: {name}={given!r}, but the MPI launcher made this "
                                 f"process {name} {actual}; leave {name} out with backend 'mpi'")

    def accepts(self, array):
        return isinstance(array, np.ndarray)

    def wire_dtype(self, dtype):
        name = np.dtype(dtype).name
        if name in ("float16", "bfloat16"):
            return np.dtype(np.float32)     # reduced in float32, rounded once on the way back
        return np.dtype(dtype) if name in self.DTYPES else None

    def all_reduce(self, buf, op):
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, self._ops[op])

    def broadcast(self, buf, src):
        return self.comm.Ibcast(buf, root=src)

    def wait(self, request):
        request.Wait()

    def test(self, request):
        return request.Test()

    def progress(self, requests):
        if requests:
            self.MPI.Request.Testall(requests)

    def barrier(self):
        self.comm.Barrier()

    def close(self):
        self.comm.Free()
