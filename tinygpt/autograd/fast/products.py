"""Matrix products shared out over tinygpt's CPU threads (floor 2, fast kernels only).

`matmul(a, b)` and `matmuls([(a, b), ...])` compute exactly what `a @ b` does, each output
element the same dot product; on the CPU, large ones are cut into blocks of a's rows, one
block per thread, each on one BLAS thread (see `blas` for why BLAS's own threads are kept
asleep). A thin product, with fewer rows than threads or THIN_ROWS (generation's one
row a sequence), is cut into blocks of b's columns instead: for a Linear's x @ W^T a
column block is a block of W's rows, contiguous, so each thread streams its own part of
the weights and a one-row product reads its weights on every core. `column_sums(a)` is `a.sum(axis=0)` as a
product with a vector of ones. On a GPU every function here is the plain expression.
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
# or a few rows a sequence): it streams b from memory, and split by a's rows every thread
# would read all of b, so it is split by b's columns. Products of at least SPLIT_THIN_MACS
# multiply-adds are split (about 4 bytes of b a multiply-add in float32 at one row: a
# block worth a few hand-offs of reading time; docs/performance.md).
THIN_ROWS = 16
SPLIT_THIN_MACS = 1 << 18

# Column blocks start at multiples of this many columns (a 64-byte line of float32 out).
COLUMN_ALIGN = 16

# A thin product's b is cut into blocks of about this many bytes, from one a thread up to
# THIN_BLOCKS_PER_THREAD a thread: a thread done early (or not held up by the OS) takes
# the blocks a late one has not started (`threads.parallel_map`).
THIN_BLOCK_BYTES = 1 << 21
THIN_BLOCKS_PER_THREAD = 4

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
    THIN_ROWS), SPLIT_THIN_MACS is the size that counts, and each is cut into blocks of b's columns (`column_blocks`).
    Elsewhere each is one `a @ b`."""
    products = [(p[0], p[1], p[2] if len(p) > 2 else None) for p in products]
    n_threads = threads.get_num_threads()
    if (n_threads >= 2 and blas.can_limit_blas_threads()
            and all(isinstance(a, np.ndarray) and a.ndim >= 2 and b.ndim >= 2
                    for a, b, _ in products)):
        shapes = [np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) for a, b, _ in products]
        macs = sum(math.prod(batch) * a.shape[-2] * a.shape[-1] * b.shape[-1]
                   for batch, (a, b, _) in zip(shapes, products))
        thin = all(is_thin(a, n_threads) for a, _, _ in products)
        if macs >= (SPLIT_THIN_MACS if thin else SPLIT_MACS):
            per = max(1, n_threads // len(products))
            outs, jobs = [], []
            for batch, (a, b, add) in zip(shapes, products):
                m, n = a.shape[-2], b.shape[-1]
                out = np.empty(batch + (m, n), dtype=np.result_type(a, b))
                if is_thin(a, n_threads):
                    jobs += [(a, b, add, out, None, cols)
                             for cols in column_blocks(n, thin_blocks(b, per))]
                else:
                    rows = -(-m // per)
                    jobs += [(a, b, add, out, slice(i, min(i + rows, m)), None)
                             for i in range(0, m, rows)]
                outs.append(out)
            threads.parallel_map(_matmul_block, jobs)
            return outs
    outs = []
    for a, b, add in products:
        out = a @ b
        if add is not None:
            out += add
        outs.append(out)
    return outs


def is_thin(a, n_threads):
    """Whether a product with left operand `a` is split by columns (see THIN_ROWS)."""
    return a.shape[-2] < max(n_threads, THIN_ROWS)


def thin_blocks(b, per):
    """How many column blocks a thin product's b is cut into, given `per` threads for it:
    a multiple of `per`, about THIN_BLOCK_BYTES of b each, at most THIN_BLOCKS_PER_THREAD
    a thread."""
    each = max(1, min(THIN_BLOCKS_PER_THREAD, b.nbytes // (THIN_BLOCK_BYTES * per)))
    return per * each


def column_blocks(n, count):
    """`count` (or fewer) slices covering range(n) in order, of near-equal widths, each
    starting at a multiple of COLUMN_ALIGN."""
    width = -(-n // count)
    width = -(-width // COLUMN_ALIGN) * COLUMN_ALIGN if n > COLUMN_ALIGN * count else width
    return [slice(j, min(j + width, n)) for j in range(0, n, width)]


def _matmul_block(job):
    """One block of a split product: a's rows `rows` by all of b, or all of a by b's
    columns `cols` (with the matching columns of `add` where it has them)."""
    a, b, add, out, rows, cols = job
    if cols is None:
        part = np.matmul(a[..., rows, :], b, out=out[..., rows, :])
    else:
        part = np.matmul(a, b[..., cols], out=out[..., cols])
        if add is not None and np.ndim(add) and np.shape(add)[-1] != 1:
            add = add[..., cols]
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
