"""The gradient-check case table: one small example per registered op (floor 2).

`CASES` maps every op name in `OPS` to a case function

    case(rng, shapes=None) -> (fn, inputs)

where `rng` is a `numpy.random.Generator`, `inputs` is a list of float64 Tensors (the
differentiable ones with requires_grad=True; integer indices, targets and masks are inputs
too, without requires_grad, so that moving `inputs` to another device or dtype moves
everything `fn` uses) and `fn(*inputs)` returns a Tensor or a tuple of Tensors. Values are
kept away from kinks so that central differences are exact to rounding: relu and abs away
from 0, max without ties, log, sqrt and pow bases positive, divisors away from 0.

`shapes`, a tuple of input shapes, is accepted by the cases whose inputs can take any shape
(unary and binary elementwise ops, reductions, shape ops, matmul, softmax, gelu, dropout);
it is how the Hypothesis tests draw shapes. The other cases raise ValueError for it.

`run_check(name, rng)` runs `gradcheck` on a case and also reports the largest errors:

    >>> run_check("tanh", np.random.default_rng(0))["passed"]
    True

The random cases (`RANDOM_CASES`: dropout, the attentions with dropout) call
`tg.manual_seed(DROPOUT_SEED)` on every call of their fn, so that fn is one fixed function
of its inputs; this reseeds the global generators as a side effect.

Stable API (`python -m tinygpt gradcheck` is built on it): `CASES`, `GRADCHECK_OPTIONS`,
`RANDOM_CASES`, `run_check`, `inputs_on`, `missing_cases`, and the input
makers `normal`, `away_from_zero`, `positive`, `distinct` for new cases.
Imports: numpy and autograd.
"""

import numpy as np

from . import backend
from .function import OPS
from .gradcheck import GradcheckError, compare_gradients
from .ops.attention import ScaledDotProductAttentionOp, SelfAttentionOp
from .ops.elementwise import CastOp, ToDeviceOp
from .ops.fused import CrossEntropyOp, DropoutOp, EmbeddingOp, GeluOp, LayerNormOp, LinearOp
from .ops.rotary import RotaryOp
from .tensor import Tensor, cat, float32, manual_seed, stack, where

# Per-op keyword arguments for gradcheck where the defaults cannot work: `cast` goes
# through float32, whose rounding (6e-8 near 1) swamps a 1e-6 step; a 1e-3 step averages it.
GRADCHECK_OPTIONS = {"cast": {"eps": 1e-3}}

# Cases whose fn draws random numbers (reseeded on every call, so fn is a fixed function
# on one device): the masks differ between the NumPy and CuPy generators.
RANDOM_CASES = frozenset({"dropout", "scaled_dot_product_attention", "self_attention"})

DROPOUT_SEED = 1234


# --- inputs -------------------------------------------------------------------------------
def _leaf(array, requires_grad=True):
    return Tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


def normal(rng, shape, scale=1.0):
    """Standard normal values times `scale`."""
    return _leaf(rng.standard_normal(shape) * scale)


def away_from_zero(rng, shape, low=0.2, high=1.5):
    """|x| in [low, high] with a random sign: no kink of relu or abs within reach of eps."""
    magnitude = rng.uniform(low, high, size=shape)
    return _leaf(np.where(rng.random(shape) < 0.5, -magnitude, magnitude))


def positive(rng, shape, low=0.5, high=2.0):
    """Values in [low, high]: log, sqrt, pow bases and divisors are smooth there."""
    return _leaf(rng.uniform(low, high, size=shape))


def distinct(rng, shape):
    """Values at least 0.05 apart (a shuffled grid plus jitter): max has no ties."""
    n = int(np.prod(shape))
    grid = (rng.permutation(n) - n / 2) * 0.1 + rng.uniform(-0.025, 0.025, size=n)
    return _leaf(grid.reshape(shape))


def _ints(array):
    return Tensor(np.asarray(array, dtype=np.int64))


def _mask(array):
    return Tensor(np.asarray(array, dtype=bool))


def _no_shapes(name, shapes):
    if shapes is not None:
        raise ValueError(f"the {name!r} case has fixed shapes; got shapes={shapes!r}")


def _one_shape(shapes, default):
    if shapes is None:
        return default
    if len(shapes) != 1:
        raise ValueError(f"expected one input shape, got shapes={shapes!r}")
    return tuple(shapes[0])


# --- cases --------------------------------------------------------------------------------
def _unary(method, make=normal, default=(3, 4), min_dims=0):
    """A case for y = method(x) on one input drawn by `make`, of at least `min_dims` axes."""
    def case(rng, shapes=None):
        shape = _one_shape(shapes, default)
        if len(shape) < min_dims:
            raise ValueError(f"this case needs at least {min_dims} dimensions, got {shape}")
        return method, [make(rng, shape)]
    return case


def _binary(fn, make_a=normal, make_b=normal, default=((2, 1, 4), (3, 1))):
    """A case for fn(a, b) on two inputs whose shapes broadcast (default to (2, 3, 4))."""
    def case(rng, shapes=None):
        shape_a, shape_b = default if shapes is None else shapes
        return fn, [make_a(rng, tuple(shape_a)), make_b(rng, tuple(shape_b))]
    return case


def _add(a, b):
    return a + b


def _sub(a, b):
    return a - b


def _mul(a, b):
    return a * b


def _div(a, b):
    return a / b


def _pow(a, b):
    return a ** b


def _pow_case(rng, shapes=None):
    """a ** b with a tensor exponent (positive base), and a negative base to the constant
    integer power 3 (d/da = 3 a^2 needs no log)."""
    if shapes is not None:
        return _binary(_pow, positive, normal)(rng, shapes)
    a, b = positive(rng, (2, 1, 4)), normal(rng, (3, 1))
    c = away_from_zero(rng, (3, 2))
    return (lambda a, b, c: (a ** b, c ** 3)), [a, b, c]


def _where_case(rng, shapes=None):
    """where(cond, a, b); shapes (a, b) or (cond, a, b), cond defaults to their broadcast."""
    shapes = ((2, 3, 4), (2, 1, 4), (3, 1)) if shapes is None else tuple(map(tuple, shapes))
    if len(shapes) == 2:
        shapes = (np.broadcast_shapes(*shapes),) + shapes
    cond = _mask(rng.random(shapes[0]) < 0.5)
    return (lambda cond, a, b: where(cond, a, b)), [cond, normal(rng, shapes[1]),
                                                    normal(rng, shapes[2])]


def _masked_fill_case(rng, shapes=None):
    """x.masked_fill(mask, -2.5); shapes (x, mask), mask broadcastable to x."""
    shape_x, shape_mask = ((2, 3, 4), (3, 1)) if shapes is None else map(tuple, shapes)
    mask = _mask(rng.random(shape_mask) < 0.5)
    return (lambda x, mask: x.masked_fill(mask, -2.5)), [normal(rng, shape_x), mask]


def _reduction(method):
    """x.sum / x.mean over everything, over the last axis, and over axis 0 keeping it."""
    def fn(x):
        reduce = getattr(x, method)
        if x.ndim == 0:
            return reduce(), reduce(dim=-1)
        return reduce(), reduce(dim=-1), reduce(dim=(0,), keepdim=True)

    def case(rng, shapes=None):
        return fn, [normal(rng, _one_shape(shapes, (2, 3, 4)))]
    return case


def _max(x):
    if x.ndim == 0:
        return x.max()
    return x.max(), x.max(dim=-1).values, x.max(dim=0, keepdim=True).values


def _max_case(rng, shapes=None):
    """max over everything and along one axis; the values have no ties."""
    return _max, [distinct(rng, _one_shape(shapes, (3, 4)))]


def _cast(x):
    # Through float32 and back, so the gradient crosses two dtype conversions.
    return CastOp.apply(CastOp.apply(x, dtype=float32), dtype=x.dtype)


def _to_device(x):
    """To the other device and back when a GPU is there; to the same device otherwise."""
    other = x.device
    if x.device == "cuda":
        other = "cpu"
    elif backend.cuda_available():
        other = "cuda"
    return ToDeviceOp.apply(ToDeviceOp.apply(x, device=other), device=x.device)


def _reshape(x):
    return x.reshape(-1), x.reshape(tuple(reversed(x.shape)))


def _transpose(x):
    return x.transpose(0, -1)


def _permute(x):
    return x.permute(*range(x.ndim - 1, -1, -1)), x.permute(*range(1, x.ndim), 0)


def _expand_case(rng, shapes=None):
    """x of shape s expanded to (2,) + s with each size-1 axis grown to 3."""
    shape = _one_shape(shapes, (3, 1, 4))
    target = (2,) + tuple(3 if n == 1 else n for n in shape)
    return (lambda x: x.expand(*target)), [normal(rng, shape)]


def _getitem_case(rng, shapes=None):
    """Basic slices, an integer index with repeats and a negative entry (backward must
    scatter-add), a boolean mask, Ellipsis and None."""
    _no_shapes("getitem", shapes)
    x = normal(rng, (4, 3))
    idx = _ints([0, 2, 2, -1])
    mask = _mask([True, False, True, True])
    return (lambda x, idx, mask: (x[1:, ::2], x[idx], x[:, idx], x[mask], x[..., 0],
                                  x[None, 2])), [x, idx, mask]


def _cat_case(rng, shapes=None):
    """Three inputs joined along axis 1; the last needs no gradient."""
    _no_shapes("cat", shapes)
    a, b = normal(rng, (2, 1, 3)), normal(rng, (2, 2, 3))
    c = _leaf(rng.standard_normal((2, 3, 3)), requires_grad=False)
    return (lambda a, b, c: cat([a, b, c], dim=1)), [a, b, c]


def _stack_case(rng, shapes=None):
    """Three inputs of shape (2, 3) stacked along a new axis 1; the middle one is constant."""
    _no_shapes("stack", shapes)
    a, c = normal(rng, (2, 3)), normal(rng, (2, 3))
    b = _leaf(rng.standard_normal((2, 3)), requires_grad=False)
    return (lambda a, b, c: stack([a, b, c], dim=1)), [a, b, c]


def _matmul_case(rng, shapes=None):
    """a @ b for 2-D, batched with broadcast batch axes, 1-D @ 2-D, 2-D @ 1-D, 1-D @ 1-D;
    with `shapes` (a, b), just a @ b."""
    if shapes is not None:
        shape_a, shape_b = map(tuple, shapes)
        return (lambda a, b: a @ b), [normal(rng, shape_a), normal(rng, shape_b)]
    a, b = normal(rng, (3, 4)), normal(rng, (4, 2))
    batch_a, batch_b = normal(rng, (2, 1, 3, 4)), normal(rng, (5, 4, 2))
    v = normal(rng, (4,))
    return (lambda a, b, batch_a, batch_b, v: (a @ b, batch_a @ batch_b, v @ b, a @ v, v @ v)), \
        [a, b, batch_a, batch_b, v]


def _softmax_case(method):
    """x.softmax (or log_softmax) along the last and the first axis."""
    def fn(x):
        return getattr(x, method)(-1), getattr(x, method)(0)
    return _unary(fn, lambda rng, shape: normal(rng, shape, 2.0), min_dims=1)


def _gelu(x):
    return GeluOp.apply(x, approximate="none"), GeluOp.apply(x, approximate="tanh")


def _gelu_case(rng, shapes=None):
    """Both approximations: exact (erf) and tanh (GPT-2's)."""
    return _gelu, [normal(rng, _one_shape(shapes, (3, 4)), scale=1.5)]


def _dropout(x):
    # Reseed on every call so that fn is one fixed function of x (the same mask each time).
    manual_seed(DROPOUT_SEED)
    return DropoutOp.apply(x, p=0.3)


def _dropout_case(rng, shapes=None):
    return _dropout, [normal(rng, _one_shape(shapes, (4, 5)))]


def _linear_case(rng, shapes=None):
    """x (2, 3, 4) @ W^T with W (5, 4), with and without the bias (5,)."""
    _no_shapes("linear", shapes)
    x, w, b = normal(rng, (2, 3, 4)), normal(rng, (5, 4)), normal(rng, (5,))
    return (lambda x, w, b: (LinearOp.apply(x, w, b), LinearOp.apply(x, w))), [x, w, b]


def _layer_norm(x, w, b, b2):
    def norm(*params, n_axes=1, has_weight=False, has_bias=False):
        return LayerNormOp.apply(x, *params, n_axes=n_axes, eps=1e-5, has_weight=has_weight,
                               has_bias=has_bias)
    return (norm(w, b, has_weight=True, has_bias=True), norm(), norm(w, has_weight=True),
            norm(b2, n_axes=2, has_bias=True))


def _layer_norm_case(rng, shapes=None):
    """Over the last axis with weight and bias, with neither, with weight only; over the
    last two axes with bias only."""
    _no_shapes("layer_norm", shapes)
    x = normal(rng, (2, 3, 4), scale=2.0)
    w, b, b2 = normal(rng, (4,)), normal(rng, (4,)), normal(rng, (3, 4))
    return _layer_norm, [x, w, b, b2]


def _embedding_case(rng, shapes=None):
    """Rows of a (5, 4) table at (2, 3) indices with repeats (backward scatter-adds)."""
    _no_shapes("embedding", shapes)
    idx = _ints([[0, 3, 3], [4, 0, 1]])
    return (lambda idx, w: EmbeddingOp.apply(idx, w)), [idx, normal(rng, (5, 4))]


def _cross_entropy(logits, targets, targets_ignored, logits_3d, targets_3d):
    def loss(z, t, reduction="mean", ignore_index=-100):
        return CrossEntropyOp.apply(z, t, ignore_index=ignore_index, reduction=reduction)
    # (N, C, d) logits as F.cross_entropy takes them: classes moved last, then flattened.
    n, c, d = logits_3d.shape
    flat = logits_3d.permute(0, 2, 1).reshape(n * d, c)
    return (loss(logits, targets), loss(logits, targets, "sum"), loss(logits, targets, "none"),
            loss(logits, targets_ignored, ignore_index=-1),
            loss(logits, targets_ignored, "none", ignore_index=-1),
            loss(flat, targets_3d.reshape(-1)))


def _cross_entropy_case(rng, shapes=None):
    """Reductions mean, sum, none; ignore_index rows (mean and none); (N, C, d) logits."""
    _no_shapes("cross_entropy", shapes)
    logits, logits_3d = normal(rng, (4, 5), scale=2.0), normal(rng, (2, 5, 3), scale=2.0)
    targets = _ints([1, 0, 4, 4])
    targets_ignored = _ints([1, -1, 3, -1])
    targets_3d = _ints([[0, 2, -100], [4, 4, 1]])
    return _cross_entropy, [logits, targets, targets_ignored, logits_3d, targets_3d]


def _attention(q, k, v, allowed, additive):
    def attend(*mask, is_causal=False, dropout_p=0.0):
        if dropout_p:
            manual_seed(DROPOUT_SEED)  # the same dropout mask on every call
        return ScaledDotProductAttentionOp.apply(q, k, v, *mask, is_causal=is_causal,
                                               dropout_p=dropout_p, scale=0.5)
    return (attend(is_causal=True), attend(allowed), attend(additive),
            attend(allowed, is_causal=True), attend(is_causal=True, dropout_p=0.25))


def _attention_case(rng, shapes=None):
    """q, k, v (1, 2, 4, 3): causal; a boolean mask (True = attend) with one fully blocked
    row (its output and gradients are 0); an additive float mask; causal and boolean
    together; causal with dropout (reseeded)."""
    _no_shapes("scaled_dot_product_attention", shapes)
    q, k, v = (normal(rng, (1, 2, 4, 3)) for _ in range(3))
    allowed = rng.random((4, 4)) < 0.7
    allowed[:, 0] = True
    allowed[2] = False                                     # query 2 may attend to nothing
    additive = _leaf(rng.standard_normal((1, 1, 4, 4)), requires_grad=False)
    return _attention, [q, k, v, _mask(allowed), additive]


def _self_attention(qkv, key_mask):
    def attend(*mask, dropout_p=0.0, window=None):
        if dropout_p:
            manual_seed(DROPOUT_SEED)
        return SelfAttentionOp.apply(qkv, *mask, n_head=2, dropout_p=dropout_p, scale=0.5,
                                   window=window)
    return (attend(), attend(dropout_p=0.25), attend(window=2), attend(key_mask),
            attend(key_mask, window=3, dropout_p=0.25))


def _self_attention_case(rng, shapes=None):
    """Causal self-attention of qkv (2, 4, 3 * 6) with 2 heads of size 3: plain, with
    dropout (reseeded), banded (window 2), with padding (row 0 left-padded by 2, row 1
    right-padded by 1), and banded with padding and dropout."""
    _no_shapes("self_attention", shapes)
    key_mask = _mask([[False, False, True, True], [True, True, True, False]])
    return _self_attention, [normal(rng, (2, 4, 18)), key_mask]


def _rotary(x, shared, per_row):
    return (RotaryOp.apply(x, shared, base=10000.0, scale=1.0),
            RotaryOp.apply(x, per_row, base=100.0, scale=2.5))


def _rotary_case(rng, shapes=None):
    """x (2, 2, 4, 6) rotated at positions 3..6 shared by the batch (base 10000), and at
    per-row positions (row 0 left-padded by 2: 0, 0, 0, 1) with base 100 and scale 2.5."""
    _no_shapes("rotary", shapes)
    return _rotary, [normal(rng, (2, 2, 4, 6)), _ints([3, 4, 5, 6]),
                     _ints([[0, 0, 0, 1], [0, 1, 2, 3]])]


CASES = {
    "add": _binary(_add),
    "sub": _binary(_sub),
    "mul": _binary(_mul),
    "div": _binary(_div, normal, away_from_zero),
    "pow": _pow_case,
    "neg": _unary(Tensor.__neg__),
    "exp": _unary(Tensor.exp),
    "log": _unary(Tensor.log, positive),
    "sqrt": _unary(Tensor.sqrt, positive),
    "tanh": _unary(Tensor.tanh),
    "sigmoid": _unary(Tensor.sigmoid, lambda rng, shape: normal(rng, shape, 3.0)),
    "relu": _unary(Tensor.relu, away_from_zero),
    "abs": _unary(Tensor.abs, away_from_zero),
    "clone": _unary(Tensor.clone),
    "cast": _unary(_cast, lambda rng, shape: positive(rng, shape, 0.5, 1.0)),
    "to_device": _unary(_to_device),
    "masked_fill": _masked_fill_case,
    "where": _where_case,
    "sum": _reduction("sum"),
    "mean": _reduction("mean"),
    "max": _max_case,
    "reshape": _unary(_reshape, default=(2, 3, 4)),
    "transpose": _unary(_transpose, default=(2, 3, 4), min_dims=1),
    "permute": _unary(_permute, default=(2, 3, 4), min_dims=1),
    "expand": _expand_case,
    "getitem": _getitem_case,
    "cat": _cat_case,
    "stack": _stack_case,
    "matmul": _matmul_case,
    "linear": _linear_case,
    "softmax": _softmax_case("softmax"),
    "log_softmax": _softmax_case("log_softmax"),
    "cross_entropy": _cross_entropy_case,
    "layer_norm": _layer_norm_case,
    "gelu": _gelu_case,
    "embedding": _embedding_case,
    "dropout": _dropout_case,
    "scaled_dot_product_attention": _attention_case,
    "self_attention": _self_attention_case,
    "rotary": _rotary_case,
}


# --- running a case -----------------------------------------------------------------------
def inputs_on(inputs, device=None, dtype=None):
    """Fresh leaf copies of `inputs` on `device` and, for floating inputs, of `dtype`
    (None keeps each); requires_grad is kept."""
    out = []
    for t in inputs:
        data = t.data
        if device is not None:
            data = backend.to_device(data, backend.normalize_device(device))
        if dtype is not None and data.dtype.kind == "f":
            data = data.astype(dtype)
        elif data is t.data:
            data = data.copy()
        out.append(Tensor(data, requires_grad=t.requires_grad))
    return out


def run_check(name, rng, device="cpu"):
    """Gradient-check the case of op `name` and report:

    dict(op=name, shapes=[input shapes], max_abs_err=float, max_rel_err=float,
         passed=bool, error=None or the message of the failure)

    `passed` is gradcheck's verdict (with `GRADCHECK_OPTIONS[name]`) and the errors are
    those of its comparison (`compare_gradients`: each element differentiated once). A
    case that raises is reported as failed with the exception's text.
    Raises KeyError for a name that has no case.
    """
    if name not in CASES:
        raise KeyError(f"no gradient-check case for op {name!r}; known: {sorted(CASES)}")
    report = dict(op=name, shapes=None, max_abs_err=float("nan"), max_rel_err=float("nan"),
                  passed=False, error=None)
    try:
        fn, inputs = CASES[name](rng)
        if device != "cpu":
            inputs = inputs_on(inputs, device)
        report["shapes"] = [tuple(t.shape) for t in inputs]
        found = compare_gradients(fn, inputs, **GRADCHECK_OPTIONS.get(name, {}))
        report["max_abs_err"], report["max_rel_err"] = found.max_abs_err, found.max_rel_err
        report["passed"], report["error"] = found.failure is None, found.failure
    except GradcheckError as e:
        report["error"] = str(e)
    except Exception as e:  # a crash in the op is a failed check, reported with its type
        report["error"] = f"{type(e).__name__}: {e}"
    return report


def missing_cases():
    """Registered ops without a case (the registry test fails on any)."""
    return sorted(set(OPS) - set(CASES))
