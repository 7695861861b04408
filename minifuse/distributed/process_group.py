"""The one process group of this process: which engine, this rank, how many ranks.

A launcher starts the processes and says who is who: ``mpirun``/``mpiexec`` through MPI itself,
``minifuse.distributed.launch`` (or any torchrun-style launcher) through the environment
variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
"""
from __future__ import annotations

import enum
import importlib

__all__ = ["ReduceOp", "init_process_group", "destroy_process_group", "is_initialized", "is_available",
           "get_rank", "get_world_size", "get_backend", "get_device", "current"]

BACKENDS = ("mpi", "nccl")


class ReduceOp(enum.Enum):
    """How ``all_reduce`` combines the ranks' arrays element by element."""
    SUM = "sum"
    AVG = "avg"      # SUM, then divided by the world size (floating arrays only)
    MAX = "max"
    MIN = "min"


_group = None   # the backend object (mpi.MPIGroup or nccl.NCCLGroup) once initialised


def is_available(backend="mpi"):
    """True when ``backend``'s engine imports here: mpi4py for "mpi", CuPy's NCCL for "nccl"."""
    _check_backend(backend)
    try:
        importlib.import_module("mpi4py.MPI" if backend == "mpi" else "cupy.cuda.nccl")
        return True
    except Exception:   # ImportError, or a library that fails to load (no MPI runtime, no libnccl)
        return False


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"init_process_group: backend must be one of {BACKENDS}, got {backend!r}")


def init_process_group(backend="mpi", *, rank=None, world_size=None, timeout_s=300.0):
    """Join the processes a launcher started.

    backend "mpi": rank and world size come from MPI (``mpirun -n N``; ``rank=``/``world_size=``,
    if given, must agree); NumPy arrays.
    backend "nccl": one GPU per process, CuPy arrays. Under ``mpirun`` the ranks come from MPI and
    rank 0's NCCL id is broadcast over MPI; otherwise from ``RANK``/``WORLD_SIZE`` (default 0 and 1;
    ``rank=``/``world_size=`` override them) and, for more than one rank, rank 0 serves the id over
    TCP at ``MASTER_ADDR:MASTER_PORT``. The GPU is ``LOCAL_RANK`` (or the rank among the processes
    of its host) modulo the GPUs visible.
    """
    global _group
    _check_backend(backend)
    if _group is not None:
        raise RuntimeError("init_process_group: a process group is already initialised; call "
                           "destroy_process_group() first")
    if not is_available(backend):
        need = "mpi4py and an MPI library (pip install 'minifuse[distributed]')" if backend == "mpi" \
            else "CuPy with NCCL (pip install 'minifuse[cuda]')"
        raise RuntimeError(f"init_process_group: backend {backend!r} needs {need}; it does not import here")
    if not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise ValueError(f"init_process_group: timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if backend == "mpi":
        from .mpi import MPIGroup
        _group = MPIGroup(rank, world_size)
    else:
        from .nccl import NCCLGroup
        _group = NCCLGroup(rank, world_size, timeout_s)


def destroy_process_group():
    """Leave the group (frees the communicator); a new ``init_process_group`` may follow."""
    global _group
    if _group is not None:
        _group.close()
        _group = None


def is_initialized():
    return _group is not None


def current(caller):
    if _group is None:
        raise RuntimeError(f"{caller}: the default process group is not initialised; call "
                           "minifuse.distributed.init_process_group(backend) first")
    return _group


def get_rank():
    """This process's rank, 0 .. world size - 1."""
    return current("get_rank").rank


def get_world_size():
    return current("get_world_size").world_size


def get_backend():
    return current("get_backend").name


def get_device():
    """The device this rank works on: cpu for "mpi", its GPU (``cuda:LOCAL_RANK`` modulo the GPUs)
    for "nccl". Put the model and the batches there: ``model.to(dist.get_device())``."""
    return current("get_device").device
