"""The GPU benchmark's argument checks, which run on any machine (before CuPy or torch is imported)."""
import pytest

from minifuse.bench import cuda as bench_cuda


def test_bench_cuda_only_names_its_sections_and_refuses_a_typo(capsys):
    with pytest.raises(SystemExit) as e:
        bench_cuda.main(["--only", "bert_layer,bert_layr"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown section(s) bert_layr" in err and "bert_layer, compiled_layer" in err
