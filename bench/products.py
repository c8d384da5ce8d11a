"""Thin products at GPT-2's shapes: how fast a few rows times a weight matrix stream the
matrix from memory, run three ways (`python -m bench products`).

Generation with the KV cache multiplies one row a sequence by every weight matrix, once
per token: each product reads its whole matrix and does two floating-point operations per
element, so its time is that of reading the matrix from memory. For each shape (the
attention's qkv and output projections, the MLP's two, the language-model head) and each
row count (--rows, default 1 and 8), a (rows, in) array times W^T for W (out, in) float32,
cycling through --matrices distinct matrices of the shape (default 12, GPT-2's layers:
together larger than the last-level cache, as in generation) and reporting the median of
--repeats products:

  one thread     NumPy's `x @ W.T` with BLAS on one thread
  tinygpt        `products.matmul(x, W.T)` inside a kernel (BLAS held to one thread,
                 as the fast kernels run it): what generation runs
  BLAS threads   NumPy's `x @ W.T` with BLAS on --threads threads

GB/s is the matrix's bytes over the median time (above what memory gives where the
matrices stay in cache). The header names the host, its BLAS and the thread counts.
Imports: the standard library, numpy, tinygpt's fast products, the host header.
"""

import argparse
import sys

import numpy as np

from .timing import median_seconds

# (in, out) of GPT-2 124M's weight matrices, in the order a block runs them, and its head.
SHAPES = {"qkv": (768, 2304), "attn proj": (768, 768), "mlp fc": (768, 3072),
          "mlp proj": (3072, 768), "lm head": (768, 50257)}
WAYS = ("one thread", "tinygpt", "BLAS threads")


def measure(shape, rows, matrices, repeats, threads, seed=0):
    """{way: ms} for one (in, out) shape at `rows` rows; the head gets one matrix."""
    from tinygpt.autograd.fast import blas, products
    rng = np.random.default_rng(seed)
    n_in, n_out = shape
    weights = [rng.standard_normal((n_out, n_in), dtype=np.float32)
               for _ in range(1 if n_out > 10000 else matrices)]
    x = rng.standard_normal((rows, n_in), dtype=np.float32)
    turn = iter(range(1 << 62))

    def weight():
        return weights[next(turn) % len(weights)]

    def in_a_kernel():
        with blas.single_threaded_blas():
            return products.matmul(x, weight().T)

    out = {}
    with blas.blas_threads(1):
        out["one thread"] = 1e3 * median_seconds(lambda: x @ weight().T, repeats)
    out["tinygpt"] = 1e3 * median_seconds(in_a_kernel, repeats)
    with blas.blas_threads(threads):
        out["BLAS threads"] = 1e3 * median_seconds(lambda: x @ weight().T, repeats)
    return out, weights[0].nbytes


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench products", allow_abbrev=False,
        description="Thin products at GPT-2's shapes on one thread, as tinygpt runs them "
                    "and on BLAS's own threads: ms and GB/s of weights streamed.")
    parser.add_argument("--rows", default="1,8", help="row counts (default 1,8)")
    parser.add_argument("--matrices", type=int, default=12,
                        help="distinct matrices a shape, cycled (default 12)")
    parser.add_argument("--repeats", type=int, default=60,
                        help="timed products a case (default 60)")
    parser.add_argument("--threads", type=int, default=None,
                        help="tinygpt's and BLAS's threads (default: the usable cores)")
    args = parser.parse_args(argv)
    try:
        args.row_list = [int(r) for r in args.rows.split(",") if r]
    except ValueError:
        parser.error(f"--rows: expected comma-separated integers, got {args.rows!r}")
    if not args.row_list or min(args.row_list) < 1:
        parser.error(f"--rows: expected counts >= 1, got {args.rows!r}")
    for name in ("matrices", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    from tinygpt.autograd.fast import blas, threads as fast_threads

    from .host import header_lines, host_info
    threads = args.threads or fast_threads.usable_cores()
    fast_threads.set_num_threads(threads)
    if not blas.can_limit_blas_threads():
        print("NumPy's BLAS is not an OpenBLAS whose thread count tinygpt can set: the three "
              "ways would be one", file=sys.stderr)
        return 2
    print("\n".join(header_lines(host_info())))
    print(f"float32 (rows, in) @ W^T, W (out, in); median of {args.repeats} products, "
          f"{args.matrices} distinct matrices a shape (the head: one); ms [GB/s of W]")
    print(f"{'rows':>4} {'matrix':<10} {'in x out':>11}"
          + "".join(f"{way:>22}" for way in WAYS))
    for rows in args.row_list:
        for name, shape in SHAPES.items():
            times, nbytes = measure(shape, rows, args.matrices, args.repeats, threads)
            print(f"{rows:>4} {name:<10} {shape[0]:>5}x{shape[1]:<5}" + "".join(
                f"{f'{times[way]:.3f} [{nbytes / times[way] / 1e6:.1f}]':>22}"
                for way in WAYS), flush=True)
    return 0


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("products")
