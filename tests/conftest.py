"""Shared test fixtures: the device fixture, the tolerance table and Hypothesis profiles,
and the CuPy stand-in (tests/cupy_standin) where no usable CuPy is installed."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

CUPY_STANDIN_PATH = Path(__file__).resolve().parent / "cupy_standin"


def _real_cupy_usable():
    """True when a real CuPy imports and sees a GPU: it then runs the cuda tests. (The
    stand-in itself may be importable already, from a PYTHONPATH this file set in a
    parent process: it is no real CuPy.)"""
    try:
        import cupy
        if Path(cupy.__file__).resolve().is_relative_to(CUPY_STANDIN_PATH):
            return False
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:       # not installed, or no driver or GPU
        return False


def _install_cupy_standin():
    """Make `import cupy` (and cupyx) find the stand-in, in this process and in the
    subprocesses tests start (through PYTHONPATH); a CuPy imported without a GPU is
    dropped first."""
    for name in [n for n in sys.modules if n.split(".")[0] in ("cupy", "cupyx")]:
        del sys.modules[name]
    sys.path.insert(0, str(CUPY_STANDIN_PATH))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(CUPY_STANDIN_PATH)] + [p for p in [os.environ.get("PYTHONPATH")] if p])


# True when the cuda tests run on the stand-in (no GPU); False on a real GPU.
CUPY_STANDIN = not _real_cupy_usable()
if CUPY_STANDIN:
    _install_cupy_standin()

from tinygpt.autograd import backend  # noqa: E402


def pytest_configure(config):
    # After setup.cfg's error::RuntimeWarning, so it wins: CuPy's PerformanceWarning (a
    # RuntimeWarning about speed) stays a warning.
    config.addinivalue_line("filterwarnings", "default::cupy._util.PerformanceWarning")

settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "dev", deadline=None, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One tolerance table per dtype: (rtol, atol) for comparing two computations of one value.
TOLERANCES = {
    np.dtype(np.float64): (1e-9, 1e-12),
    np.dtype(np.float32): (1e-5, 1e-6),
}

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TINYGPT_SHARED_DATA", REPO.parent / "shared" / "data"))


def assert_close(actual, expected, dtype=np.float64, scale=1.0):
    """Compare two arrays with the table's tolerance for `dtype` (scale widens atol for
    values of large magnitude, never rtol)."""
    rtol, atol = TOLERANCES[np.dtype(dtype)]
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol,
                               atol=atol * scale)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """Run a test body once per device; 'cuda' skips with the reason when unusable."""
    if request.param == "cuda":
        try:
            backend.array_module_for_device("cuda")
        except RuntimeError as e:
            pytest.skip(f"CUDA unavailable: {e}")
    return request.param


@pytest.fixture
def cuda_device():
    """"cuda", for tests that run on CUDA only (a GPU, or the CuPy stand-in); skips with
    the reason where neither is usable."""
    try:
        backend.array_module_for_device("cuda")
    except RuntimeError as e:
        pytest.skip(f"CUDA unavailable: {e}")
    return "cuda"


@pytest.fixture(params=["reference", "fast"])
def ops_impl(request):
    """Run a test body once on the reference ops and once on the fast kernels (the
    default); yields the name."""
    from tinygpt.autograd import use_reference_ops
    with use_reference_ops(request.param == "reference"):
        yield request.param


@pytest.fixture(params=[(1 << 15, 1), (7, 1), (7, 2), (1, 3)],
                ids=["one-block", "blocks", "blocks-2-threads", "rows-3-threads"])
def blocking(request, monkeypatch):
    """Blocks of BLOCK_ELEMENTS elements on a number of threads (the fast CPU kernels'
    machinery): small blocks force many blocks on small test tensors."""
    from tinygpt.autograd.fast import threads
    elements, n_threads = request.param
    monkeypatch.setattr(threads, "BLOCK_ELEMENTS", elements)
    previous = threads.get_num_threads()
    threads.set_num_threads(n_threads)
    yield
    threads.set_num_threads(previous)


@pytest.fixture
def shared_data():
    """The folder of development data beside the project; skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def throwaway_ops():
    """`add(name, cls, case=None)` registers an op (and its gradient-check case) for one
    test; both are removed from OPS and CASES afterwards, whatever happens."""
    from tinygpt.autograd import OPS, register
    from tinygpt.autograd.checks import CASES
    added = []

    def add(name, cls, case=None):
        register(name)(cls)
        added.append(name)
        if case is not None:
            CASES[name] = case
        return cls

    try:
        yield add
    finally:
        for name in added:
            OPS.pop(name, None)
            CASES.pop(name, None)
