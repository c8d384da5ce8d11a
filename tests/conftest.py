"""Shared test fixtures: the device fixture, the tolerance table and Hypothesis profiles."""

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from tinygpt.autograd import backend

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
            backend.get_array_module("cuda")
        except RuntimeError as e:
            pytest.skip(f"CUDA unavailable: {e}")
    return request.param


@pytest.fixture(params=["reference", "fast"])
def ops_impl(request):
    """Run a test body once on the reference ops and once on the fast kernels (the
    default); yields the name."""
    from tinygpt.autograd import use_reference_ops
    with use_reference_ops(request.param == "reference"):
        yield request.param


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
