"""Fusion passes: trace a small encoder, watch each pass rewrite the graph, then time it.

    python examples/06_fusion_passes.py

1. trace: run the model once and record every primitive op (MatMul, Add, Softmax, ...).
2. passes: FuseMatMulBiasAct, FuseResidualLN, FuseAttentionBlock, FuseTransformerLayer, each
   turning a pattern of primitives into one fused node.
3. execute: eager unfused, eager fused (each layer calls its kernels) and compiled (the graph).
"""
import time

import numpy as np

import minifuse as mf
import minifuse.nn as nn
from minifuse import graph as G

mf.manual_seed(0)
model = nn.TransformerEncoder(dict(d_model=64, num_heads=4, intermediate_size=128), num_layers=2)
x = mf.randn(2, 6, 64)
mask = mf.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])   # 1 = token, 0 = padding

graph = G.trace(model, x, mask)
print(f"traced: {len(graph.nodes)} primitive nodes; the first layer's attention starts like this:")
print("\n".join(str(graph).splitlines()[:12]), "\n  ...\n")

passes = []
for p in (G.FuseMatMulBiasAct(), G.FuseResidualLN(), G.FuseAttentionBlock(), G.FuseTransformerLayer()):
    passes.append(p)
    g = G.fuse(graph, backend="cpu", passes=list(passes))
    counts = {op: g.ops().count(op) for op in dict.fromkeys(g.ops())}
    print(f"after {p.name:22s} {len(g.nodes):3d} nodes: {counts}")

fused = G.fuse(graph, backend="cpu", report=True)
print("\nthe whole encoder is now:\n" + str(fused))

with mf.no_grad():
    with nn.fusion(False):
        ref = model(x, mask)
    eager_fused = model(x, mask)
compiled = mf.compile(model, x, mask)
out = compiled(x, mask)
print(f"\nmax |compiled - eager unfused| = {np.abs(out.numpy() - ref.numpy()).max():.2e}")
print(f"max |eager fused - eager unfused| = {np.abs(eager_fused.numpy() - ref.numpy()).max():.2e}")


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
print(f"\nmedian time: eager unfused {t_unfused:.2f} ms, eager fused {t_fused:.2f} ms, compiled {t_compiled:.2f} ms")
print("(tiny shapes: Python overhead dominates; `python -m minifuse.bench graph` times BERT-base sizes)")
print("\nGraphviz: G.fuse(...).to_dot() gives DOT text; `dot -Tpng` draws it.")
