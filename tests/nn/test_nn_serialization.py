"""mf.save / mf.load: safetensors, bit-exact, clear errors, no half-loaded model."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn


def test_round_trip_is_bit_exact_for_every_dtype(tmp_path):
    rng = np.random.default_rng(0)
    sd = {"f32": rng.standard_normal((3, 4)).astype(np.float32), "f64": rng.standard_normal(5),
          "f16": rng.standard_normal(2).astype(np.float16), "i64": np.arange(4), "b": np.array([True, False]),
          "special": np.array([np.nan, -0.0, np.inf, 1e-45], dtype=np.float32)}
    mf.save({k: mf.tensor(v) for k, v in sd.items()}, tmp_path / "x.safetensors")
    back = mf.load(tmp_path / "x.safetensors")
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert back[k].numpy().tobytes() == v.tobytes()


def test_model_save_load_reproduces_outputs(tmp_path):
    mf.manual_seed(0)
    a = nn.TransformerLayer(8, 2, 16)
    mf.save(a.state_dict(), tmp_path / "m.safetensors")
    mf.manual_seed(1)
    b = nn.TransformerLayer(8, 2, 16)
    b.load_state_dict(mf.load(tmp_path / "m.safetensors"))
    x = mf.randn(2, 3, 8)
    assert a(x).detach().numpy().tobytes() == b(x).detach().numpy().tobytes()


def test_corrupt_or_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "m.safetensors"
    mf.save(nn.Linear(4, 4).state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        mf.load(path)
    path.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        mf.load(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        mf.load(tmp_path / "missing.safetensors")


def test_loading_a_mismatched_file_leaves_model_untouched(tmp_path):
    mf.save(nn.MLP(4, "relu").state_dict(), tmp_path / "relu.safetensors")
    target = nn.MLP(4, "swiglu")  # layer1 is (16, 4), not (8, 4)
    before = target.layer1.weight.detach().numpy().copy(), target.layer2.weight.detach().numpy().copy()
    with pytest.raises(RuntimeError, match="layer1.weight"):
        target.load_state_dict(mf.load(tmp_path / "relu.safetensors"))
    assert np.array_equal(before[0], target.layer1.weight.detach().numpy())
    assert np.array_equal(before[1], target.layer2.weight.detach().numpy())


@pytest.mark.parametrize("dtype", [mf.float16, pytest.param(mf.bfloat16, marks=pytest.mark.skipif(
    mf.bfloat16 is None, reason="bfloat16 needs ml_dtypes"))], ids=["float16", "bfloat16"])
def test_half_precision_state_dicts_round_trip_bit_exact(tmp_path, dtype):
    model = nn.TransformerLayer(8, 2, 12).to(dtype)
    mf.save(model.state_dict(), tmp_path / "half.safetensors")
    loaded = mf.load(tmp_path / "half.safetensors")
    for name, t in model.state_dict().items():
        assert loaded[name].dtype == dtype
        assert loaded[name].numpy().tobytes() == t.detach().numpy().tobytes(), name


def snapshot(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("value, dtype, match", [
    (1e300, float, r"1e\+300 does not fit float32"),
    (1 + 2j, complex, "complex"),
    (None, object, "object values, not numbers"),
], ids=["overflow-to-inf", "complex-to-real", "None-to-nan"])
def test_a_lossy_cast_fails_the_whole_load_naming_the_key(value, dtype, match):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    sd = {k: v.numpy() + 1 for k, v in model.state_dict().items()}
    last = list(sd)[-1]                       # every other tensor is fine and comes first
    sd[last] = np.full(sd[last].shape, value, dtype)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match=f"'{last}'.*{match}"):
        model.load_state_dict(sd)
    after = snapshot(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_exact_casts_are_allowed():
    model = nn.Linear(2, 1)
    model.register_buffer("steps", mf.tensor(np.int64(0)))
    model.load_state_dict({"weight": np.array([[0.1, 0.2]]), "bias": np.array([1]), "steps": np.array(3.0)})
    assert model.steps.item() == 3 and model.weight.dtype == np.float32
    with pytest.raises(RuntimeError, match="'steps': the value 2.5 does not fit int64"):
        model.load_state_dict({"weight": np.zeros((1, 2)), "bias": np.zeros(1), "steps": np.array(2.5)})
