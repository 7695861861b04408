"""Running tests/distributed/ddp_worker.py under a launcher and reading its results."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from minifuse.distributed import is_available
from minifuse.distributed.launch import environment

WORKER = pathlib.Path(__file__).with_name("ddp_worker.py")
ROOT = WORKER.parents[2]


def mpiexec():
    """The mpiexec of this Python's environment (the mpich wheel puts it beside python), else PATH's."""
    here = pathlib.Path(sys.executable).with_name("mpiexec")
    return str(here) if here.exists() else shutil.which("mpiexec")


def run_worker(command, backend, tmp_path, timeout=900):
    """Run the worker under ``command`` (a launcher's argv prefix); returns its results dict."""
    out = tmp_path / f"{backend}.json"
    env = environment(threads=1)
    # Open MPI's mpiexec refuses to start as root (containers, CI images) unless told; MPICH ignores these
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("OMP_WAIT_POLICY", "passive")
    proc = subprocess.run(command + [str(WORKER), backend, str(out)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=tmp_path)
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"{' '.join(command)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def mpi_or_skip():
    if not is_available("mpi"):
        pytest.skip("mpi4py with an MPI library is not installed (pip install -e '.[distributed]')")
    launcher = mpiexec()
    if launcher is None:
        pytest.skip("no mpiexec: install an MPI implementation (the mpich wheel of the [distributed] extra)")
    return launcher
