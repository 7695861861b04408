"""CUDA-only internals of the kernels, under the Numba CUDA simulator or on a GPU: rows read in
8-byte words or one element at a time (bias + activation, LayerNorm, softmax), the launch fast path (GPU), the teaching tiled GEMM
(minifuse.bench.tiled_gemm), more rows and wider rows than the kernels' blocks, and the NumPy
patch numba-cuda needs.

The entry points themselves (every kernel against the float64 references, their argument checks)
are tested once for every backend in tests/kernels (the `backend` parameter, id 'cuda')."""
import importlib

import numpy as np
import pytest

import minifuse as mf
from backends import CUDA, quiet
from cudatest import GPU, needs_gpu, needs_kernels
from kernels import reference as R

pytestmark = needs_kernels

if CUDA.available:
    import minifuse.kernels.cuda as K

to_dev, to_host = CUDA.to_dev, CUDA.to_host


@pytest.fixture(autouse=True)
def quiet_simulator():
    with quiet():
        yield


def randn(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def check(actual, expected, dtype):
    R.assert_close(to_host(actual), expected, CUDA.rtol(dtype))


WORD_DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)] + (
    [] if mf.bfloat16 is None else [mf.bfloat16])


def _layouts(rng, n, m, dtype, scale=1.0):
    """(name, expected format, (n, m) array) for rows read as 8-byte words (a width the word's
    values divide, aligned), one element at a time for an odd width, and for a view that starts
    off an 8-byte boundary."""
    from minifuse.kernels.cuda import words as W
    flat = to_dev(randn(rng, n * m + 1, dtype, scale))
    word = {np.dtype(np.float16): "half4", np.dtype(np.float32): "float2", mf.bfloat16: W.BF16X4}.get(
        np.dtype(dtype), W.ONE)
    return [("words", word, flat.copy()[:n * m].reshape(n, m)),
            ("odd width", W.ONE, flat.copy()[:n * (m - 1)].reshape(n, m - 1)),
            ("unaligned", W.ONE, flat.copy()[1:].reshape(n, m))]


@pytest.mark.parametrize("dtype", WORD_DTYPES)
@pytest.mark.parametrize("activation", ["relu", "gelu_tanh", "silu"])
def test_bias_act_in_words_and_one_element_at_a_time(rng, dtype, activation):
    """Bias + activation reads four float16 or bfloat16 / two float32 values per 8-byte word where the rows
    allow it (`words.format_for`), one element otherwise: both, in place and into `out`, against
    the reference; NaN stays NaN in every lane of a word."""
    from minifuse.kernels.cuda import elementwise as E
    from minifuse.kernels.cuda import words as W
    for name, fmt, y in _layouts(rng, 5, 40, dtype, 3.0):
        bias = to_dev(randn(rng, y.shape[1], dtype))
        assert W.format_for(y.shape[1], y, bias) == fmt, name
        y[1, 0], y[2, 1], y[3, 3] = np.nan, np.nan, np.nan
        expected = R.bias_act(to_host(y), to_host(bias), activation)
        out = y.copy() * 0
        assert E.apply_bias_act(y, bias, activation, out=out) is out
        check(out, expected, dtype)
        assert K.bias_act_(y, bias, activation) is y
        check(y, expected, dtype)
        assert np.isnan(to_host(y)[[1, 2, 3], [0, 1, 3]]).all(), name


@pytest.mark.parametrize("dtype", [d for d in WORD_DTYPES if d.itemsize == 2])
def test_word_stores_round_as_numpy(rng, dtype):
    """A word of float16 / bfloat16 is stored from pairs of values (one conversion instruction a
    pair where the GPU has it): y + bias, added in float32 by the kernel, has exactly the bits of
    NumPy's (ml_dtypes') rounding of the same float32 sum, over every exponent, overflow to inf,
    denormals and ties; NaN where the sum is NaN."""
    from minifuse.kernels.cuda import elementwise as E
    from minifuse.kernels.cuda import words as W
    n, m = (512, 256) if GPU else (8, 16)
    bits = rng.integers(0, 2 ** 16, (n + 1, m), dtype=np.uint32).astype(np.uint16)
    y, bias = (to_dev(b.view(dtype)) for b in (bits[:n].copy(), bits[n].copy()))
    assert W.format_for(m, y, bias) != W.ONE
    out = to_dev(np.zeros((n, m), dtype))
    E.apply_bias_act(y, bias, "none", out=out)
    with np.errstate(invalid="ignore", over="ignore"):
        total = to_host(y).astype(np.float32) + to_host(bias).astype(np.float32)
        want = total.astype(dtype)
    got = to_host(out)
    nan = np.isnan(total)
    np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), nan)
    np.testing.assert_array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan])


@pytest.mark.parametrize("dtype", WORD_DTYPES)
def test_layer_norm_and_softmax_in_words_and_one_element_at_a_time(rng, dtype):
    """The LayerNorm and softmax row kernels on each layout of `_layouts`: the reference values,
    padded rows zeros, a NaN confined to its own row."""
    from minifuse.kernels.cuda import words as W
    A = importlib.import_module("minifuse.kernels.cuda.attention")    # (the package exports a function of that name)
    L = importlib.import_module("minifuse.kernels.cuda.layernorm")
    for name, fmt, x in _layouts(rng, 6, 24, dtype):
        d = x.shape[1]
        res = to_dev(randn(rng, (6, d), dtype))
        gamma, beta, bias = (to_dev(randn(rng, d, dtype)) for _ in range(3))
        assert W.format_for(d, x, res, bias, gamma, beta) == fmt, name
        x[4, 2] = np.nan
        pad = to_dev(np.where(np.arange(6) == 1, -1e4, 0).astype(np.float32))
        out = to_dev(np.full((6, d), 7, dtype))
        L.apply_residual_layer_norm(x, res, bias, gamma, beta, 1e-5, out, pad_rows=pad)
        v = sum(to_host(a).astype(np.float64) for a in (x, res, bias))      # the kernel adds in float32
        expected = R.layer_norm(v, None, to_host(gamma), to_host(beta), 1e-5)
        expected[1] = 0
        check(out, expected, dtype)
        assert np.isnan(to_host(out)[4]).all() and not np.isnan(to_host(out)[[0, 2, 3, 5]]).any(), name

        s = x.copy()
        madd = R.additive_mask(np.arange(2 * d).reshape(2, d) % 5 != 0, 2, d, dtype)
        p, _, _ = R.softmax_stats(to_host(s).reshape(2, 1, 3, d), madd, 0.5)
        A.launch_masked_softmax(s, 3, to_dev(madd.astype(CUDA.compute_dtype(dtype))), True, 0.5)
        check(s, p.reshape(6, d), dtype)


@needs_gpu
def test_launch_fast_path_is_taken_and_equals_numbas_launch(rng):
    """The first launch of a kernel with given argument kinds goes through numba and records the
    compiled kernel (runtime._FAST); the next one marshals the arguments itself: same result."""
    from minifuse.kernels.cuda import runtime
    y, b = to_dev(randn(rng, (5, 40), np.float32, 3.0)), to_dev(randn(rng, 40, np.float32))
    runtime._FAST.clear()
    first = y.copy()
    K.bias_act_(first, b, "gelu_tanh")
    assert len(runtime._FAST) == 1 and all(runtime._FAST.values())
    second = y.copy()
    K.bias_act_(second, b, "gelu_tanh")
    np.testing.assert_array_equal(to_host(second), to_host(first))
    check(second, R.bias_act(to_host(y), to_host(b), "gelu_tanh"), np.float32)


def test_more_rows_than_row_blocks(rng, monkeypatch):
    """Each thread walks several rows (four per step, then the tail) when there are more rows
    than row blocks; forward and backward, with and without bias."""
    from minifuse.kernels.cuda import elementwise as E
    monkeypatch.setattr(E, "ROW_BLOCKS", 2)
    monkeypatch.setattr(E, "PARTS", 3)
    y, g, b = randn(rng, (11, 6), np.float64, 3.0), randn(rng, (11, 6), np.float64), randn(rng, 6, np.float64)
    for bias in (b, None):
        out = K.apply_bias_act(to_dev(y), to_dev(bias), "gelu", K.xp.empty((11, 6)))
        check(out, R.bias_act(y, bias, "gelu"), np.float64)
        dy, db = K.xp.empty((11, 6)), K.xp.empty(6)
        K.bias_act_backward(to_dev(g), to_dev(y), to_dev(bias), "silu", dy, db)
        for got, want in zip((dy, db), R.bias_act_backward(g, y, bias, "silu")):
            check(got, want, np.float64)
    glu = K.bias_glu(to_dev(y), to_dev(b), "silu")
    check(glu, R.bias_glu(y, b, "silu"), np.float64)


def test_layer_norm_backward_more_rows_than_blocks(rng, monkeypatch):
    from minifuse.kernels.cuda import layernorm
    monkeypatch.setattr(layernorm, "LN_PARTS", 2)
    x, g, gamma = randn(rng, (5, 6), np.float64), randn(rng, (5, 6), np.float64), randn(rng, 6, np.float64)
    xhat, rstd = R.layer_norm_stats(x, None, 1e-5)
    dx, dgamma, dbeta = K.xp.empty((5, 6)), K.xp.empty(6), K.xp.empty(6)
    K.residual_layer_norm_backward(to_dev(g), to_dev(xhat), to_dev(rstd), to_dev(gamma), dx, dgamma, dbeta)
    for got, want in zip((dx, dgamma, dbeta), R.layer_norm_backward(g, xhat, rstd, gamma)):
        check(got, want, np.float64)


def test_softmax_forward_needs_contiguous_scores(rng):
    s = to_dev(randn(rng, (1, 1, 2, 6), np.float32))[..., ::2]
    madd = K.mask_add("f", None, 1, 3, ("s", s))
    with pytest.raises(ValueError, match="softmax_forward: 's' must be C-contiguous"):
        K.softmax_forward(s, madd, False, 1.0, K.xp.empty((1, 1, 2), np.float32), K.xp.empty((1, 1, 2), np.float32))


@pytest.mark.parametrize("name", ["s", "dp"])
def test_softmax_backward_needs_contiguous_scores(rng, name):
    arrays = {n: to_dev(randn(rng, (1, 1, 2, 6), np.float32)) for n in ("s", "dp")}
    arrays[name] = arrays[name][..., ::2]
    arrays["s" if name == "dp" else "dp"] = arrays["s" if name == "dp" else "dp"][..., :3].copy()
    madd = K.mask_add("f", None, 1, 3, ("s", arrays["s"]))
    stats = K.xp.ones((1, 1, 2), np.float32)
    o = to_dev(randn(rng, (1, 1, 2, 4), np.float32))
    with pytest.raises(ValueError, match=f"softmax_backward: '{name}' must be C-contiguous"):
        K.softmax_backward(arrays["s"], arrays["dp"], madd, False, 1.0, stats, stats, o, o)


@pytest.mark.parametrize("config", ["64x64", "128x128"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiled_gemm_matches_reference(rng, config, dtype):
    from minifuse.bench.tiled_gemm import CONFIGS, tiled_linear_act
    assert config in CONFIGS
    # 70 x 20 @ 20 x 9: edge tiles in every direction, K not a multiple of the k-step
    x, w, b = randn(rng, (70, 20), dtype), randn(rng, (9, 20), dtype), randn(rng, 9, dtype)
    got = tiled_linear_act(*map(to_dev, (x, w, b)), "gelu", config=config)
    check(got, R.linear_act(x, w, b, "gelu"), dtype)
    check(tiled_linear_act(to_dev(x), to_dev(w), None, "none", config=config), R.linear_act(x, w, None, "none"),
          dtype)


def test_tiled_gemm_checks_its_arguments(rng):
    from minifuse.bench.tiled_gemm import tiled_linear_act
    x = to_dev(randn(rng, (4, 3), np.float32))
    with pytest.raises(ValueError, match="tiled_linear_act: 'config' must be one of"):
        tiled_linear_act(x, to_dev(randn(rng, (2, 3), np.float32)), None, "none", config="32x32")
    with pytest.raises(ValueError, match=r"'weight' has shape \(2, 5\), expected \(M, K\) with K = 3"):
        tiled_linear_act(x, to_dev(randn(rng, (2, 5), np.float32)), None, "none")
    assert tiled_linear_act(x[:0], to_dev(randn(rng, (2, 3), np.float32)), None, "relu").shape == (0, 2)


def test_numpy_is_patched_for_numba_cuda():
    # numba-cuda 0.30 names np.row_stack, which NumPy 2.5 removed (runtime.py)
    assert np.row_stack is not None


def test_packed_row_moves_use_the_widest_word_every_row_fits():
    """Packing's row copies view rows as the widest unsigned words that every row of every array
    is made of (aligned starts, whole words), else the elements as they are; the packed attention's
    scatter and gather through them equal the elements' copies (tests/kernels covers the values)."""
    P = importlib.import_module("minifuse.kernels.cuda.packing")
    a = to_dev(np.zeros((4, 768), np.float16))
    assert [w.dtype for w in P._as_words(a, to_dev(np.zeros((9, 768), np.float16)))] == [np.uint64] * 2
    assert P._as_words(a[:, 1:767])[0].dtype == np.uint16            # starts 2 bytes past a word
    assert P._as_words(a[:, 2:766])[0].dtype == np.uint32
    assert P._as_words(to_dev(np.zeros((3, 6), np.float16)))[0].dtype == np.uint32
    rows12 = to_dev(np.zeros((4, 3), np.float32))[:, :2]             # 8-byte rows 12 bytes apart
    assert [w.dtype for w in P._as_words(a[:, :4], rows12)] == [np.uint32] * 2   # the word both fit
    strided = a[:, ::2]
    assert P._as_words(strided)[0] is strided                         # elements not adjacent: as they are
