"""The activation table (minifuse/kernels/activations.py) drives every path: each row's taped op
passes a float64 gradcheck, equals the op class of its name, and is what the layers, the fused
functions and the graph accept."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
import minifuse.nn.functional as F
from minifuse import fusions
from minifuse.autograd import gradcheck
from minifuse.kernels import activations as A
from minifuse.ops import elementwise as E

ROWS = [a.name for a in A.TABLE if a.name != "none"]


@pytest.mark.parametrize("name", ROWS)
def test_generic_taped_op_gradchecks_and_equals_the_named_op(name):
    mf.manual_seed(0)
    data = np.random.default_rng(0).standard_normal((3, 5)) * 2
    x = mf.tensor(data, requires_grad=True)
    assert gradcheck(lambda t: E.Activation.apply(t, name), (x,))
    with mf.no_grad():
        named = F.activation(name)(x).numpy()
        np.testing.assert_allclose(E.Activation.apply(x, name).numpy(), named, rtol=1e-15, atol=0)
    np.testing.assert_allclose(named, A.BY_NAME[name].forward(np, data), rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", ROWS)
def test_every_row_reaches_the_layers_and_the_fused_functions(name):
    mf.manual_seed(1)
    layer = nn.TransformerLayer(8, 2, 12, activation=name)
    x = mf.randn(2, 3, 8)
    with mf.no_grad():
        fused = layer(x).numpy()
        with nn.fusion(False):
            taped = layer(x).numpy()
    np.testing.assert_allclose(fused, taped, rtol=1e-4, atol=1e-5)
    w = mf.randn(4, 8, requires_grad=True)
    y = fusions.fused_linear_act(x, w, None, name)
    with nn.fusion(False):
        ref = F.activation(name)(F.linear(x, w))
    np.testing.assert_allclose(y.detach().numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_codes_and_names_come_from_the_table():
    assert A.NAMES == tuple(a.name for a in A.TABLE)
    assert A.CODES == {n: i for i, n in enumerate(A.NAMES)}
    assert set(A.GATES) <= set(A.NAMES) and set(A.GATE_OF.values()) == set(A.GATES)
    assert A.graph_activation("Gelu", {"approximate": "tanh"}) == "gelu_tanh"
    assert A.graph_activation("Gelu", {"approximate": "none"}) == "gelu"
    assert A.graph_activation("Activation", {"name": "silu"}) == "silu"
    assert A.graph_activation("Exp", {}) is None
