"""The benchmark command: ``python -m minifuse.bench WHAT [args...]``.

    cpu       fused CPU kernels vs their GEMM-only floor, unfused NumPy, torch eager
    training  training steps, fused vs unfused taped vs torch, bytes saved for backward
    graph     4-layer BERT-base encoder: eager unfused / eager fused / compiled; attention sweep
    minilm    all-MiniLM-L6-v2 sentence encoding vs sentence-transformers
    cuda      GPU kernels vs torch on an NVIDIA GPU
    packing   packed vs padded sequences: BERT-base layer padding sweep, MiniLM encode of a real corpus

For CPU numbers that compare with other libraries, run with the machine's OpenBLAS pinning
removed, in that command only:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m minifuse.bench cpu
Results and how to read them: BENCHMARKS.md.
"""
import runpy
import sys

MODULES = {"cpu": "minifuse.bench.kernels_cpu", "training": "minifuse.bench.training_cpu",
           "graph": "minifuse.bench.graph_cpu", "minilm": "minifuse.bench.minilm", "cuda": "minifuse.bench.cuda",
           "packing": "minifuse.bench.packing"}


def main(argv):
    if not argv or argv[0] not in MODULES:
        print(__doc__)
        return 2
    sys.argv = [MODULES[argv[0]]] + argv[1:]
    runpy.run_module(MODULES[argv[0]], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
