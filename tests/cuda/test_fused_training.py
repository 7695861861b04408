"""The fused training functions (minifuse.fusions) on CUDA against the same functions on the CPU:
forward and every gradient, float32 within 1e-4 and float64 within 1e-10 relative, on odd sizes,
size 1 and an empty batch; one tape node whose kernels are the CUDA set; NaN propagation; the
float16 and bfloat16 input stores; the layers (MLP backend='fused', FusedLinear and
TransformerLayer fused_training) training on CUDA, in float32 and in bfloat16; float16 and
bfloat16 against float64; argument and mixed-device errors.

On a GPU the tensors live on the device (CuPy, cuBLAS GEMMs). Under the Numba CUDA simulator
(NUMBA_ENABLE_CUDASIM=1, no CuPy) the tensors stay NumPy arrays and `on_cuda()` routes NumPy
arrays to the CUDA backend (`minifuse.kernels.registry.route("numpy", "cuda")`): the same Python
code of each Function then drives the CUDA kernels, with NumPy's matmul in place of cuBLAS.
"""
import contextlib
import warnings

import numpy as np
import pytest

import minifuse as mf
from cudatest import GPU, SIMULATOR, needs_gpu, needs_kernels, to_dev, to_host
from minifuse import fusions as FU
from minifuse import nn
from minifuse.fusions import node_graphs
from minifuse.fusions.mlp import FusedMLP
from minifuse.kernels import registry
from minifuse.kernels.activations import GATES, NAMES

pytestmark = [needs_kernels, pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaIRAssumptionWarning")]

if SIMULATOR or GPU:
    from fusions.test_fusions import CASES, EPS       # tests/fusions: the cases and their builders
    from fusions.test_wiring import _nodes

RTOL = {np.float32: 1e-4, np.float64: 1e-10}
DEVICE = "cuda" if GPU else "cpu"
# Half precision against float64, relative to the result's scale: float16 2e-2; bfloat16 6e-2
# (8 mantissa bits to float16's 11; measured under the simulator: at most 1.2e-2).
HALF_RTOL = {"float16": 2e-2, "bfloat16": 6e-2}
HALF = [pytest.param(np.dtype(np.float16), id="float16"),
        pytest.param(mf.bfloat16, id="bfloat16", marks=pytest.mark.skipif(mf.bfloat16 is None,
                                                                          reason="bfloat16: needs ml_dtypes"))]


@pytest.fixture(autouse=True)
def quiet_simulator():
    # the simulator evaluates math.exp in NumPy scalars, which warn on overflow to inf
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def on_cuda():
    """Within: the fused functions run their CUDA kernels (see the module docstring)."""
    return registry.route("numpy", "cuda") if SIMULATOR else contextlib.nullcontext()


def _cuda_kernels():
    return registry.get("cuda").kernels


def _run(fn, arrays, g, device):
    """Output, gradients of every input (zeros where none) and the output's tape node."""
    ts = [mf.tensor(a, device=device, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(mf.tensor(g, device=device))
    got = [np.asarray(out.detach())] + [np.asarray(t.grad) if t.grad is not None else np.zeros(t.shape)
                                        for t in ts]
    return got, out.grad_fn


def _close(got, want, dtype):
    rtol = RTOL[dtype]
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, (k, a.shape, b.shape, a.dtype, b.dtype)
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1.0)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=f"output {k}")


def _cpu_and_cuda(fn, arrays, g):
    want, _ = _run(fn, arrays, g, "cpu")
    with on_cuda():
        got, node = _run(fn, arrays, g, DEVICE)
    assert node.meta[0] is _cuda_kernels()           # the node ran (and will backward) on the CUDA set
    return got, want


def _case_arrays(name, lead, n, dtype, seed=0):
    build, _, unfused = CASES[name]
    rng = np.random.default_rng(seed)
    arrays = build(rng, lead, n, dtype, False)
    g = rng.standard_normal(unfused(*[mf.tensor(a) for a in arrays]).shape).astype(dtype)
    return arrays, g


def _names():
    return sorted(CASES) if SIMULATOR or GPU else []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", _names())
def test_equals_cpu(name, dtype):
    """Odd sizes (widths 3, 5, 6 and the like), two leading dims."""
    arrays, g = _case_arrays(name, (2, 3), 3, dtype)
    got, want = _cpu_and_cuda(CASES[name][1], arrays, g)
    _close(got, want, dtype)


# one case per kernel path
SOME = ["bias_gelu_tanh", "gelu_no_bias", "swiglu", "bias_swiglu", "weighted_swiglu", "residual_layer_norm",
        "layer_norm_no_residual", "linear_none_preact", "linear_relu_recompute", "linear_glu_preact",
        "mlp_gelu_recompute", "mlp_swiglu_preact"]


@pytest.mark.parametrize("lead, n", [((1,), 1), ((0,), 2), ((2, 0), 1)])
@pytest.mark.parametrize("name", SOME)
def test_size_one_and_empty_batch(name, lead, n):
    arrays, g = _case_arrays(name, lead, n, np.float32, seed=1)
    got, want = _cpu_and_cuda(CASES[name][1], arrays, g)
    _close(got, want, np.float32)


@pytest.mark.parametrize("name", SOME)
def test_rows_walked_and_columns_across_blocks(name, monkeypatch):
    """More rows than row blocks (each thread or block walks several rows, each row-block
    writes one row of partial sums) and rows wider than a block (the weighted SwiGLU's
    per-row weight gradient adds the blocks of a row)."""
    from minifuse.kernels.cuda import elementwise, layernorm
    monkeypatch.setattr(elementwise, "PARTS", 3)
    monkeypatch.setattr(layernorm, "LN_PARTS", 2)
    monkeypatch.setattr(elementwise, "ROW_BLOCKS", 2)
    arrays, g = _case_arrays(name, (7,), 70 if GPU else 9, np.float32, seed=2)
    got, want = _cpu_and_cuda(CASES[name][1], arrays, g)
    _close(got, want, np.float32)


@pytest.mark.parametrize("name", ["bias_gelu_tanh", "bias_gelu_none", "weighted_swiglu", "residual_layer_norm",
                                  "linear_silu_preact", "linear_swiglu_recompute", "mlp_gelu_preact"])
def test_nan_propagates_like_cpu(name):
    arrays, g = _case_arrays(name, (4,), 4, np.float32, seed=3)
    arrays[0][1, 2] = np.nan
    got, want = _cpu_and_cuda(CASES[name][1], arrays, g)
    assert np.isnan(got[0]).any()
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


@pytest.mark.parametrize("store", HALF)
@pytest.mark.parametrize("name, call", [
    ("bias_gelu_tanh", lambda y, b, st: FU.bias_gelu(y, b, input_store_dtype=st)),
    ("residual_layer_norm", lambda x, r, g, b, st: FU.residual_layer_norm(x, r, g, b, EPS, st)),
    ("mlp_swiglu_recompute", lambda *t: FU.fused_mlp(*t[:-1], "swiglu", "recompute", t[-1])),
])
def test_input_store_half(name, call, store):
    """Saved in float16 or bfloat16 on the device too; the same rounded inputs give the CPU's
    gradients."""
    arrays, g = _case_arrays(name, (5,), 4, np.float32, seed=4)
    got, want = _cpu_and_cuda(lambda *t: call(*t, store), arrays, g)
    _close(got, want, np.float32)
    with on_cuda():
        out = call(*[mf.tensor(a, device=DEVICE, requires_grad=True) for a in arrays], store)
    saved = out.grad_fn._saved
    if out.grad_fn.fn is FusedMLP:              # (the arrays of the node_graphs state it saved)
        saved = node_graphs.kept(saved[0])
    assert any(getattr(a, "dtype", None) == store for a in saved)


def _attention_run(batch, seq, heads, dh, dtype, mask, mask_tensor=False):
    """mask_tensor: the mask as a Tensor on the device of qkv (an array is copied there)."""
    rng = np.random.default_rng(7)
    qkv = rng.standard_normal((batch, seq, 3 * heads * dh)).astype(dtype)
    g = rng.standard_normal((batch, seq, heads * dh)).astype(dtype)
    as_given = (lambda t: mf.tensor(mask, device=t.device)) if mask_tensor else (lambda t: mask)
    return _cpu_and_cuda(lambda t: FU.fused_attention(t, as_given(t), heads), [qkv], g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_equals_cpu(dtype, masked):
    """Second row of keys all padded when masked: P uniform and finite, as on the CPU."""
    mask = np.array([[1, 1, 0], [0, 0, 0]]) if masked else None
    got, want = _attention_run(2, 3, 2, 3, dtype, mask)
    assert all(np.isfinite(a).all() for a in got)
    _close(got, want, dtype)


def test_attention_empty_batch_and_tensor_mask():
    got, want = _attention_run(0, 3, 1, 2, np.float32, np.ones((0, 3)))
    _close(got, want, np.float32)
    got, want = _attention_run(1, 3, 1, 2, np.float32, np.array([[1, 0, 1]]), mask_tensor=True)
    _close(got, want, np.float32)


def test_cuda_mathfn_covers_the_activation_table():
    """The CUDA kernels look activations up by name (codes are the CPU's own): every row of the
    table, and both gates, have a forward and a slope in each compute dtype."""
    from minifuse.kernels.cuda import mathfn
    for ct in (np.float32, np.float64):
        assert set(mathfn.activations(ct)) == set(NAMES) and set(mathfn.derivatives(ct)) == set(NAMES)
        assert set(GATES) <= set(mathfn.activations(ct))


@pytest.mark.parametrize("activation", NAMES)
def test_bias_act_backward_kernel_at_extremes(activation):
    """The slope of every activation against the CPU kernel, NaN, +-inf and large values included."""
    cpu, gpu = registry.get("cpu").kernels, _cuda_kernels()
    y = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 50.0, -50.0, 1e-30, -100.0, 90.0],
                  np.linspace(-6, 6, 12)], np.float32)
    g = np.linspace(-2, 2, 24).reshape(2, 12).astype(np.float32)
    b = np.zeros(12, np.float32)
    want_dy, want_db = np.empty_like(y), np.empty(12, np.float32)
    cpu.bias_act_backward(g, y, b, activation, want_dy, want_db)
    dy, db = to_dev(np.empty_like(y)), to_dev(np.empty(12, np.float32))
    gpu.bias_act_backward(to_dev(g), to_dev(y), to_dev(b), activation, dy, db)
    for a, e in ((to_host(dy), want_dy), (to_host(db), want_db)):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        ok = ~np.isnan(e)
        np.testing.assert_allclose(a[ok], e[ok], rtol=1e-5, atol=1e-6)


# ---- layers ------------------------------------------------------------------------------------

def _layer_step(module, device, *args):
    """(op classes on the tape, [output, parameter gradients...]) of one step of ``module`` on
    ``device`` (a copy: the module itself stays where it is)."""
    import copy
    m = copy.deepcopy(module).to(device)
    args = [mf.tensor(a, device=device) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    out = m(*args)
    kinds = [fn.__name__ for fn in _nodes(out)]
    out.backward(mf.tensor(np.random.default_rng(0).standard_normal(out.shape).astype(np.float32), device=device))
    return sorted(kinds), [np.asarray(out.detach())] + [np.asarray(p.grad) for p in m.parameters()]


def _layer_cpu_and_cuda(module, *args):
    kinds_cpu, want = _layer_step(module, "cpu", *args)
    with on_cuda():
        kinds, got = _layer_step(module, DEVICE, *args)
    assert kinds == kinds_cpu
    _close(got, want, np.float32)
    return kinds


def test_mlp_fused_backend_on_cuda(rng):
    mf.manual_seed(0)
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    kinds = _layer_cpu_and_cuda(nn.MLP(6, "swiglu", backend="fused"), x)
    assert kinds == ["FusedMLP"]


def test_fused_linear_on_cuda(rng):
    mf.manual_seed(1)
    kinds = _layer_cpu_and_cuda(nn.FusedLinear(5, 3, "gelu", fused_training=True),
                                rng.standard_normal((4, 5)).astype(np.float32))
    assert kinds == ["FusedLinearAct"]


FUSED_LAYER = ["FusedLayer"]


@pytest.mark.parametrize("packing", [False, True])
def test_transformer_layer_fused_training_on_cuda(rng, packing):
    mf.manual_seed(2)
    layer = nn.TransformerLayer(8, 2, 12, fused_training=True)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    with nn.packing(packing):
        kinds = _layer_cpu_and_cuda(layer, rng.standard_normal((2, 3, 8)).astype(np.float32), mask)
    if packing:   # the layer as one node on the real rows, scattered back to (B, S)
        assert kinds == ["FusedLayer", "Reshape", "ScatterRows"]
    else:         # the layer as one node, and the taped Where that zeroes the padded positions
        assert kinds == ["FusedLayer", "Where"]


@pytest.mark.parametrize("autocast", [None] + HALF)
@pytest.mark.parametrize("masked", [False, True])
def test_fused_layer_on_cuda_equals_the_five_functions(masked, autocast):
    """fused_transformer_layer on the CUDA kernels computes what the five fused functions compute,
    in float32 and under mf.autocast (float16 / bfloat16 GEMMs, float32 LayerNorms, float32
    gradients for the float32 parameters)."""
    from fusions.test_fused_layer import _grads, five_nodes, layer_arrays, one_node
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    ws = layer_arrays(rng, 8, 12, np.float32)
    g = rng.standard_normal((2, 3, 8)).astype(np.float32)
    mask = np.array([[1, 1, 0], [1, 1, 1]]) if masked else None
    kind = "cuda" if GPU else "cpu"
    results = []
    for layer in (one_node, five_nodes):
        with on_cuda(), mf.autocast(kind, autocast or mf.float16, enabled=autocast is not None):
            out, got = _grads(lambda x, w, m, h: layer(x.to(DEVICE), w.map(lambda t: t.to(DEVICE)), m, h),
                              x, ws, mask, 2, g)
        results.append([np.asarray(a) for a in got[:1]] + got[2:])
        assert out.dtype == mf.float32
    # the same kernels in the same order: only the order in which two gradients of one array
    # are added differs (the engine's, the node's); and under autocast the weight and bias
    # gradients of the GEMMs (all but the LayerNorms', results 5, 6, 11, 12), which the five
    # nodes round to the half dtype before their cast node widens them, where the one node
    # keeps the float32 sums: one rounding apart
    rounding = 1e-5 if autocast is None else 2.0 ** -10 if autocast == mf.float16 else 2.0 ** -7   # their eps
    for k, (a, b) in enumerate(zip(*results)):
        assert a.dtype == b.dtype == np.float32, (k, a.dtype, b.dtype)
        rtol = 1e-5 if k in (0, 5, 6, 11, 12) else rounding
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1.0)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=f"output/gradient {k}")


@pytest.mark.skipif(mf.bfloat16 is None, reason="bfloat16: needs ml_dtypes")
@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("layer, fused_nodes", [
    (lambda: nn.FusedLinear(8, 3, "gelu", fused_training=True), ["FusedLinearAct"]),
    (lambda: nn.MLP(8, "swiglu", backend="fused"), ["FusedMLP"]),
    (lambda: nn.TransformerLayer(8, 2, 12, fused_training=True), FUSED_LAYER),
], ids=["FusedLinear", "MLP", "TransformerLayer"])
def test_bfloat16_layers_train_fused_on_cuda(layer, fused_nodes, packing):
    """A bfloat16 layer trains through the fused functions on CUDA: its output and parameter
    gradients (bfloat16) follow the same layer's taped ops in bfloat16 and the float64 result of
    its rounded parameters and input."""
    import copy
    mf.manual_seed(2)
    module = layer().to(mf.bfloat16)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 8)).astype(mf.bfloat16)
    g = rng.standard_normal((2, 3, module(mf.tensor(x)).shape[-1]))
    extra = (np.array([[1, 1, 0], [1, 0, 0]]),) if isinstance(module, nn.TransformerLayer) else ()

    def step(dtype, fused):
        m = copy.deepcopy(module).to(DEVICE).to(dtype)
        with on_cuda(), nn.packing(packing), nn.fusion(fused):
            out = m(mf.tensor(x, device=DEVICE).to(dtype), *extra)
            kinds = [fn.__name__ for fn in _nodes(out)]
            out.backward(mf.tensor(g.astype(dtype), device=DEVICE))
        return kinds, [np.asarray(out.detach())] + [np.asarray(p.grad) for p in m.parameters()]

    kinds, fused = step(mf.bfloat16, True)
    assert set(fused_nodes) <= set(kinds), kinds
    _, taped = step(mf.bfloat16, False)
    _, want = step(np.float64, False)
    _half_close(fused, want, mf.bfloat16)
    _half_close(fused, [t.astype(np.float64) for t in taped], mf.bfloat16)


def test_layers_choose_fused_training_on_cuda():
    """The layers train through the CUDA kernels' fused functions for CUDA tensors (NumPy ones
    routed to CUDA under the simulator); with fusion off, through the taped ops."""
    from minifuse.nn.dispatch import training_kernels
    x = mf.ones(2, 4, device=DEVICE)
    with on_cuda():
        assert training_kernels(x) is _cuda_kernels()
        with nn.fusion(False):
            assert training_kernels(x) is None


# ---- on a GPU only: CuPy tensors ------------------------------------------------------------------

@needs_gpu
@pytest.mark.parametrize("call", [
    lambda c, h: FU.bias_gelu(c(2, 3), h(3)),
    lambda c, h: FU.weighted_swiglu(c(2, 4), h(2, 1)),
    lambda c, h: FU.fused_linear_act(c(2, 3), h(4, 3)),
    lambda c, h: FU.fused_mlp(c(2, 3), c(4, 3), None, h(2, 4), None),
    lambda c, h: FU.residual_layer_norm(c(2, 3), h(2, 3), c(3), c(3)),
    lambda c, h: FU.residual_layer_norm(h(2, 3), None, h(3), c(3)),
    lambda c, h: FU.fused_attention(c(1, 2, 6), mf.ones(1, 2), 1),
])
def test_mixed_devices_raise_the_one_device_error(call):
    cuda = lambda *s: mf.ones(*s, device="cuda")  # noqa: E731
    with pytest.raises(RuntimeError, match=r"all tensors must be on one device; argument '\w+' is on "
                                           r"(cuda:0|cpu), '\w+' on (cpu|cuda:0)"):
        call(cuda, mf.ones)


def _half_close(got, want, dtype):
    rtol = HALF_RTOL[dtype.name]
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == dtype and a.shape == b.shape, (k, a.dtype, a.shape, b.shape)
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1.0)
        np.testing.assert_allclose(a.astype(np.float64), b, rtol=rtol, atol=rtol * scale, err_msg=f"output {k}")


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", [n for n in SOME if n != "weighted_swiglu"] if SIMULATOR or GPU else [])
def test_half_on_cuda_follows_float64(name, dtype):
    """CUDA's kernels take float16 and bfloat16 (computed in float32, row statistics kept in
    float32, GEMMs accumulated in float32): the outputs and every gradient follow the float64 CPU
    result of the same rounded inputs within the half dtype's precision."""
    arrays, g = _case_arrays(name, (2, 3), 5, np.float64, seed=2)
    arrays, g = [a.astype(dtype) for a in arrays], g.astype(dtype)
    want, _ = _run(CASES[name][1], [a.astype(np.float64) for a in arrays], g.astype(np.float64), "cpu")
    with on_cuda():
        got, node = _run(CASES[name][1], arrays, g, DEVICE)
    assert node.meta[0] is _cuda_kernels()
    _half_close(got, want, dtype)


@pytest.mark.skipif(mf.bfloat16 is None, reason="bfloat16: needs ml_dtypes")
@pytest.mark.parametrize("masked", [False, True])
def test_attention_bfloat16_follows_float64(masked):
    """fused_attention in bfloat16 (its products through the backend's bmm, float32 accumulation)
    against float64 on the CPU; a fully padded row of keys stays finite."""
    rng = np.random.default_rng(7)
    qkv = rng.standard_normal((2, 3, 18)).astype(mf.bfloat16)
    g = rng.standard_normal((2, 3, 6)).astype(mf.bfloat16)
    mask = np.array([[1, 1, 0], [0, 0, 0]]) if masked else None
    call = lambda t: FU.fused_attention(t, mask, 2)  # noqa: E731
    want, _ = _run(call, [qkv.astype(np.float64)], g.astype(np.float64), "cpu")
    with on_cuda():
        got, node = _run(call, [qkv], g, DEVICE)
    assert node.meta[0] is _cuda_kernels()
    assert all(np.isfinite(a.astype(np.float64)).all() for a in got)
    _half_close(got, want, mf.bfloat16)


def test_float16_is_refused_on_the_cpu():
    with pytest.raises(TypeError, match="bias_gelu: 'y' must be float32 or float64, got float16"):
        FU.bias_gelu(mf.ones(2, 3, dtype=mf.float16), None)
