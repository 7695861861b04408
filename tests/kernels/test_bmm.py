"""bmm, the backends' batched product, on every backend against float64: either operand
transposed (read in place), empty and size-1 dims, every dtype of the backend, half-precision
operands into a float32 output, NaN."""
import numpy as np
from hypothesis import strategies as st

from backends import HALF, choice, dtypes, given_backend
from tests.kernels import reference as ref

DIM = choice([0, 1, 2, 5, 16, 33])


@given_backend(dtype=dtypes, batch=choice([1, 2, 3]), n=DIM, k=DIM, m=DIM, trans_a=st.booleans(),
               trans_b=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_bmm(backend, dtype, batch, n, k, m, trans_a, trans_b, seed):
    rng = np.random.default_rng(seed)
    a = ref.randn(rng, (batch, k, n) if trans_a else (batch, n, k), dtype)
    b = ref.randn(rng, (batch, m, k) if trans_b else (batch, k, m), dtype, scale=max(k, 1) ** -0.5)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = (a64.transpose(0, 2, 1) if trans_a else a64) @ (b64.transpose(0, 2, 1) if trans_b else b64)
    out = backend.to_dev(np.empty((batch, n, m), dtype))
    got = backend.K.bmm(backend.to_dev(a), backend.to_dev(b), out, trans_a=trans_a, trans_b=trans_b)
    assert got is out
    ref.assert_close(backend.to_host(got), want, backend.rtol(dtype) * max(1, k) ** 0.5)


@given_backend(dtype=choice(HALF), n=DIM, k=DIM, m=DIM, trans_b=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_bmm_of_half_operands_into_float32_keeps_the_float32_sums(backend, dtype, n, k, m, trans_b, seed):
    """What a weight gradient for float32 master weights asks: the product of the half values in
    float32, within float32's rounding (not rounded to the half dtype on the way)."""
    rng = np.random.default_rng(seed)
    a = ref.randn(rng, (2, n, k), dtype)
    b = ref.randn(rng, (2, m, k) if trans_b else (2, k, m), dtype, scale=max(k, 1) ** -0.5)
    b64 = b.astype(np.float64)
    want = a.astype(np.float64) @ (b64.transpose(0, 2, 1) if trans_b else b64)
    out = backend.to_dev(np.empty((2, n, m), np.float32))
    got = backend.to_host(backend.K.bmm(backend.to_dev(a), backend.to_dev(b), out, trans_b=trans_b))
    assert got.dtype == np.float32
    ref.assert_close(got, want, 1e-5 * max(1, k) ** 0.5)


def test_bmm_nan_spreads_along_its_row_and_column(backend, dtype):
    a, b = np.ones((1, 3, 4), dtype), np.ones((1, 4, 5), dtype)
    a[0, 1, 2] = np.nan
    got = backend.to_host(backend.K.bmm(backend.to_dev(a), backend.to_dev(b), backend.to_dev(np.empty((1, 3, 5), dtype))))
    assert np.isnan(got[0, 1]).all() and np.isfinite(np.delete(got[0], 1, axis=0)).all()
