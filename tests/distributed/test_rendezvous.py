"""The NCCL rendezvous and the launcher without GPUs: rank 0 serves an id over TCP, the other
ranks fetch it; the launcher gives each process its rank and no NVLink multicast."""
import json
import threading

import pytest

from minifuse.distributed import is_available, rendezvous
from minifuse.distributed.launch import NO_MULTICAST, environment, free_port, launch
from minifuse.distributed.nccl import _id_from_bytes, _id_to_bytes


def test_every_rank_gets_rank_zeros_id(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("LOCAL_RANK", "0")
    uid, results = bytes(range(128)), {}

    def rank(r):
        results[r] = rendezvous.from_environment(lambda: uid if r == 0 else b"wrong", r, 3, timeout_s=20)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (2, 1, 0)]   # peers may come first
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {r: res[3] for r, res in results.items()} == {0: uid, 1: uid, 2: uid}
    assert [results[r][:2] for r in range(3)] == [(0, 3), (1, 3), (2, 3)]


def test_environment_defaults_and_errors(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert rendezvous.from_environment(lambda: b"id") == (0, 1, 0, b"id")   # one process: no exchange
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer"):
        rendezvous.from_environment(lambda: b"id")
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        rendezvous.from_environment(lambda: b"id", rank=2, world_size=2)


def test_nccl_id_round_trips_through_bytes():
    uid = tuple(range(-64, 64))          # CuPy's id: 128 signed chars
    assert _id_from_bytes(_id_to_bytes(uid)) == uid


def test_launched_processes_run_without_nvlink_multicast():
    env = environment({"PATH": "/bin"}, threads=1)
    assert all(env[k] == v for k, v in NO_MULTICAST.items())
    assert env["NUMBA_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "1"


def test_launch_starts_ranks_and_reports_the_first_failure(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(
        "import json, os, sys\n"
        "keys = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_PORT', 'NCCL_NVLS_ENABLE')\n"
        "json.dump({k: os.environ[k] for k in keys}, open(sys.argv[1] + os.environ['RANK'], 'w'))\n"
        "sys.exit(int(sys.argv[2]) if os.environ['RANK'] == '1' else 0)\n")
    out = str(tmp_path / "env")
    assert launch(2, [str(script), out, "0"]) == 0
    envs = [json.load(open(out + str(r))) for r in range(2)]
    assert [(e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"], e["NCCL_NVLS_ENABLE"]) for e in envs] == \
        [("0", "0", "2", "0"), ("1", "1", "2", "0")]
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
    assert launch(2, [str(script), out, "3"]) == 3
    with pytest.raises(ValueError, match="nproc"):
        launch(0, [str(script)])


def test_mpi_backend_refuses_processes_that_mpi_did_not_start(tmp_path):
    if not is_available("mpi"):
        pytest.skip("mpi4py with an MPI library is not installed (pip install -e '.[distributed]')")
    script = tmp_path / "init.py"
    script.write_text(
        "import sys\n"
        "import minifuse.distributed as dist\n"
        "try:\n"
        "    dist.init_process_group('mpi')\n"
        "except ValueError as e:\n"
        "    sys.exit(0 if 'start MPI ranks with mpiexec' in str(e) else 2)\n"
        "sys.exit(1)\n")
    assert launch(2, [str(script)]) == 0
