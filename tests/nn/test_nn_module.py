"""Module and Parameter: registration, names, state dicts, modes, hooks, moves, repr."""

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn as nn
from tinygpt.autograd.tensor import Tensor


class Tied(nn.Module):
    """A toy with an embedding and a head sharing one weight, registered in this order."""

    def __init__(self, vocab=7, dim=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.body = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx):
        return self.head(self.norm(self.body(self.emb(idx))))


EXPECTED_NAMES = ["emb.weight", "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                  "norm.weight", "norm.bias"]


def perturb(module, seed=1):
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = rng.standard_normal(p.shape)


def snapshot(module):
    return {k: v.numpy() for k, v in module.state_dict().items()}


def test_parameter_is_a_leaf_that_requires_grad():
    p = nn.Parameter(tg.zeros(2, 3))
    assert isinstance(p, Tensor) and p.requires_grad and p.is_leaf and p.grad is None
    frozen = nn.Parameter(np.ones(3, dtype=np.float32), requires_grad=False)
    assert not frozen.requires_grad
    assert "Parameter containing" in repr(p)
    with pytest.raises(TypeError, match="floating"):
        nn.Parameter(np.arange(3))


def test_registration_order_and_dotted_names():
    model = Tied()
    assert [name for name, _ in model.named_parameters()] == EXPECTED_NAMES
    assert [name for name, _ in model.named_children()] == ["emb", "body", "norm", "head"]
    assert [name for name, _ in model.named_modules()] == [
        "", "emb", "body", "body.0", "body.1", "body.2", "norm", "head"]
    assert list(model.children())[1] is model.body
    assert len(list(model.modules())) == 8
    assert [n for n, _ in model.named_parameters(recurse=False)] == []
    assert [n for n, _ in model.norm.named_parameters(prefix="norm")] == \
        ["norm.weight", "norm.bias"]


def test_shared_parameter_listed_once_but_state_dict_has_both_keys():
    model = Tied()
    params = list(model.parameters())
    assert sum(p is model.emb.weight for p in params) == 1
    expected = 7 * 4 + (4 * 8 + 8) + (8 * 4 + 4) + (4 + 4)    # emb, body.0, body.2, norm
    assert model.num_parameters() == sum(p.numel() for p in params) == expected
    state = model.state_dict()
    assert list(state) == EXPECTED_NAMES + ["head.weight"]
    assert state["head.weight"].data is state["emb.weight"].data is model.emb.weight.data
    assert not state["emb.weight"].requires_grad  # detached, as PyTorch


def test_parameter_names_label_the_leaves():
    model = Tied()
    dict(model.named_parameters())
    assert model.body[0].bias.name == "body.0.bias"
    assert model.head.weight.name == "emb.weight"


def test_assignment_rules():
    layer = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="parameter 'weight'"):
        layer.weight = tg.zeros(2, 3)          # a plain Tensor cannot replace a Parameter
    layer.bias = None                          # declared but absent, as bias=False
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    layer.extra = 5                            # plain attributes stay plain
    assert [n for n, _ in layer.named_parameters()] == ["weight"]

    class Forgot(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(tg.zeros(1))

    with pytest.raises(AttributeError, match=r"super\(\)\.__init__\(\) first"):
        Forgot()
    model = Tied()
    del model.norm
    assert "norm.weight" not in model.state_dict()


def test_state_dict_round_trip_restores_every_value():
    tg.manual_seed(0)
    model = Tied()
    saved = snapshot(model)
    perturb(model)
    assert not np.array_equal(model.emb.weight.numpy(), saved["emb.weight"])
    result = model.load_state_dict(saved)               # NumPy arrays are accepted
    assert result.missing_keys == [] and result.unexpected_keys == []
    after = snapshot(model)
    assert list(after) == list(saved)
    for key in saved:
        np.testing.assert_array_equal(after[key], saved[key])
    assert model.head.weight is model.emb.weight         # still tied, same array
    assert model.head.weight.data is model.emb.weight.data


def test_load_state_dict_from_tensors_of_another_dtype_casts_in_place():
    model = Tied()
    source = Tied().to(tg.float64)
    perturb(source, seed=3)
    array_before = model.body[0].weight.data
    model.load_state_dict(source.state_dict())
    assert model.body[0].weight.data is array_before
    assert model.body[0].weight.dtype == np.float32
    np.testing.assert_allclose(model.body[0].weight.numpy(), source.body[0].weight.numpy(),
                               rtol=1e-6)


def test_failed_load_names_every_problem_and_changes_nothing():
    model = Tied()
    before = snapshot(model)
    bad = snapshot(Tied())
    del bad["norm.bias"]                                      # missing
    bad["head.weight"] = np.zeros((5, 5), np.float32)         # shape mismatch
    bad["body.0.weight"] = np.zeros((3, 4), np.float32)       # shape mismatch
    bad["decoder.scale"] = np.ones(1, np.float32)             # unexpected
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    for needle in ("missing keys: norm.bias", "unexpected keys: decoder.scale",
                   "head.weight", "(5, 5)", "(7, 4)", "body.0.weight", "(3, 4)", "(8, 4)"):
        assert needle in message
    after = snapshot(model)
    for key in before:  # including the keys whose values were fine: nothing was copied
        np.testing.assert_array_equal(after[key], before[key])


def test_non_strict_load_reports_keys_but_still_rejects_shapes():
    model = Tied()
    partial = {"norm.weight": np.full(4, 2.0, np.float32), "extra": np.zeros(1)}
    missing, unexpected = model.load_state_dict(partial, strict=False)
    assert unexpected == ["extra"] and "emb.weight" in missing and "norm.weight" not in missing
    np.testing.assert_array_equal(model.norm.weight.numpy(), np.full(4, 2.0))
    with pytest.raises(ValueError, match="norm.bias"):
        model.load_state_dict({"norm.bias": np.zeros(5)}, strict=False)
    with pytest.raises(TypeError, match="mapping"):
        model.load_state_dict([1, 2])
    with pytest.raises(ValueError, match="not numbers"):
        model.load_state_dict({"norm.bias": np.array(["a", "b", "c", "d"])}, strict=False)


def test_train_eval_propagate():
    model = Tied()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    model.body.train(False)
    assert model.training and not model.body[1].training
    with pytest.raises(TypeError, match="bool"):
        model.train("no")


def test_zero_grad_sets_none_or_zeros():
    model = Tied()
    model(tg.tensor([[1, 2, 3]])).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(not p.grad.numpy().any() for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_tied_weight_receives_both_gradients():
    """The shared weight's gradient is the sum of its uses (embedding + head)."""
    tg.manual_seed(0)
    model = Tied().to(tg.float64)
    idx = tg.tensor([[1, 2, 2, 5]])
    model(idx).sum().backward()
    both = model.emb.weight.grad.numpy()
    # Same computation with an untied copy of the head weight.
    untied = Tied().to(tg.float64)
    untied.load_state_dict(model.state_dict())
    untied.head.weight = nn.Parameter(model.emb.weight.data.copy())
    untied(idx).sum().backward()
    separate = untied.emb.weight.grad.numpy() + untied.head.weight.grad.numpy()
    np.testing.assert_allclose(both, separate, rtol=1e-12, atol=1e-14)


def test_to_dtype_and_device_in_place_keeps_ties():
    model = Tied()
    weight = model.emb.weight
    model(tg.tensor([[0, 1]])).sum().backward()
    assert model.to("float64") is model
    assert model.emb.weight is weight and model.head.weight is weight
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in model.parameters())
    model.to(tg.float32).to("cpu")
    assert all(p.dtype == np.float32 and p.device == "cpu" for p in model.parameters())
    assert model.double().emb.weight.dtype == np.float64
    with pytest.raises(TypeError, match="floating"):
        model.to(tg.int64)
    with pytest.raises(ValueError, match="device"):
        model.to(device="tpu")


def test_forward_hook_sees_inputs_and_may_replace_output():
    layer = nn.Linear(3, 2)
    seen = []
    handle = layer.register_forward_hook(lambda m, inputs, out: seen.append((m, inputs, out)))
    x = tg.ones(1, 3)
    y = layer(x)
    assert seen[0][0] is layer and seen[0][1][0] is x and seen[0][2] is y
    replace = layer.register_forward_hook(lambda m, inputs, out: out * 0.0)
    assert not layer(x).numpy().any()
    replace.remove()
    handle.remove()
    assert layer(x).numpy().any() and len(seen) == 2


def test_repr_nests_and_counts_parameters():
    model = Tied()
    text = repr(model)
    assert text.startswith("Tied(\n  (emb): Embedding(7, 4)")
    assert "(0): Linear(in_features=4, out_features=8, bias=True)" in text
    assert "(head): Linear(in_features=4, out_features=7, bias=False)" in text
    assert text.endswith(f"# {model.num_parameters():,} parameters")
    assert text.count("parameters") == 1  # only the top level carries the count
    blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(5)])
    assert "(0-4): 5 x Linear(in_features=2, out_features=2, bias=True)" in repr(blocks)


def test_apply_and_requires_grad():
    model = Tied()
    visited = []
    model.apply(lambda m: visited.append(type(m).__name__))
    assert visited[-1] == "Tied" and visited.count("Linear") == 3
    model.requires_grad_(False)
    assert model.num_parameters(only_trainable=True) == 0
    model.requires_grad_()
    assert model.num_parameters(only_trainable=True) == model.num_parameters()


def test_forward_must_be_defined():
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)


def test_move_to_device_keeps_ties_and_values(device):
    model = Tied()
    before = snapshot(model)
    model.to(device)
    assert all(p.device == device for p in model.parameters())
    assert model.head.weight is model.emb.weight
    y = model(tg.tensor([[1, 2]], device=device))
    assert y.device == device
    after = snapshot(model.to("cpu"))
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
