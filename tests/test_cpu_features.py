"""`import minifuse` asks Numba for 512-bit vectors on AVX-512 hosts (minifuse/cpu_features.py),
never over a user's own setting."""
import llvmlite.binding as ll
import pytest

from minifuse import cpu_features


class _Features:
    def __init__(self, flat):
        self.flat = flat

    def flatten(self):
        return self.flat


@pytest.fixture
def clean_env(monkeypatch):
    import numba.core.config as config
    monkeypatch.delenv("NUMBA_CPU_FEATURES", raising=False)
    monkeypatch.delenv("NUMBA_CPU_NAME", raising=False)
    monkeypatch.setattr(config, "CPU_FEATURES", config.CPU_FEATURES)   # restored after the test
    return monkeypatch


def test_avx512_host_gets_512_bit_vectors(clean_env):
    import numba.core.config as config
    clean_env.setattr(ll, "get_host_cpu_features", lambda: _Features("+avx2,+avx512f,+fma"))
    got = cpu_features.prefer_512_bit_vectors()
    assert got == "+avx2,+avx512f,+fma,-prefer-256-bit"
    import os
    assert os.environ["NUMBA_CPU_FEATURES"] == got and config.CPU_FEATURES == got


def test_host_without_avx512_is_left_alone(clean_env):
    import os
    clean_env.setattr(ll, "get_host_cpu_features", lambda: _Features("+avx2,-avx512f,+fma"))
    assert cpu_features.prefer_512_bit_vectors() is None
    assert "NUMBA_CPU_FEATURES" not in os.environ


@pytest.mark.parametrize("var", ["NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME"])
def test_a_users_setting_wins(clean_env, var):
    import os
    clean_env.setenv(var, "generic" if var == "NUMBA_CPU_NAME" else "+avx2")
    clean_env.setattr(ll, "get_host_cpu_features", lambda: _Features("+avx512f"))
    assert cpu_features.prefer_512_bit_vectors() is None
    assert os.environ[var] in ("generic", "+avx2")


def test_a_host_llvm_cannot_describe_is_left_alone(clean_env):
    def fail():
        raise RuntimeError("no host features")
    clean_env.setattr(ll, "get_host_cpu_features", fail)
    assert cpu_features.prefer_512_bit_vectors() is None
