"""Replayed eager calls (kernels/cuda/replay.py): from the third call with a signature on, the
padded and the packed transformer layers replay their recorded launches, and give the bits the
layer computes as written, for new inputs each call, in every dtype, with and without a mask,
on both attention routes of the packed layer and inside a CUDA graph capture; a recording that
misses GPU work is refused; arguments a signature does not describe, and bad ones, run (and
fail) as written."""
import numpy as np
import pytest
from cudatest import needs_gpu

import minifuse as mf
from minifuse.kernels.weights import LayerWeights

pytestmark = needs_gpu

D, F, HEADS = 64, 128, 4
DTYPES = [np.dtype(np.float16), np.dtype(np.float32)] + ([mf.bfloat16] if mf.bfloat16 is not None else [])


@pytest.fixture(autouse=True)
def fresh_plans():
    from minifuse.kernels.cuda import replay
    replay.clear()
    yield
    replay.set_enabled(True)
    replay.clear()


def _dev(rng, shape, dtype, scale=1.0):
    import cupy
    return cupy.asarray((rng.standard_normal(shape) * scale).astype(np.float32)).astype(dtype)


def _weights(rng, dtype):
    shapes = [(3 * D, D), (3 * D,), (D, D), (D,), (D,), (D,), (F, D), (F,), (D, F), (D,), (D,), (D,)]
    return LayerWeights(*[_dev(rng, s, dtype, 0.1) for s in shapes])


def _as_written(fn, *args):
    from minifuse.kernels.cuda import replay
    replay.set_enabled(False)
    try:
        return fn(*args)
    finally:
        replay.set_enabled(True)


def _bits(a):
    return a.reshape(-1).view(np.uint8).get()


def _plans():
    from minifuse.kernels.cuda import replay
    return list(replay._PLANS.values())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("masked", [False, True])
def test_layer_replays_bit_for_bit(rng, dtype, masked):
    import cupy
    from minifuse.kernels import cuda as K
    from minifuse.kernels.cuda import replay
    w = _weights(rng, dtype)
    mask = None
    if masked:
        mask = cupy.ones((3, 17), bool)
        mask[0, 9:] = False
        mask[2, 1:] = False
    outs = []
    for _ in range(5):                 # plain, recorded, then replayed: new x every call
        x = _dev(rng, (3, 17, D), dtype)
        got = K.transformer_layer(x, w, mask, HEADS, 1e-5, "gelu")
        want = _as_written(K.transformer_layer, x, w, mask, HEADS, 1e-5, "gelu")
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(_bits(got), _bits(want))
        outs.append(got)
    assert len({o.data.ptr for o in outs}) == len(outs)          # a new output every call
    assert [type(p) for p in _plans()] == [replay.Plan], replay.REFUSED


@pytest.mark.parametrize("lengths, padded", [([5, 17, 9], True), ([1] * 12 + [40], False)],
                         ids=["padded-route", "varlen-kernel"])
def test_packed_layer_replays_bit_for_bit(rng, lengths, padded):
    import cupy
    from minifuse.kernels import cuda as K
    from minifuse.kernels.cuda import packing, replay
    dtype = np.dtype(np.float16)
    w = _weights(rng, dtype)
    mask = cupy.asarray(np.arange(max(lengths))[None, :] < np.array(lengths)[:, None])
    for _ in range(4):
        x = _dev(rng, (len(lengths), max(lengths), D), dtype)
        rows, pk = K.pack(x, mask)                                # a new Packing (new device offsets) each time
        assert packing.pads(pk) == padded
        got = K.transformer_layer_varlen(rows, pk, w, HEADS, 1e-5, "gelu")
        want = _as_written(K.transformer_layer_varlen, rows, pk, w, HEADS, 1e-5, "gelu")
        np.testing.assert_array_equal(_bits(got), _bits(want))
    assert [type(p) for p in _plans()] == [replay.Plan], replay.REFUSED


def test_other_weights_or_shapes_get_their_own_plans(rng):
    from minifuse.kernels import cuda as K
    from minifuse.kernels.cuda import replay
    dtype = np.dtype(np.float16)
    records = [_weights(rng, dtype), _weights(rng, dtype)]
    for _ in range(3):
        for w in records:
            for s in (8, 12):
                x = _dev(rng, (2, s, D), dtype)
                np.testing.assert_array_equal(_bits(K.transformer_layer(x, w, None, HEADS, 1e-5, "gelu")),
                                              _bits(_as_written(K.transformer_layer, x, w, None, HEADS, 1e-5, "gelu")))
    assert [type(p) for p in _plans()] == [replay.Plan] * 4, replay.REFUSED


def test_an_input_at_another_alignment_gets_its_own_plan(rng):
    from minifuse.kernels import cuda as K
    dtype = np.dtype(np.float16)
    w = _weights(rng, dtype)
    big = _dev(rng, (2 * 8 * D + 1,), dtype)
    for _ in range(3):
        for x in (big[:-1].reshape(2, 8, D), big[1:].reshape(2, 8, D)):      # 2 bytes apart
            np.testing.assert_array_equal(_bits(K.transformer_layer(x, w, None, HEADS, 1e-5, "gelu")),
                                          _bits(_as_written(K.transformer_layer, x, w, None, HEADS, 1e-5, "gelu")))
    assert len(_plans()) == 2


def test_a_recording_that_misses_gpu_work_is_refused(rng, monkeypatch):
    """A primitive that writes its result with a CuPy copy (not a recorded step): its replay would
    leave the NaN bytes the check fills the buffers with, so no plan is kept and every call runs
    as written."""
    from minifuse.kernels import cuda as K
    real = K.apply_residual_layer_norm

    def through_a_copy(x2, res2, bias, gamma, beta, eps, out2, **kw):
        tmp = real(x2, res2, bias, gamma, beta, eps, out2.copy(), **kw)
        out2[...] = tmp
        return out2
    monkeypatch.setattr(K, "apply_residual_layer_norm", through_a_copy)
    dtype = np.dtype(np.float16)
    w = _weights(rng, dtype)
    for _ in range(4):
        x = _dev(rng, (2, 8, D), dtype)
        np.testing.assert_array_equal(_bits(K.transformer_layer(x, w, None, HEADS, 1e-5, "gelu")),
                                      _bits(_as_written(K.transformer_layer, x, w, None, HEADS, 1e-5, "gelu")))
    assert _plans() == [False]


def test_replays_inside_a_cuda_graph(rng):
    from minifuse.kernels import cuda as K
    from minifuse.kernels.cuda import replay
    dtype = np.dtype(np.float16)
    w = _weights(rng, dtype)
    x = _dev(rng, (2, 8, D), dtype)
    for _ in range(3):
        K.transformer_layer(x, w, None, HEADS, 1e-5, "gelu")
    assert [type(p) for p in _plans()] == [replay.Plan], replay.REFUSED     # what the capture replays
    graph = K.CudaGraph(K.transformer_layer, x, w, None, HEADS, 1e-5, "gelu")
    x[...] = _dev(rng, (2, 8, D), dtype)
    got = graph.replay()
    np.testing.assert_array_equal(_bits(got), _bits(_as_written(K.transformer_layer, x, w, None, HEADS, 1e-5, "gelu")))


def test_arguments_outside_the_signature_run_and_fail_as_written(rng):
    import cupy
    from minifuse.kernels import cuda as K
    dtype = np.dtype(np.float16)
    w = _weights(rng, dtype)
    x = _dev(rng, (2, 8, D), dtype)
    mask = cupy.ones((2, 8), bool)
    for _ in range(3):
        K.transformer_layer(x, w, mask, HEADS, 1e-5, "gelu")
    numbers = cupy.ones((2, 8), cupy.int32)
    numbers[0, 3] = 2
    with pytest.raises(ValueError, match="'key_mask' must hold only 0 .padding. and 1"):
        K.transformer_layer(x, w, numbers, HEADS, 1e-5, "gelu")
    with pytest.raises(ValueError, match="key_mask"):
        K.transformer_layer(x, w, cupy.ones((2, 9), bool), HEADS, 1e-5, "gelu")
    with pytest.raises(ValueError, match="eps"):
        K.transformer_layer(x, w, mask, HEADS, float("nan"), "gelu")
    with pytest.raises(ValueError, match="'num_heads' must be a positive int"):   # unhashable: no signature
        K.transformer_layer(x, w, mask, [HEADS], 1e-5, "gelu")
    for _ in range(3):
        K.transformer_layer(x, w, mask, HEADS, 1.0, "gelu")
    with pytest.raises(TypeError, match="'eps' must be a real number, got True"):   # True == 1.0, another signature
        K.transformer_layer(x, w, mask, HEADS, True, "gelu")
    host = np.ones((2, 8), bool)                              # a host mask: copied each call, as written
    np.testing.assert_array_equal(_bits(K.transformer_layer(x, w, host, HEADS, 1e-5, "gelu")),
                                  _bits(_as_written(K.transformer_layer, x, w, mask, HEADS, 1e-5, "gelu")))
    strided = _dev(rng, (2, 16, D), dtype)[:, ::2]            # not contiguous: as written
    np.testing.assert_array_equal(_bits(K.transformer_layer(strided, w, mask, HEADS, 1e-5, "gelu")),
                                  _bits(_as_written(K.transformer_layer, strided, w, mask, HEADS, 1e-5, "gelu")))


def test_disabled_keeps_no_plans(rng):
    from minifuse.kernels import cuda as K
    from minifuse.kernels.cuda import replay
    w = _weights(rng, np.dtype(np.float32))
    x = _dev(rng, (2, 8, D), np.float32)
    replay.set_enabled(False)
    for _ in range(3):
        K.transformer_layer(x, w, None, HEADS, 1e-5, "gelu")
    assert not replay.is_enabled() and _plans() == []


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation, with_bias, into", [("gelu_tanh", True, False), ("gelu", True, True),
                                                         ("none", False, True), ("relu", True, False)])
def test_linear_act_replays_bit_for_bit(rng, dtype, activation, with_bias, into):
    """linear_act (FusedLinear's eager call): a new output each call, or written into ``out=``,
    which is then one of the plan's inputs."""
    from minifuse.kernels import cuda as K
    from minifuse.kernels.cuda import replay
    w, b = _dev(rng, (48, D), dtype, 0.1), (_dev(rng, (48,), dtype, 0.1) if with_bias else None)
    outs = []
    for _ in range(4):
        x = _dev(rng, (3, 7, D), dtype)
        out = _dev(rng, (3, 7, 48), dtype) if into else None
        got = K.linear_act(x, w, b, activation, out=out)
        assert got is out if into else got.shape == (3, 7, 48)
        got = got.copy()
        want = _as_written(K.linear_act, x, w, b, activation)
        np.testing.assert_array_equal(_bits(got), _bits(want))
        outs.append(got)
    assert [type(p) for p in _plans()] == [replay.Plan], replay.REFUSED
    assert (_plans()[0].out_input is not None) == into


def test_linear_act_into_an_overlapping_out_fails_as_written(rng):
    from minifuse.kernels import cuda as K
    dtype = np.dtype(np.float32)
    w = _dev(rng, (D, D), dtype, 0.1)
    buf = _dev(rng, (2 * 8 * D + D,), dtype)
    x, out = buf[:2 * 8 * D].reshape(2, 8, D), buf[D:].reshape(2, 8, D)
    for _ in range(3):
        K.linear_act(x, w, None, "none", out=_dev(rng, (2, 8, D), dtype))
    with pytest.raises(ValueError, match="'out' overlaps 'x'"):
        K.linear_act(x, w, None, "none", out=out)


def test_a_refused_recording_into_out_leaves_the_calls_result(rng, monkeypatch):
    """The NaN check of a recording writes into the call's ``out=``; when it refuses the plan,
    ``out`` gets the call's own result back."""
    from minifuse.kernels import cuda as K
    real = K.linear

    def through_a_copy(x2, w, bias, activation, out2):
        out2[...] = real(x2, w, bias, activation, out2.copy())
        return out2
    monkeypatch.setattr(K, "linear", through_a_copy)
    dtype = np.dtype(np.float16)
    w, b = _dev(rng, (48, D), dtype, 0.1), _dev(rng, (48,), dtype, 0.1)
    for _ in range(4):
        x = _dev(rng, (5, D), dtype)
        got = K.linear_act(x, w, b, "gelu_tanh", out=_dev(rng, (5, 48), dtype))
        np.testing.assert_array_equal(_bits(got), _bits(_as_written(K.linear_act, x, w, b, "gelu_tanh")))
    assert _plans() == [False]
