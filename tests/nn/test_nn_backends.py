"""Every layer's fused inference path on every kernel backend equals its taped path: the CPU, and
the CUDA kernels (on NumPy arrays under the Numba CUDA simulator, routed there by the registry; on
CuPy arrays on a GPU)."""
import contextlib

import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
from minifuse.kernels import registry

GPU = mf.cuda_available()


def placed(name):
    """(device for the tensors, context that sends their arrays to backend `name`)."""
    if name == "cpu":
        return "cpu", contextlib.nullcontext()
    if GPU:
        return "cuda", contextlib.nullcontext()
    return "cpu", registry.route("numpy", "cuda")       # the simulator's CUDA kernels on NumPy arrays


BACKENDS = [pytest.param(n, marks=pytest.mark.skipif(n not in registry.available(), reason="no CUDA kernels"))
            for n in ("cpu", "cuda")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_layers_fused_equal_taped_on_each_backend(backend, monkeypatch):
    device, routed = placed(backend)
    calls = []
    kernels = registry.get(backend).kernels
    for name in ("linear_act", "mlp", "residual_layer_norm", "attention_packed", "transformer_layer"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    mf.manual_seed(2)
    x = mf.randn(2, 3, 8).to(device)
    mask = mf.tensor([[1, 1, 0], [1, 1, 1]]).to(device)
    layers = [(nn.FusedLinear(8, 5, "gelu"), (x,)), (nn.LayerNorm(8), (x,)), (nn.MLP(8, "swiglu"), (x,)),
              (nn.MultiHeadAttention(8, 2), (x, mask)), (nn.TransformerLayer(8, 2, 12), (x, mask))]
    with routed, mf.no_grad(), nn.packing(False):      # the padded kernels (packed: tests/nn/test_nn_packing.py)
        for layer, args in layers:
            layer.to(device)
            fused = layer(*args).numpy()
            with nn.fusion(False):
                taped = layer(*args).numpy()
            np.testing.assert_allclose(fused, taped, rtol=1e-4, atol=1e-5, err_msg=type(layer).__name__)
    assert calls == ["linear_act", "residual_layer_norm", "mlp", "linear_act", "attention_packed", "linear_act",
                     "transformer_layer"]


# Fused bfloat16 against the same layer's taped ops in bfloat16 and against float64 (the layer's
# bfloat16 parameters and input, widened): within 3e-2 of the float64 result's scale (measured
# under the simulator: at most 7e-3). bfloat16 is a dtype of the CUDA kernels only.
BF16_TOL = 3e-2


def _bf16_close(got, want, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=BF16_TOL, atol=BF16_TOL * scale, err_msg=what)


@pytest.mark.skipif(mf.bfloat16 is None, reason="bfloat16: needs ml_dtypes")
@pytest.mark.skipif("cuda" not in registry.available(), reason="no CUDA kernels")
@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_bfloat16_layers_fused_on_cuda_follow_taped_and_float64(packing, monkeypatch):
    import copy
    device, routed = placed("cuda")
    calls = []
    kernels = registry.get("cuda").kernels
    for name in ("linear_act", "mlp", "residual_layer_norm", "attention_packed", "transformer_layer",
                 "transformer_layer_varlen", "attend_varlen"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    mf.manual_seed(2)
    x = mf.randn(2, 3, 8).to(mf.bfloat16).to(device)
    mask = mf.tensor([[1, 1, 0], [1, 1, 1]]).to(device)
    layers = [(nn.FusedLinear(8, 5, "gelu"), ()), (nn.LayerNorm(8), ()), (nn.MLP(8, "swiglu"), ()),
              (nn.MultiHeadAttention(8, 2), (mask,)), (nn.TransformerLayer(8, 2, 12), (mask,)),
              (nn.TransformerEncoder(dict(d_model=8, num_heads=2, intermediate_size=12), 2), (mask,))]
    with routed, mf.no_grad(), nn.packing(packing):
        for layer, extra in layers:
            what = type(layer).__name__
            layer.to(device).to(mf.bfloat16)
            del calls[:]
            fused = layer(x, *extra)
            assert fused.dtype == mf.bfloat16 and calls, what          # a fused kernel ran
            with nn.fusion(False):
                taped = layer(x, *extra)
                want = copy.deepcopy(layer).to(mf.float64)(x.to(mf.float64), *extra)
            _bf16_close(fused.numpy(), want.numpy(), f"{what}: fused against float64")
            _bf16_close(fused.numpy(), taped.numpy(), f"{what}: fused against taped")
            if packing and extra:
                assert "transformer_layer_varlen" in calls or "attend_varlen" in calls, what
