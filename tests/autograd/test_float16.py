"""float16 data: every op keeps float16 (cross-entropy's loss is float32), within float16's
precision of the float32 result, and the ops that sum many elements (layer norm, softmax,
log-softmax, cross-entropy, attention's softmax) sum in float32, so a row whose float16 sum
would overflow stays finite. CPU kernels hand float16 to the references."""

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn.functional as F
from tinygpt.autograd import Tensor
from tinygpt.autograd.checks import CASES, RANDOM_CASES, inputs_on


@pytest.mark.parametrize("name", sorted(set(CASES) - RANDOM_CASES - {"cast", "to_device"}))
def test_float16_in_gives_float16_out_close_to_float32(name):
    fn, inputs = CASES[name](np.random.default_rng(0))
    outs = {}
    for dtype in (np.float16, np.float32):
        xs = inputs_on(inputs, dtype=dtype)
        ys = fn(*xs)
        ys = (ys,) if isinstance(ys, Tensor) else ys
        total = sum((y * 0.5).sum() for y in ys if y.requires_grad)
        total.backward()
        outs[dtype] = ([y.numpy() for y in ys],
                       [x.grad.numpy() for x in xs if x.requires_grad and x.grad is not None])
    for y16, y32 in zip(*(outs[d][0] for d in (np.float16, np.float32))):
        assert y16.dtype == (np.float32 if name == "cross_entropy" else np.float16), name
        np.testing.assert_allclose(y16.astype(np.float64), y32, rtol=2e-2, atol=2e-2)
    for g16, g32 in zip(*(outs[d][1] for d in (np.float16, np.float32))):
        assert g16.dtype == np.float16, name
        np.testing.assert_allclose(g16.astype(np.float64), g32, rtol=3e-2, atol=3e-2)


def test_sums_that_overflow_float16_stay_finite():
    # 4096 values of about 300: their float16 sum would pass 65504, float16's largest.
    x = tg.tensor(np.full((2, 4096), 300.0) + np.linspace(0, 1, 4096), dtype="float16",
                  requires_grad=True)
    y = F.layer_norm(x, (4096,))
    y.sum().backward()
    assert np.isfinite(y.numpy()).all() and np.isfinite(x.grad.numpy()).all()
    rounded = x.numpy().astype(np.float64)                      # what float16 holds
    expected = (rounded - rounded.mean(1, keepdims=True)) / np.sqrt(
        rounded.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y.numpy().astype(np.float64), expected, atol=2e-2)
    # 70000 equal logits: the softmax's sum is 70000 > 65504
    z = tg.tensor(np.zeros((1, 70000)), dtype="float16", requires_grad=True)
    p = F.softmax(z, -1)
    assert np.isfinite(p.numpy()).all() and p.numpy()[0, 0] > 0
    loss = F.cross_entropy(z, tg.tensor([3]))
    loss.backward()
    assert abs(loss.item() - np.log(70000)) < 1e-3 and np.isfinite(z.grad.numpy()).all()


def test_cpu_kernels_leave_float16_to_the_references():
    x = tg.tensor(np.ones((2, 3)), dtype="float16", requires_grad=True)
    assert type(F.gelu(x).grad_fn).__name__ == "GeluOp"
    assert type(F.gelu(x.float()).grad_fn).__name__ == "GeluBlockedOp"
