"""mf.compile on every kernel backend: the CUDA backend's fused nodes (under the Numba CUDA
simulator on NumPy arrays in CI, on CuPy arrays on a GPU) equal eager; CUDA-graph replay per input
shape on a GPU; trace restores every submodule's train/eval mode."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
from minifuse import graph as G
from minifuse.kernels import registry

CUDA_KERNELS = "cuda" in registry.available()
GPU = mf.cuda_available()


def eager(model, *inputs):
    with mf.no_grad(), nn.fusion(False):
        return model(*inputs)


def small_encoder(layers=2, d=8, heads=2, ff=12):
    return nn.TransformerEncoder(dict(d_model=d, num_heads=heads, intermediate_size=ff), layers)


def inputs(b=2, s=3, d=8, device="cpu"):
    x = mf.randn(b, s, d)
    mask = mf.ones(b, s, dtype=mf.int64)
    mask.data[0, -1] = 0
    return x.to(device), mask.to(device)


class Mixed(nn.Module):
    """An encoder layer in training mode beside a head in eval mode."""

    def __init__(self):
        super().__init__()
        self.body = nn.TransformerLayer(8, 2, 12, dropout=0.1)
        self.head = nn.Sequential(nn.Linear(8, 4), nn.Dropout(0.5))

    def forward(self, x):
        return self.head(self.body(x))


def test_trace_restores_each_submodules_mode():
    model = Mixed()
    model.head.eval()
    before = {name: m.training for name, m in model.named_modules()}
    G.trace(model, mf.randn(2, 3, 8))
    assert {name: m.training for name, m in model.named_modules()} == before
    assert model.training and model.body.training and not model.head.training and not model.head[1].training


@pytest.mark.skipif(not CUDA_KERNELS, reason="needs the CUDA kernels (NUMBA_ENABLE_CUDASIM=1 or a GPU)")
def test_compile_on_the_cuda_backend_equals_eager():
    mf.manual_seed(3)
    model = small_encoder()
    device = "cuda" if GPU else "cpu"          # the simulator's CUDA kernels take NumPy arrays
    model.to(device)
    x, mask = inputs(device=device)
    fast = mf.compile(model, x, mask, backend="cuda")
    assert fast.backend.name == "cuda" and fast.graph_for(x, mask).ops() == ["FusedTransformerLayer"] * 2
    np.testing.assert_allclose(fast(x, mask).numpy(), eager(model, x, mask).numpy(), rtol=1e-5, atol=1e-5)


def test_compile_picks_the_backend_of_its_inputs():
    model = small_encoder(1)
    x, mask = inputs()
    assert mf.compile(model, x, mask).backend.name == "cpu"
    with pytest.raises(RuntimeError, match="cuda_graph=True needs"):
        mf.compile(model, x, mask, cuda_graph=True)(x, mask)


@pytest.mark.skipif(not GPU, reason="needs an NVIDIA GPU with CuPy")
def test_compile_replays_one_cuda_graph_per_shape():
    mf.manual_seed(4)
    model = small_encoder().to("cuda")         # head size 4: odd offsets, still captured
    fast = mf.compile(model, backend="cuda", cuda_graph=True)
    for b, s in ((2, 3), (1, 5), (2, 3)):
        x, mask = inputs(b, s, device="cuda")
        first, again = fast(x, mask), fast(x, mask)
        want = eager(model, x, mask).numpy()
        np.testing.assert_allclose(first.numpy(), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(again.numpy(), first.numpy())
    assert len(fast._replays) == 2
    x, mask = inputs(2, 3, device="cuda")
    y = fast(x, mask)
    x.data[...] = 0                          # outputs are copies; inputs are read at each call
    np.testing.assert_allclose(fast(x, mask).numpy(), eager(model, x, mask).numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(y.numpy(), fast(x, mask).numpy())
    for p in model.parameters():             # a replaced parameter drops the graphs
        p.data = p.data * 2
    np.testing.assert_allclose(fast(x, mask).numpy(), eager(model, x, mask).numpy(), rtol=1e-5, atol=1e-5)
    assert fast._replays[fast._key((x, mask))]


@pytest.mark.skipif(not GPU, reason="needs an NVIDIA GPU with CuPy")
def test_compile_cuda_graph_falls_back_to_eager_where_capture_fails():
    mf.manual_seed(5)
    model = small_encoder(1).to("cuda").to(mf.float64)       # float64 GEMMs: CuPy's cuBLAS
    x, mask = inputs(device="cuda")
    x = x.to(mf.float64)
    fast = mf.compile(model, backend="cuda", cuda_graph=True)
    with pytest.warns(RuntimeWarning, match="without a CUDA graph"):
        y = fast(x, mask)
    np.testing.assert_allclose(y.numpy(), eager(model, x, mask).numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fast(x, mask).numpy(), y.numpy(), rtol=1e-12, atol=0)
