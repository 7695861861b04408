"""One declaration per op: how to call it, a plain NumPy reference, and the shapes to try.

``tests/test_ops.py`` turns every case into forward tests (float32 and float64 against the
float64 NumPy reference) and a float64 gradcheck. Add an op here and it is tested everywhere.
"""
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import erf

import minifuse as mf
import minifuse.nn.functional as F


@dataclass
class OpCase:
    name: str
    fn: Callable             # (*tensors) -> Tensor, the minifuse op under test
    ref: Callable            # (*float64 arrays) -> array, written independently with NumPy
    shapes: list             # list of tuples of input shapes
    domain: str = "any"      # 'any', 'positive' (log, sqrt, pow base), 'unit' (in (0.1, 1))
    extra: dict = field(default_factory=dict)

    def __repr__(self):
        return self.name


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


BINARY = [(3, 4), (3, 4)], [(3, 4), (4,)], [(2, 1, 4), (3, 1)], [(), (2, 3)], [(1,), (5,)]
UNARY = [(3, 4)], [(2, 3, 5)], [()], [(1,)]

CASES = [
    OpCase("add", lambda a, b: a + b, np.add, BINARY),
    OpCase("sub", lambda a, b: a - b, np.subtract, BINARY),
    OpCase("mul", lambda a, b: a * b, np.multiply, BINARY),
    OpCase("div", lambda a, b: a / b, np.divide, BINARY, domain="positive"),
    OpCase("pow_tensor", lambda a, b: a ** b, np.power, BINARY, domain="positive"),
    OpCase("pow_scalar", lambda a: a ** 3, lambda a: a ** 3, UNARY),
    OpCase("rsub_scalar", lambda a: 2.0 - a, lambda a: 2.0 - a, UNARY),
    OpCase("rdiv_scalar", lambda a: 2.0 / a, lambda a: 2.0 / a, UNARY, domain="positive"),
    OpCase("neg", lambda a: -a, np.negative, UNARY),
    OpCase("exp", mf.exp, np.exp, UNARY),
    OpCase("log", mf.log, np.log, UNARY, domain="positive"),
    OpCase("sqrt", mf.sqrt, np.sqrt, UNARY, domain="positive"),
    OpCase("tanh", mf.tanh, np.tanh, UNARY),
    OpCase("sigmoid", mf.sigmoid, _sigmoid, UNARY),
    OpCase("relu", mf.relu, lambda a: np.maximum(a, 0), UNARY),
    OpCase("abs", mf.abs, np.abs, UNARY),
    OpCase("maximum", mf.maximum, np.maximum, BINARY),
    OpCase("minimum", mf.minimum, np.minimum, BINARY),
    OpCase("clamp", lambda a: a.clamp(-0.5, 0.7), lambda a: np.clip(a, -0.5, 0.7), UNARY),
    OpCase("clamp_min", lambda a: a.clamp(min=0.1), lambda a: np.maximum(a, 0.1), UNARY),
    OpCase("matmul_2d", mf.matmul, np.matmul, [[(3, 4), (4, 5)], [(1, 1), (1, 1)]]),
    OpCase("matmul_batched", mf.matmul, np.matmul, [[(2, 3, 4), (2, 4, 5)], [(2, 1, 3, 4), (3, 4, 2)],
                                                  [(2, 3, 4), (4, 5)], [(3, 4), (2, 4, 5)]]),
    OpCase("matmul_vector", mf.matmul, np.matmul, [[(4,), (4,)], [(3, 4), (4,)], [(4,), (4, 3)],
                                                 [(2, 3, 4), (4,)]]),
    OpCase("sum_all", lambda a: a.sum(), lambda a: a.sum(), UNARY),
    OpCase("sum_dim", lambda a: a.sum(1), lambda a: a.sum(1), [[(3, 4)], [(2, 3, 5)]]),
    OpCase("sum_dims_keep", lambda a: a.sum((0, -1), keepdim=True),
           lambda a: a.sum((0, -1), keepdims=True), [[(3, 4)], [(2, 3, 5)]]),
    OpCase("mean", lambda a: a.mean(-1), lambda a: a.mean(-1), [[(3, 4)], [(2, 3, 5)]]),
    OpCase("mean_all", lambda a: a.mean(), lambda a: a.mean(), UNARY),
    OpCase("var", lambda a: a.var(1), lambda a: a.var(1, ddof=1), [[(3, 4)], [(2, 3, 5)]]),
    OpCase("var_biased_keep", lambda a: a.var((0, 1), keepdim=True, correction=0),
           lambda a: a.var((0, 1), keepdims=True), [[(3, 4)], [(2, 3, 5)]]),
    OpCase("pow_method", lambda a, b: a.pow(b), np.power, BINARY, domain="positive"),
    OpCase("std", lambda a: a.std(1), lambda a: a.std(1, ddof=1), [[(3, 4)], [(2, 3, 5)]]),
    OpCase("std_biased_keep", lambda a: mf.std(a, (0, 1), keepdim=True, correction=0),
           lambda a: a.std((0, 1), keepdims=True), [[(3, 4)], [(2, 3, 5)]]),
    OpCase("std_unbiased_false", lambda a: a.std(unbiased=False), lambda a: a.std(), UNARY[:2]),
    OpCase("einsum_matmul", lambda a, b: mf.einsum("ij,jk->ik", a, b), lambda a, b: a @ b, [[(3, 4), (4, 5)]]),
    OpCase("einsum_batched_ellipsis", lambda a, b: mf.einsum("...ij,...jk", a, b), np.matmul,
           [[(2, 3, 4), (2, 4, 5)], [(2, 3, 4), (4, 2)], [(1, 3, 4), (2, 4, 2)]]),
    OpCase("einsum_summed_away", lambda a, b: mf.einsum("bij,bk->bk", a, b),
           lambda a, b: a.sum((1, 2))[:, None] * b, [[(2, 3, 4), (2, 5)]]),
    OpCase("einsum_outer_list", lambda a, b: mf.einsum("i,j->ji", [a, b]), lambda a, b: np.outer(b, a),
           [[(3,), (4,)]]),
    OpCase("einsum_three", lambda a, b, c: mf.einsum("ij,jk,k->i", a, b, c), lambda a, b, c: a @ b @ c,
           [[(2, 3), (3, 4), (4,)]]),
    OpCase("max_all", lambda a: a.max(), lambda a: a.max(), UNARY),
    OpCase("max_dim", lambda a: a.max(1).values, lambda a: a.max(1), [[(3, 4)], [(2, 3, 5)]]),
    OpCase("min_dim_keep", lambda a: a.min(0, keepdim=True).values, lambda a: a.min(0, keepdims=True),
           [[(3, 4)], [(2, 3, 5)]]),
    OpCase("amax_tuple", lambda a: a.amax((0, 2)), lambda a: a.max((0, 2)), [[(2, 3, 5)]]),
    OpCase("reshape", lambda a: a.reshape(-1, 2), lambda a: a.reshape(-1, 2), [[(3, 4)], [(2, 3, 2)]]),
    OpCase("view", lambda a: a.view(a.numel()), lambda a: a.reshape(-1), UNARY),
    OpCase("flatten", lambda a: a.flatten(1), lambda a: a.reshape(a.shape[0], -1), [[(2, 3, 5)]]),
    OpCase("transpose", lambda a: a.transpose(0, -1), lambda a: np.swapaxes(a, 0, -1), [[(3, 4)], [(2, 3, 5)]]),
    OpCase("T", lambda a: a.T, lambda a: a.T, [[(3, 4)], [(2, 3, 5)]]),
    OpCase("permute", lambda a: a.permute(2, 0, 1), lambda a: a.transpose(2, 0, 1), [[(2, 3, 5)]]),
    OpCase("expand", lambda a: a.expand(2, 3, 4), lambda a: np.broadcast_to(a, (2, 3, 4)),
           [[(3, 1)], [(1, 4)], [(4,)]]),
    OpCase("squeeze", lambda a: a.squeeze(1), lambda a: a.squeeze(1), [[(3, 1, 4)]]),
    OpCase("unsqueeze", lambda a: a.unsqueeze(-1), lambda a: a[..., None], UNARY),
    OpCase("index_slice", lambda a: a[1:, ::2], lambda a: a[1:, ::2], [[(3, 4)], [(4, 5, 2)]]),
    OpCase("index_int_repeat", lambda a: a[np.array([0, 2, 0, 0])], lambda a: a[[0, 2, 0, 0]],
           [[(3, 4)], [(3,)]]),
    OpCase("index_tensor_pair", lambda a: a[mf.tensor([0, 1, 1], device=a.device), mf.tensor([2, 0, 2], device=a.device)],
           lambda a: a[[0, 1, 1], [2, 0, 2]], [[(3, 4)]]),
    OpCase("index_bool", lambda a: a[a.detach() > 0], lambda a: a[a > 0], [[(3, 4)]]),
    OpCase("cat", lambda a, b: mf.cat([a, b], dim=1), lambda a, b: np.concatenate([a, b], 1),
           [[(3, 4), (3, 2)], [(2, 1, 3), (2, 4, 3)]]),
    OpCase("stack", lambda a, b: mf.stack([a, b], dim=-1), lambda a, b: np.stack([a, b], -1),
           [[(3, 4), (3, 4)]]),
    OpCase("split", lambda a: a.split(2, dim=1)[1], lambda a: a[:, 2:4], [[(3, 5)]]),
    OpCase("split_sections", lambda a: a.split([1, 4], dim=1)[1] * 2, lambda a: a[:, 1:] * 2, [[(3, 5)]]),
    OpCase("chunk_last", lambda a: a.chunk(3, dim=0)[-1], lambda a: a[4:], [[(5, 2)]]),
    OpCase("where", lambda a, b: mf.where(a.detach() > b.detach(), a, b),
           lambda a, b: np.where(a > b, a, b), [[(3, 4), (3, 4)], [(3, 4), (4,)]]),
    OpCase("masked_fill", lambda a: a.masked_fill(a.detach() < 0, 0.5), lambda a: np.where(a < 0, 0.5, a), UNARY),
    # nn.functional
    OpCase("linear", F.linear, lambda x, w, b: x @ w.T + b, [[(3, 4), (5, 4), (5,)], [(2, 3, 4), (2, 4), (2,)]]),
    OpCase("linear_nobias", F.linear, lambda x, w: x @ w.T, [[(3, 4), (5, 4)]]),
    OpCase("F.relu", F.relu, lambda a: np.maximum(a, 0), UNARY),
    OpCase("gelu", F.gelu, lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))), UNARY),
    OpCase("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"),
           lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))), UNARY),
    OpCase("silu", F.silu, lambda x: x * _sigmoid(x), UNARY),
    OpCase("F.tanh", F.tanh, np.tanh, UNARY),
    OpCase("glu", F.glu, lambda x: _sigmoid(x[..., :x.shape[-1] // 2]) * x[..., x.shape[-1] // 2:],
           [[(3, 4)], [(2, 3, 6)]]),
    OpCase("swiglu", F.swiglu,
           lambda x: x[..., :x.shape[-1] // 2] * _sigmoid(x[..., :x.shape[-1] // 2]) * x[..., x.shape[-1] // 2:],
           [[(3, 4)], [(2, 3, 6)]]),
    OpCase("softmax", lambda x: F.softmax(x, dim=-1), _softmax, [[(3, 4)], [(2, 3, 5)], [(1, 1)]]),
    OpCase("softmax_dim0", lambda x: F.softmax(x, dim=0), lambda x: _softmax(x, 0), [[(3, 4)]]),
    OpCase("log_softmax", lambda x: F.log_softmax(x, dim=1), lambda x: np.log(_softmax(x, 1)),
           [[(3, 4)], [(2, 3, 5)]]),
    OpCase("layer_norm", lambda x, w, b: F.layer_norm(x, x.shape[-1], w, b), _layer_norm,
           [[(3, 4), (4,), (4,)], [(2, 3, 5), (5,), (5,)]]),
    OpCase("layer_norm_plain", lambda x: F.layer_norm(x, (x.shape[-1],), eps=1e-12),
           lambda x: _layer_norm(x, 1.0, 0.0, 1e-12), [[(3, 4)], [(1, 7)]]),
    OpCase("mse_loss", F.mse_loss, lambda a, b: ((a - b) ** 2).mean(), [[(3, 4), (3, 4)]]),
    OpCase("sdpa", F.scaled_dot_product_attention,
           lambda q, k, v: _softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])) @ v,
           [[(2, 3, 4), (2, 5, 4), (2, 5, 3)], [(1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4)]]),
    OpCase("sdpa_causal", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
           lambda q, k, v: _softmax(np.where(np.tril(np.ones((q.shape[-2], k.shape[-2]), bool)),
                                             q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]), -np.inf)) @ v,
           [[(2, 3, 4), (2, 3, 4), (2, 3, 2)]]),
    OpCase("sdpa_float_mask_scale",
           lambda q, k, v: F.scaled_dot_product_attention(
               q, k, v, attn_mask=mf.tensor(np.array([0.0, -1.0, 0.5, -1e9]), dtype=q.dtype, device=q.device), scale=0.3),
           lambda q, k, v: _softmax(q @ np.swapaxes(k, -1, -2) * 0.3 + np.array([0.0, -1.0, 0.5, -1e9])) @ v,
           [[(2, 3, 4), (2, 4, 4), (2, 4, 3)]]),
]


def _ce_ref(x, t, ignore=-100, smoothing=0.0):
    logp = np.log(_softmax(x, -1))
    valid = t != ignore
    tt = np.where(valid, t, 0)
    nll = -logp[np.arange(len(t)), tt]
    loss = (1 - smoothing) * nll - smoothing * logp.mean(-1)
    return (loss * valid).sum() / valid.sum()


def _bce_ref(x, y, p=1.0, reduce=True):
    log_sig = -np.logaddexp(0, -x)                       # log sigmoid(x)
    loss = -(p * y * log_sig + (1 - y) * (log_sig - x))  # log(1 - sigmoid(x)) = log sigmoid(x) - x
    return loss.mean() if reduce else loss


def _conv_ref(x, w, b=None, stride=1, pad=0, dilation=1, groups=1):
    """Direct loops over output positions and kernel offsets: the definition of conv2d."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = (h - dilation * (kh - 1) - 1) // stride + 1, (wd - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for oc in range(o):
        g = oc // (o // groups)
        for i in range(kh):
            for j in range(kw):
                patch = x[:, g * cg:(g + 1) * cg, i * dilation:i * dilation + stride * (oh - 1) + 1:stride,
                          j * dilation:j * dilation + stride * (ow - 1) + 1:stride]
                out[:, oc] += np.einsum("nchw,c->nhw", patch, w[oc, :, i, j])
    return out if b is None else out + b[None, :, None, None]


def _max_pool_ref(x, k, stride, pad=0):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    oh, ow = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    return np.array([[[[x[a, b, i * stride:i * stride + k, j * stride:j * stride + k].max() for j in range(ow)]
                       for i in range(oh)] for b in range(x.shape[1])] for a in range(x.shape[0])]).reshape(
        x.shape[0], x.shape[1], oh, ow)


_T = np.array([0, 3, 1, -100, 2])
_IDX = np.array([[0, 2, 2], [4, 1, 0]])

CASES += [
    OpCase("cross_entropy", lambda x: F.cross_entropy(x, mf.tensor(_T, device=x.device)), lambda x: _ce_ref(x, _T), [[(5, 4)]]),
    OpCase("cross_entropy_smooth", lambda x: F.cross_entropy(x, mf.tensor(_T, device=x.device), label_smoothing=0.2),
           lambda x: _ce_ref(x, _T, smoothing=0.2), [[(5, 4)]]),
    OpCase("cross_entropy_spatial",
           lambda x: F.cross_entropy(x, mf.tensor(_IDX[:, :2] % 3, device=x.device), reduction="sum"),
           lambda x: -(np.log(_softmax(x, 1)) * np.eye(3)[_IDX[:, :2] % 3].transpose(0, 2, 1)).sum(),
           [[(2, 3, 2)]]),
    OpCase("nll_loss", lambda x: F.nll_loss(x, mf.tensor(_T, device=x.device)),
           lambda x: -(x[[0, 1, 2, 4], _T[[0, 1, 2, 4]]]).mean(), [[(5, 4)]]),
    OpCase("nll_loss_spatial_sum",
           lambda x: F.nll_loss(x, mf.tensor(_IDX[:, :2] % 3, device=x.device), reduction="sum"),
           lambda x: -(x * np.eye(3)[_IDX[:, :2] % 3].transpose(0, 2, 1)).sum(), [[(2, 3, 2)]]),
    OpCase("bce_with_logits", F.binary_cross_entropy_with_logits, _bce_ref, [[(3, 4), (3, 4)], [(5,), (5,)]]),
    OpCase("bce_with_logits_weights",
           lambda x, y, w, p: F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=p, reduction="sum"),
           lambda x, y, w, p: (w * _bce_ref(x, y, p, reduce=False)).sum(), [[(3, 4), (3, 4), (4,), (4,)]]),
    OpCase("embedding", lambda w: F.embedding(mf.tensor(_IDX, device=w.device), w), lambda w: w[_IDX], [[(5, 3)]]),
    OpCase("dropout_eval", lambda x: F.dropout(x, 0.5, training=False), lambda x: x, UNARY),
]

CASES += [
    OpCase("leaky_relu", lambda x: F.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, 0.1 * x), UNARY),
    OpCase("rms_norm", lambda x, w: F.rms_norm(x, x.shape[-1], w, eps=1e-6),
           lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w, [[(3, 4), (4,)], [(2, 3, 5), (5,)]]),
    OpCase("rms_norm_2d_plain", lambda x: F.rms_norm(x, x.shape[-2:], eps=1e-6),
           lambda x: x / np.sqrt((x * x).mean((-2, -1), keepdims=True) + 1e-6), [[(2, 3, 4)]]),
    OpCase("unfold", lambda x: F.unfold(x, 2, padding=1, stride=2),
           lambda x: np.stack([np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))[:, :, i::2, j::2][:, :, :3, :3]
                               for i in range(2) for j in range(2)], 2).reshape(2, 12, 9), [[(2, 3, 4, 5)]]),
    OpCase("conv2d", F.conv2d, _conv_ref, [[(2, 3, 5, 6), (4, 3, 3, 3), (4,)], [(1, 1, 3, 3), (2, 1, 3, 3), (2,)],
                                           [(2, 2, 4, 4), (3, 2, 1, 1), (3,)]]),
    OpCase("conv2d_stride_padding_dilation_groups",
           lambda x, w: F.conv2d(x, w, stride=2, padding=2, dilation=2, groups=2),
           lambda x, w: _conv_ref(x, w, stride=2, pad=2, dilation=2, groups=2), [[(2, 4, 7, 6), (6, 2, 3, 2)]]),
    OpCase("conv2d_unbatched_same", lambda x, w: F.conv2d(x, w, padding="same"),
           lambda x, w: _conv_ref(x[None], w, pad=1)[0], [[(2, 4, 4), (3, 2, 3, 3)]]),
    OpCase("max_pool2d", lambda x: F.max_pool2d(x, 2), lambda x: _max_pool_ref(x, 2, 2), [[(2, 3, 4, 6)], [(1, 1, 5, 5)]]),
    OpCase("max_pool2d_overlap_padding", lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
           lambda x: _max_pool_ref(x, 3, 2, 1), [[(2, 2, 5, 6)]]),
]
