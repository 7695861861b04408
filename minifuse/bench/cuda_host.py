"""Host (Python) cost per call of two launch-bound CUDA kernel entry points, and a cProfile of one.

    PYTHONPATH=. python3 minifuse/bench/cuda_host.py

fp16 `linear_act` 4096x768 -> 3072 (GPU time ~0.05 ms) and `transformer_layer` B=2 S=16 fp32:
400 (200) calls queued back to back, then one synchronize, best of 5 rounds, in us per call.
At these sizes the GPU waits for Python, so this is the Python cost. Compare two trees (before /
after a change) in one process on one machine: hosts differ by 10-30% in launch cost.
"""
import cProfile
import pstats
import time

import numpy as np


def per_call_us(fn, sync, reps=400, rounds=5):
    """Best over `rounds` of the mean wall time of `reps` queued calls (one sync at the end)."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t) / reps * 1e6)
    return best


def main():
    import cupy

    from minifuse.kernels import cuda as K
    sync = cupy.cuda.Device().synchronize
    rng = np.random.default_rng(0)
    n, k, m = 4096, 768, 3072
    x = cupy.asarray(rng.standard_normal((n, k)).astype(np.float16))
    w = cupy.asarray((rng.standard_normal((m, k)) / 30).astype(np.float16))
    b = cupy.asarray(rng.standard_normal(m).astype(np.float16))
    out = cupy.empty((n, m), cupy.float16)

    def linear():
        return K.linear_act(x, w, b, "gelu_tanh", out=out)

    xs = cupy.asarray(rng.standard_normal((2, 16, 768)).astype(np.float32))
    shapes = [(2304, 768), (2304,), (768, 768), (768,), (768,), (768,), (3072, 768), (3072,), (768, 3072),
              (768,), (768,), (768,)]
    weights = [cupy.asarray(rng.standard_normal(s).astype(np.float32) * 0.02) for s in shapes]
    mask = cupy.ones((2, 16), cupy.int32)
    try:
        from minifuse.kernels.weights import LayerWeights
        record = LayerWeights(*weights)

        def layer():
            return K.transformer_layer(xs, record, mask, 12, 1e-12, "gelu")
    except ImportError:   # a tree from before LayerWeights: the twelve arrays positionally
        def layer():
            return K.transformer_layer(xs, *weights, mask, 12, 1e-12, "gelu")

    for fn in (linear, layer):          # compile, fill the pools and the launch caches
        for _ in range(20):
            fn()
    sync()
    print(f"linear_act fp16 us/call (queued) {per_call_us(linear, sync):.1f}")
    print(f"transformer_layer B2 S16 fp32 us/call (queued) {per_call_us(layer, sync, 200):.1f}")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(300):
        linear()
    profile.disable()
    sync()
    pstats.Stats(profile).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    main()
