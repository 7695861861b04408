# %% [markdown]
# # Packed sequences: time against the fraction of padding
#
# A script (`python examples/10_packing.py`) and a notebook (each `# %%` is a cell).
# A padded batch (B, S) of sentences of different lengths makes every layer compute B * S tokens.
# With an attention mask that has padding, minifuse's fused layers pack the real tokens into one
# (T, d) matrix, run the GEMMs, LayerNorms and MLP on those T rows and attention per sentence over
# its own tokens, and put the padding back (zeros) at the end: the time follows the real tokens.
# You will time a small encoder packed and padded (`with mf.nn.packing(False):`) at 0-75% padding,
# check that both give the same outputs, and draw the times (`packing.png`, with matplotlib).
# It runs on the GPU where there is one (`mf.cuda.is_available()`), else on the CPU.
# See docs/packing.md.

# %%
import time

import numpy as np

import minifuse as mf
import minifuse.nn as nn
from minifuse import plots


DEVICE = "cuda" if mf.cuda.is_available() else "cpu"


def median_ms(fn, repeat=5):
    fn()  # the first call compiles the kernels (or loads them from Numba's cache)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if DEVICE == "cuda":
            mf.cuda.synchronize()   # GPU work is queued: wait for it before reading the clock
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


# %% [markdown]
# ## 1. A small encoder and a batch
# 2 layers, d 256, 4 heads, feed-forward 1024; batches of 16 sentences of up to 64 tokens.

# %%
mf.manual_seed(0)
encoder = nn.TransformerEncoder(dict(d_model=256, num_heads=4, intermediate_size=1024), 2).eval().to(DEVICE)
b, s = 16, 64
x = mf.randn(b, s, 256).to(DEVICE)
print("device:", DEVICE)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 2. Padded against packed, at four padding fractions
# Sentence lengths uniform in a band around the mean length; the mask marks the real tokens.
# Both paths must give the same outputs (max |diff| in the last column).

# %%
rows = []
print(f"{'padding':>8s} {'padded ms':>10s} {'packed ms':>10s} {'packed/padded':>14s} {'max |diff|':>11s}")
for fraction in (0.0, 0.25, 0.5, 0.75):
    mean = (1 - fraction) * s
    half = min(s / 8, mean - 1, s - mean)       # lengths uniform in a band around the mean
    lengths = np.clip(np.rint(rng.uniform(mean - half, mean + half, b)), 1, s).astype(int)
    mask = mf.tensor((np.arange(s)[None, :] < lengths[:, None]).astype(np.int64)).to(DEVICE)
    with mf.no_grad():
        packed_ms = median_ms(lambda: encoder(x, mask))
        with nn.packing(False):
            padded_ms = median_ms(lambda: encoder(x, mask))
            padded = encoder(x, mask).numpy()
        packed = encoder(x, mask).numpy()
    real = 1 - float(mask.numpy().mean())
    rows.append((real, padded_ms, packed_ms))
    print(f"{real:8.0%} {padded_ms:10.1f} {packed_ms:10.1f} {packed_ms / padded_ms:14.2f} "
          f"{np.abs(packed - padded).max():11.1e}")

# %% [markdown]
# ## 3. The picture
# Padded time stays flat; packed time falls with the real tokens.

# %%
plots.time_bars("packing.png", f"2-layer encoder, 16 x 64 tokens ({DEVICE})", [f"{r[0]:.0%} padding" for r in rows],
                [(r[1], r[2]) for r in rows], series=("padded", "packed"))
