"""How much memory a process has used, and how much the machine has. Standard library only:
any floor may import it.

`peak_rss_mb()` is the peak resident memory of this process (benchmarks, data-parallel
workers); `total_memory()` bounds what a file may ask tinygpt to allocate, so that a
checkpoint or a config.json describing a model larger than the machine is refused with
a message instead of swapping until the kernel ends the process (`check_fits`).
"""

import os
import sys

try:
    import resource
except ImportError:         # Windows
    resource = None

PROC_STATUS = "/proc/self/status"
PROC_MEMINFO = "/proc/meminfo"
# Memory limits of this process's control group (version 2, then version 1), if any.
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def peak_rss_mb():
    """This process's peak resident memory in MB (2**20 bytes), or None where it cannot be
    measured.

    Linux: VmHWM from /proc/self/status, the high-water mark of this process image's own
    memory. Not ru_maxrss: at exec, Linux carries the parent's high-water mark into the
    child's ru_maxrss (and subprocess uses vfork), so a small child started by a large
    parent would report the parent's peak. A forked worker's starts at what it shares with
    its parent at the fork. Elsewhere (or when /proc cannot be read) ru_maxrss, which is
    in KB, or in bytes on macOS.
    """
    try:
        with open(PROC_STATUS) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2 ** 10          # kB
    except (OSError, ValueError, IndexError):
        pass
    if resource is None:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 2 ** 10


def total_memory():
    """The memory this process may use in all, in bytes: the machine's physical memory,
    or its control group's limit when lower; None when neither can be found."""
    sizes = []
    try:
        with open(PROC_MEMINFO) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    sizes.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not sizes:
        try:
            sizes.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            pass
    for path in CGROUP_LIMITS:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():                  # "max" (version 2) means no limit
            sizes.append(int(text))
    return min(sizes) if sizes else None


def format_bytes(n):
    """`n` bytes in words: '512 B', '3.1 MB', '4.2 GB', '1.7 TB' (powers of 10)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def check_fits(nbytes, what):
    """Raise ValueError when `nbytes` is more than this machine's memory (`total_memory`):
    the input asking for them is refused before anything is allocated. `what` says what
    would need them ("the model described by config.json (...)")."""
    total = total_memory()
    if total is not None and nbytes > total:
        raise ValueError(f"{what} needs {format_bytes(nbytes)}, more than this machine's "
                          f"{format_bytes(total)} of memory")
