"""Module machinery: registration, traversal, state_dict / strict load, to(), modes, repr, containers."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
        self.heads = nn.ModuleDict({"a": nn.Linear(2, 1)})
        self.register_buffer("steps", mf.zeros(1, dtype=mf.int64))
        self.register_buffer("scratch", mf.zeros(2), persistent=False)

    def forward(self, x):
        return self.heads["a"](self.body(x))


def test_registration_and_traversal_order():
    net = Net()
    assert [k for k, _ in net.named_parameters()] == ["body.0.weight", "body.0.bias", "body.2.weight",
                                                      "heads.a.weight", "heads.a.bias"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert [k for k, _ in net.named_modules()] == ["", "body", "body.0", "body.1", "body.2", "heads", "heads.a"]
    assert [type(c).__name__ for c in net.children()] == ["Sequential", "ModuleDict"]
    assert list(net.state_dict()) == ["steps"] + [k for k, _ in net.named_parameters()]  # own first; not 'scratch'
    assert net.body[2].bias is None and "bias" not in dict(net.body[2].named_parameters())


def test_reassigning_an_attribute_replaces_it_and_tied_weights_count_once():
    m = nn.Linear(2, 2)
    m.weight = nn.Parameter(mf.zeros(2, 2))
    assert len(list(m.parameters())) == 2 and (m.weight.detach().numpy() == 0).all()
    seq = nn.Sequential(m, m)
    assert len(list(seq.parameters())) == 2


def test_state_dict_round_trip():
    mf.manual_seed(0)
    a = Net()
    mf.manual_seed(1)
    b = Net()
    b.load_state_dict(a.state_dict())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and np.array_equal(va.detach().numpy(), vb.detach().numpy())
    x = mf.randn(5, 3)
    np.testing.assert_array_equal(a(x).detach().numpy(), b(x).detach().numpy())


def _snapshot(m):
    return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("breakage,message", [
    (lambda sd: sd.pop("heads.a.bias"), "missing keys: heads.a.bias"),
    (lambda sd: sd.__setitem__("extra", mf.zeros(1)), "unexpected keys: extra"),
    (lambda sd: sd.__setitem__("body.0.weight", mf.zeros(3, 4)), r"'body.0.weight' has shape \(3, 4\).*\(4, 3\)"),
])
def test_strict_load_errors_leave_module_untouched(breakage, message):
    target, source = Net(), Net()
    sd = {k: mf.tensor(v.detach().numpy() + 1) for k, v in source.state_dict().items()}
    breakage(sd)
    before = _snapshot(target)
    with pytest.raises(RuntimeError, match=message):
        target.load_state_dict(sd)
    after = _snapshot(target)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_non_strict_load_reports_missing_and_unexpected_but_still_checks_shapes():
    m = nn.Linear(2, 3)
    missing, unexpected = m.load_state_dict({"weight": np.ones((3, 2)), "junk": np.ones(1)}, strict=False)
    assert missing == ["bias"] and unexpected == ["junk"] and (m.weight.detach().numpy() == 1).all()
    with pytest.raises(RuntimeError, match="shape"):
        m.load_state_dict({"weight": np.ones((2, 2))}, strict=False)


def test_to_float64_keeps_parameter_objects_and_int_buffers():
    net = Net()
    params = list(net.parameters())
    w = params[0].detach().numpy().copy()
    assert net.to(mf.float64) is net
    assert list(net.parameters()) == params and all(p.dtype == mf.float64 for p in params)
    np.testing.assert_array_equal(params[0].detach().numpy(), w.astype(np.float64))
    assert net.steps.dtype == mf.int64
    assert net(mf.randn(2, 3, dtype=mf.float64)).dtype == mf.float64


def test_train_eval_zero_grad_apply():
    net = Net()
    assert net.training and all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    net(mf.randn(2, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all((p.grad.detach().numpy() == 0).all() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 3


def test_repr_like_pytorch():
    text = repr(nn.Sequential(nn.Linear(2, 3), nn.GELU("tanh")))
    assert text == ("Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n"
                    "  (1): GELU(approximate='tanh')\n)")


def test_containers():
    ml = nn.ModuleList([nn.ReLU()]).append(nn.Tanh())
    assert len(ml) == 2 and isinstance(ml[1], nn.Tanh) and isinstance(ml[-1], nn.Tanh)
    with pytest.raises(TypeError, match="expected a Module"):
        ml.append(3)
    md = nn.ModuleDict({"x": nn.Identity()})
    assert "x" in md and list(md.keys()) == ["x"]
    x = mf.randn(2)
    assert md["x"](x) is x
    assert np.array_equal(nn.Sequential(nn.ReLU(), nn.Tanh())(x).detach().numpy(), np.tanh(np.maximum(x.numpy(), 0)))


def test_module_without_super_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(mf.zeros(1))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Bad()


def test_assigning_a_plain_tensor_to_a_parameter_is_an_error_and_none_keeps_the_slot():
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="parameter 'weight'"):
        m.weight = mf.zeros(2, 2)
    m.bias = None
    assert m.bias is None and "bias" in m._parameters and m(mf.randn(1, 2)).shape == (1, 2)
    net = Net()
    net.steps = mf.ones(1, dtype=mf.int64)  # still a buffer after reassignment
    assert net.state_dict()["steps"].item() == 1
