"""One seeded generator for everything random in minifuse: init, randn, rand and dropout.

``manual_seed(s)`` resets it, so the same seed gives the same numbers. Random numbers are drawn on
the CPU and copied to the device, so a CUDA model gets the same initial weights as a CPU one.
"""
import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int):
    """Seed the global generator (like ``torch.manual_seed``). Returns the generator."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: expected an int seed, got {type(seed).__name__}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator() -> np.random.Generator:
    return _generator


class Generator:
    """An independent stream of random numbers, as ``torch.Generator``:
    ``DataLoader(ds, shuffle=True, generator=mf.Generator().manual_seed(0))``."""

    def __init__(self, device="cpu"):
        self.rng = np.random.default_rng()

    def manual_seed(self, seed):
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise TypeError(f"Generator.manual_seed: expected an int seed, got {type(seed).__name__}")
        self.rng = np.random.default_rng(int(seed))
        return self
