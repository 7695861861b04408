"""The one set of Numba options every CPU kernel compiles with.

- cache=True: a later process loads machine code from `__pycache__` instead of compiling
  (0.5-3 s per parallel kernel). Caveat: the cache is keyed on the kernel's own file, so after
  editing `mathfn.py` (inlined into the kernels) delete `minifuse/kernels/cpu/__pycache__`.
- error_model='numpy': division by zero gives inf/NaN like NumPy instead of a Python exception,
  and the missing zero checks let loops with a division vectorize.
- fastmath={'contract'} only: fused multiply-add is allowed (it is at least as accurate).
  Not 'nnan'/'ninf' (they delete NaN/Inf propagation), and not 'reassoc' (it would undo the
  Cody-Waite range reduction in exp). Kernels whose loops are sums and call no mathfn
  function use `reduction`, which adds 'reassoc' so that a sum vectorizes (sequential order
  would be one dependent add per element: LayerNorm was 3x slower).
"""
from numba import njit

FLAGS = {"contract"}

# A parallel kernel: the compiled entry that Python calls after checking the arguments.
kernel = njit(cache=True, parallel=True, error_model="numpy", fastmath=FLAGS)

# A parallel kernel with vectorized sums (reassociation changes rounding by a few ulp, not NaN/Inf).
reduction = njit(cache=True, parallel=True, error_model="numpy", fastmath=FLAGS | {"reassoc"})

# A serial helper whose sum loop may reassociate, called (not inlined) from a kernel without it.
summation = njit(cache=True, error_model="numpy", fastmath=FLAGS | {"reassoc"})

# A helper inlined into kernels (row loops, activation dispatch).
inline = njit(cache=True, inline="always", error_model="numpy", fastmath=FLAGS)

# A serial helper called (not inlined) from a parallel kernel: a large loop body compiled once
# on its own, outside the parallel pipeline, whose passes grow much faster than the code they see.
helper = njit(cache=True, error_model="numpy", fastmath=FLAGS)
