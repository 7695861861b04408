"""Tensors that no gradient can reach: the outputs of a compiled module (``mf.compile`` runs a
graph for inference and records no tape) and what is computed from them with no gradient
recorded. ``backward`` from one of them says so, instead of blaming the input's requires_grad."""
import weakref

# id(tensor) -> a weak reference to it (a WeakSet would compare tensors with their elementwise ==)
_OUTPUTS = {}

NO_GRAPH = ("backward: this tensor was computed from the output of a compiled module (mf.compile), "
            "which runs for inference only and records no gradients; to train, call the module itself")


def _forget(key, ref):
    if _OUTPUTS.get(key) is ref:
        del _OUTPUTS[key]


def mark(out):
    """Mark `out` (a Tensor or a tuple of them) as inference-only; returns it."""
    for t in out if isinstance(out, tuple) else (out,):
        key = id(t)
        _OUTPUTS[key] = weakref.ref(t, lambda ref, key=key: _forget(key, ref))
    return out


def is_marked(t):
    ref = _OUTPUTS.get(id(t))
    return ref is not None and ref() is t


def any_marked(tensors):
    """Whether one of `tensors` ((index, Tensor) pairs) is inference-only (cheap when none is)."""
    return bool(_OUTPUTS) and any(is_marked(t) for _, t in tensors)
