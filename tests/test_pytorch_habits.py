"""What people coming from PyTorch type first: subpackages as attributes, true division of
integers, in-place updates, and the creation functions."""
import numpy as np
import pytest

import minifuse as mf


def test_every_public_subpackage_is_an_attribute_after_import():
    for name in ("autograd", "nn", "optim", "amp", "graph", "utils", "cuda", "fusions", "kernels", "models", "ops"):
        assert hasattr(mf, name), name
    assert mf.optim.AdamW and mf.utils.data.DataLoader and mf.nn.utils.clip_grad_norm_
    assert mf.cuda.is_available() == mf.cuda_available()
    assert mf.cuda.device_count() >= int(mf.cuda.is_available())


def test_cuda_synchronize_waits_for_the_gpu_or_says_what_is_missing():
    """``mf.cuda.synchronize(device=None)`` as torch.cuda.synchronize: None, an index, 'cuda:N' or a
    Device; anything else refused before the GPU is asked; without a GPU, what to install."""
    with pytest.raises(TypeError, match="'device' must be None, an int"):
        mf.cuda.synchronize(1.5)
    with pytest.raises(ValueError, match="must be a CUDA device, got 'cpu'"):
        mf.cuda.synchronize("cpu")
    if not mf.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"pip install 'minifuse\[cuda\]'|no NVIDIA GPU is visible"):
            mf.cuda.synchronize()
        return
    x = mf.ones(1024, 1024, device="cuda")
    y = x @ x
    for device in (None, 0, "cuda", "cuda:0", mf.device("cuda:0")):
        assert mf.cuda.synchronize(device) is None
    assert float(y.numpy()[0, 0]) == 1024.0
    with pytest.raises(ValueError, match="is not one of the"):
        mf.cuda.synchronize(mf.cuda.device_count())


def test_true_division_of_integers_gives_the_default_float_dtype():
    i = mf.tensor([1, 2, 3])
    for out in (i / 2, i / mf.tensor([2, 2, 2]), 6 / i, mf.div(i, 4)):
        assert out.dtype == mf.float32
    np.testing.assert_allclose((i / 2).numpy(), [0.5, 1.0, 1.5])
    assert (i / mf.tensor([2.0, 4.0, 8.0], dtype=mf.float64)).dtype == mf.float64
    assert (i * 2.5).dtype == mf.float32      # a float scalar with an integer tensor: the default float
    assert (i * 2).dtype == mf.int64


def test_in_place_updates_change_the_data_and_return_the_tensor():
    x = mf.ones(3)
    assert x.add_(mf.tensor([1.0, 2.0, 3.0]), alpha=2) is x
    x.mul_(2).sub_(1).div_(mf.tensor([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(x.numpy(), [5.0, 4.5, 13 / 3], rtol=1e-6)
    i = mf.tensor([1, 2])
    i.add_(1)
    assert i.tolist() == [2, 3] and i.dtype == mf.int64
    with pytest.raises(TypeError, match=r"add_: the result is float32.*int64"):
        i.add_(0.5)
    with pytest.raises(ValueError, match=r"mul_: the result's shape \(2, 3\)"):
        mf.ones(3).mul_(mf.ones(2, 3))


def test_in_place_updates_follow_autograd_rules():
    w = mf.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w.mul_(2)
    with pytest.raises(RuntimeError, match=r"not recorded on the tape.*x = x \+ other"):
        (w * 1).add_(1)
    with pytest.raises(RuntimeError, match="not recorded on the tape"):
        mf.zeros(3).add_(w)
    before = w.detach().numpy().copy()
    with mf.no_grad():
        w.mul_(2)
    np.testing.assert_allclose(w.detach().numpy(), 2 * before)
    assert w.is_leaf and w.requires_grad


def test_linspace_and_randint():
    np.testing.assert_allclose(mf.linspace(0, 1, 5).numpy(), [0, 0.25, 0.5, 0.75, 1])
    assert mf.linspace(0, 1, 5).dtype == mf.float32
    assert mf.linspace(-1, 1, 3, dtype=mf.float64).dtype == mf.float64
    assert mf.linspace(0, 1, 0).shape == (0,)
    with pytest.raises(ValueError, match="steps"):
        mf.linspace(0, 1, -1)
    mf.manual_seed(0)
    a = mf.randint(3, 7, (100,))
    mf.manual_seed(0)
    assert a.tolist() == mf.randint(3, 7, (100,)).tolist()
    assert a.dtype == mf.int64 and 3 <= a.numpy().min() and a.numpy().max() < 7
    b = mf.randint(5, (2, 3))
    assert b.shape == (2, 3) and b.numpy().max() < 5
    assert mf.randint(5, size=[4]).shape == (4,) and mf.randint(2, 4, (3,), dtype=mf.int32).dtype == mf.int32
    with pytest.raises(TypeError, match="'size' must be a tuple"):
        mf.randint(5, 3)
    with pytest.raises(TypeError, match="'size' must be a tuple"):
        mf.randint(5)
    with pytest.raises(ValueError, match="low < high"):
        mf.randint(5, 5, (2,))


def test_einsum_errors_name_the_operand():
    a, b = mf.randn(2, 3), mf.randn(4, 5)
    with pytest.raises(ValueError, match=r"subscript 'j' has size 3 in operands\[0\] but 4 in operands\[1\]"):
        mf.einsum("ij,jk->ik", a, b)
    with pytest.raises(ValueError, match=r"names 1 operands, got 2"):
        mf.einsum("ij", a, b)
    with pytest.raises(ValueError, match=r"operands\[0\] has 2 dimensions"):
        mf.einsum("ijk->i", a)
    with pytest.raises(ValueError, match="diagonals"):
        mf.einsum("ii->i", mf.randn(3, 3))
    with pytest.raises(TypeError, match=r"operands\[1\] must be a Tensor"):
        mf.einsum("i,i", mf.randn(3), np.ones(3))
