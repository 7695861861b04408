"""Plain NumPy float64 references for the layers, written independently of minifuse, and a
helper that gradchecks a module with respect to its inputs AND its parameters."""
import numpy as np
from scipy.special import erf

import minifuse as mf


def relu(z):
    return np.maximum(z, 0.0)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def silu(z):
    return z * sigmoid(z)


def gelu_erf(z):
    return 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))


def gelu_tanh(z):
    return 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z ** 3)))


def linear(x, w, b=None):
    y = np.einsum("...i,oi->...o", x, w)
    return y if b is None else y + b


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def zero_padding(y, mask):
    """The layers' outputs at padded positions (mask 0) are zeros."""
    return y if mask is None else y * (np.asarray(mask) != 0)[..., None]


def attention(x, p, heads, mask=None):
    """p: numpy arrays keyed qkv.weight, qkv.bias, out.weight, out.bias; loops over heads.
    Padded query rows are zeros."""
    return zero_padding(_attention(x, p, heads, mask), mask)


def _attention(x, p, heads, mask=None):
    B, S, d = x.shape
    dh = d // heads
    qkv = linear(x, p["qkv.weight"], p["qkv.bias"])
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
    ctx = np.zeros((B, S, d))
    for b in range(B):
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            s = q[b, :, sl] @ k[b, :, sl].T / np.sqrt(dh)
            if mask is not None:
                s = s + np.where(np.asarray(mask)[b] == 0, np.finfo(np.float64).min, 0.0)[None, :]
            ctx[b, :, sl] = softmax(s) @ v[b, :, sl]
    return linear(ctx, p["out.weight"], p["out.bias"])


def transformer_layer(x, p, heads, mask=None, eps=1e-12, act=gelu_erf):
    sub = lambda prefix: {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}  # noqa: E731
    h = layer_norm(x + _attention(x, sub("attn."), heads, mask), p["ln1.weight"], p["ln1.bias"], eps)
    f = linear(act(linear(h, p["fc1.weight"], p["fc1.bias"])), p["fc2.weight"], p["fc2.bias"])
    return zero_padding(layer_norm(h + f, p["ln2.weight"], p["ln2.bias"], eps), mask)


def params_np(module):
    return {k: np.array(v.data, dtype=np.float64) for k, v in module.state_dict().items()}


def gradcheck_module(module, inputs, fast_mode=False, **kwargs):
    """gradcheck of ``module(*inputs)`` w.r.t. the float inputs that require grad and every
    parameter (the module is converted to float64 first)."""
    module.to(mf.float64)
    names, params = zip(*module.named_parameters())
    n = len(inputs)

    def fn(*args):
        saved = []
        for name, t in zip(names, args[n:]):  # swap in gradcheck's copies of the parameters
            prefix, _, leaf = name.rpartition(".")
            owner = module.get_submodule(prefix)
            saved.append((owner, leaf, owner._parameters[leaf]))
            owner._parameters[leaf] = t
        try:
            return module(*args[:n])
        finally:
            for owner, leaf, p in saved:
                owner._parameters[leaf] = p

    return mf.autograd.gradcheck(fn, tuple(inputs) + tuple(params), fast_mode=fast_mode, **kwargs)
