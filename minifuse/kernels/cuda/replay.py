"""Eager calls without Python per kernel: a composition's GPU work recorded once per argument
signature, then replayed with each new call's addresses.

An eager transformer layer is 13 steps of GPU work (7 kernels, 6 cuBLASLt GEMMs; `linear_act`
is one GEMM with its epilogue) that take a few microseconds each to launch, and several times
that in the Python that decides them: which kernel, which grid, which word format, which
buffers, each argument's shape and strides. For a given signature (the arguments' types,
shapes, strides, dtypes, alignments, the weights' addresses and the scalar arguments) every one
of those decisions comes out the same, and so does the argument validation. So:

- the first call with a signature runs the composition as written (`entry`);
- the second runs it again while a `Recording` is active: every launch (runtime.launch) and
  GEMM (cublaslt) is kept with its parameters, and every buffer the call
  allocates comes from an allocator that notes its address. Each address in a parameter is then
  written as (buffer, offset), (input, offset) or a constant (a weight);
- from the third call on, `Plan.run` allocates one arena for the buffers and an array for the
  output (or takes the call's ``out=`` array), writes the new addresses into the kept
  parameters and issues the same steps.

Each call still launches every kernel on the current stream (a replay is not a CUDA graph, and
can itself be captured into one). What a replay skips is only the Python that would decide the
same things again.

A recording is kept only if it is complete: any GPU work that did not go through the two
recorded paths (a CuPy copy or fill, cuBLAS through CuPy, numba's own launch) would be missing from the
replays. Paths that know they are not recorded say so (`Recording.refuse`); and before a plan is
kept it is replayed once into buffers filled with NaN bytes and must give the recorded call's
output bit for bit, which a skipped copy, fill or product would not. A signature whose recording
fails runs as written from then on.

Run as written: calls under the simulator, arguments the signature functions do not describe (a
host mask, a mask of numbers: its values are read every call; non-contiguous arrays) and calls
that raise. Nothing is recorded while a CUDA graph is being captured (the check synchronises); a
plan made before replays inside a capture like any other launches.
"""
import functools
import threading
from collections import OrderedDict

import numpy as np

from ...precision import get_float32_matmul_precision
from ..packing import Packing
from ..weights import LayerWeights
from . import packing
from .runtime import SIMULATOR, data_positions, recording_into

__all__ = ["Plan", "Recording", "replayable", "set_enabled", "is_enabled", "clear"]

ALIGN = 512          # CuPy's allocation alignment: arena offsets keep every buffer's alignment
PLANS_MAX = 256            # each plan keeps its steps' parameters (tens of kB)
_PLANS = OrderedDict()  # signature -> None (seen once), False (runs as written) or its Plan
REFUSED = OrderedDict()  # signature -> why its recording was refused
_UNSEEN = object()      # what _PLANS.get gives for a signature not seen yet
_STATE = threading.local()


def set_enabled(flag):
    """Replay recorded calls (True, the default) or run every call as written (False), for this
    thread (benchmarks compare the two)."""
    _STATE.enabled = bool(flag)


def is_enabled():
    return getattr(_STATE, "enabled", True)


def clear():
    """Forget every signature and plan."""
    _PLANS.clear()
    REFUSED.clear()


class Recording:
    """The steps of one call, each with its slots (position, source, offset): where its addresses
    come from, sources being the call's buffers (in allocation order) and, after them, its input
    arrays (indexed from the end, as the buffers are not all known when a step is kept). Any other
    address must lie in one of the `constants` (the arrays whose addresses the signature holds):
    memory the replays would not know otherwise refuses the recording."""

    def __init__(self, inputs, constants):
        self.inputs = [(a.data.ptr, a.nbytes) for a in inputs]
        self.constants = [(a.data.ptr, a.nbytes) for a in constants if a is not None]
        self.buffers = []           # (address, bytes) of each allocation, in order
        self.steps = []
        self.refused = None

    def malloc(self, size):
        """The allocator the recorded call runs with (cupy.cuda.using_allocator)."""
        import cupy
        memory = cupy.get_default_memory_pool().malloc(size)
        self.buffers.append((memory.ptr, size))
        return memory

    def refuse(self, why):
        self.refused = self.refused or why

    def step(self, fn, values, pointers):
        """Keep fn(values), the entries at positions `pointers` device addresses (or None / 0)."""
        self.steps.append(_Call(fn, values, self._slots(values, pointers)))

    def kernel(self, launcher, grid, block, kinds, params):
        """Keep a launch of runtime's `_Launcher` with its flat params."""
        self.steps.append(_Launch(launcher.prepared(grid, block, params), self._slots(params, data_positions(kinds))))

    def _slots(self, values, pointers):
        slots = []
        for i in pointers:
            if not values[i]:
                continue
            where = self._source(values[i])
            if where is not None:
                slots.append((i, *where))
            elif not any(_within(values[i], region) for region in self.constants):
                self.refuse("an address outside the call's buffers, inputs and weights")
        return tuple(slots)

    def _source(self, ptr):
        """(source, offset) of a device address: the newest buffer holding it (CuPy's pool may
        hand a freed buffer's memory to a later one), else an input, else None (a constant).
        An address one past an end (an empty view's) counts only where no region holds it:
        regions can touch."""
        for inclusive in (False, True):
            for i in reversed(range(len(self.buffers))):
                if _within(ptr, self.buffers[i], inclusive):
                    return i, ptr - self.buffers[i][0]
            for j, region in enumerate(self.inputs):
                if _within(ptr, region, inclusive):
                    return j - len(self.inputs), ptr - region[0]
            if any(_within(ptr, region, inclusive) for region in self.constants):
                return None
        return None


def _within(ptr, region, inclusive=True):
    """``ptr`` in the (start, bytes) region (its end too where ``inclusive``)."""
    start, size = region
    return start <= ptr < start + size + inclusive


class _Call:
    """A recorded step replayed as fn(values) on a copy of its values with the new addresses."""
    __slots__ = ("fn", "values", "slots")

    def __init__(self, fn, values, slots):
        self.fn, self.values, self.slots = fn, values, slots

    def run(self, sources):
        values = self.values.copy()
        for i, source, offset in self.slots:
            values[i] = sources[source] + offset
        self.fn(values)


class _Launch:
    """A recorded kernel launch replayed through its PreparedLaunch (runtime.py)."""
    __slots__ = ("prepared", "slots")

    def __init__(self, prepared, slots):
        self.prepared, self.slots = prepared, slots

    def run(self, sources):
        self.prepared.run([(i, sources[source] + offset) for i, source, offset in self.slots])


class Plan:
    """A recorded call replayable with new inputs: the steps, where each buffer sits in one arena
    and which buffer is the output (allocated on its own, so that it alone outlives the call), or
    which input it is (an ``out=`` argument, written in place)."""

    def __init__(self, recording, out):
        self.steps = recording.steps
        self.out_shape, self.out_dtype = out.shape, out.dtype
        self.out_index = next((i for i in reversed(range(len(recording.buffers)))
                               if recording.buffers[i][0] == out.data.ptr and recording.buffers[i][1] >= out.nbytes),
                              None)
        self.out_input = None if self.out_index is not None else next(
            (j for j, region in enumerate(recording.inputs) if region == (out.data.ptr, out.nbytes)), None)
        self.offsets, at = [], 0
        for i, (_, size) in enumerate(recording.buffers):
            self.offsets.append(at)
            if i != self.out_index:
                at += -(-size // ALIGN) * ALIGN
        self.arena_bytes = at
        self.lock = threading.Lock()        # the prepared launches' parameters are shared

    def run(self, inputs, poison=False):
        """The recorded call on new `inputs` (as many as recorded, same signature); returns its
        output. ``poison``: fill the buffers and the output with NaN bytes first (the check)."""
        import cupy
        out = cupy.empty(self.out_shape, self.out_dtype) if self.out_input is None else inputs[self.out_input]
        arena = cupy.empty(self.arena_bytes, np.uint8)
        if poison:
            arena.fill(255)
            out.view(np.uint8).fill(255)
        base = arena.data.ptr
        sources = [base + o for o in self.offsets]
        if self.out_index is not None:
            sources[self.out_index] = out.data.ptr
        sources += [a.data.ptr for a in inputs]
        with self.lock:
            for step in self.steps:
                step.run(sources)
        return out


def _record(entry, args, kwargs, key, inputs, constants):
    """Run entry(*args, **kwargs) with a Recording; returns (its output, a Plan or False). Why a
    recording was refused is kept in `REFUSED` (by signature)."""
    import cupy
    recording = Recording(inputs, constants)
    with recording_into(recording), cupy.cuda.using_allocator(recording.malloc):
        out = entry(*args, **kwargs)
    why = recording.refused
    if why is None and (type(out) is not cupy.ndarray or not out.flags.c_contiguous):
        why = "an output that is not one C-contiguous array"
    plan = None if why else Plan(recording, out)
    if plan is not None and plan.out_index is None and plan.out_input is None:
        why = "an output that is neither one of the call's buffers nor one of its inputs"
    if why is None:
        recorded = out if plan.out_input is None else out.copy()    # (the check rewrites an out= input)
        if not _same_bits(plan.run(inputs, poison=True), recorded):
            why = "a replay into NaN-filled buffers differs from the call"
            if plan.out_input is not None:
                out[...] = recorded                                  # the call's own result, back
    if why is not None:
        REFUSED[key] = why
        if len(REFUSED) > PLANS_MAX:
            REFUSED.popitem(last=False)
        return out, False
    return out, plan


def _same_bits(a, b):
    return bool((a.reshape(-1).view(np.uint8) == b.reshape(-1).view(np.uint8)).all())


def replayable(entry, signature):
    """`entry` with its calls replayed (the module docstring). signature(*args, **kwargs) gives
    (key, input arrays, constant arrays) for arguments it describes completely, else None (run as
    written); the key holds the constants' addresses."""
    if SIMULATOR:
        return entry

    @functools.wraps(entry)
    def call(*args, **kwargs):
        try:
            described = signature(*args, **kwargs) if is_enabled() else None
            plan = _PLANS.get(described[0], _UNSEEN) if described else None
        except TypeError:           # arguments entry refuses (with its own message), unhashable ones
            described = None
        if described is None:
            return entry(*args, **kwargs)
        key, inputs, constants = described
        if type(plan) is Plan:
            return plan.run(inputs)
        if plan is None and not _capturing():
            out, _PLANS[key] = _record(entry, args, kwargs, key, inputs, constants)
            return out
        out = entry(*args, **kwargs)
        if plan is _UNSEEN:
            _PLANS[key] = None
            if len(_PLANS) > PLANS_MAX:
                _PLANS.popitem(last=False)
        return out
    return call


def _capturing():
    import cupy
    return cupy.cuda.get_current_stream().is_capturing()


# ---- signatures ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _ndarray():
    import cupy
    return cupy.ndarray


def _input(a):
    """An input array's part of a signature (its address only modulo 256, the most any launch
    decision looks at), or None where it is not a C-contiguous CuPy array."""
    if type(a) is not _ndarray() or not a.flags.c_contiguous:
        return None
    return a.shape, a.dtype, a.data.ptr % 256, a.data.device_id


def _overlap(a, b):
    """The memory of arrays a and b (C-contiguous a) intersects: by address ranges."""
    start, end = b.data.ptr, b.data.ptr + max(b.nbytes, 1)
    if not b.flags.c_contiguous:            # a strided view: its span, from its extent
        start, end = _span(b)
    return a.data.ptr < end and start < a.data.ptr + max(a.nbytes, 1)


def _span(b):
    """(lowest, one past the highest) address a strided view b touches."""
    low = b.data.ptr + sum(min(0, (n - 1) * st) for n, st in zip(b.shape, b.strides) if n)
    high = b.data.ptr + sum(max(0, (n - 1) * st) for n, st in zip(b.shape, b.strides) if n) + b.itemsize
    return low, high


def _weights(weights):
    """The weights' part: each array's address, shape, strides and dtype (None stays None), or
    False where the record is not a LayerWeights of CuPy arrays."""
    if type(weights) is not LayerWeights:
        return False
    cupy_array, part = _ndarray(), []
    for w in weights:
        if w is None:
            part.append(None)
        elif type(w) is not cupy_array:
            return False
        else:
            part.append((w.data.ptr, w.shape, w.strides, w.dtype))
    return tuple(part)


def _scalars(*values):
    """The scalar arguments with their types: True == 1 == 1.0 as keys, but the checks refuse a
    bool where they take a number."""
    return tuple((type(v), v) for v in values)


def linear_signature(x, weight, bias, activation, out=None):
    """`linear_act`'s: x, an ``out=`` array (an input, written in place) or None, the weight and
    bias (constants), the activation and the float32 matmul precision."""
    cupy_array = _ndarray()
    xs = _input(x)
    if xs is None or type(weight) is not cupy_array or (bias is not None and type(bias) is not cupy_array):
        return None
    inputs = (x,)
    outs = None
    if out is not None:
        outs = _input(out)
        if outs is None or any(a is not None and _overlap(out, a) for a in (x, weight, bias)):
            return None             # (as written, the checks refuse an output that overlaps an input)
        inputs = (x, out)
    constants = (weight, bias)
    part = tuple(None if a is None else (a.data.ptr, a.shape, a.strides, a.dtype) for a in constants)
    key = ("linear", xs, outs, part, _scalars(activation), get_float32_matmul_precision())
    return key, inputs, constants


def layer_signature(x, weights, key_mask, num_heads, eps, activation="gelu", attention_method="loop"):
    """`transformer_layer`'s signature: x, a bool CuPy key mask or None, the weights, the scalars
    and the float32 matmul precision (which the GEMMs read)."""
    xs, ws = _input(x), _weights(weights)
    if xs is None or ws is False:
        return None
    inputs = (x,)
    ms = None
    if key_mask is not None:
        ms = _input(key_mask)
        if ms is None or key_mask.dtype != np.bool_:
            return None
        inputs = (x, key_mask)
    key = ("layer", xs, ms, ws, _scalars(num_heads, eps, activation, attention_method), get_float32_matmul_precision())
    return key, inputs, weights


def varlen_signature(packed, packing_, weights, num_heads, eps, activation="gelu", attention_method="loop"):
    """`transformer_layer_varlen`'s: the rows, the Packing (its host offsets decide the attention
    route and grids; its device offsets are inputs), the rest as `layer_signature`."""
    xs, ws = _input(packed), _weights(weights)
    if xs is None or ws is False or type(packing_) is not Packing or not isinstance(packing_.cu_seqlens, np.ndarray):
        return None
    offsets, index = _input(packing_.seqlens), _input(packing_.index)
    if offsets is None or index is None:
        return None
    key = ("varlen", xs, packing_.batch, packing_.seq, packing_.max_seqlen, packing_.cu_seqlens.tobytes(), offsets,
           index, ws, _scalars(num_heads, eps, activation, attention_method), get_float32_matmul_precision(),
           packing.PAD_WORK_RATIO)
    return key, (packed, packing_.seqlens, packing_.index), weights
