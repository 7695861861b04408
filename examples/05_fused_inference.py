"""Fused inference: the same model run unfused and fused, outputs compared, times shown.

    python examples/05_fused_inference.py

When no gradient is recorded (under mf.no_grad(), or when nothing requires grad) every layer
runs its fused Numba kernels: the GEMM writes into a buffer and ONE sweep over that buffer adds
the bias and applies the activation (or the residual and the LayerNorm) while it is in cache.
The unfused path runs one NumPy op per step, each reading and writing a whole tensor.
MINIFUSE_DISABLE_FUSION=1 (or `with mf.nn.fusion(False):`) forces the unfused path.
"""
import time

import numpy as np

import minifuse as mf
import minifuse.nn as nn


def median_ms(fn, repeat=7):
    fn()  # the first call compiles the kernels (or loads them from Numba's cache)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


mf.manual_seed(0)
# a MiniLM-sized encoder layer: d 384, 12 heads, feed-forward 1536
layer = nn.TransformerLayer(384, 12, 1536).eval()
x = mf.randn(8, 128, 384)
mask = np.ones((8, 128), np.int64)
mask[1::2, 96:] = 0                      # every other sentence padded to 96 tokens
mask = mf.tensor(mask)

t0 = time.perf_counter()
with mf.no_grad():
    layer(x, mask)
print(f"first fused call (compiles, or loads from the cache): {time.perf_counter() - t0:.2f} s")

with mf.no_grad():
    fused = layer(x, mask)
    with nn.fusion(False):
        unfused = layer(x, mask)
err = np.abs(fused.numpy() - unfused.numpy()).max()
print(f"max |fused - unfused| = {err:.2e}   (float32; the two paths compute the same function)")

with mf.no_grad():
    t_fused = median_ms(lambda: layer(x, mask))
    with nn.fusion(False):
        t_unfused = median_ms(lambda: layer(x, mask))
print(f"TransformerLayer d=384, B=8, S=128: unfused {t_unfused:.1f} ms, fused {t_fused:.1f} ms "
      f"({t_unfused / t_fused:.1f}x)")

mlp = nn.MLP(384, "swiglu", expansion_factor=8 / 3).eval()
tokens = mf.randn(1024, 384)
with mf.no_grad():
    t_fused = median_ms(lambda: mlp(tokens))
    with nn.fusion(False):
        t_unfused = median_ms(lambda: mlp(tokens))
print(f"SwiGLU MLP d=384, 1024 tokens:        unfused {t_unfused:.1f} ms, fused {t_fused:.1f} ms "
      f"({t_unfused / t_fused:.1f}x)")

# With gradients recorded, the same layer records the taped ops instead: exact gradients.
y = layer(x[:1, :4])
print("with grad recording the output has a tape:", y.grad_fn)
