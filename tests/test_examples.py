"""The examples: each is a runnable script and a percent-format notebook; the quick ones run here
(the README and docs code blocks: tests/test_docs.py)."""
import pathlib
import re
import runpy

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))
QUICK = ["01_autograd_basics.py", "02_gradcheck.py", "03_train_mlp.py", "05_fused_inference.py",
         "06_fusion_passes.py", "08_cnn_digits.py", "09_char_transformer.py", "10_packing.py"]


@pytest.mark.parametrize("name", QUICK)
def test_quick_examples_run(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                        # pictures and graph files land here
    runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    out = capsys.readouterr().out
    assert out
    saved = re.findall(r"^saved (\S+\.png)$", out, re.M)
    assert all((tmp_path / name).is_file() for name in saved)     # every picture named is there


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_a_notebook_with_text_before_its_steps(path):
    cells = re.split(r"^# %%", path.read_text(), flags=re.M)
    assert cells[0] == "", f"{path.name} must start with a '# %% [markdown]' cell"
    kinds = ["text" if c.startswith(" [markdown]") else "code" for c in cells[1:]]
    assert kinds[0] == "text" and kinds.count("text") >= 3
    for k, (before, kind) in enumerate(zip(kinds, kinds[1:])):
        if kind == "text":
            assert before == "code", f"{path.name}: two text cells in a row at cell {k + 2}"


def test_cnn_example_draws_digits_without_scikit_learn():
    drawn = runpy.run_path(str(ROOT / "examples" / "08_cnn_digits.py"))["drawn_digits"]
    images, labels = drawn(50, np.random.default_rng(0))
    assert images.shape == (50, 8, 8) and labels.shape == (50,)
    assert images.min() >= 0 and images.max() <= 16 and set(labels) <= set(range(10))


def test_pictures_are_skipped_with_a_message_without_matplotlib(monkeypatch, capsys, tmp_path):
    import sys
    from minifuse import plots
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib now fails
    monkeypatch.setattr(plots, "_warned", False)
    monkeypatch.chdir(tmp_path)
    assert plots.loss_curve("loss.png", [3.0, 2.0, 1.0]) is None
    assert plots.time_bars("t.png", "t", ["a"], [(2.0, 1.0)]) is None
    assert capsys.readouterr().out.count("matplotlib is not installed") == 1
    assert not list(tmp_path.iterdir())
