"""Tensor.register_hook and retain_grad: order, values, replacement, removal."""

import numpy as np
import pytest

import tinygpt as tg


def leaf(values):
    return tg.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


def diamond():
    """x -> a = exp(x) -> b = tanh(a), c = a * a -> y = sum(b * c): a feeds two ops.

    Returns the tensors and dL/da, dL/dx worked out by hand."""
    x = leaf([0.1, -0.4, 0.3])
    a = x.exp()
    b = a.tanh()
    c = a * a
    y = (b * c).sum()
    av = np.exp(x.numpy())
    bv, cv = np.tanh(av), av * av
    db, dc = cv, bv
    da = db * (1 - bv ** 2) + dc * 2 * av
    return x, a, b, c, y, da, da * av


def test_hooks_run_in_reverse_topological_order_with_complete_gradients():
    x, a, b, c, y, da, dx = diamond()
    calls = []
    for name, t in [("x", x), ("a", a), ("b", b), ("c", c), ("y", y)]:
        t.register_hook(lambda g, name=name: calls.append((name, g.numpy().copy())))
    y.backward()
    names = [name for name, _ in calls]
    # Each hook runs once, after every consumer of its tensor: y first, x last, and a
    # (used by b and c) only once both have sent their part.
    assert sorted(names) == ["a", "b", "c", "x", "y"] and len(names) == 5
    assert names[0] == "y" and names[-1] == "x"
    assert names.index("a") > max(names.index("b"), names.index("c"))
    values = dict(calls)
    np.testing.assert_allclose(values["y"], 1.0)
    np.testing.assert_allclose(values["b"], c.numpy())
    np.testing.assert_allclose(values["c"], b.numpy())
    np.testing.assert_allclose(values["a"], da, rtol=1e-12)
    np.testing.assert_allclose(values["x"], dx, rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), dx, rtol=1e-12)


def test_hook_return_value_replaces_the_gradient_downstream():
    x, a, _, _, y, _, dx = diamond()
    a.register_hook(lambda g: g * 0.5)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 0.5 * dx, rtol=1e-12)

    # On a leaf, the replacement is what lands in .grad.
    z = leaf([1.0, 2.0])
    z.register_hook(lambda g: g + 10.0)
    (z * z).sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), 2 * np.array([1.0, 2.0]) + 10.0)


def test_hooks_chain_in_registration_order_and_none_keeps_the_gradient():
    x = leaf([1.0, -2.0])
    h = x * 3.0
    seen = []
    h.register_hook(lambda g: seen.append(("first", g.numpy().copy())))   # returns None
    h.register_hook(lambda g: g * 2.0)
    h.register_hook(lambda g: seen.append(("third", g.numpy().copy())))
    h.sum().backward()
    assert [name for name, _ in seen] == ["first", "third"]
    np.testing.assert_allclose(seen[0][1], [1.0, 1.0])
    np.testing.assert_allclose(seen[1][1], [2.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])


def test_handle_remove():
    x = leaf([1.0, 2.0, 3.0])
    calls = []
    handle = x.register_hook(lambda g: calls.append(1) or g * 0.0)
    kept = x.register_hook(lambda g: calls.append(2))
    handle.remove()
    handle.remove()                              # a second remove is harmless
    (x * x).sum().backward()
    assert calls == [2]
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0])
    kept.remove()
    x.grad = None
    (x * x).sum().backward()
    assert calls == [2]


def test_retain_grad_on_an_intermediate():
    x, a, b, c, y, da, dx = diamond()
    a.retain_grad()
    y.backward()
    np.testing.assert_allclose(a.grad.numpy(), da, rtol=1e-12)
    assert b.grad is None and c.grad is None    # not retained
    np.testing.assert_allclose(x.grad.numpy(), dx, rtol=1e-12)


def test_retained_grad_is_the_hooked_one_and_accumulates():
    x = leaf([0.5, 1.5])
    h = x.tanh()
    h.retain_grad()
    h.register_hook(lambda g: g * 3.0)
    (h * 2.0).sum().backward(retain_graph=True)
    np.testing.assert_allclose(h.grad.numpy(), [6.0, 6.0])
    (h * 2.0).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), [12.0, 12.0])


def test_hooks_and_retain_grad_need_requires_grad():
    x = tg.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        x.register_hook(lambda g: g)
    with pytest.raises(RuntimeError, match="does not require grad"):
        x.retain_grad()
