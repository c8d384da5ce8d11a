"""The backward pass: shared intermediates, long chains, freeing the graph, retain_graph,
grad mode, accumulation, ownership of .grad arrays, hooks and retain_grad.
"""

import gc
import math
import sys
import weakref

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.autograd import Tensor


def f64(values, requires_grad=True):
    return tg.tensor(values, dtype=tg.float64, requires_grad=requires_grad)


@pytest.mark.parametrize("order", ["y*y + y", "y + y*y"])
def test_diamond_sharing_an_intermediate(order):
    a, b = f64([1.5, -2.0, 0.5]), f64([0.3, 0.7, -1.1])
    y = a * b                        # used three times below, reached by two paths
    z = y * y + y if order == "y*y + y" else y + y * y
    z.sum().backward()
    y_np = a.numpy() * b.numpy()
    np.testing.assert_allclose(a.grad.numpy(), (2 * y_np + 1) * b.numpy(), rtol=1e-15)
    np.testing.assert_allclose(b.grad.numpy(), (2 * y_np + 1) * a.numpy(), rtol=1e-15)


def test_deep_diamond_where_one_path_is_longer():
    x = f64([0.5, -1.0])
    y = x.exp()
    long_path = ((y * 2.0).tanh() * 3.0).sigmoid()
    (y + long_path).sum().backward()
    e = np.exp(x.numpy())
    t = np.tanh(2 * e)
    s = 1 / (1 + np.exp(-3 * t))
    expected = e * (1 + s * (1 - s) * 3 * (1 - t * t) * 2)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-13)


def test_leaf_used_twice_in_one_op_and_across_ops():
    x = f64([2.0, 3.0])
    ((x * x) * x + x).sum().backward()   # d/dx (x^3 + x) = 3x^2 + 1
    np.testing.assert_array_equal(x.grad.numpy(), [13.0, 28.0])


def test_chain_of_100000_ops_at_the_default_recursion_limit():
    assert sys.getrecursionlimit() <= 10_000
    x = f64(1.0)
    y = x
    for _ in range(100_000):
        y = y * 1.00001
    y.backward()
    np.testing.assert_allclose(x.grad.item(), 1.00001 ** 100_000, rtol=1e-9)
    np.testing.assert_allclose(y.item(), math.exp(100_000 * math.log1p(1e-5)), rtol=1e-9)


def test_graph_is_freed_after_backward():
    x = f64(np.random.default_rng(0).standard_normal(5))
    hidden = x * 2.0
    out = hidden.exp()
    saved = out.grad_fn.saved[0]                 # exp saves its output array
    hidden_ref, saved_ref = weakref.ref(hidden), weakref.ref(saved)
    loss = out.sum()
    del hidden, out, saved
    assert hidden_ref() is not None and saved_ref() is not None  # the graph holds them
    loss.backward()
    # Freed by reference counting alone: no cycle keeps the activations alive.
    assert hidden_ref() is None, "an intermediate tensor outlived backward()"
    assert saved_ref() is None, "a saved array outlived backward()"
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp(2 * x.numpy()))


def test_retain_graph_keeps_the_graph():
    x = f64([1.0, 2.0])
    hidden = x * 3.0
    ref = weakref.ref(hidden)
    loss = (hidden * hidden).sum()
    del hidden
    loss.backward(retain_graph=True)
    gc.collect()
    assert ref() is not None
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * 18 * x.numpy())


def test_second_backward_through_a_freed_graph_raises_a_clear_error():
    x = f64([1.0, 2.0])
    loss = (x.exp() * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


def test_backward_through_a_partly_freed_graph_raises():
    x = f64([1.0, 2.0])
    shared = x.exp()
    shared.sum().backward()          # frees shared's ctx
    with pytest.raises(RuntimeError, match="freed"):
        (shared * 2.0).sum().backward()


def test_backward_on_a_non_scalar_needs_a_gradient():
    x = f64([1.0, 2.0, 3.0])
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"one-element.*\(3,\)"):
        y.backward()
    y.backward(tg.tensor([1.0, 0.0, -1.0], dtype=tg.float64))
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 0.0, -2.0])


def test_backward_with_a_gradient_of_the_wrong_shape_names_both_shapes():
    y = f64([1.0, 2.0]) * 2.0
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        y.backward(tg.tensor([1.0, 1.0, 1.0], dtype=tg.float64))


def test_backward_on_a_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (tg.tensor([1.0]) * 2.0).sum().backward()


def test_nothing_is_recorded_under_no_grad():
    x = f64([1.0, 2.0])
    with tg.no_grad():
        y = x * 2.0 + x.exp()
        with tg.enable_grad():
            z = x * 3.0
        w = z * 2.0
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert z.requires_grad and z.grad_fn is not None
    assert not w.requires_grad and w.grad_fn is None
    assert tg.is_grad_enabled()


def test_no_grad_as_a_decorator_and_after_an_exception():
    x = f64([1.0])

    @tg.no_grad()
    def double(t):
        return t * 2.0
    assert not double(x).requires_grad
    with pytest.raises(ZeroDivisionError):
        with tg.no_grad():
            1 / 0
    assert tg.is_grad_enabled() and (x * 2.0).requires_grad


def test_gradients_accumulate_across_backward_calls():
    x = f64([1.0, -2.0])
    (x * x).sum().backward()
    first = x.grad.numpy()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * first)


def test_leaf_grads_are_owned_by_each_leaf():
    x, y = f64([1.0, 2.0]), f64([3.0, 4.0])
    (x + y).sum().backward()           # add hands the same dy to both inputs
    assert not np.shares_memory(x.grad.data, y.grad.data)
    x.grad.data += 100.0
    np.testing.assert_array_equal(y.grad.numpy(), [1.0, 1.0])


def test_leaf_grad_does_not_alias_the_gradient_passed_in():
    x = f64([1.0, 2.0])
    upstream = tg.tensor([5.0, 6.0], dtype=tg.float64)
    (x + 0.0).backward(upstream)
    x.grad.data[0] = -1.0
    np.testing.assert_array_equal(upstream.numpy(), [5.0, 6.0])


def test_leaf_grad_from_a_broadcast_is_a_writable_array_of_the_leaf_shape():
    b = f64(0.5)
    x = f64([[1.0, 2.0], [3.0, 4.0]])
    (x * b).sum().backward()
    assert b.grad.shape == () and b.grad.item() == 10.0
    c = f64([1.0, 2.0, 3.0])
    c.expand(4, 3).sum().backward()
    c.grad.data += 1.0                 # would fail on a read-only broadcast view
    np.testing.assert_array_equal(c.grad.numpy(), [5.0, 5.0, 5.0])


def test_register_hook_sees_the_gradient_and_may_replace_it():
    x = f64([1.0, 2.0])
    y = x * 3.0
    seen = []
    y.register_hook(lambda g: seen.append(g.numpy().copy()))
    handle = y.register_hook(lambda g: g * 10.0)
    (y * y).sum().backward()
    np.testing.assert_array_equal(seen[0], 2 * y.numpy())
    np.testing.assert_array_equal(x.grad.numpy(), 10 * 2 * y.numpy() * 3)
    handle.remove()
    x.grad = None
    z = x * 3.0
    z.register_hook(lambda g: None)    # None keeps the gradient
    z.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_hook_on_a_leaf_changes_what_is_accumulated():
    x = f64([1.0, 2.0])
    x.register_hook(lambda g: g * 0.5)
    (x * 4.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


def test_retain_grad_keeps_an_intermediate_gradient():
    x = f64([1.0, 2.0])
    y = x * 2.0
    y.retain_grad()
    z = x * 5.0
    (y * y + z).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), 2 * y.numpy())
    assert z.grad is None
    np.testing.assert_array_equal(x.grad.numpy(), 2 * 2 * y.numpy() + 5)


def test_detach_cuts_the_graph_and_shares_memory():
    x = f64([1.0, 2.0])
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.grad_fn is None
    y = x * d
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), d.numpy())


def test_gradient_flows_only_to_inputs_that_require_it():
    x, c = f64([1.0, 2.0]), f64([3.0, 4.0], requires_grad=False)
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


def test_integer_and_boolean_results_do_not_require_grad():
    x = f64([1.0, -2.0])
    assert not (x > 0).requires_grad
    assert not x.argmax().requires_grad
    assert not x.max(dim=0).indices.requires_grad


def test_outputs_are_plain_tensors_of_the_backend_array_type():
    x = f64([[1.0, 2.0]])
    for y in (x.sum(), x.mean(), x.max(), x[0, 0], (x @ x.T)):
        assert isinstance(y, Tensor) and type(y.data) is np.ndarray
