"""all_reduce, broadcast, barrier: checked here, then handed to the engine without blocking.

Each collective works in place on a Tensor's array or on a raw NumPy / CuPy array. The engine
gets a contiguous buffer of a dtype it reduces (``group.wire_dtype``): the array itself when it
is one, else a staged copy (a strided view; float16 and bfloat16 through float32 on MPI, which has
no half types) that ``wait`` copies back. ``async_op=True`` returns the ``Work`` at once, so that
communication overlaps what the caller does next (``DistributedDataParallel`` does this).
"""
from __future__ import annotations

from ..device import device_of
from ..dtypes import is_floating
from .process_group import ReduceOp, current

__all__ = ["Work", "all_reduce", "broadcast", "barrier"]


class Work:
    """A collective in flight. ``wait()`` blocks until its result is in the array (on CUDA: until
    the current stream is ordered after it) and returns None."""

    def __init__(self, group, handle, finish=None):
        self._group, self._handle, self._finish, self._done = group, handle, finish, False

    def is_completed(self):
        return self._done or self._group.test(self._handle)

    def wait(self):
        if not self._done:
            self._group.wait(self._handle)
            if self._finish is not None:
                self._finish()
            self._done = True


def _array(caller, tensor, group):
    from ..tensor import Tensor
    array = tensor.data if isinstance(tensor, Tensor) else tensor
    kind = "CuPy" if type(array).__module__.startswith("cupy") else "NumPy"
    if not group.accepts(array):
        want = f"an array or Tensor on this rank's device, {group.device}"
        got = f"a {kind} array on {device_of(array)}" if hasattr(array, "dtype") else type(array).__name__
        raise TypeError(f"{caller}: argument 'tensor' must be {want} for the {group.name!r} backend, got {got}")
    if kind == "NumPy" and not array.flags.writeable:
        raise ValueError(f"{caller}: argument 'tensor' is a read-only array; the result is written in place")
    if group.wire_dtype(array.dtype) is None:
        raise TypeError(f"{caller}: argument 'tensor' has dtype {array.dtype}; the {group.name!r} backend "
                        f"reduces {', '.join(group.DTYPES)}")
    return array


def _staged(array, group):
    """(buffer the engine works on, whether wait must copy it back into ``array``)."""
    wire = group.wire_dtype(array.dtype)
    if wire == array.dtype and array.flags.c_contiguous:
        return array, False
    return group.xp.ascontiguousarray(array, dtype=wire), True


def all_reduce(tensor, op=ReduceOp.SUM, async_op=False):
    """Combine ``tensor`` across all ranks with ``op`` (SUM, AVG, MAX, MIN); every rank gets the
    result in place. Returns a ``Work`` when ``async_op``, else None."""
    group = current("all_reduce")
    array = _array("all_reduce", tensor, group)
    if not isinstance(op, ReduceOp):
        raise TypeError(f"all_reduce: argument 'op' must be a ReduceOp (SUM, AVG, MAX, MIN), got {op!r}")
    if op is ReduceOp.AVG and not is_floating(array.dtype):
        raise TypeError(f"all_reduce: ReduceOp.AVG needs a floating-point tensor, got {array.dtype}")
    buf, copy_back = _staged(array, group)
    handle = group.all_reduce(buf, ReduceOp.SUM if op is ReduceOp.AVG else op)

    def finish():
        if op is ReduceOp.AVG:
            buf[...] /= group.world_size
        if copy_back:
            array[...] = buf

    work = Work(group, handle, finish)
    return work if async_op else work.wait()


def broadcast(tensor, src=0, async_op=False):
    """Give every rank rank ``src``'s ``tensor``, in place. Returns a ``Work`` when ``async_op``."""
    group = current("broadcast")
    array = _array("broadcast", tensor, group)
    if not isinstance(src, int) or not 0 <= src < group.world_size:
        raise ValueError(f"broadcast: argument 'src' must be a rank in 0..{group.world_size - 1}, got {src!r}")
    buf, copy_back = _staged(array, group)
    handle = group.broadcast(buf, src)

    def finish():
        if copy_back:
            array[...] = buf

    work = Work(group, handle, finish)
    return work if async_op else work.wait()


def barrier():
    """Return once every rank has called ``barrier``."""
    current("barrier").barrier()
