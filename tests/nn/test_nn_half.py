"""float16 and bfloat16 through every layer: outputs and gradients stay in the half dtype (no op
promotes a half input), and the values follow the same layer in float32 within that dtype's
precision. On the device of tests/testdevice.py (MINIFUSE_TEST_DEVICE=cuda: fused CUDA kernels in
float16 and bfloat16 under no_grad, fused training functions in either with gradients, the other
layers through the taped ops, CuPy's). bfloat16 needs ml_dtypes. The CUDA kernels in bfloat16
under the simulator: tests/nn/test_nn_backends.py and tests/cuda/test_fused_training.py."""
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


HALF = [pytest.param(mf.float16, id="float16"),
        pytest.param(mf.bfloat16, id="bfloat16", marks=pytest.mark.skipif(
            mf.bfloat16 is None, reason="bfloat16: needs ml_dtypes"))]
# Tolerances relative to the float32 result's scale: outputs, gradients. bfloat16 keeps 8 mantissa
# bits to float16's 11.
TOL = {"float16": (3e-2, 6e-2), "bfloat16": (1e-1, 2e-1)}


def _close(half, full, rtol=3e-2):
    half, full = half.astype(np.float64), full.astype(np.float64)
    np.testing.assert_allclose(half, full, rtol=rtol, atol=rtol * max(1.0, float(np.abs(full).max())))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_layer_runs_in_half_precision(name, grad, dtype):
    out_tol, grad_tol = TOL[str(dtype)]
    mf.manual_seed(3)
    full = LAYERS[name]().to(DEVICE)
    half = LAYERS[name]().to(DEVICE)
    half.load_state_dict(full.state_dict())
    half.to(dtype)
    x = mf.randn(2, 5, 16).to(DEVICE)
    mask = mf.tensor(np.array([[1, 1, 1, 0, 0], [1] * 5])).to(DEVICE)
    extra = (mask,) if name.split("-")[0] in MASKED else ()
    if not grad:
        with mf.no_grad():
            y16, y32 = half(x.to(dtype), *extra), full(x, *extra)
        assert y16.dtype == dtype
        _close(y16.numpy(), y32.numpy(), out_tol)
        return
    y16, y32 = half(x.to(dtype), *extra), full(x, *extra)
    assert y16.dtype == dtype
    y16.sum().backward()
    y32.sum().backward()
    for (pname, p16), p32 in zip(half.named_parameters(), full.parameters()):
        assert p16.grad is not None and p16.grad.dtype == dtype, pname
        _close(p16.grad.numpy(), p32.grad.numpy(), grad_tol)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", [a.name for a in A.TABLE if a.name != "none"])
def test_taped_activations_keep_the_half_dtype(name, dtype):
    x = (mf.randn(3, 7) * 3).to(DEVICE).to(dtype).requires_grad_()
    y = nn.functional.activation(name)(x)
    assert y.dtype == dtype
    y.sum().backward()
    assert x.grad.dtype == dtype
    want = A.BY_NAME[name].forward(np, x.detach().numpy().astype(np.float64))
    _close(y.detach().numpy().astype(np.float64), want, rtol=1e-2 if dtype == mf.float16 else 3e-2)
