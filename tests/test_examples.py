"""The quick examples run as written (the README and docs code blocks: tests/test_docs.py)."""
import pathlib
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["01_autograd_basics.py", "02_gradcheck.py", "03_train_mlp.py",
                                  "05_fused_inference.py", "06_fusion_passes.py"])
def test_quick_examples_run(name, capsys):
    runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    assert capsys.readouterr().out
