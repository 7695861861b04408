"""minifuse.distributed: collectives between processes, on an existing engine.

    mpirun -n 2 python train.py                                   # CPU processes, MPI (mpi4py)
    python -m minifuse.distributed.launch --nproc 8 train.py      # one process per GPU, NCCL (CuPy)

``init_process_group("mpi" | "nccl")`` joins the processes the launcher started; then
``all_reduce``, ``broadcast`` and ``barrier`` work on Tensors and on raw NumPy / CuPy arrays, in
place, PyTorch's names. ``nn.parallel.DistributedDataParallel`` builds data-parallel training on
them (docs/distributed.md).
"""
from .collectives import Work, all_reduce, barrier, broadcast
from .process_group import (ReduceOp, destroy_process_group, get_backend, get_device, get_rank, get_world_size,
                            init_process_group, is_available, is_initialized)

__all__ = ["ReduceOp", "Work", "init_process_group", "destroy_process_group", "is_initialized", "is_available",
           "get_rank", "get_world_size", "get_backend", "get_device", "all_reduce", "broadcast", "barrier"]
