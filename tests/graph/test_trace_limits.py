"""What a graph cannot follow is refused, not frozen: a traced forward that reads a tensor's values
in Python raises naming the operation and the line; compiled graphs are keyed on what they fix
(arrays are inputs, not constants); compiled outputs say they are for inference when asked for a
gradient."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
from minifuse import graph as G
TracingError = G.TracingError


class Reads(nn.Module):
    """y = 2 x, after reading x's values in Python through `read`."""

    def __init__(self, read):
        super().__init__()
        self.read = read

    def forward(self, x):
        self.read(x)
        return x * 2.0


def _if_positive(x):
    if (x.sum() > 0):
        pass


READS = {
    "Tensor.item()": lambda x: x.sum().item(),
    "Tensor.numpy()": lambda x: x.numpy(),
    "Tensor.tolist()": lambda x: x.tolist(),
    "bool(tensor)": _if_positive,
    "float(tensor)": lambda x: float(x.sum()),
    "int(tensor)": lambda x: int(x[0, 0]),
    "numpy.asarray(tensor)": lambda x: np.asarray(x),
    "numpy.exp on a traced tensor's .data": lambda x: mf.tensor(np.exp(x.data)),
    "numpy.add on a traced tensor's .data": lambda x: x.data.sum(),
    "an element of a traced tensor's .data": lambda x: float(x.data[0, 0]),
    "making a tensor of a traced tensor's values": lambda x: mf.tensor(x),
    "numpy.greater on a traced tensor's .data": lambda x: x[x.data > 0],
    "a traced tensor's values passed to Index as a fixed argument": lambda x: x[x.data.astype(np.int64)],
    "a traced tensor's values passed to Index": lambda x: x[x > 0],
}


@pytest.mark.parametrize("what", sorted(READS))
def test_reading_values_while_tracing_names_the_operation_and_line(what):
    x = mf.randn(2, 3)
    data = x.data
    with pytest.raises(TracingError, match="trace: " + what.replace("(", r"\(").replace(")", r"\)")) as e:
        mf.compile(Reads(READS[what]), x)
    assert "test_trace_limits.py" in str(e.value)
    assert x.data is data and type(x.data) is np.ndarray      # the input got its own array back
    assert float(x.sum()) == float(data.sum())                # and reads as usual after the trace


class Twice(nn.Module):
    def forward(self, x, y):
        return x + y


def test_an_input_passed_twice_gets_its_array_back():
    x = mf.randn(2, 3)
    data = x.data
    fast = mf.compile(Twice(), x, x)
    assert x.data is data and type(x.data) is np.ndarray
    np.testing.assert_allclose(fast(x, x).numpy(), 2 * data)


def test_the_error_shows_the_user_line():
    with pytest.raises(TracingError, match=r"test_trace_limits.py:\d+ \(if \(x.sum\(\) > 0\):\)"):
        G.trace(Reads(_if_positive), mf.randn(2, 3))


def test_reading_parameters_and_shapes_is_fine():
    """Shapes, dtypes and parameters are not values of the inputs: a forward may read them."""
    lin = nn.Linear(3, 2)

    def read(x):
        assert x.shape == (2, 3) and x.dtype == mf.float32 and len(x) == 2
        return float(lin.weight.detach().numpy().sum()), repr(x)
    fast = mf.compile(Reads(read), mf.randn(2, 3))
    x = mf.randn(2, 3)
    np.testing.assert_allclose(fast(x).numpy(), 2 * x.numpy())


def test_numpy_arrays_are_graph_inputs_not_constants():
    """Two masks with the same shape give two answers (a NumPy array used to be traced as a
    constant, keyed by its repr, which NumPy abbreviates above 1,000 elements)."""
    mf.manual_seed(0)
    model = nn.TransformerEncoder(dict(d_model=8, num_heads=2, intermediate_size=12), 1)
    x = mf.randn(2, 600, 8)
    ones = np.ones((2, 600), np.int64)
    half = ones.copy()
    half[:, 300:] = 0
    fast = mf.compile(model, x, ones)
    for mask in (ones, half):
        with mf.no_grad(), nn.fusion(False):
            want = model(x, mf.tensor(mask)).numpy()
        np.testing.assert_allclose(fast(x, mask).numpy(), want, rtol=1e-4, atol=1e-5)
    assert len(fast.graphs) == 1 and len(next(iter(fast.graphs.values())).inputs) == 2


def test_arguments_that_are_neither_inputs_nor_values_are_refused():
    fast = mf.compile(nn.Linear(3, 2))
    with pytest.raises(TypeError, match="compile: argument 1 is a dict"):
        fast(mf.randn(2, 3), {"a": 1})


class Scaled(nn.Module):
    def forward(self, x, factor):
        return x * factor


def test_literal_arguments_key_the_graph_by_value():
    fast = mf.compile(Scaled())
    x = mf.randn(2, 3)
    np.testing.assert_allclose(fast(x, 2.0).numpy(), 2 * x.numpy())
    np.testing.assert_allclose(fast(x, 3.0).numpy(), 3 * x.numpy(), rtol=1e-6)
    assert len(fast.graphs) == 2


def test_backward_through_a_compiled_module_says_it_is_for_inference():
    lin = nn.Linear(3, 2)
    fast = mf.compile(lin)
    x = mf.randn(4, 3, requires_grad=True)
    y = fast(x)
    for out in (y, (y * y).sum(), y.sum(dim=0).mean()):
        with pytest.raises(RuntimeError, match="compiled module.*inference only"):
            out.backward(None if out.ndim == 0 else mf.ones(*out.shape))
    with pytest.raises(RuntimeError, match="does not require grad and has no grad_fn"):
        (mf.randn(2) * 2).sum().backward()     # any other tensor: the usual message
    assert "inference" in mf.compile.__doc__
