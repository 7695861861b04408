"""Bad inputs are rejected in Python, before compiled code, with the function and argument named,
in the same words on every backend (one validation, minifuse/kernels/validate.py)."""
import numpy as np
import pytest

import minifuse as mf
from minifuse.kernels.weights import LayerWeights

f32, f64 = np.float32, np.float64


class Args:
    """Array makers on one backend: z(*shape, dtype=...) zeros as the backend's arrays."""

    def __init__(self, backend):
        self.backend, self.K = backend, backend.K

    def z(self, *shape, dtype=f32):
        return self.backend.to_dev(np.zeros(shape, dtype))


def _layer_arrays(z, d, f):
    """The twelve arrays of a transformer layer of width d and FFN width f, as zeros."""
    return (z(3 * d, d), z(3 * d), z(d, d), z(d), z(d), z(d), z(f, d), z(f), z(d, f), z(d), z(d), z(d))


# (call(K, z), exception, words that must appear in the message)
CASES = [
    (lambda K, z: K.bias_act_(z(2, 3, 4), None, "relu"), ValueError, ["bias_act_", "'y'", "2-D"]),
    (lambda K, z: K.bias_act_(z(3, 4).T, None, "relu"), ValueError, ["bias_act_", "'y'", "C-contiguous"]),
    (lambda K, z: K.bias_act_(z(3, 4), z(5), "relu"), ValueError, ["'bias'", "(5,)", "(4,)"]),
    (lambda K, z: K.bias_act_(z(2, 4), z(3), "relu"), ValueError, ["'bias' has shape (3,), expected (M,) = (4,)"]),
    (lambda K, z: K.bias_act_(z(3, 4), z(4, dtype=f64), "relu"), TypeError, ["'bias'", "float64", "float32"]),
    (lambda K, z: K.bias_act_(z(2, 4), z(4, dtype=f64), "relu"), TypeError,
     ["'bias' has dtype float64, expected float32"]),
    (lambda K, z: K.bias_act_(z(3, 4, dtype=np.int32), None, "relu"), TypeError, ["'y'", "int32"]),
    (lambda K, z: K.bias_act_(z(3, 4), None, "gelu_erf"), ValueError, ["'activation'", "gelu_erf"]),
    (lambda K, z: K.bias_act_(z(3, 4), None, "swish"), ValueError, ["'activation' must be one of", "swish"]),
    (lambda K, z: K.bias_act_([[1.0]], None, "relu"), TypeError, ["bias_act_", "'y' must be a", "ndarray"]),
    (lambda K, z: K.linear_act(z(5, 3), z(4, 6), None, "gelu"), ValueError, ["linear_act", "'weight'", "K = 3"]),
    (lambda K, z: K.linear_act(z(2, 4), z(3, 5), None, "none"), ValueError,
     ["'weight' has shape (3, 5), expected (M, K) with K = 4"]),
    (lambda K, z: K.linear_act(z(5, 3), z(4, 3, dtype=f64), None, "gelu"), TypeError, ["'weight'", "float64"]),
    (lambda K, z: K.linear_act(z(5, 3), z(4, 3), z(3), "gelu"), ValueError, ["'bias'", "(4,)"]),
    (lambda K, z: K.linear_act(z(5, 3), z(4, 3), None, "gelu", out=z(5, 5)), ValueError, ["'out'", "(5, 4)"]),
    (lambda K, z: K.linear_act(z(5, 3), z(4, 3), None, "gelu", out=z(4, 5).T), ValueError,
     ["'out'", "C-contiguous"]),
    (lambda K, z: K.linear_act(z(5, 3), z(4, 3), None, "gelu", out=z(5, 4, dtype=f64)), TypeError,
     ["'out'", "float64"]),
    (lambda K, z: K.bias_glu(z(2, 5), None, "silu"), ValueError, ["bias_glu", "'y'", "even"]),
    (lambda K, z: K.bias_glu(z(2, 3), None, "silu"), ValueError, ["'y' last dim must be even"]),
    (lambda K, z: K.bias_glu(z(2, 6), None, "relu"), ValueError, ["'gate'", "relu"]),
    (lambda K, z: K.bias_glu(z(2, 6), z(3), "silu"), ValueError, ["'bias'", "(6,)"]),
    (lambda K, z: K.bias_glu(z(2, 6), None, "silu", out=z(2, 6)), ValueError, ["'out'", "(2, 3)"]),
    (lambda K, z: K.residual_layer_norm(z(2, 4), z(2, 5), z(4), z(4), 1e-5), ValueError, ["'residual'", "(2, 5)"]),
    (lambda K, z: K.residual_layer_norm(z(2, 4), None, z(4, dtype=f64), z(4), 1e-5), TypeError,
     ["'gamma'", "float64"]),
    (lambda K, z: K.residual_layer_norm(z(2, 4), None, z(4), z(3), 1e-5), ValueError, ["'beta'", "(3,)"]),
    (lambda K, z: K.residual_layer_norm(z(2, 4), None, None, z(4), 1e-5), TypeError, ["'gamma'"]),
    (lambda K, z: K.residual_layer_norm(z(2, 4), None, z(4), z(4), -1.0), ValueError, ["'eps'"]),
    (lambda K, z: K.residual_layer_norm(z(2, 4), None, z(4), z(4), "1e-5"), TypeError,
     ["residual_layer_norm: 'eps' must be a real number"]),
    (lambda K, z: K.transformer_layer(z(1, 2, 4), LayerWeights(*_layer_arrays(z, 4, 6)), None, 2, float("nan")),
     ValueError, ["transformer_layer: 'eps' must be a finite number >= 0, got nan"]),
    (lambda K, z: K.transformer_layer(z(1, 2, 4), LayerWeights(*_layer_arrays(z, 4, 6)), None, 2, -1.0),
     ValueError, ["transformer_layer: 'eps' must be a finite number >= 0, got -1.0"]),
    (lambda K, z: K.transformer_layer(z(1, 2, 4), LayerWeights(*_layer_arrays(z, 4, 6)), None, 2, float("inf")),
     ValueError, ["transformer_layer: 'eps' must be a finite number >= 0, got inf"]),
    (lambda K, z: K.transformer_layer(z(1, 2, 4), LayerWeights(*_layer_arrays(z, 4, 6)), None, 2, None),
     TypeError, ["transformer_layer: 'eps' must be a real number, got None"]),
    (lambda K, z: K.residual_layer_norm(z(2, 4), None, z(4), z(4), 1e-5, out=z(4, 2).T), ValueError,
     ["'out'", "C-contiguous"]),
    (lambda K, z: K.attention(z(1, 2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 3), None, 1.0), ValueError,
     ["attention", "'v'", "(1, 2, 5, 3)"]),
    (lambda K, z: K.attention(z(1, 2, 3, 4), z(1, 2, 5, 4, dtype=f64), z(1, 2, 5, 4), None, 1.0), TypeError,
     ["'k'", "float64"]),
    (lambda K, z: K.attention(z(2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 4), None, 1.0), ValueError, ["'q'", "4-D"]),
    (lambda K, z: K.attention(z(1, 2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 4), z(1, 4), 1.0), ValueError,
     ["'key_mask'", "(1, 5)"]),
    (lambda K, z: K.attention(z(2, 1, 3, 4), z(2, 1, 3, 4), z(2, 1, 3, 4), z(2, 4), 1.0), ValueError,
     ["'key_mask' has shape (2, 4), expected (B, Sk)"]),
    (lambda K, z: K.attention(z(1, 2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 4), np.array([["a"] * 5]), 1.0), TypeError,
     ["'key_mask'"]),
    (lambda K, z: K.attention(z(1, 2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 4), None, "x"), TypeError, ["'scale'"]),
    (lambda K, z: K.attention(z(1, 2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 4), None, 1.0, out=z(1, 2, 3, 5)), ValueError,
     ["'out'"]),
    (lambda K, z: K.attention_packed(z(2, 3, 10), None, 2, 1.0), ValueError, ["attention_packed", "'qkv'", "3 * 2"]),
    (lambda K, z: K.attention_packed(z(2, 3, 12), None, 0, 1.0), ValueError, ["'num_heads'"]),
    (lambda K, z: K.attention_packed(z(2, 3, 12), None, 2, 1.0, method="flash"), ValueError, ["'method'", "'bmm'"]),
    (lambda K, z: K.attention_packed(z(2, 3, 12), None, 2, 1.0, out=z(2, 3, 12)), ValueError, ["'out'", "(2, 3, 4)"]),
    (lambda K, z: K.mlp(z(3, 4), z(6, 4), None, z(2, 6), None, "swiglu"), ValueError, ["mlp", "'w2'", "K = 3"]),
    (lambda K, z: K.mlp(z(3, 4), z(5, 4), None, z(2, 5), None, "glu"), ValueError, ["mlp", "even"]),
    (lambda K, z: K.mlp(z(3, 4), z(6, 4), None, z(2, 6), None, "swish"), ValueError, ["mlp", "'activation'", "swish"]),
    (lambda K, z: K.mlp(z(3, 4), z(6, 4), z(6, dtype=f64), z(2, 6), None, "relu"), TypeError, ["'b1'", "float64"]),
    (lambda K, z: K.transformer_layer(z(1, 2, 6), LayerWeights(*[None] * 12), None, 4, 1e-5), ValueError,
     ["transformer_layer", "'num_heads' must be a positive int dividing"]),
    (lambda K, z: K.transformer_layer(z(1, 2, 8), [z(1)] * 12, None, 2, 1e-5), TypeError,
     ["transformer_layer", "'weights' must be a LayerWeights, got list"]),
]


@pytest.mark.parametrize("case", [pytest.param(i, id=f"{i:02d}") for i in range(len(CASES))])
def test_bad_input_is_named(backend, case):
    call, exc, words = CASES[case]
    with pytest.raises(exc) as info:
        call(backend.K, Args(backend).z)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_dtypes_the_backend_does_not_take(backend):
    """float16 and bfloat16 on the CPU (CUDA takes them); integers everywhere; the message lists
    the backend's."""
    K, z = backend.K, Args(backend).z
    words = K.CHECKS.dtype_words
    assert words.replace(" or ", ", ").split(", ") == [d.name for d in K.DTYPES]
    half = [np.dtype(np.float16)] + ([] if mf.bfloat16 is None else [mf.bfloat16])
    assert (backend.name == "cuda") == all(d in K.DTYPES for d in half)
    refused = [np.int64] + [d for d in half if d not in K.DTYPES]
    for dtype in refused:
        with pytest.raises(TypeError, match=f"bias_act_: 'y' must be {words}, got {np.dtype(dtype).name}"):
            K.bias_act_(z(2, 2, dtype=dtype), None, "relu")


def test_errors_say_which_array_type(backend):
    module = "numpy" if backend.name == "cpu" else "cupy"      # (CUDA's adds: or NumPy under the simulator)
    with pytest.raises(TypeError, match=rf"bias_act_: 'y' must be a {module}\.ndarray"):
        backend.K.bias_act_([[1.0]], None, "relu")


def test_out_overlapping_input_is_rejected(backend):
    y = Args(backend).z(2, 6)
    with pytest.raises(ValueError, match="'out' overlaps 'y'"):
        backend.K.bias_glu(y, None, "silu", out=y.reshape(-1)[:6].reshape(2, 3))


def _overlaps(K, z):
    """Every checked entry point with an output, given an output that shares memory with an input:
    (call, the output's name, the input's name)."""
    y, big = z(3, 4), z(8, 4)
    x4 = z(2, 4)
    gamma = big[0]
    qkv = z(1, 2, 12)
    q = z(1, 2, 3, 4)
    return [
        (lambda: K.bias_act_(y, y[0], "relu"), "y", "bias"),
        (lambda: K.linear_act(x4, z(4, 4), None, "none", out=x4), "out", "x"),
        (lambda: K.linear_act(x4, big[:4], None, "none", out=big[2:4]), "out", "weight"),
        (lambda: K.linear_act(x4, z(4, 4), big[0], "none", out=big[:2]), "out", "bias"),
        (lambda: K.bias_glu(y, y[0], "silu", out=z(3, 2)), None, None),         # bias aliases y: read only
        (lambda: K.residual_layer_norm(x4, None, gamma, big[1], 1e-5, out=big[:2]), "out", "gamma"),
        (lambda: K.residual_layer_norm(x4, None, big[7], gamma, 1e-5, out=big[:2]), "out", "beta"),
        (lambda: K.residual_layer_norm(x4, big[2:4], gamma, gamma, 1e-5, out=big[2:4]), "out", "residual"),
        (lambda: K.attention(q, z(1, 2, 5, 4), z(1, 2, 5, 4), None, 1.0, out=q), "out", "q"),
        (lambda: K.attention_packed(qkv, None, 2, 1.0, out=qkv.reshape(-1)[:8].reshape(1, 2, 4)), "out", "qkv"),
    ]


def test_every_output_overlapping_an_input_is_rejected(backend):
    """Each kernel reads its inputs while it writes its output: an output sharing memory with any
    input (bias, weight, gamma, beta too) is refused, naming both arguments."""
    for call, written, read in _overlaps(backend.K, Args(backend).z):
        if written is None:
            call()                  # inputs may alias each other: nothing is written over them
            continue
        with pytest.raises(ValueError, match=f"'{written}' overlaps '{read}'"):
            call()


def test_read_only_y(backend):
    if backend.gpu:
        pytest.skip("CuPy arrays are always writeable")
    y = np.zeros((2, 3), f32)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="bias_act_: 'y' is read-only"):
        backend.K.bias_act_(y, None, "relu")


def test_row_length_limit(backend):
    """CUDA's row kernels hold a row in registers: longer rows are refused, naming the limit; the
    CPU has no limit."""
    K, z = backend.K, Args(backend).z
    limit = K.CHECKS.max_row
    if limit is None:
        assert backend.name == "cpu"
        return
    with pytest.raises(ValueError, match=f"rows of {limit + 1} elements are longer than the CUDA kernel's limit "
                                         f"of {limit}"):
        K.residual_layer_norm(z(1, limit + 1), None, z(limit + 1), z(limit + 1), 1e-5)
    with pytest.raises(ValueError, match="longer than the CUDA kernel's limit"):
        K.attention(z(1, 1, 1, 4), z(1, 1, limit + 1, 4), z(1, 1, limit + 1, 4), None, 1.0)


# ---- transformer_layer: each bad argument named ---------------------------------------------------

def _layer_args(z, d=8, f=16, dtype=f32):
    """[x, LayerWeights, key_mask, num_heads, eps]."""
    weights = LayerWeights(z(3 * d, d, dtype=dtype), z(3 * d, dtype=dtype), z(d, d, dtype=dtype), z(d, dtype=dtype),
                           z(d, dtype=dtype), z(d, dtype=dtype), z(f, d, dtype=dtype), z(f, dtype=dtype),
                           z(d, f, dtype=dtype), z(d, dtype=dtype), z(d, dtype=dtype), z(d, dtype=dtype))
    return [z(2, 3, d, dtype=dtype), weights, None, 2, 1e-5]


@pytest.mark.parametrize("name, words", [
    ("x", ["'x'", "3-D"]), ("qkv_w", ["'qkv_w'", "(3d, d)"]), ("out_b", ["'out_b'", "(d,)"]),
    ("fc2_w", ["'fc2_w'", "(d, F)"]), ("ln2_b", ["'ln2_b'"]), ("key_mask", ["'key_mask'", "(2, 3)"]),
    ("num_heads", ["'num_heads'", "dividing"])])
def test_transformer_layer_names_bad_argument(backend, name, words):
    z = Args(backend).z
    args = _layer_args(z)
    if name == "x":
        args[0] = z(2, 8)
    elif name == "key_mask":
        args[2] = z(2, 4)
    elif name == "num_heads":
        args[3] = 3
    else:
        good = getattr(args[1], name)
        args[1] = args[1]._replace(**{name: z(*(np.array(good.shape) + 1))})
    with pytest.raises(ValueError) as info:
        backend.K.transformer_layer(*args)
    for w in ["transformer_layer"] + words:
        assert w in str(info.value), (w, str(info.value))


def test_transformer_layer_mixed_dtype(backend):
    z = Args(backend).z
    args = _layer_args(z)
    args[1] = args[1]._replace(fc1_w=z(16, 8, dtype=f64))
    with pytest.raises(TypeError, match="'fc1_w' has dtype float64, expected float32"):
        backend.K.transformer_layer(*args)
