"""Benchmark: one training step (forward + backward) on an NVIDIA GPU, minifuse vs PyTorch eager.

    python -m minifuse.bench training --device cuda          # needs cupy, numba-cuda and torch

Workloads (the CPU benchmark's, at GPU sizes):
- layer: BERT-base TransformerLayer (d 768, 12 heads, 3072, exact GELU, post-LayerNorm), B=32, S=128.
- mlp:   SwiGLU MLP, dim 768, hidden 2048, 8192 tokens, no bias: y = (silu(a) * b) W2^T, [a | b] = x W1^T.
- layer_padded: the layer with a key-padding mask, lengths uniform in [32, 128] (fixed seed);
         minifuse fused runs packed (the default), plus a ``minifuse fused padded`` case
         (``nn.packing(False)``); torch gets ``src_key_padding_mask``.
Variants: minifuse taped (``unfused``), minifuse fused (``fused_training=True`` / ``fused_mlp``),
minifuse fused graphed (the layer, or the MLP function, passed once through
``mf.cuda.make_graphed_callables``: the same eager loop, whose forward and backward each launch
one graph), minifuse fused graph (the whole fused step captured once by ``mf.cuda.graph`` and
replayed: one launch a step), minifuse fused written (the fused node, the layer's or the MLP's, run as
written: its CUDA-graph replay, ``fusions.node_graphs``, off); neither graphed nor graph for layer_padded, whose packing reads the lengths on the
host. Each in float32 and
under ``mf.autocast("cuda", float16)`` (float32 master weights), against torch eager in float32
and under ``torch.autocast("cuda", torch.float16)``. A step is forward, ``backward(g)`` with a
fixed random g, gradients cleared. Each variant is timed with CUDA events over ``--inner``
steps, round-robin with the others for ``--repeat`` rounds (paired ratios per round, then the
median), all in one process. TF32 is off on both sides (float32 means float32), except in the
float32 cases that say otherwise: ``minifuse fused high`` / ``minifuse fused graphed high`` /
``minifuse fused graph high`` run minifuse's float32 GEMMs at
``mf.set_float32_matmul_precision("high")`` (the 3xTF32 split: float32-accurate products on the
tensor cores), ``torch eager tf32`` runs torch's with ``allow_tf32 = True`` (one TF32 product,
about 1e-3 relative error); their ratios are still to torch's float32 step.
Prints one JSON line per case; ``--profile`` adds, per case, the host time per step and the GPU
kernels of 3 steps from torch.profiler (which sees CuPy's and numba's kernels too), largest first.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics

LAYER = dict(d_model=768, num_heads=12, intermediate_size=3072, batch=32, seq=128)
MLP = dict(dim=768, hidden=2048, tokens=8192)


def _minifuse_case(workload, variant, half):
    import numpy as np

    import minifuse as mf
    from minifuse import fusions, nn
    rng = np.random.default_rng(0)
    mf.manual_seed(0)
    if workload in ("layer", "layer_padded"):
        c = LAYER
        layer = nn.TransformerLayer(c["d_model"], c["num_heads"], c["intermediate_size"],
                                    fused_training=(variant != "unfused")).to("cuda")
        shape = (c["batch"], c["seq"], c["d_model"])
        x = mf.tensor(rng.standard_normal(shape, dtype=np.float32)).to("cuda")
        params = tuple(layer.parameters())
        mask = _mask() if workload == "layer_padded" else None
        if variant.startswith("graphed"):
            with _capturing(half, variant):
                mf.cuda.make_graphed_callables(layer, (x,))

        def forward():
            with nn.packing(variant != "padded"):
                return layer(x) if mask is None else layer(x, mask)
    else:
        c = MLP
        x = mf.tensor(rng.standard_normal((c["tokens"], c["dim"]), dtype=np.float32)).to("cuda")
        w1 = mf.tensor(rng.standard_normal((2 * c["hidden"], c["dim"]), dtype=np.float32) * 0.03,
                       device="cuda", requires_grad=True)
        w2 = mf.tensor(rng.standard_normal((c["dim"], c["hidden"]), dtype=np.float32) * 0.03,
                       device="cuda", requires_grad=True)
        params = (w1, w2)
        F = nn.functional

        def fused(x, w1, w2):
            return fusions.fused_mlp(x, w1, None, w2, None, "swiglu")
        if variant.startswith("graphed"):
            with _capturing(half, variant):
                fused = mf.cuda.make_graphed_callables(fused, (x, w1, w2))

        def forward():
            if variant != "unfused":
                return fused(x, w1, w2)
            return F.linear(F.swiglu(F.linear(x, w1)), w2)
    step = _step(params, forward, lambda: mf.autocast("cuda", mf.float16, enabled=half),
                 lambda y: mf.tensor(rng.standard_normal(y.shape).astype(y.dtype)).to("cuda"))
    if variant == "graph high":
        return _graphed(_at_precision(step, "high"))
    return _graphed(step) if variant == "graph" else step


@contextlib.contextmanager
def _capturing(half, variant):
    """The state a graphed callable is captured in, which its calls must match: autocast when
    ``half``, the float32 matmul precision "high" for the variants that say so."""
    import minifuse as mf
    before = mf.get_float32_matmul_precision()
    mf.set_float32_matmul_precision("high" if variant.endswith("high") else before)
    try:
        with mf.autocast("cuda", mf.float16, enabled=half):
            yield
    finally:
        mf.set_float32_matmul_precision(before)


def _graphed(step):
    """``step`` captured once into a CUDA graph (``mf.cuda.graph``, after warm-up steps); the
    returned function replays it: the same kernels on the same buffers, one launch."""
    import minifuse as mf
    for _ in range(3):
        step()
    graph = mf.cuda.CUDAGraph()
    with mf.cuda.graph(graph):
        step()
    return graph.replay


def _at_precision(step, precision):
    """``step`` run at minifuse's float32 matmul precision ``precision`` (restored after it)."""
    import minifuse as mf

    def run():
        before = mf.get_float32_matmul_precision()
        mf.set_float32_matmul_precision(precision)
        try:
            step()
        finally:
            mf.set_float32_matmul_precision(before)
    return run


def _written(step):
    """``step`` with every fused node run as written (``fusions.node_graphs`` off)."""
    from minifuse.fusions import node_graphs

    def run():
        node_graphs.set_enabled(False)
        try:
            step()
        finally:
            node_graphs.set_enabled(True)
    return run


def _torch_tf32(step):
    """``step`` run with torch's float32 GEMMs as TF32 (``allow_tf32``, restored after it)."""
    import torch

    def run():
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            step()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
    return run


def _mask():
    """The layer_padded workload's key mask (B, S), True for tokens: lengths uniform in [S/4, S]."""
    import numpy as np
    c = LAYER
    lengths = np.random.default_rng(7).integers(c["seq"] // 4, c["seq"] + 1, c["batch"])
    return np.arange(c["seq"])[None, :] < lengths[:, None]


def _torch_case(workload, half):
    import torch
    import torch.nn.functional as TF
    torch.manual_seed(0)
    dev = "cuda"
    if workload in ("layer", "layer_padded"):
        c = LAYER
        layer = torch.nn.TransformerEncoderLayer(c["d_model"], c["num_heads"], c["intermediate_size"],
                                                 dropout=0.0, activation="gelu", batch_first=True,
                                                 layer_norm_eps=1e-12, device=dev).train()
        x = torch.randn(c["batch"], c["seq"], c["d_model"], device=dev)
        params = tuple(layer.parameters())
        pad = torch.as_tensor(~_mask(), device=dev) if workload == "layer_padded" else None

        def forward():
            return layer(x, src_key_padding_mask=pad)
    else:
        c = MLP
        x = torch.randn(c["tokens"], c["dim"], device=dev)
        w1 = (torch.randn(2 * c["hidden"], c["dim"], device=dev) * 0.03).requires_grad_()
        w2 = (torch.randn(c["dim"], c["hidden"], device=dev) * 0.03).requires_grad_()
        params = (w1, w2)

        def forward():
            a, b = TF.linear(x, w1).chunk(2, dim=-1)
            return TF.linear(TF.silu(a) * b, w2)
    return _step(params, forward, lambda: torch.autocast("cuda", torch.float16, enabled=half), torch.randn_like)


def _step(params, forward, autocast, make_g):
    """One training step: gradients cleared, forward under ``autocast()``, backward of a fixed
    random output gradient (made once, by ``make_g(output)``)."""
    g = None

    def step():
        nonlocal g
        for p in params:
            p.grad = None
        with autocast():
            y = forward()
        if g is None:
            g = make_g(y)
        y.backward(g)
    return step


def _event_ms(step, inner):
    """Milliseconds per step: CUDA events around ``inner`` back-to-back steps (after a sync)."""
    import cupy
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    cupy.cuda.Device().synchronize()
    start.record()
    for _ in range(inner):
        step()
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / inner


def kernel_profile(step, steps=3, top=12):
    """{host_ms, gpu_kernel_ms, kernels, top: [(us per step, calls per step, name)]} for ``step``."""
    import time

    import cupy
    from torch.profiler import ProfilerActivity, profile
    cupy.cuda.Device().synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    host = (time.perf_counter() - t) / steps
    cupy.cuda.Device().synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(steps):
            step()
        cupy.cuda.Device().synchronize()
    events = sorted((e for e in p.key_averages() if e.device_time_total > 0), key=lambda e: -e.device_time_total)
    return {"host_ms": round(host * 1e3, 3),
            "gpu_kernel_ms": round(sum(e.device_time_total for e in events) / steps / 1e3, 3),
            "kernels": round(sum(e.count for e in events) / steps),
            "top": [(round(e.device_time_total / steps, 1), e.count // steps, e.key[:90]) for e in events[:top]]}


def run(workloads, repeat, inner, profile=False):
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for w in workloads:
        for half in (False, True):
            precision = "autocast_float16" if half else "float32"
            cases = {"minifuse unfused": _minifuse_case(w, "unfused", half),
                     "minifuse fused": _minifuse_case(w, "fused", half),
                     "torch eager": _torch_case(w, half)}
            # the fused node replayed from CUDA graphs (the default), and not
            cases["minifuse fused written"] = _written(_minifuse_case(w, "fused", half))
            if w == "layer_padded":
                cases["minifuse fused padded"] = _minifuse_case(w, "padded", half)
            else:      # (packing reads the sequence lengths on the host: not capturable)
                cases["minifuse fused graphed"] = _minifuse_case(w, "graphed", half)
                cases["minifuse fused graph"] = _minifuse_case(w, "graph", half)
            if not half:
                cases["minifuse fused high"] = _at_precision(_minifuse_case(w, "fused", half), "high")
                if w != "layer_padded":
                    cases["minifuse fused graphed high"] = _at_precision(_minifuse_case(w, "graphed high", half),
                                                                         "high")
                    cases["minifuse fused graph high"] = _minifuse_case(w, "graph high", half)
                cases["torch eager tf32"] = _torch_tf32(_torch_case(w, half))
            for step in cases.values():      # warm-up: kernel compilation, cuBLAS heuristics, caches
                for _ in range(3):
                    step()
            times = {name: [] for name in cases}
            for _ in range(repeat):
                for name, step in cases.items():
                    times[name].append(_event_ms(step, inner))
            ref = times["torch eager"]
            for name, ts in times.items():
                print(json.dumps({"workload": w, "precision": precision, "impl": name,
                                  "median_ms": round(statistics.median(ts), 3),
                                  "ratio_to_torch": round(statistics.median(t / r for t, r in zip(ts, ref)), 3),
                                  "times_ms": [round(t, 3) for t in ts]}), flush=True)
            if profile:
                for name, step in cases.items():
                    print(json.dumps({"workload": w, "precision": precision, "impl": name,
                                      "profile": kernel_profile(step)}), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda",))
    p.add_argument("--workload", choices=("mlp", "layer", "layer_padded", "all"), default="all")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--inner", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="also the GPU kernels of each case (torch.profiler)")
    args = p.parse_args(argv)
    run(("layer", "mlp", "layer_padded") if args.workload == "all" else (args.workload,), args.repeat, args.inner,
        args.profile)


if __name__ == "__main__":
    main()
