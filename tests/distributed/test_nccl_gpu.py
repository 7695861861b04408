"""The distributed cases with NCCL on every GPU of this machine (world size 1 on one GPU).

    python -m pytest tests/distributed/test_nccl_gpu.py        # on a machine with NVIDIA GPUs

One process per GPU, started by ``minifuse.distributed.launch`` (NVLink multicast off).
"""
import importlib
import sys

import pytest

from ddp_worker import CASES
from launching import run_worker


def gpu_count():
    try:
        importlib.import_module("cupy.cuda.nccl")
        return importlib.import_module("cupy").cuda.runtime.getDeviceCount()
    except Exception:
        return 0


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    n = gpu_count()
    if n == 0:
        pytest.skip("needs CuPy with NCCL and an NVIDIA GPU")
    return run_worker([sys.executable, "-m", "minifuse.distributed.launch", "--nproc", str(n)], "nccl",
                      tmp_path_factory.mktemp("nccl"))


@pytest.mark.parametrize("case", list(CASES))
def test_every_gpu_matches_one_process(results, case):
    assert results["world_size"] == gpu_count()
    r = results[case]
    assert r["error"] <= r["tol"], f"{case}: error {r['error']:.3g} > tolerance {r['tol']:.3g}"
