"""Benchmark of the graph pass: a 4-layer BERT-base encoder, eager unfused / eager fused / compiled,
and the attention-threshold sweep that sets MINIFUSE_FUSE_ATTN_THRESHOLD's default.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m minifuse.bench graph
"""
import statistics
import time

import numpy as np

import minifuse as mf
import minifuse.nn as nn
from minifuse import graph as G


def timed(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
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


def attention_sweep(d=768, heads=12, sizes=((1, 8), (1, 64), (2, 64), (8, 128), (4, 512)), repeat=5):
    """Fused attention block vs the same projections with unfused attention primitives."""
    mf.manual_seed(0)
    attn = nn.MultiHeadAttention(d, heads)
    rows = []
    for b, s in sizes:
        x, mask = _batch(b, s, d)
        g = G.trace(attn, x, mask)
        fused = G.fuse(g)
        projections_only = G.fuse(g, passes=[G.FuseMatMulBiasAct()])
        rows.append((b, s, timed(lambda: G.execute(fused, [x, mask]), repeat),
                     timed(lambda: G.execute(projections_only, [x, mask]), repeat)))
    return rows


def run(repeat=5):
    print("graph pass, float32, medians in ms")
    t_u, t_f, t_c = encoder_modes(repeat=repeat)
    print(f"4-layer BERT-base encoder (B=8, S=128, d=768, 12 heads, 3072, padding mask):")
    print(f"  eager unfused {t_u:9.1f}   eager fused {t_f:9.1f}   compiled {t_c:9.1f}")
    print(f"  compiled / eager fused = {t_c / t_f:.2f} (target <= 1.0); eager unfused / compiled = {t_u / t_c:.2f}")
    for d, heads in ((384, 12), (768, 12)):
        print(f"attention block d={d}: fused vs unfused attention (same projections)")
        for b, s, tf, tu in attention_sweep(d, heads, repeat=repeat):
            print(f"  B*S={b * s:5d} (B={b}, S={s:3d}): fused {tf:8.2f}  unfused {tu:8.2f}  ratio {tf / tu:.2f}")


if __name__ == "__main__":
    run()
