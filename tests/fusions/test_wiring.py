"""Layers that train through the fused functions: same outputs and gradients as the taped path,
fewer nodes on the tape, and the global fusion switch turns them off."""
import numpy as np
import pytest

import minifuse as mf
from minifuse import nn
from minifuse.fusions.layer_norm import ResidualLayerNorm
from minifuse.fusions.linear import FusedLinearAct
from minifuse.fusions.mlp import FusedMLP

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaIRAssumptionWarning")


def _step(module, *args):
    """(the op classes on the tape, [output, parameter gradients...]) of one training step."""
    for p in module.parameters():
        p.grad = None
    out = module(*args)
    kinds = _nodes(out)
    out.backward(mf.tensor(np.random.default_rng(0).standard_normal(out.shape).astype(out.dtype)))
    return kinds, [out.detach().numpy()] + [p.grad.numpy() for p in module.parameters()]


def _nodes(out):
    seen, stack, kinds = set(), [out.grad_fn], []
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        kinds.append(n.fn)
        stack.extend(t.grad_fn for t in n.inputs if t is not None)
    return kinds


def _assert_same(got, want):
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max(initial=0))))


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "glu", "swiglu"])
@pytest.mark.parametrize("bias", [False, True])
def test_mlp_fused_backend(activation, bias):
    mf.manual_seed(0)
    fused = nn.MLP(8, activation, bias=bias, backend="fused")
    plain = nn.MLP(8, activation, bias=bias, backend="unfused")
    plain.load_state_dict(fused.state_dict())
    x = mf.randn(2, 3, 8)
    kinds, got = _step(fused, x)
    _, want = _step(plain, x)
    _assert_same(got, want)
    assert kinds == [FusedMLP]


def test_mlp_fused_backend_with_dropout_is_two_linear_nodes():
    mf.manual_seed(4)
    m = nn.MLP(8, "gelu", dropout=0.5, backend="fused")
    kinds, _ = _step(m, mf.randn(4, 8))
    assert sorted(k.__name__ for k in kinds) == ["FusedLinearAct", "FusedLinearAct", "Mul"]  # Mul: dropout


def test_mlp_fused_recompute_and_float16_store():
    mf.manual_seed(1)
    fused = nn.MLP(8, "swiglu", backend="fused")
    plain = nn.MLP(8, "swiglu", backend="unfused")
    plain.load_state_dict(fused.state_dict())
    x = mf.randn(16, 8)
    _, want = _step(plain, x)
    fused.fused_save = "recompute"
    _assert_same(_step(fused, x)[1], want)
    fused.fused_input_store_dtype = mf.float16
    for a, b in zip(_step(fused, x)[1][1:], want[1:]):
        np.testing.assert_allclose(a, b, atol=1e-2 * float(np.abs(b).max()))


FUSED_PARTS = ["FusedAttention"] + ["FusedLinearAct"] * 2 + ["FusedMLP"] + ["ResidualLayerNorm"] * 2


@pytest.mark.parametrize("packing", [False, True])
def test_transformer_layer_fused_training(packing):
    mf.manual_seed(2)
    fused = nn.TransformerLayer(16, 2, 32, fused_training=True)
    plain = nn.TransformerLayer(16, 2, 32)
    plain.load_state_dict(fused.state_dict())
    x = mf.randn(2, 5, 16)
    mask = np.ones((2, 5))
    mask[:, 3:] = 0
    mask[1, 4:] = 0
    with nn.packing(packing):
        kinds, got = _step(fused, x, mask)
    _, want = _step(plain, x, mask)
    _assert_same(got, want)
    names = sorted(k.__name__ for k in kinds)
    if packing:    # the layer as one node on the real rows, scattered back at the end (x's gather is
        # not recorded: x needs no gradient)
        assert names == ["FusedLayer", "Reshape", "ScatterRows"]
    else:          # the layer as one node, and one taped Where that zeroes the padded positions
        assert names == ["FusedLayer", "Where"]


@pytest.mark.parametrize("packing", [False, True])
def test_transformer_layer_with_dropout_is_the_fused_parts(packing):
    mf.manual_seed(2)
    layer = nn.TransformerLayer(16, 2, 32, dropout=0.1, fused_training=True)
    layer.attn.dropout.p = 0.0          # the attention's fused node stays; the layer's own dropout is taped
    mask = np.ones((2, 5))
    mask[1, 3:] = 0
    with nn.packing(packing):
        kinds, _ = _step(layer, mf.randn(2, 5, 16), mask)
    names = [k.__name__ for k in kinds]
    for part in set(FUSED_PARTS):
        assert names.count(part) == FUSED_PARTS.count(part)
    assert "FusedLayer" not in names


def test_fused_linear_fused_training():
    mf.manual_seed(3)
    fused = nn.FusedLinear(6, 4, "gelu", fused_training=True)
    plain = nn.FusedLinear(6, 4, "gelu")
    plain.load_state_dict(fused.state_dict())
    x = mf.randn(5, 6)
    kinds, got = _step(fused, x)
    _assert_same(got, _step(plain, x)[1])
    assert kinds == [FusedLinearAct]


def test_fusion_switch_off_gives_taped_path():
    m = nn.MLP(8, "swiglu", backend="fused")
    with nn.fusion(False):
        kinds, _ = _step(m, mf.randn(3, 8))
    assert FusedLinearAct not in kinds and FusedMLP not in kinds
