# %% [markdown]
# # Fused inference: the same model run unfused and fused
#
# A script (`python examples/05_fused_inference.py`) and a notebook (each `# %%` is a cell).
# When no gradient is recorded (under `mf.no_grad()`, or when nothing requires grad) every layer
# runs its fused Numba kernels: the GEMM writes into a buffer and ONE sweep over that buffer adds
# the bias and applies the activation (or the residual and the LayerNorm) while it is in cache.
# The unfused path runs one NumPy op per step, each reading and writing a whole tensor.
# `MINIFUSE_DISABLE_FUSION=1` (or `with mf.nn.fusion(False):`) forces the unfused path. You will
# compare the outputs of both paths, time them, and see the times as a bar chart
# (`fused_inference_times.png`, with matplotlib).

# %%
import time

import numpy as np

import minifuse as mf
import minifuse.nn as nn
from minifuse import plots
from minifuse.progress import compile_notice


def median_ms(fn, repeat=7):
    fn()  # the first call compiles the kernels (or loads them from Numba's cache)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


# %% [markdown]
# ## 1. A MiniLM-sized encoder layer and a padded batch
# d 384, 12 heads, feed-forward 1536; 8 sentences of 128 tokens, every other one padded to 96
# (mask: 1 = token, 0 = padding).

# %%
mf.manual_seed(0)
layer = nn.TransformerLayer(384, 12, 1536).eval()
x = mf.randn(8, 128, 384)
mask = np.ones((8, 128), np.int64)
mask[1::2, 96:] = 0
mask = mf.tensor(mask)

# %% [markdown]
# ## 2. The first fused call compiles the kernels
# Numba compiles each kernel the first time it meets its argument types, then keeps the machine
# code on disk: a later process loads it in well under a second.

# %%
compile_notice()
t0 = time.perf_counter()
with mf.no_grad():
    layer(x, mask)
print(f"first fused call (compiles, or loads from the cache): {time.perf_counter() - t0:.2f} s")

# %% [markdown]
# ## 3. Fused and unfused compute the same function

# %%
with mf.no_grad():
    fused = layer(x, mask)
    with nn.fusion(False):
        unfused = layer(x, mask)
err = np.abs(fused.numpy() - unfused.numpy()).max()
print(f"max |fused - unfused| = {err:.2e}   (float32; the two paths compute the same function)")

# %% [markdown]
# ## 4. ... in different times
# The layer, and a SwiGLU MLP on 1024 tokens.

# %%
with mf.no_grad():
    layer_fused = median_ms(lambda: layer(x, mask))
    with nn.fusion(False):
        layer_unfused = median_ms(lambda: layer(x, mask))
print(f"TransformerLayer d=384, B=8, S=128: unfused {layer_unfused:.1f} ms, fused {layer_fused:.1f} ms "
      f"({layer_unfused / layer_fused:.1f}x)")

mlp = nn.MLP(384, "swiglu", expansion_factor=8 / 3).eval()
tokens = mf.randn(1024, 384)
with mf.no_grad():
    mlp_fused = median_ms(lambda: mlp(tokens))
    with nn.fusion(False):
        mlp_unfused = median_ms(lambda: mlp(tokens))
print(f"SwiGLU MLP d=384, 1024 tokens:        unfused {mlp_unfused:.1f} ms, fused {mlp_fused:.1f} ms "
      f"({mlp_unfused / mlp_fused:.1f}x)")
plots.time_bars("fused_inference_times.png", "inference, fused vs unfused (lower is better)",
                ["TransformerLayer\nB=8, S=128, d=384", "SwiGLU MLP\n1024 tokens, d=384"],
                [(layer_unfused, layer_fused), (mlp_unfused, mlp_fused)])

# %% [markdown]
# ## 5. With gradients recorded, the same layer records the taped ops instead
# Training needs the tape; the fused inference kernels keep nothing for backward.

# %%
y = layer(x[:1, :4])
print("with grad recording the output has a tape:", y.grad_fn)
