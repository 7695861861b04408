"""Reductions over one row, for kernels whose own loops must not reassociate.

The kernels compile without fast-math reassociation (it would undo `exp`'s range reduction), so a
sum or max written inside their loops is one dependent operation per element and keeps the whole
loop scalar. These helpers do the reduction on its own, vectorized.
"""
from .jit import inline, summation


@summation
def row_sum(v):
    """sum(v), accumulated in float64, vectorized (reassociated; a separate function, not inlined,
    so the flag stays here)."""
    s = 0.0
    for j in range(v.shape[0]):
        s += v[j]
    return s


# Lanes of `row_max`: independent running maxima that LLVM turns into one vector max per step.
LANES = 16


@inline
def row_max(r, lanes):
    """max(r) of a non-empty row, a NaN skipped unless it is r[0] (a NaN score makes its row NaN
    through exp anyway). A plain `m = r[j] if r[j] > m else m` loop stays scalar (a select
    reduction LLVM does not vectorize without fast-math); LANES running maxima vectorize.
    lanes: scratch of LANES elements of r's dtype (allocated once per task by the caller)."""
    n = r.shape[0]
    lanes[:] = r[0]
    for j0 in range(0, n - LANES + 1, LANES):
        for lane in range(LANES):
            v = r[j0 + lane]
            lanes[lane] = v if v > lanes[lane] else lanes[lane]
    m = r[0]
    for lane in range(LANES):
        m = lanes[lane] if lanes[lane] > m else m
    for j in range(n - n % LANES, n):
        m = r[j] if r[j] > m else m
    return m


