"""mf.autocast (PyTorch's policy): GEMMs in float16, softmax / LayerNorm / reductions in float32,
mixed operands promoted, float32 master weights and gradients; a small transformer trained under
autocast with GradScaler follows the float32 loss curve. On the device of tests/testdevice.py."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
import minifuse.nn.functional as F
from minifuse import optim
from testdevice import DEVICE

KIND = mf.Device(DEVICE).type


HALF = [pytest.param(mf.float16, id="float16"),
        pytest.param(mf.bfloat16, id="bfloat16", marks=pytest.mark.skipif(
            mf.bfloat16 is None, reason="bfloat16: needs ml_dtypes"))]


@pytest.mark.parametrize("dtype", HALF)
def test_the_policy_of_each_kind_of_op(dtype):
    mf.manual_seed(0)
    lin = nn.Linear(4, 3).to(DEVICE)
    x = mf.randn(2, 4).to(DEVICE)
    with mf.autocast(KIND, dtype=dtype):
        assert mf.is_autocast_enabled(KIND) and mf.get_autocast_dtype(KIND) == dtype
        y = lin(x)
        assert y.dtype == dtype                                         # the GEMM and its bias
        assert x.matmul(lin.weight.T).dtype == dtype
        assert F.softmax(y).dtype == mf.float32 and F.log_softmax(y).dtype == mf.float32
        assert F.layer_norm(y, (3,)).dtype == mf.float32 and y.sum().dtype == mf.float32
        assert (x[:, :3] + y).dtype == mf.float32                       # promoted to the widest
        assert F.gelu(y).dtype == dtype                                 # elementwise: its input's dtype
    assert not mf.is_autocast_enabled(KIND)
    with pytest.raises(TypeError, match="dtypes differ"):
        x[:, :3] + y                                                    # outside autocast: refused as before
    y.float().sum().backward()
    assert lin.weight.grad.dtype == mf.float32 and lin.bias.grad.dtype == mf.float32


def test_enable_nesting_decorator_and_other_devices():
    other = "cuda" if KIND == "cpu" else "cpu"
    x = mf.randn(2, 4).to(DEVICE)
    w = mf.randn(3, 4).to(DEVICE)
    with mf.autocast(other):
        assert x.matmul(w.T).dtype == mf.float32                       # only its own device type
    with mf.autocast(KIND):
        with mf.autocast(KIND, enabled=False):
            assert x.matmul(w.T).dtype == mf.float32
        assert x.matmul(w.T).dtype == mf.float16

    @mf.autocast(KIND)
    def f(a, b):
        return a.matmul(b.T)
    assert f(x, w).dtype == mf.float16 and x.matmul(w.T).dtype == mf.float32
    with pytest.raises(ValueError, match="device_type"):
        mf.autocast("tpu")
    with pytest.raises(ValueError, match="dtype"):
        mf.autocast(KIND, dtype=mf.float64)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: nn.TransformerLayer(8, 2, 12, fused_training=True), id="TransformerLayer"),
    pytest.param(lambda: nn.MLP(8, "swiglu", backend="fused"), id="MLP-swiglu"),
    pytest.param(lambda: nn.FusedLinear(8, 6, "gelu", fused_training=True), id="FusedLinear")])
def test_fused_training_under_autocast_matches_the_taped_path(make):
    """Where the backend's kernels take the autocast dtype (float16 on CUDA), the fused training
    functions run under autocast with the same policy as the taped ops: GEMMs and their epilogues
    in float16, LayerNorm in float32, gradients back to the float32 weights. Elsewhere (the CPU's
    kernels take float32/float64) the layer trains through the taped ops."""
    from minifuse.fusions.layer import FusedLayer
    from minifuse.fusions.linear import FusedLinearAct
    from minifuse.fusions.mlp import FusedMLP
    from minifuse.kernels import registry
    mf.manual_seed(4)
    fused = make().to(DEVICE)
    taped = make().to(DEVICE)
    taped.load_state_dict(fused.state_dict())
    x = mf.randn(2, 3, 8).to(DEVICE)
    results = []
    for layer, on in ((fused, True), (taped, False)):
        with mf.nn.fusion(on), mf.autocast(KIND):
            y = layer(x)
        results.append((y, layer))
        (y.float() ** 2).mean().backward()
    (yf, lf), (yt, lt) = results
    assert yf.dtype == yt.dtype
    half_kernels = mf.float16 in registry.for_array(x.data).dtypes
    node = yf.grad_fn.fn
    assert (node in (FusedLayer, FusedMLP, FusedLinearAct)) == half_kernels, node
    np.testing.assert_allclose(yf.detach().float().numpy(), yt.detach().float().numpy(), rtol=2e-2, atol=2e-2)
    for (name, pf), pt in zip(lf.named_parameters(), lt.parameters()):
        assert pf.grad.dtype == mf.float32, name
        scale = max(1.0, float(np.abs(pt.grad.numpy()).max()))
        np.testing.assert_allclose(pf.grad.numpy(), pt.grad.numpy(), rtol=3e-2, atol=3e-2 * scale, err_msg=name)


def test_layers_under_autocast_take_the_taped_path_and_keep_float32_weights():
    mf.manual_seed(1)
    layer = nn.TransformerLayer(8, 2, 12, fused_training=True).to(DEVICE)
    x = mf.randn(2, 3, 8).to(DEVICE)
    mask = mf.tensor([[1, 1, 0], [1, 1, 1]]).to(DEVICE)
    with mf.no_grad():
        want = layer(x, mask).numpy()
        with mf.autocast(KIND):
            got = layer(x, mask)
    assert got.dtype == mf.float32                                     # ends in LayerNorm: float32
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-2, atol=2e-2)
    with mf.autocast(KIND):
        loss = (layer(x, mask) ** 2).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == mf.float32 for p in layer.parameters())


def _train(use_autocast, steps=40):
    mf.manual_seed(7)
    model = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 16))
    layer = nn.TransformerLayer(16, 2, 32)
    head = nn.Linear(16, 1)
    params = list(model.parameters()) + list(layer.parameters()) + list(head.parameters())
    for m in (model, layer, head):
        m.to(DEVICE)
    opt = optim.Adam(params, lr=3e-3)
    scaler = mf.amp.GradScaler(init_scale=2.0 ** 10, enabled=use_autocast)
    rng = np.random.default_rng(0)
    x = mf.tensor(rng.standard_normal((8, 5, 6)).astype(np.float32)).to(DEVICE)
    y = mf.tensor(np.sin(rng.standard_normal((8, 5, 1))).astype(np.float32)).to(DEVICE)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        with mf.autocast(KIND, enabled=use_autocast):
            loss = F.mse_loss(head(layer(model(x))).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach().numpy()))
    return np.array(losses)


def test_training_under_autocast_follows_the_float32_loss_curve():
    full, mixed = _train(False), _train(True)
    assert full[-1] < 0.5 * full[0]                                    # it learns
    # float16 GEMMs: the curves agree within 1% of the starting loss at every step (measured on the
    # CPU: 3.2e-4 of it at most over the 40 steps)
    np.testing.assert_allclose(mixed, full, rtol=0, atol=0.01 * full[0])


def test_a_fused_function_under_autocast_its_kernels_cannot_run_says_so():
    """Called directly under autocast where the backend's kernels lack the autocast dtype (float16
    on the CPU), a fused function refuses with the reason instead of blaming a float32 input."""
    from minifuse import fusions
    from minifuse.kernels import registry
    x, w = mf.randn(4, 8).to(DEVICE), mf.randn(6, 8, requires_grad=True).to(DEVICE)
    with mf.autocast(KIND):
        if mf.float16 in registry.for_array(x.data).dtypes:
            assert fusions.fused_linear_act(x, w, None, "relu").dtype == mf.float16
        else:
            with pytest.raises(TypeError, match=r"fused_linear_act: under mf.autocast\('cpu', float16\).*"
                                                r"do not take \(float32, float64\)"):
                fusions.fused_linear_act(x, w, None, "relu")
    assert fusions.fused_linear_act(x, w, None, "relu").dtype == mf.float32    # outside: as before
