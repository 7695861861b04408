"""Packed inference in the layers: TransformerLayer, TransformerEncoder (packed once for the
whole stack), MultiHeadAttention and BertModel give the padded path's real-token outputs and
zeros at padded positions, on every kernel backend; the switch and the threshold; and the one
meaning of a mask (bool, or numbers exactly 0 or 1) checked at every public boundary."""
import contextlib
import os

import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
from minifuse.kernels import registry
from tests.nn.test_nn_backends import BACKENDS, placed

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

MASKS = {
    "right": [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]],
    "left_and_holes": [[0, 0, 1, 1, 1], [1, 0, 1, 0, 1], [1, 1, 1, 1, 0]],
    "a_sequence_without_tokens": [[0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]],
}
TOL = {np.float32: 1e-5, np.float64: 1e-10}


@contextlib.contextmanager
def spy(kernels, names, monkeypatch):
    calls = []
    for name in names:
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    yield calls


def _close(actual, expected, dtype):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale)


def _three_ways(model, x, mask):
    """(packed, padded fused, taped) outputs of model(x, mask) as NumPy arrays."""
    with mf.no_grad():
        packed = model(x, mask).numpy()
        with nn.packing(False):
            padded = model(x, mask).numpy()
        with nn.fusion(False):
            taped = model(x, mask).numpy()
    return packed, padded, taped


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encoder_packs_once_and_equals_the_padded_path(backend, kind, dtype, monkeypatch):
    if SIMULATED and backend == "cuda" and (kind, dtype) != ("a_sequence_without_tokens", np.float64):
        pytest.skip("the simulator runs one case (a block costs milliseconds); tests/kernels/test_packing.py has more")
    device, routed = placed(backend)
    mf.manual_seed(3)
    enc = nn.TransformerEncoder(dict(d_model=8, num_heads=2, intermediate_size=16, dtype=dtype), 2).eval().to(device)
    x = mf.randn(3, 5, 8, dtype=dtype).to(device)
    mask = np.array(MASKS[kind])
    K = registry.get(backend).kernels
    with routed, spy(K, ["pack", "unpack", "transformer_layer_varlen", "transformer_layer"], monkeypatch) as calls:
        packed, padded, taped = _three_ways(enc, x, mask)
    assert calls[:4] == ["pack", "transformer_layer_varlen", "transformer_layer_varlen", "unpack"]
    assert calls[4:] == ["transformer_layer"] * 2            # packing(False): the padded kernel
    _close(packed, padded, dtype)
    _close(packed, taped, dtype)
    assert not packed[mask == 0].any() and not taped[mask == 0].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_and_attention_pack(backend, monkeypatch):
    device, _ = placed(backend)
    mf.manual_seed(4)
    x = mf.randn(3, 5, 8, dtype=mf.float64).to(device)
    mask = mf.tensor(np.array(MASKS["right"], bool)).to(device)
    K = registry.get(backend).kernels
    for layer in (nn.TransformerLayer(8, 2, 16, dtype=mf.float64), nn.MultiHeadAttention(8, 2, dtype=mf.float64)):
        layer.eval().to(device)
        with placed(backend)[1], spy(K, ["pack", "attend_varlen", "transformer_layer_varlen"], monkeypatch) as calls:
            packed, padded, taped = _three_ways(layer, x, mask)
        assert calls[0] == "pack" and calls[1] in ("attend_varlen", "transformer_layer_varlen")
        _close(packed, padded, np.float64)
        _close(packed, taped, np.float64)
        assert not packed[~mask.numpy()].any()


def _training_step(model, x, mask, g):
    """[output, dx, parameter gradients...] of one step of model(x, mask) with upstream g."""
    for p in model.parameters():
        p.grad = None
    x = x.detach().requires_grad_(True)
    y = model(x, mask)
    y.backward(g)
    return [y.detach().numpy(), x.grad.numpy()] + [p.grad.numpy() for p in model.parameters()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(MASKS) + ["all_padding"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_training_packs_and_equals_the_padded_step(backend, kind, dtype, monkeypatch):
    """fused_training=True packs a padded batch: the output, the input's and every parameter's
    gradient equal the padded fused step and the taped step; zeros at padded positions."""
    if SIMULATED and backend == "cuda" and (kind, dtype) != ("left_and_holes", np.float64):
        pytest.skip("the simulator runs one case (a block costs milliseconds)")
    device, routed = placed(backend)
    mf.manual_seed(5)
    enc = nn.TransformerEncoder(dict(d_model=8, num_heads=2, intermediate_size=16, dtype=dtype,
                                     fused_training=True), 2).to(device)
    x = mf.randn(3, 5, 8, dtype=dtype).to(device)
    mask = np.zeros((3, 5), int) if kind == "all_padding" else np.array(MASKS[kind])
    g = mf.tensor(np.cos(np.arange(3 * 5 * 8)).reshape(3, 5, 8).astype(dtype)).to(device)
    K = registry.get(backend).kernels
    from minifuse.nn import transformer
    with routed, spy(K, ["gather_rows", "scatter_rows"], monkeypatch) as calls, \
            spy(transformer.kernel_packing, ["offsets"], monkeypatch) as packs:
        packed = _training_step(enc, x, mask, g)
        assert "gather_rows" in calls and "scatter_rows" in calls
        assert packs == ["offsets"]                  # packed once for the whole stack
        del calls[:]
        with nn.packing(False):
            padded = _training_step(enc, x, mask, g)
        assert not calls
        with nn.fusion(False):
            taped = _training_step(enc, x, mask, g)
    for a, b, c in zip(packed, padded, taped):
        _close(a, b, dtype)
        _close(a, c, dtype)
    assert not packed[0][mask == 0].any() and not packed[1][mask == 0].any()


def test_threshold_switch_and_enable_nested_tensor(monkeypatch):
    mf.manual_seed(5)
    enc = nn.TransformerEncoder(dict(d_model=8, num_heads=2, intermediate_size=16), 2).eval()
    x = mf.randn(2, 4, 8)
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])        # 1/8 padded
    K = registry.get("cpu").kernels

    def packs():
        with spy(K, ["pack"], monkeypatch) as calls, mf.no_grad():
            enc(x, mask)
        return bool(calls)
    assert packs()
    try:
        nn.set_packing_threshold(0.125)                    # packs above the threshold only
        assert nn.packing_threshold() == 0.125 and not packs()
        nn.set_packing_threshold(0.1)
        assert packs()
    finally:
        nn.set_packing_threshold(None)
    assert nn.packing_threshold() == 0.0
    with nn.packing(False):
        assert not nn.packing_enabled() and not packs()
    assert nn.packing_enabled()
    enc.enable_nested_tensor = False
    assert not packs()
    with pytest.raises(ValueError, match=r"set_packing_threshold: the packing threshold must be a fraction .*\[0, 1\)"):
        nn.set_packing_threshold(1.0)


def test_settings_default_from_the_environment():
    import subprocess
    import sys
    code = "import minifuse.nn as nn; print(nn.packing_enabled(), nn.packing_threshold())"
    env = {**os.environ, "MINIFUSE_DISABLE_PACKING": "1", "MINIFUSE_PACKING_THRESHOLD": "0.25"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "0.25"]


def test_bert_hidden_states_and_sentence_embeddings_pack():
    from tests.models.test_bert import tiny_bert
    from minifuse.models import SentenceEncoder
    model = tiny_bert(mf.float64)
    ids = np.random.default_rng(2).integers(1, 50, (3, 6))
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    with mf.no_grad():
        last, hidden = model(ids, mask, output_hidden_states=True)
        with nn.packing(False):
            last0, hidden0 = model(ids, mask, output_hidden_states=True)
        enc = SentenceEncoder(model)
        emb = enc(ids, mask).numpy()
        with nn.packing(False):
            emb0 = enc(ids, mask).numpy()
    for a, b in zip(hidden, hidden0):
        _close(a.numpy(), b.numpy(), np.float64)
    _close(last.numpy(), last0.numpy(), np.float64)
    _close(emb, emb0, np.float64)


# ---- one meaning of a mask, checked where it enters ----------------------------------------------

ONLY_0_1 = r"must hold only 0 \(padding\) and 1 \(keep\), got values such as "
BAD = [(np.array([[1, 2, 1]]), ValueError, ONLY_0_1 + r"\[2\]"),
       (np.array([[1, 0.5, 1]]), ValueError, ONLY_0_1 + r"\[0\.5\]"),
       (np.array([[1, np.nan, 1]]), ValueError, ONLY_0_1 + r"\[nan\]"),
       (np.array([["1", "0", "1"]]), TypeError, "must be bool or numbers 0 \\(padding\\) / 1 \\(keep\\)")]


def _public_calls():
    """(name of the boundary, the argument its error must name, call(mask))."""
    from minifuse import fusions
    from tests.models.test_bert import tiny_bert
    from minifuse.models import SentenceEncoder
    mf.manual_seed(6)
    x = mf.randn(1, 3, 8)
    layer, mha = nn.TransformerLayer(8, 2, 16).eval(), nn.MultiHeadAttention(8, 2).eval()
    enc = nn.TransformerEncoder(layer, 2).eval()
    trainer = nn.TransformerLayer(8, 2, 16, fused_training=True)
    bert = tiny_bert()
    ids = np.ones((1, 3), np.int64)
    compiled = mf.compile(layer, x, mf.tensor(np.ones((1, 3), np.int64)))

    def no_grad(f):
        def call(m):
            with mf.no_grad():
                return f(m)
        return call
    return [("TransformerLayer", "attention_mask", no_grad(lambda m: layer(x, m))),
            ("TransformerLayer", "attention_mask", lambda m: layer(x, m)),                   # taped
            ("TransformerLayer", "attention_mask", lambda m: trainer(mf.randn(1, 3, 8, requires_grad=True), m)),
            ("TransformerEncoder", "attention_mask", no_grad(lambda m: enc(x, m))),
            ("MultiHeadAttention", "attention_mask", no_grad(lambda m: mha(x, m))),
            ("MultiHeadAttention", "attention_mask", lambda m: mha(x, m)),
            ("BertModel", "attention_mask", no_grad(lambda m: bert(ids, m))),
            ("BertModel", "attention_mask", no_grad(lambda m: SentenceEncoder(bert)(ids, m))),
            ("fused_attention", "key_mask", lambda m: fusions.fused_attention(mf.randn(1, 3, 24), m, 2)),
            # a mask of another dtype is a new trace, checked by the layer; the same dtype runs the graph
            ("(compiled FusedTransformerLayer|TransformerLayer)", "attention_mask",
             lambda m: compiled(x, mf.tensor(m)))]


@pytest.mark.parametrize("mask, error, message", BAD)
def test_masks_other_than_bool_or_0_1_are_refused_naming_the_argument(mask, error, message):
    for where, argument, call in _public_calls():
        if mask.dtype.kind == "U" and "compiled" in where:
            continue                        # a Tensor cannot hold strings
        with pytest.raises(error, match=f"^{where}: '{argument}' " + message):
            call(mask)


def test_fully_masked_rows_are_zeros_on_every_path():
    mf.manual_seed(7)
    layer = nn.TransformerLayer(8, 2, 16, dtype=mf.float64).eval()
    x = mf.randn(2, 3, 8, dtype=mf.float64)
    mask = np.array([[0, 0, 0], [1, 1, 0]], bool)
    packed, padded, taped = _three_ways(layer, x, mask)
    compiled = mf.compile(layer, x, mf.tensor(mask))(x, mf.tensor(mask)).numpy()
    for out in (packed, padded, taped, compiled):
        assert not out[0].any() and not out[1, 2].any()
        _close(out, taped, np.float64)


def test_compiled_graphs_run_packed(monkeypatch):
    """mf.compile: each FusedTransformerLayer packs (the layer's zeroed padding is part of the
    node), and so does MultiHeadAttention's FusedAttentionBlock; outputs are eager's."""
    mf.manual_seed(8)
    x = mf.randn(3, 5, 8, dtype=mf.float64)
    mask = mf.tensor(np.array(MASKS["left_and_holes"]))
    K = registry.get("cpu").kernels
    enc = nn.TransformerEncoder(dict(d_model=8, num_heads=2, intermediate_size=16, dtype=mf.float64), 2).eval()
    mha = nn.MultiHeadAttention(8, 2, dtype=mf.float64).eval()
    for model, ops, kernel in ((enc, ["FusedTransformerLayer"] * 2, "transformer_layer_varlen"),
                               (mha, ["FusedAttentionBlock"], "attend_varlen")):
        compiled = mf.compile(model, x, mask)
        assert compiled.graph_for(x, mask).ops() == ops
        with spy(K, ["pack", kernel], monkeypatch) as calls:
            got = compiled(x, mask).numpy()
        assert calls == ["pack", kernel] * len(ops)
        with mf.no_grad(), nn.fusion(False):
            _close(got, model(x, mask).numpy(), np.float64)
