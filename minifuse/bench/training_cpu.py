"""Benchmark: one training step (forward + backward) on the CPU, fused vs unfused taped vs PyTorch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=passive \\
        NUMBA_THREADING_LAYER=workqueue python -m minifuse.bench.training_cpu   # + torch if importable
    python minifuse/bench/training_cpu.py --only torch        # the torch side alone, any env with torch
    python -m minifuse.bench.training_cpu --accuracy          # gradient error of input_store_dtype=float16

Workloads (float32):
- mlp:   SwiGLU MLP, dim 768, hidden floor(8/3 * 768) = 2048, 2048 tokens, no bias (MLP's default):
         y = (silu(a) * b) W2^T, [a | b] = x W1^T.
- layer: BERT-base TransformerLayer (d 768, 12 heads, 3072, exact GELU), B=8, S=128.
- layer_padded: the same layer with a key-padding mask, sequence lengths uniform in [32, 128]
         (fixed seed): taped, fused on the padded batch (``nn.packing(False)``), fused packed
         (the default: the real tokens only), torch with ``src_key_padding_mask`` (padded).
Each step is forward, ``backward(g)`` with a fixed random g, gradients cleared; the median of
``--repeat`` steps after two warm-up steps is reported, the variants timed round-robin, with the
per-round ratios to the unfused step and to torch's. "saved MB" is what the tape holds for
backward after forward: every array saved by ``save_for_backward``, each buffer counted once
(views of one buffer share it), parameters excluded (the model holds them anyway).
With torch importable (an env with torch, numba and scipy, PYTHONPATH at this checkout), torch's
step joins the same round-robin, so that all ratios come from one process and one time window.
Prints one JSON line per measurement. The machine is shared: compare ratios from one run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

MLP_DIM, MLP_TOKENS = 768, 2048
MLP_HIDDEN = int(8 / 3 * MLP_DIM)
LAYER = dict(d_model=768, num_heads=12, intermediate_size=3072, batch=8, seq=128)


def _interleaved(steps, repeat, progress=None, before=None):
    """Median seconds of each step function, timed round-robin (A B C A B C ...) after two warm-up
    calls each, so that a load change on a shared machine hits every variant alike. ``progress``
    wraps the rounds (a bar); ``before()``, if given, runs untimed before each timed call (the
    distributed benchmark aligns its ranks)."""
    for step in steps:
        step()
        step()                            # warm-up: JIT compilation (or cache load), BLAS buffers
    times = [[] for _ in steps]
    for _ in (progress or iter)(range(repeat)):
        for k, step in enumerate(steps):
            if before is not None:
                before()
            t = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - t)
    return [(statistics.median(ts), ts) for ts in times]


def _set_threads(threads):
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass


# ---- minifuse -------------------------------------------------------------------------------

def tape_saved_bytes(output, exclude=()):
    """Bytes held for backward by the tape below ``output``: the saved arrays of every node, each
    underlying buffer once; arrays whose buffer is one of ``exclude`` (parameters) not counted."""
    def root(a):
        while getattr(a, "base", None) is not None:
            a = a.base
        return a
    skip = {id(root(t.data)) for t in exclude}
    seen, total, stack, nodes = set(), 0, [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in nodes:
            continue
        nodes.add(id(node))
        for a in node._saved:
            r = root(a) if hasattr(a, "nbytes") else None
            if r is not None and id(r) not in seen and id(r) not in skip:
                seen.add(id(r))
                total += r.nbytes
        stack.extend(t.grad_fn for t in (node.inputs or ()) if t is not None)
    return total, len(nodes)


def _mlp_minifuse(variant, rng, save="preact", store=None):
    import numpy as np

    import minifuse as mf
    import minifuse.nn.functional as F
    from minifuse import fusions
    x = mf.tensor(rng.standard_normal((MLP_TOKENS, MLP_DIM), dtype=np.float32))
    w1 = mf.tensor(rng.standard_normal((2 * MLP_HIDDEN, MLP_DIM), dtype=np.float32) * 0.03, requires_grad=True)
    w2 = mf.tensor(rng.standard_normal((MLP_DIM, MLP_HIDDEN), dtype=np.float32) * 0.03, requires_grad=True)
    g = mf.tensor(rng.standard_normal((MLP_TOKENS, MLP_DIM), dtype=np.float32))
    if variant == "unfused":
        def forward():
            return F.linear(F.swiglu(F.linear(x, w1)), w2)
    else:
        def forward():                    # one node, as nn.MLP(backend='fused') without dropout
            return fusions.fused_mlp(x, w1, None, w2, None, "swiglu", save, store)
    return forward, g, (w1, w2)


def padding_lengths(batch=LAYER["batch"], seq=LAYER["seq"]):
    """The layer_padded workload's sequence lengths: uniform in [seq / 4, seq], fixed seed."""
    import numpy as np
    return np.random.default_rng(7).integers(seq // 4, seq + 1, batch)


def _layer_minifuse(variant, rng, save="preact", store=None, padded=False):
    import numpy as np

    import minifuse as mf
    from minifuse import nn
    c = LAYER
    mf.manual_seed(0)
    kwargs = {} if variant == "unfused" else {"fused_training": True}
    layer = nn.TransformerLayer(c["d_model"], c["num_heads"], c["intermediate_size"], **kwargs)
    layer.fused_save, layer.fused_input_store_dtype = save, store
    shape = (c["batch"], c["seq"], c["d_model"])
    x = mf.tensor(rng.standard_normal(shape, dtype=np.float32))
    g = mf.tensor(rng.standard_normal(shape, dtype=np.float32))
    if not padded:
        return (lambda: layer(x)), g, tuple(layer.parameters())
    mask = np.arange(c["seq"])[None, :] < padding_lengths()[:, None]

    def forward():
        with nn.packing(variant == "packed"):
            return layer(x, mask)
    return forward, g, tuple(layer.parameters())


def minifuse_case(workload, variant, **options):
    """(step function, record) for one minifuse variant; the record holds the saved bytes."""
    import numpy as np
    rng = np.random.default_rng(0)
    make = _mlp_minifuse if workload == "mlp" else _layer_minifuse
    if workload == "layer_padded":
        options = dict(options, padded=True)
    forward, g, params = make(variant, rng, **options)

    def step():
        for p in params:
            p.grad = None
        forward().backward(g)

    saved, nodes = tape_saved_bytes(forward(), exclude=params)
    opts = {k: (str(np.dtype(v)) if k == "store" else v) for k, v in options.items() if k != "padded"}
    return step, {"impl": "minifuse", "workload": workload, "variant": variant, **opts,
                  "saved_MB": round(saved / 2**20, 2), "tape_nodes": nodes}


def _report(records, results):
    """One JSON line per case: median and all times, and the median over rounds of this case's time
    divided by the unfused one's / torch's in the same round (paired ratios: a load change that
    lasts a round cancels out)."""
    rounds = [times for _, times in results]
    refs = {rec.get("variant", "torch"): k for k, rec in enumerate(records)}
    for k, (rec, (median, times)) in enumerate(zip(records, results)):
        rec.update(median_ms=round(median * 1e3, 2), times_ms=[round(t * 1e3, 1) for t in times])
        for name in ("unfused", "torch"):
            if name in refs and refs[name] != k:
                ratio = statistics.median(t / r for t, r in zip(times, rounds[refs[name]]))
                rec[f"ratio_to_{name}"] = round(ratio, 3)
        print(json.dumps(rec), flush=True)


# ---- PyTorch --------------------------------------------------------------------------------

def torch_case(workload):
    """(step function, record) for the same workload in PyTorch (train mode, no dropout)."""
    import numpy as np
    import torch
    import torch.nn.functional as TF
    torch.manual_seed(0)
    if workload == "mlp":
        x = torch.randn(MLP_TOKENS, MLP_DIM)
        w1 = (torch.randn(2 * MLP_HIDDEN, MLP_DIM) * 0.03).requires_grad_()
        w2 = (torch.randn(MLP_DIM, MLP_HIDDEN) * 0.03).requires_grad_()
        g = torch.randn(MLP_TOKENS, MLP_DIM)
        params = (w1, w2)

        def forward():
            a, b = TF.linear(x, w1).chunk(2, dim=-1)
            return TF.linear(TF.silu(a) * b, w2)
    else:
        c = LAYER
        layer = torch.nn.TransformerEncoderLayer(c["d_model"], c["num_heads"], c["intermediate_size"],
                                                 dropout=0.0, activation="gelu", batch_first=True,
                                                 layer_norm_eps=1e-12)
        layer.train()
        x = torch.randn(c["batch"], c["seq"], c["d_model"])
        g = torch.randn_like(x)
        params = tuple(layer.parameters())
        pad = None
        if workload == "layer_padded":
            pad = torch.as_tensor(np.arange(c["seq"])[None, :] >= padding_lengths()[:, None])

        def forward():
            return layer(x, src_key_padding_mask=pad)

    def step():
        for p in params:
            p.grad = None
        forward().backward(g)

    return step, {"impl": "torch " + torch.__version__, "variant": "torch", "workload": workload,
                  "threads": torch.get_num_threads()}


# ---- accuracy cost of input_store_dtype=float16 ------------------------------------------------

def accuracy(tokens=512):
    """Relative error (Frobenius norm) of each gradient against float64: float32, and float32 with
    the saved activations kept in float16. One JSON line per gradient."""
    import numpy as np

    import minifuse as mf
    from minifuse import fusions as FU
    rng = np.random.default_rng(0)
    n, d, h = tokens, MLP_DIM, MLP_HIDDEN
    cases = {
        "fused_linear_act swiglu": (lambda st: lambda x, w: FU.fused_linear_act(x, w, None, "swiglu", "preact", st),
                                    [rng.standard_normal((n, d)), rng.standard_normal((2 * h, d)) * 0.03],
                                    (n, h), ["x", "weight"]),
        "bias_gelu tanh": (lambda st: lambda y, b: FU.bias_gelu(y, b, "tanh", st),
                           [rng.standard_normal((n, 3072)), rng.standard_normal(3072) * 0.1], (n, 3072), ["y", "bias"]),
        "bias_swiglu": (lambda st: lambda y, b: FU.bias_swiglu(y, b, st),
                        [rng.standard_normal((n, 2 * h)), rng.standard_normal(2 * h) * 0.1], (n, h), ["y", "bias"]),
        "residual_layer_norm": (lambda st: lambda x, r, g, b: FU.residual_layer_norm(x, r, g, b, 1e-12, st),
                                [rng.standard_normal((n, d)), rng.standard_normal((n, d)),
                                 1 + 0.1 * rng.standard_normal(d), 0.1 * rng.standard_normal(d)],
                                (n, d), ["x", "residual", "gamma", "beta"]),
    }

    def grads(fn, arrays, g, dtype):
        ts = [mf.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
        fn(*ts).backward(mf.tensor(g.astype(dtype)))
        return [t.grad.numpy().astype(np.float64) for t in ts]

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    for name, (make, arrays, out_shape, names) in cases.items():
        g = rng.standard_normal(out_shape)
        ref = grads(make(None), arrays, g, np.float64)
        f32 = grads(make(None), arrays, g, np.float32)
        f16 = grads(make(np.float16), arrays, g, np.float32)
        for k, arg in enumerate(names):
            print(json.dumps({"function": name, "grad_of": arg, "rel_err_float32": float(f"{rel(f32[k], ref[k]):.2e}"),
                              "rel_err_float16_store": float(f"{rel(f16[k], ref[k]):.2e}")}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu",), default="cpu",
                   help="cpu here; `python -m minifuse.bench training --device cuda` runs training_cuda")
    p.add_argument("--only", choices=("minifuse", "torch"), default=None)
    p.add_argument("--workload", choices=("mlp", "layer", "layer_padded", "all"), default="all")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--accuracy", action="store_true", help="only the float16 input-store accuracy table")
    args = p.parse_args(argv)
    if args.accuracy:
        return accuracy()
    _set_threads(args.threads)
    workloads = ("mlp", "layer", "layer_padded") if args.workload == "all" else (args.workload,)
    torch = None
    if args.only != "minifuse":
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            print(json.dumps({"impl": "torch", "skipped": "torch is not importable here; run "
                              "`python minifuse/bench/training_cpu.py --only torch` in an env with torch"}))
    if args.only != "torch":
        import numba
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        try:
            from threadpoolctl import threadpool_info
            blas = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads")) for i in threadpool_info()]
            print(json.dumps({"blas": blas, "numba_threads": numba.get_num_threads(),
                              "numba_threading_layer": os.environ.get("NUMBA_THREADING_LAYER"),
                              "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}))
        except ImportError:
            pass
    for w in workloads:
        cases = []
        if args.only != "torch":
            import numpy as np
            runs = [("unfused", {}), ("fused", {}), ("fused", {"save": "recompute"}), ("fused", {"store": np.float16}),
                    ("fused", {"save": "recompute", "store": np.float16})]
            if w == "layer_padded":
                runs = [("unfused", {}), ("fused", {}), ("packed", {})]
            cases += [minifuse_case(w, variant, **opts) for variant, opts in runs]
        if torch is not None:
            cases.append(torch_case(w))          # timed in the same round-robin as minifuse
        bar = None
        if args.only != "torch":                # the torch-only side imports nothing of minifuse
            from minifuse.progress import progress
            bar = lambda rounds: progress(rounds, desc=f"{w} rounds", leave=False)  # noqa: E731
        _report([rec for _, rec in cases], _interleaved([step for step, _ in cases], args.repeat, bar))


if __name__ == "__main__":
    main()
