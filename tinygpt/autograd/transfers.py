"""Count the device-to-host transfers of a block of code, by the source line that asked
for each (floor 2).

A transfer from the GPU makes the host wait for every kernel queued before it, so a
training step that reads one number back each iteration runs in lockstep with the GPU
instead of queueing ahead of it. CuPy sends every such read through `cupy.ndarray.get`:
`cupy.asnumpy`, `.item()`, `.tolist()`, `float()`, `int()`, `bool()`, printing, and the
counts of boolean-mask indexing and `nonzero`. `count_transfers()` wraps `get` and those
entry points of `cupy.ndarray` for the duration of a `with` block (a read counts once,
however many of them it passes through), so it works the same on real CuPy, whose
compiled methods may call `get` without looking it up, and on the test suite's CuPy
stand-in:

>>> with count_transfers() as transfers:      # in a script run.py, at line 8
...     loss.item()
>>> transfers.total, transfers.by_line
(1, Counter({'run.py:9 (<module>)': 1}))

The line is the innermost one outside CuPy and outside tinygpt's conversion helpers
(`Tensor.item`, `.numpy`, `backend.to_numpy`, ...): the code that asked for the number.
Transfers that bypass `ndarray.get` (a CUDA library copying on its own) are not seen.
Imports: backend.
"""

import collections
import os
import sys
import threading

from . import backend

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# (file name, function) pairs that only pass a read on: the line that called them counts.
_HELPERS = {
    ("backend.py", "to_numpy"), ("backend.py", "to_device"),
    ("tensor.py", "item"), ("tensor.py", "numpy"), ("tensor.py", "tolist"),
    ("tensor.py", "__float__"), ("tensor.py", "__int__"), ("tensor.py", "__bool__"),
    ("tensor.py", "__index__"), ("tensor.py", "__repr__"), ("tensor.py", "__array__"),
    ("tensor.py", "__format__"),
}


class count_transfers:
    """Context manager: counts the device-to-host transfers made inside the block.

    `total` (transfers), `bytes` (their size) and `by_line` (a Counter from
    "path:line (function)" to transfers) are read after or during the block; `report()`
    is a few lines of text, largest first. Nested counters each count everything.
    """

    _lock = threading.Lock()
    _active = []                       # the counters of the open blocks, innermost last

    def __init__(self):
        self.total = 0
        self.bytes = 0
        self.by_line = collections.Counter()

    def __enter__(self):
        cls = backend.array_module_for_device("cuda").ndarray
        with self._lock:
            if not self._active:
                _patch(cls)
            self._active.append(self)
        return self

    def __exit__(self, *exc):
        cls = backend.array_module_for_device("cuda").ndarray
        with self._lock:
            self._active.remove(self)
            if not self._active:
                _unpatch(cls)

    def record(self, line, nbytes):
        self.total += 1
        self.bytes += nbytes
        self.by_line[line] += 1

    def report(self):
        """One line per source line, most transfers first."""
        if not self.total:
            return "no device-to-host transfers"
        lines = [f"{self.total} device-to-host transfer(s), {self.bytes:,} bytes:"]
        lines += [f"  {n:>5}  {line}" for line, n in self.by_line.most_common()]
        return "\n".join(lines)


# The methods of cupy.ndarray through which a value reaches the host.
ENTRY_POINTS = ("get", "item", "tolist", "tobytes", "__int__", "__float__", "__complex__",
                "__bool__", "__repr__", "__str__", "__format__")
_original = {}                          # name -> (own attribute or None, the method)
_inside = threading.local()             # depth of wrapped calls on this thread


def _patch(cls):
    """Wrap each entry point of cls: the outermost call records one transfer on every
    open counter; the calls it makes inside (item calling get) record nothing."""
    for name in ENTRY_POINTS:
        if not hasattr(cls, name):
            continue
        original = getattr(cls, name)
        _original[name] = (cls.__dict__.get(name), original)
        setattr(cls, name, _wrapped(original))


def _wrapped(original):
    def method(self, *args, **kwargs):
        depth = getattr(_inside, "depth", 0)
        if depth == 0:
            line = source_line(sys._getframe(1))
            for counter in count_transfers._active:
                counter.record(line, self.nbytes)
        _inside.depth = depth + 1
        try:
            return original(self, *args, **kwargs)
        finally:
            _inside.depth = depth
    method.__name__, method.__doc__ = original.__name__, original.__doc__
    return method


def _unpatch(cls):
    for name, (own, _) in _original.items():
        if own is None:
            delattr(cls, name)          # inherited: the base class's comes back
        else:
            setattr(cls, name, own)
    _original.clear()


def source_line(frame):
    """"path:line (function)" of the innermost frame outside CuPy, NumPy and tinygpt's
    conversion helpers; the path is relative to the folder holding tinygpt when inside it."""
    first = frame
    while frame is not None:
        path = frame.f_code.co_filename
        name = os.path.basename(path)
        parts = path.replace("\\", "/").split("/")
        outside = not any(p in ("cupy", "cupyx", "numpy", "cupy_backends") for p in parts)
        if outside and (name, frame.f_code.co_name) not in _HELPERS:
            break
        frame = frame.f_back
    frame = frame or first
    path = os.path.abspath(frame.f_code.co_filename)
    if path.startswith(_PACKAGE_ROOT + os.sep):
        path = os.path.relpath(path, _PACKAGE_ROOT)
    return f"{path.replace(os.sep, '/')}:{frame.f_lineno} ({frame.f_code.co_name})"
