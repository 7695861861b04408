"""Conv2d, MaxPool2d, Flatten, LeakyReLU, Softmax, RMSNorm, NLLLoss, BCEWithLogitsLoss and
clip_grad_norm_: against NumPy float64 references with the same weights, and gradcheck."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.special import expit

import minifuse as mf
import minifuse.nn as nn
import minifuse.nn.functional as F
import nn_reference as ref
from op_cases import _bce_ref, _conv_ref, _max_pool_ref


def x64(*shape, seed=0):
    return mf.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=mf.float64, requires_grad=True)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 2), c=st.integers(1, 3), h=st.integers(3, 7), w=st.integers(3, 6), k=st.integers(1, 3),
       stride=st.integers(1, 2), pad=st.integers(0, 2), dilation=st.integers(1, 2), groups=st.sampled_from([1, 2]),
       bias=st.booleans(), transposed=st.booleans())
def test_conv2d_matches_the_loop_definition(n, c, h, w, k, stride, pad, dilation, groups, bias, transposed):
    c, out = c * groups, 2 * groups
    if (h + 2 * pad - dilation * (k - 1) - 1) < 0 or (w + 2 * pad - dilation * (k - 1) - 1) < 0:
        return
    m = nn.Conv2d(c, out, k, stride, pad, dilation, groups, bias=bias, dtype=mf.float64)
    x = np.random.default_rng(0).standard_normal((n, c, w, h) if transposed else (n, c, h, w))
    if transposed:  # a non-contiguous input
        x = x.transpose(0, 1, 3, 2)
    p = ref.params_np(m)
    want = _conv_ref(x, p["weight"], p.get("bias"), stride, pad, dilation, groups)
    np.testing.assert_allclose(m(mf.tensor(x)).detach().numpy(), want, rtol=1e-12, atol=1e-12)


def test_conv2d_float32_nan_and_inf_propagate_like_the_definition():
    m = nn.Conv2d(2, 3, 3, padding=1)
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32)
    x[0, 1, 2, 2], x[1, 0, 0, 0] = np.nan, np.inf
    p = ref.params_np(m)
    got = m(mf.tensor(x)).detach().numpy()
    want = _conv_ref(x.astype(np.float64), p["weight"], p["bias"], pad=1)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(groups=2, bias=False), dict(padding="same")])
def test_conv2d_gradcheck_inputs_and_parameters(kw):
    mf.manual_seed(0)
    assert ref.gradcheck_module(nn.Conv2d(2, 4, 3, **kw), [x64(2, 2, 5, 4)])


def test_conv2d_init_and_errors():
    mf.manual_seed(0)
    m = nn.Conv2d(3, 8, (3, 2))
    assert m.weight.shape == (8, 3, 3, 2) and m.bias.shape == (8,)
    bound = 1 / np.sqrt(3 * 3 * 2)
    assert np.abs(m.weight.detach().numpy()).max() <= bound and np.abs(m.bias.detach().numpy()).max() <= bound
    with pytest.raises(ValueError, match=r"'input' has 2 channels but 'weight' \(8, 3, 3, 2\) expects 3"):
        m(mf.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match=r"'input' must be \(N, C, H, W\) or \(C, H, W\), got shape \(5, 5\)"):
        m(mf.randn(5, 5))
    with pytest.raises(ValueError, match="does not fit in the padded input"):
        m(mf.randn(1, 3, 2, 5))
    with pytest.raises(TypeError, match="'input' must be float32"):
        m(mf.randn(1, 3, 5, 5, dtype=mf.float64))
    with pytest.raises(ValueError, match="groups=2 must divide in_channels"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="'stride' must be an int >= 1"):
        nn.Conv2d(3, 4, 3, stride=0)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        F.conv2d(mf.randn(1, 3, 5, 5), m.weight, stride=2, padding="same")
    assert "kernel_size=(3, 2)" in repr(m)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 2), c=st.integers(1, 3), h=st.integers(2, 7), w=st.integers(2, 7), k=st.integers(1, 3),
       stride=st.integers(1, 3), pad=st.integers(0, 1))
def test_max_pool2d_matches_numpy(n, c, h, w, k, stride, pad):
    if pad > k // 2 or h + 2 * pad < k or w + 2 * pad < k:
        return
    x = np.random.default_rng(2).standard_normal((n, c, h, w))
    got = nn.MaxPool2d(k, stride, pad)(mf.tensor(x)).numpy()
    np.testing.assert_array_equal(got, _max_pool_ref(x, k, stride, pad))


def test_max_pool2d_gradient_goes_to_the_maximum_and_is_shared_at_ties():
    x = mf.tensor(np.array([[[[1.0, 5.0], [2.0, 3.0]], [[4.0, 4.0], [0.0, -1.0]]]]), requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[[[0, 1], [0, 0]], [[0.5, 0.5], [0, 0]]]])
    with pytest.raises(ValueError, match="at most half the kernel size"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(NotImplementedError, match="ceil_mode"):
        nn.MaxPool2d(2, ceil_mode=True)(x)
    nan = mf.tensor(np.array([[[[np.nan, 1.0], [2.0, 3.0]]]]))
    assert np.isnan(F.max_pool2d(nan, 2).numpy()).all()     # NaN propagates, as PyTorch


def test_flatten_leaky_relu_and_softmax_modules():
    x = np.random.default_rng(3).standard_normal((2, 3, 4))
    assert nn.Flatten()(mf.tensor(x)).shape == (2, 12)
    assert nn.Flatten(0, 1)(mf.tensor(x)).shape == (6, 4)
    assert nn.Flatten()(mf.zeros(0, 3, 4)).shape == (0, 12)
    np.testing.assert_allclose(nn.LeakyReLU(0.2)(mf.tensor(x)).numpy(), np.where(x > 0, x, 0.2 * x))
    np.testing.assert_allclose(nn.Softmax(dim=1)(mf.tensor(x)).numpy(),
                               np.exp(x) / np.exp(x).sum(1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(nn.LogSoftmax(dim=-1)(mf.tensor(x)).numpy(), np.log(ref.softmax(x)), rtol=1e-12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = nn.Softmax()(mf.tensor(x))      # PyTorch's implicit dim: 0 for a 3-D input
    assert "implicit dimension" in str(caught[0].message)
    np.testing.assert_allclose(y.numpy(), np.exp(x) / np.exp(x).sum(0, keepdims=True), rtol=1e-12)
    g = x64(3, 4)
    nn.LeakyReLU()(mf.tensor(np.zeros(2), dtype=mf.float64, requires_grad=True)).sum().backward()
    assert mf.autograd.gradcheck(nn.LeakyReLU(0.3), g)


def test_rms_norm_matches_numpy_and_gradchecks():
    m = nn.RMSNorm(4, dtype=mf.float64)
    m.weight.data[...] = np.array([1.0, 2.0, -1.0, 0.5])
    x = np.random.default_rng(4).standard_normal((2, 3, 4))
    eps = np.finfo(np.float64).eps
    want = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * m.weight.detach().numpy()
    np.testing.assert_allclose(m(mf.tensor(x)).detach().numpy(), want, rtol=1e-12)
    assert ref.gradcheck_module(nn.RMSNorm((2, 3), eps=1e-5), [x64(2, 2, 3)])
    assert nn.RMSNorm(4, elementwise_affine=False).weight is None
    with pytest.raises(ValueError, match="last dimension 4"):
        nn.RMSNorm(4)(mf.randn(2, 5))


def test_nll_loss_is_cross_entropy_of_log_softmax():
    x = x64(5, 4)
    t = mf.tensor([0, 3, -100, 1, 2])
    for reduction in ("mean", "sum", "none"):
        a = nn.NLLLoss(reduction=reduction)(nn.LogSoftmax(dim=1)(x), t)
        b = nn.CrossEntropyLoss(reduction=reduction)(x, t)
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12)
    with pytest.raises(IndexError, match="nll_loss: 'target' holds class indices outside"):
        F.nll_loss(x, mf.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="nll_loss: reduction must be"):
        F.nll_loss(x, t, reduction="avg")


def test_bce_with_logits_is_stable_and_matches_numpy():
    x = np.array([-800.0, -20.0, -1.0, 0.0, 1.0, 20.0, 800.0])
    y = np.array([1.0, 0.0, 1.0, 0.5, 0.0, 1.0, 0.0])
    got = nn.BCEWithLogitsLoss(reduction="none")(mf.tensor(x), mf.tensor(y)).numpy()
    np.testing.assert_allclose(got, _bce_ref(x, y, reduce=False), rtol=1e-12)
    assert np.isfinite(got).all()
    xt = mf.tensor(x, requires_grad=True)
    F.binary_cross_entropy_with_logits(xt, mf.tensor(y), reduction="sum").backward()
    np.testing.assert_allclose(xt.grad.numpy(), expit(x) - y, atol=1e-15)   # 0.5 - y at 0
    pw = mf.tensor([2.0, 0.5], dtype=mf.float64)
    m = nn.BCEWithLogitsLoss(pos_weight=pw)
    x2, y2 = np.random.default_rng(5).standard_normal((3, 2)), np.random.default_rng(6).random((3, 2))
    np.testing.assert_allclose(m(mf.tensor(x2), mf.tensor(y2)).numpy(), _bce_ref(x2, y2, pw.numpy()), rtol=1e-12)
    assert "pos_weight" in m.state_dict()
    with pytest.raises(ValueError, match=r"'target' shape \(3,\) must equal 'input' shape \(3, 2\)"):
        m(mf.tensor(x2), mf.zeros(3, dtype=mf.float64))
    with pytest.raises(ValueError, match="'pos_weight'"):
        F.binary_cross_entropy_with_logits(mf.tensor(x2), mf.tensor(y2), pos_weight=mf.ones(3, dtype=mf.float64))
    with pytest.raises(ValueError, match=r"'weight' of shape \(2, 3, 2\) must broadcast to 'input' shape \(3, 2\)"):
        F.binary_cross_entropy_with_logits(mf.tensor(x2), mf.tensor(y2), weight=mf.ones(2, 3, 2, dtype=mf.float64))


def test_one_hot():
    np.testing.assert_array_equal(F.one_hot(mf.tensor([2, 0])).numpy(), [[0, 0, 1], [1, 0, 0]])
    out = F.one_hot(mf.tensor([[1], [3]]), num_classes=5)
    assert out.shape == (2, 1, 5) and out.dtype == mf.int64 and out.numpy().sum() == 2
    assert F.one_hot(mf.tensor(np.zeros(0, np.int64)), 3).shape == (0, 3)
    with pytest.raises(IndexError, match=r"values in \[0, 4\], outside \[0, num_classes=3\)"):
        F.one_hot(mf.tensor([0, 4]), 3)
    with pytest.raises(TypeError, match="integer class indices"):
        F.one_hot(mf.tensor([1.0]))


def test_clip_grad_norm_scales_all_gradients_together():
    a, b = mf.zeros(2, requires_grad=True), mf.zeros(3, requires_grad=True)
    a.grad, b.grad = mf.tensor([3.0, 0.0]), mf.tensor([0.0, 4.0, 0.0])
    norm = nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
    assert norm.item() == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad.numpy(), [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), [0.0, 0.8, 0.0], rtol=1e-5)
    assert nn.utils.clip_grad_norm_([a, b], max_norm=10.0).item() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), [0.0, 0.8, 0.0], rtol=1e-5)      # under the limit: untouched
    assert nn.utils.clip_grad_norm_(a, 0.1, norm_type=float("inf")).item() == pytest.approx(0.6, rel=1e-5)
    b.grad = mf.tensor([np.nan, 1.0, 0.0])
    with pytest.raises(RuntimeError, match="total norm of the gradients is nan"):
        nn.utils.clip_grad_norm_([a, b], 1.0, error_if_nonfinite=True)
    nn.utils.clip_grad_value_([a], 0.01)
    assert np.abs(a.grad.numpy()).max() <= 0.01


def test_a_cnn_training_step_on_the_test_device_matches_the_cpu():
    """MINIFUSE_TEST_DEVICE=cuda runs this on a GPU: DataLoader batches of device tensors, Conv2d,
    MaxPool2d, RMSNorm and the new losses, gradients compared with the same step on the CPU."""
    from minifuse.utils.data import DataLoader, TensorDataset
    from testdevice import DEVICE

    def make():
        mf.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.RMSNorm(16), nn.Linear(16, 3))

    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((6, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 6)
    grads = []
    for device in ("cpu", DEVICE):
        model = make().to(device)
        (xb, yb), = DataLoader(TensorDataset(mf.tensor(x, device=device), mf.tensor(y, device=device)), batch_size=6)
        logits = model(xb)
        loss = nn.NLLLoss()(nn.LogSoftmax(dim=1)(logits), yb) + nn.BCEWithLogitsLoss()(
            logits, F.one_hot(yb, 3).to(mf.float32))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        grads.append([np.asarray(p.grad) for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_cnn_and_einsum_keep_their_dtype(dtype):
    dtype = getattr(mf, dtype)
    if dtype is None:
        pytest.skip("bfloat16 needs ml_dtypes (pip install 'minifuse[bfloat16]')")
    mf.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.RMSNorm(16),
                          nn.Linear(16, 3)).to(dtype)
    logits = model(mf.randn(2, 1, 4, 4).to(dtype))
    nn.BCEWithLogitsLoss()(logits, mf.rand(2, 3).to(dtype)).backward()
    assert logits.dtype == dtype and all(p.grad.dtype == dtype for p in model.parameters())
    a, b = mf.randn(2, 3).to(dtype).requires_grad_(), mf.randn(3, 2).to(dtype).requires_grad_()
    out = mf.einsum("ij,jk->ik", a, b)
    out.sum().backward()
    assert out.dtype == a.grad.dtype == b.grad.dtype == dtype
    want = np.asarray(a.detach().to(mf.float32)) @ np.asarray(b.detach().to(mf.float32))
    np.testing.assert_allclose(np.asarray(out.detach().to(mf.float32)), want, rtol=2e-2, atol=2e-2)


def test_conv2d_under_autocast_runs_in_half_precision_like_linear():
    with mf.autocast("cpu", dtype=mf.float16):
        y = nn.Conv2d(1, 2, 3)(mf.randn(1, 1, 4, 4))
    assert y.dtype == mf.float16
