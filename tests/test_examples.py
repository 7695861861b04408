"""The README tour and the quick examples run as written."""
import pathlib
import re
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    namespace = {}
    for block in blocks:
        exec(block, namespace)  # noqa: S102 - our own README


@pytest.mark.parametrize("name", ["01_autograd_basics.py", "02_gradcheck.py", "03_train_mlp.py",
                                  "05_fused_inference.py", "06_fusion_passes.py", "08_packing.py"])
def test_quick_examples_run(name, capsys):
    runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    assert capsys.readouterr().out
