"""512-bit vectors for the CPU kernels on Intel cores with AVX-512.

LLVM compiles for Intel's server cores (Skylake-X to Emerald Rapids) with a preference for
256-bit vectors ("prefer-256-bit": wide instructions once lowered the clock of the whole core), so
Numba's kernels there use half of the AVX-512 width that the same code gets on AMD's Zen 4 and 5.
The fused kernels' math (exp, erf, the activations' slopes) is bound by that width: their
backward kernels run up to twice as fast at 512 bits (BENCHMARKS.md). So, where the host has
AVX-512, `import minifuse` compiles with the host's features minus that preference, through
Numba's ``NUMBA_CPU_FEATURES``.

It takes effect for kernels compiled after it, so when minifuse is imported before anything is
compiled with Numba; a user who sets ``NUMBA_CPU_FEATURES`` or ``NUMBA_CPU_NAME`` keeps their
choice. Numba's cache is keyed on the features: the first run after the change compiles again.
"""
import os
import sys

__all__ = ["prefer_512_bit_vectors"]

FLAG = "-prefer-256-bit"


def prefer_512_bit_vectors():
    """Set ``NUMBA_CPU_FEATURES`` to the host's features with 512-bit vectors preferred, where
    the host has AVX-512 and the user set neither NUMBA_CPU_FEATURES nor NUMBA_CPU_NAME. Returns
    the features set, or None."""
    if "NUMBA_CPU_FEATURES" in os.environ or "NUMBA_CPU_NAME" in os.environ:
        return None
    try:
        import llvmlite.binding as ll
        features = ll.get_host_cpu_features().flatten()
    except (ImportError, RuntimeError):       # no LLVM, or a host LLVM cannot describe
        return None
    if "+avx512f" not in features.split(","):
        return None
    features = f"{features},{FLAG}"
    os.environ["NUMBA_CPU_FEATURES"] = features
    config = sys.modules.get("numba.core.config")     # numba imported first: its settings are read
    if config is not None:
        config.CPU_FEATURES = features
    return features
