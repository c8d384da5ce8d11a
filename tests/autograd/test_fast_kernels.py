"""Every fast kernel equals its reference op, on every branch it has.

The registry: each kernel subclasses a registered reference, has a gradient-check case and
a row in BRANCHES below. Then each op's gradient-check case, and each branch of each kernel
(blocks and threads, split products, one-hot or scatter, attention tiles, the diagonal
shift's retry), runs twice: on the reference (`use_reference_ops()`) and on the kernel;
values and gradients along a random upstream must agree to the tolerance table's float64
(and float32) tolerances. The GPU's fused kernels run the same way on device "cuda": on a
GPU there, compiled, and on the test suite's CuPy stand-in without one, as array code
under cupy.fuse's rules.
"""

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn.functional as F
from conftest import TOLERANCES
from tinygpt.autograd import KERNELS, OPS, Tensor, backend, use_reference_ops
from tinygpt.autograd.checks import CASES, inputs_on
from tinygpt.autograd.fast import attention, embedding, products, threads

RNG = np.random.default_rng(20241203)


def run(fn, inputs, reference, seed=0):
    """fn's outputs and the gradients of sum(outputs * u) for a random u, as NumPy arrays,
    on the reference ops or on the fast kernels; fresh copies of `inputs` each time."""
    inputs = inputs_on(inputs)
    with use_reference_ops(reference):
        outs = fn(*inputs)
        outs = (outs,) if isinstance(outs, Tensor) else tuple(outs)
        rng = np.random.default_rng(seed)
        total = None
        for y in outs:
            if y.requires_grad:
                u = Tensor(backend.to_device(rng.standard_normal(y.shape).astype(y.dtype),
                                             y.device))
                term = (y * u).sum()
                total = term if total is None else total + term
        if total is not None:
            total.backward()
    grads = [t.grad.numpy() if t.grad is not None else None for t in inputs if t.requires_grad]
    return [y.numpy() for y in outs], grads


def assert_kernel_equals_reference(fn, inputs, dtype=np.float64, scale=1.0, device=None):
    """The fast kernels' values and gradients equal the references' (to the table's
    tolerance for `dtype`), on `device` (the inputs' by default); NaN where the reference
    has NaN."""
    inputs = inputs_on(inputs, device=device, dtype=dtype)
    (fast_y, fast_g), (ref_y, ref_g) = run(fn, inputs, False), run(fn, inputs, True)
    rtol, atol = TOLERANCES[np.dtype(dtype)]
    assert len(fast_y) == len(ref_y) and len(fast_g) == len(ref_g)
    for got, want in zip(fast_y + fast_g, ref_y + ref_g):
        assert (got is None) == (want is None)
        if got is not None:
            assert got.shape == want.shape and got.dtype == want.dtype
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale)


def leaf(shape, scale=1.0):
    return Tensor(RNG.standard_normal(shape) * scale, requires_grad=True)


def ints(values):
    return Tensor(np.asarray(values, dtype=np.int64))


# --- the registry --------------------------------------------------------------------------
def device_kernels(device):
    return sorted((name, cls) for name, kernels in KERNELS.items()
                  for kernel_device, cls in kernels.items() if kernel_device == device)


def cpu_kernels():
    return device_kernels("cpu")


def test_every_kernel_has_a_reference_a_case_and_branch_tests():
    assert cpu_kernels() and device_kernels("cuda"), "no fast kernel is registered"
    for name, kernels in KERNELS.items():
        for device, cls in kernels.items():
            assert name in OPS, f"fast kernel {cls.__name__} has no reference op {name!r}"
            assert issubclass(cls, OPS[name]) and cls is not OPS[name]
            assert cls.name == name
            assert name in CASES, f"op {name!r} has a fast kernel but no gradient-check case"
            assert cls.__name__ in BRANCHES, f"{cls.__name__} has no row in BRANCHES"


def test_a_kernel_for_an_unregistered_op_or_not_a_subclass_is_refused():
    from tinygpt.autograd import Function, register_kernel
    with pytest.raises(ValueError, match="no op is registered"):
        register_kernel("no_such_op")(type("Stray", (Function,), {}))
    with pytest.raises(TypeError, match="must subclass the reference op"):
        register_kernel("gelu")(type("Unrelated", (Function,), {}))
    with pytest.raises(ValueError, match="two fast kernels"):
        register_kernel("gelu")(type("Second", (OPS["gelu"],), {}))


def test_the_switch_chooses_the_class_that_runs():
    x = tg.randn(3, 4, requires_grad=True)
    assert type(F.gelu(x).grad_fn).__name__ == "GeluBlockedOp"
    with use_reference_ops():
        assert tg.autograd.reference_ops_enabled()
        assert type(F.gelu(x).grad_fn) is OPS["gelu"]
    assert not tg.autograd.reference_ops_enabled()
    assert type(F.gelu(x).grad_fn).__name__ == "GeluBlockedOp"


def test_the_environment_variable_starts_on_the_references():
    import subprocess
    import sys
    code = ("import tinygpt as tg, tinygpt.nn.functional as F; "
            "print(type(F.gelu(tg.randn(2, requires_grad=True)).grad_fn).__name__)")
    for value, expected in (("1", "GeluOp"), ("0", "GeluBlockedOp")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**__import__("os").environ, "TINYGPT_REFERENCE_OPS": value})
        assert out.stdout.strip() == expected, out.stderr


# --- each op's gradient-check case on both -----------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", [name for name, _ in cpu_kernels()])
def test_the_case_of_each_kernel_equals_the_reference(name, dtype):
    fn, inputs = CASES[name](np.random.default_rng(0))
    assert_kernel_equals_reference(fn, inputs, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", [name for name, _ in device_kernels("cuda")])
def test_the_case_of_each_gpu_kernel_equals_the_reference(name, dtype, cuda_device):
    fn, inputs = CASES[name](np.random.default_rng(0))
    assert_kernel_equals_reference(fn, inputs, dtype, device=cuda_device)


# --- every branch of every kernel ------------------------------------------------------------
@pytest.fixture(params=["whole", "rows", "blas"])
def splitting(request, monkeypatch):
    """Products whole, or on 2 threads (every product, however small): split by rows over
    tinygpt's threads, or whole on BLAS's threads (every product thin)."""
    if request.param != "whole":
        monkeypatch.setattr(products, "SPLIT_MACS", 1)
        monkeypatch.setattr(products, "SPLIT_THIN_MACS", 1)
        monkeypatch.setattr(products, "SPLIT_SUM_ELEMENTS", 1)
        monkeypatch.setattr(products, "THIN_ROWS", 0 if request.param == "rows" else 1 << 30)
    previous = threads.get_num_threads()
    threads.set_num_threads(2)
    yield request.param
    threads.set_num_threads(previous)


# class ids of 15 rows of 6 logits, two of them ignored (-100, the default ignore_index)
TARGETS = [2, 0, -100, 5, 1, 5, 3, -100, 4, 0, 1, 2, 3, 4, 5]


def _layer_norm(x, w, b, w2):
    return (F.layer_norm(x, (6,), w, b), F.layer_norm(x, (6,)), F.layer_norm(x, (6,), w),
            F.layer_norm(x, (6,), None, b), F.layer_norm(x, (3, 6), w2))


def _cross_entropy(logits):
    t = tg.tensor(TARGETS, device=logits.device)
    return tuple(F.cross_entropy(logits, t, reduction=r) for r in ("mean", "sum", "none")) + (
        F.cross_entropy(logits, tg.tensor([-100] * 15, device=logits.device), reduction="sum"),)


BLOCKED = {
    "GeluBlockedOp": [
        (lambda x: (F.gelu(x, "tanh"), F.gelu(x, "none")), [(5, 3, 6)]),
    ],
    "LayerNormBlockedOp": [(_layer_norm, [(5, 3, 6), (6,), (6,), (3, 6)])],
    "SoftmaxBlockedOp": [(lambda x: (F.softmax(x, -1), F.softmax(x, 0), F.softmax(x, 1)),
                        [(5, 3, 6)])],
    "LogSoftmaxBlockedOp": [(lambda x: (F.log_softmax(x, -1), F.log_softmax(x, 0)),
                           [(5, 3, 6)])],
    "CrossEntropyBlockedOp": [(_cross_entropy, [(15, 6)])],
}
SPLIT = {
    "LinearThreadsOp": [
        (lambda x, w, b: (F.linear(x, w, b), F.linear(x, w)), [(4, 5, 6), (7, 6), (7,)]),
        (lambda x, w, b: F.linear(x.detach(), w, b), [(9, 6), (7, 6), (7,)]),   # no dx
        (lambda x, w, b: F.linear(x, w.detach()), [(9, 6), (7, 6), (7,)]),      # no dW
        (lambda x, w, b: F.linear(x, w, b), [(1, 1, 6), (40, 6), (40,)]),       # one row
    ],
    "MatMulThreadsOp": [
        (lambda a, b: a @ b, [(3, 4, 5), (5, 6)]),          # a stack times one matrix
        (lambda a, b: a @ b, [(2, 1, 4, 5), (3, 5, 2)]),    # broadcast batch axes
        (lambda a, b: a @ b, [(4, 5), (5,)]),               # matrix times vector
        (lambda a, b: a @ b.detach(), [(3, 4, 5), (5, 6)]),
    ],
}
def _softmaxes(x):
    return F.softmax(x, -1), F.softmax(x, 0), F.log_softmax(x, -1), F.log_softmax(x, 1)


def _cross_entropy_rows(logits):
    """Logits far apart (a row's max many units above the rest); class 5 ignored."""
    t = tg.tensor([max(c, 0) for c in TARGETS], device=logits.device)
    return (F.cross_entropy(logits * 40.0, t), F.cross_entropy(logits, t, ignore_index=5),
            F.cross_entropy(logits, t, ignore_index=5, reduction="sum"))


def _attend(variant, dropout_p):
    def attend(qkv):
        tg.manual_seed(7)                  # the same dropout mask on both
        options = dict(ATTENTION[variant])
        if "key_mask" in options:
            options["key_mask"] = tg.tensor(options["key_mask"], device=qkv.device)
        return F.self_attention(qkv, 2, dropout_p=dropout_p, **options)
    return attend


def _sdpa(q, k, v):
    """Every mask of scaled_dot_product_attention: none, causal, boolean with a fully
    blocked query, additive, both with causal; one query over many keys (generation's)."""
    rng = np.random.default_rng(5)                     # the same masks on both runs
    allowed = rng.random((5, 6)) < 0.6
    allowed[:, 0], allowed[3] = True, False
    allowed = tg.tensor(allowed, device=q.device)
    additive = tg.tensor(rng.standard_normal((1, 1, 5, 6)), dtype=q.dtype, device=q.device)
    tg.manual_seed(7)                                  # the same dropout mask on both
    attend = F.scaled_dot_product_attention
    return (attend(q, k, v), attend(q, k, v, is_causal=True), attend(q, k, v, attn_mask=allowed),
            attend(q, k, v, attn_mask=additive, is_causal=True),
            attend(q, k, v, attn_mask=allowed, is_causal=True, dropout_p=0.25),
            attend(q[:, :, -1:], k, v))


# The GPU's fused kernels, run on device "cuda": every option of each.
FUSED = {
    "GeluFusedOp": [(lambda x: (F.gelu(x, "tanh"), F.gelu(x, "none")), [(5, 3, 6)])],
    "LayerNormFusedOp": [(_layer_norm, [(5, 3, 6), (6,), (6,), (3, 6)])],
    "SoftmaxFusedOp": [(_softmaxes, [(5, 3, 6)])],
    "LogSoftmaxFusedOp": [(_softmaxes, [(5, 3, 6)])],
    "CrossEntropyFusedOp": [(_cross_entropy, [(15, 6)]), (_cross_entropy_rows, [(15, 6)])],
    "SelfAttentionFusedOp": [(_attend(variant, dropout_p), [(3, 7, 3 * 8)])
                           for variant in ("causal", "banded", "padded", "banded+padded",
                                           "wide band") for dropout_p in (0.0, 0.3)],
    "ScaledDotProductAttentionFusedOp": [(_sdpa, [(2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 3)])],
}
BRANCHES = {**{k: len(v) for k, v in BLOCKED.items()}, **{k: len(v) for k, v in SPLIT.items()},
            **{k: len(v) for k, v in FUSED.items()},
            "EmbeddingOneHotOp": 2, "SelfAttentionTiledOp": 3}


# Attention's branches in float64, as the CPU's tiles: in float32 its gradients differ from
# float64's by a few 1e-6 at these input scales (the reference's as much as the kernel's),
# past the table's float32 atol; its gradient-check case runs in float32 above.
FLOAT64_ONLY = {"SelfAttentionFusedOp", "ScaledDotProductAttentionFusedOp"}


@pytest.mark.cuda
@pytest.mark.parametrize("kernel, index, dtype", [
    (k, i, dtype) for k, v in FUSED.items() for i in range(len(v))
    for dtype in ((np.float64,) if k in FLOAT64_ONLY else (np.float64, np.float32))])
def test_fused_gpu_kernels_equal_the_reference(kernel, index, dtype, cuda_device):
    fn, shapes = FUSED[kernel][index]
    assert_kernel_equals_reference(fn, [leaf(s, 2.0) for s in shapes], dtype,
                                   device=cuda_device)


@pytest.mark.parametrize("kernel, index", [(k, i) for k, v in BLOCKED.items()
                                           for i in range(len(v))])
def test_blocked_kernels_equal_the_reference_whatever_the_blocks(kernel, index, blocking):
    fn, shapes = BLOCKED[kernel][index]
    assert_kernel_equals_reference(fn, [leaf(s, 2.0) for s in shapes])


@pytest.mark.parametrize("kernel, index", [(k, i) for k, v in SPLIT.items()
                                           for i in range(len(v))])
def test_product_kernels_equal_the_reference_whole_or_split(kernel, index, splitting):
    fn, shapes = SPLIT[kernel][index]
    assert_kernel_equals_reference(fn, [leaf(s) for s in shapes])


@pytest.mark.parametrize("limit", [1 << 24, 0], ids=["one-hot", "scatter-add"])
def test_embedding_backward_sums_repeated_ids_on_both_branches(limit, monkeypatch):
    monkeypatch.setattr(embedding, "ONE_HOT_LIMIT", limit)
    idx = ints([[0, 3, 3, 6], [6, 6, 1, 0], [3, 3, 3, 3]])       # repeats within and across rows
    weight = leaf((7, 4))
    assert_kernel_equals_reference(lambda w, i: F.embedding(i, w), [weight, idx])
    # and the sums are really there: row 3 appears six times
    w = Tensor(np.zeros((7, 4)), requires_grad=True)
    F.embedding(idx, w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy()[:, 0], [2, 1, 0, 6, 0, 0, 3])


# Padding of each of 3 sequences of 7: left-padded by 3, right-padded by 2, none.
KEY_MASK = np.ones((3, 7), dtype=bool)
KEY_MASK[0, :3] = False
KEY_MASK[1, 5:] = False
ATTENTION = {"causal": {}, "banded": dict(window=3), "padded": dict(key_mask=KEY_MASK),
             "banded+padded": dict(window=2, key_mask=KEY_MASK), "wide band": dict(window=9)}


@pytest.mark.parametrize("block_bytes, query_block", [(1 << 20, 64), (1, 64), (1, 2), (1 << 20, 1)])
@pytest.mark.parametrize("tiles", ["threads", "one at a time"])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("variant", sorted(ATTENTION))
def test_self_attention_tiles_equal_the_reference(block_bytes, query_block, tiles, dropout_p,
                                                  variant, monkeypatch):
    # 1 byte: one sequence a tile; query blocks of 2 or 1 rows skip the blocked keys (and,
    # banded, the keys left of the band)
    monkeypatch.setattr(attention, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(attention, "QUERY_BLOCK", query_block)
    previous = threads.get_num_threads()
    if tiles == "one at a time":        # products too large for one BLAS thread
        monkeypatch.setattr(attention, "SERIAL_BLAS_MACS", 0)
        monkeypatch.setattr(attention.blas, "can_limit_blas_threads", lambda: False)
    else:
        threads.set_num_threads(2)

    def attend(qkv):
        tg.manual_seed(7)                  # the same dropout mask on both
        return F.self_attention(qkv, 2, dropout_p=dropout_p, **ATTENTION[variant])
    try:
        assert_kernel_equals_reference(attend, [leaf((3, 7, 3 * 8))])
    finally:
        threads.set_num_threads(previous)


def test_a_band_at_least_as_wide_as_the_sequence_is_the_dense_causal_op():
    qkv = leaf((2, 6, 3 * 4))
    for reference in (True, False):
        (dense, dense_grad), (wide, wide_grad) = (
            run(lambda x: F.self_attention(x, 2, window=window), [qkv], reference)
            for window in (None, 6))
        np.testing.assert_allclose(wide[0], dense[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(wide_grad[0], dense_grad[0], rtol=1e-12, atol=1e-13)


def test_a_padded_query_far_below_its_own_score_is_computed_exactly(monkeypatch):
    # Query 2 of the sequence is padding: the kernel cannot shift its row by its own
    # (blocked) diagonal score, which here lies 2000 above every key it sees, so that
    # exp(S - S_22) would be 0 for all of them.
    monkeypatch.setattr(attention, "QUERY_BLOCK", 2)
    u = np.full(4, 10.0)
    q = np.stack([u, u, u, u])
    k = np.stack([-u, -u, u * 6, -u])
    v = RNG.standard_normal((4, 4))
    qkv = Tensor(np.concatenate([q, k, v], axis=1)[None], requires_grad=True)
    mask = np.array([[True, True, False, True]])
    assert_kernel_equals_reference(lambda x: F.self_attention(x, 1, key_mask=mask), [qkv])
    (y,), _ = run(lambda x: F.self_attention(x, 1, key_mask=mask), [qkv], False)
    assert np.isfinite(y).all() and np.abs(y[0, 2]).sum() > 0


@pytest.mark.parametrize("dtype,c", [(np.float32, 4.5), (np.float64, 12.0)])
def test_self_attention_row_far_above_its_diagonal_is_redone_with_its_max(dtype, c,
                                                                          monkeypatch):
    # The kernel shifts each score row by its diagonal score. Here key 0 scores 2 * 8 c^2 /
    # sqrt(8) above keys 1 and 2 (115 for float32, 815 for float64): exp of that
    # overflows, and those rows must be redone with their exact max.
    exact_calls = []
    exp_scores = attention._exp_scores
    monkeypatch.setattr(attention, "_exp_scores", lambda *a: exact_calls.append(a[-1])
                        or exp_scores(*a))
    u = np.full(8, c)
    q, k = np.stack([u, u, u, u]), np.stack([u, -u, -u, u * 0.5])
    v = RNG.standard_normal((4, 8))
    qkv = Tensor(np.concatenate([q, k, v], axis=1)[None], requires_grad=True)
    assert_kernel_equals_reference(lambda qkv: F.self_attention(qkv, 1), [qkv], dtype, scale=c)
    assert True in exact_calls
