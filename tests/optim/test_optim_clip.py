"""clip_grad_norm_: the returned norm, the scaling (direction kept, length capped), other
norms, parameters without gradients, non-finite norms, bad arguments."""

import math

import numpy as np
import pytest

import tinygpt as tg
from conftest import assert_close
from tinygpt.optim import clip_grad_norm_


def _params_with_grads(grads, dtype=np.float64, device="cpu"):
    params = []
    for g in grads:
        p = tg.zeros(*np.shape(g), dtype=dtype, device=device, requires_grad=True)
        p.grad = tg.tensor(np.asarray(g, dtype=dtype), device=device)
        params.append(p)
    return params


def _grads(seed=0, scale=10.0):
    rng = np.random.default_rng(seed)
    return [scale * rng.standard_normal(s) for s in [(4, 3), (3,), (2, 2, 5)]]


def test_returns_the_total_norm_and_scales_to_max_norm(device):
    grads = _grads()
    params = _params_with_grads(grads, device=device)
    expected = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    total = clip_grad_norm_(params, max_norm=1.0)
    assert isinstance(total, tg.Tensor) and total.shape == ()
    assert_close(float(total), expected)
    coef = 1.0 / (expected + 1e-6)
    for p, g in zip(params, grads):
        assert_close(p.grad.numpy(), g * coef)   # one factor for all: the direction is kept
    new_norm = math.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for p in params))
    assert new_norm <= 1.0 and new_norm == pytest.approx(1.0, abs=1e-5)


def test_gradients_under_the_limit_are_untouched():
    grads = _grads(scale=0.01)
    params = _params_with_grads(grads)
    arrays = [p.grad.data for p in params]
    total = clip_grad_norm_(params, max_norm=5.0)
    assert float(total) < 5.0
    for p, a, g in zip(params, arrays, grads):
        assert p.grad.data is a
        np.testing.assert_array_equal(a, g)


@pytest.mark.parametrize("norm_type", [1.0, 3.0, math.inf])
def test_other_norms(norm_type, device):
    grads = _grads(1)
    params = _params_with_grads(grads, device=device)
    flat = np.concatenate([g.ravel() for g in grads])
    expected = np.abs(flat).max() if norm_type == math.inf else \
        (np.abs(flat) ** norm_type).sum() ** (1 / norm_type)
    total = clip_grad_norm_(params, max_norm=0.5, norm_type=norm_type)
    assert_close(float(total), expected)
    for p, g in zip(params, grads):
        assert_close(p.grad.numpy(), g * 0.5 / (expected + 1e-6))


def test_matches_torch():
    torch = pytest.importorskip("torch")
    grads = _grads(2)
    params = _params_with_grads(grads, dtype=np.float32)
    tensors = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g, dtype=torch.float32)
    total = clip_grad_norm_(params, 1.0)
    ref = torch.nn.utils.clip_grad_norm_(tensors, 1.0)
    assert total.dtype == np.float32
    assert_close(float(total), float(ref), dtype=np.float32)
    for p, t in zip(params, tensors):
        assert_close(p.grad.numpy(), t.grad.numpy(), dtype=np.float32)


def test_a_single_tensor_and_parameters_without_gradients():
    with_grad = _params_with_grads([[3.0, 4.0]])[0]
    without = tg.zeros(3, requires_grad=True)
    assert float(clip_grad_norm_([without, with_grad], 100.0)) == pytest.approx(5.0)
    assert float(clip_grad_norm_(with_grad, 100.0)) == pytest.approx(5.0)
    assert float(clip_grad_norm_([without], 1.0)) == 0.0
    assert without.grad is None


def test_non_finite_norm(device):
    params = _params_with_grads([[np.nan, 1.0]], device=device)
    with pytest.raises(RuntimeError, match="nan"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert math.isnan(float(clip_grad_norm_(params, 1.0)))
    assert np.isnan(params[0].grad.numpy()).all()       # scaled by a NaN factor, as PyTorch


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_norm=-1.0), "max_norm"),
    (dict(max_norm=1.0, norm_type=0.0), "norm_type"),
    (dict(max_norm=1.0, norm_type=-2.0), "norm_type"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        clip_grad_norm_(_params_with_grads([[1.0]]), **kwargs)


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_gradients_of_two_dtypes_keep_their_dtypes(norm_type, device):
    grads = _grads(3)
    params = (_params_with_grads(grads[:2], np.float32, device)
              + _params_with_grads(grads[2:], np.float64, device))
    flat = np.concatenate([g.ravel() for g in grads])
    expected = np.abs(flat).max() if norm_type == math.inf else np.sqrt((flat ** 2).sum())
    total = clip_grad_norm_(params, max_norm=1.0, norm_type=norm_type)
    assert_close(float(total), expected, dtype=np.float32)
    for p, g, dtype in zip(params, grads, [np.float32, np.float32, np.float64]):
        assert p.grad.dtype == dtype and p.grad.shape == g.shape
        assert_close(p.grad.numpy(), g / (expected + 1e-6), dtype=np.float32)
