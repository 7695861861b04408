"""``mf.save`` / ``mf.load``: state dicts (and optimizer state) to and from safetensors files.

A flat ``{name: Tensor or array}`` is stored as plain safetensors tensors under those names, so
other tools read it. Anything else (an optimizer's ``state_dict()``: nested dicts with integer
keys, lists, tuples, numbers, strings, None) is stored as its tensors plus the structure as JSON
in the file's metadata, and comes back equal: the same containers, keys and Python numbers (JSON
writes floats with ``repr``, so they round-trip exactly); arrays bit-exact as Tensors, NumPy
scalars as NumPy scalars. The file is written atomically (``safetensors_file.atomic_write``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

from . import safetensors_file as sf

__all__ = ["save", "load"]

STRUCTURE = "minifuse.structure"   # the metadata key of a nested object's JSON


def save(obj, path):
    """Write ``obj`` to ``path``: a state dict ``{name: Tensor or array}``, a Module (its
    ``state_dict()``), or nested dicts/lists/tuples of tensors, arrays, numbers, strings and None
    (``optimizer.state_dict()``). Everything is checked before the file is opened; the file is
    replaced only when complete, a symlink is written through to its target."""
    from .nn import Module
    if isinstance(obj, Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        hint = f"; pass {type(obj).__name__}.state_dict()" if hasattr(obj, "state_dict") else ""
        raise TypeError(f"save: expected a state dict (a mapping of names to tensors) or a Module, got "
                        f"{type(obj).__name__}{hint}")
    if sf.METADATA in obj:
        raise ValueError(f"save: the key {sf.METADATA!r} is reserved by the safetensors format")
    arrays, metadata = {}, {"format": "minifuse"}
    if all(isinstance(k, str) for k in obj) and all(_array(v) is not None for v in obj.values()):
        for k, v in obj.items():
            arrays[k] = _checked(k, _array(v))
    else:
        metadata[STRUCTURE] = json.dumps(_encode(obj, (), arrays), allow_nan=True)
    sf.atomic_write(path, lambda f: sf.write(f, arrays, metadata), "save")


def load(path):
    """Read a file written by ``save`` (or any safetensors file): tensors come back as Tensors on
    the CPU with their stored dtypes and shapes, nested objects as they were saved."""
    from .tensor import Tensor
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"load: {path} is a directory, not a safetensors file")
    try:
        arrays, metadata = sf.read(path)
    except sf.SafetensorsFileError as e:
        raise ValueError(f"load: {e}") from None
    if STRUCTURE not in metadata:
        return {k: Tensor(v) for k, v in arrays.items()}
    try:
        return _decode(json.loads(metadata[STRUCTURE]), arrays, Tensor)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"load: {path} is not a valid minifuse file: its structure metadata is damaged "
                         f"({type(e).__name__}: {e})") from None


def _array(v):
    """A tensor or array as a NumPy array on the CPU; None for anything else."""
    from .tensor import Tensor
    if isinstance(v, Tensor):
        return v.__array__()
    if isinstance(v, np.ndarray) or hasattr(v, "__cuda_array_interface__"):
        return v.get() if hasattr(v, "get") else v
    return None


def _checked(key, a):
    if sf.code_of(a.dtype) is None:
        raise TypeError(f"save: '{key}' has dtype {a.dtype}, which safetensors cannot store "
                        f"(supported: {', '.join(str(d) for d in sf.NAMES)})")
    return a if a.flags.c_contiguous else a.copy(order="C")   # keeps 0-d arrays 0-d


def _encode(v, where, arrays):
    """JSON for a nested value; its arrays go into ``arrays`` under their path's name."""
    name = ".".join(map(str, where)) or "value"
    if type(v) in (bool, int, float, str, type(None)):
        return v
    a = _array(v)
    if a is not None or isinstance(v, np.generic):
        kind = "tensor" if a is not None else "scalar"
        key = name if name not in arrays and name != sf.METADATA else f"{name}#{len(arrays)}"
        arrays[key] = _checked(name, np.asarray(v) if a is None else a)
        return {kind: key}
    if isinstance(v, Mapping):
        for k in v:
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"save: '{name}' has the key {k!r}: keys must be strings or integers")
        return {"dict": [[k, _encode(x, where + (k,), arrays)] for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        return {type(v).__name__: [_encode(x, where + (i,), arrays) for i, x in enumerate(v)]}
    raise TypeError(f"save: '{name}' is a {type(v).__name__}, which cannot be saved (tensors, arrays, "
                    f"numbers, strings, None, and dicts, lists and tuples of them can)")


def _decode(j, arrays, Tensor):
    if not isinstance(j, dict):
        return j
    (kind, v), = j.items()
    if kind == "tensor":
        return Tensor(arrays[v])
    if kind == "scalar":
        return arrays[v][()]
    if kind == "dict":
        return {k: _decode(x, arrays, Tensor) for k, x in v}
    items = [_decode(x, arrays, Tensor) for x in v]
    return {"list": items, "tuple": tuple(items)}[kind]
