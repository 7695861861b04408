"""``mf.cuda.make_graphed_callables``: a graphed layer trains as the eager one does (float32,
under autocast, with a padding mask, through an optimizer and input gradients), a graphed
function gets its arguments' gradients, and every call outside the capture's rules is refused
with the reason; the argument checks on any machine."""
import copy

import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
from cudatest import needs_gpu
from minifuse import fusions

graphed = mf.cuda.make_graphed_callables


def test_the_arguments_are_checked_before_anything_runs():
    x = mf.tensor(np.zeros((2, 4, 8), np.float32))
    layer = nn.TransformerLayer(8, 2, 16, fused_training=True)
    with pytest.raises(TypeError, match="each callable must be a Module or a function, got int"):
        graphed(3, (x,))
    with pytest.raises(TypeError, match="'sample_args' must be a tuple of argument tuples, one per callable"):
        graphed((layer, layer), ((x,),))
    with pytest.raises(TypeError, match="each entry of 'sample_args' must be a non-empty tuple of Tensors"):
        graphed(layer, [x])
    with pytest.raises(TypeError, match="sample argument 0 must be a Tensor, got ndarray"):
        graphed(layer, (x.data,))
    with pytest.raises(ValueError, match="sample argument 0 must be on a CUDA device, got cpu"):
        graphed(layer, (x,))
    with pytest.raises(ValueError, match=r"sample argument 0 has no elements \(shape \(0, 4, 8\)\)"):
        graphed(layer, (mf.tensor(np.zeros((0, 4, 8), np.float32)),))
    with pytest.raises(ValueError, match=r"'num_warmup_iters' must be an int >= 1, got 0"):
        graphed(layer, (x,), num_warmup_iters=0)
    dropping = nn.TransformerLayer(8, 2, 16, dropout=0.1, fused_training=True)
    with pytest.raises(ValueError, match=r"active dropout \(attn.dropout, dropout\): every replay would draw "
                                         r"the same mask"):
        graphed(dropping, (x,))


def _data(rng, shape, dtype=np.float32, requires_grad=False):
    return mf.tensor(rng.standard_normal(shape).astype(dtype), device="cuda", requires_grad=requires_grad)


def _train(layer, batches, mask, half, steps_graphed=None):
    """Three SGD steps of ``layer`` (or of its graphed copy) on ``batches``; the parameters after
    them and each step's input gradient."""
    opt = mf.optim.SGD(layer.parameters(), lr=0.1)
    input_grads = []
    for x, dy in batches:
        opt.zero_grad()
        with mf.autocast("cuda", mf.float16, enabled=half):
            y = layer(x, mask) if mask is not None else layer(x)
        y.backward(dy)
        input_grads.append(x.grad.numpy().astype(np.float64))
        x.grad = None
        opt.step()
    return [p.detach().numpy().astype(np.float64) for p in layer.parameters()], input_grads


@needs_gpu
@pytest.mark.parametrize("half", [False, True], ids=["float32", "autocast float16"])
@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "mask"])
def test_a_graphed_layer_trains_as_the_eager_one(half, masked, rng):
    mf.manual_seed(0)
    eager = nn.TransformerLayer(64, 4, 128, fused_training=True).to("cuda")
    layer = copy.deepcopy(eager)
    shape = (3, 16, 64)
    batches = [(_data(rng, shape, requires_grad=True), _data(rng, shape)) for _ in range(3)]
    mask = None
    if masked:
        keep = np.arange(16)[None, :] < np.array([16, 9, 3])[:, None]
        mask = mf.tensor(keep).to("cuda")
    sample = (_data(rng, shape, requires_grad=True),) + ((mask,) if masked else ())
    with nn.packing(False), mf.autocast("cuda", mf.float16, enabled=half):
        g = graphed(layer, sample)
    assert g is layer
    with nn.packing(False):
        want, want_dx = _train(eager, batches, mask, half)
    got, got_dx = _train(layer, batches, mask, half)
    tol = dict(rtol=2e-2, atol=2e-3) if half else dict(rtol=1e-5, atol=1e-6)
    for a, b in zip(got + got_dx, want + want_dx):
        np.testing.assert_allclose(a, b, **tol)
    with mf.no_grad():                                   # inference runs the original forward
        x = batches[0][0]
        np.testing.assert_allclose(layer(*(x,) + ((mask,) if masked else ())).numpy(),
                                   eager(x, mask).numpy(), rtol=1e-5, atol=1e-5)


@needs_gpu
def test_a_graphed_function_returns_its_arguments_gradients(rng):
    x = _data(rng, (40, 32), requires_grad=True)
    w1, w2 = (_data(rng, s, requires_grad=True) for s in ((96, 32), (32, 48)))

    def mlp(x, w1, w2):
        return fusions.fused_mlp(x, w1, None, w2, None, "swiglu")
    fn, again = graphed((mlp, mlp), ((x, w1, w2), (x, w1, w2)))
    assert x.grad is None and w1.grad is None           # the capture leaves the samples' grads alone
    for i in range(3):
        x2 = _data(rng, (40, 32), requires_grad=True)
        if i == 2:                                      # the sample itself, new values written into it
            x.data[...] = x2.data
            x2 = x
        dy = _data(rng, (40, 32))
        fn(x2, w1, w2).backward(dy)
        got = [t.grad.numpy() for t in (x2, w1, w2)]
        for t in (x2, w1, w2):
            t.grad = None
        mlp(x2, w1, w2).backward(dy)
        for a, t in zip(got, (x2, w1, w2)):
            np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-5, atol=1e-6)
        x2.grad = w1.grad = w2.grad = None
    np.testing.assert_allclose(again(x, w1, w2).detach().numpy(), mlp(x, w1, w2).detach().numpy(), rtol=1e-6)


@needs_gpu
def test_calls_outside_the_captures_rules_are_refused(rng):
    layer = nn.TransformerLayer(32, 4, 64, fused_training=True).to("cuda")
    x = _data(rng, (2, 8, 32))
    graphed(layer, (x,))
    with pytest.raises(ValueError, match=r"argument 0 must be like the sample .*shape \(2, 8, 32\)"):
        layer(_data(rng, (2, 9, 32)))
    with pytest.raises(TypeError, match="takes 1 Tensors"):
        layer(x, x)
    with mf.autocast("cuda", mf.float16):
        with pytest.raises(RuntimeError, match="captured at float32 matmul precision 'highest' and CUDA "
                                               "autocast None, called at 'highest' and float16"):
            layer(x)
    y1, y2 = layer(x), layer(x)
    with pytest.raises(RuntimeError, match="backward of an earlier call after a later one overwrote"):
        y1.sum().backward()
    y2.sum().backward()                                  # the latest call's backward is fine
    with pytest.raises(ValueError, match="this callable is graphed already"):
        graphed(layer, (x,))
    with pytest.raises(TypeError, match="cannot be copied or pickled"):
        copy.deepcopy(layer)
    layer.ln1.weight.requires_grad_(False)               # frozen after the capture: still read by the graphs
    for q in layer.parameters():
        q.grad = None
    layer(x).sum().backward()
    assert layer.fc1.weight.grad is not None
    assert layer.ln1.weight.grad is None
    p = layer.ln1.weight
    p.data = p.data.copy()
    with pytest.raises(RuntimeError, match="a parameter's array was replaced after the capture"):
        layer(x)
    frozen = nn.TransformerLayer(32, 4, 64, fused_training=True).to("cuda")
    frozen.fc2.bias.requires_grad_(False)
    graphed(frozen, (x,))
    frozen.fc2.bias.requires_grad_(True)
    with pytest.raises(RuntimeError, match="a parameter requires grad that did not at the capture"):
        frozen(x)
    w = _data(rng, (32, 32), requires_grad=True)
    with pytest.raises(ValueError, match="uses a tensor requiring grad .* neither an argument nor a parameter"):
        graphed(lambda t: fusions.fused_linear_act(t, w), (x,))
