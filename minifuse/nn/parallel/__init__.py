"""minifuse.nn.parallel: data-parallel training over a process group (``minifuse.distributed``)."""
from .distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
