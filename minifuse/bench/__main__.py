"""The benchmark command: ``python -m minifuse.bench WHAT [args...]``.

    cpu       fused CPU kernels vs their GEMM-only floor, unfused NumPy, torch eager
    training  training steps, fused vs unfused taped vs torch, bytes saved for backward
              (``training --device cuda``: the same steps on an NVIDIA GPU, float32 and autocast)
    graph     4-layer BERT-base encoder: eager unfused / eager fused / compiled; attention sweep
    minilm    all-MiniLM-L6-v2 sentence encoding vs sentence-transformers
    cuda      GPU kernels vs torch on an NVIDIA GPU
    ddp       data-parallel BERT-base layer training: MPI ranks on the CPU, NCCL on GPUs (--gpu)
    packing   packed vs padded sequences: BERT-base layer padding sweep, MiniLM encode of a real corpus

Results go to stdout; graph, minilm and training show a progress bar on stderr. If the
environment pins OpenBLAS to one CPU kernel (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE: some shared
machines set them), unset them in the benchmark's command for numbers comparable with other libraries:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m minifuse.bench cpu
Results, the machines and the exact commands: BENCHMARKS.md.
"""
import runpy
import sys

MODULES = {"cpu": "minifuse.bench.kernels_cpu", "training": "minifuse.bench.training_cpu",
           "graph": "minifuse.bench.graph_cpu", "minilm": "minifuse.bench.minilm", "cuda": "minifuse.bench.cuda",
           "ddp": "minifuse.bench.ddp",
           "packing": "minifuse.bench.packing"}


def main(argv):
    if not argv or argv[0] not in MODULES:
        print(__doc__)
        return 2
    module = MODULES[argv[0]]
    if argv[0] == "training" and "cuda" in argv[1:] and argv[argv.index("cuda") - 1] == "--device":
        module = "minifuse.bench.training_cuda"
    sys.argv = [module] + argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
