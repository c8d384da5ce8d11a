"""How many threads NumPy's BLAS uses, read and set at run time (floor 2, fast kernels only).

OpenBLAS runs each large product on its own threads, which then spin on the other cores
for a while waiting for the next product, and take those cores away from tinygpt's
threads (the elementwise work after a product ran at half speed). So tinygpt's CPU
kernels run with BLAS on one thread (`single_threaded_blas`) and share their products out
over tinygpt's own threads (`threads.parallel_map`, `products.matmul`): one set of threads
does all the work, as in PyTorch, and BLAS's threads sleep. The exception is a thin
product (one row a sequence in generation), which streams its matrix from memory: BLAS's
own threads, spinning between products, stream it on every core sooner than tinygpt's
can be woken, so `products.matmuls` runs it on `blas_threads(n)`.

NumPy offers no call for this; OpenBLAS does (`openblas_set_num_threads`), under names
that depend on the build. This module finds the OpenBLAS libraries this process has
loaded (through /proc/self/maps, on Linux) and calls them with ctypes. Where there is
another BLAS or another OS, every function here is a no-op and BLAS keeps its own threads.
Imports: the standard library only.
"""

_blas = {"controls": None, "config": None, "limit": None}

# How OpenBLAS's function names are spelled: NumPy's wheels ship OpenBLAS with its symbols
# renamed ("scipy_" prefix, "64_" suffix for 64-bit integers); other builds keep the plain
# names. (prefix, suffix) pairs, tried in this order.
_SPELLINGS = [(p, s) for p in ("scipy_", "") for s in ("64_", "")]


def _blas_controls():
    """[(get, set)] thread-count functions of every OpenBLAS loaded in this process (found
    through /proc/self/maps once NumPy has loaded its BLAS); [] elsewhere (another BLAS,
    another OS), where `single_threaded_blas` does nothing."""
    if _blas["controls"] is None:
        import ctypes
        controls = []
        for lib in _openblas_libraries():
            get, set_ = _symbol(lib, "openblas_get_num_threads"), \
                _symbol(lib, "openblas_set_num_threads")
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                controls.append((get, set_))
        _blas["controls"] = controls
        # BLAS's own count as the process started it (OPENBLAS_NUM_THREADS and the like):
        # read here, before any kernel has changed it.
        _blas["limit"] = max((get() for get, _ in controls), default=None)
    return _blas["controls"]


def _openblas_libraries():
    """ctypes handles of the OpenBLAS libraries this process has loaded (Linux: found in
    /proc/self/maps), else []."""
    import ctypes
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps
                            if "openblas" in line.rsplit("/", 1)[-1].lower()})
    except OSError:
        return []
    libraries = []
    for path in paths:
        try:
            libraries.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libraries


def _symbol(lib, name):
    """OpenBLAS's function `name` in `lib` under the first of its build's spellings that
    exists (see _SPELLINGS), or None."""
    return next((getattr(lib, f"{p}{name}{s}") for p, s in _SPELLINGS
                 if hasattr(lib, f"{p}{name}{s}")), None)


def blas_config():
    """OpenBLAS's own description of the library NumPy runs, as it reports it at run time:
    its build line (version, options, build target) and the core its kernels were chosen
    for on this CPU, e.g. "OpenBLAS 0.3.31 ... Haswell MAX_THREADS=64; core Haswell". None
    where NumPy's BLAS is not an OpenBLAS found in /proc/self/maps."""
    if _blas["config"] is None:
        import ctypes
        found = ""
        for lib in _openblas_libraries():
            texts = []
            for what in ("config", "corename"):
                fn = _symbol(lib, f"openblas_get_{what}")
                if fn is not None:
                    fn.restype, fn.argtypes = ctypes.c_char_p, []
                    texts.append(fn().decode(errors="replace").strip())
            if texts:
                found = " ".join(texts[0].split()) + (f"; core {texts[1]}" if len(texts) > 1
                                                      else "")
                break
        _blas["config"] = found
    return _blas["config"] or None


def can_limit_blas_threads():
    """Whether `single_threaded_blas` can put NumPy's BLAS on one thread here."""
    return bool(_blas_controls())


def get_blas_num_threads():
    """NumPy's BLAS thread count (OpenBLAS's), or None where it cannot be read."""
    controls = _blas_controls()
    return controls[0][0]() if controls else None


def set_blas_num_threads(n):
    """Set NumPy's BLAS thread count, for the whole process (and `blas_thread_limit`);
    does nothing where `can_limit_blas_threads()` is False or n is None."""
    if n is None:
        return
    n = _thread_count("set_blas_num_threads", n)
    controls = _blas_controls()
    for _, set_ in controls:
        set_(n)
    if controls:
        _blas["limit"] = n


def _thread_count(what, n):
    """`n` as an int, at least 1 (a number of threads); ValueError naming `what` else."""
    n = int(n)
    if n < 1:
        raise ValueError(f"{what}: expected at least 1 thread, got {n}")
    return n


def blas_thread_limit():
    """The most threads tinygpt's kernels give BLAS (`products` for thin products): BLAS's
    own count as the process started it (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS or the
    cores), or as `set_blas_num_threads` last set it; None where it cannot be read."""
    _blas_controls()
    return _blas["limit"]


class blas_threads:
    """Context manager: NumPy's BLAS (OpenBLAS) runs its products on `n` threads inside the
    block, and on its previous thread count again after it. The setting is process-wide:
    products started on other threads meanwhile get n threads too. Does nothing where
    `can_limit_blas_threads()` is False."""

    def __init__(self, n):
        self.n = _thread_count("blas_threads", n)

    def __enter__(self):
        self.before = [(set_, get()) for get, set_ in _blas_controls()]
        for set_, n in self.before:
            if n != self.n:
                set_(self.n)
        return self

    def __exit__(self, *exc):
        for set_, n in self.before:
            if n != self.n:
                set_(n)
        return False


class single_threaded_blas(blas_threads):
    """Context manager: NumPy's BLAS (OpenBLAS) runs every product on the calling thread
    inside the block, and on its previous thread count again after it (`blas_threads(1)`).
    The setting is process-wide: products started on other threads meanwhile are
    single-threaded too. Does nothing where `can_limit_blas_threads()` is False."""

    def __init__(self):
        super().__init__(1)
