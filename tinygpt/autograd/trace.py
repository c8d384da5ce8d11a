"""Record every op run, forward and backward, with its shapes and wall time (floor 2).

    >>> with trace() as t:
    ...     loss = model(x, targets)[1]
    ...     loss.backward()
    >>> print(t)                       # one row per (op, direction), slowest first
    >>> t.summary()[("matmul", "backward")]
    (24, 0.0131)                       # (calls, seconds)

`trace` installs itself as the thread's tracer (`function.set_tracer`): `Function.apply`
then hands each forward to `Trace.forward`, and the engine each backward to
`Trace.backward`, which time the op's own `forward` / `backward` with
`time.perf_counter`. Only the ops' array work is timed: the engine's bookkeeping, Python
around the ops and data loading are in `wall_seconds` but in no row, so
`t.total_seconds / t.wall_seconds` says how much of a step the ops take.

On CUDA, GPU work runs asynchronously: pass `synchronize=True` to wait for each op before
stopping its clock (slower, but each row then holds that op's real time).
Imports: backend, function.
"""

import time
from collections import namedtuple

from . import backend
from .function import get_tracer, set_tracer

Record = namedtuple("Record", ["op", "direction", "shapes", "dtype", "seconds"])
Record.__doc__ = """One op run: name, "forward" or "backward", the shapes of the op's tensor
inputs (for backward too, so a backward row matches its forward row), the dtype (a NumPy
dtype) of its output (forward) or incoming gradient (backward), and its wall time in
seconds."""


class trace:
    """Context manager recording `Record`s of every op run inside it (this thread only).

    Traces nest: when an inner trace ends, its records are added to the outer one.

    records: the list of `Record`s, in the order the ops ran.
    wall_seconds: time spent inside the `with` block.
    summary(): {(op, "forward" | "backward"): (calls, seconds)}, slowest first.
    str(t): that summary as a table, with each row's share of the ops' total time.
    """

    def __init__(self, synchronize=False):
        self.records = []
        self.wall_seconds = 0.0
        self.synchronize = synchronize
        self._previous = None
        self._start = None

    # --- the tracer protocol (called by Function.apply and the engine) ---------------------
    def forward(self, cls, ctx, inputs, params):
        """Run `cls.forward` on the inputs' arrays, timed; returns its output array."""
        arrays = [t.data for t in inputs]
        sync = self.synchronize
        if sync:
            backend.synchronize(inputs[0].device)
        start = time.perf_counter()
        out = cls.forward(ctx, *arrays, **params)
        if sync:
            backend.synchronize(inputs[0].device)
        seconds = time.perf_counter() - start
        # The dtype object, not str(dtype): its str costs more than a small op.
        self.records.append(Record(cls.name, "forward", tuple([a.shape for a in arrays]),
                                   getattr(out, "dtype", None), seconds))
        return out

    def backward(self, ctx, dy):
        """Run `ctx.backward(ctx, dy)`, timed; returns the input gradients."""
        sync = self.synchronize
        if sync:
            backend.synchronize(backend.device_of(dy))
        start = time.perf_counter()
        dxs = ctx.backward(ctx, dy)
        if sync:
            backend.synchronize(backend.device_of(dy))
        seconds = time.perf_counter() - start
        shapes = tuple([t.data.shape for t in ctx.parents])
        self.records.append(Record(type(ctx).name, "backward", shapes, dy.dtype, seconds))
        return dxs

    # --- context manager ------------------------------------------------------------------
    def __enter__(self):
        self._previous = get_tracer()
        set_tracer(self)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_seconds += time.perf_counter() - self._start
        set_tracer(self._previous)
        if isinstance(self._previous, trace):
            self._previous.records.extend(self.records)
        self._previous = None

    # --- reading the results --------------------------------------------------------------
    @property
    def total_seconds(self):
        """Time spent inside the ops, forward and backward."""
        return sum(r.seconds for r in self.records)

    def summary(self):
        """{(op, direction): (calls, seconds)}, ordered by seconds, largest first.

        The format a profiler reads: e.g. the share of attention's backward in a step is
        `summary()[("scaled_dot_product_attention", "backward")][1] / total_seconds`.
        """
        table = {}
        for r in self.records:
            calls, seconds = table.get((r.op, r.direction), (0, 0.0))
            table[(r.op, r.direction)] = (calls + 1, seconds + r.seconds)
        return dict(sorted(table.items(), key=lambda item: (-item[1][1], item[0])))

    def table(self, limit=None):
        """The summary as text: op, direction, calls, total ms, mean us per call, share %."""
        rows = list(self.summary().items())
        total = self.total_seconds
        shown = rows if limit is None else rows[:limit]
        width = max([len("op")] + [len(op) for (op, _), _ in shown])
        lines = [(f"{'op':<{width}}  {'direction':<9}  {'calls':>7}  {'total ms':>10}  "
                  f"{'us/call':>9}  {'share':>6}")]
        for (op, direction), (calls, seconds) in shown:
            share = 100.0 * seconds / total if total > 0 else 0.0
            lines.append(f"{op:<{width}}  {direction:<9}  {calls:>7}  {seconds * 1e3:>10.3f}  "
                         f"{seconds * 1e6 / calls:>9.1f}  {share:>5.1f}%")
        if len(shown) < len(rows):
            lines.append(f"... {len(rows) - len(shown)} more rows")
        calls = len(self.records)
        wall = (f"; {100.0 * total / self.wall_seconds:.1f}% of {self.wall_seconds * 1e3:.3f} ms "
                "wall" if self.wall_seconds > 0 else "")
        lines.append(f"{'total':<{width}}  {'':<9}  {calls:>7}  {total * 1e3:>10.3f}"
                     f"  (ops{wall})")
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    def __repr__(self):
        return f"<trace: {len(self.records)} op runs, {self.total_seconds * 1e3:.3f} ms>"
