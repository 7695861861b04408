"""Data-parallel training on 2 MPI processes equals one process on the whole batch.

One ``mpiexec -n 2`` run executes every case of ddp_worker.py (process start-up and kernel loading
once); each test asserts one case's largest error over the ranks.
"""
import sys

import pytest

from ddp_worker import CASES
from launching import mpi_or_skip, run_worker


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    launcher = mpi_or_skip()
    return run_worker([launcher, "-n", "2", sys.executable], "mpi", tmp_path_factory.mktemp("mpi"))


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_match_one_process(results, case):
    assert results["world_size"] == 2
    r = results[case]
    assert r["error"] <= r["tol"], f"{case}: error {r['error']:.3g} > tolerance {r['tol']:.3g}"
