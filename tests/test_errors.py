"""Bad input gets a clear error naming the op, the argument and expected vs actual."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn.functional as F


def test_matmul_inner_dimension_mismatch():
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: 'input' \(2, 3\) @ 'other' \(4, 5\)"):
        mf.randn(2, 3) @ mf.randn(4, 5)


def test_matmul_batch_mismatch_and_scalar():
    with pytest.raises(ValueError, match="cannot be broadcast"):
        mf.randn(2, 3, 4) @ mf.randn(3, 4, 5)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        mf.tensor(2.0) @ mf.randn(3)


def test_broadcast_mismatch_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"add: shapes of 'input' \(2, 3\) and 'other' \(4,\) cannot be broadcast"):
        mf.randn(2, 3) + mf.randn(4)


def test_mixed_dtypes_raise():
    with pytest.raises(TypeError, match=r"mul: dtypes differ: argument 'input' is float32, 'other' is float64"):
        mf.randn(3) * mf.randn(3, dtype=mf.float64)
    with pytest.raises(TypeError, match="matmul: dtypes differ"):
        mf.randn(2, 2) @ mf.randn(2, 2, dtype=mf.float64)


def test_integer_tensor_where_float_is_needed():
    i = mf.tensor([1, 2, 3])
    assert i.dtype == mf.int64
    with pytest.raises(TypeError, match=r"exp: argument 'input' must be a floating-point tensor .* got int64"):
        i.exp()
    with pytest.raises(TypeError, match="log_softmax|softmax"):
        F.softmax(i)
    with pytest.raises(RuntimeError, match="only floating-point tensors can require gradients"):
        mf.tensor([1, 2], requires_grad=True)


def test_functional_argument_errors():
    with pytest.raises(ValueError, match=r"linear: 'input' last dimension must be in_features=4"):
        F.linear(mf.randn(2, 3), mf.randn(5, 4))
    with pytest.raises(ValueError, match=r"linear: 'bias' must have shape \(5,\)"):
        F.linear(mf.randn(2, 4), mf.randn(5, 4), mf.randn(4))
    with pytest.raises(ValueError, match="gelu: approximate must be"):
        F.gelu(mf.randn(2), approximate="fast")
    with pytest.raises(ValueError, match="swiglu: the size of dim -1 must be even"):
        F.swiglu(mf.randn(2, 3))
    with pytest.raises(ValueError, match="layer_norm: 'input' of shape"):
        F.layer_norm(mf.randn(2, 3), 4)
    with pytest.raises(IndexError, match=r"embedding: index out of range: .*\[0, 5\].*3 rows"):
        F.embedding(mf.tensor([0, 5]), mf.randn(3, 2))
    with pytest.raises(TypeError, match="embedding: 'input' must be an integer tensor"):
        F.embedding(mf.tensor([0.0]), mf.randn(3, 2))
    with pytest.raises(ValueError, match="cross_entropy: 'target' shape"):
        F.cross_entropy(mf.randn(4, 3), mf.tensor([0, 1]))
    with pytest.raises(IndexError, match="cross_entropy: 'target' holds class indices outside"):
        F.cross_entropy(mf.randn(2, 3), mf.tensor([0, 3]))
    with pytest.raises(ValueError, match="activation"):
        F.activation("gelu_fast")
    with pytest.raises(ValueError, match="dropout: p must be in"):
        F.dropout(mf.randn(2), 1.5)


def test_shape_op_errors():
    x = mf.randn(2, 3)
    with pytest.raises(ValueError, match=r"reshape: cannot view a tensor of shape \(2, 3\)"):
        x.reshape(4, 2)
    with pytest.raises(IndexError, match="dim 5 is out of range"):
        x.sum(5)
    with pytest.raises(ValueError, match="permute"):
        mf.randn(2, 3, 4).permute(0, 0, 1)
    with pytest.raises(ValueError, match=r"cat: tensors\[1\] has shape"):
        mf.cat([x, mf.randn(3, 3)], dim=1)
    with pytest.raises(ValueError, match=r"split: sections \[1, 1\] sum to 2"):
        x.split([1, 1], dim=1)
    with pytest.raises(IndexError, match="index"):
        x[5]
    with pytest.raises(ValueError, match="clamp: at least one"):
        x.clamp()


def test_bad_dtype_and_device_names():
    with pytest.raises(TypeError, match="not supported"):
        mf.zeros(2, dtype=np.complex64)
    with pytest.raises(ValueError, match="device: expected 'cpu', 'cuda' or 'cuda:N'"):
        mf.zeros(2, device="tpu")


def test_cuda_without_gpu_says_what_to_install():
    if mf.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match=r"pip install 'minifuse\[cuda\]'|no NVIDIA GPU"):
        mf.zeros(2, device="cuda")


def test_item_and_bool_need_one_element():
    with pytest.raises(ValueError, match="only a one-element tensor"):
        mf.randn(2).item()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(mf.randn(2))


def test_numpy_refuses_tensor_that_requires_grad():
    with pytest.raises(RuntimeError, match=r"detach\(\).numpy\(\)"):
        mf.randn(2, requires_grad=True).numpy()
