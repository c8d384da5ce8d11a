"""Op benchmark: forward + backward time per call for representative ops, tinygpt beside
PyTorch eager when `torch` imports (`python -m bench ops`).

Each row times one op's forward and backward at a small and a GPT-sized shape (float32):
the median of N calls after a warm-up, with tinygpt and PyTorch calls alternating so that
both see the same machine load, and PyTorch limited to the threads NumPy's BLAS uses. The
"overhead" rows time tiny tensors, where the cost is all Python bookkeeping, not arithmetic.
Imports: numpy, tinygpt; torch lazily and optionally. Never imported by the package.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

import tinygpt as tg
import tinygpt.nn.functional as F
from tinygpt.autograd import backend
from tinygpt.autograd.fast import threads as fast_threads

# Shapes: B batch, T sequence, C channels, H heads, V vocabulary.
SIZES = {
    "tiny": dict(B=2, T=8, C=16, H=2, V=11),
    "small": dict(B=12, T=64, C=128, H=4, V=65),
    "gpt": dict(B=64, T=256, C=384, H=6, V=65),
}
GPT2_VOCAB = 50257
GPT2_ROWS = 256      # rows of logits for the GPT-2-vocabulary cross-entropy (256 x 50257)


# --- one op, built twice ------------------------------------------------------------------
class Case:
    """One row: `build(lib, device)` returns a zero-argument step running forward and
    backward once on fresh leaf gradients; `lib` is "tinygpt" or "torch"."""

    def __init__(self, op, shape, build):
        self.op, self.shape, self.build = op, shape, build


def _arrays(rng, *shapes, scale=1.0):
    return [(rng.standard_normal(s) * scale).astype(np.float32) for s in shapes]


def _leaves(lib, device, arrays):
    if lib == "tinygpt":
        return [tg.tensor(a, device=device, requires_grad=True) for a in arrays]
    import torch
    return [torch.tensor(a, device=_torch_device(device), requires_grad=True) for a in arrays]


def _torch_device(device):
    return "cuda" if device == "cuda" else "cpu"


def _step(lib, leaves, forward):
    """forward() then backward with an all-ones upstream gradient (made once), clearing
    the leaves' gradients first so that nothing accumulates across calls."""
    with_grad = {}

    def step():
        for t in leaves:
            t.grad = None
        y = forward()
        if y.numel() == 1:
            y.backward()
            return
        upstream = with_grad.get("dy")
        if upstream is None:
            if lib == "tinygpt":
                upstream = tg.ones(*y.shape, dtype=y.dtype, device=y.device)
            else:
                import torch
                upstream = torch.ones_like(y)
            with_grad["dy"] = upstream
        y.backward(upstream)
    return step


def _functional(lib):
    if lib == "tinygpt":
        return F
    import torch.nn.functional
    return torch.nn.functional


def binary(op, shape_a, shape_b):
    def build(lib, device, rng):
        a, b = _leaves(lib, device, _arrays(rng, shape_a, shape_b))
        forward = {"add": lambda: a + b, "mul": lambda: a * b, "matmul": lambda: a @ b}[op]
        return _step(lib, [a, b], forward)
    return build


def linear(shape_x, n_out):
    def build(lib, device, rng):
        x, w, b = _leaves(lib, device, _arrays(rng, shape_x, (n_out, shape_x[-1]), (n_out,),
                                               scale=0.1))
        f = _functional(lib)
        return _step(lib, [x, w, b], lambda: f.linear(x, w, b))
    return build


def softmax(shape):
    def build(lib, device, rng):
        (x,) = _leaves(lib, device, _arrays(rng, shape))
        f = _functional(lib)
        return _step(lib, [x], lambda: f.softmax(x, dim=-1))
    return build


def layer_norm(shape):
    def build(lib, device, rng):
        c = shape[-1]
        x, w, b = _leaves(lib, device, _arrays(rng, shape, (c,), (c,)))
        f = _functional(lib)
        return _step(lib, [x, w, b], lambda: f.layer_norm(x, (c,), w, b, 1e-5))
    return build


def gelu(shape):
    def build(lib, device, rng):
        (x,) = _leaves(lib, device, _arrays(rng, shape))
        f = _functional(lib)
        return _step(lib, [x], lambda: f.gelu(x, approximate="tanh"))
    return build


def cross_entropy(n, v):
    def build(lib, device, rng):
        (logits,) = _leaves(lib, device, _arrays(rng, (n, v)))
        targets = rng.integers(0, v, size=n)
        if lib == "tinygpt":
            targets = tg.tensor(targets, device=device)
        else:
            import torch
            targets = torch.tensor(targets, device=_torch_device(device))
        f = _functional(lib)
        return _step(lib, [logits], lambda: f.cross_entropy(logits, targets))
    return build


def attention(b, h, t, hs):
    def build(lib, device, rng):
        q, k, v = _leaves(lib, device, _arrays(rng, *[(b, h, t, hs)] * 3))
        f = _functional(lib)
        return _step(lib, [q, k, v],
                     lambda: f.scaled_dot_product_attention(q, k, v, is_causal=True))
    return build


def self_attention(b, t, c, h):
    """Causal attention from a fused (B, T, 3C) projection back to (B, T, C), as a GPT block
    uses it; PyTorch does it with split, view, transpose, sdpa and a transpose back."""
    def build(lib, device, rng):
        (qkv,) = _leaves(lib, device, _arrays(rng, (b, t, 3 * c)))
        if lib == "tinygpt":
            return _step(lib, [qkv], lambda: F.self_attention(qkv, h))
        import torch.nn.functional as torch_f

        def forward():
            q, k, v = (z.view(b, t, h, c // h).transpose(1, 2) for z in qkv.split(c, dim=2))
            y = torch_f.scaled_dot_product_attention(q, k, v, is_causal=True)
            return y.transpose(1, 2).reshape(b, t, c)
        return _step(lib, [qkv], forward)
    return build


def embedding(b, t, v, c):
    def build(lib, device, rng):
        (weight,) = _leaves(lib, device, _arrays(rng, (v, c)))
        idx = rng.integers(0, v, size=(b, t))
        if lib == "tinygpt":
            idx = tg.tensor(idx, device=device)
        else:
            import torch
            idx = torch.tensor(idx, device=_torch_device(device))
        f = _functional(lib)
        return _step(lib, [weight], lambda: f.embedding(idx, weight))
    return build


def mul_sum(shape):
    def build(lib, device, rng):
        a, b = _leaves(lib, device, _arrays(rng, shape, shape))
        return _step(lib, [a, b], lambda: (a * b).sum())
    return build


def cases(sizes, gpt2_vocab=True):
    """The benchmark rows for the named sizes, overhead rows first."""
    rows = [Case("add (overhead)", "(1,) + (1,)", binary("add", (1,), (1,))),
            Case("mul+sum (overhead)", "(1,)", mul_sum((1,)))]
    for size in sizes:
        d = SIZES[size]
        b, t, c, h, v = d["B"], d["T"], d["C"], d["H"], d["V"]
        x = (b, t, c)
        label = f"{size}: "
        rows += [
            Case("add", label + f"{x}", binary("add", x, x)),
            Case("mul", label + f"{x}", binary("mul", x, x)),
            Case("matmul", label + f"{x} @ {(c, 4 * c)}", binary("matmul", x, (c, 4 * c))),
            Case("linear", label + f"{x} -> {4 * c}", linear(x, 4 * c)),
            Case("softmax", label + f"{(b, h, t, t)}", softmax((b, h, t, t))),
            Case("layer_norm", label + f"{x}", layer_norm(x)),
            Case("gelu tanh", label + f"{(b, t, 4 * c)}", gelu((b, t, 4 * c))),
            Case("cross_entropy", label + f"{(b * t, v)}", cross_entropy(b * t, v)),
            Case("attention causal", label + f"{(b, h, t, c // h)}",
                 attention(b, h, t, c // h)),
            Case("self_attention", label + f"{(b, t, 3 * c)}, {h} heads",
                 self_attention(b, t, c, h)),
            Case("embedding", label + f"{(b, t)} of {(v, c)}", embedding(b, t, v, c)),
        ]
    if gpt2_vocab:
        rows.append(Case("cross_entropy", f"GPT-2 vocab: {(GPT2_ROWS, GPT2_VOCAB)}",
                         cross_entropy(GPT2_ROWS, GPT2_VOCAB)))
    return rows


# --- timing -------------------------------------------------------------------------------
def _timer(device):
    def timed(step):
        backend.synchronize(device)
        start = time.perf_counter()
        step()
        backend.synchronize(device)
        return time.perf_counter() - start
    return timed


def _torch_timer(device):
    import torch

    def timed(step):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start
    return timed


def measure(case, device, torch_ok, repeat, warmup, budget, seed=0):
    """Seconds per forward+backward call for tinygpt (and torch), alternating:
    ({lib: median}, {lib: fastest}, number of timed calls)."""
    steps = {"tinygpt": case.build("tinygpt", device, np.random.default_rng(seed))}
    timers = {"tinygpt": _timer(device)}
    if torch_ok:
        steps["torch"] = case.build("torch", device, np.random.default_rng(seed))
        timers["torch"] = _torch_timer(device)
    first = {}
    for lib, step in steps.items():
        first[lib] = min(timers[lib](step) for _ in range(max(warmup, 1)))
    # As many calls as fit the time budget (per library), within [3, repeat].
    n = int(max(3, min(repeat, budget / max(max(first.values()), 1e-9))))
    times = {lib: [] for lib in steps}
    for _ in range(n):
        for lib, step in steps.items():
            times[lib].append(timers[lib](step))
    return ({lib: statistics.median(ts) for lib, ts in times.items()},
            {lib: min(ts) for lib, ts in times.items()}, n)


def _format_time(seconds):
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def _threads():
    """The thread count NumPy's BLAS uses: OPENBLAS/OMP/MKL settings, else the CPUs."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return fast_threads.usable_cores()


def _import_torch(threads):
    # PyTorch's OpenMP workers spin while idle by default; on a machine with few cores they
    # then starve NumPy's BLAS threads and each other between the alternating calls (tiny
    # ops measured 24 ms instead of 30 us on 2 cores). Passive waiting must be set before
    # the OpenMP runtime loads, so only when torch is not imported yet.
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench ops",
        description="Forward+backward time per call of representative ops, tinygpt beside "
                    "PyTorch eager (when installed), float32.")
    parser.add_argument("--sizes", default="small,gpt",
                        help=f"comma-separated shape sets from {sorted(SIZES)} (default small,gpt)")
    parser.add_argument("--ops", default=None,
                        help="comma-separated op names to keep (default: all)")
    parser.add_argument("--repeat", type=int, default=50, help="most timed calls per op")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="seconds of timed calls per op and library (caps --repeat)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--no-gpt2-vocab", action="store_true",
                        help="skip the cross-entropy at GPT-2's 50257-token vocabulary")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch threads (default: what NumPy's BLAS uses)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    args = parser.parse_args(argv)

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; expected some of {sorted(SIZES)}")
    if args.device == "cuda" and not backend.cuda_available():
        parser.error("--device cuda: CuPy or a GPU is not available")
    threads = args.threads or _threads()
    fast_threads.set_num_threads(threads)        # tinygpt's own threads, as many as PyTorch's
    torch = None if args.no_torch else _import_torch(threads)
    if torch is not None and args.device == "cuda" and not torch.cuda.is_available():
        torch = None
    rows = cases(sizes, gpt2_vocab=not args.no_gpt2_vocab)
    if args.ops:
        keep = {o.strip() for o in args.ops.split(",")}
        rows = [r for r in rows if r.op in keep or r.op.split(" ")[0] in keep]

    print(f"tinygpt op benchmark: forward+backward per call, float32, device {args.device}, "
          f"median of up to {args.repeat} calls after {args.warmup} warm-up")
    if torch is not None:
        print(f"PyTorch {torch.__version__} eager, {torch.get_num_threads()} threads "
              f"(NumPy BLAS: {_threads()}), OMP_WAIT_POLICY="
              f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; calls alternate between the two")
    else:
        print("PyTorch: not measured" + (" (--no-torch)" if args.no_torch else " (not importable)"))
    header = f"{'op':<20} {'shape':<44} {'tinygpt':>11} {'torch':>11} {'ratio':>7} {'calls':>5}"
    print(header)
    print("-" * len(header))
    results = []
    for case in rows:
        medians, fastest, n = measure(case, args.device, torch is not None, args.repeat,
                                      args.warmup, args.budget)
        ours, theirs = medians["tinygpt"], medians.get("torch")
        ratio = ours / theirs if theirs else None
        print(f"{case.op:<20} {case.shape:<44} {_format_time(ours):>11} "
              f"{_format_time(theirs):>11} {'-' if ratio is None else f'{ratio:.2f}':>7} {n:>5}",
              flush=True)
        results.append(dict(op=case.op, shape=case.shape, device=args.device,
                            tinygpt_s=ours, torch_s=theirs, ratio=ratio, calls=n,
                            tinygpt_min_s=fastest["tinygpt"], torch_min_s=fastest.get("torch")))
    if torch is not None:
        print("ratio = tinygpt time / PyTorch time (below 1: tinygpt is faster)")
    if args.json:
        meta = dict(threads=threads, device=args.device, numpy=np.__version__,
                    torch=None if torch is None else torch.__version__,
                    python=sys.version.split()[0])
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=results), f, indent=1)
        print(f"rows written to {args.json}")
    return 0


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("ops")
