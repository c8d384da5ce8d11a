"""The array module behind a tensor: NumPy on the CPU, CuPy on CUDA (floor 1).

This is the only file that names CuPy, and it imports it lazily, on the first use of a
CUDA device, so that tinygpt starts fast and a missing or broken CuPy shows its own
import error where it is actually needed. Every difference between NumPy and CuPy that
the ops care about is one named function here (`scatter_add`, `erf`, `to_numpy`, random
generators, `synchronize`). Imports: numpy only.
"""

import functools
import math

import numpy as np

DEFAULT_FLOAT = np.dtype(np.float32)


def _keep_freed_memory():
    """Ask glibc's malloc to serve large arrays from its heap and keep freed memory there.

    By default glibc gives every allocation above ~128 KB its own fresh mapping from the
    kernel and returns it on free, so each new activation array pays a page fault per
    4 KB page (and the kernel zeroes it): measured here, `x * 2` on 100 MB took 39 ms
    with a fresh output and 16 ms with a reused one. A training step allocates the same
    sizes every iteration; with these two settings the second iteration onwards reuses
    the first one's memory (PyTorch's CPU allocator caches for the same reason). Peak
    memory is unchanged; freed memory stays with the process instead of going back to
    the system. Trimming is off altogether, not merely above some size: a step that frees
    more than the limit at the top of the heap would hand it all back and fault it in
    again next step (with a 1 GiB limit, half of the 6-layer GPT's batch in a
    data-parallel worker: 36,000 page faults and 4 s of kernel time in a 6 s step). Set
    TINYGPT_SYSTEM_MALLOC=1 to leave malloc as it is.
    """
    import os
    import sys
    if not sys.platform.startswith("linux") or os.environ.get("TINYGPT_SYSTEM_MALLOC"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)   # M_MMAP_THRESHOLD: allocations below 1 GiB from the heap
        libc.mallopt(-1, -1)        # M_TRIM_THRESHOLD: -1, never trim the heap
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass


_keep_freed_memory()
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

_cupy = None


def _import_cupy():
    """Import CuPy on first use and check that a GPU is there."""
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError as e:
            raise RuntimeError(
                "device 'cuda' needs CuPy, which is not installed: pip install cupy-cuda12x "
                "(or the wheel matching your CUDA version)") from e
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDA driver missing or broken
            raise RuntimeError(f"device 'cuda' is not usable: {e}") from e
        if count == 0:
            raise RuntimeError("device 'cuda' requested but no GPU is visible")
        _cupy = cupy
    return _cupy


def cuda_available():
    """True when CuPy imports and sees at least one GPU."""
    try:
        _import_cupy()
        return True
    except RuntimeError:
        return False


def normalize_device(device):
    """'cpu', 'cuda' or 'cuda:N' (only device 0 is used) -> 'cpu' or 'cuda'."""
    if device is None:
        return "cpu"
    device = str(device)
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        return "cuda"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def get_array_module(device):
    """The array module (numpy or cupy) of a device name."""
    if device == "cpu":
        return np
    return _import_cupy()


def array_module(array):
    """The array module of an array: the Chainer/DeZero `xp` idiom."""
    if isinstance(array, np.ndarray) or _cupy is None:
        return np
    return _cupy.get_array_module(array)


def device_of(array):
    """'cpu' for a NumPy array, 'cuda' for a CuPy one."""
    return "cpu" if isinstance(array, (np.ndarray, np.generic)) else "cuda"


def to_numpy(array):
    """A NumPy copy of the array, from the GPU when it lives there."""
    if isinstance(array, np.ndarray):
        return array.copy()
    if isinstance(array, np.generic):
        return np.asarray(array)
    return _cupy.asnumpy(array)


def to_device(array, device):
    """The array on `device` ('cpu' or 'cuda'); the same object when it is there already."""
    if device_of(array) == device:
        return array
    if device == "cpu":
        return _cupy.asnumpy(array)
    return _import_cupy().asarray(array)


def scatter_add(target, indices, values):
    """target[indices] += values, accumulating repeated indices (unlike `+=`)."""
    if isinstance(target, np.ndarray):
        np.add.at(target, indices, values)
    else:
        import cupyx
        cupyx.scatter_add(target, indices, values)


# erf for NumPy, which has none: W. J. Cody's rational Chebyshev approximations
# (Math. Comp. 1969), the ones behind most C libraries' erf, accurate to float64
# precision. Three ranges: |x| < 0.5, 0.5 <= |x| < 4, |x| >= 4 (via erfc).
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
          3.20937758913846947e03, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
          2.84423683343917062e03)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
          2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
          2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_ERF_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
          1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
          3.43936767414372164e03, 1.23033935480374942e03)
_ERF_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
          1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERF_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
          6.05183413124413191e-2, 2.33520497626869185e-3)
_SQRT_PI_INV = 1.0 / math.sqrt(math.pi)


def _erf_numpy(x):
    x64 = np.asarray(x, dtype=np.float64)
    ax = np.abs(x64)
    out = np.empty_like(x64)
    # |x| < 0.5: erf(x) = x * P(x^2) / Q(x^2)
    small = ax < 0.5
    y = ax[small]
    z = y * y
    num = _ERF_A[4] * z
    den = z
    for i in range(3):
        num = (num + _ERF_A[i]) * z
        den = (den + _ERF_B[i]) * z
    out[small] = y * (num + _ERF_A[3]) / (den + _ERF_B[3])
    # 0.5 <= |x| < 4: erfc(x) = exp(-x^2) * P(x) / Q(x)
    mid = (ax >= 0.5) & (ax < 4.0)
    y = ax[mid]
    num = _ERF_C[8] * y
    den = y
    for i in range(7):
        num = (num + _ERF_C[i]) * y
        den = (den + _ERF_D[i]) * y
    erfc = (num + _ERF_C[7]) / (den + _ERF_D[7])
    out[mid] = 1.0 - _erfc_scale(y) * erfc
    # |x| >= 4: erfc(x) = exp(-x^2) / x * (1/sqrt(pi) + R(1/x^2) / x^2)
    big = ax >= 4.0
    y = np.minimum(ax[big], 27.0)  # erf(27) is 1 to double precision; keeps inf finite
    z = 1.0 / (y * y)
    num = _ERF_P[5] * z
    den = z
    for i in range(4):
        num = (num + _ERF_P[i]) * z
        den = (den + _ERF_Q[i]) * z
    r = z * (num + _ERF_P[4]) / (den + _ERF_Q[4])
    erfc = (_SQRT_PI_INV - r) / y
    out[big] = 1.0 - _erfc_scale(y) * erfc
    out = np.copysign(out, x64)
    return out.astype(np.result_type(x), copy=False) if np.result_type(x).kind == "f" else out


def _erfc_scale(y):
    """exp(-y^2), computed as exp(-ysq^2) * exp(-(y - ysq)(y + ysq)) with ysq = y rounded
    to 1/16, as Cody does, so the rounding error of y*y is not amplified."""
    ysq = np.trunc(y * 16.0) / 16.0
    return np.exp(-ysq * ysq) * np.exp(-(y - ysq) * (y + ysq))


# float32: the rational approximation of Eigen and XLA, erf(x) = x P(x^2) / Q(x^2) on x
# clamped to [-4, 4] (erf is 1 to float32 precision beyond); measured maximum absolute
# error 4.5e-7 against math.erf, and ten times faster than Cody's three ranges in NumPy.
_ERF32_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
            -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
            -1.60960333262415e-02)
_ERF32_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
            -7.37332916720468e-03, -1.42647390514189e-02)


def _erf_float32(x, out=None):
    c = np.clip(x, -4.0, 4.0)
    c2 = c * c
    p = np.multiply(c2, _ERF32_P[0], out=out)
    p += _ERF32_P[1]
    for coefficient in _ERF32_P[2:]:
        p *= c2
        p += coefficient
    p *= c
    q = np.multiply(c2, _ERF32_Q[0], out=c)                  # c is not needed again
    q += _ERF32_Q[1]
    for coefficient in _ERF32_Q[2:]:
        q *= c2
        q += coefficient
    p /= q
    return p


def erf(x, out=None):
    """The error function, elementwise, in the dtype of `x`: to float64 precision for
    float64 (Cody), to float32 precision for float32 and narrower (Eigen's rational form).
    With `out` (an array of x's shape and dtype) the result is written there."""
    if isinstance(x, (np.ndarray, np.generic)):  # arithmetic on 0-d arrays gives np.generic
        if x.dtype.kind == "f" and x.dtype.itemsize <= 4:
            return _erf_float32(np.asarray(x), out)
        result = _erf_numpy(x)
    else:
        import cupyx.scipy.special
        result = cupyx.scipy.special.erf(x)
    if out is None:
        return result
    out[...] = result
    return out


# Random numbers: one generator per device, reseeded by `manual_seed`.
_generators = {}
_seed = None


def manual_seed(seed):
    """Seed the random generators of every device."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def generator(device):
    """The random generator of a device (NumPy's Generator, or CuPy's)."""
    gen = _generators.get(device)
    if gen is None:
        if device == "cpu":
            gen = np.random.default_rng(_seed)
        else:
            gen = _import_cupy().random.default_rng(_seed)
        _generators[device] = gen
    return gen


def get_rng_state():
    """The CPU generator's state, a plain dict (saved in checkpoints)."""
    return generator("cpu").bit_generator.state


def set_rng_state(state):
    """Restore the CPU generator from `get_rng_state()`'s dict."""
    generator("cpu").bit_generator.state = state


def synchronize(device):
    """Wait for the device's queued work (for timing); nothing to do on the CPU."""
    if device != "cpu":
        _import_cupy().cuda.Device().synchronize()


# --- blocked, multi-threaded elementwise work on the CPU ----------------------------------
# A chain of NumPy ufuncs over a large array streams it through memory once per call.
# Run the same chain over blocks of rows small enough to stay in a core's cache and the
# intermediates never leave it; run the blocks on a few threads (NumPy releases the GIL
# inside ufunc loops) and both cores work, as PyTorch's kernels do.
BLOCK_ELEMENTS = 1 << 17        # elements per array in one block (512 KB of float32; measured
                                # best of 2^15, 2^17 and 2^19 for GELU and LayerNorm here)
_threads = {"n": None, "pool": None}


def usable_cores():
    """The CPU cores this process may run on."""
    import os
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Threads for blocked elementwise work on the CPU (default: the usable cores, or the
    TINYGPT_NUM_THREADS environment variable)."""
    if _threads["n"] is None:
        import os
        if os.environ.get("TINYGPT_NUM_THREADS"):
            set_num_threads(os.environ["TINYGPT_NUM_THREADS"])
        else:
            _threads["n"] = usable_cores()
    return _threads["n"]


def set_num_threads(n):
    """Set the thread count of blocked elementwise work (BLAS has its own, fixed by the
    OPENBLAS_NUM_THREADS / OMP_NUM_THREADS environment variables before NumPy loads)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: expected at least 1 thread, got {n}")
    if n != _threads["n"] and _threads["pool"] is not None:
        _threads["pool"].close()
        _threads["pool"] = None
    _threads["n"] = n


class _Workers:
    """n - 1 persistent threads for `parallel_map`. `run(tasks)` returns [task() for task in
    tasks]. The tasks are dealt out in contiguous shares, the first to the calling thread
    and the k-th to worker k, and each thread works through its own share from the front;
    a thread done with its share takes what is left of the others' from their backs.

    Why both: the shares keep each thread on the same rows from one op to the next (a
    product's row block, then the elementwise chain on those rows, in that core's cache),
    and the taking keeps a worker that is slow to wake from holding the calling thread up.
    A hand-off is one lock release and one acquire each way: ~20 us here against ~130 us
    through concurrent.futures; but a worker that has slept a while can take 40-100 us to
    wake on this machine's virtual cores, as long as one of the small GPT's GELU blocks
    takes (~80 us). At the end the calling thread polls for the workers' last tasks for up
    to SPIN_SECONDS, yielding the core, before it sleeps: its own wake-up would cost as
    much again."""

    def __init__(self, n):
        import os
        import threading
        import time
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
        import time
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
        import collections
        import itertools
        import threading
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


# How long the calling thread polls for the workers' last tasks before it sleeps.
SPIN_SECONDS = 1e-3


def _workers():
    import os
    pool = _threads["pool"]
    if pool is None or pool.pid != os.getpid():
        pool = _threads["pool"] = _Workers(get_num_threads())
    return pool


def for_blocks(fn, array, row_elements=None):
    """Call fn(rows) for slices `rows` of the first axis of `array`, each about
    BLOCK_ELEMENTS elements, and return the list of results in order.

    On the CPU the blocks run on `get_num_threads()` threads, the same number of blocks
    on each; on a GPU fn runs once on all rows (one large kernel is what a GPU wants).
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


def parallel_map(fn, items):
    """[fn(item) for item in items], the items shared out over `get_num_threads()` CPU
    threads in contiguous runs, the calling thread taking the first (see `_Workers`: a
    thread done early takes items from the end of a late one's run). fn must release the
    GIL for the threads to help (NumPy's ufuncs and BLAS calls do) and must not write where
    another item's call reads or writes. Products that fn runs meanwhile get one BLAS
    thread each (`single_threaded_blas`)."""
    if get_num_threads() <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with single_threaded_blas():        # the threads are busy: BLAS adding its own would
        return _workers().run(          # only fight them for the cores
            [lambda item=item: fn(item) for item in items])


# --- BLAS threads ---------------------------------------------------------------------------
# OpenBLAS runs each large product on its own threads, which then spin on the other cores
# for a while (~0.1 s) waiting for the next one, and take those cores away from tinygpt's
# threads: a two-thread GELU forward on (16384, 1536) took 45-50 ms alone and 64-83 ms
# right after a product. So tinygpt's CPU ops run with NumPy's BLAS on one thread
# (`blas_on_tinygpt_threads`) and share their products out over tinygpt's own threads
# (`matmul`, `parallel_map`): one set of threads does all the work, as in PyTorch, and
# BLAS's threads sleep. Several small products at once also gain: self-attention's 64-row
# products at T = 256 ran 1.4-1.6x as fast one per thread as split by BLAS one at a time.
_blas = {"controls": None}

# Names of OpenBLAS's thread-count functions: NumPy's wheels ship OpenBLAS with its symbols
# renamed ("scipy_" prefix, "64_" suffix for 64-bit integers); other builds keep the plain
# names.
_OPENBLAS_SYMBOLS = [(f"{p}openblas_get_num_threads{s}", f"{p}openblas_set_num_threads{s}")
                     for p in ("scipy_", "") for s in ("64_", "")]


def _blas_controls():
    """[(get, set)] thread-count functions of every OpenBLAS loaded in this process (found
    through /proc/self/maps once NumPy has loaded its BLAS); [] elsewhere (another BLAS,
    another OS), where `single_threaded_blas` does nothing."""
    if _blas["controls"] is None:
        import ctypes
        controls = []
        try:
            with open("/proc/self/maps") as maps:
                paths = sorted({line.split()[-1] for line in maps
                                if "openblas" in line.rsplit("/", 1)[-1].lower()})
        except OSError:
            paths = []
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for get_name, set_name in _OPENBLAS_SYMBOLS:
                get, set_ = getattr(lib, get_name, None), getattr(lib, set_name, None)
                if get is not None and set_ is not None:
                    get.restype, get.argtypes = ctypes.c_int, []
                    set_.restype, set_.argtypes = None, [ctypes.c_int]
                    controls.append((get, set_))
                    break
        _blas["controls"] = controls
    return _blas["controls"]


def can_limit_blas_threads():
    """Whether `single_threaded_blas` can put NumPy's BLAS on one thread here."""
    return bool(_blas_controls())


def get_blas_num_threads():
    """NumPy's BLAS thread count (OpenBLAS's), or None where it cannot be read."""
    controls = _blas_controls()
    return controls[0][0]() if controls else None


def set_blas_num_threads(n):
    """Set NumPy's BLAS thread count, for the whole process; does nothing where
    `can_limit_blas_threads()` is False or n is None."""
    if n is None:
        return
    n = int(n)
    if n < 1:
        raise ValueError(f"set_blas_num_threads: expected at least 1 thread, got {n}")
    for _, set_ in _blas_controls():
        set_(n)


class single_threaded_blas:
    """Context manager: NumPy's BLAS (OpenBLAS) runs every product on the calling thread
    inside the block, and on its previous thread count again after it. The setting is
    process-wide: products started on other threads meanwhile are single-threaded too.
    Does nothing where `can_limit_blas_threads()` is False."""

    def __enter__(self):
        self.before = [(set_, get()) for get, set_ in _blas_controls()]
        for set_, n in self.before:
            if n != 1:
                set_(1)
        return self

    def __exit__(self, *exc):
        for set_, n in self.before:
            if n != 1:
                set_(n)
        return False


def blas_on_tinygpt_threads(fn):
    """Decorator for an op's forward or backward: on tinygpt's CPU threads (when there
    are several), fn runs with NumPy's BLAS on one thread and shares out its large
    products itself (`matmul`); elsewhere fn runs as it is."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if get_num_threads() < 2 or not _blas_controls():
            return fn(*args, **kwargs)
        with single_threaded_blas():
            return fn(*args, **kwargs)
    return wrapper


# Products of at least this many multiply-adds (together) are shared out over tinygpt's
# threads by `matmul` and `matmuls`; a hand-off costs ~30 us, the time of a 2-3e6
# multiply-add product on one thread. The small GPT's products (6e6 to 5e7) measured
# 5-30% slower split this way than split by BLAS's own threads, but its whole training step
# ran 8-9% faster with every product on tinygpt's threads (BLAS's threads asleep,
# elementwise ops at full speed).
SPLIT_MACS = 1 << 23


def matmul(a, b, add=None):
    """a @ b (+ add, an array that broadcasts against each row block of the result, such
    as a bias row), shared out over tinygpt's threads as `matmuls` does."""
    return matmuls([(a, b, add)])[0]


def matmuls(products):
    """[a @ b (+ add) for (a, b[, add]) in products], independent products run together.

    On the CPU, where BLAS's threads can be limited and the products come to at least
    SPLIT_MACS multiply-adds, each product with a 2-D or stacked `a` and `b` is cut into
    blocks of a's rows, about get_num_threads() / len(products) blocks each, and all the
    blocks go out in one `parallel_map`, each on one BLAS thread, `add` added there. Two
    products on two threads run whole, one a thread: 15-25% faster than each split in
    two on the small GPT's shapes, as neither thread packs the other's operands.
    Elsewhere each is one `a @ b` (on one BLAS thread inside `blas_on_tinygpt_threads`).
    Either way each output element is the same dot product."""
    products = [(p[0], p[1], p[2] if len(p) > 2 else None) for p in products]
    threads = get_num_threads()
    if (threads >= 2 and can_limit_blas_threads()
            and all(isinstance(a, np.ndarray) and a.ndim >= 2 and b.ndim >= 2
                    for a, b, _ in products)):
        shapes = [np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) for a, b, _ in products]
        macs = sum(math.prod(batch) * a.shape[-2] * a.shape[-1] * b.shape[-1]
                   for batch, (a, b, _) in zip(shapes, products))
        if macs >= SPLIT_MACS:
            per = max(1, threads // len(products))
            outs, jobs = [], []
            for batch, (a, b, add) in zip(shapes, products):
                m = a.shape[-2]
                out = np.empty(batch + (m, b.shape[-1]), dtype=np.result_type(a, b))
                rows = -(-m // per)
                jobs += [(a, b, add, out, slice(i, min(i + rows, m))) for i in range(0, m, rows)]
                outs.append(out)
            parallel_map(_matmul_block, jobs)
            return outs
    outs = []
    for a, b, add in products:
        out = a @ b
        if add is not None:
            out += add
        outs.append(out)
    return outs


def _matmul_block(job):
    a, b, add, out, rows = job
    part = np.matmul(a[..., rows, :], b, out=out[..., rows, :])
    if add is not None:
        part += add
