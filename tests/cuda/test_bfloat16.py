"""bfloat16 in the CUDA kernels: the two conversions (kernels/cuda/storage.py) bit for bit against
ml_dtypes over the edge values (signed zeros, denormals, ties to even both ways, the values around
the largest bfloat16, infinities, NaNs with payloads), the arrays reaching the kernels as their
bits (under the simulator too), and NaN / inf through the GEMM path and the row copies.

The kernels of every module are tested in bfloat16 against the float64 references in
tests/kernels (the CUDA backend's dtypes include bfloat16), their NaN / inf cases included.
"""
import numpy as np
import pytest

import minifuse as mf
from backends import CUDA, quiet
from cudatest import GPU, SIMULATOR, needs_kernels, to_dev, to_host

pytestmark = [needs_kernels, pytest.mark.skipif(mf.bfloat16 is None, reason="bfloat16: needs ml_dtypes")]

BF16 = mf.bfloat16

if CUDA.available and BF16 is not None:
    import minifuse.kernels.cuda as K
    from minifuse.kernels.cuda import runtime, storage
    from minifuse.kernels.cuda.runtime import blocks, cuda, launch

    @cuda.jit
    def _to_float(bits, out):
        i = cuda.grid(1)
        if i < bits.shape[0]:
            out[i] = storage.bfloat16_to_float(bits[i])

    @cuda.jit
    def _to_bfloat16(values, out):
        i = cuda.grid(1)
        if i < values.shape[0]:
            out[i] = storage.float_to_bfloat16(values[i])

    _store = storage.bfloat16_store()     # what the kernels use: the GPU's instruction where it has one
    _pair = storage.bfloat16_pair_store()  # the same for two values at once (the word stores)

    @cuda.jit
    def _to_bfloat16_pairs(values, out):
        i = cuda.grid(1)
        if i < values.shape[0] // 2:
            out[i] = _pair(values[2 * i], values[2 * i + 1])

    @cuda.jit
    def _to_bfloat16_in_kernels(values, out):
        i = cuda.grid(1)
        if i < values.shape[0]:
            out[i] = _store(values[i])


@pytest.fixture(autouse=True)
def quiet_simulator():
    with quiet():
        yield


def _f32(*bits):
    return np.array(bits, np.uint32).view(np.float32)


# float32 bit patterns where rounding to bfloat16 (8 bits kept of 23) can go wrong
EDGES = _f32(
    0x00000000, 0x80000000,                                  # +-0
    0x00000001, 0x80000001, 0x00007FFF, 0x00008000,          # denormals: the smallest; round down;
    0x00008001, 0x00018000, 0x007FFFFF, 0x807FFFFF,          # a tie to even 0; above it; a tie up to 2;
    0x00800000, 0x0000FFFF,                                  # the largest (rounds to the smallest normal)
    0x3F808000, 0x3F818000, 0xBF808000, 0xBF818000,          # ties: to the even below, to the even above
    0x3F807FFF, 0x3F808001, 0x3F80FFFF, 0x3F7FFFFF,          # beside a tie; carry into the exponent
    0x7F7F0000, 0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF,          # the largest bfloat16; below the tie above it;
    0xFF7F7FFF, 0xFF7F8000, 0xFF7FFFFF,                      # the tie (odd: up, to inf); float32's max
    0x7F800000, 0xFF800000,                                  # +-inf
    0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001,          # NaNs: quiet; signalling, whose truncation
    0x7FBFFFFF, 0x7FC12345, 0xFFFFFFFF, 0x7FFF8000,          # would be inf; payloads (kept by neither)
)


def _random_bits(rng, n):
    return rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)


def _want_bits(values):
    with np.errstate(invalid="ignore", over="ignore"):
        return values.astype(BF16).view(np.uint16)


def _run(kernel, src, dtype):
    out = to_dev(np.zeros(src.shape, dtype))
    launch(kernel, blocks(src.size, 32), 32, to_dev(src), out)
    return to_host(out)


def _hex(a):
    return [hex(int(v)) for v in np.asarray(a).ravel()[:8]]


@pytest.mark.parametrize("which", ["integer", "kernels"])
def test_store_rounds_as_ml_dtypes(rng, which):
    """float32 -> bfloat16 bits in a kernel, by the integer rounding and by the conversion the
    kernels use: the edge values and random bit patterns (every exponent, NaNs and infinities
    included) give ml_dtypes' bits exactly."""
    values = np.concatenate([EDGES, -EDGES, _random_bits(rng, 200_000 if GPU else 2000)])
    kernel = _to_bfloat16 if which == "integer" else _to_bfloat16_in_kernels
    got, want = _run(kernel, values, np.uint16), _want_bits(values)
    bad = got != want
    assert not bad.any(), (_hex(values[bad].view(np.uint32)), _hex(got[bad]), _hex(want[bad]))


def test_pair_store_rounds_as_ml_dtypes(rng):
    """Two float32 -> the bits of two bfloat16 in one uint32 (the first in the lower half), as the
    word stores convert them: every pair of edge values (a NaN beside a number either way round
    included) and random pairs give ml_dtypes' bits exactly."""
    edges = np.concatenate([EDGES, -EDGES])
    grid = np.stack(np.meshgrid(edges, edges), -1).reshape(-1)
    values = np.concatenate([grid, _random_bits(rng, 200_000 if GPU else 2000)])
    out = to_dev(np.zeros(values.size // 2, np.uint32))
    launch(_to_bfloat16_pairs, blocks(out.size, 32), 32, to_dev(values), out)
    got, want = to_host(out).view(np.uint16), _want_bits(values)      # little-endian: (lower, upper)
    bad = got != want
    assert not bad.any(), (_hex(values[bad].view(np.uint32)), _hex(got[bad]), _hex(want[bad]))


def test_load_is_exact(rng):
    """bfloat16 bits -> float32 in a kernel: bits << 16 (ml_dtypes' value, NaN payloads and
    signalling NaNs kept), for every pattern on a GPU, edges and a sample on the simulator."""
    if GPU:
        bits = np.arange(2 ** 16, dtype=np.uint32).astype(np.uint16)
    else:
        bits = np.concatenate([_want_bits(EDGES), rng.integers(0, 2 ** 16, 2000).astype(np.uint16)])
    got = _run(_to_float, bits, np.float32).view(np.uint32)
    np.testing.assert_array_equal(got, bits.astype(np.uint32) << 16)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(got, bits.view(BF16).astype(np.float32).view(np.uint32))


@pytest.mark.skipif(not SIMULATOR, reason="the device functions are Python functions under the simulator")
def test_conversions_exhaustively_in_python(rng):
    """Under the simulator the device functions are the Python code the kernels run: every
    bfloat16 pattern loads exactly, and 10^5 random float32 patterns store as ml_dtypes rounds."""
    bits = np.arange(2 ** 16, dtype=np.uint32).astype(np.uint16)
    loaded = np.array([storage.bfloat16_to_float(b) for b in bits], np.float32).view(np.uint32)
    np.testing.assert_array_equal(loaded, bits.astype(np.uint32) << 16)
    values = np.concatenate([EDGES, -EDGES, _random_bits(rng, 100_000)])
    stored = np.array([storage.float_to_bfloat16(v) for v in values], np.uint16)
    bad = stored != _want_bits(values)
    assert not bad.any(), (_hex(values[bad].view(np.uint32)), _hex(stored[bad]))


def test_round_trip_of_every_bfloat16_value():
    """load then store gives every bfloat16 back (a NaN as the quiet NaN of its sign)."""
    bits = np.arange(2 ** 16, dtype=np.uint32).astype(np.uint16)
    if not GPU:
        bits = bits[::16].copy()               # 4096 patterns, every exponent
    back = _run(_to_bfloat16, _run(_to_float, bits, np.float32), np.uint16)
    nan = np.isnan(bits.view(BF16))
    np.testing.assert_array_equal(back[~nan], bits[~nan])
    np.testing.assert_array_equal(back[nan], np.where(bits[nan] & 0x8000, 0xFFC0, 0x7FC0))


def test_bfloat16_arrays_reach_the_kernels_as_bits():
    """device_array gives the uint16 view of the same memory (on the simulator too: an ml_dtypes
    array would be converted right by Python, whatever the kernels did); other dtypes unchanged."""
    a = to_dev(np.array([[1.5, -2.0], [np.inf, 0.0]], BF16))
    view = runtime.device_array(a)
    assert view.dtype == np.uint16 and view.shape == a.shape
    np.testing.assert_array_equal(np.asarray(view if SIMULATOR else view.copy_to_host()),
                                  to_host(a).view(np.uint16))
    if SIMULATOR:
        assert np.shares_memory(view, a)
        f = np.zeros(2, np.float32)
        assert runtime.device_array(f) is f


def test_linear_nan_inf_rows():
    """The GEMM path (cuBLASLt on a GPU, float32 products rounded once otherwise) and its bias +
    activation pass in bfloat16: a NaN row stays NaN, an inf row +inf, the rest finite."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8)).astype(BF16)
    x[1, 3], x[2, 0] = np.nan, np.inf
    w = (np.abs(rng.standard_normal((5, 8))) + 0.1).astype(BF16)       # positive: inf stays +inf
    b = rng.standard_normal(5).astype(BF16)
    for act in ("none", "gelu_tanh", "relu", "silu"):
        out = to_host(K.linear_act(to_dev(x), to_dev(w), to_dev(b), act)).astype(np.float64)
        assert np.isnan(out[1]).all() and np.isposinf(out[2]).all(), act
        assert np.isfinite(out[[0, 3]]).all(), act


def test_row_copies_move_bits():
    """pack / unpack (the gather and scatter of rows) copy bfloat16 bits unchanged: NaN payloads,
    signalling NaNs, -0 and denormals come back as they were."""
    bits = np.array([0x7FC1, 0xFF81, 0x7F81, 0x8000, 0x0001, 0x7F80, 0xFF80, 0x3F80], np.uint16)
    x = np.tile(bits, (2, 3, 1)).view(BF16)                           # (2, 3, 8)
    mask = np.array([[1, 0, 1], [1, 1, 0]])
    rows, pk = K.pack(to_dev(x), to_dev(mask))
    np.testing.assert_array_equal(to_host(rows).view(np.uint16), np.tile(bits, (4, 1)))
    back = to_host(K.unpack(rows, pk)).view(np.uint16)
    np.testing.assert_array_equal(back[mask == 1], np.tile(bits, (4, 1)))
    assert not back[mask == 0].any()
