"""Start one process per GPU (or per rank) on this host, torchrun-style:

    python -m minifuse.distributed.launch --nproc 8 train.py [args ...]
    python -m minifuse.distributed.launch --nproc 8 --module package.train [args ...]

Each process gets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
(what ``init_process_group("nccl")`` reads) and ``environment()``'s settings, among them NVLink
multicast (NVLS) switched off for NCCL and the libraries beside it. If one process fails the others
are stopped; the exit code is the first failure's.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

__all__ = ["environment", "launch", "free_port"]

# NVLink SHARP / multicast off: the GPU machines run NCCL without it.
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def environment(base=None, threads=None):
    """A copy of ``base`` (default os.environ) for a launched process: multicast off, and with
    ``threads`` the thread pools of NumPy's BLAS and Numba limited to that many threads."""
    env = dict(os.environ if base is None else base)
    env.update(NO_MULTICAST)
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[name] = str(threads)
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc, argv, master_port=None, threads=None):
    """Run ``python argv...`` ``nproc`` times with ranks 0..nproc-1; returns the exit code."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"launch: nproc must be a positive integer, got {nproc!r}")
    port = str(master_port or free_port())
    procs = []
    for rank in range(nproc):
        env = environment(threads=threads)
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable] + list(argv), env=env))
    code = 0
    while procs:
        for p in list(procs):
            rc = p.poll()
            if rc is None:
                continue
            procs.remove(p)
            if rc != 0 and code == 0:
                code = rc
                for other in procs:
                    other.terminate()
        time.sleep(0.05)
    return code


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minifuse.distributed.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, required=True, help="processes to start (one per GPU)")
    parser.add_argument("--master-port", type=int, default=None, help="rank 0's rendezvous port (default: a free one)")
    parser.add_argument("--threads", type=int, default=None, help="BLAS/Numba threads per process")
    parser.add_argument("--module", action="store_true", help="script is a module name, run as python -m")
    parser.add_argument("script", help="the Python script (or with --module, module) each process runs")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    return launch(ns.nproc, (["-m"] if ns.module else []) + [ns.script] + ns.args, ns.master_port, ns.threads)


if __name__ == "__main__":
    sys.exit(main())
