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
