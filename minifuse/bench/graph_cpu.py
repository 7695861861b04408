"""Benchmark of the graph pass: a 4-layer BERT-base encoder, eager unfused / eager fused / compiled,
and the attention-threshold sweep that sets MINIFUSE_FUSE_ATTN_THRESHOLD's default.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m minifuse.bench graph
"""
import os
import statistics
import time

import numpy as np

import minifuse as mf
import minifuse.nn as nn
from minifuse import graph as G
from minifuse.progress import progress


def timed(fn, repeat):
    fn()
    times = []
    for _ in progress(range(repeat), desc="timing", leave=False):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _batch(b, s, d):
    x = mf.randn(b, s, d)
    mask = np.ones((b, s), np.int64)
    mask[::2, s - s // 4:] = 0  # every other sequence a quarter padding
    return x, mf.tensor(mask)


def encoder_modes(layers=4, b=8, s=128, d=768, heads=12, ff=3072, repeat=5):
    mf.manual_seed(0)
    model = nn.TransformerEncoder(dict(d_model=d, num_heads=heads, intermediate_size=ff), layers)
    model.eval()
    x, mask = _batch(b, s, d)
    compiled = mf.compile(model, x, mask)
    with mf.no_grad():
        with nn.fusion(False):
            t_unfused = timed(lambda: model(x, mask), max(2, repeat // 2))
        t_fused = timed(lambda: model(x, mask), repeat)
    t_compiled = timed(lambda: compiled(x, mask), repeat)
    return t_unfused, t_fused, t_compiled


def attention_sweep(d=768, heads=12, ff=3072, sizes=((1, 16), (1, 32), (1, 64), (2, 64), (1, 128), (8, 128)), repeat=5):
    """The threshold decision: a compiled 4-layer encoder whose attention runs as the loop kernel
    (threshold 0) against the same encoder with method 'bmm', batched BLAS products around the
    fused softmax kernel (threshold 1). Every layer is one FusedTransformerLayer either way."""
    mf.manual_seed(0)
    model = nn.TransformerEncoder(dict(d_model=d, num_heads=heads, intermediate_size=ff), 4).eval()
    rows, old = [], os.environ.get("MINIFUSE_FUSE_ATTN_THRESHOLD")
    try:
        for b, s in sizes:
            x, mask = _batch(b, s, d)
            os.environ["MINIFUSE_FUSE_ATTN_THRESHOLD"] = "0"
            loop = mf.compile(model, x, mask)
            os.environ["MINIFUSE_FUSE_ATTN_THRESHOLD"] = "1"
            bmm = mf.compile(model, x, mask)
            rows.append((b, s, timed(lambda: loop(x, mask), repeat), timed(lambda: bmm(x, mask), repeat)))
    finally:
        if old is None:
            os.environ.pop("MINIFUSE_FUSE_ATTN_THRESHOLD", None)
        else:
            os.environ["MINIFUSE_FUSE_ATTN_THRESHOLD"] = old
    return rows


def run(repeat=5):
    print("graph pass, float32, medians in ms")
    t_u, t_f, t_c = encoder_modes(repeat=repeat)
    print("4-layer BERT-base encoder (B=8, S=128, d=768, 12 heads, 3072, padding mask):")
    print(f"  eager unfused {t_u:9.1f}   eager fused {t_f:9.1f}   compiled {t_c:9.1f}")
    print(f"  compiled / eager fused = {t_c / t_f:.2f} (target <= 1.0); eager unfused / compiled = {t_u / t_c:.2f}")
    for d, heads, ff in ((384, 12, 1536), (768, 12, 3072)):
        print(f"attention threshold, 4-layer encoder d={d}: attention method 'loop' vs 'bmm' (compiled)")
        for b, s, tl, tb in attention_sweep(d, heads, ff, repeat=repeat):
            print(f"  B*S={b * s:5d} (B={b}, S={s:3d}): loop {tl:8.2f}  bmm {tb:8.2f}  ratio {tl / tb:.2f}")


if __name__ == "__main__":
    run()
