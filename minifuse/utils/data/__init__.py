"""minifuse.utils.data: samplers that pick which dataset indices a process reads."""
from .distributed import DistributedSampler

__all__ = ["DistributedSampler"]
