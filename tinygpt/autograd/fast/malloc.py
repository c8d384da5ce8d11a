"""Allocator tuning for training on the CPU: an explicit call, never an import side effect
(floor 2, fast machinery). The trainer, the command line and the benchmarks call
`keep_freed_memory()`; a program that merely imports tinygpt keeps its allocator as it was.

By default glibc's malloc gives every allocation above ~128 KB its own fresh mapping from
the operating system and returns it on free, so each new activation array pays a page
fault per 4 KB page (and the operating system zeroes it). A training step allocates the
same sizes every iteration; with malloc told to serve large arrays from its heap and never
to trim it, the second iteration onwards reuses the first one's memory, as PyTorch's CPU
allocator does by caching. Peak memory is unchanged; freed memory stays with the process
instead of going back to the system (docs/performance.md has the measurements). Imports:
the standard library only.
"""

import os
import sys

M_TRIM_THRESHOLD = -1           # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3

_done = {"tuned": None}


def keep_freed_memory():
    """Ask glibc's malloc to serve allocations below 1 GiB from its heap and never to give
    freed heap memory back, for the rest of this process (and the processes it forks).
    Returns True when malloc was tuned (now or before), False where it cannot be (not
    Linux, not glibc) or where TINYGPT_SYSTEM_MALLOC=1 asks to leave it alone."""
    if _done["tuned"] is not None:
        return _done["tuned"]
    tuned = False
    if sys.platform.startswith("linux") and not os.environ.get("TINYGPT_SYSTEM_MALLOC"):
        try:
            import ctypes
            libc = ctypes.CDLL("libc.so.6")
            # Trimming is off altogether, not merely above some size: a step that frees more
            # than the limit at the top of the heap would hand it all back and fault it in
            # again the next step.
            tuned = bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(
                libc.mallopt(M_TRIM_THRESHOLD, -1))
        except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
            tuned = False
    _done["tuned"] = tuned
    return tuned
