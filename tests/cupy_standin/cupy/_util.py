"""cupy._util.PerformanceWarning, where CuPy 14 defines it (a RuntimeWarning)."""


class PerformanceWarning(RuntimeWarning):
    """Warning that indicates possible performance issues."""
