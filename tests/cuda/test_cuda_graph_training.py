"""``mf.cuda.graph`` / ``mf.cuda.CUDAGraph``: a fused training step (forward and backward, in
float32, bfloat16 and under autocast) captured once replays the eager step's gradients, for new
inputs written into the captured arrays too; the taped ops' products are refused with the reason;
and, on any machine, the errors of the API itself."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
from cudatest import GPU, needs_gpu
from minifuse import fusions


def test_the_graph_api_refuses_what_it_cannot_do():
    g = mf.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="nothing captured yet"):
        g.replay()
    with pytest.raises(TypeError, match="'cuda_graph' must be a mf.cuda.CUDAGraph, got object"):
        with mf.cuda.graph(object()):
            pass
    if not GPU:
        with pytest.raises(RuntimeError, match=r"pip install 'minifuse\[cuda\]'|no NVIDIA GPU|need a real GPU"):
            with mf.cuda.graph(g):
                pass


def _layer_step(rng, dtype, half):
    layer = nn.TransformerLayer(64, 4, 128, fused_training=True).to("cuda")
    if dtype is not None:
        layer = layer.to(dtype)
    x = mf.tensor(rng.standard_normal((3, 16, 64)).astype(np.float32)).to("cuda")
    x = x if dtype is None else x.to(dtype)
    params = list(layer.parameters())
    dy = []

    def step():
        for p in params:
            p.grad = None
        with mf.autocast("cuda", mf.float16, enabled=half):
            y = layer(x)
        if not dy:
            dy.append(mf.tensor(rng.standard_normal(y.shape).astype(np.float32)).to("cuda").to(y.dtype))
        y.backward(dy[0])
    return step, x, params


def _mlp_step(rng, dtype, half):
    def dev(shape, scale):
        return mf.tensor((rng.standard_normal(shape) * scale).astype(np.float32), device="cuda", requires_grad=True)
    x, w1, b1, w2 = dev((40, 32), 1.0), dev((96, 32), 0.2), dev((96,), 0.1), dev((32, 48), 0.2)
    dy = mf.tensor(rng.standard_normal((40, 32)).astype(np.float32)).to("cuda")
    params = [x, w1, b1, w2]

    def step():
        for p in params:
            p.grad = None
        fusions.fused_mlp(x, w1, b1, w2, None, "swiglu").backward(dy)
    return step, x, params


CASES = {"layer float32": (_layer_step, None, False), "layer autocast float16": (_layer_step, None, True),
         "layer bfloat16": (_layer_step, "bfloat16", False), "swiglu mlp float32": (_mlp_step, None, False)}


@needs_gpu
@pytest.mark.parametrize("case", list(CASES))
def test_a_captured_fused_training_step_replays_the_eager_gradients(case, rng):
    make, dtype, half = CASES[case]
    if dtype == "bfloat16":
        if mf.bfloat16 is None:
            pytest.skip("bfloat16 needs ml_dtypes")
        dtype = mf.bfloat16
    step, x, params = make(rng, dtype, half)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype is None and not half else dict(rtol=2e-2, atol=2e-2)
    step()                                             # warm-up: compiles, times the GEMMs
    eager = [p.grad.numpy().astype(np.float64) for p in params]
    g = mf.cuda.CUDAGraph()
    with mf.cuda.graph(g):
        step()                                         # recorded, not run
    g.replay()
    for p, want in zip(params, eager):
        np.testing.assert_allclose(p.grad.numpy().astype(np.float64), want, **tol)
    # a new batch written into the captured input: the replay computes its gradients
    x.data[...] = mf.tensor(rng.standard_normal(x.shape).astype(np.float32)).to("cuda").to(x.dtype).data
    g.replay()
    replayed = [p.grad.numpy().astype(np.float64) for p in params]
    step()                                             # eagerly, on the same new batch
    for got, p in zip(replayed, params):
        np.testing.assert_allclose(got, p.grad.numpy().astype(np.float64), **tol)
    assert not np.allclose(replayed[0], eager[0])      # (the first parameter's gradient reads x)


@needs_gpu
def test_the_taped_ops_products_are_refused_with_the_reason(rng):
    layer = nn.TransformerLayer(32, 4, 64).to("cuda")            # taped: CuPy's matmul (cuBLAS)
    x = mf.tensor(rng.standard_normal((2, 8, 32)).astype(np.float32)).to("cuda")
    layer(x).sum().backward()
    g = mf.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="mf.cuda.graph: .*CuPy cannot capture cuBLAS"):
        with mf.cuda.graph(g):
            layer(x).sum().backward()
    with pytest.raises(RuntimeError, match="nothing captured yet"):
        g.replay()
    y = layer(x)                                                  # the stream is usable again
    assert np.isfinite(y.detach().numpy()).all()
