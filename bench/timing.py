"""The benchmarks' timing loop: the median wall time of a callable over repeated runs.
Imports: the standard library only.
"""

import statistics
import time


def median_seconds(fn, repeats, warmup=1, before=None):
    """Median wall time of fn() over `repeats` timed calls, in seconds, after `warmup`
    untimed ones; `before()`, if given, runs before each call, outside the timing."""
    times = []
    for i in range(warmup + repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)
