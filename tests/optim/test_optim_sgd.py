"""SGD: momentum, dampening, Nesterov and weight decay against hand computation (and PyTorch
when installed), state save/load, bad arguments."""

import numpy as np
import pytest

import tinygpt as tg
from conftest import assert_close
from tinygpt.optim import SGD

VARIANTS = [
    dict(momentum=0.0, weight_decay=0.0),
    dict(momentum=0.0, weight_decay=0.1),
    dict(momentum=0.9),
    dict(momentum=0.9, weight_decay=0.05),
    dict(momentum=0.9, dampening=0.3, weight_decay=0.05),
    dict(momentum=0.8, nesterov=True),
    dict(momentum=0.8, nesterov=True, weight_decay=0.05),
]


def _hand_sgd(w, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """The textbook update, written out for the test."""
    buf = None
    for g in grads:
        d = g + weight_decay * w
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        w = w - lr * d
    return w


def _grads(seed, n=4, shape=(3, 2)):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), [rng.standard_normal(shape) for _ in range(n)]


def _run_sgd(w0, grads, **kwargs):
    p = tg.tensor(w0, requires_grad=True)
    opt = SGD([p], **kwargs)
    for g in grads:
        p.grad = tg.tensor(g)
        opt.step()
    return p, opt


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_sgd_matches_hand_computation(kwargs):
    w0, grads = _grads(0)
    p, _ = _run_sgd(w0, grads, lr=0.1, **kwargs)
    assert_close(p.numpy(), _hand_sgd(w0, grads, 0.1, **kwargs))


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_sgd_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    w0, grads = _grads(1)
    p, _ = _run_sgd(w0, grads, lr=0.05, **kwargs)
    t = torch.tensor(w0, requires_grad=True)
    ref = torch.optim.SGD([t], lr=0.05, **kwargs)
    for g in grads:
        t.grad = torch.tensor(g)
        ref.step()
    assert_close(p.numpy(), t.detach().numpy())


def test_sgd_does_not_write_into_the_gradient():
    w0, grads = _grads(2, n=1)
    p = tg.tensor(w0, requires_grad=True)
    p.grad = tg.tensor(grads[0])
    SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1).step()
    np.testing.assert_array_equal(p.grad.numpy(), grads[0])


def test_sgd_state_dict_round_trip():
    w0, grads = _grads(3, n=6)
    straight, opt = _run_sgd(w0, grads[:3], lr=0.1, momentum=0.9)
    saved, saved_w = opt.state_dict(), straight.numpy()
    for g in grads[3:]:
        straight.grad = tg.tensor(g)
        opt.step()
    resumed = tg.tensor(saved_w, requires_grad=True)
    opt2 = SGD([resumed], lr=0.1, momentum=0.9)
    opt2.load_state_dict(saved)
    for g in grads[3:]:
        resumed.grad = tg.tensor(g)
        opt2.step()
    np.testing.assert_array_equal(straight.numpy(), resumed.numpy())


def test_float32_stays_float32():
    w0, grads = _grads(4)
    p, opt = _run_sgd(w0.astype(np.float32), [g.astype(np.float32) for g in grads], lr=0.1,
                      momentum=0.9, weight_decay=0.1)
    assert p.dtype == np.float32 and opt.state[p]["momentum_buffer"].dtype == np.float32


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-0.1), "lr must be .*, got -0.1"),
    (dict(lr=0.1, momentum=-0.5), "momentum must be .*, got -0.5"),
    (dict(lr=0.1, weight_decay=-1), "weight_decay"),
    (dict(lr=0.1, nesterov=True), "nesterov"),
    (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening=0.1"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD([tg.ones(2, requires_grad=True)], **kwargs)
