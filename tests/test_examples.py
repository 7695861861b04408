"""The README tour and the quick examples run as written."""
import pathlib
import re
import runpy

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    namespace = {}
    for block in blocks:
        exec(block, namespace)  # noqa: S102 - our own README


@pytest.mark.parametrize("name", ["01_autograd_basics.py", "02_gradcheck.py", "03_train_mlp.py",
                                  "05_fused_inference.py", "06_fusion_passes.py", "08_cnn_digits.py"])
def test_quick_examples_run(name, capsys):
    runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    assert capsys.readouterr().out


def test_cnn_example_draws_digits_without_scikit_learn():
    drawn = runpy.run_path(str(ROOT / "examples" / "08_cnn_digits.py"))["drawn_digits"]
    images, labels = drawn(50, np.random.default_rng(0))
    assert images.shape == (50, 8, 8) and labels.shape == (50,)
    assert images.min() >= 0 and images.max() <= 16 and set(labels) <= set(range(10))
