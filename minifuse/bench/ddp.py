"""Benchmark: data-parallel training of a BERT-base layer (d 768, 12 heads, 3072, S=128, float32,
``fused_training=True``), batch 32 per rank, forward + backward (with the gradient all-reduce).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m minifuse.bench ddp          # CPU, MPI
    python -m minifuse.bench ddp --gpu [--ranks 1 2 4 8] [--autocast] [--torch]       # GPUs, NCCL

CPU: one process of ``--ranks``-many threads on the whole batch (32 x ranks), then ``mpiexec -n 1``
and ``-n ranks`` with one thread per rank and 32 rows each. GPU: one process per GPU
(``minifuse.distributed.launch``, NVLink multicast off) for each world size in ``--ranks``.
Each rank times three steps round-robin (medians of ``--repeat``; ``minifuse.bench.training_cpu``'s
timer), each started on all ranks together (a barrier before the timer): ``ddp`` (the real step), ``local`` (the same step under ``no_sync()``: no communication) and
``allreduce`` (the gradient buckets all-reduced alone, after backward). So:

    throughput = ranks x 32 / ddp step;  scaling efficiency = throughput(N) / (N x throughput(1))
    exposed all-reduce share = (ddp - local) / allreduce: the step's growth through communication,
    as a share of the communication alone (0: all of it overlapped with backward; 1: none of it).
    ``local`` ends with a barrier, so that waiting for the slowest rank counts in both steps.
    ``end_wait_ms`` is what the host spent in the wait at the end of backward (on MPI it includes
    waiting for the other ranks to finish their backward; on NCCL the host does not block there).

With ``--torch`` (GPU) each world size also runs PyTorch's DistributedDataParallel on
``torch.nn.TransformerEncoderLayer`` with the same sizes and batch (its own launch, the same
launcher), and the summary gives minifuse's step over torch's.
Prints one JSON line per configuration and a summary line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

LAYER = dict(d_model=768, num_heads=12, intermediate_size=3072, seq=128)
PER_RANK = 32


def _sync():
    """Wait for the GPU (no-op on the CPU) so that a step's time includes its kernels."""
    if os.environ.get("MINIFUSE_BENCH_GPU"):
        import cupy
        cupy.cuda.Device().synchronize()


def worker(ns):
    """One rank (or the single process): build, time, write a JSON record from rank 0."""
    import numpy as np

    import minifuse as mf
    import minifuse.distributed as dist
    from minifuse import nn
    from minifuse.bench.training_cpu import _interleaved
    from minifuse.nn.parallel import DistributedDataParallel
    if ns.backend != "none":
        dist.init_process_group(ns.backend)
    device = str(dist.get_device()) if ns.backend != "none" else "cpu"
    rank, world = (dist.get_rank(), dist.get_world_size()) if ns.backend != "none" else (0, 1)
    mf.manual_seed(0)
    c = dict(zip(LAYER, ns.layer)) if ns.layer else LAYER
    layer = nn.TransformerLayer(c["d_model"], c["num_heads"], c["intermediate_size"], fused_training=True).to(device)
    rng = np.random.default_rng(rank)
    shape = (ns.batch, c["seq"], c["d_model"])
    x = mf.tensor(rng.standard_normal(shape, dtype=np.float32)).to(device)
    g = mf.tensor(rng.standard_normal(shape, dtype=np.float32)).to(device)
    model = DistributedDataParallel(layer) if ns.backend != "none" else layer
    params = list(layer.parameters())

    def forward():
        if ns.autocast:
            with mf.autocast(device.split(":")[0], dtype=mf.float16):
                return model(x).float()
        return model(x)

    def step():
        for p in params:
            p.grad = None
        forward().backward(g)
        _sync()

    waits = []

    def ddp_step():
        step()
        waits.append(model.reducer.last_wait_s)

    steps, names = [step], ["single"]
    if ns.backend != "none":
        def local():                # and a barrier: waiting for the slowest rank is in both steps
            with model.no_sync():
                step()
            dist.barrier()

        buffers = [b.xp.zeros(b.size, b.wire_dtype) for b in model.reducer.buckets]

        def allreduce():
            for w in [dist.all_reduce(b, dist.ReduceOp.AVG, async_op=True) for b in buffers]:
                w.wait()
            _sync()

        steps, names = [ddp_step, local, allreduce], ["ddp", "local", "allreduce"]
    align = (lambda: (_sync(), dist.barrier())) if ns.backend != "none" else None   # every rank starts together
    results = _interleaved(steps, ns.repeat, before=align)
    if ns.backend != "none":        # the all-reduce alone is short: time it more often than the steps
        results[2] = _interleaved([allreduce], 10 * ns.repeat, before=align)[0]
    rec = {"backend": ns.backend, "ranks": world, "threads": ns.threads, "batch_per_rank": ns.batch,
           "autocast": "float16" if ns.autocast else None, "device": device}
    for name, (median, times) in zip(names, results):
        rec[f"{name}_ms"] = round(median * 1e3, 1)
        rec[f"{name}_times_ms"] = [round(t * 1e3, 1) for t in times]
    step_s = results[0][0]
    rec["throughput_seq_per_s"] = round(world * ns.batch / step_s, 2)
    if ns.backend != "none":
        rec["buckets"] = len(model.reducer.buckets)
        rec["end_wait_ms"] = round(statistics.median(waits[2:]) * 1e3, 2)     # after the warm-up steps
        # one rank has nothing to exchange: its "all-reduce" is a copy, and the share would be noise
        rec["exposed_allreduce_share"] = None if world == 1 else \
            round(max(0.0, results[0][0] - results[1][0]) / max(results[2][0], 1e-9), 3)
    if rank == 0:
        with open(ns.out, "w") as f:
            json.dump(rec, f)
    if ns.backend != "none":
        dist.destroy_process_group()


def torch_worker(ns):
    """The same step in PyTorch DistributedDataParallel (NCCL, one GPU per process), for comparison."""
    import torch
    import torch.distributed as tdist
    from minifuse.bench.training_cpu import _interleaved
    tdist.init_process_group("nccl")
    rank, world = tdist.get_rank(), tdist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    torch.manual_seed(0)
    c = dict(zip(LAYER, ns.layer)) if ns.layer else LAYER
    layer = torch.nn.TransformerEncoderLayer(c["d_model"], c["num_heads"], c["intermediate_size"], dropout=0.0,
                                             activation="gelu", batch_first=True, layer_norm_eps=1e-12).cuda()
    model = torch.nn.parallel.DistributedDataParallel(layer)
    x = torch.randn(ns.batch, c["seq"], c["d_model"], device="cuda")
    g = torch.randn_like(x)

    def step():
        model.zero_grad(set_to_none=True)
        if ns.autocast:
            with torch.autocast("cuda", dtype=torch.float16):
                y = model(x)
            y.float().backward(g)
        else:
            model(x).backward(g)
        torch.cuda.synchronize()

    (median, times), = _interleaved([step], ns.repeat)
    rec = {"impl": "torch " + torch.__version__, "ranks": world, "batch_per_rank": ns.batch,
           "autocast": "float16" if ns.autocast else None, "ddp_ms": round(median * 1e3, 2),
           "ddp_times_ms": [round(t * 1e3, 2) for t in times],
           "throughput_seq_per_s": round(world * ns.batch / median, 2)}
    if rank == 0:
        with open(ns.out, "w") as f:
            json.dump(rec, f)
    tdist.destroy_process_group()


def _run(prefix, args, threads, gpu=False):
    """Run the worker module under ``prefix`` (a launcher's argv, ending where a module name goes)."""
    from minifuse.distributed.launch import environment
    env = environment(threads=threads)
    env.setdefault("OMP_WAIT_POLICY", "passive")
    env.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    if gpu:
        env["MINIFUSE_BENCH_GPU"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rec.json")
        cmd = prefix + ["minifuse.bench.ddp", "--worker", "--out", out, "--threads", str(threads)] + args
        subprocess.run(cmd, env=env, check=True)
        with open(out) as f:
            rec = json.load(f)
    print(json.dumps(rec), flush=True)
    return rec


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else "mpiexec"


def cpu(ns):
    """``--rounds`` rounds of: 1 process of n threads, 1 rank, n ranks; ratios paired per round."""
    n, rep = max(ns.ranks), ["--repeat", str(ns.repeat)]
    mpi = ["--backend", "mpi", "--batch", str(PER_RANK)] + rep
    rounds = []
    for _ in range(ns.rounds):
        single = _run([sys.executable, "-m"], ["--backend", "none", "--batch", str(PER_RANK * n)] + rep, threads=n)
        one = _run([_mpiexec(), "-n", "1", sys.executable, "-m"], mpi, threads=1)
        many = _run([_mpiexec(), "-n", str(n), sys.executable, "-m"], mpi, threads=1)
        rounds.append({"ddp_step_over_single_process_step": many["ddp_ms"] / single["single_ms"],
                       "scaling_efficiency": many["throughput_seq_per_s"] / (n * one["throughput_seq_per_s"]),
                       "exposed_allreduce_share": many["exposed_allreduce_share"]})
    summary = {"summary": "cpu", "ranks": n, "rounds": ns.rounds}
    for key in rounds[0]:
        values = [r[key] for r in rounds if r[key] is not None]     # no exposed share at 1 rank
        summary[key] = round(statistics.median(values), 3) if values else None
        summary[key + "_per_round"] = [round(v, 3) for v in values]
    print(json.dumps(summary), flush=True)


def gpu(ns):
    import cupy
    count = cupy.cuda.runtime.getDeviceCount()
    extra = ["--autocast"] if ns.autocast else []
    records, torch_records = {}, {}
    common = ["--batch", str(PER_RANK), "--repeat", str(ns.repeat)] + extra
    for n in sorted(set(k for k in ns.ranks if k <= count)):
        launcher = [sys.executable, "-m", "minifuse.distributed.launch", "--nproc", str(n), "--module"]
        records[n] = _run(launcher, ["--backend", "nccl"] + common, threads=4, gpu=True)
        if ns.torch:
            torch_records[n] = _run(launcher, ["--backend", "torch"] + common, threads=4, gpu=True)
    base = records[min(records)]["throughput_seq_per_s"] / min(records)
    for n, rec in records.items():
        summary = {"summary": "gpu", "ranks": n, "autocast": rec["autocast"], "ddp_ms": rec["ddp_ms"],
                   "throughput_seq_per_s": rec["throughput_seq_per_s"],
                   "scaling_efficiency": round(rec["throughput_seq_per_s"] / (n * base), 3),
                   "exposed_allreduce_share": rec["exposed_allreduce_share"]}
        if n in torch_records:
            summary["ddp_step_over_torch_ddp"] = round(rec["ddp_ms"] / torch_records[n]["ddp_ms"], 3)
        print(json.dumps(summary), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifuse.bench ddp", description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", action="store_true", help="NCCL on the GPUs instead of MPI on the CPU")
    p.add_argument("--ranks", type=int, nargs="+", default=None,
                   help="world sizes (CPU default: 2; GPU default: 1 2 4 8, those the machine has)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1, help="CPU: repeat the three launches, ratios paired per round")
    p.add_argument("--autocast", action="store_true", help="forward under mf.autocast float16")
    p.add_argument("--torch", action="store_true", help="GPU: also PyTorch DistributedDataParallel, same step")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="mpi", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=PER_RANK, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--layer", type=int, nargs=4, default=None, help=argparse.SUPPRESS)  # d, heads, ffn, seq: tests
    ns = p.parse_args(argv)
    if ns.worker:
        return torch_worker(ns) if ns.backend == "torch" else worker(ns)
    ns.ranks = ns.ranks or ([1, 2, 4, 8] if ns.gpu else [2])
    return gpu(ns) if ns.gpu else cpu(ns)


if __name__ == "__main__":
    main()
