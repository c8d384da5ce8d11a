"""AdamW's fast versions (tinygpt/optim/adamw_fast.py) against its reference, the formula
line for line (`adamw_reference`, run under `tg.use_reference_ops()`): every branch of the
fast path (one parameter at a time, blocks on threads, flat buffers and their fallback on
a GPU), with weight decay on and off, in float64 (tight) and float32 (to rounding)."""

import numpy as np
import pytest

import tinygpt as tg
from conftest import assert_close
from tinygpt.autograd.fast import threads
from tinygpt.optim import AdamW, adamw_fast

SHAPES = [(5, 7), (3,), (4, 6), (6,)]
# transposed: a gradient that is not C-contiguous is updated whole, not in blocks
STRIDED = 2


def _run(device, dtype, weight_decay, reference, missing_grad=False):
    """Four AdamW steps on SHAPES' parameters in two groups (decayed, not); the parameters
    and both moments after them, as NumPy arrays."""
    rng = np.random.default_rng(7)
    params = [tg.tensor(rng.standard_normal(s).astype(dtype), device=device,
                        requires_grad=True) for s in SHAPES]
    opt = AdamW([{"params": params[:2], "weight_decay": weight_decay},
                 {"params": params[2:], "weight_decay": 0.0}], lr=0.02, betas=(0.8, 0.95))
    with tg.use_reference_ops(reference):
        for step in range(4):
            lr = [0.02, 0.01, 0.03, 0.005][step]          # a schedule changes it
            for group in opt.param_groups:
                group["lr"] = lr
            for i, p in enumerate(params):
                g = rng.standard_normal(SHAPES[i]).astype(dtype)
                if i == STRIDED:
                    g = np.ascontiguousarray(g.T).T
                p.grad = tg.tensor(g, device=device)
            if missing_grad and step == 2:
                params[3].grad = None                       # the GPU falls back
            opt.step()
    return [p.numpy() for p in params] + [
        tg.Tensor(opt.state[p][k]).numpy() for p in params for k in ("exp_avg", "exp_avg_sq")]


def _assert_equal_to_reference(got, want, dtype):
    assert len(got) == len(want) == 3 * len(SHAPES)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        assert_close(a, b, dtype=dtype)


DTYPES = [np.float64, np.float32]
DECAY = pytest.mark.parametrize("weight_decay", [0.1, 0.0], ids=["decay", "no-decay"])


@DECAY
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("n_threads,parallel_elements", [(1, 1 << 30), (1, 1), (3, 1)],
                         ids=["one-at-a-time", "blocks", "blocks-3-threads"])
def test_cpu_fast_versions_equal_the_reference(n_threads, parallel_elements, dtype,
                                               weight_decay, monkeypatch):
    monkeypatch.setattr(adamw_fast, "PARALLEL_ELEMENTS", parallel_elements)
    monkeypatch.setattr(threads, "BLOCK_ELEMENTS", 4)
    previous = threads.get_num_threads()
    threads.set_num_threads(n_threads)
    try:
        fast = _run("cpu", dtype, weight_decay, reference=False)
    finally:
        threads.set_num_threads(previous)
    _assert_equal_to_reference(fast, _run("cpu", dtype, weight_decay, reference=True), dtype)


@pytest.mark.cuda
@DECAY
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("missing_grad", [False, True], ids=["flat-buffers", "fallback"])
def test_gpu_fast_versions_equal_the_reference(missing_grad, dtype, weight_decay,
                                               cuda_device):
    fast = _run(cuda_device, dtype, weight_decay, reference=False, missing_grad=missing_grad)
    want = _run(cuda_device, dtype, weight_decay, reference=True, missing_grad=missing_grad)
    _assert_equal_to_reference(fast, want, dtype)


def test_the_reference_is_the_formula_line_for_line():
    """adamw_reference against the formula written out here in float64, PyTorch's order:
    the decoupled decay first, then the moments, their bias corrections and the step."""
    from tinygpt.optim.adamw import adamw_reference
    rng = np.random.default_rng(1)
    p = rng.standard_normal(10)
    m, v = np.zeros(10), np.zeros(10)
    w, mm, vv = p.copy(), m.copy(), v.copy()
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.99, 1e-8, 0.1
    for t in range(1, 4):
        g = rng.standard_normal(10)
        adamw_reference(np, p, g, m, v, t, lr, b1, b2, eps, wd)
        w = w * (1 - lr * wd)
        mm = b1 * mm + (1 - b1) * g
        vv = b2 * vv + (1 - b2) * g ** 2
        w = w - lr * (mm / (1 - b1 ** t)) / (np.sqrt(vv / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(p, w, rtol=1e-15, atol=0)
        np.testing.assert_allclose(m, mm, rtol=1e-15, atol=0)
        np.testing.assert_allclose(v, vv, rtol=1e-15, atol=0)
