"""tinygpt's CPU threads: a small worker pool, `parallel_map` and `for_blocks` (floor 2,
fast kernels only; no reference op uses this module).

A chain of NumPy ufuncs over a large array streams it through memory once per call. Run
the same chain over blocks of rows small enough to stay in a core's cache and the
intermediates never leave it; run the blocks on a few threads (NumPy releases the GIL
inside ufunc loops and BLAS calls) and every core works, as PyTorch's kernels do.

The pool is started on first use, never at import, and a forked child builds its own.
While its threads run, NumPy's BLAS is held to one thread per call (`blas`), so the two
never fight over the cores. Imports: numpy, fast.blas.
"""

import collections
import functools
import itertools
import os
import threading
import time

import numpy as np

from . import blas

# Elements per array in one block: 512 KB of float32, about a core's L2 cache (2^15, 2^17
# and 2^19 measured for GELU and layer norm; docs/performance.md).
BLOCK_ELEMENTS = 1 << 17

# How long the calling thread polls for the workers' last tasks before it sleeps: its own
# wake-up would cost as much again as the poll.
SPIN_SECONDS = 1e-3

_threads = {"n": None, "pool": None}

# The dtypes the CPU kernels run; float16 (emulated by NumPy, with float32 sums for the
# reductions) goes to the reference ops.
CPU_DTYPES = (np.float32, np.float64)


def usable_cores():
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Threads for tinygpt's CPU kernels (default: the usable cores, or the
    TINYGPT_NUM_THREADS environment variable)."""
    if _threads["n"] is None:
        if os.environ.get("TINYGPT_NUM_THREADS"):
            set_num_threads(os.environ["TINYGPT_NUM_THREADS"])
        else:
            _threads["n"] = usable_cores()
    return _threads["n"]


def set_num_threads(n):
    """Set the thread count of tinygpt's CPU kernels (BLAS's own count is `blas`'s)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: expected at least 1 thread, got {n}")
    if n != _threads["n"] and _threads["pool"] is not None:
        _threads["pool"].close()
        _threads["pool"] = None
    _threads["n"] = n


def parallel_map(fn, items):
    """[fn(item) for item in items], the items shared out over `get_num_threads()` CPU
    threads in contiguous runs, the calling thread taking the first (a thread done early
    takes items from the end of a late one's run). fn must release the GIL for the threads
    to help (NumPy's ufuncs and BLAS calls do) and must not write where another item's
    call reads or writes. Products that fn runs meanwhile get one BLAS thread each."""
    if get_num_threads() <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with blas.single_threaded_blas():   # the threads are busy: BLAS adding its own would
        return _workers().run(          # only fight them for the cores
            [lambda item=item: fn(item) for item in items])


def in_parallel_map():
    """Whether a `parallel_map` of the worker pool is running now (called from one of its
    tasks, or from another thread meanwhile): its threads have the cores."""
    pool = _threads["pool"]
    return pool is not None and pool.busy.locked()


def for_blocks(fn, array, row_elements=None):
    """Call fn(rows) for slices `rows` of the first axis of `array`, each about
    BLOCK_ELEMENTS elements, and return the list of results in order.

    On the CPU the blocks run on `get_num_threads()` threads, the same number of blocks
    on each; on a GPU fn runs once on all rows (one large launch is what a GPU wants).
    fn must only write to its rows.
    """
    n = array.shape[0] if array.ndim else 1
    if not isinstance(array, np.ndarray) or n <= 1:
        return [fn(slice(0, n))]
    per_row = row_elements or max(1, array.size // n)
    count = -(-n // max(1, BLOCK_ELEMENTS // per_row))          # blocks of at most that size
    threads = min(get_num_threads(), count)
    if threads > 1:
        count = -(-count // threads) * threads                 # a whole number per thread
    rows = -(-n // count)
    return parallel_map(fn, [slice(i, min(i + rows, n)) for i in range(0, n, rows)])


def as_rows(a):
    """a as a 2-D (rows, last axis) view: the layout `for_blocks` row functions work on."""
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def blas_on_tinygpt_threads(fn):
    """Decorator for a kernel's forward or backward: fn runs with NumPy's BLAS on one
    thread and shares out its large products over tinygpt's threads itself
    (`products.matmul`), so that one set of threads, of `get_num_threads()`, does all the
    work (with one, BLAS too keeps to one); where BLAS's count cannot be set, fn runs as
    it is."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not blas.can_limit_blas_threads():
            return fn(*args, **kwargs)
        with blas.single_threaded_blas():
            return fn(*args, **kwargs)
    return wrapper


class _Workers:
    """n - 1 persistent threads for `parallel_map`. `run(tasks)` returns [task() for task in
    tasks]. The tasks are dealt out in contiguous shares, the first to the calling thread
    and the k-th to worker k, and each thread works through its own share from the front;
    a thread done with its share takes what is left of the others' from their backs.

    Why both: the shares keep each thread on the same rows from one op to the next (a
    product's row block, then the elementwise chain on those rows, in that core's cache),
    and the taking keeps a worker that is slow to wake from holding the calling thread up.
    A hand-off is one lock release and one acquire each way, several times cheaper than
    `concurrent.futures`."""

    def __init__(self, n):
        self.pid = os.getpid()                  # a forked child gets no threads: rebuild
        self.busy = threading.Lock()            # one caller at a time; others run serially
        self.job, self.closed = None, False
        self.pause = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))  # Windows
        self.wakes = []                         # one per worker; released = a wake-up due
        for k in range(1, n):
            wake = threading.Lock()
            wake.acquire()
            threading.Thread(target=self._serve, args=(wake, k), daemon=True,
                             name=f"tinygpt-{k}").start()
            self.wakes.append(wake)

    def _serve(self, wake, k):
        while True:
            wake.acquire()
            if self.closed:
                return
            job = self.job                      # None if the job is over
            if job is not None:
                job.work(k)
            del job                             # hold no task's arrays while asleep

    def run(self, tasks):
        if not tasks:
            return []
        if not self.busy.acquire(blocking=False):
            return [task() for task in tasks]
        try:
            job = self.job = _Job(tasks, len(self.wakes) + 1)
            for wake in self.wakes[:len(job.shares) - 1]:
                if wake.locked():               # else a wake-up is still due: it will
                    wake.release()              # find this job
            job.work(0)
            done, give_up = job.finished.acquire, time.perf_counter() + SPIN_SECONDS
            while not done(blocking=False):
                if time.perf_counter() > give_up:
                    done()
                    break
                self.pause()                    # lets the GIL go to the worker
            for error in job.errors:
                if error is not None:
                    raise error
            return job.results
        finally:
            self.job = None
            self.busy.release()

    def close(self):
        self.closed = True
        for wake in self.wakes:
            if wake.locked():
                wake.release()


class _Job:
    """The tasks' indices in one deque per thread (appends and pops at either end of a
    deque are atomic under the GIL): a thread pops its own from the left, others' from
    the right. Whoever finishes the last task releases `finished`."""

    def __init__(self, tasks, threads):
        self.tasks = tasks
        self.results = [None] * len(tasks)
        self.errors = [None] * len(tasks)
        share = -(-len(tasks) // min(threads, len(tasks)))
        self.shares = [collections.deque(range(i, min(i + share, len(tasks))))
                       for i in range(0, len(tasks), share)]
        self.done = itertools.count(1)
        self.finished = threading.Lock()
        self.finished.acquire()

    def work(self, k):
        shares = self.shares
        if k < len(shares):
            self._drain(shares[k].popleft)
        for other in shares[k + 1:] + shares[:k]:
            self._drain(other.pop)

    def _drain(self, claim):
        n = len(self.tasks)
        while True:
            try:
                i = claim()
            except IndexError:                  # nothing left there
                return
            try:
                self.results[i] = self.tasks[i]()
            except BaseException as e:          # re-raised on the calling thread
                self.errors[i] = e
            if next(self.done) == n:
                self.finished.release()


def _workers():
    pool = _threads["pool"]
    if pool is None or pool.pid != os.getpid():
        pool = _threads["pool"] = _Workers(get_num_threads())
    return pool
