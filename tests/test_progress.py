"""minifuse.progress: the progress bar (tqdm or the plain fallback) and the compile notice."""
import io
import sys

from minifuse import progress as P


def test_plain_bar_counts_to_the_total_and_keeps_the_items(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)             # as if tqdm were not installed
    out = io.StringIO()
    assert list(P.progress(range(5), desc="work", file=out)) == [0, 1, 2, 3, 4]
    text = out.getvalue()
    assert "work: [####################] 5/5" in text and text.endswith("\n")


def test_plain_bar_without_a_total_counts_items(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    out = io.StringIO()
    assert list(P.progress(iter("abc"), file=out)) == ["a", "b", "c"]
    assert "3 it" in out.getvalue()


def test_disabled_progress_is_the_iterable_itself():
    items = [1, 2]
    assert P.progress(items, disable=True) is items


def test_compile_notice_prints_once_and_only_on_a_cold_cache(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(P, "_noticed", False)
    monkeypatch.setattr(P, "kernel_cache_is_cold", lambda: True)
    P.compile_notice(out)
    P.compile_notice(out)
    assert out.getvalue() == "compiling kernels, ~20 s once; cached afterwards\n"
    warm = io.StringIO()
    monkeypatch.setattr(P, "_noticed", False)
    monkeypatch.setattr(P, "kernel_cache_is_cold", lambda: False)
    P.compile_notice(warm)
    assert warm.getvalue() == ""


def test_cache_probe_answers_without_compiling():
    assert P.kernel_cache_is_cold() in (True, False)
