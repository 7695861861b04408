"""float16 through every layer: outputs and gradients stay float16 (no op promotes a half input),
and the values follow the same layer in float32 within float16's precision. On the device of
tests/testdevice.py (MINIFUSE_TEST_DEVICE=cuda: fused CUDA kernels in float16 under no_grad)."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
from minifuse.kernels import activations as A
from testdevice import DEVICE

MASKED = ("MultiHeadAttention", "TransformerLayer", "TransformerEncoder")
LAYERS = {
    "Linear": lambda: nn.Linear(16, 8),
    "FusedLinear-gelu": lambda: nn.FusedLinear(16, 8, "gelu"),
    "FusedLinear-gelu-erf": lambda: nn.FusedLinear(16, 8, "gelu", approximate="none"),
    "FusedLinear-silu-fused-training": lambda: nn.FusedLinear(16, 8, "silu", fused_training=True),
    "MLP-gelu": lambda: nn.MLP(16, "gelu"),
    "MLP-swiglu-fused": lambda: nn.MLP(16, "swiglu", backend="fused"),
    "LayerNorm": lambda: nn.LayerNorm(16),
    "MultiHeadAttention": lambda: nn.MultiHeadAttention(16, 2),
    "TransformerLayer": lambda: nn.TransformerLayer(16, 2, 24),
    "TransformerLayer-fused-training": lambda: nn.TransformerLayer(16, 2, 24, fused_training=True),
    "TransformerEncoder": lambda: nn.TransformerEncoder(dict(d_model=16, num_heads=2, intermediate_size=24), 2),
}


def _close(half, full, rtol=3e-2):
    half, full = half.astype(np.float64), full.astype(np.float64)
    np.testing.assert_allclose(half, full, rtol=rtol, atol=rtol * max(1.0, float(np.abs(full).max())))


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_layer_runs_in_float16(name, grad):
    mf.manual_seed(3)
    full = LAYERS[name]().to(DEVICE)
    half = LAYERS[name]().to(DEVICE)
    half.load_state_dict(full.state_dict())
    half.to(mf.float16)
    x = mf.randn(2, 5, 16).to(DEVICE)
    mask = mf.tensor(np.array([[1, 1, 1, 0, 0], [1] * 5])).to(DEVICE)
    extra = (mask,) if name.split("-")[0] in MASKED else ()
    if not grad:
        with mf.no_grad():
            y16, y32 = half(x.to(mf.float16), *extra), full(x, *extra)
        assert y16.dtype == mf.float16
        _close(y16.numpy(), y32.numpy())
        return
    y16, y32 = half(x.to(mf.float16), *extra), full(x, *extra)
    assert y16.dtype == mf.float16
    y16.sum().backward()
    y32.sum().backward()
    for (pname, p16), p32 in zip(half.named_parameters(), full.parameters()):
        assert p16.grad is not None and p16.grad.dtype == mf.float16, pname
        _close(p16.grad.numpy(), p32.grad.numpy(), rtol=6e-2)


@pytest.mark.parametrize("name", [a.name for a in A.TABLE if a.name != "none"])
def test_taped_activations_keep_float16(name):
    x = (mf.randn(3, 7) * 3).to(DEVICE).to(mf.float16).requires_grad_()
    y = nn.functional.activation(name)(x)
    assert y.dtype == mf.float16
    y.sum().backward()
    assert x.grad.dtype == mf.float16
    want = A.BY_NAME[name].forward(np, x.detach().numpy().astype(np.float64))
    _close(y.detach().numpy(), want, rtol=1e-2)
