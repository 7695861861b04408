"""Benchmark of the fused CPU kernels against the bare GEMMs they wrap and plain NumPy.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m minifuse.bench.kernels_cpu

(some machines set the two variables to pin OpenBLAS to an older kernel, which a current numpy
does not need and which slows it down; unset them for numbers that compare with other libraries).
Workloads, float32: linear 512x768->3072 (gelu_tanh, gelu), SwiGLU MLP dim 768 /
hidden 2048 / 2048 tokens, BERT-base and MiniLM-width transformer layers (B=8, S=128, padding
mask). For each: the fused kernel, its GEMM-only floor (the same np.matmul calls with out=,
nothing else), the unfused NumPy path, and torch eager when torch is importable. Medians of
`repeat` runs after a warm-up; the machine may be shared, so compare ratios from one run.
"""
import math
import os
import statistics
import time

import numpy as np
from scipy import special

from minifuse.kernels import cpu
from minifuse.kernels.weights import LayerWeights


def timed(fn, repeat):
    from minifuse.progress import progress
    fn()                                    # warm-up: compile / load from cache, page in buffers
    times = []
    for _ in progress(range(repeat), desc="timing", leave=False):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, min(times) * 1e3


def environment():
    import numba
    lines = [f"numba {numba.__version__} threads {numba.get_num_threads()} layer {numba.threading_layer()}, "
             f"numpy {np.__version__}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
             f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}"]
    try:
        from threadpoolctl import threadpool_info
        for p in threadpool_info():
            lines.append(f"{p['internal_api']} {p.get('version')} threads {p['num_threads']} "
                         f"kernel {p.get('architecture')} ({os.path.basename(p['filepath'])})")
    except ImportError:
        lines.append("threadpoolctl not installed: BLAS kernel unknown")
    return lines


# ---- unfused NumPy paths (what a plain NumPy user writes; float32 throughout) ----
def np_gelu_tanh(v):
    return 0.5 * v * (1 + np.tanh(np.float32(0.7978845608028654) * (v + np.float32(0.044715) * v ** 3)))


def np_gelu(v):
    return 0.5 * v * (1 + special.erf(v / np.float32(math.sqrt(2))))


def np_layer_norm(v, g, b, eps):
    mean = v.mean(-1, keepdims=True)
    c = v - mean
    return c / np.sqrt((c * c).mean(-1, keepdims=True) + eps) * g + b


def np_layer(x, p, mask, heads, eps):
    """BERT post-LN layer, unfused: separate q/k/v heads, materialised scores and probabilities."""
    (qkv_w, qkv_b, out_w, out_b, g1, b1, fc1_w, fc1_b, fc2_w, fc2_b, g2, b2) = p
    nb, s, d = x.shape
    dh = d // heads
    qkv = x @ qkv_w.T + qkv_b
    q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(nb, s, heads, dh).transpose(0, 2, 1, 3) for i in range(3))
    scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1 / math.sqrt(dh))
    scores = scores + np.where(mask == 0, np.finfo(np.float32).min, 0).astype(np.float32)[:, None, None, :]
    e = np.exp(scores - scores.max(-1, keepdims=True))
    ctx = ((e / e.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(nb, s, d)
    h = np_layer_norm(x + ctx @ out_w.T + out_b, g1, b1, eps)
    return np_layer_norm(h + np_gelu(h @ fc1_w.T + fc1_b) @ fc2_w.T + fc2_b, g2, b2, eps)


def layer_params(rng, d, f):
    w = lambda *s: (rng.standard_normal(s) / math.sqrt(s[-1])).astype(np.float32)
    v = lambda n, c=0.0: (c + 0.1 * rng.standard_normal(n)).astype(np.float32)
    return [w(3 * d, d), v(3 * d), w(d, d), v(d), v(d, 1), v(d), w(f, d), v(f), w(d, f), v(d), v(d, 1), v(d)]


def gemm_floor(shapes, repeat):
    """Time the GEMMs alone: (a (n, k), w (m, k)) pairs, each written into a preallocated out."""
    bufs = [(a, w, np.empty((a.shape[0], w.shape[0]), a.dtype)) for a, w in shapes]
    return timed(lambda: [np.matmul(a, w.T, out=o) for a, w, o in bufs], repeat)


def torch_or_none():
    try:
        import torch
        torch.set_num_threads(len(os.sched_getaffinity(0)))   # same cores as numba and OpenBLAS
        return torch
    except ImportError:
        return None


def torch_layer(torch, x, p, mask, heads, repeat):
    """nn.TransformerEncoderLayer (post-LN, exact gelu), eval + inference_mode: its fast path."""
    if torch is None:
        return None
    d, f = x.shape[-1], p[6].shape[0]
    layer = torch.nn.TransformerEncoderLayer(d, heads, f, dropout=0.0, activation="gelu", batch_first=True,
                                             layer_norm_eps=1e-12).eval()
    names = ["self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
             "self_attn.out_proj.bias", "norm1.weight", "norm1.bias", "linear1.weight", "linear1.bias",
             "linear2.weight", "linear2.bias", "norm2.weight", "norm2.bias"]
    layer.load_state_dict({k: torch.from_numpy(v) for k, v in zip(names, p)})
    tx, pad = torch.from_numpy(x), torch.from_numpy(mask == 0)
    with torch.inference_mode():
        return timed(lambda: layer(tx, src_key_padding_mask=pad), repeat)


def run(report=print, repeat=15):
    rng = np.random.default_rng(0)
    torch = torch_or_none()
    t = time.perf_counter()
    for name, act in (("relu", "relu"), ("swiglu", "swiglu")):
        cpu.mlp(np.ones((2, 4), np.float32), np.ones((8, 4), np.float32), None, np.ones((3, 8 if act == "relu" else 4), np.float32), None, act)
    small = layer_params(rng, 8, 16)
    cpu.transformer_layer(np.ones((1, 2, 8), np.float32), LayerWeights(*small), np.ones((1, 2)), 2, 1e-12)
    report(f"first calls of every float32 kernel (compile, or load from the numba cache): {time.perf_counter() - t:.2f} s")
    for line in environment():
        report(line)
    rows = []

    def row(name, fused, floor, unfused, torch_ms=None):
        rows.append((name, fused, floor, unfused, torch_ms))

    # Linear + activation, 512x768 -> 3072
    x = rng.standard_normal((512, 768)).astype(np.float32)
    w = (rng.standard_normal((3072, 768)) / 28).astype(np.float32)
    b = rng.standard_normal(3072).astype(np.float32)
    out = np.empty((512, 3072), np.float32)
    bare = timed(lambda: np.matmul(x, w.T, out=out), repeat)
    for act, np_act in (("gelu_tanh", np_gelu_tanh), ("gelu", np_gelu)):
        t_torch = None
        if torch is not None:
            tx, tw, tb = map(torch.from_numpy, (x, w, b))
            approx = "tanh" if act == "gelu_tanh" else "none"
            with torch.no_grad():
                t_torch = timed(lambda: torch.nn.functional.gelu(torch.nn.functional.linear(tx, tw, tb), approximate=approx), repeat)
        row(f"linear 512x768->3072 {act}", timed(lambda: cpu.linear_act(x, w, b, act, out=out), repeat), bare,
            timed(lambda: np_act(x @ w.T + b), repeat), t_torch)

    # SwiGLU MLP: dim 768, hidden 2048, 2048 tokens
    x = rng.standard_normal((2048, 768)).astype(np.float32)
    w1 = (rng.standard_normal((4096, 768)) / 28).astype(np.float32)
    w2 = (rng.standard_normal((768, 2048)) / 45).astype(np.float32)
    hid = rng.standard_normal((2048, 2048)).astype(np.float32)

    def np_swiglu():
        a, c = np.split(x @ w1.T, 2, axis=-1)
        return (a * special.expit(a) * c) @ w2.T
    t_torch = None
    if torch is not None:
        tx, tw1, tw2 = map(torch.from_numpy, (x, w1, w2))

        def torch_swiglu():
            a, c = torch.nn.functional.linear(tx, tw1).chunk(2, dim=-1)
            return torch.nn.functional.linear(torch.nn.functional.silu(a) * c, tw2)
        with torch.no_grad():
            t_torch = timed(torch_swiglu, repeat)
    row("MLP swiglu 768/2048, 2048 tok", timed(lambda: cpu.mlp(x, w1, None, w2, None, "swiglu"), repeat),
        gemm_floor([(x, w1), (hid, w2)], repeat), timed(np_swiglu, repeat), t_torch)

    # Transformer layers, B=8, S=128, padding mask (last 28 keys of half the batch padded)
    for name, d, heads, f in (("BERT-base", 768, 12, 3072), ("MiniLM dims", 384, 12, 1536)):
        nb, s = 8, 128
        x = rng.standard_normal((nb, s, d)).astype(np.float32)
        p = layer_params(rng, d, f)
        mask = np.ones((nb, s), np.int64)
        mask[::2, 100:] = 0
        n = nb * s
        a_d, a_f = (rng.standard_normal((n, c)).astype(np.float32) for c in (d, f))   # not np.empty: denormals
        floor = gemm_floor([(a_d, p[0]), (a_d, p[2]), (a_d, p[6]), (a_f, p[8])], repeat)
        fused = timed(lambda: cpu.transformer_layer(x, LayerWeights(*p), mask, heads, 1e-12), repeat)
        row(f"transformer layer {name}", fused, floor, timed(lambda: np_layer(x, p, mask, heads, 1e-12), max(3, repeat // 3)),
            torch_layer(torch, x, p, mask, heads, repeat))
        q = rng.standard_normal((nb, s, 3 * d)).astype(np.float32)
        row(f"  attention_packed alone {name}", timed(lambda: cpu.attention_packed(q, mask, heads, 0.125), repeat),
            None, None)

    report(f"{'workload':40s} {'fused':>8s} {'floor':>8s} {'unfused':>8s} {'torch':>8s} {'fused/floor':>11s} {'unfused/fused':>13s}")
    for name, fused, floor, unfused, t_torch in rows:
        cell = lambda t: f"{t[0]:8.2f}" if t else f"{'-':>8s}"
        ratio = lambda a, b: f"{a[0] / b[0]:.3f}" if a and b else "-"
        report(f"{name:40s} {cell(fused)} {cell(floor)} {cell(unfused)} {cell(t_torch)} "
               f"{ratio(fused, floor):>11s} {ratio(unfused, fused):>13s}")
    report("ms, median of %d runs (fused min: %s)" % (repeat, ", ".join(f"{r[1][1]:.2f}" for r in rows)))
    report("floor = the same GEMMs alone (np.matmul with out=); for linear it is the bare GEMM")
    report("")
    layer_table(report, repeat, torch, rng)
    report("")
    from minifuse.bench import busy_cpu
    busy_cpu.run(report)
    return rows


def layer_table(report, repeat, torch, rng):
    """The same workloads through minifuse's layers: eager fused (mf.no_grad) vs eager unfused
    (mf.nn.fusion(False)), the GEMM-only floor, and torch eager."""
    import minifuse as mf
    import minifuse.nn as nn

    def load(module, arrays):
        for param, a in zip(module.parameters(), arrays):
            param.data[...] = a

    def both(module, *inputs):
        with mf.no_grad():
            fused = timed(lambda: module(*inputs), repeat)
            with nn.fusion(False):
                unfused = timed(lambda: module(*inputs), max(3, repeat // 3))
        return fused[0], unfused[0]

    lines = []
    x = mf.tensor(rng.standard_normal((512, 768)).astype(np.float32))
    lin = nn.FusedLinear(768, 3072, "gelu")            # FusedLinear's default: the tanh GELU
    floor = timed(lambda: np.matmul(x.data, lin.weight.data.T), repeat)[0]
    t_torch = None
    if torch is not None:
        tx, tw, tb = (torch.from_numpy(a.data) for a in (x, lin.weight, lin.bias))
        with torch.no_grad():
            t_torch = timed(lambda: torch.nn.functional.gelu(torch.nn.functional.linear(tx, tw, tb), approximate="tanh"),
                            repeat)[0]
    lines.append(("FusedLinear 512x768->3072 gelu(tanh)", *both(lin, x), floor, t_torch))

    x = mf.tensor(rng.standard_normal((2048, 768)).astype(np.float32))
    mlp = nn.MLP(768, "swiglu", expansion_factor=8 / 3)
    floor = gemm_floor([(x.data, mlp.layer1.weight.data),
                        (rng.standard_normal((2048, mlp.hidden_dim)).astype(np.float32), mlp.layer2.weight.data)],
                       repeat)[0]
    lines.append(("MLP swiglu dim 768, 2048 tokens", *both(mlp, x), floor, None))

    for name, d, heads, f in (("BERT-base", 768, 12, 3072), ("MiniLM dims", 384, 12, 1536)):
        nb, s = 8, 128
        p = layer_params(rng, d, f)
        layer = nn.TransformerLayer(d, heads, f).eval()
        load(layer, p)
        x = rng.standard_normal((nb, s, d)).astype(np.float32)
        mask = np.ones((nb, s), np.int64)
        mask[::2, 100:] = 0
        n = nb * s
        a_d, a_f = (rng.standard_normal((n, c)).astype(np.float32) for c in (d, f))
        floor = gemm_floor([(a_d, p[0]), (a_d, p[2]), (a_d, p[6]), (a_f, p[8])], repeat)[0]
        t_torch = torch_layer(torch, x, p, mask, heads, repeat)
        lines.append((f"TransformerLayer {name} B=8 S=128", *both(layer, mf.tensor(x), mf.tensor(mask)), floor,
                      t_torch[0] if t_torch else None))

    report("minifuse layers (eager): fused = under mf.no_grad(), unfused = mf.nn.fusion(False)")
    report(f"{'workload':40s} {'fused':>8s} {'unfused':>8s} {'floor':>8s} {'torch':>8s} {'unf/fused':>9s} "
           f"{'fused/floor':>11s} {'fused/torch':>11s}")
    for name, fused, unfused, floor, t_torch in lines:
        tt = f"{t_torch:8.2f}" if t_torch else f"{'-':>8s}"
        rt = f"{fused / t_torch:11.3f}" if t_torch else f"{'-':>11s}"
        report(f"{name:40s} {fused:8.2f} {unfused:8.2f} {floor:8.2f} {tt} {unfused / fused:9.2f} "
               f"{fused / floor:11.3f} {rt}")


if __name__ == "__main__":
    run()
