"""The machinery of the fast CPU kernels: tinygpt's worker pool, `parallel_map`,
`for_blocks`, NumPy's BLAS thread count and the products shared out over the threads."""

import os
import subprocess
import sys

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn.functional as F
from tinygpt.autograd.fast import blas, products, threads


def test_for_blocks_covers_every_row_once(blocking):
    seen = np.zeros(23, dtype=int)

    def mark(rows):
        seen[rows] += 1
        return rows.start

    starts = threads.for_blocks(mark, np.zeros((23, 4)))
    assert np.all(seen == 1)
    assert starts == sorted(starts)


def test_for_blocks_gives_each_thread_the_same_number_of_blocks(monkeypatch):
    # 3 blocks' worth of rows on 2 threads: 4 smaller blocks, 2 a thread, not 2 + 1.
    monkeypatch.setattr(threads, "BLOCK_ELEMENTS", 8)
    previous = threads.get_num_threads()
    threads.set_num_threads(2)
    try:
        sizes = threads.for_blocks(lambda rows: rows.stop - rows.start, np.zeros((24, 1)))
    finally:
        threads.set_num_threads(previous)
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

    if threads.get_num_threads() > 1 and threads.BLOCK_ELEMENTS < 4 * 23:
        with pytest.raises(KeyError, match="rows"):
            threads.for_blocks(fail_off_the_main_thread, np.zeros((23, 4)))
        assert claimed.is_set()
    starts = threads.for_blocks(lambda rows: rows.start, np.zeros((23, 4)))
    assert starts == sorted(starts) and starts[0] == 0


needs_blas_control = pytest.mark.skipif(
    not blas.can_limit_blas_threads(),
    reason="NumPy's BLAS is not an OpenBLAS whose thread count tinygpt can set")


@pytest.fixture
def two_blas_threads():
    """NumPy's BLAS on 2 threads for the test (whatever the environment set), then back."""
    get, set_ = blas._blas_controls()[0]
    before = get()
    set_(2)
    yield get
    set_(before)


@needs_blas_control
def test_single_threaded_blas_sets_one_thread_and_restores_the_count(two_blas_threads):
    get = two_blas_threads
    with blas.single_threaded_blas():
        assert get() == 1
        with blas.single_threaded_blas():
            assert get() == 1
        assert get() == 1
    assert get() == 2
    with pytest.raises(KeyError):
        with blas.single_threaded_blas():
            raise KeyError("inside")
    assert get() == 2


@needs_blas_control
def test_blas_threads_sets_the_count_and_restores_it(two_blas_threads):
    get = two_blas_threads
    with blas.single_threaded_blas():
        with blas.blas_threads(3):
            assert get() == 3
        assert get() == 1
        with pytest.raises(KeyError):
            with blas.blas_threads(2):
                raise KeyError("inside")
        assert get() == 1
    assert get() == 2
    with pytest.raises(ValueError, match="at least 1 thread, got 0"):
        blas.blas_threads(0)


@needs_blas_control
def test_parallel_map_gives_its_items_one_blas_thread(two_blas_threads, set_threads):
    get = two_blas_threads
    set_threads(2)
    assert threads.parallel_map(lambda item: get(), [0, 1, 2, 3]) == [1, 1, 1, 1]
    assert get() == 2


@pytest.fixture
def set_threads():
    """set_threads(n): threads.set_num_threads(n) until the test ends."""
    previous = threads.get_num_threads()
    yield threads.set_num_threads
    threads.set_num_threads(previous)


def spy_on_parallel_map(monkeypatch):
    """The item lists that threads.parallel_map is called with, from now on."""
    calls, real = [], threads.parallel_map
    monkeypatch.setattr(threads, "parallel_map",
                        lambda fn, items: calls.append(items) or real(fn, items))
    return calls


@needs_blas_control
@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("a_shape, b_shape, transposed", [
    ((7, 5), (5, 3), False), ((9, 1), (1, 6), False), ((6, 11), (11, 4), True)])
def test_matmul_split_over_threads_equals_one_product(a_shape, b_shape, transposed, n_threads,
                                                      monkeypatch, set_threads):
    monkeypatch.setattr(products, "SPLIT_MACS", 1)
    monkeypatch.setattr(products, "THIN_ROWS", 0)         # split by rows
    set_threads(n_threads)
    calls = spy_on_parallel_map(monkeypatch)
    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_shape[::-1]).T if transposed else rng.standard_normal(a_shape)
    b = rng.standard_normal(b_shape)
    got = products.matmul(a, b)
    assert len(calls) == 1 and len(calls[0]) == n_threads    # one row block per thread
    np.testing.assert_allclose(got, a @ b, rtol=1e-13, atol=1e-14)
    assert got.shape == (a_shape[0], b_shape[1]) and got.dtype == a.dtype


@needs_blas_control
@pytest.mark.parametrize("a_shape, b_shape", [((2, 7, 5), (5, 3)), ((2, 1, 7, 5), (3, 5, 4))])
def test_matmul_splits_stacked_products_and_adds_a_row(a_shape, b_shape, monkeypatch,
                                                       set_threads):
    monkeypatch.setattr(products, "SPLIT_MACS", 1)
    monkeypatch.setattr(products, "THIN_ROWS", 0)
    set_threads(2)
    calls = spy_on_parallel_map(monkeypatch)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    row = rng.standard_normal(b_shape[-1])
    np.testing.assert_allclose(products.matmul(a, b, add=row), a @ b + row, rtol=1e-13,
                               atol=1e-14)
    assert len(calls) == 1


@needs_blas_control
@pytest.mark.parametrize("n_threads", [2, 3, 4])
def test_matmuls_run_together_and_equal_each_product(n_threads, monkeypatch, set_threads):
    monkeypatch.setattr(products, "SPLIT_MACS", 1)
    monkeypatch.setattr(products, "THIN_ROWS", 0)
    set_threads(n_threads)
    calls = spy_on_parallel_map(monkeypatch)
    rng = np.random.default_rng(2)
    x, w, dy = rng.standard_normal((9, 5)), rng.standard_normal((4, 5)), rng.standard_normal((9, 4))
    dx, dw = products.matmuls([(dy, w), (dy.T, x)])
    np.testing.assert_allclose(dx, dy @ w, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(dw, dy.T @ x, rtol=1e-13, atol=1e-14)
    assert len(calls) == 1 and len(calls[0]) == 2 * max(1, n_threads // 2)


@pytest.fixture
def blas_limit():
    """blas_limit(n): BLAS's count and `blas_thread_limit` n until the test ends."""
    before = blas.get_blas_num_threads()
    yield blas.set_blas_num_threads
    blas.set_blas_num_threads(before)


def spy_on_blas_counts(monkeypatch):
    """The BLAS thread count each whole (unsplit) run of products sees, from now on."""
    counts, real, get = [], products._each, blas._blas_controls()[0][0]
    monkeypatch.setattr(products, "_each", lambda jobs: counts.append(get()) or real(jobs))
    return counts


@needs_blas_control
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 1e-6)])
@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("rows, bias", [(1, False), (1, True), (2, True)])
def test_a_thin_product_runs_whole_on_blas_threads_and_equals_one_product(
        rows, bias, n_threads, dtype, rtol, monkeypatch, set_threads, blas_limit):
    # A Linear's x @ W^T with fewer rows than threads, inside a kernel (BLAS held to one).
    monkeypatch.setattr(products, "SPLIT_THIN_MACS", 1)
    monkeypatch.setattr(products, "SPLIT_MACS", 1 << 60)  # the thin size alone decides
    monkeypatch.setattr(products, "THIN_ROWS", 0)         # thin: fewer rows than threads
    set_threads(n_threads)
    blas_limit(4)
    calls, counts = spy_on_parallel_map(monkeypatch), spy_on_blas_counts(monkeypatch)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((rows, 24)).astype(dtype)
    w = rng.standard_normal((100, 24)).astype(dtype)
    b = rng.standard_normal(100).astype(dtype) if bias else None
    with blas.single_threaded_blas():
        got = products.matmul(x, w.T, add=b)
        assert blas.get_blas_num_threads() == 1               # restored after the product
    want = x @ w.T + (b if bias else 0)
    assert got.shape == want.shape and got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    assert calls == []                                        # never on tinygpt's pool
    # as many rows as threads: not thin, and below SPLIT_MACS: one product on one thread
    assert counts == [n_threads if rows < n_threads else 1]


@needs_blas_control
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 1e-6)])
@pytest.mark.parametrize("add_shape", [None, (1,), (40,), (3, 1, 40), (3, 2, 1)])
def test_thin_stacked_products_on_blas_threads_add_what_broadcasts(add_shape, dtype, rtol,
                                                                  monkeypatch, set_threads,
                                                                  blas_limit):
    monkeypatch.setattr(products, "SPLIT_THIN_MACS", 1)
    monkeypatch.setattr(products, "THIN_ROWS", 4)         # 2 rows a matrix: thin
    set_threads(2)
    blas_limit(2)
    counts = spy_on_blas_counts(monkeypatch)
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 2, 6)).astype(dtype), rng.standard_normal((6, 40)).astype(dtype)
    add = None if add_shape is None else rng.standard_normal(add_shape).astype(dtype)
    with blas.single_threaded_blas():
        got = products.matmul(a, b, add=add)
    want = a @ b if add is None else a @ b + add
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    assert got.dtype == dtype and counts == [2]


@needs_blas_control
@pytest.mark.parametrize("limit, n_threads, seen", [(1, 2, 1), (2, 3, 2), (4, 3, 3)])
def test_thin_products_get_no_more_blas_threads_than_blas_had(limit, n_threads, seen,
                                                             monkeypatch, set_threads,
                                                             blas_limit):
    # OPENBLAS_NUM_THREADS=1 (or set_blas_num_threads(1)) keeps them on one thread
    monkeypatch.setattr(products, "SPLIT_THIN_MACS", 1)
    set_threads(n_threads)
    blas_limit(limit)
    counts = spy_on_blas_counts(monkeypatch)
    x, w = np.ones((1, 8)), np.ones((8, 5))
    with blas.single_threaded_blas():
        np.testing.assert_array_equal(products.matmul(x, w), np.full((1, 5), 8.0))
    assert counts == [seen] and blas.blas_thread_limit() == limit


@needs_blas_control
def test_the_blas_thread_limit_is_the_count_the_process_started_with():
    code = ("from tinygpt.autograd.fast import blas; import numpy; "
            "print(blas.blas_thread_limit(), blas.get_blas_num_threads())")
    # (OpenBLAS caps the variable at the cores it finds)
    for n in ("1", "2") if threads.usable_cores() >= 2 else ("1",):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "OPENBLAS_NUM_THREADS": n},
                             check=True).stdout.split()
        assert out == [n, n]


@needs_blas_control
def test_thin_products_run_together_on_blas_threads_one_after_the_other(monkeypatch,
                                                                       set_threads,
                                                                       blas_limit):
    monkeypatch.setattr(products, "SPLIT_THIN_MACS", 1)
    set_threads(2)
    blas_limit(2)
    calls, counts = spy_on_parallel_map(monkeypatch), spy_on_blas_counts(monkeypatch)
    rng = np.random.default_rng(5)
    dy, w = rng.standard_normal((1, 30)), rng.standard_normal((30, 20))
    x = rng.standard_normal((1, 20))
    with blas.single_threaded_blas():
        dx, q = products.matmuls([(dy, w), (x, w.T)])
    np.testing.assert_allclose(dx, dy @ w, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(q, x @ w.T, rtol=1e-13, atol=1e-14)
    assert counts == [2] and calls == []


@needs_blas_control
def test_a_thin_product_inside_parallel_map_keeps_to_one_blas_thread(monkeypatch, set_threads):
    # the pool's threads have the cores: BLAS adding its own would only fight them
    monkeypatch.setattr(products, "SPLIT_THIN_MACS", 1)
    set_threads(2)
    counts = spy_on_blas_counts(monkeypatch)
    rng = np.random.default_rng(6)
    xs, w = rng.standard_normal((4, 1, 24)), rng.standard_normal((24, 50))
    got = threads.parallel_map(lambda x: products.matmul(x, w), list(xs))
    for x, y in zip(xs, got):
        np.testing.assert_allclose(y, x @ w, rtol=1e-13, atol=1e-14)
    assert counts == [1, 1, 1, 1]


@needs_blas_control
def test_a_thin_product_beside_a_large_one_is_one_row_block_on_the_pool(monkeypatch,
                                                                       set_threads):
    monkeypatch.setattr(products, "SPLIT_MACS", 1)
    set_threads(2)
    calls = spy_on_parallel_map(monkeypatch)
    rng = np.random.default_rng(7)
    dy, w, x = rng.standard_normal((1, 30)), rng.standard_normal((30, 20)), rng.standard_normal((1, 20))
    dx, dw = products.matmuls([(dy, w), (dy.T, x)])     # dy.T has 30 rows: not thin
    np.testing.assert_allclose(dx, dy @ w, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(dw, dy.T @ x, rtol=1e-13, atol=1e-14)
    assert len(calls) == 1 and [job[-1] for job in calls[0]] == [slice(0, 1), slice(0, 30)]


def test_a_thin_product_below_its_split_size_is_one_product(monkeypatch, set_threads):
    set_threads(2)
    calls, counts = spy_on_parallel_map(monkeypatch), spy_on_blas_counts(monkeypatch)
    monkeypatch.setattr(products, "SPLIT_MACS", 1)        # the thin size counts, not this
    x, w = np.ones((1, 4), dtype=np.float32), np.ones((3, 4), dtype=np.float32)
    with blas.single_threaded_blas():
        np.testing.assert_array_equal(products.matmul(x, w.T), np.full((1, 3), 4, np.float32))
    assert calls == [] and counts in ([1], [])          # [] where BLAS is not OpenBLAS


def test_matmul_below_the_split_size_is_one_product(monkeypatch):
    calls = spy_on_parallel_map(monkeypatch)
    a, b = np.ones((8, 4), dtype=np.float32), np.ones((4, 3), dtype=np.float32)
    np.testing.assert_array_equal(products.matmul(a, b), np.full((8, 3), 4, dtype=np.float32))
    assert calls == []


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_column_sums_split_over_threads_equal_the_sum(n_threads, monkeypatch, set_threads):
    monkeypatch.setattr(products, "SPLIT_SUM_ELEMENTS", 1)
    set_threads(n_threads)
    calls = spy_on_parallel_map(monkeypatch)
    a = np.random.default_rng(0).standard_normal((13, 5))
    np.testing.assert_allclose(products.column_sums(a), a.sum(axis=0), rtol=1e-13, atol=1e-14)
    assert len(calls) == 1 and len(calls[0]) == n_threads


def test_worker_pool_runs_more_tasks_than_it_has_threads():
    pool = threads._Workers(2)
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
    pool = threads._Workers(2)
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
    pool = threads._Workers(2)
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
    pool = threads._Workers(2)
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
@needs_blas_control
def test_linear_runs_its_products_on_one_blas_thread_then_restores_it(
        two_blas_threads, monkeypatch, set_threads):
    get = two_blas_threads
    set_threads(2)
    counts, real = [], products.matmuls
    monkeypatch.setattr(products, "matmuls", lambda products: counts.append(get()) or real(products))
    x = tg.randn(6, 5, requires_grad=True)
    w, b = tg.randn(4, 5, requires_grad=True), tg.randn(4, requires_grad=True)
    y = F.layer_norm(F.linear(x, w, b), (4,))
    assert get() == 2                                   # back to BLAS's count between ops
    y.sum().backward()
    assert counts == [1, 1]                             # forward; dx and dW
    assert get() == 2


@needs_blas_control
def test_one_tinygpt_thread_keeps_blas_to_one_thread_too(two_blas_threads, monkeypatch,
                                                         set_threads):
    get = two_blas_threads
    set_threads(1)                                      # TINYGPT_NUM_THREADS=1
    counts, real = [], products.matmuls
    monkeypatch.setattr(products, "matmuls", lambda jobs: counts.append(get()) or real(jobs))
    x, w = tg.randn(6, 5, requires_grad=True), tg.randn(4, 5, requires_grad=True)
    F.linear(x, w).sum().backward()
    assert counts == [1, 1] and get() == 2
