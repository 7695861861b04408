"""The float16 <-> float32 bit conversions of the CUDA kernels (minifuse/kernels/cuda/bits.py)
against NumPy's casts: every float16 bit pattern to float32 exactly, and float32 values (random
bit patterns, every float16 value, its float32 neighbours and the midpoints between float16
values, where ties go to even) to the nearest float16; then bias + activation over float16 rows
four lanes per thread, against float32 math rounded once to float16."""
import warnings

import numpy as np
import pytest

from cudatest import SIMULATOR, needs_kernels, to_dev, to_host

pytestmark = needs_kernels


def _convert(halves, floats):
    """(half_to_float of each uint16 of `halves`, float_to_half of each float32 of `floats`)."""
    from minifuse.kernels.cuda.bits import float_to_half, half_to_float
    if SIMULATOR:      # device functions are Python functions there; 65536 simulated threads are not
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return (np.array([half_to_float(int(h)) for h in halves], np.float32),
                    np.array([float_to_half(f) for f in floats], np.int64).astype(np.uint16))
    from numba import cuda

    @cuda.jit
    def kernel(h, f_out, f, h_out):
        i = cuda.grid(1)
        if i < h.size:
            f_out[i] = half_to_float(h[i])
        if i < f.size:
            h_out[i] = float_to_half(f[i])
    h, f = to_dev(halves.astype(np.int32)), to_dev(floats)
    f_out, h_out = to_dev(np.zeros(halves.size, np.float32)), to_dev(np.zeros(floats.size, np.int32))
    n = max(halves.size, floats.size)
    kernel[(n + 255) // 256, 256](h, f_out, f, h_out)
    return to_host(f_out), to_host(h_out).astype(np.uint16)


def test_conversions_equal_numpy():
    rng = np.random.default_rng(0)
    halves = np.arange(65536, dtype=np.uint16)
    values = halves.view(np.float16).astype(np.float32)
    finite = values[np.isfinite(values)]
    mid = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)
    with np.errstate(invalid="ignore"):
        floats = np.concatenate([
            rng.integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32),
            values, np.nextafter(values, np.float32(np.inf)), np.nextafter(values, np.float32(-np.inf)), mid,
            np.float32([65504, 65519.99, 65520, 65536, 1e30, -1e30, 2 ** -25, 2 ** -26])])
    got_f, got_h = _convert(halves, floats)
    same = (got_f.view(np.int32) == values.view(np.int32)) | (np.isnan(got_f) & np.isnan(values))
    assert same.all(), halves[~same][:5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want_h = floats.astype(np.float16).view(np.uint16)
    nan = np.isnan(floats)
    assert (got_h[~nan] == want_h[~nan]).all(), floats[~nan][got_h[~nan] != want_h[~nan]][:5]
    assert np.isnan(got_h[nan].view(np.float16)).all()
    assert (got_h[nan] >> 15 == want_h[nan] >> 15).all()            # a NaN keeps its sign


@pytest.mark.parametrize("act", ["none", "relu", "gelu_tanh", "silu"])
@pytest.mark.parametrize("in_place", [True, False])
def test_bias_act_float16_four_lanes(act, in_place):
    from minifuse.kernels import activations as A
    from minifuse.kernels.cuda.elementwise import _lanes, apply_bias_act
    rng = np.random.default_rng(1)
    y = (rng.standard_normal((3, 8)) * 3).astype(np.float16)
    y[0, :4] = [np.inf, -np.inf, np.nan, 60000]
    b = (rng.standard_normal(8) * 0.1).astype(np.float16)
    assert _lanes(y)[0] == 4
    with np.errstate(all="ignore"):
        z = y.astype(np.float64) + b.astype(np.float64)
        want = A.BY_NAME[act].forward(np, z).astype(np.float16)
    yd = to_dev(y)
    out = None if in_place else to_dev(np.empty_like(y))
    got = to_host(apply_bias_act(yd, to_dev(b), act, out))
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=1e-3)
