"""The fused nodes' CUDA-graph replay (``minifuse.fusions.node_graphs``): an eager training loop
whose layers (the one-node transformer layer, the fused MLP) replay their node from graphs
computes, bit for bit, what the same loop computes with every call run as written (float32,
float16 and bfloat16 autocast, a padding mask whose values change, packed rows, frozen
parameters, an empty batch, NaN and Inf inputs), a signature whose buffers are taken runs as
written, a retained graph's second backward is the first's, a node inside another runs as
written, and nothing is captured inside a user's CUDA graph."""
import copy

import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
from cudatest import needs_gpu
from minifuse.fusions import node_graphs

pytestmark = needs_gpu


@pytest.fixture(autouse=True)
def fresh():
    node_graphs.clear()
    yield
    node_graphs.clear()
    node_graphs.set_enabled(True)


def _batches(rng, shape, n, lengths=None):
    out = []
    for i in range(n):
        x = mf.tensor(rng.standard_normal(shape).astype(np.float32), device="cuda", requires_grad=True)
        dy = mf.tensor(rng.standard_normal(shape).astype(np.float32), device="cuda")
        mask = None
        if lengths is not None:
            keep = np.arange(shape[1])[None, :] < np.roll(lengths, i)[:, None]   # new values, same shape
            mask = mf.tensor(keep).to("cuda")
        out.append((x, dy, mask))
    return out


def _train(layer, batches, dtype, replay, packed=False):
    """SGD steps of ``layer`` on ``batches``: every output, input gradient and parameter
    gradient, and the parameters after the steps, as host arrays."""
    node_graphs.set_enabled(replay)
    opt = mf.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=0.05)
    seen = []
    for x, dy, mask in batches:
        opt.zero_grad()
        with nn.packing(packed), mf.autocast("cuda", dtype, enabled=dtype is not None):
            y = layer(x) if mask is None else layer(x, mask)
        y.backward(dy)
        seen += [y.detach().numpy(), x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()
                                                        if p.grad is not None]
        x.grad = None
        opt.step()
    return seen + [p.detach().numpy() for p in layer.parameters()]


def _same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def _captured():
    return [p for p in node_graphs._PLANS.values() if p.backward_graph is not None]


@pytest.mark.parametrize("dtype", [None, mf.float16, mf.bfloat16], ids=["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "mask"])
def test_replayed_steps_are_the_written_steps_bit_for_bit(dtype, masked, rng):
    mf.manual_seed(0)
    layer = nn.TransformerLayer(64, 4, 128, fused_training=True).to("cuda")
    twin = copy.deepcopy(layer)
    batches = _batches(rng, (3, 16, 64), 5, np.array([16, 9, 3]) if masked else None)
    want = _train(twin, batches, dtype, replay=False)
    assert not node_graphs._PLANS
    got = _train(layer, batches, dtype, replay=True)
    # one signature: the MLP inside the layer's node runs as written (the layer is replayed)
    assert len(_captured()) == 1 and len(node_graphs._PLANS) == 1 and not node_graphs.REFUSED
    _same(got, want)


@pytest.mark.parametrize("dtype", [None, mf.float16, mf.bfloat16], ids=["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("activation, bias", [("swiglu", False), ("gelu", True)])
def test_the_fused_mlp_replays_bit_for_bit(dtype, activation, bias, rng):
    mf.manual_seed(5)
    mlp = nn.MLP(64, activation, expansion_factor=1.5, bias=bias, backend="fused").to("cuda")
    twin = copy.deepcopy(mlp)
    batches = _batches(rng, (3, 16, 64), 5)
    want = _train(twin, batches, dtype, replay=False)
    got = _train(mlp, batches, dtype, replay=True)
    assert len(_captured()) == 1 and not node_graphs.REFUSED
    _same(got, want)


def test_a_layer_with_dropout_replays_its_mlp_node(rng):
    """With active dropout the layer is five nodes; its fused MLP is one of them and replays."""
    mf.manual_seed(6)
    layer = nn.TransformerLayer(32, 2, 64, dropout=0.1, fused_training=True).to("cuda")
    batches = _batches(rng, (2, 8, 32), 4)
    mf.manual_seed(7)
    want = _train(copy.deepcopy(layer), batches, None, replay=False)
    mf.manual_seed(7)
    got = _train(layer, batches, None, replay=True)
    assert [k[0] for k in node_graphs._PLANS] == ["mlp"] and len(_captured()) == 1
    _same(got, want)


NODES = pytest.mark.parametrize("make", [lambda: nn.TransformerLayer(32, 2, 64, fused_training=True),
                                        lambda: nn.MLP(32, "swiglu", backend="fused")], ids=["layer", "mlp"])


@NODES
def test_nan_and_inf_replay_as_written(make, rng):
    mf.manual_seed(8)
    model = make().to("cuda")
    batches = _batches(rng, (2, 8, 32), 5)
    for (x, dy, _), bad in zip(batches[2:], (np.nan, np.inf, -np.inf)):    # after the capture
        x.data[0, 3, 5] = bad
    for dtype in (None, mf.float16):
        node_graphs.clear()
        want = _train(copy.deepcopy(model), batches, dtype, replay=False)
        got = _train(copy.deepcopy(model), batches, dtype, replay=True)
        assert len(_captured()) == 1
        assert any(np.isnan(a).any() for a in got)
        _same(got, want)


@NODES
def test_an_empty_batch_trains_as_written(make, rng):
    mf.manual_seed(9)
    model = make().to("cuda")
    batches = _batches(rng, (0, 8, 32), 4)
    want = _train(copy.deepcopy(model), batches, None, replay=False)
    _same(_train(model, batches, None, replay=True), want)
    assert all(not np.any(a) for a in want[2:5])      # no tokens: zero parameter gradients


def test_packed_rows_replay_when_the_lengths_repeat(rng):
    mf.manual_seed(1)
    layer = nn.TransformerLayer(32, 2, 64, fused_training=True).to("cuda")
    twin = copy.deepcopy(layer)
    lengths = np.array([8, 5, 8])          # every roll of these: the same total and longest length
    batches = _batches(rng, (3, 8, 32), 4, lengths)
    want = _train(twin, batches, mf.float16, replay=False, packed=True)
    got = _train(layer, batches, mf.float16, replay=True, packed=True)
    assert len(_captured()) == 1
    _same(got, want)


def test_frozen_parameters_get_no_gradient_and_the_rest_theirs(rng):
    mf.manual_seed(2)
    layer = nn.TransformerLayer(32, 2, 64, fused_training=True).to("cuda")
    for p in (layer.ln1.weight, layer.ln1.bias):
        p.requires_grad_(False)
    twin = copy.deepcopy(layer)
    batches = _batches(rng, (2, 8, 32), 4)
    _same(_train(layer, batches, mf.float16, replay=True), _train(twin, batches, mf.float16, replay=False))
    assert layer.ln1.weight.grad is None and len(_captured()) == 1


def test_a_call_whose_buffers_are_taken_runs_as_written(rng):
    mf.manual_seed(3)
    layer = nn.TransformerLayer(32, 2, 64, fused_training=True).to("cuda")
    x, dy, _ = _batches(rng, (2, 8, 32), 1)[0]
    for _ in range(3):                     # captured and replayed
        layer(x).backward(dy)
    assert len(_captured()) == 1
    grads = {}
    for replay in (True, False):
        node_graphs.set_enabled(replay)
        for p in layer.parameters():
            p.grad = None
        x.grad = None
        y1, y2 = layer(x), layer(x * 2.0)  # the second while the first holds the buffers
        (y1 * 3.0).backward(dy)
        y2.backward(dy)
        grads[replay] = [y1.detach().numpy(), y2.detach().numpy(), x.grad.numpy()] + \
            [p.grad.numpy() for p in layer.parameters()]
    _same(grads[True], grads[False])


def test_a_retained_graph_backpropagates_twice_the_same(rng):
    mf.manual_seed(4)
    layer = nn.TransformerLayer(32, 2, 64, fused_training=True).to("cuda")
    x, dy, _ = _batches(rng, (2, 8, 32), 1)[0]
    for _ in range(3):
        layer(x).backward(dy)
    y = layer(x)
    for p in layer.parameters():
        p.grad = None
    x.grad = None
    y.backward(dy, retain_graph=True)
    first = [x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()]
    y.backward(dy)
    second = [x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()]
    _same([2 * a for a in first], second)


def test_nothing_is_captured_inside_a_users_graph(rng):
    layer = nn.TransformerLayer(32, 2, 64, fused_training=True).to("cuda")
    x, dy, _ = _batches(rng, (2, 8, 32), 1)[0]
    layer(x).backward(dy)                  # warm-up: kernels compiled, GEMMs timed
    node_graphs.clear()
    g = mf.cuda.CUDAGraph()
    with mf.cuda.graph(g):
        for _ in range(3):
            layer(x).backward(dy)
    assert not node_graphs._PLANS
    g.replay()


def test_a_call_while_the_gpu_is_behind_runs_as_written(rng):
    """Where the GPU has not reached the signature's previous call the host is not what bounds
    the loop, and the replay would only add its copies: those calls run as written."""
    import cupy
    mlp = nn.MLP(32, "swiglu", backend="fused").to("cuda")
    x, dy, _ = _batches(rng, (2, 8, 32), 1)[0]
    for _ in range(3):                     # written, captured, replayed
        mlp(x).backward(dy)
    (plan,) = node_graphs._PLANS.values()
    assert plan.replays == 1
    big = cupy.ones((8192, 8192), cupy.float32)
    for _ in range(3):
        big @ big                          # about 20 ms of GPU work queued before each call
        mlp(x).backward(dy)
    # the first of them finds the GPU past its previous call (replayed), the others do not
    assert plan.replays == 2
