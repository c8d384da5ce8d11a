"""Matrix products shared out over tinygpt's CPU threads (floor 2, fast kernels only).

`matmul(a, b)` and `matmuls([(a, b), ...])` compute exactly what `a @ b` does, each output
element the same dot product; on the CPU, large ones are cut into blocks of a's rows, one
block per thread, each on one BLAS thread (see `blas` for why BLAS's own threads are kept
asleep). A thin product, with fewer rows than threads or THIN_ROWS (generation's one
row a sequence), streams b from memory and does little arithmetic on each byte: it runs
whole on BLAS's own threads, as many as tinygpt's and no more than BLAS had
(`blas.blas_threads`, `blas.blas_thread_limit`), whose threads each stream a part of b
and wait for the next product spinning, so that a one-row product reads its weights on
every core (docs/performance.md). `column_sums(a)` is `a.sum(axis=0)` as a product with a
vector of ones. On a GPU every function here is the plain expression.
Imports: numpy, backend, fast.threads, fast.blas.
"""

import math

import numpy as np

from .. import backend
from . import blas, threads

# Products of at least this many multiply-adds (together) are shared out over tinygpt's
# threads: a hand-off costs about as much as a product of 2-3e6 multiply-adds on one thread.
SPLIT_MACS = 1 << 23

# A product is thin when a has fewer rows than this or than the threads (generation's one
# or a few rows a sequence): split by a's rows, every thread would read all of b. Thin
# products of at least SPLIT_THIN_MACS multiply-adds (together) run on BLAS's own threads
# (below that a product takes a few microseconds and a second core has nothing to gain).
THIN_ROWS = 16
SPLIT_THIN_MACS = 1 << 18

# Sums of at least this many elements are split over the threads by `column_sums`.
SPLIT_SUM_ELEMENTS = 1 << 20


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
    products on two threads run whole, one a thread (neither thread packs the other's
    operands). When every product is thin (`is_thin`: fewer rows than the threads or
    THIN_ROWS) and they come to at least SPLIT_THIN_MACS, each runs whole on
    get_num_threads() BLAS threads, or on BLAS's own count if that is lower
    (`blas.blas_thread_limit`: OPENBLAS_NUM_THREADS=1 keeps it to one), one after the
    other, unless the call comes from inside a `parallel_map` (whose threads have the
    cores). Elsewhere each is one `a @ b`."""
    products = [(p[0], p[1], p[2] if len(p) > 2 else None) for p in products]
    n_threads = threads.get_num_threads()
    if (n_threads >= 2 and blas.can_limit_blas_threads()
            and all(isinstance(a, np.ndarray) and a.ndim >= 2 and b.ndim >= 2
                    for a, b, _ in products)):
        shapes = [np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) for a, b, _ in products]
        macs = sum(math.prod(batch) * a.shape[-2] * a.shape[-1] * b.shape[-1]
                   for batch, (a, b, _) in zip(shapes, products))
        if all(is_thin(a, n_threads) for a, _, _ in products):
            n_blas = min(n_threads, blas.blas_thread_limit() or 1)
            if macs >= SPLIT_THIN_MACS and n_blas > 1 and not threads.in_parallel_map():
                with blas.blas_threads(n_blas):
                    return _each(products)
        elif macs >= SPLIT_MACS:
            per = max(1, n_threads // len(products))
            outs, jobs = [], []
            for batch, (a, b, add) in zip(shapes, products):
                m = a.shape[-2]
                out = np.empty(batch + (m, b.shape[-1]), dtype=np.result_type(a, b))
                rows = -(-m // per)
                jobs += [(a, b, add, out, slice(i, min(i + rows, m)))
                         for i in range(0, m, rows)]
                outs.append(out)
            threads.parallel_map(_matmul_block, jobs)
            return outs
    return _each(products)


def _each(products):
    """[a @ b (+ add)] for the (a, b, add) triples, one product after the other."""
    outs = []
    for a, b, add in products:
        out = a @ b
        if add is not None:
            out += add
        outs.append(out)
    return outs


def is_thin(a, n_threads):
    """Whether a product with left operand `a` runs on BLAS's threads (see THIN_ROWS)."""
    return a.shape[-2] < max(n_threads, THIN_ROWS)


def _matmul_block(job):
    """One block of a split product: a's rows `rows` by all of b (+ add)."""
    a, b, add, out, rows = job
    part = np.matmul(a[..., rows, :], b, out=out[..., rows, :])
    if add is not None:
        part += add


def column_sums(a):
    """a (N, M) summed over its rows, as a product with ones: BLAS runs it 2-3x as fast as
    `a.sum(axis=0)` (with a smaller rounding error on GPT shapes). From SPLIT_SUM_ELEMENTS
    up, row blocks are summed on tinygpt's threads and their sums added."""
    xp = backend.array_module(a)
    ones = xp.ones(a.shape[0], dtype=a.dtype)
    if a.size < SPLIT_SUM_ELEMENTS or not isinstance(a, np.ndarray):
        return ones @ a
    rows = -(-a.shape[0] // threads.get_num_threads())
    parts = threads.parallel_map(lambda sl: ones[sl] @ a[sl],
                                 [slice(i, i + rows) for i in range(0, a.shape[0], rows)])
    return sum(parts[1:], parts[0])
