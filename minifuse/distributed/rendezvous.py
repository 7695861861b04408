"""How the processes find each other: who is rank r of N, and how rank 0's NCCL id reaches the rest.

Under an MPI launcher (``mpirun``/``mpiexec`` sets ``PMI_RANK``, ``OMPI_COMM_WORLD_RANK`` or
``PMIX_RANK``) MPI says it and broadcasts the id. Otherwise the environment of a torchrun-style
launcher (``minifuse.distributed.launch``) does: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, and rank 0
serves the id over TCP at ``MASTER_ADDR:MASTER_PORT`` (default 127.0.0.1:29500) to each other rank.
"""
from __future__ import annotations

import os
import socket
import time

__all__ = ["under_mpi", "from_mpi", "from_environment"]

_MPI_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def under_mpi():
    return any(v in os.environ for v in _MPI_RANK_VARIABLES)


def from_mpi(make_id):
    """(rank, world size, local rank, id): ranks from MPI, rank 0's ``make_id()`` broadcast."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError("init_process_group: started by an MPI launcher, but mpi4py is not installed "
                           "(pip install 'minifuse[distributed]'), or start the processes with "
                           "python -m minifuse.distributed.launch") from None
    comm = MPI.COMM_WORLD
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank = local.Get_rank()
    local.Free()
    uid = comm.bcast(make_id() if comm.Get_rank() == 0 else None, root=0)
    return comm.Get_rank(), comm.Get_size(), local_rank, uid


def _int_env(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"init_process_group: environment variable {name} must be an integer, got {value!r}") from None


def from_environment(make_id, rank=None, world_size=None, timeout_s=300.0):
    """(rank, world size, local rank, id) from RANK / WORLD_SIZE / LOCAL_RANK and a TCP exchange."""
    rank = _int_env("RANK", 0) if rank is None else rank
    world_size = _int_env("WORLD_SIZE", 1) if world_size is None else world_size
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"init_process_group: world_size must be a positive integer, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"init_process_group: rank must be in 0..{world_size - 1}, got {rank!r}")
    local_rank = _int_env("LOCAL_RANK", rank)
    if world_size == 1:
        return rank, world_size, local_rank, make_id()
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = _int_env("MASTER_PORT", 29500)
    payload = make_id() if rank == 0 else None
    uid = _serve(addr, port, payload, world_size - 1, timeout_s) if rank == 0 else \
        _fetch(addr, port, timeout_s)
    return rank, world_size, local_rank, uid


def _serve(addr, port, payload, peers, timeout_s):
    with socket.create_server((addr, port), reuse_port=False) as server:
        server.settimeout(timeout_s)
        for _ in range(peers):
            conn, _ = server.accept()
            with conn:
                conn.sendall(len(payload).to_bytes(4, "little") + payload)
    return payload


def _fetch(addr, port, timeout_s):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((addr, port), timeout=timeout_s) as conn:
                data = b""
                while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "little"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        raise ConnectionError("rank 0 closed the connection early")
                    data += chunk
                return data[4:]
        except (ConnectionRefusedError, ConnectionResetError, socket.timeout):
            if time.monotonic() > deadline:
                raise TimeoutError(f"init_process_group: no rank 0 at MASTER_ADDR:MASTER_PORT = {addr}:{port} "
                                   f"within {timeout_s} s") from None
            time.sleep(0.1)
