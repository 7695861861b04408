"""A fused training node's forward and backward on a GPU, each captured once into a CUDA graph
per signature and replayed on the later calls: one launch each, in place of the node's
kernels, GEMMs and copies with the Python that decides them.

Why: a BERT-base layer's training step under ``mf.autocast`` is about a hundred pieces of GPU
work of a few microseconds each, and each takes longer to decide and launch in Python than the
GPU takes to run it; the eager step waits for the host (docs/fused-training.md measures it).
``mf.cuda.make_graphed_callables`` removes that for a loop written for it; this does the same
for the ordinary eager call of ``fusions.fused_transformer_layer`` (``nn.TransformerLayer``
with ``fused_training=True``), with nothing for the caller to do.

How, for one signature (what the node's kernels depend on: shapes, dtypes, the weights'
addresses, which gradients are wanted, the scalars, the autocast dtype and the float32 matmul
precision; the caller makes it):
- the first call runs as written;
- the second runs as written too, and is then captured on copies of its inputs (static
  buffers of the signature's own memory pool) and replayed once: the replay must give the
  as-written output bit for bit. Its backward likewise: as written, then captured on a copy of
  the output gradient, replayed, compared with every gradient bit for bit. A capture that fails
  or differs leaves the signature running as written from then on (``REFUSED`` says why);
- later calls copy their inputs into the static buffers and launch the forward graph, and
  return a copy of its output; their backward copies the output gradient in, launches the
  backward graph and returns the gradients as views of one fresh copy of the graph's gradient
  block.

A captured signature is replayed where that pays: when the GPU has done the work queued before
the signature's previous call (the host is less than a step ahead of it, so the GPU waits for
the host's Python). When the host is further ahead, the GPU is what bounds the loop (a float32
step of large GEMMs), the replay would only add its copies, and the call runs as written.

A signature's buffers hold one call's saved activations. A call takes them (its ``lease``)
from its forward until the engine frees its saved arrays after backward (or the output is
dropped); a call of the same signature while they are taken runs as written (two forwards
before their backwards, ``retain_graph``). The weights are read where they are (optimizers
update them in place; a new array is another signature). Each signature's pool keeps the peak
memory of one forward and backward of the node while it is kept; at most ``PLANS_MAX``
signatures are (the least recently used go). Not used: on the CPU, under the CUDA simulator,
inside a CUDA-graph capture (``mf.cuda.graph``, ``make_graphed_callables``), while a graph pass
traces, and after ``set_enabled(False)`` (this thread).
"""
import threading
import weakref
from collections import OrderedDict

import numpy as np

__all__ = ["forward", "backward", "signature", "device_array", "kept", "set_enabled", "is_enabled", "clear",
           "REFUSED", "PLANS_MAX"]

PLANS_MAX = 64              # each keeps its own memory pool: one node's activations and temporaries
CAPTURE_AT = 2              # the call of a signature that is captured (earlier ones run as written)
ALIGN = 256                 # the gradient block's offsets: CuPy's and the kernels' alignment
_PLANS = OrderedDict()      # signature -> _Plan
REFUSED = OrderedDict()     # signature -> why it runs as written
_LOCK = threading.Lock()
_STATE = threading.local()


def set_enabled(flag):
    """Replay captured nodes (True, the default) or run every call as written (False), for this
    thread (benchmarks and tests compare the two)."""
    _STATE.enabled = bool(flag)


def is_enabled():
    return getattr(_STATE, "enabled", True)


def clear():
    """Forget every signature, its graphs and its memory."""
    with _LOCK:
        _PLANS.clear()
        REFUSED.clear()


def signature(name, x, weights, need, *rest):
    """A node's signature for `forward`, or None where it is not replayed: unless ``x`` and every
    weight are CuPy arrays of a dtype whose GEMMs a graph captures (not float64), a gradient is
    wanted and recorded, no graph pass traces and the call is not inside another node's forward
    or backward (the outer node is the one replayed). ``weights``: arrays or None, read where
    they are (their addresses are part of the signature); ``rest``: the scalars the kernels
    depend on."""
    from ..autograd.function import active_tracer
    from ..autograd.grad_mode import is_grad_enabled
    from ..precision import get_float32_matmul_precision
    if getattr(_STATE, "depth", 0) or not device_array(x) or x.dtype == np.float64 or not any(need) \
            or not is_grad_enabled() or active_tracer() is not None \
            or any(w is not None and not device_array(w) for w in weights):
        return None
    ws = tuple(None if w is None else (w.data.ptr, w.shape, w.strides, w.dtype) for w in weights)
    return (name, x.shape, x.strides, x.dtype, x.data.device_id, ws, need, rest, get_float32_matmul_precision())


def device_array(a):
    """A CuPy array (a GPU's: the simulator's CUDA arrays are NumPy's)."""
    return type(a).__module__.partition(".")[0] == "cupy"


class _Plan:
    """One signature: how often it was called, its graphs and static buffers once captured."""

    def __init__(self):
        import cupy
        self.calls = 0
        self.pool = cupy.cuda.MemoryPool()
        self.inputs = self.out = self.aux = None     # the forward graph's buffers
        self.forward_graph = self.backward_graph = None
        self.grad_in = self.block = self.layout = None
        self.lease = None            # weakref to the state of the call whose activations the buffers hold
        self.marks, self.turn = None, 0     # events recorded at the calls' starts (`_gpu_caught_up`)
        self.replays = 0

    def busy(self):
        return self.lease is not None and self.lease() is not None

    def static(self, arrays):
        """C-contiguous copies of ``arrays`` in this plan's pool (the graph's input buffers)."""
        import cupy
        with cupy.cuda.using_allocator(self.pool.malloc):
            copies = tuple(cupy.empty(a.shape, a.dtype) for a in arrays)
        for c, a in zip(copies, arrays):
            c[...] = a
        return copies


class _Written:
    """A call run as written: backward runs as written on its saved state."""
    __slots__ = ("aux",)

    def __init__(self, aux):
        self.aux = aux


class _Verify:
    """The call whose forward was captured: its as-written state, and the plan it holds."""
    __slots__ = ("aux", "plan", "__weakref__")

    def __init__(self, aux, plan):
        self.aux, self.plan = aux, plan


class _Replayed:
    """A call replayed from the plan's forward graph; its activations are the plan's buffers."""
    __slots__ = ("plan", "__weakref__")

    def __init__(self, plan):
        self.plan = plan


def forward(key, run, inputs):
    """(out, state) of ``run(*inputs)`` -> (out, aux), as written or replayed; ``state`` is what
    `backward` takes. ``key``: the call's signature (hashable), or None to run as written;
    ``inputs``: the call's arrays that change from call to call (C-contiguous or not), the
    ones ``run`` reads besides the weights named in ``key``."""
    plan = _take(key)
    if plan is None:
        out, aux = _inside(run, *inputs)
        return out, _Written(aux)
    if plan.backward_graph is not None:
        if not _gpu_caught_up(plan):
            out, aux = _inside(run, *inputs)
            return out, _Written(aux)
        plan.replays += 1
        for static, a in zip(plan.inputs, inputs):
            static[...] = a
        plan.forward_graph.launch(stream=_stream())
        state = _Replayed(plan)
        plan.lease = weakref.ref(state)
        return plan.out.copy(), state
    out, aux = _inside(run, *inputs)       # (a captured forward whose call's backward never ran: checked again)
    try:
        if plan.forward_graph is None:
            plan.inputs = plan.static(inputs)
            plan.forward_graph, (plan.out, plan.aux) = _capture(plan, lambda: _inside(run, *plan.inputs))
        else:
            for static, a in zip(plan.inputs, inputs):
                static[...] = a
        plan.forward_graph.launch(stream=_stream())
        if not _same_bits(plan.out, out):
            raise _Differs("the replayed forward differs from the call")
    except (RuntimeError, _Differs) as e:
        _refuse(key, f"forward: {e}")
        return out, _Written(aux)
    state = _Verify(aux, plan)
    plan.lease = weakref.ref(state)
    return out, state


def backward(state, back, g):
    """The gradients ``back(aux, g)`` (a tuple of arrays and None) for the call of ``state``."""
    if type(state) is _Written:
        return _inside(back, state.aux, g)
    plan = state.plan
    if type(state) is _Replayed:
        plan.grad_in[...] = g
        plan.backward_graph.launch(stream=_stream())
        return _views(plan.block.copy(), plan.layout)
    grads = _inside(back, state.aux, g)
    if plan.backward_graph is not None or _refused(plan):      # (a second backward of the call)
        return grads
    try:
        (plan.grad_in,) = plan.static((g,))
        graph, (plan.block, plan.layout) = _capture(plan, lambda: _gathered(_inside(back, plan.aux, plan.grad_in)))
        graph.launch(stream=_stream())
        replayed = _views(plan.block, plan.layout)
        if any((a is None) != (b is None) or (a is not None and not _same_bits(a, b))
               for a, b in zip(replayed, grads)):
            raise _Differs("the replayed backward differs from the call")
    except (RuntimeError, _Differs) as e:
        _refuse(_key_of(plan), f"backward: {e}")
        return grads
    plan.backward_graph = graph
    return grads


def _gpu_caught_up(plan):
    """Whether the GPU has reached the start of this signature's previous call (an event recorded
    there has completed); records this call's start."""
    import cupy
    if plan.marks is None:
        plan.marks = [cupy.cuda.Event(block=False, disable_timing=True) for _ in range(2)]
    previous, this = plan.marks[plan.turn], plan.marks[1 - plan.turn]
    caught_up = previous.done           # (True for an event never recorded)
    this.record(_stream())
    plan.turn = 1 - plan.turn
    return caught_up


def kept(state):
    """What the call of ``state`` keeps for backward (``run``'s aux; replayed: the plan's buffers)."""
    return state.plan.aux if type(state) is _Replayed else state.aux


def _inside(fn, *args):
    """fn(*args) as a node's own work: the nodes it calls run as written (`signature`)."""
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        return fn(*args)
    finally:
        _STATE.depth -= 1


class _Differs(Exception):
    pass


def _take(key):
    """The plan to run ``key``'s call from (captured, or to capture now), or None: as written."""
    if key is None or not is_enabled() or _stream().is_capturing():
        return None
    with _LOCK:
        if key in REFUSED:
            return None
        plan = _PLANS.get(key)
        if plan is None:
            plan = _PLANS[key] = _Plan()
            while len(_PLANS) > PLANS_MAX:
                _PLANS.popitem(last=False)
        else:
            _PLANS.move_to_end(key)
        plan.calls += 1
        if plan.busy() or plan.calls < CAPTURE_AT:
            return None
        plan.lease = None
        return plan


def _refuse(key, why):
    with _LOCK:
        _PLANS.pop(key, None)
        REFUSED[key] = why
        while len(REFUSED) > PLANS_MAX:
            REFUSED.popitem(last=False)


def _refused(plan):
    return _key_of(plan) is None


def _key_of(plan):
    with _LOCK:
        return next((k for k, p in _PLANS.items() if p is plan), None)


def _capture(plan, fn):
    """(graph, fn()) with fn's GPU work captured (not run) from buffers of the plan's pool."""
    from ..kernels.cuda.graphs import recording
    with recording(None, caller="node graph", pool=plan.pool) as box:
        result = fn()
    return box["graph"], result


def _gathered(grads):
    """The non-None gradients copied into one new byte block: (block, layout), the layout a
    (offset, shape, dtype) or None per gradient."""
    import cupy
    layout, at = [], 0
    for g in grads:
        if g is None:
            layout.append(None)
            continue
        layout.append((at, g.shape, g.dtype))
        at += -(-g.nbytes // ALIGN) * ALIGN
    block = cupy.empty(max(at, 1), np.uint8)
    for g, where in zip(grads, _views(block, layout)):
        if g is not None:
            where[...] = g
    return block, tuple(layout)


def _views(block, layout):
    out = []
    for entry in layout:
        if entry is None:
            out.append(None)
            continue
        at, shape, dtype = entry
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        out.append(block[at:at + n].view(dtype).reshape(shape))
    return tuple(out)


def _same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        (a.reshape(-1).view(np.uint8) == b.reshape(-1).view(np.uint8)).all())


def _stream():
    import cupy
    return cupy.cuda.get_current_stream()
