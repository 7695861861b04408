"""Benchmark: packed (unpadded) sequences against padding, on the CPU and on CUDA.

    python -m minifuse.bench packing layer                  # BERT-base layer, padding sweep, CPU
    python -m minifuse.bench packing layer --device cuda    # the same on a GPU, float32 and float16
    python -m minifuse.bench packing encode                 # all-MiniLM-L6-v2 encode of a real corpus

``layer``: one BERT-base post-LN layer (d 768, 12 heads, FFN 3072) on a batch (CPU B=8, CUDA
B=32; S=128) whose sequences are padded to 0, 25, 50 and 75% on average (lengths uniform in a
band around the mean), plus the lengths uniform in [32, 128] (CPU) / [64, 128] (CUDA). Each row:
the padded fused layer, the packed one (pack + layer + unpack), the GEMM floor of the real
tokens alone (the layer's four projections on T rows), and torch's ``TransformerEncoder`` fast
path with ``src_key_padding_mask`` (nested tensors) where torch is importable.

``encode``: sentences from the docstrings of Python's standard library (real English of 1 to
100+ words, the same on every machine with the same Python), ``SentenceEncoder.encode`` packed
and padded, and sentence-transformers on the same sentences, batch size and threads where it is
installed (``bench.minilm.torch_encoder``), timed in turn round by round; ``packed_vs_torch`` is
the median over the rounds of the paired ratio. Prints one JSON line per row.
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
import statistics
import time

import numpy as np

from .kernels_cpu import layer_params, torch_or_none

FRACTIONS = (0.0, 0.25, 0.5, 0.75)


def rounds(fns, repeat):
    """{name: [ms of each round]} of the functions in ``fns``, timed in turn ``repeat`` times after
    one warm-up call each: on a shared machine a load change then hits every contender alike, and
    the times of one round pair up."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1e3)
    return times


def interleaved(fns, repeat):
    """{name: best ms} of `rounds`: the best of the runs is the least disturbed one."""
    return {name: min(ts) for name, ts in rounds(fns, repeat).items()}


def paired_ratio(times, name, ref):
    """The median over rounds of times[name] / times[ref] (`rounds`)."""
    return statistics.median(a / b for a, b in zip(times[name], times[ref]))
D, HEADS, FFN, EPS = 768, 12, 3072, 1e-12


def lengths_for(rng, b, s, fraction):
    """b lengths in [1, s] whose mean is about (1 - fraction) s: uniform in a band of +-s/8."""
    mean = (1 - fraction) * s
    half = min(s / 8, mean - 1, s - mean)
    return np.clip(np.rint(rng.uniform(mean - half, mean + half, b)), 1, s).astype(np.int64)


def mask_of(lengths, s):
    return (np.arange(s)[None, :] < lengths[:, None]).astype(np.int64)


def _torch_layer(torch, device, dtype):
    layer = torch.nn.TransformerEncoderLayer(D, HEADS, FFN, dropout=0.0, activation="gelu", batch_first=True,
                                             layer_norm_eps=EPS, device=device, dtype=dtype)
    return torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=True).eval()


def layer_cpu(b=8, s=128, repeat=7, seed=0):
    from .. import nn
    from ..kernels import cpu as K
    from ..kernels.weights import LayerWeights
    rng = np.random.default_rng(seed)
    weights = LayerWeights(*layer_params(rng, D, FFN))
    x = rng.standard_normal((b, s, D)).astype(np.float32)
    torch = torch_or_none()
    cases = [(f"padding {f:.0%}", lengths_for(rng, b, s, f)) for f in FRACTIONS]
    cases.append(("lengths uniform in [32, 128]", rng.integers(32, s + 1, b)))
    rows = []
    for name, lengths in cases:
        mask = mask_of(lengths, s)
        method = nn.dispatch.attention_method(b, s)
        packed_method = nn.dispatch.packed_attention_method(D // HEADS, method, b)   # what the layers pick

        def packed():
            rows_, pk = K.pack(x, mask)
            return K.unpack(K.transformer_layer_varlen(rows_, pk, weights, HEADS, EPS, "gelu", packed_method), pk)
        t = int(mask.sum())
        real = [rng.standard_normal((t, D)).astype(np.float32), rng.standard_normal((t, FFN)).astype(np.float32)]
        gemms = [(real[0], weights.qkv_w), (real[0], weights.out_w), (real[0], weights.fc1_w), (real[1], weights.fc2_w)]
        bufs = [(a, w, np.empty((a.shape[0], w.shape[0]), np.float32)) for a, w in gemms]
        fns = {"padded": lambda: K.transformer_layer(x, weights, mask, HEADS, EPS, "gelu", method),
               "packed": packed, "floor": lambda: [np.matmul(a, w.T, out=o) for a, w, o in bufs]}
        if torch is not None:
            tl = _torch_layer(torch, "cpu", torch.float32)
            tx, pad = torch.from_numpy(x), torch.from_numpy(mask == 0)
            fns["torch"] = torch.inference_mode()(lambda: tl(tx, src_key_padding_mask=pad))
        best = interleaved(fns, repeat)
        row = {"device": "cpu", "workload": name, "b": b, "s": s, "padding": 1 - t / (b * s),
               "padded_ms": best["padded"], "packed_ms": best["packed"], "real_token_gemm_floor_ms": best["floor"],
               "packed_vs_padded": best["packed"] / best["padded"], "packed_vs_floor": best["packed"] / best["floor"]}
        if torch is not None:
            row["torch_ms"] = best["torch"]
            row["packed_vs_torch"] = best["packed"] / best["torch"]
        rows.append(row)
    return rows


def layer_cuda(b=32, s=128, dtypes=("float32", "float16"), seed=0):
    import cupy

    from .. import nn
    from ..kernels import cuda as K
    from ..kernels.weights import LayerWeights
    from .cuda import _cupy_time, _torch_time
    torch = torch_or_none()
    rows = []
    for dname in dtypes:
        dtype = np.dtype(dname)
        rng = np.random.default_rng(seed)
        weights = LayerWeights(*(cupy.asarray(a.astype(dtype)) for a in layer_params(rng, D, FFN)))
        x = cupy.asarray(rng.standard_normal((b, s, D)).astype(dtype))
        cases = [(f"padding {f:.0%}", lengths_for(rng, b, s, f)) for f in FRACTIONS]
        cases.append(("lengths uniform in [64, 128]", rng.integers(64, s + 1, b)))
        for name, lengths in cases:
            mask = mask_of(lengths, s)
            dmask = cupy.asarray(mask.astype(bool))    # bool: no value check, so no synchronisation
            method = nn.dispatch.attention_method(b, s)
            padded = _cupy_time(lambda: K.transformer_layer(x, weights, dmask, HEADS, EPS, "gelu", method))
            rows_, pk = K.pack(x, mask)            # offsets once, outside the timing: the layer itself
            t_layer = _cupy_time(lambda: K.transformer_layer_varlen(rows_, pk, weights, HEADS, EPS, "gelu", method))
            t_packed = _cupy_time(lambda: K.unpack(K.transformer_layer_varlen(K.pack(x, mask)[0], pk, weights, HEADS,
                                                                              EPS, "gelu", method), pk))
            row = {"device": "cuda", "dtype": dname, "workload": name, "b": b, "s": s,
                   "padding": 1 - int(mask.sum()) / (b * s), "padded_ms": padded, "packed_layer_ms": t_layer,
                   "packed_with_pack_unpack_ms": t_packed, "packed_vs_padded": t_packed / padded}
            try:   # one packing (fixed offsets): the packed layer captured once, replayed from a CUDA graph
                graph = K.CudaGraph(lambda r: K.transformer_layer_varlen(r, pk, weights, HEADS, EPS, "gelu", method),
                                    rows_)
                row["packed_layer_graph_ms"] = _cupy_time(graph.replay)
            except RuntimeError as e:
                row["packed_layer_graph_ms"] = repr(e)
            if torch is not None:
                tl = _torch_layer(torch, "cuda", getattr(torch, dname))
                tx = torch.as_tensor(x, device="cuda")
                pad = torch.as_tensor(mask == 0, device="cuda")
                with torch.inference_mode():
                    row["torch_ms"] = _torch_time(lambda: tl(tx, src_key_padding_mask=pad))
                row["packed_vs_torch"] = t_packed / row["torch_ms"]
            rows.append(row)
    return rows


# Modules whose docstrings make the corpus: text-heavy, present in every CPython build.
CORPUS_MODULES = ("argparse", "collections", "csv", "datetime", "decimal", "email.message", "functools",
                  "http.client", "inspect", "json", "logging", "os", "pathlib", "pickle", "random", "re",
                  "shutil", "socket", "statistics", "string", "subprocess", "tarfile", "textwrap", "threading",
                  "unittest", "urllib.parse", "zipfile")


def stdlib_sentences(n=2048):
    """Up to ``n`` English sentences from the standard library's docstrings, in a fixed order:
    whitespace collapsed, split after '.', '?' or '!', kept when 3 to 150 words long."""
    out = []
    for name in CORPUS_MODULES:
        mod = importlib.import_module(name)
        docs = [mod.__doc__] + [getattr(getattr(mod, a), "__doc__", None) for a in sorted(dir(mod))
                                if not a.startswith("_")]
        for doc in docs:
            if not isinstance(doc, str):
                continue
            for sent in re.split(r"(?<=[.?!])\s+", " ".join(doc.split())):
                if 3 <= len(sent.split()) <= 150 and sent not in out:
                    out.append(sent)
                    if len(out) == n:
                        return out
    return out


def encode(n=2048, batch_size=32, repeat=3, threads=None, device="cpu", dtype="float32"):
    """SentenceEncoder.encode of the corpus, packed and padded, and sentence-transformers' encode
    of the same sentences where it is installed (bench.minilm.torch_encoder), timed in turn for
    ``repeat`` rounds (`rounds`); the model in ``dtype`` on both sides. Reported: each side's best
    and median, and the median over rounds of the paired ratio."""
    import minifuse as mf
    from .. import nn
    from ..models import SentenceEncoder
    from .minilm import _set_threads, torch_encoder, torch_row
    texts = stdlib_sentences(n)
    words = [len(t.split()) for t in texts]
    if threads:
        _set_threads(threads)
    enc = SentenceEncoder.from_pretrained(device=device, dtype=getattr(mf, dtype))
    tokens = enc.tokenize(texts)["attention_mask"]

    def run(packing):
        with nn.packing(packing):
            return enc.encode(texts, batch_size=batch_size)
    fns = {"packed": lambda: run(True), "padded": lambda: run(False)}
    try:
        impl, fns["torch"] = torch_encoder(texts, batch_size, threads, None, device, dtype)
    except ImportError as e:
        impl = e
    times = rounds(fns, repeat)
    best = {name: min(ts) for name, ts in times.items()}
    row = {"impl": "minifuse", "device": device, "dtype": dtype, "corpus": "CPython docstrings", "sentences": len(texts),
           "words_min": min(words), "words_median": float(np.median(words)), "words_max": max(words),
           "tokens_per_sentence": float(tokens.sum(1).mean()), "batch_size": batch_size,
           "packed_s": best["packed"] / 1e3, "padded_s": best["padded"] / 1e3,
           "packed_median_s": statistics.median(times["packed"]) / 1e3,
           "packed_vs_padded": paired_ratio(times, "packed", "padded"),
           "packed_sentences_per_s": len(texts) / (best["packed"] / 1e3),
           "max_abs_diff_packed_vs_padded": float(np.abs(run(True) - run(False)).max())}
    rows = [row]
    if "torch" in times:
        rows.append(torch_row(impl, device, dtype, [t / 1e3 for t in times["torch"]]))
        row["packed_vs_torch"] = paired_ratio(times, "packed", "torch")
    else:
        rows.append({"impl": "torch", "skipped": str(impl)})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("layer", "encode"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--n", type=int, default=2048, help="encode: sentences")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="encode: the model's dtype")
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.n < 1 or args.batch_size < 1:
        ap.error(f"--repeat, --n and --batch-size must be at least 1, got {args.repeat}, {args.n}, {args.batch_size}")
    if args.what == "layer":
        rows = layer_cpu(repeat=args.repeat) if args.device == "cpu" else layer_cuda()
    else:
        rows = encode(args.n, args.batch_size, args.repeat, args.threads, args.device, args.dtype)
    for r in rows:
        print(json.dumps(r))
    return rows


if __name__ == "__main__":
    main()
