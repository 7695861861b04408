"""Bad inputs are rejected in Python, before compiled code, with the function and argument named."""
import numpy as np
import pytest

from minifuse.kernels import cpu

f32, f64 = np.float32, np.float64


def z(*shape, dtype=f32):
    return np.zeros(shape, dtype)


def _layer_args(d=8, f=16, dtype=f32):
    return [z(2, 3, d, dtype=dtype), z(3 * d, d, dtype=dtype), z(3 * d, dtype=dtype), z(d, d, dtype=dtype),
            z(d, dtype=dtype), z(d, dtype=dtype), z(d, dtype=dtype), z(f, d, dtype=dtype), z(f, dtype=dtype),
            z(d, f, dtype=dtype), z(d, dtype=dtype), z(d, dtype=dtype), z(d, dtype=dtype), None, 2, 1e-5]


CASES = [
    # (callable, exception, words that must appear in the message)
    (lambda: cpu.bias_act_(z(2, 3, 4), None, "relu"), ValueError, ["bias_act_", "'y'", "2-D"]),
    (lambda: cpu.bias_act_(z(3, 4).T, None, "relu"), ValueError, ["bias_act_", "'y'", "C-contiguous"]),
    (lambda: cpu.bias_act_(z(3, 4), z(5), "relu"), ValueError, ["'bias'", "(5,)", "(4,)"]),
    (lambda: cpu.bias_act_(z(3, 4), z(4, dtype=f64), "relu"), TypeError, ["'bias'", "float64", "float32"]),
    (lambda: cpu.bias_act_(z(3, 4, dtype=np.int32), None, "relu"), TypeError, ["'y'", "int32"]),
    (lambda: cpu.bias_act_(z(3, 4, dtype=np.float16), None, "relu"), TypeError, ["'y'", "float16"]),
    (lambda: cpu.bias_act_(z(3, 4), None, "gelu_erf"), ValueError, ["'activation'", "gelu_erf"]),
    (lambda: cpu.bias_act_([[1.0]], None, "relu"), TypeError, ["'y'", "ndarray"]),
    (lambda: cpu.linear_act(z(5, 3), z(4, 6), None, "gelu"), ValueError, ["linear_act", "'weight'", "K = 3"]),
    (lambda: cpu.linear_act(z(5, 3), z(4, 3, dtype=f64), None, "gelu"), TypeError, ["'weight'", "float64"]),
    (lambda: cpu.linear_act(z(5, 3), z(4, 3), z(3), "gelu"), ValueError, ["'bias'", "(4,)"]),
    (lambda: cpu.linear_act(z(5, 3), z(4, 3), None, "gelu", out=z(5, 5)), ValueError, ["'out'", "(5, 4)"]),
    (lambda: cpu.linear_act(z(5, 3), z(4, 3), None, "gelu", out=z(4, 5).T), ValueError, ["'out'", "C-contiguous"]),
    (lambda: cpu.linear_act(z(5, 3), z(4, 3), None, "gelu", out=z(5, 4, dtype=f64)), TypeError, ["'out'", "float64"]),
    (lambda: cpu.bias_glu(z(2, 5), None, "silu"), ValueError, ["bias_glu", "'y'", "even"]),
    (lambda: cpu.bias_glu(z(2, 6), None, "relu"), ValueError, ["'gate'", "relu"]),
    (lambda: cpu.bias_glu(z(2, 6), z(3), "silu"), ValueError, ["'bias'", "(6,)"]),
    (lambda: cpu.bias_glu(z(2, 6), None, "silu", out=z(2, 6)), ValueError, ["'out'", "(2, 3)"]),
    (lambda: cpu.residual_layer_norm(z(2, 4), z(2, 5), z(4), z(4), 1e-5), ValueError, ["'residual'", "(2, 5)"]),
    (lambda: cpu.residual_layer_norm(z(2, 4), None, z(4, dtype=f64), z(4), 1e-5), TypeError, ["'gamma'", "float64"]),
    (lambda: cpu.residual_layer_norm(z(2, 4), None, z(4), z(3), 1e-5), ValueError, ["'beta'", "(3,)"]),
    (lambda: cpu.residual_layer_norm(z(2, 4), None, None, z(4), 1e-5), TypeError, ["'gamma'"]),
    (lambda: cpu.residual_layer_norm(z(2, 4), None, z(4), z(4), -1.0), ValueError, ["'eps'"]),
    (lambda: cpu.residual_layer_norm(z(2, 4), None, z(4), z(4), 1e-5, out=z(4, 2).T), ValueError, ["'out'", "C-contiguous"]),
    (lambda: cpu.attention(z(1, 2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 3), None, 1.0), ValueError, ["attention", "'v'", "(1, 2, 5, 3)"]),
    (lambda: cpu.attention(z(1, 2, 3, 4), z(1, 2, 5, 4, dtype=f64), z(1, 2, 5, 4), None, 1.0), TypeError, ["'k'", "float64"]),
    (lambda: cpu.attention(z(2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 4), None, 1.0), ValueError, ["'q'", "4-D"]),
    (lambda: cpu.attention(z(1, 2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 4), z(1, 4), 1.0), ValueError, ["'key_mask'", "(1, 5)"]),
    (lambda: cpu.attention(z(1, 2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 4), np.array([["a"] * 5]), 1.0), TypeError, ["'key_mask'"]),
    (lambda: cpu.attention(z(1, 2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 4), None, "x"), TypeError, ["'scale'"]),
    (lambda: cpu.attention(z(1, 2, 3, 4), z(1, 2, 5, 4), z(1, 2, 5, 4), None, 1.0, out=z(1, 2, 3, 5)), ValueError, ["'out'"]),
    (lambda: cpu.attention_packed(z(2, 3, 10), None, 2, 1.0), ValueError, ["attention_packed", "'qkv'", "3 * 2"]),
    (lambda: cpu.attention_packed(z(2, 3, 12), None, 0, 1.0), ValueError, ["'num_heads'"]),
    (lambda: cpu.attention_packed(z(2, 3, 12), None, 2, 1.0, method="flash"), ValueError, ["'method'", "'bmm'"]),
    (lambda: cpu.attention_packed(z(2, 3, 12), None, 2, 1.0, out=z(2, 3, 12)), ValueError, ["'out'", "(2, 3, 4)"]),
    (lambda: cpu.mlp(z(3, 4), z(6, 4), None, z(2, 6), None, "swiglu"), ValueError, ["mlp", "'w2'", "K = 3"]),
    (lambda: cpu.mlp(z(3, 4), z(5, 4), None, z(2, 5), None, "glu"), ValueError, ["mlp", "even"]),
    (lambda: cpu.mlp(z(3, 4), z(6, 4), None, z(2, 6), None, "tanh"), ValueError, ["'activation'", "tanh"]),
    (lambda: cpu.mlp(z(3, 4), z(6, 4), z(6, dtype=f64), z(2, 6), None, "relu"), TypeError, ["'b1'", "float64"]),
]


@pytest.mark.parametrize("call, exc, words", CASES)
def test_bad_input_is_named(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_out_overlapping_input_is_rejected():
    y = z(2, 6)
    with pytest.raises(ValueError, match="'out' overlaps 'y'"):
        cpu.bias_glu(y, None, "silu", out=y.reshape(-1)[:6].reshape(2, 3))


def test_read_only_out_and_y():
    y = z(2, 3)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="bias_act_: 'y' is read-only"):
        cpu.bias_act_(y, None, "relu")


@pytest.mark.parametrize("index, name, words", [
    (0, "x", ["'x'", "3-D"]), (1, "qkv_w", ["'qkv_w'", "(3d, d)"]), (4, "out_b", ["'out_b'", "(d,)"]),
    (9, "fc2_w", ["'fc2_w'", "(d, F)"]), (12, "ln2_b", ["'ln2_b'"]), (13, "key_mask", ["'key_mask'", "(2, 3)"]),
    (14, "num_heads", ["'num_heads'", "dividing"])])
def test_transformer_layer_names_bad_argument(index, name, words):
    args = _layer_args()
    bad = {0: z(2, 8), 13: z(2, 4), 14: 3}.get(index, None)
    if bad is None:
        bad = z(*(np.array(args[index].shape) + 1))
    args[index] = bad
    with pytest.raises(ValueError) as info:
        cpu.transformer_layer(*args)
    for w in ["transformer_layer"] + words:
        assert w in str(info.value), (w, str(info.value))


def test_transformer_layer_mixed_dtype():
    args = _layer_args()
    args[7] = args[7].astype(f64)
    with pytest.raises(TypeError, match="'fc1_w' has dtype float64, expected float32"):
        cpu.transformer_layer(*args)
