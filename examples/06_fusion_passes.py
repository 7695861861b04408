# %% [markdown]
# # Fusion passes: trace a small encoder, watch each pass rewrite the graph, then time it
#
# A script (`python examples/06_fusion_passes.py`) and a notebook (each `# %%` is a cell).
#
# 1. trace: run the model once and record every primitive op (MatMul, Add, Softmax, ...);
# 2. passes: FuseMatMulBiasAct, FuseResidualLN, FuseAttentionBlock, FuseTransformerLayer, each
#    turning a pattern of primitives into one fused node; the graph is drawn before and after
#    each pass (`graph_0_traced.dot` ... `graph_4_FuseTransformerLayer.dot`, and `.png` pictures
#    where matplotlib or Graphviz is installed; fused nodes are shaded);
# 3. execute: eager unfused, eager fused (each layer calls its kernels) and compiled (the graph).
#
# docs/graph.md describes each pass and when a candidate does not fuse.

# %%
import time

import numpy as np

import minifuse as mf
import minifuse.nn as nn
from minifuse import graph as G
from minifuse.progress import compile_notice

# %% [markdown]
# ## 1. Trace
# A 2-layer encoder on a padded batch of 2 sequences of 6 tokens. Tracing runs the model once
# with fusion off and records each op call as a node.

# %%
mf.manual_seed(0)
model = nn.TransformerEncoder(dict(d_model=64, num_heads=4, intermediate_size=128), num_layers=2)
x = mf.randn(2, 6, 64)
mask = mf.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])   # 1 = token, 0 = padding

graph = G.trace(model, x, mask)
print(f"traced: {len(graph.nodes)} primitive nodes; the first layer's attention starts like this:")
print("\n".join(str(graph).splitlines()[:12]), "\n  ...")
print("drew", *graph.draw("graph_0_traced"))

# %% [markdown]
# ## 2. The passes, one at a time
# Each pass runs after the ones it needs; after each, the op counts and a picture of the graph.

# %%
passes = []
for k, p in enumerate((G.FuseMatMulBiasAct(), G.FuseResidualLN(), G.FuseAttentionBlock(), G.FuseTransformerLayer()),
                      start=1):
    passes.append(p)
    g = G.fuse(graph, backend="cpu", passes=list(passes))
    counts = {op: g.ops().count(op) for op in dict.fromkeys(g.ops())}
    print(f"after {p.name:22s} {len(g.nodes):3d} nodes: {counts}")
    print("  drew", *g.draw(f"graph_{k}_{p.name}"))

# %% [markdown]
# ## 3. The whole pipeline, with its report
# `report=True` lists the candidates that did not fuse and why (here: none).

# %%
fused = G.fuse(graph, backend="cpu", report=True)
print("the whole encoder is now:\n" + str(fused))

# %% [markdown]
# ## 4. Three ways to run the same model give the same numbers
# `mf.compile` traces and fuses once per input shape; `compiled.graph` is the graph it runs.

# %%
compile_notice()
with mf.no_grad():
    with nn.fusion(False):
        ref = model(x, mask)
    eager_fused = model(x, mask)
compiled = mf.compile(model, x, mask)
out = compiled(x, mask)
print("compiled graph:", compiled.graph.ops())
print(f"max |compiled - eager unfused| = {np.abs(out.numpy() - ref.numpy()).max():.2e}")
print(f"max |eager fused - eager unfused| = {np.abs(eager_fused.numpy() - ref.numpy()).max():.2e}")

# %% [markdown]
# ## 5. ... in different times
# At these tiny shapes Python's per-op overhead dominates, so fewer nodes means less time;
# `python -m minifuse.bench graph` times BERT-base sizes.


# %%
def timed(fn, repeat=20):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


with mf.no_grad():
    with nn.fusion(False):
        t_unfused = timed(lambda: model(x, mask))
    t_fused = timed(lambda: model(x, mask))
t_compiled = timed(lambda: compiled(x, mask))
print(f"median time: eager unfused {t_unfused:.2f} ms, eager fused {t_fused:.2f} ms, compiled {t_compiled:.2f} ms")
