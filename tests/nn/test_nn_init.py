"""nn.init: PyTorch's formulas (bounds, fans, gains) and seeded reproducibility."""
import math

import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
from minifuse.nn import init


def test_gains():
    assert init.calculate_gain("relu") == math.sqrt(2) and init.calculate_gain("tanh") == 5 / 3
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == math.sqrt(2 / 6)
    assert init.calculate_gain("leaky_relu") == math.sqrt(2 / (1 + 0.01 ** 2))
    with pytest.raises(ValueError):
        init.calculate_gain("swish")


def test_kaiming_uniform_bound_and_fans():
    w = mf.empty(200, 50, 3)  # fan_in = 50 * 3, fan_out = 200 * 3
    init.kaiming_uniform_(w, nonlinearity="relu")
    bound = math.sqrt(3) * math.sqrt(2) / math.sqrt(150)
    assert np.abs(w.numpy()).max() <= bound and np.abs(w.numpy()).max() > 0.95 * bound
    init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
    assert np.abs(w.numpy()).max() <= math.sqrt(6 / 600)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.kaiming_uniform_(mf.empty(3))


def test_xavier_normal_trunc_normal_constants():
    w = mf.empty(300, 100, dtype=mf.float64)
    init.xavier_uniform_(w, gain=2.0)
    bound = 2.0 * math.sqrt(6 / 400)
    assert bound * 0.95 < np.abs(w.numpy()).max() <= bound
    init.normal_(w, 3.0, 0.5)
    assert abs(w.numpy().mean() - 3) < 0.01 and abs(w.numpy().std() - 0.5) < 0.01
    init.trunc_normal_(w, mean=0.0, std=1.0, a=-1.0, b=0.5)
    assert w.numpy().min() >= -1.0 and w.numpy().max() <= 0.5
    # the mean of N(0,1) truncated to [-1, 0.5]: (phi(a) - phi(b)) / (Phi(b) - Phi(a))
    phi = lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    Phi = lambda t: (1 + math.erf(t / math.sqrt(2))) / 2  # noqa: E731
    assert abs(w.numpy().mean() - (phi(-1) - phi(0.5)) / (Phi(0.5) - Phi(-1))) < 0.01
    init.zeros_(w)
    assert (w.numpy() == 0).all()
    init.ones_(w)
    assert (w.numpy() == 1).all()


def test_linear_default_init_is_pytorchs():
    mf.manual_seed(0)
    m = nn.Linear(64, 500)
    w, b = m.weight.detach().numpy(), m.bias.detach().numpy()
    bound = 1 / math.sqrt(64)  # kaiming_uniform_(a=sqrt(5)) gives 1/sqrt(fan_in); so does the bias
    assert 0.95 * bound < np.abs(w).max() <= bound and 0.9 * bound < np.abs(b).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound


def test_manual_seed_reproduces_init_and_dropout():
    def run():
        mf.manual_seed(123)
        m = nn.MLP(6, "swiglu", dropout=0.3)
        return [p.detach().numpy().copy() for p in m.parameters()] + [m(mf.ones(4, 6)).detach().numpy()]

    a, b = run(), run()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    mf.manual_seed(124)
    assert not np.array_equal(nn.MLP(6, "swiglu").layer1.weight.detach().numpy(), a[0])


def test_same_seed_same_weights_in_every_dtype():
    mf.manual_seed(9)
    w32 = nn.Linear(4, 4).weight.detach().numpy()
    mf.manual_seed(9)
    w64 = nn.Linear(4, 4, dtype=mf.float64).weight.detach().numpy()
    np.testing.assert_array_equal(w32, w64.astype(np.float32))
