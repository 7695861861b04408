# %% [markdown]
# # A character-level transformer that writes text
#
# A script (`python examples/09_char_transformer.py`) and a notebook (each `# %%` is a cell).
# A decoder-only transformer (the shape of GPT, very small) learns to predict the next character
# of a text that ships with Python: "The Zen of Python", the poem that `import this` prints. Each
# position may attend only to itself and the positions before it (a **causal mask**), so the
# model can be trained on every position of a sequence at once and then sample text one
# character at a time. You will build the mask, the blocks, train for 200 steps (the loss must
# fall below half its start: asserted; 5 s of CPU time on a 2-core machine, 2026-12), and sample
# a few lines. The loss curve is saved as `char_loss.png` (with matplotlib). On a busy machine
# run it with `OPENBLAS_NUM_THREADS=1`: for matrices this small, BLAS threads that wait for a
# core cost more than they give (15 s instead of 130 s with the machine's load at 10).

# %%
import codecs
import contextlib
import io

import numpy as np

import minifuse as mf
import minifuse.nn as nn
import minifuse.nn.functional as F
from minifuse import optim, plots
from minifuse.progress import progress

# %% [markdown]
# ## 1. The text and its characters
# `this.s` holds the poem ROT13-encoded (importing `this` also prints it: silenced here). Every
# distinct character gets an integer id.

# %%
with contextlib.redirect_stdout(io.StringIO()):
    import this
TEXT = codecs.decode(this.s, "rot13")
CHARS = sorted(set(TEXT))
ID = {c: i for i, c in enumerate(CHARS)}
data = np.array([ID[c] for c in TEXT], dtype=np.int64)
print(f"{len(TEXT)} characters, {len(CHARS)} distinct; it starts:\n{TEXT[:80]}")

# %% [markdown]
# ## 2. The causal mask
# Row i is the query position, column j the key position: position i may look at j <= i. A
# `False` entry gets a score of -inf before the softmax, so its attention weight is exactly 0.

# %%
BLOCK = 32                                          # characters of context


def causal_mask(n):
    return np.tril(np.ones((n, n), dtype=bool))


print(causal_mask(5).astype(int))

# %% [markdown]
# ## 3. The model
# Token and position embeddings, then pre-LayerNorm decoder blocks `x + attn(LN(x))`,
# `x + MLP(LN(x))`, then a Linear head to one logit per character. The attention is written out
# here: one projection to queries, keys and values, split into heads,
# `F.scaled_dot_product_attention` with the causal mask, heads merged, an output projection.


# %%
class CausalSelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        B, S, d = x.shape
        q, k, v = (t.reshape(B, S, self.heads, d // self.heads).permute(0, 2, 1, 3)
                   for t in self.qkv(x).chunk(3, dim=-1))       # each (B, heads, S, d / heads)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mf.tensor(causal_mask(S)))
        return self.out(y.permute(0, 2, 1, 3).reshape(B, S, d))


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), CausalSelfAttention(d, heads)
        self.ln2, self.mlp = nn.LayerNorm(d), nn.MLP(d, "gelu", expansion_factor=4.0, bias=True)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharModel(nn.Module):
    def __init__(self, vocab, d=64, heads=4, layers=2):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, d), nn.Embedding(BLOCK, d)
        for emb in (self.tokens, self.positions):
            nn.init.normal_(emb.weight, 0.0, 0.02)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, ids):
        pos = mf.arange(ids.shape[1]).unsqueeze(0).expand(ids.shape[0], ids.shape[1])
        x = self.tokens(ids) + self.positions(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))                  # (B, S, vocab) logits


mf.manual_seed(0)
model = CharModel(len(CHARS))
print(sum(p.numel() for p in model.parameters()), "parameters")

# %% [markdown]
# ## 4. Training: predict every next character at once
# A batch is random windows of the text; the target is the same window shifted by one. Thanks to
# the mask, the logits at position i depend only on characters 0..i.

# %%
rng = np.random.default_rng(0)
opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
steps, batch_size, losses = 200, 16, []
for step in progress(range(steps), desc="steps"):
    starts = rng.integers(0, len(data) - BLOCK - 1, size=batch_size)
    x = np.stack([data[s:s + BLOCK] for s in starts])
    y = np.stack([data[s + 1:s + BLOCK + 1] for s in starts])
    logits = model(mf.tensor(x))
    loss = F.cross_entropy(logits.reshape(-1, len(CHARS)), mf.tensor(y.reshape(-1)))
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
    if step % 50 == 0 or step == steps - 1:
        print(f"step {step:4d}  loss {losses[-1]:.3f}")
print(f"loss {np.mean(losses[:10]):.2f} -> {np.mean(losses[-10:]):.2f} "
      f"(a uniform guess over {len(CHARS)} characters: {np.log(len(CHARS)):.2f})")
assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), "the loss did not fall below half its start"
plots.loss_curve("char_loss.png", losses, title="next-character loss per step")

# %% [markdown]
# ## 5. Sampling a few lines
# Start from a prompt; repeatedly run the model on the last BLOCK characters, turn the last
# position's logits into probabilities (divided by a temperature below 1: a little greedier than
# the model), draw the next character, append it.


# %%
def sample(prompt, n, temperature=0.8, seed=0):
    gen = np.random.default_rng(seed)
    ids = [ID[c] for c in prompt]
    model.eval()
    with mf.no_grad():
        for _ in range(n):
            logits = model(mf.tensor(np.array([ids[-BLOCK:]]))).numpy()[0, -1] / temperature
            p = np.exp(logits - logits.max())
            ids.append(int(gen.choice(len(CHARS), p=p / p.sum())))
    model.train()
    return "".join(CHARS[i] for i in ids)


print(sample("Beautiful is", 100))
