"""The blocked, multi-threaded kernels give the same values and gradients whatever the
block size and thread count (small blocks force many blocks on small test tensors)."""

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn.functional as F
from tinygpt.autograd import backend
from tinygpt.autograd.ops import attention


@pytest.fixture(params=[(1 << 15, 1), (7, 1), (7, 2), (1, 3)],
                ids=["one-block", "blocks", "blocks-2-threads", "rows-3-threads"])
def blocking(request, monkeypatch):
    elements, threads = request.param
    monkeypatch.setattr(backend, "BLOCK_ELEMENTS", elements)
    previous = backend.get_num_threads()
    backend.set_num_threads(threads)
    yield
    backend.set_num_threads(previous)


def run(fn, *shapes, seed=0):
    """Output and input gradients of fn on float64 inputs, along a random upstream."""
    rng = np.random.default_rng(seed)
    inputs = [tg.tensor(rng.standard_normal(s), dtype="float64", requires_grad=True)
              for s in shapes]
    out = fn(*inputs)
    out.backward(tg.tensor(rng.standard_normal(out.shape)))
    return [out.numpy()] + [t.grad.numpy() for t in inputs]


def reference(fn, *shapes):
    """The same computation in one block on one thread."""
    previous = backend.get_num_threads(), backend.BLOCK_ELEMENTS
    backend.set_num_threads(1)
    backend.BLOCK_ELEMENTS = 1 << 30
    try:
        return run(fn, *shapes)
    finally:
        backend.set_num_threads(previous[0])
        backend.BLOCK_ELEMENTS = previous[1]


# class ids of 15 rows of 6 logits, two of them ignored (-100, the default ignore_index)
TARGETS = np.array([2, 0, -100, 5, 1, 5, 3, -100, 4, 0, 1, 2, 3, 4, 5])

CASES = {
    "gelu tanh": (lambda x: F.gelu(x, "tanh"), [(5, 3, 6)]),
    "gelu exact": (lambda x: F.gelu(x, "none"), [(5, 3, 6)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (6,), w, b), [(5, 3, 6), (6,), (6,)]),
    "layer_norm 2 axes": (lambda x, w: F.layer_norm(x, (3, 6), w), [(5, 3, 6), (3, 6)]),
    "softmax": (lambda x: F.softmax(x, -1), [(5, 3, 6)]),
    "log_softmax": (lambda x: F.log_softmax(x, -1), [(5, 3, 6)]),
    "cross_entropy mean": (lambda x: F.cross_entropy(x, tg.tensor(TARGETS)), [(15, 6)]),
    "cross_entropy sum": (lambda x: F.cross_entropy(x, tg.tensor(TARGETS), reduction="sum"),
                          [(15, 6)]),
    "cross_entropy none": (lambda x: F.cross_entropy(x, tg.tensor(TARGETS), reduction="none"),
                           [(15, 6)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_blocked_elementwise_ops_match_one_block(name, blocking):
    fn, shapes = CASES[name]
    for got, want in zip(run(fn, *shapes), reference(fn, *shapes)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_for_blocks_covers_every_row_once(blocking):
    seen = np.zeros(23, dtype=int)

    def mark(rows):
        seen[rows] += 1
        return rows.start

    starts = backend.for_blocks(mark, np.zeros((23, 4)))
    assert np.all(seen == 1)
    assert starts == sorted(starts)


def test_for_blocks_gives_each_thread_the_same_number_of_blocks(monkeypatch):
    # 3 blocks' worth of rows on 2 threads: 4 smaller blocks, 2 a thread, not 2 + 1.
    monkeypatch.setattr(backend, "BLOCK_ELEMENTS", 8)
    previous = backend.get_num_threads()
    backend.set_num_threads(2)
    try:
        sizes = backend.for_blocks(lambda rows: rows.stop - rows.start, np.zeros((24, 1)))
    finally:
        backend.set_num_threads(previous)
    assert sizes == [6, 6, 6, 6]


def test_for_blocks_raises_an_error_from_a_worker_thread_and_stays_usable(blocking):
    import threading
    claimed = threading.Event()

    def fail_off_the_main_thread(rows):
        if threading.current_thread() is not threading.main_thread():
            claimed.set()
            raise KeyError(f"rows {rows.start}:{rows.stop}")
        claimed.wait(10)                    # until a worker has claimed a block
        return rows.start

    if backend.get_num_threads() > 1 and backend.BLOCK_ELEMENTS < 4 * 23:
        with pytest.raises(KeyError, match="rows"):
            backend.for_blocks(fail_off_the_main_thread, np.zeros((23, 4)))
        assert claimed.is_set()
    starts = backend.for_blocks(lambda rows: rows.start, np.zeros((23, 4)))
    assert starts == sorted(starts) and starts[0] == 0


@pytest.mark.parametrize("block_bytes, query_block", [(1 << 20, 64), (1, 64), (1, 2), (1 << 20, 1)])
@pytest.mark.parametrize("tiles", ["threads", "one at a time"])
def test_self_attention_blocks_match_scaled_dot_product_attention(block_bytes, query_block,
                                                                  tiles, monkeypatch, set_threads):
    # 1 byte: one sequence a block; query blocks of 2 or 1 rows skip the blocked keys
    monkeypatch.setattr(attention, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(attention, "QUERY_BLOCK", query_block)
    if tiles == "one at a time":        # products too large for one BLAS thread
        monkeypatch.setattr(attention, "SERIAL_BLAS_MACS", 0)
        monkeypatch.setattr(backend, "can_limit_blas_threads", lambda: False)
    else:
        set_threads(2)
    B, T, H, hs = 3, 5, 2, 4
    C = H * hs

    def fused(qkv):
        return F.self_attention(qkv, H)

    def composed(qkv):
        q, k, v = (t.view(B, T, H, hs).transpose(1, 2) for t in qkv.split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).reshape(B, T, C)

    for got, want in zip(run(fused, (B, T, 3 * C)), run(composed, (B, T, 3 * C))):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_self_attention_with_dropout_in_blocks_passes_gradcheck(monkeypatch):
    monkeypatch.setattr(attention, "BLOCK_BYTES", 1)
    monkeypatch.setattr(attention, "QUERY_BLOCK", 3)
    qkv = tg.randn(3, 4, 12, dtype="float64", requires_grad=True)

    def fn(x):
        tg.manual_seed(7)
        return F.self_attention(x, 2, dropout_p=0.3)

    assert tg.gradcheck(fn, [qkv])


needs_blas_control = pytest.mark.skipif(
    not backend.can_limit_blas_threads(),
    reason="NumPy's BLAS is not an OpenBLAS whose thread count tinygpt can set")


@pytest.fixture
def two_blas_threads():
    """NumPy's BLAS on 2 threads for the test (whatever the environment set), then back."""
    get, set_ = backend._blas_controls()[0]
    before = get()
    set_(2)
    yield get
    set_(before)


@needs_blas_control
def test_single_threaded_blas_sets_one_thread_and_restores_the_count(two_blas_threads):
    get = two_blas_threads
    with backend.single_threaded_blas():
        assert get() == 1
        with backend.single_threaded_blas():
            assert get() == 1
        assert get() == 1
    assert get() == 2
    with pytest.raises(KeyError):
        with backend.single_threaded_blas():
            raise KeyError("inside")
    assert get() == 2


@needs_blas_control
def test_parallel_map_gives_its_items_one_blas_thread(two_blas_threads, set_threads):
    get = two_blas_threads
    set_threads(2)
    assert backend.parallel_map(lambda item: get(), [0, 1, 2, 3]) == [1, 1, 1, 1]
    assert get() == 2


@pytest.fixture
def set_threads():
    """set_threads(n): backend.set_num_threads(n) until the test ends."""
    previous = backend.get_num_threads()
    yield backend.set_num_threads
    backend.set_num_threads(previous)


def spy_on_parallel_map(monkeypatch):
    """The item lists that backend.parallel_map is called with, from now on."""
    calls, real = [], backend.parallel_map
    monkeypatch.setattr(backend, "parallel_map",
                        lambda fn, items: calls.append(items) or real(fn, items))
    return calls


@needs_blas_control
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("a_shape, b_shape, transposed", [
    ((7, 5), (5, 3), False), ((9, 1), (1, 6), False), ((6, 11), (11, 4), True)])
def test_matmul_split_over_threads_equals_one_product(a_shape, b_shape, transposed, threads,
                                                      monkeypatch, set_threads):
    monkeypatch.setattr(backend, "SPLIT_MACS", 1)
    set_threads(threads)
    calls = spy_on_parallel_map(monkeypatch)
    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_shape[::-1]).T if transposed else rng.standard_normal(a_shape)
    b = rng.standard_normal(b_shape)
    got = backend.matmul(a, b)
    assert len(calls) == 1 and len(calls[0]) == threads      # one row block per thread
    np.testing.assert_allclose(got, a @ b, rtol=1e-13, atol=1e-14)
    assert got.shape == (a_shape[0], b_shape[1]) and got.dtype == a.dtype


@needs_blas_control
@pytest.mark.parametrize("a_shape, b_shape", [((2, 7, 5), (5, 3)), ((2, 1, 7, 5), (3, 5, 4))])
def test_matmul_splits_stacked_products_and_adds_a_row(a_shape, b_shape, monkeypatch,
                                                       set_threads):
    monkeypatch.setattr(backend, "SPLIT_MACS", 1)
    set_threads(2)
    calls = spy_on_parallel_map(monkeypatch)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    row = rng.standard_normal(b_shape[-1])
    np.testing.assert_allclose(backend.matmul(a, b, add=row), a @ b + row, rtol=1e-13,
                               atol=1e-14)
    assert len(calls) == 1


@needs_blas_control
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_matmuls_run_together_and_equal_each_product(threads, monkeypatch, set_threads):
    monkeypatch.setattr(backend, "SPLIT_MACS", 1)
    set_threads(threads)
    calls = spy_on_parallel_map(monkeypatch)
    rng = np.random.default_rng(2)
    x, w, dy = rng.standard_normal((9, 5)), rng.standard_normal((4, 5)), rng.standard_normal((9, 4))
    dx, dw = backend.matmuls([(dy, w), (dy.T, x)])
    np.testing.assert_allclose(dx, dy @ w, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(dw, dy.T @ x, rtol=1e-13, atol=1e-14)
    assert len(calls) == 1 and len(calls[0]) == 2 * max(1, threads // 2)


def test_matmul_below_the_split_size_is_one_product(monkeypatch):
    calls = spy_on_parallel_map(monkeypatch)
    a, b = np.ones((8, 4), dtype=np.float32), np.ones((4, 3), dtype=np.float32)
    np.testing.assert_array_equal(backend.matmul(a, b), np.full((8, 3), 4, dtype=np.float32))
    assert calls == []


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_column_sums_split_over_threads_equal_the_sum(threads, monkeypatch, set_threads):
    from tinygpt.autograd.ops import nn as nn_ops
    monkeypatch.setattr(nn_ops, "SPLIT_SUM_ELEMENTS", 1)
    set_threads(threads)
    calls = spy_on_parallel_map(monkeypatch)
    a = np.random.default_rng(0).standard_normal((13, 5))
    np.testing.assert_allclose(nn_ops._column_sums(a), a.sum(axis=0), rtol=1e-13, atol=1e-14)
    assert len(calls) == 1 and len(calls[0]) == threads


@needs_blas_control
def test_linear_runs_its_products_on_one_blas_thread_then_restores_it(
        two_blas_threads, monkeypatch, set_threads):
    get = two_blas_threads
    set_threads(2)
    counts, real = [], backend.matmuls
    monkeypatch.setattr(backend, "matmuls", lambda products: counts.append(get()) or real(products))
    x = tg.randn(6, 5, requires_grad=True)
    w, b = tg.randn(4, 5, requires_grad=True), tg.randn(4, requires_grad=True)
    y = F.layer_norm(F.linear(x, w, b), (4,))
    assert get() == 2                                   # back to BLAS's count between ops
    y.sum().backward()
    assert counts == [1, 1]                             # forward; dx and dW
    assert get() == 2


def test_worker_pool_runs_more_tasks_than_it_has_threads():
    pool = backend._Workers(2)
    try:
        assert pool.run([lambda i=i: i * i for i in range(5)]) == [0, 1, 4, 9, 16]
        assert pool.run([]) == []
    finally:
        pool.close()


def test_worker_pool_gives_a_worker_that_wakes_the_second_share_first():
    # 4 tasks, 2 threads: the calling thread's share is tasks 0-1, the worker's 2-3. The
    # calling thread holds task 0 until the worker has started one: the worker's first
    # task is the front of its own share.
    import threading
    pool = backend._Workers(2)
    claimed, order = threading.Event(), []

    def task(i):
        order.append((i, threading.current_thread().name))
        if i == 0:
            claimed.wait(10)
        else:
            claimed.set()
        return i

    try:
        assert pool.run([lambda i=i: task(i) for i in range(4)]) == [0, 1, 2, 3]
        here = threading.current_thread().name
        assert order[0] == (0, here) and order[1] == (2, "tinygpt-1")
    finally:
        pool.close()


def test_worker_pool_does_not_wait_for_a_worker_that_never_wakes():
    # The worker's wake-up is swapped for a lock it does not wait on: the calling thread
    # must take every task itself and return, not wait for the sleeping worker.
    import threading
    pool = backend._Workers(2)
    real, unheard = pool.wakes, threading.Lock()
    unheard.acquire()
    pool.wakes = [unheard]
    order = []
    try:
        assert pool.run([lambda i=i: order.append(i) or i for i in range(4)]) == [0, 1, 2, 3]
        assert order == [0, 1, 3, 2]            # its own share, then the worker's from the back
    finally:
        pool.wakes = real
        pool.close()


def test_worker_pool_waits_for_a_slow_worker_without_os_sched_yield(monkeypatch):
    # Where os has no sched_yield (Windows) the calling thread's end poll sleeps 0 s
    # instead; either way the results wait for the worker's slow task.
    import os
    import threading
    import time
    monkeypatch.delattr(os, "sched_yield", raising=False)
    pool = backend._Workers(2)
    started = threading.Event()

    def task(i):
        if i == 1:
            started.set()
            time.sleep(0.05)                # past the calling thread's poll
        else:
            started.wait(10)                # the worker has taken task 1
        return i

    try:
        assert pool.run([lambda i=i: task(i) for i in range(2)]) == [0, 1]
    finally:
        pool.close()


def test_float32_erf_is_accurate_to_float32_precision():
    import math
    x = np.linspace(-7, 7, 20001, dtype=np.float32)
    y = backend.erf(x)
    assert y.dtype == np.float32
    reference = np.array([math.erf(float(v)) for v in x])
    assert np.abs(y - reference).max() < 5e-7
    # odd, and exactly +-1 far out
    assert np.array_equal(backend.erf(-x), -y)
    assert backend.erf(np.float32([30.0]))[0] == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_into_out_writes_the_same_bits_there(dtype):
    x = np.linspace(-6, 6, 1001).astype(dtype)
    out = np.full_like(x, np.nan)
    assert backend.erf(x, out=out) is out
    assert np.array_equal(out, backend.erf(x))
