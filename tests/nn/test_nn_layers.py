"""The layers: shapes, initialisation, gradients through the modules, dropout modes,
containers and argument errors."""

import math

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn as nn
from tinygpt.autograd import gradcheck


def test_linear_shapes_and_default_init():
    tg.manual_seed(0)
    layer = nn.Linear(64, 32)
    assert layer.weight.shape == (32, 64) and layer.bias.shape == (32,)
    assert layer.weight.dtype == np.float32
    bound = 1 / math.sqrt(64)
    w = layer.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound   # U(-b, b) has std b/sqrt(3)
    assert layer(tg.ones(5, 7, 64)).shape == (5, 7, 32)
    assert nn.Linear(3, 4, bias=False).bias is None
    assert nn.Linear(3, 4, dtype=tg.float64).weight.dtype == np.float64


def test_init_is_reproducible_with_manual_seed():
    tg.manual_seed(7)
    a = nn.Linear(4, 3).weight.numpy()
    tg.manual_seed(7)
    b = nn.Linear(4, 3).weight.numpy()
    c = nn.Linear(4, 3).weight.numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


def test_embedding_and_layer_norm_init():
    tg.manual_seed(0)
    emb = nn.Embedding(200, 50)
    assert emb.weight.shape == (200, 50)
    assert abs(emb.weight.numpy().std() - 1.0) < 0.05          # N(0, 1)
    assert emb(tg.tensor([[1, 2], [3, 199]])).shape == (2, 2, 50)
    ln = nn.LayerNorm(6)
    np.testing.assert_array_equal(ln.weight.numpy(), np.ones(6))
    np.testing.assert_array_equal(ln.bias.numpy(), np.zeros(6))
    assert nn.LayerNorm(6, bias=False).bias is None
    assert nn.LayerNorm((2, 3), elementwise_affine=False).weight is None
    y = ln(tg.randn(4, 6) * 5.0 + 3.0).numpy()
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(-1), 1, atol=1e-3)


def test_linear_gradcheck_through_module():
    tg.manual_seed(0)
    layer = nn.Linear(4, 3, dtype=tg.float64)
    x = tg.randn(2, 5, 4, dtype=tg.float64, requires_grad=True)
    assert gradcheck(lambda x, w, b: layer(x), [x, layer.weight, layer.bias])


def test_layer_norm_gradcheck_through_module():
    tg.manual_seed(1)
    ln = nn.LayerNorm(5, dtype=tg.float64)
    ln.weight.data[...] = np.linspace(0.5, 1.5, 5)   # away from the trivial init
    ln.bias.data[...] = np.linspace(-1, 1, 5)
    x = tg.randn(3, 5, dtype=tg.float64, requires_grad=True)
    assert gradcheck(lambda x, w, b: ln(x), [x, ln.weight, ln.bias])


def test_embedding_gradcheck_through_module_with_repeated_ids():
    tg.manual_seed(2)
    emb = nn.Embedding(6, 3, dtype=tg.float64)
    idx = tg.tensor([[0, 2, 2], [5, 0, 1]])
    assert gradcheck(lambda w: emb(idx), [emb.weight])


def test_gelu_module_matches_functional():
    x = tg.tensor(np.linspace(-3, 3, 13))
    for approximate in ("none", "tanh"):
        np.testing.assert_array_equal(nn.GELU(approximate)(x).numpy(),
                                      nn.functional.gelu(x, approximate).numpy())
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")


def test_dropout_train_and_eval():
    tg.manual_seed(0)
    drop = nn.Dropout(0.5)
    x = tg.ones(1000)
    y = drop(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0}                 # inverted dropout: kept * 1/(1-p)
    assert 400 < (y == 0).sum() < 600
    assert not np.array_equal(y, drop(x).numpy())          # a fresh mask each call
    drop.eval()
    assert drop(x) is x                                    # the identity, deterministic
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(1.5)


def test_sequential_and_module_list():
    tg.manual_seed(0)
    a, b = nn.Linear(3, 4), nn.Linear(4, 2)
    seq = nn.Sequential(a, nn.GELU(), b)
    x = tg.randn(2, 3)
    np.testing.assert_array_equal(seq(x).numpy(), b(nn.functional.gelu(a(x))).numpy())
    assert len(seq) == 3 and seq[0] is a and seq[-1] is b and list(seq)[2] is b
    assert isinstance(seq[1:], nn.Sequential) and len(seq[1:]) == 2
    blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    blocks.append(nn.Linear(2, 1))
    assert len(blocks) == 4 and blocks[-1].out_features == 1
    assert [n for n, _ in blocks.named_parameters()][-2:] == ["3.weight", "3.bias"]
    assert len(blocks[1:3]) == 2
    with pytest.raises(IndexError, match="out of range"):
        blocks[4]
    with pytest.raises(TypeError, match="Module"):
        blocks.append("not a module")
    named = nn.Sequential(__import__("collections").OrderedDict(first=nn.Linear(1, 1)))
    assert [n for n, _ in named.named_parameters()] == ["first.weight", "first.bias"]


def test_module_dict():
    d = nn.ModuleDict(dict(wte=nn.Embedding(5, 2), ln_f=nn.LayerNorm(2)))
    assert list(d) == ["wte", "ln_f"] and "wte" in d and d["wte"] is d.wte
    assert [n for n, _ in d.named_parameters()] == ["wte.weight", "ln_f.weight", "ln_f.bias"]
    with pytest.raises(TypeError, match="Module"):
        d["x"] = 3


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Linear(0, 3), "in_features must be a positive int, got 0"),
    (lambda: nn.Linear(3, -1), "out_features must be a positive int, got -1"),
    (lambda: nn.Embedding(4, 2.5), "embedding_dim must be a positive int, got float 2.5"),
    (lambda: nn.LayerNorm(4, eps=0), "eps"),
])
def test_bad_layer_arguments(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_linear_wrong_input_width_is_named():
    with pytest.raises(ValueError, match="3 features"):
        nn.Linear(4, 2)(tg.ones(2, 3))
