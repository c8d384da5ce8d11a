"""The layer ops against their composed twins (tests/composed.py) in float64, values and
gradients; then the properties the twins cannot show: cross-entropy at logits of 1e4, GELU
at 0 and far out and its float32 error, a fully masked attention row, dropout's scaling and
reproducibility. Every test runs twice: on the reference ops and on the fast kernels.
"""

import math

import numpy as np
import pytest

import composed
import tinygpt as tg
import tinygpt.nn.functional as F
from conftest import assert_close
from tinygpt.autograd import Tensor

F64 = np.float64

pytestmark = pytest.mark.usefixtures("ops_impl")      # reference, then fast kernels


def leaf(array):
    return Tensor(np.array(array, dtype=F64), requires_grad=True)


def values_and_grads(fn, inputs, upstream_seed=0):
    """fn(*inputs) and the gradients of sum(fn * u) for a random u, as NumPy arrays."""
    for t in inputs:
        t.grad = None
    y = fn(*inputs)
    u = np.random.default_rng(upstream_seed).standard_normal(y.shape)
    (y * Tensor(u)).sum().backward()
    grads = [None if t.grad is None else t.grad.numpy() for t in inputs if t.requires_grad]
    return y.numpy(), grads


def assert_same_function(fused, twin, inputs, scale=1.0):
    """Values and gradients of the fused op equal those of its composed twin (float64)."""
    y_fused, g_fused = values_and_grads(fused, inputs)
    y_twin, g_twin = values_and_grads(twin, inputs)
    assert y_fused.shape == y_twin.shape
    assert_close(y_fused, y_twin, F64, scale)
    assert len(g_fused) == len(g_twin)
    for a, b in zip(g_fused, g_twin):
        assert (a is None) == (b is None)
        if a is not None:
            assert_close(a, b, F64, scale)


RNG = np.random.default_rng(20240611)


# --- composed twins -------------------------------------------------------------------------
@pytest.mark.parametrize("shape,dim", [((4, 7), -1), ((4, 7), 0), ((2, 3, 5), 1), ((6,), 0)])
def test_softmax_and_log_softmax_match_their_twins(shape, dim):
    x = leaf(RNG.standard_normal(shape) * 3)
    assert_same_function(lambda x: F.softmax(x, dim), lambda x: composed.softmax(x, dim), [x])
    assert_same_function(lambda x: F.log_softmax(x, dim),
                         lambda x: composed.log_softmax(x, dim), [x])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("shape", [(6, 5), (3, 5, 4), (2, 5, 3, 2), (5,)])
def test_cross_entropy_matches_its_twin(reduction, ignore_index, shape):
    logits = leaf(RNG.standard_normal(shape) * 2)
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    targets = RNG.integers(0, shape[1] if len(shape) > 1 else shape[0], size=target_shape)
    if targets.ndim:
        targets.reshape(-1)[0] = ignore_index            # at least one target is ignored
        targets.reshape(-1)[-1] = 3                      # and at least one is not
    else:
        targets = np.array(3)
    targets = tg.tensor(targets)
    assert_same_function(
        lambda z: F.cross_entropy(z, targets, ignore_index=ignore_index, reduction=reduction),
        lambda z: composed.cross_entropy(z, targets, ignore_index, reduction), [logits])


def test_cross_entropy_with_every_target_ignored_is_nan_for_mean_and_zero_for_sum():
    logits = leaf(RNG.standard_normal((3, 4)))
    targets = tg.tensor([-100, -100, -100])
    with np.errstate(invalid="ignore"):
        assert math.isnan(F.cross_entropy(logits, targets).item())
    loss = F.cross_entropy(logits, targets, reduction="sum")
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(logits.grad.numpy(), 0.0)


@pytest.mark.parametrize("with_weight,with_bias", [(True, True), (False, False), (True, False),
                                                   (False, True)])
@pytest.mark.parametrize("normalized_shape", [(6,), (3, 6)])
def test_layer_norm_matches_its_twin(with_weight, with_bias, normalized_shape):
    x = leaf(RNG.standard_normal((2, 3, 6)) * 3 + 1)
    w = leaf(RNG.standard_normal(normalized_shape)) if with_weight else None
    b = leaf(RNG.standard_normal(normalized_shape)) if with_bias else None
    inputs = [x] + [p for p in (w, b) if p is not None]

    def call(function):
        def fn(x, *params):
            params = list(params)
            weight = params.pop(0) if with_weight else None
            bias = params.pop(0) if with_bias else None
            return function(x, normalized_shape, weight, bias, 1e-5)
        return fn
    assert_same_function(call(F.layer_norm), call(composed.layer_norm), inputs)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_its_twin(approximate):
    x = leaf(np.concatenate([np.linspace(-4, 4, 41), RNG.standard_normal(20)]))
    assert_same_function(lambda x: F.gelu(x, approximate=approximate),
                         lambda x: composed.gelu(x, approximate=approximate), [x])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gelu_gradient_at_zero_and_tiny_inputs_is_one_half(dtype, approximate):
    # Backward reads Phi(x) off y / x: 0 / 0 at x = 0, and subnormal y for tiny x (a
    # RuntimeWarning is an error under the test settings).
    tiny = [0.0, -0.0, 1e-45, -1e-40, 1e-30] + ([1e-310, 1e-200] if dtype == "float64" else [])
    x = tg.tensor(tiny, dtype=dtype, requires_grad=True)
    F.gelu(x, approximate=approximate).sum().backward()
    assert x.grad.numpy().tolist() == [0.5] * len(tiny)


def gelu_in_float64(x, approximate):
    """GELU and its derivative evaluated in float64 from math.erf and np.tanh."""
    if approximate == "tanh":
        c = math.sqrt(2 / math.pi)
        t = np.tanh(c * (x + 0.044715 * x ** 3))
        w = 0.5 * x * c * (1 + 3 * 0.044715 * x * x)
        return 0.5 * x * (1 + t), 0.5 * (1 + t) + w * (1 - t * t)
    erf = np.array([math.erf(v / math.sqrt(2)) for v in x])
    return 0.5 * x * (1 + erf), 0.5 * (1 + erf) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


# Largest error of float32 GELU against float64 over [-12, 12]: y relative to max(1, |y|),
# and dx = dy * GELU'(x) with dy = 1 (GELU' lies in [-0.17, 1.13]). The tanh backward
# reads s = (1 + t) / 2 off y / x, which costs up to ~3.5e-6 near x = 4.7 (see
# _gelu_tanh_grad); the exact forward carries the float32 erf's 4.5e-7.
GELU_FLOAT32_BOUNDS = {"tanh": (2.5e-7, 4e-6), "none": (2e-6, 5e-7)}


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_in_float32_is_within_its_stated_error_of_float64(approximate):
    x32 = np.linspace(-12, 12, 96001, dtype=np.float32)
    y_ref, d_ref = gelu_in_float64(x32.astype(F64), approximate)
    x = tg.tensor(x32, requires_grad=True)
    y = F.gelu(x, approximate=approximate)
    y.sum().backward()
    assert y.dtype == tg.float32 and x.grad.dtype == tg.float32
    y_bound, d_bound = GELU_FLOAT32_BOUNDS[approximate]
    y_err = np.abs(y.numpy() - y_ref) / np.maximum(1.0, np.abs(y_ref))
    d_err = np.abs(x.grad.numpy() - d_ref)
    assert y_err.max() < y_bound, f"worst y at x={x32[y_err.argmax()]}: {y_err.max():.3g}"
    assert d_err.max() < d_bound, f"worst dx at x={x32[d_err.argmax()]}: {d_err.max():.3g}"


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gelu_far_out_is_the_identity_or_zero_without_warnings(dtype, approximate):
    # exp(-2u) overflows for the tanh form at large negative x: y = x / inf = -0 (a
    # RuntimeWarning is an error under the test settings).
    x = tg.tensor([-1e4, -300.0, -40.0, 40.0, 300.0, 1e4], dtype=dtype, requires_grad=True)
    y = F.gelu(x, approximate=approximate)
    y.sum().backward()
    assert y.numpy().tolist() == [0.0, 0.0, 0.0, 40.0, 300.0, 1e4]
    assert x.grad.numpy().tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


def test_gelu_approximations_differ_but_agree_to_a_few_thousandths():
    x = tg.tensor(np.linspace(-5, 5, 101), dtype=tg.float64)
    exact, tanh = F.gelu(x).numpy(), F.gelu(x, approximate="tanh").numpy()
    assert 1e-5 < np.abs(exact - tanh).max() < 1e-3


def test_embedding_matches_its_twin():
    weight = leaf(RNG.standard_normal((7, 4)))
    idx = tg.tensor([[0, 3, 3, 6], [6, 6, 1, 0]])
    assert_same_function(lambda w: F.embedding(idx, w), lambda w: composed.embedding(idx, w),
                         [weight])


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_its_twin(with_bias):
    x, w, b = leaf(RNG.standard_normal((2, 3, 4))), leaf(RNG.standard_normal((5, 4))), None
    inputs = [x, w]
    if with_bias:
        b = leaf(RNG.standard_normal(5))
        inputs.append(b)
    assert_same_function(lambda x, w, *b: F.linear(x, w, *b),
                         lambda x, w, *b: composed.linear(x, w, *b), inputs)


def test_dropout_matches_its_twin_with_the_mask_it_drew():
    x = leaf(RNG.standard_normal((5, 8)) + 3.0)          # no zeros: y == 0 marks a dropped one
    p = 0.4
    tg.manual_seed(7)
    keep = F.dropout(x, p).numpy() != 0

    def fused(x):
        tg.manual_seed(7)
        return F.dropout(x, p)
    assert_same_function(fused, lambda x: composed.dropout(x, keep, p), [x])


def attention_inputs(t=5, s=5, hs=4, hv=3):
    q = leaf(RNG.standard_normal((2, 2, t, hs)))
    k = leaf(RNG.standard_normal((2, 2, s, hs)))
    v = leaf(RNG.standard_normal((2, 2, s, hv)))
    return q, k, v


def allowed_mask(t, s):
    allowed = RNG.random((2, 1, t, s)) < 0.6
    allowed[..., 0] = True                                # every query may attend key 0
    return tg.tensor(allowed)


@pytest.mark.parametrize("variant", ["plain", "causal", "bool", "additive", "bool+causal",
                                     "cross", "scale"])
def test_attention_matches_its_twin(variant):
    t, s = (3, 6) if variant == "cross" else (5, 5)
    q, k, v = attention_inputs(t, s)
    mask = None
    if "bool" in variant:
        mask = allowed_mask(t, s)
    elif variant == "additive":
        mask = tg.tensor(RNG.standard_normal((1, 2, t, s)), dtype=tg.float64)
    kwargs = dict(is_causal="causal" in variant, scale=0.3 if variant == "scale" else None)
    assert_same_function(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs),
        lambda q, k, v: composed.scaled_dot_product_attention(q, k, v, mask, **kwargs),
        [q, k, v])


def split_heads(qkv, n_head):
    """(B, T, 3C) -> q, k, v as (B, H, T, hs), with primitive ops."""
    b, t, c3 = qkv.shape
    c = c3 // 3
    return [qkv[:, :, i * c:(i + 1) * c].reshape(b, t, n_head, c // n_head).permute(0, 2, 1, 3)
            for i in range(3)]


def merge_heads(y):
    """(B, H, T, hs) -> (B, T, H * hs)."""
    b, h, t, hs = y.shape
    return y.permute(0, 2, 1, 3).reshape(b, t, h * hs)


def test_self_attention_matches_its_twin():
    qkv = leaf(RNG.standard_normal((3, 5, 3 * 8)))
    assert_same_function(
        lambda qkv: F.self_attention(qkv, 2),
        lambda qkv: merge_heads(composed.scaled_dot_product_attention(
            *split_heads(qkv, 2), is_causal=True)), [qkv])


def test_self_attention_with_dropout_matches_its_twin_with_the_same_draw():
    qkv = leaf(RNG.standard_normal((2, 5, 3 * 8)))
    p = 0.3

    def fused(qkv):
        tg.manual_seed(11)
        return F.self_attention(qkv, 2, dropout_p=p)

    def via_attention(qkv):
        tg.manual_seed(11)
        return merge_heads(F.scaled_dot_product_attention(*split_heads(qkv, 2), is_causal=True,
                                                          dropout_p=p))
    assert_same_function(fused, via_attention, [qkv])


def test_attention_with_dropout_matches_its_twin_with_the_mask_it_drew():
    q, k, _ = attention_inputs()
    v = leaf(RNG.standard_normal((2, 2, 5, 3)))
    p = 0.3
    # With v = identity, the output is the dropped-out weight matrix itself: read the mask.
    eye = tg.tensor(np.broadcast_to(np.eye(5), (2, 2, 5, 5)).copy(), dtype=tg.float64)
    tg.manual_seed(11)
    weights = F.scaled_dot_product_attention(q, k, eye, is_causal=True, dropout_p=p).numpy()
    causal = np.tril(np.ones((5, 5), dtype=bool))
    keep = weights != 0
    assert keep[..., ~causal].sum() == 0 and 0 < keep[..., causal].mean() < 1

    def fused(q, k, v):
        tg.manual_seed(11)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
    assert_same_function(
        fused, lambda q, k, v: composed.scaled_dot_product_attention(
            q, k, v, is_causal=True, keep=keep, dropout_p=p), [q, k, v])


# --- properties -----------------------------------------------------------------------------
def reference_cross_entropy(logits, targets):
    """Per-row -log softmax[target] with Python's exact-ish float arithmetic (math.fsum)."""
    out = []
    for row, t in zip(logits, targets):
        m = max(row)
        lse = m + math.log(math.fsum(math.exp(z - m) for z in row))
        out.append(lse - row[t])
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_at_logits_of_magnitude_1e4(dtype):
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((6, 10)) * 1e4).astype(dtype)
    logits[0, 3] = 1e4                                    # a clear winner in row 0
    targets = np.array([3, 0, 9, 5, 1, 2])
    z = Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(z, tg.tensor(targets), reduction="none")
    expected = reference_cross_entropy(logits.astype(np.float64).tolist(), targets)
    assert np.all(np.isfinite(loss.numpy()))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6, atol=1e-3)
    loss.sum().backward()
    grad = z.grad.numpy()
    assert np.all(np.isfinite(grad))
    # d loss / d logits = softmax - onehot: each row sums to 0, the target entry is <= 0.
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6)
    assert np.all(grad[np.arange(6), targets] <= 0)


@pytest.mark.parametrize("how", ["bool", "additive -inf", "bool+causal"])
def test_attention_row_with_every_key_blocked_gives_zeros_never_nan(how):
    q, k, v = attention_inputs()
    if how == "additive -inf":
        additive = np.zeros((5, 5))
        additive[1] = -np.inf
        mask = tg.tensor(additive, dtype=tg.float64)
    else:
        allowed = np.ones((5, 5), dtype=bool)
        allowed[1] = False
        allowed[3, :2] = False                           # with causal, row 3 keeps keys 2, 3
        mask = tg.tensor(allowed)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal="causal" in how)
    y = out.numpy()
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[:, :, 1], 0.0)
    assert np.all(np.abs(y[:, :, [0, 2, 3, 4]]).sum(axis=-1) > 0)
    (out * Tensor(RNG.standard_normal(out.shape))).sum().backward()
    for t in (q, k, v):
        assert np.all(np.isfinite(t.grad.numpy()))
    np.testing.assert_array_equal(q.grad.numpy()[:, :, 1], 0.0)


def test_dropout_is_the_identity_at_p_zero_and_in_eval():
    x = tg.randn(4, 5, requires_grad=True)
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 0.7, training=False) is x
    out = F.scaled_dot_product_attention(*(tg.randn(1, 1, 3, 2) for _ in range(3)), dropout_p=0.0)
    assert np.all(out.numpy() != 0)


def test_dropout_scales_the_kept_elements_and_preserves_the_mean():
    p = 0.3
    x = tg.ones(200_000, requires_grad=True)
    tg.manual_seed(0)
    y = F.dropout(x, p)
    values = y.numpy()
    assert set(np.unique(values).tolist()) == {0.0, np.float32(1 / (1 - p))}
    dropped = (values == 0).mean()
    assert abs(dropped - p) < 0.01                        # ~10 standard deviations
    assert abs(values.mean() - 1.0) < 0.015
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), values)  # dx = keep / (1 - p)


def test_dropout_p_one_zeroes_everything():
    x = tg.randn(10, requires_grad=True)
    y = F.dropout(x, 1.0)
    np.testing.assert_array_equal(y.numpy(), 0.0)


def test_dropout_draws_the_same_mask_for_the_same_seed_and_another_for_another():
    x = tg.ones(1000)
    tg.manual_seed(5)
    a = F.dropout(x, 0.5).numpy()
    tg.manual_seed(5)
    b = F.dropout(x, 0.5).numpy()
    c = F.dropout(x, 0.5).numpy()                        # the generator moved on
    tg.manual_seed(6)
    d = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
