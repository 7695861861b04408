"""GPU benchmark of the CUDA kernels against PyTorch eager, in one process.

    PYTHONPATH=. python3 -m minifuse.bench.cuda [--json FILE]

float32 with TF32 off everywhere (torch.backends.cuda.matmul.allow_tf32 = False; CuPy does not use
TF32 unless CUPY_TF32=1), plus float16. Each time is the median over `REPEATS` rounds of `INNER`
back-to-back calls timed with CUDA events on the default stream, after a warm-up; calls are
queued without synchronising, so Python launch cost shows only where it exceeds the GPU work.
One untimed call is queued before the start event of each round: the GPU is then busy while
Python queues the timed calls. (Without it the first call's Python time was GPU idle time inside
the round: 0.1 ms over 20 calls put 5 us on each of minifuse's linear calls, ~1 us on torch's.)
`*_latency_us`: one call and a synchronize, wall clock, median: what a single call costs a
caller that waits for its result, Python included. `kernel_times_*`: the GPU time of each kind
of kernel in one BERT layer call (torch.profiler), the non-GEMM kernels against the bytes they
move over the measured copy bandwidth.
"""
import argparse
import contextlib
import json
import math
import statistics
import sys

import numpy as np

# cuBLASLt's tanh-GELU epilogue (CUBLASLT_EPILOGUE_GELU_BIAS, cublasLt.h): timed against minifuse's
# GEMM + epilogue kernel in float32, where the library does not use it (slower; float16 does).
EPILOGUE_GELU_BIAS = 36

REPEATS, INNER = 7, 20


def _cupy_time(fn, inner=INNER, repeats=REPEATS):
    import cupy
    fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        fn()                 # queued untimed: keeps the GPU busy while the timed calls are queued
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / inner)
    return statistics.median(times)


def _torch_time(fn, inner=INNER, repeats=REPEATS):
    import torch
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        fn()
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def latency_us(fn, sync, n=50):
    """Median wall-clock microseconds of one call followed by ``sync()``."""
    import time
    fn()
    sync()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


@contextlib.contextmanager
def _precision(p):
    """minifuse's float32 GEMM precision set to ``p`` inside the block."""
    import minifuse as mf
    mf.set_float32_matmul_precision(p)
    try:
        yield
    finally:
        mf.set_float32_matmul_precision("highest")


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _gelu_tanh64(y):
    return 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))


def gemm_ceiling(results):
    import cupy
    import torch
    n = 8192
    a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    b = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    c = cupy.empty_like(a)
    ms = _cupy_time(lambda: cupy.matmul(a, b, out=c), inner=3)
    ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
    tms = _torch_time(lambda: torch.mm(ta, tb), inner=3)
    flop = 2 * n ** 3
    results["gemm_8192_fp32"] = dict(cupy_ms=ms, cupy_tflops=flop / ms / 1e9, torch_ms=tms,
                                     torch_tflops=flop / tms / 1e9)
    src = cupy.empty(256 * 2 ** 20, cupy.float32)
    dst = cupy.empty_like(src)
    cms = _cupy_time(lambda: cupy.copyto(dst, src), inner=5)
    results["copy_1GiB"] = dict(ms=cms, tb_per_s=2 * src.nbytes / cms / 1e9)
    return max(flop / ms / 1e9, flop / tms / 1e9)


def linear(results, ceiling):
    import cupy
    import torch
    import torch.nn.functional as F
    from minifuse.kernels import cuda as K
    n, k, m = 4096, 768, 3072
    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((n, k)).astype(np.float32))
    w = cupy.asarray((rng.standard_normal((m, k)) / math.sqrt(k)).astype(np.float32))
    b = cupy.asarray(rng.standard_normal(m).astype(np.float32) * 0.1)
    out = cupy.empty((n, m), cupy.float32)
    tx, tw, tb = (torch.as_tensor(a, device="cuda") for a in (x, w, b))
    flop = 2 * n * k * m
    r = {}
    from minifuse.kernels.cuda import cublaslt
    r["cublaslt"] = cublaslt._instance() is not None   # linear_act: cuBLASLt GEMM + bias/GELU kernel
    r["ours_ms"] = _cupy_time(lambda: K.linear_act(x, w, b, "gelu_tanh", out=out))
    r["ours_gemm_only_ms"] = _cupy_time(lambda: cupy.matmul(x, w.T, out=out))
    r["ours_epilogue_ms"] = _cupy_time(lambda: K.bias_act_(out, b, "gelu_tanh"))
    r["ours_cublas_plus_epilogue_kernel_ms"] = _cupy_time(
        lambda: K.bias_act_(cupy.matmul(x, w.T, out=out), b, "gelu_tanh"))
    # the other ways to split the work: cuBLAS (CuPy) or cuBLASLt GEMM, the bias in or out of it
    r["lt_gemm_only_ms"] = _cupy_time(lambda: cublaslt.linear(x, w, None, out))
    r["lt_gemm_then_bias_gelu_kernel_ms"] = _cupy_time(
        lambda: (cublaslt.linear(x, w, None, out), K.bias_act_(out, b, "gelu_tanh")))
    r["lt_bias_then_gelu_kernel_ms"] = _cupy_time(
        lambda: (cublaslt.linear(x, w, b, out), K.bias_act_(out, None, "gelu_tanh")))
    if r["cublaslt"]:   # cuBLASLt's own tanh-GELU epilogue: one kernel, the activation in the GEMM's tail
        r["lt_gelu_bias_epilogue_ms"] = _cupy_time(lambda: cublaslt._instance().matmul(
            x, w, out, trans_b=True, bias=b, epilogue=EPILOGUE_GELU_BIAS))
        r["lt_gelu_bias_epilogue_rel_err_vs_float64"] = rel_err(out.get(), _gelu_tanh64(
            x.get().astype(np.float64) @ w.get().astype(np.float64).T + b.get()))
    # the epilogue kernel's GPU time alone: ten launches replayed from a CUDA graph (no Python)
    graph = K.CudaGraph(lambda: [K.bias_act_(out, b, "gelu_tanh") for _ in range(10)])
    r["epilogue_kernel_gpu_us"] = _cupy_time(graph.replay) * 100
    r["epilogue_kernel_tb_per_s"] = 2 * n * m * 4 / r["epilogue_kernel_gpu_us"] / 1e6
    ty = torch.as_tensor(out, device="cuda")
    r["torch_gelu_alone_us"] = _torch_time(lambda: F.gelu(ty, approximate="tanh")) * 1000
    c = math.sqrt(2 / math.pi)

    def cupy_unfused():
        y = x @ w.T + b
        return 0.5 * y * (1 + cupy.tanh(c * (y + 0.044715 * y * y * y)))
    r["cupy_unfused_ms"] = _cupy_time(cupy_unfused)
    r["torch_ms"] = _torch_time(lambda: F.gelu(F.linear(tx, tw, tb), approximate="tanh"))
    r["torch_gemm_only_ms"] = _torch_time(lambda: torch.mm(tx, tw.t()))
    from minifuse.bench import tiled_gemm
    for cfg in tiled_gemm.CONFIGS:
        r[f"tiled_{cfg}_ms"] = _cupy_time(lambda: tiled_gemm.tiled_linear_act(x, w, b, "gelu_tanh", out=out, config=cfg),
                                          inner=5)
        r[f"tiled_{cfg}_tflops"] = flop / r[f"tiled_{cfg}_ms"] / 1e9
        r[f"tiled_{cfg}_rel_err"] = rel_err(out.get(), F.gelu(F.linear(tx, tw, tb), approximate="tanh").cpu())
    K.linear_act(x, w, b, "gelu_tanh", out=out)
    want = F.gelu(F.linear(tx, tw, tb), approximate="tanh").cpu().numpy()
    r["rel_err_vs_torch"] = rel_err(out.get(), want)
    r["max_abs_diff_vs_torch"] = float(np.abs(out.get() - want).max())
    r["rel_err_vs_float64"] = rel_err(out.get(), _gelu_tanh64(x.get().astype(np.float64) @ w.get().astype(np.float64).T
                                                              + b.get()))
    r["ratio_vs_torch"] = r["ours_ms"] / r["torch_ms"]
    # float32 on the tensor cores: 'high' = the 3xTF32 split, 'medium' = one TF32 product (and
    # torch's TF32, allow_tf32 = True, beside it)
    want64 = _gelu_tanh64(x.get().astype(np.float64) @ w.get().astype(np.float64).T + b.get())
    for p in ("high", "medium"):
        with _precision(p):
            r[f"ours_{p}_ms"] = _cupy_time(lambda: K.linear_act(x, w, b, "gelu_tanh", out=out))
            r[f"ours_{p}_rel_err_vs_float64"] = rel_err(out.get(), want64)
            r[f"{p}_ratio_vs_torch"] = r[f"ours_{p}_ms"] / r["torch_ms"]
    from minifuse.kernels.cuda import tf32x3   # the 3xTF32 operand splits alone, GPU time (10 per graph)
    for name, a, lo_at in (("x", x, tf32x3.LO_FIRST), ("w", w, tf32x3.LO_MIDDLE)):
        graph = K.CudaGraph(lambda: [tf32x3.split3(cupy, a, lo_at) for _ in range(10)])
        r[f"high_split_{name}_gpu_us"] = _cupy_time(graph.replay) * 100
    torch.backends.cuda.matmul.allow_tf32 = True
    r["torch_tf32_ms"] = _torch_time(lambda: F.gelu(F.linear(tx, tw, tb), approximate="tanh"))
    r["torch_tf32_rel_err_vs_float64"] = rel_err(F.gelu(F.linear(tx, tw, tb), approximate="tanh").cpu(), want64)
    torch.backends.cuda.matmul.allow_tf32 = False
    r["ours_latency_us"] = latency_us(lambda: K.linear_act(x, w, b, "gelu_tanh", out=out),
                                      cupy.cuda.Device().synchronize)
    r["torch_latency_us"] = latency_us(lambda: F.gelu(F.linear(tx, tw, tb), approximate="tanh"),
                                       torch.cuda.synchronize)
    r["tflops"] = flop / r["ours_ms"] / 1e9
    r["fraction_of_ceiling"] = r["tflops"] / ceiling
    r["epilogue_bytes_MB"] = 2 * n * m * 4 / 1e6
    r["epilogue_tb_per_s"] = 2 * n * m * 4 / r["ours_epilogue_ms"] / 1e9
    results["linear_4096x768x3072_gelu_tanh_fp32"] = r

    # half precision: tensor cores through cuBLAS
    xh, wh, bh = x.astype(cupy.float16), w.astype(cupy.float16), b.astype(cupy.float16)
    outh = cupy.empty((n, m), cupy.float16)
    txh, twh, tbh = tx.half(), tw.half(), tb.half()
    rh = dict(ours_ms=_cupy_time(lambda: K.linear_act(xh, wh, bh, "gelu_tanh", out=outh)),
              torch_ms=_torch_time(lambda: F.gelu(F.linear(txh, twh, tbh), approximate="tanh")))
    try:   # the cuBLASLt call captured in a CUDA graph: one launch, no Python per call
        graph = K.CudaGraph(lambda: K.linear_act(xh, wh, bh, "gelu_tanh", out=outh))
        rh["ours_graph_ms"] = _cupy_time(graph.replay)
        rh["graph_ratio_vs_torch"] = rh["ours_graph_ms"] / rh["torch_ms"]
    except RuntimeError as e:
        rh["ours_graph_ms"] = repr(e)
    rh["ratio_vs_torch"] = rh["ours_ms"] / rh["torch_ms"]
    rh["rel_err_vs_torch_fp32"] = rel_err(outh.get(), F.gelu(F.linear(tx, tw, tb), approximate="tanh").cpu())
    results["linear_4096x768x3072_gelu_tanh_fp16"] = rh


def bert_layer(results, ceiling, dtype, b=32, s=128, tag=""):
    """``dtype``: np.float32, np.float16 or "bfloat16"."""
    import cupy
    import torch

    import minifuse as mf
    from minifuse.kernels import cuda as K
    d, h, f, eps = 768, 12, 3072, 1e-12
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d, h, f, dropout=0.0, activation="gelu", batch_first=True,
                                             norm_first=False, layer_norm_eps=eps, device="cuda").eval()
    bf16 = dtype == "bfloat16"
    tdtype = torch.bfloat16 if bf16 else {np.float32: torch.float32, np.float16: torch.float16}[dtype]
    npdtype = mf.bfloat16 if bf16 else np.dtype(dtype)
    layer = layer.to(tdtype)
    with torch.no_grad():   # BERT-like parameter scale so that float16 stays in range
        for p in layer.parameters():
            if p.ndim == 1:
                p.copy_(torch.randn_like(p) * 0.02 + (1.0 if p is layer.norm1.weight or p is layer.norm2.weight else 0.0))
    tx = torch.randn(b, s, d, device="cuda", dtype=tdtype)
    pad = torch.zeros(b, s, dtype=torch.bool, device="cuda")
    pad[::2, s - s // 4:] = True                          # every other sequence: a quarter padding
    if bf16:   # torch's bfloat16 has no CUDA array interface: through float32, exact both ways
        a = lambda t: cupy.asarray(t.detach().float().contiguous()).astype(npdtype)    # noqa: E731
    else:
        a = lambda t: cupy.asarray(t.detach().contiguous())    # noqa: E731 (shares memory)
    f32 = lambda y: torch.as_tensor(y.astype(cupy.float32) if bf16 else y, device="cuda").float()  # noqa: E731
    at = layer.self_attn
    args = [a(tx), a(at.in_proj_weight), a(at.in_proj_bias), a(at.out_proj.weight), a(at.out_proj.bias),
            a(layer.norm1.weight), a(layer.norm1.bias), a(layer.linear1.weight), a(layer.linear1.bias),
            a(layer.linear2.weight), a(layer.linear2.bias), a(layer.norm2.weight), a(layer.norm2.bias)]
    mask = cupy.asarray(~pad)   # bool, as torch gets it: a bool mask needs no value check (no host sync)

    from minifuse.kernels.weights import LayerWeights

    def ours(x, *weights):
        return K.transformer_layer(x, LayerWeights(*weights), mask, h, eps, "gelu")

    n = b * s
    flop = 2 * n * d * (3 * d + d + 2 * f) + 4 * b * s * s * d
    r = dict(gflop=flop / 1e9)
    with torch.inference_mode():
        r["torch_ms"] = _torch_time(lambda: layer(tx, src_key_padding_mask=pad))
        ref = layer(tx, src_key_padding_mask=pad).float()
    r["ours_ms"] = _cupy_time(lambda: ours(*args))          # eager: the recorded launches replayed
    from minifuse.kernels.cuda import replay
    replay.set_enabled(False)
    try:
        r["ours_as_written_ms"] = _cupy_time(lambda: ours(*args))     # eager, every call through its Python
    finally:
        replay.set_enabled(True)
    got = f32(ours(*args))
    keep = ~pad
    r["rel_err_vs_torch"] = rel_err(got[keep].cpu(), ref[keep].cpu())
    r["max_abs_diff_vs_torch"] = float((got[keep] - ref[keep]).abs().max())
    # the GEMM floor: the same cuBLAS calls alone (4 projections + 2 batched attention products)
    x2 = args[0].reshape(n, d)
    bufs = [cupy.empty((n, 3 * d), args[0].dtype), cupy.empty((n, d), args[0].dtype),
            cupy.empty((n, f), args[0].dtype), cupy.empty((n, d), args[0].dtype)]
    q = cupy.empty((b, h, s, d // h), args[0].dtype)
    ctx = cupy.empty_like(q)
    sc = cupy.empty((b, h, s, s), args[0].dtype)

    if dtype == np.float32:
        def gemms():
            cupy.matmul(x2, args[1].T, out=bufs[0])
            cupy.matmul(q, q.swapaxes(-1, -2), out=sc)
            cupy.matmul(sc, q, out=ctx)
            cupy.matmul(bufs[1], args[3].T, out=bufs[1 + 2])
            cupy.matmul(bufs[3], args[7].T, out=bufs[2])
            cupy.matmul(bufs[2], args[9].T, out=bufs[1])
    else:      # half: through cuBLASLt (CuPy's batched float16 matmul converts to float32 and back,
        # and it has no batched bfloat16 GEMM), as the layer runs them
        from minifuse.kernels.cuda import cublaslt
        q3, sc3, ctx3 = q.reshape(b * h, s, d // h), sc.reshape(b * h, s, s), ctx.reshape(b * h, s, d // h)

        def gemms():
            cublaslt.linear(x2, args[1], None, bufs[0])
            cublaslt.bmm(q3, q3, sc3, trans_b=True)
            cublaslt.bmm(sc3, q3, ctx3)
            cublaslt.linear(bufs[1], args[3], None, bufs[3])
            cublaslt.linear(bufs[3], args[7], None, bufs[2])
            cublaslt.linear(bufs[2], args[9], None, bufs[1])
    r["gemm_floor_ms"] = _cupy_time(gemms)
    try:   # the whole layer captured once and replayed from a CUDA graph (kernels/cuda/graphs.py)
        graph = K.CudaGraph(ours, *args)
        r["ours_graph_ms"] = _cupy_time(graph.replay)
        r["graph_ratio_vs_torch"] = r["ours_graph_ms"] / r["torch_ms"]
        r["graph_max_abs_diff_vs_eager"] = float((f32(graph.replay()) - f32(ours(*args))).abs().max())
    except RuntimeError as e:
        r["ours_graph_ms"] = repr(e)
    r["ratio_vs_torch"] = r["ours_ms"] / r["torch_ms"]
    if dtype == np.float32:   # the layer's four projections as 3xTF32 (minifuse.set_float32_matmul_precision)
        with _precision("high"):
            r["ours_high_ms"] = _cupy_time(lambda: ours(*args))
            r["high_ratio_vs_torch"] = r["ours_high_ms"] / r["torch_ms"]
            high = torch.as_tensor(ours(*args), device="cuda")
            r["high_rel_err_vs_torch"] = rel_err(high[keep].cpu(), ref[keep].cpu())
            r["high_rel_err_vs_highest"] = rel_err(high[keep].cpu(), got[keep].cpu())
            graph = K.CudaGraph(ours, *args)
            r["ours_high_graph_ms"] = _cupy_time(graph.replay)
            r["high_graph_ratio_vs_torch"] = r["ours_high_graph_ms"] / r["torch_ms"]
    r["ours_latency_us"] = latency_us(lambda: ours(*args), cupy.cuda.Device().synchronize)
    with torch.inference_mode():
        r["torch_latency_us"] = latency_us(lambda: layer(tx, src_key_padding_mask=pad), torch.cuda.synchronize)
    r["non_gemm_ms"] = r["ours_ms"] - r["gemm_floor_ms"]
    r["tflops"] = flop / r["ours_ms"] / 1e9
    r["torch_tflops"] = flop / r["torch_ms"] / 1e9
    if dtype == np.float32:
        r["fraction_of_ceiling"] = r["tflops"] / ceiling
    results[f"bert_layer_B{b}_S{s}_{np.dtype(npdtype).name}{tag}"] = r


# What each kind of non-GEMM kernel of the BERT layer moves, in elements of the layer's dtype per
# call (N = B*S tokens): the floor of `kernel_times` is their bytes over the measured copy bandwidth.
def _layer_traffic(b, s, d, f, h):
    n = b * s
    return {"layer_norm": 2 * 3 * n * d,          # x2: read x and the residual, write out
            "bias_act": 2 * n * f,                 # bias + GELU: read and write the FFN hidden
            "softmax": 2 * b * h * s * s,          # read and write the scores
            "split_heads": 2 * 3 * n * d,          # qkv into (3, B, H, S, Dh)
            "merge_heads": 2 * n * d}              # context back to (N, d)


_KINDS = tuple(_layer_traffic(1, 1, 1, 1, 1))


def _kind(name):
    """The kind of a profiled kernel: one of _KINDS (named in minifuse's kernel names), 'gemm' for
    cuBLAS(Lt)'s, or 'other' (the additive mask, memsets)."""
    for kind in _KINDS:
        if kind in name:
            return kind
    low = name.lower()
    return "gemm" if any(w in low for w in ("gemm", "nvjet", "cutlass", "xmma", "sm90", "sm80")) else "other"


def kernel_times(results, b=32, s=128, calls=20):
    """GPU time per kernel kind of one `K.transformer_layer` call (BERT-base, every other sequence
    a quarter padding), torch.profiler over `calls` calls, per dtype; the non-GEMM kernels' sum
    against the memory floor (bytes they move over the copy bandwidth measured above)."""
    import cupy
    import torch
    from torch.profiler import ProfilerActivity, profile

    import minifuse as mf
    from minifuse.kernels import cuda as K
    from minifuse.kernels.weights import LayerWeights
    d, h, f, eps = 768, 12, 3072, 1e-12
    bandwidth = results["copy_1GiB"]["tb_per_s"] * 1e12
    rng = np.random.default_rng(0)
    for dtype in (np.dtype(np.float16), mf.bfloat16, np.dtype(np.float32)):
        if dtype is None:
            continue

        def a(*shape, scale=0.02, offset=0.0):
            return cupy.asarray((rng.standard_normal(shape) * scale + offset).astype(dtype))
        x = a(b, s, d, scale=1.0)
        weights = LayerWeights(a(3 * d, d), a(3 * d), a(d, d), a(d), a(d, offset=1.0), a(d), a(f, d), a(f),
                               a(d, f), a(d), a(d, offset=1.0), a(d))
        mask = cupy.ones((b, s), cupy.bool_)
        mask[::2, s - s // 4:] = False
        for _ in range(3):
            K.transformer_layer(x, weights, mask, h, eps, "gelu")
        cupy.cuda.Device().synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                K.transformer_layer(x, weights, mask, h, eps, "gelu")
            cupy.cuda.Device().synchronize()
        us = {}
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                kind = _kind(e.name)
                us[kind] = us.get(kind, 0.0) + getattr(e, "device_time_total", 0.0) / calls
        floors = {k: n * dtype.itemsize / bandwidth * 1e6 for k, n in _layer_traffic(b, s, d, f, h).items()}
        non_gemm = sum(v for k, v in us.items() if k != "gemm")
        results[f"kernel_times_{dtype.name}"] = dict(
            us={k: round(v, 2) for k, v in sorted(us.items())}, floor_us={k: round(v, 2) for k, v in floors.items()},
            non_gemm_us=non_gemm, non_gemm_floor_us=sum(floors.values()),
            non_gemm_vs_floor=non_gemm / sum(floors.values()), all_us=sum(us.values()))


def compiled_layer(results, b=2, s=16):
    """A BERT-base layer as a module at small batch (float32): eager (nn.TransformerLayer under
    no_grad), mf.compile's graph executor, mf.compile with cuda_graph=True (one replay per call),
    and torch eager; per-call time in a queue and latency (one call + synchronize)."""
    import cupy
    import torch

    import minifuse as mf
    from minifuse import nn
    d, h, f, eps = 768, 12, 3072, 1e-12
    mf.manual_seed(0)
    layer = nn.TransformerLayer(d, h, f, layer_norm_eps=eps).to("cuda")
    x = mf.randn(b, s, d).to("cuda")
    m = np.ones((b, s), np.int64)
    m[::2, s - s // 4:] = 0
    mask = mf.tensor(m).to("cuda")
    tl = torch.nn.TransformerEncoderLayer(d, h, f, dropout=0.0, activation="gelu", batch_first=True,
                                          layer_norm_eps=eps, device="cuda").eval()
    tx = torch.randn(b, s, d, device="cuda")
    pad = torch.as_tensor(m == 0, device="cuda")
    r = {}
    sync = cupy.cuda.Device().synchronize
    with mf.no_grad():
        compiled = mf.compile(layer, x, mask)
        graphed = mf.compile(layer, x, mask, cuda_graph=True)
        want = layer(x, mask).numpy()
        r["compile_max_abs_diff_vs_eager"] = float(np.abs(compiled(x, mask).numpy() - want).max())
        r["cuda_graph_max_abs_diff_vs_eager"] = float(np.abs(graphed(x, mask).numpy() - want).max())
        for name, fn in (("eager", lambda: layer(x, mask)), ("compile", lambda: compiled(x, mask)),
                         ("compile_cuda_graph", lambda: graphed(x, mask))):
            r[f"{name}_ms"] = _cupy_time(fn)
            r[f"{name}_latency_us"] = latency_us(fn, sync)
    with torch.inference_mode():
        r["torch_ms"] = _torch_time(lambda: tl(tx, src_key_padding_mask=pad))
        r["torch_latency_us"] = latency_us(lambda: tl(tx, src_key_padding_mask=pad), torch.cuda.synchronize)
    for name in ("eager", "compile", "compile_cuda_graph"):
        r[f"{name}_ratio_vs_torch"] = r[f"{name}_ms"] / r["torch_ms"]
    results[f"module_layer_b{b}_s{s}"] = r


def launches(results):
    """Launch cost: 100 tiny numba kernels, from Python vs replayed from a CUDA graph."""
    import cupy
    from minifuse.kernels import cuda as K
    y = cupy.ones((4, 256), cupy.float32)

    def hundred(_):
        for _ in range(100):
            K.bias_act_(y, None, "relu")
        return y
    eager = _cupy_time(lambda: hundred(None), inner=3)
    graph = K.CudaGraph(hundred, None)
    replay = _cupy_time(graph.replay, inner=3)
    results["launch_100_tiny_kernels"] = dict(eager_us_per_kernel=eager * 10, graph_us_per_kernel=replay * 10)


def launch_profile(results):
    """Python cost (us per call, no synchronisation) of the steps of one numba launch."""
    import time

    import cupy
    from minifuse.kernels import cuda as K
    from minifuse.kernels.cuda import runtime as rt
    from minifuse.kernels.cuda.elementwise import _bias_act_kernel
    y = cupy.ones((4, 256), cupy.float32)
    b = cupy.ones(256, cupy.float32)
    kern = _bias_act_kernel("relu", np.dtype(np.float32))
    dy, db, dz, s = rt.device_array(y), rt.device_array(b), rt.device_array(y[:0]), rt.stream()

    def us(fn, n=300):
        fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n * 1e6
    r = dict(as_cuda_array=us(lambda: rt.cuda.as_cuda_array(y, sync=False)),
             cached_view=us(lambda: rt.device_array(y)),
             external_stream=us(lambda: rt.cuda.external_stream(cupy.cuda.get_current_stream().ptr)),
             cached_stream=us(rt.stream),
             launch_converted=us(lambda: kern[(1, 4), 256, s](dy, db, True, dz)),
             launch_raw_cupy=us(lambda: kern[(1, 4), 256, s](y, b, True, y[:0])),
             bias_act_call=us(lambda: K.bias_act_(y, b, "relu")),
             cupy_add=us(lambda: cupy.add(y, y)))
    try:  # numba's compiled kernel object, launched without the dispatcher's type lookup
        kobj = next(iter(kern.overloads.values()))
        r["launch_direct"] = us(lambda: kobj.launch([dy, db, True, dz], (1, 4, 1), (256, 1, 1), s, 0))
    except Exception as e:
        r["launch_direct"] = repr(e)
    cupy.cuda.Device().synchronize()
    results["launch_profile_us"] = r


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--json")
    p.add_argument("--only", default="", help="comma-separated section names (e.g. bert_layer,linear); all when empty")
    args = p.parse_args(argv)
    sections = {f.__name__ for f in (linear, bert_layer, kernel_times, compiled_layer, launches, launch_profile)}
    unknown = sorted(set(w for w in args.only.split(",") if w) - sections)
    if unknown:     # before CuPy and torch are imported: a typo is told at once, on any machine
        p.error(f"--only: unknown section(s) {', '.join(unknown)}; the sections are {', '.join(sorted(sections))}")
    import cupy
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results = dict(device=cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
                   torch=torch.__version__, cupy=cupy.__version__, numpy=np.__version__)
    ceiling = gemm_ceiling(results)
    steps = [(linear, (results, ceiling)), (bert_layer, (results, ceiling, np.float32)),
             (bert_layer, (results, ceiling, np.float16)), (bert_layer, (results, ceiling, "bfloat16")),
             (bert_layer, (results, ceiling, np.float32, 2, 16, "_small")), (kernel_times, (results,)),
             (compiled_layer, (results,)),
             (launches, (results,)),
             (launch_profile, (results,))]
    wanted = [w for w in args.only.split(",") if w]
    steps = [(step, a) for step, a in steps if not wanted or step.__name__ in wanted]
    from minifuse.progress import progress
    for step, step_args in progress(steps, desc="sections"):
        try:
            step(*step_args)
        except Exception as e:  # report and go on: one broken section must not hide the others
            results[f"error_{step.__name__}"] = repr(e)
        print(json.dumps({k: v for k, v in results.items()}, default=float)[-2000:], flush=True)
    text = json.dumps(results, indent=1, default=float)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)
    print(text)
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
