"""The data-parallel benchmark's worker runs under ``mpiexec -n 2`` and writes its record."""
import json
import os
import subprocess
import sys

from launching import ROOT, mpi_or_skip
from minifuse.distributed.launch import environment


def test_bench_worker_two_ranks(tmp_path):
    launcher = mpi_or_skip()
    out = tmp_path / "rec.json"
    env = environment(threads=1)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    cmd = [launcher, "-n", "2", sys.executable, "-m", "minifuse.bench.ddp", "--worker", "--backend", "mpi",
           "--batch", "2", "--repeat", "3", "--layer", "16", "2", "32", "8", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert rec["ranks"] == 2 and rec["buckets"] >= 1
    for key in ("ddp_ms", "local_ms", "allreduce_ms", "throughput_seq_per_s", "exposed_allreduce_share"):
        assert rec[key] is not None and rec[key] >= 0, key
