"""The backend registry (minifuse/kernels/registry.py): every backend package exports every entry
point with the CPU package's signature, declares DTYPES, xp and CHECKS, and arrays are routed to
the backend of their array module."""
import inspect

import numpy as np
import pytest

from backends import AVAILABLE, BACKENDS
from minifuse.kernels import registry
from minifuse.kernels.registry import ENTRY_POINTS


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_every_entry_point_has_the_cpus_signature(backend):
    cpu, K = registry.get("cpu").kernels, backend.K
    for name in ENTRY_POINTS:
        assert hasattr(K, name), f"{backend.name} does not export {name}"
        assert _params(getattr(K, name)) == _params(getattr(cpu, name)), (backend.name, name)
        assert inspect.signature(getattr(K, name)) == inspect.signature(getattr(cpu, name)), (backend.name, name)


def test_packages_declare_dtypes_array_module_and_checks(backend):
    K = backend.K
    assert isinstance(K.DTYPES, tuple) and all(isinstance(d, np.dtype) for d in K.DTYPES)
    assert set(backend.dtypes) <= set(K.DTYPES)
    assert K.CHECKS.dtypes == K.DTYPES
    assert K.xp.__name__ == ("cupy" if backend.gpu else "numpy")
    assert registry.get(backend.name).dtypes == K.DTYPES
    a = backend.to_dev(np.zeros(2, np.float32))
    assert K.CHECKS.module_of("f", "a", a) is K.xp


def test_available_backends_are_the_ones_tested_here():
    assert registry.names()[:2] == ("cpu", "cuda")
    assert set(registry.available()) >= {b.name for b in AVAILABLE}
    assert {b.name for b in BACKENDS} <= set(registry.names())


def test_arrays_go_to_the_backend_of_their_module(backend):
    a = backend.to_dev(np.zeros(2))
    expected = backend.name if (backend.gpu or backend.name == "cpu") else "cpu"   # the simulator's arrays are NumPy's
    assert registry.for_array(a).name == expected
    assert registry.for_array([1.0]) is None


def test_route_sends_numpy_arrays_to_a_backend_for_a_block():
    a = np.zeros(2)
    with registry.route("numpy", "cuda"):
        assert registry.for_array(a).name == "cuda"
    assert registry.for_array(a).name == "cpu"
    with pytest.raises(KeyError):
        with registry.route("numpy", "cuda"):
            raise KeyError("inside")
    assert registry.for_array(a).name == "cpu"      # restored after an exception too
    with registry.route("somearrays", "cpu"):
        assert registry.for_array(type("A", (), {"__module__": "somearrays.core"})()).name == "cpu"
    assert registry.for_array(type("A", (), {"__module__": "somearrays.core"})()) is None


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown kernel backend 'tpu'; known: cpu, cuda"):
        registry.get("tpu")
    with pytest.raises(ValueError, match="unknown kernel backend"):
        with registry.route("numpy", "tpu"):
            pass
    assert registry.for_array(np.zeros(1)).name == "cpu"
