"""The distributed test cases, run in every process of a launch:

    mpiexec -n 2 python tests/distributed/ddp_worker.py mpi OUT.json [CASE ...]
    python -m minifuse.distributed.launch --nproc N tests/distributed/ddp_worker.py nccl OUT.json

Each case trains or reduces on every rank and compares with what one process computes on the
whole batch (NumPy for the collectives); the largest relative error over the ranks (an all_reduce
MAX) and the case's tolerance go to OUT.json, written by rank 0. A test asserts them.
"""
import json
import sys
import time

import numpy as np

import minifuse as mf
import minifuse.distributed as dist
import minifuse.nn as nn
import minifuse.optim as optim
from minifuse.distributed import ReduceOp
from minifuse.nn.parallel import DistributedDataParallel
from minifuse.utils.data import DistributedSampler

DEVICE, BACKEND = "cpu", "mpi"      # set by main
TOL = {"float64": 1e-12, "float32": 1e-6}


def numpy_of(t):
    return t.detach().cpu().numpy() if isinstance(t, mf.Tensor) else (t.get() if hasattr(t, "get") else t)


def rel_error(got, want):
    got, want = np.asarray(numpy_of(got), np.float64), np.asarray(numpy_of(want), np.float64)
    return float(np.max(np.abs(got - want), initial=0.0) / max(1.0, np.max(np.abs(want), initial=0.0)))


def on_device(a):
    return mf.tensor(a).to(DEVICE)


def device_array(a):
    return on_device(a).data


# ---- collectives against NumPy --------------------------------------------------------------

def rank_input(r, dtype, shape=(3, 5)):
    a = np.random.default_rng(r).standard_normal(shape) * 4
    return a.round() if np.dtype(dtype).kind == "i" else a


def case_collectives():
    rank, world = dist.get_rank(), dist.get_world_size()
    reduce = {ReduceOp.SUM: np.sum, ReduceOp.AVG: np.mean, ReduceOp.MAX: np.max, ReduceOp.MIN: np.min}
    tols = {"float64": 1e-14, "float32": 1e-6, "float16": 1e-3 * world, "int64": 0.0}   # rounding, per addition
    err = 0.0                       # in units of each dtype's tolerance
    for dtype, tol in tols.items():
        for op, fn in reduce.items():
            if op is ReduceOp.AVG and dtype == "int64":
                continue
            want = fn(np.stack([rank_input(r, dtype).astype(dtype) for r in range(world)]).astype(np.float64), axis=0)
            a = device_array(rank_input(rank, dtype).astype(dtype))
            dist.all_reduce(a, op)
            t = on_device(rank_input(rank, dtype).astype(dtype).T)          # a Tensor, a non-contiguous view
            dist.all_reduce(t, op, async_op=True).wait()
            for e in (rel_error(a, want), rel_error(t, want.T)):
                err = max(err, e / tol if tol else (0.0 if e == 0 else np.inf))
    # a strided slice is reduced in place and the rest of the array is left alone
    a = device_array(rank_input(rank, "float64"))
    dist.all_reduce(a[:, ::2], ReduceOp.SUM)
    stack = np.stack([rank_input(r, "float64") for r in range(world)])
    want = rank_input(rank, "float64")
    want[:, ::2] = stack.sum(axis=0)[:, ::2]
    err = max(err, rel_error(a, want) / 1e-14)
    b = device_array(rank_input(rank, "float32").astype(np.float32))
    dist.broadcast(b, src=world - 1)
    err = max(err, np.inf if rel_error(b, rank_input(world - 1, "float32").astype(np.float32)) else 0.0)
    dist.barrier()
    return err, 1.0


def _reinit(**kwargs):
    """init_process_group with a bad argument, with the group left in place afterwards."""
    global_group = dist.process_group._group
    dist.process_group._group = None
    try:
        dist.init_process_group(BACKEND, **kwargs)
    finally:
        dist.process_group._group = global_group


def case_errors():
    """Bad arguments raise errors that name them, before anything is sent (0 when all do)."""
    world = dist.get_world_size()
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    bad = [
        (TypeError, "argument 'tensor' must be", lambda: dist.all_reduce([1.0, 2.0])),
        (TypeError, "argument 'op' must be a ReduceOp", lambda: dist.all_reduce(device_array(np.zeros(2)), "sum")),
        (TypeError, "AVG needs a floating-point", lambda: dist.all_reduce(device_array(np.zeros(2, np.int64)),
                                                                          ReduceOp.AVG)),
        (TypeError, "has dtype bool", lambda: dist.all_reduce(device_array(np.zeros(2, bool)))),
        (ValueError, "argument 'src' must be a rank", lambda: dist.broadcast(device_array(np.zeros(2)), src=world)),
        (RuntimeError, "already initialised", lambda: dist.init_process_group(BACKEND)),
        (ValueError, "timeout_s must be", lambda: _reinit(timeout_s=0)),
        (TypeError, "argument 'module'", lambda: DistributedDataParallel(object())),
        (ValueError, "bucket_cap_mb", lambda: DistributedDataParallel(nn.Linear(2, 2).to(DEVICE), bucket_cap_mb=0)),
    ]
    if DEVICE == "cpu":
        bad.append((ValueError, "read-only", lambda: dist.all_reduce(frozen)))
        bad.append((ValueError, "the MPI launcher made this process world_size",
                    lambda: _reinit(world_size=dist.get_world_size() + 1)))
    missed = 0
    for kind, words, call in bad:
        try:
            call()
            missed += 1
        except kind as e:
            missed += words not in str(e)
    return float(missed), 0.0


# ---- training: DDP on every rank's share == one process on the whole batch -------------------

def data(n, shape_in, shape_out, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + shape_in).astype(dtype), rng.standard_normal((n,) + shape_out).astype(dtype)


def mlp(dtype, fused):
    if fused:
        return nn.Sequential(nn.MLP(6, "swiglu", backend="fused", bias=True, dtype=dtype), nn.Linear(6, 3, dtype=dtype))
    return nn.Sequential(nn.Linear(6, 16, dtype=dtype), nn.GELU(), nn.Linear(16, 3, dtype=dtype))


def transformer(dtype, fused):
    return nn.Sequential(nn.TransformerLayer(8, 2, 16, dtype=dtype, fused_training=fused), nn.Linear(8, 2, dtype=dtype))


def make(build, seed):
    mf.manual_seed(seed)
    return build().to(DEVICE)


def sgd_step(opt, model, x, y, autocast=None):
    opt.zero_grad()
    if autocast:
        with mf.autocast(DEVICE.split(":")[0], dtype=autocast):
            out = model(x)
        loss = nn.MSELoss()(out.float(), y)
    else:
        loss = nn.MSELoss()(model(x), y)
    loss.backward()
    opt.step()


def compare(build, x, y, dtype, *, steps=3, bucket_cap_mb=25, autocast=None, tol=None):
    """Train DDP on this rank's rows of (x, y) and one replica on all rows; the parameters' error."""
    rank, world = dist.get_rank(), dist.get_world_size()
    ref = make(build, 100)
    model = DistributedDataParallel(make(build, 100 + rank), bucket_cap_mb=bucket_cap_mb)  # rank 0's weights win
    opts = [optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (ref, model)]
    for _ in range(steps):
        sgd_step(opts[0], ref, on_device(x), on_device(y), autocast)
        sgd_step(opts[1], model, on_device(x[rank::world]), on_device(y[rank::world]), autocast)
    err = max(rel_error(p, q) for p, q in zip(model.module.parameters(), ref.parameters()))
    return err, tol if tol is not None else TOL[dtype]


def case_mlp(dtype, fused=False):
    x, y = data(8, (6,), (3,), dtype)
    return compare(lambda: mlp(dtype, fused), x, y, dtype)


def case_transformer(dtype, fused):
    x, y = data(4, (5, 8), (5, 2), dtype)
    return compare(lambda: transformer(dtype, fused), x, y, dtype, bucket_cap_mb=1e-3)   # a bucket per ~1 KB


def case_autocast():
    x, y = data(8, (6,), (3,), "float32")
    return compare(lambda: mlp("float32", False), x, y, "float32", autocast=mf.float16, tol=2e-3)


def case_uneven_last_batch(dtype="float64"):
    """11 samples, 4 per rank and step: the sampler pads each rank to 6 (4 + a last batch of 2)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = data(11, (6,), (3,), dtype)
    shards = [list(DistributedSampler(range(11), world, r, shuffle=True, seed=5)) for r in range(world)]
    ref = make(lambda: mlp(dtype, False), 100)
    model = DistributedDataParallel(make(lambda: mlp(dtype, False), 100 + rank))
    opts = [optim.SGD(m.parameters(), lr=0.05) for m in (ref, model)]
    for start in range(0, len(shards[0]), 4):
        everyone = [i for s in shards for i in s[start:start + 4]]
        mine = shards[rank][start:start + 4]
        sgd_step(opts[0], ref, on_device(x[everyone]), on_device(y[everyone]))
        sgd_step(opts[1], model, on_device(x[mine]), on_device(y[mine]))
    return max(rel_error(p, q) for p, q in zip(model.module.parameters(), ref.parameters())), TOL[dtype]


def case_no_sync(dtype="float64"):
    """Three micro-batches: two backward passes under no_sync, the third syncs the accumulated sum."""
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = data(12, (6,), (3,), dtype)
    ref = make(lambda: mlp(dtype, False), 100)
    model = DistributedDataParallel(make(lambda: mlp(dtype, False), 100 + rank))
    local_err = 0.0
    for k in range(3):
        rows = slice(4 * k, 4 * k + 4)
        nn.MSELoss()(ref(on_device(x[rows])), on_device(y[rows])).backward()
        mine = x[rows][rank::world], y[rows][rank::world]
        if k < 2:
            with model.no_sync():
                nn.MSELoss()(model(on_device(mine[0])), on_device(mine[1])).backward()
            if k == 0:   # nothing was reduced: this rank's own gradient of its own rows
                lone = make(lambda: mlp(dtype, False), 100)
                nn.MSELoss()(lone(on_device(mine[0])), on_device(mine[1])).backward()
                local_err = max(rel_error(p.grad, q.grad) for p, q in zip(model.module.parameters(), lone.parameters()))
        else:
            nn.MSELoss()(model(on_device(mine[0])), on_device(mine[1])).backward()
    err = max(rel_error(p.grad, q.grad) for p, q in zip(model.module.parameters(), ref.parameters()))
    return max(err, local_err), TOL[dtype]


class _Stop(Exception):
    pass


def _stop(tensor):
    raise _Stop


def case_after_a_failed_backward(dtype="float64"):
    """A backward that raises half way (some buckets started, some not) leaves nothing behind:
    the next backward averages its own gradients."""
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = data(8, (6,), (3,), dtype)
    ref = make(lambda: mlp(dtype, False), 100)
    model = DistributedDataParallel(make(lambda: mlp(dtype, False), 100 + rank), bucket_cap_mb=1e-6)
    xs = on_device(x[rank::world]).requires_grad_()
    handle = xs.register_post_accumulate_grad_hook(_stop)      # fires before the first layer's weights'
    try:
        nn.MSELoss()(model(xs), on_device(y[rank::world])).backward()
        return np.inf, 0.0
    except _Stop:
        pass
    handle.remove()
    started = model.reducer._next
    model.zero_grad()
    nn.MSELoss()(model(on_device(x[rank::world])), on_device(y[rank::world])).backward()
    nn.MSELoss()(ref(on_device(x)), on_device(y)).backward()
    err = max(rel_error(p.grad, q.grad) for p, q in zip(model.module.parameters(), ref.parameters()))
    return err + (0.0 if 0 < started < len(model.reducer.buckets) else 1.0), TOL[dtype]


def case_buffers_from_rank0():
    """Wrapping broadcasts rank 0's parameters and buffers (a float and a boolean one) to every rank."""
    rank = dist.get_rank()
    module = make(lambda: mlp("float64", False), 100 + rank)
    module.register_buffer("scale", on_device(np.full(3, float(rank))))
    module.register_buffer("keep", on_device(np.arange(4) % 2 == rank % 2))
    DistributedDataParallel(module)
    want = make(lambda: mlp("float64", False), 100)
    err = max(rel_error(p, q) for p, q in zip(module.parameters(), want.parameters()))
    exact = (numpy_of(module.scale) == 0).all() and (numpy_of(module.keep) == (np.arange(4) % 2 == 0)).all()
    return err + (0.0 if exact else 1.0), 0.0


def case_buckets_start_during_backward():
    """One bucket per parameter: every bucket's all-reduce is started by a hook, inside the walk."""
    model = DistributedDataParallel(make(lambda: mlp("float64", False), 0), bucket_cap_mb=1e-6)
    x, y = data(4, (6,), (3,), "float64")
    nn.MSELoss()(model(on_device(x)), on_device(y)).backward()
    buckets = len(model.reducer.buckets)
    return float(buckets != 4 or model.reducer.last_started_early != buckets), 0.0


CASES = {
    "collectives": case_collectives,
    "errors": case_errors,
    "mlp_float64": lambda: case_mlp("float64"),
    "mlp_float32": lambda: case_mlp("float32"),
    "mlp_fused_float64": lambda: case_mlp("float64", fused=True),
    "transformer_float64": lambda: case_transformer("float64", False),
    "transformer_fused_float64": lambda: case_transformer("float64", True),
    "transformer_fused_float32": lambda: case_transformer("float32", True),
    "autocast_float16": case_autocast,
    "uneven_last_batch": case_uneven_last_batch,
    "no_sync": case_no_sync,
    "buckets_start_during_backward": case_buckets_start_during_backward,
    "buffers_from_rank0": case_buffers_from_rank0,
    "after_a_failed_backward": case_after_a_failed_backward,
}


def compile_once(names):
    """Rank 0 compiles the fused kernels (Numba caches them on disk) while the others sleep, so
    that on a fresh clone N processes do not compile the same kernels at once on a small machine."""
    if dist.get_rank() == 0:
        for name in names:
            if "fused" in name:
                dtype = name.rsplit("_", 1)[1]
                x = on_device(np.ones((2, 3, 8), dtype))
                for build in (lambda: mlp(dtype, True), lambda: transformer(dtype, True)):
                    model = build().to(DEVICE)
                    model(x[..., :6] if isinstance(model[0], nn.MLP) else x).sum().backward()
    done = dist.all_reduce(device_array(np.zeros(1)), async_op=True)
    while not done.is_completed():
        time.sleep(0.05)
    done.wait()


def main(argv):
    global DEVICE, BACKEND
    backend, out, names = argv[0], argv[1], argv[2:] or list(CASES)
    BACKEND = backend
    dist.init_process_group(backend)
    DEVICE = str(dist.get_device())
    compile_once(names)
    results = {}
    for name in names:
        t = time.perf_counter()
        err, tol = CASES[name]()
        worst = device_array(np.array([err]))
        dist.all_reduce(worst, ReduceOp.MAX)
        results[name] = {"error": float(numpy_of(worst)[0]), "tol": tol, "seconds": round(time.perf_counter() - t, 2)}
    results["world_size"] = dist.get_world_size()
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
