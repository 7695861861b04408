"""Fused vs unfused TransformerLayer while other processes keep cores busy.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m minifuse.bench.busy_cpu

A busy core is one spinning Python process (``while True: pass``); with ``busy`` of them
running, the layer is timed eager, fused (under ``mf.no_grad()``) and unfused
(``mf.nn.fusion(False)``), first with every thread (the default: Numba and OpenBLAS use all
cores, so one of their threads shares a core with a spinner) and then with
``mf.set_num_threads(cores - busy)``. The fused and the unfused call take turns, so both see the
same load (on a shared machine it changes within seconds); "load" is the 1-minute load average
after the row. Also part of ``python -m minifuse.bench cpu``.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from minifuse.bench.kernels_cpu import layer_params

WORKLOADS = (("BERT-base", 768, 12, 3072), ("MiniLM dims", 384, 12, 1536))


@contextlib.contextmanager
def busy_cores(n):
    """``n`` processes that each spin on a core until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)        # let them start spinning
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def layer_times(layer, x, mask, repeat):
    """Median ms of the fused and the unfused layer, called in turns after one warm-up each."""
    import minifuse as mf
    import minifuse.nn as nn
    from minifuse.progress import progress

    def unfused():
        with nn.fusion(False):
            layer(x, mask)

    calls = (lambda: layer(x, mask), unfused)
    times = ([], [])
    with mf.no_grad():
        for call in calls:
            call()
        for _ in progress(range(repeat), desc="timing", leave=False):
            for call, t in zip(calls, times):
                start = time.perf_counter()
                call()
                t.append(time.perf_counter() - start)
    return tuple(statistics.median(t) * 1e3 for t in times)


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def run(report=print, repeat=9, busy=1):
    import minifuse as mf
    import minifuse.nn as nn
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy = min(busy, cores - 1)
    rng = np.random.default_rng(0)
    layers = []
    for name, d, heads, f in WORKLOADS:
        layer = nn.TransformerLayer(d, heads, f).eval()
        for param, a in zip(layer.parameters(), layer_params(rng, d, f)):
            param.data[...] = a
        mask = np.ones((8, 128), np.int64)
        mask[::2, 100:] = 0
        layers.append((name, layer, mf.tensor(rng.standard_normal((8, 128, d)).astype(np.float32)), mf.tensor(mask)))
    default = mf.get_num_threads()
    report(f"TransformerLayer B=8 S=128 with {busy} of {cores} cores busy (each a spinning process); "
           f"fused = mf.no_grad(), unfused = mf.nn.fusion(False)")
    report(f"{'workload':22s} {'busy':>4s} {'threads':>7s} {'fused':>8s} {'unfused':>8s} {'unf/fused':>9s} {'load':>5s}")
    try:
        for spinners, threads in ((0, default), (busy, default), (busy, max(1, cores - busy))):
            mf.set_num_threads(threads)
            with busy_cores(spinners):
                for name, layer, x, mask in layers:
                    fused, unfused = layer_times(layer, x, mask, repeat)
                    report(f"{name:22s} {spinners:4d} {threads:7d} {fused:8.2f} {unfused:8.2f} {unfused / fused:9.2f} "
                           f"{load_average():>5s}")
    finally:
        mf.set_num_threads(default)
    report(f"ms, median of {repeat} runs each, fused and unfused in turns; threads = mf.set_num_threads "
           f"(Numba and OpenBLAS); load = 1-minute load average")


if __name__ == "__main__":
    run()
