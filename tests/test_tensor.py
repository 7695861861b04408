"""Tensor creation, dtypes, repr, seeding, and the non-differentiable parts of the API."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn.functional as F


def test_default_dtypes_follow_pytorch():
    assert mf.tensor([1.0, 2.0]).dtype == mf.float32
    assert mf.tensor([1, 2]).dtype == mf.int64
    assert mf.tensor([True]).dtype == mf.bool_
    assert mf.zeros(2, 3).dtype == mf.float32 and mf.zeros(2, 3).shape == (2, 3)
    assert mf.arange(5).dtype == mf.int64 and mf.arange(0.0, 1.0, 0.25).dtype == mf.float32
    assert mf.tensor(np.zeros(2)).dtype == mf.float64  # arrays keep their dtype
    assert mf.ones((2,), dtype=mf.float64).dtype == mf.float64


def test_factories():
    np.testing.assert_array_equal(mf.full((2, 2), 3.0).numpy(), np.full((2, 2), 3.0))
    np.testing.assert_array_equal(mf.arange(1, 7, 2).numpy(), [1, 3, 5])
    x = mf.randn(3, 4, dtype=mf.float64)
    assert mf.zeros_like(x).dtype == mf.float64 and mf.ones_like(x).shape == (3, 4)
    assert mf.empty(0, 3).shape == (0, 3)
    r = mf.rand(1000)
    assert 0 <= r.numpy().min() and r.numpy().max() < 1


def test_tensor_copies_from_numpy_shares():
    a = np.arange(3.0)
    t, s = mf.tensor(a), mf.from_numpy(a)
    a[0] = 7.0
    assert t.numpy()[0] == 0.0 and s.numpy()[0] == 7.0
    with pytest.raises(TypeError, match="from_numpy"):
        mf.from_numpy([1.0])


def test_manual_seed_drives_randn_rand_and_dropout():
    def draw():
        mf.manual_seed(42)
        return mf.randn(5).numpy(), mf.rand(5).numpy(), F.dropout(mf.ones(50), 0.5).numpy()
    first, second = draw(), draw()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    mf.manual_seed(43)
    assert not np.array_equal(mf.randn(5).numpy(), first[0])


def test_dropout_scales_kept_values_and_masks_gradient():
    mf.manual_seed(0)
    x = mf.ones(10_000, dtype=mf.float64, requires_grad=True)
    y = F.dropout(x, 0.3)
    kept = y.detach().numpy() != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y.detach().numpy()[kept], 1 / 0.7)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.where(kept, 1 / 0.7, 0.0))
    assert F.dropout(x, 0.3, training=False) is x


def test_repr_is_torch_like():
    assert repr(mf.tensor([1.0, 2.5])) == "tensor([1.0000, 2.5000])"
    assert repr(mf.tensor([1.0], dtype=mf.float64, requires_grad=True)) == \
        "tensor([1.0000], dtype=float64, requires_grad=True)"
    assert "grad_fn=<AddBackward>" in repr(mf.tensor([1.0], requires_grad=True) + 1)
    assert repr(mf.tensor([1, 2])) == "tensor([1, 2])"


def test_properties_and_conversions():
    x = mf.randn(2, 3)
    assert x.shape == (2, 3) and x.ndim == 2 and x.size() == (2, 3) and x.size(1) == 3
    assert x.numel() == 6 and len(x) == 2 and str(x.device) == "cpu"
    assert mf.tensor([3.5]).item() == 3.5
    assert np.asarray(x).shape == (2, 3)
    y = x.double()
    assert y.dtype == mf.float64 and x.to(mf.float32) is x
    assert x.to("cpu") is x


def test_cast_is_differentiable():
    x = mf.randn(3, dtype=mf.float64, requires_grad=True)
    (x.float() * 2).sum().backward()
    assert x.grad.dtype == mf.float64
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])


def test_comparisons_are_bool_and_not_differentiable():
    x = mf.randn(3, requires_grad=True)
    for c in (x > 0, x >= 0, x < 0, x <= 0, x == 0, x != 0):
        assert c.dtype == mf.bool_ and not c.requires_grad
    np.testing.assert_array_equal((x > 0).numpy(), x.detach().numpy() > 0)


def test_max_with_dim_returns_values_and_indices():
    x = mf.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]])
    v, i = x.max(1)
    np.testing.assert_array_equal(v.numpy(), [5.0, 7.0])
    np.testing.assert_array_equal(i.numpy(), [1, 0])
    assert x.max().item() == 7.0 and x.min(dim=0, keepdim=True).values.shape == (1, 3)


def test_max_ties_split_the_gradient():
    x = mf.tensor([7.0, 0.0, 7.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 0.0, 0.5])


def test_nan_and_inf_propagate():
    x = mf.tensor([np.nan, np.inf, -np.inf, 1.0])
    out = F.gelu(x).numpy()
    assert np.isnan(out[0]) and out[1] == np.inf and out[3] > 0
    assert np.isnan(F.relu(x).numpy()[0])
    assert np.isnan(F.softmax(mf.tensor([np.nan, 1.0])).numpy()).all()


def test_empty_batch():
    x = mf.randn(0, 4, requires_grad=True)
    y = F.linear(x, mf.randn(3, 4))
    assert y.shape == (0, 3)
    F.layer_norm(x, 4).sum().backward()
    assert x.grad.shape == (0, 4)
    assert F.softmax(mf.randn(0, 5)).shape == (0, 5)


def test_split_and_chunk_pieces():
    x = mf.arange(10).reshape(5, 2)
    assert [p.shape for p in x.split(2)] == [(2, 2), (2, 2), (1, 2)]
    assert [p.shape for p in x.chunk(2)] == [(3, 2), (2, 2)]
    assert [p.shape for p in x.chunk(3, dim=1)] == [(5, 1), (5, 1)]


def test_split_of_an_empty_dim():
    """As PyTorch: split_size 0 is taken for a dim of size 0 (one empty piece), refused otherwise;
    a size-0 dim splits into halves (glu, swiglu of no features)."""
    x = mf.randn(3, 0)
    assert [t.shape for t in x.split(0, dim=1)] == [(3, 0)]
    assert [t.shape for t in x.split([0, 0], dim=1)] == [(3, 0), (3, 0)]
    assert F.swiglu(x).shape == (3, 0)
    with pytest.raises(ValueError, match="split_size must be positive"):
        mf.randn(3, 2).split(0, dim=1)
