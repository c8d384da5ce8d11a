"""CuPy's rules that tinygpt's CUDA path depends on, and the transfer counter.

Without a GPU these run on the CuPy stand-in (tests/cupy_standin) and show that it is as
strict as CuPy 14; on a GPU the same tests run on the real CuPy and show that the
stand-in's rules are CuPy's. The last tests (names, cupy.fuse's rules) are about the
stand-in itself and run only on it.
"""

import warnings

import numpy as np
import pytest

from conftest import CUPY_STANDIN
from tinygpt.autograd import backend
from tinygpt.autograd.transfers import count_transfers

pytestmark = pytest.mark.cuda


@pytest.fixture
def cp(cuda_device):
    return backend.array_module_for_device(cuda_device)


def test_arrays_are_not_numpy_arrays_and_refuse_implicit_conversion(cp):
    a = cp.arange(3.0)
    assert not isinstance(a, np.ndarray) and type(a).__module__ == "cupy"
    with pytest.raises(TypeError):
        np.asarray(a)
    np.testing.assert_array_equal(cp.asnumpy(a), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(a.get(), [0.0, 1.0, 2.0])


def test_ufuncs_and_operators_refuse_numpy_operands(cp):
    a = cp.arange(3.0)
    for call in (lambda: a + np.ones(3), lambda: np.ones(3) + a, lambda: a < np.ones(3),
                 lambda: cp.maximum(a, np.ones(3))):
        with pytest.raises(TypeError):
            call()
    assert float((a + np.float32(1)).sum()) == 6.0       # NumPy scalars are fine
    with pytest.raises(TypeError):
        a[...] = np.ones(3)                              # no assignment from the host


def test_reductions_give_0d_device_arrays(cp):
    a = cp.arange(6.0).reshape(2, 3)
    for reduced in (a.sum(), a.max(), cp.sum(a), a.mean(), (a > 2).any()):
        assert isinstance(reduced, cp.ndarray) and reduced.shape == ()


def test_integer_array_indices_wrap_around(cp):
    a = cp.arange(10, 13)
    np.testing.assert_array_equal(a[cp.asarray([0, 3, -1, 4])].get(), [10, 10, 12, 11])
    with pytest.raises(IndexError):
        a[3]                                             # a Python int is checked


def test_a_device_scalar_is_no_python_index(cp):
    with pytest.raises(TypeError):
        [1, 2, 3][cp.asarray(1)]


def test_random_scatter_add_erf_and_the_device(cp):
    import cupyx
    import cupyx.scipy.special
    gen = cp.random.default_rng(0)
    u = gen.random((1000,), dtype=np.float32)
    assert u.dtype == np.float32 and 0 <= float(u.min()) and float(u.max()) < 1
    assert gen.standard_normal((4, 5), dtype=np.float64).shape == (4, 5)
    target = cp.zeros(3)
    cupyx.scatter_add(target, cp.asarray([0, 0, 2]), cp.asarray([1.0, 2.0, 5.0]))
    np.testing.assert_array_equal(target.get(), [3.0, 0.0, 5.0])
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(cupyx.scipy.special.erf(cp.asarray(x)).get(),
                               [__import__("math").erf(v) for v in x], rtol=1e-15, atol=1e-15)
    cp.cuda.Device().synchronize()
    assert cp.cuda.runtime.getDeviceCount() >= 1


def test_a_performance_warning_is_no_error_under_the_runtime_warning_filter(cp):
    # setup.cfg turns RuntimeWarnings into errors; CuPy's PerformanceWarning is one, and
    # CuPy may issue it on any GPU: it must stay a warning.
    from cupy._util import PerformanceWarning
    assert issubclass(PerformanceWarning, RuntimeWarning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("peer access", PerformanceWarning)
    assert [w.category for w in caught] == [PerformanceWarning]


def test_the_counter_sees_every_path_to_the_host_by_line(cp):
    a = cp.arange(4.0)
    one = a[1]
    with count_transfers() as counted:
        cp.asnumpy(a)                                    # each of these is one transfer
        a.get()
        one.item()
        float(one)
        int(one)
        bool(one)
        a.tolist()
        repr(a)
        a[a > 1]                                         # the count of a boolean mask
    assert counted.total == 9
    lines = list(counted.by_line)
    assert all(line.startswith("tests/autograd/test_cupy_standin.py:") for line in lines)
    assert len(lines) == 9 and counted.bytes > 0
    with count_transfers() as quiet:
        b = (a * 2 + 1).sum()                            # stays on the device
        del b
    assert quiet.total == 0 and quiet.report() == "no device-to-host transfers"


def test_the_counter_names_the_line_that_asked_not_the_helper(cp):
    import tinygpt as tg
    t = tg.tensor([1.0, 2.0], device="cuda")
    with count_transfers() as counted:
        t.numpy()
        t.sum().item()
        float(t.sum())
    assert counted.total == 3
    assert all(line.startswith("tests/autograd/test_cupy_standin.py:") and
               line.endswith("(test_the_counter_names_the_line_that_asked_not_the_helper)")
               for line in counted.by_line)
    assert "3 device-to-host transfer(s)" in counted.report()


def test_a_read_counts_once_whichever_entry_points_it_passes(cp, monkeypatch):
    # CuPy's compiled item() may call get() without looking it up on the class: the
    # counter sees the read at item(), and once when item() does go through get().
    direct_get = cp.ndarray.get
    for item in (lambda self: direct_get(self).item(), lambda self: self.get().item()):
        monkeypatch.setattr(cp.ndarray, "item", item)
        with count_transfers() as counted:
            cp.asarray(2.0).item()
        assert counted.total == 1


def test_the_counter_restores_get_and_nests(cp):
    original = cp.ndarray.get
    with count_transfers() as outer:
        with count_transfers() as inner:
            cp.arange(2).get()
        cp.arange(2).get()
    assert (outer.total, inner.total) == (2, 1)
    assert cp.ndarray.get is original or cp.ndarray.get == original


# --- the stand-in itself ----------------------------------------------------------------------
standin_only = pytest.mark.skipif(not CUPY_STANDIN, reason="a rule of the stand-in itself")


@standin_only
def test_only_cupy_14_names_exist(cp):
    for name in ("errstate", "seterr", "geterr"):
        assert hasattr(np, name)
        with pytest.raises(AttributeError, match="no attribute"):
            getattr(cp, name)
    assert cp.put_along_axis and cp.take_along_axis and cp.fuse and cp.einsum
    assert cp.__version__.startswith("14.")


@standin_only
def test_fuse_runs_the_function_under_the_fusion_rules(cp):
    x = cp.arange(6.0).reshape(2, 3)
    ok = cp.fuse(lambda a, b: cp.sum(cp.exp(a) * b + 1.0, axis=1))
    np.testing.assert_allclose(ok(x, x).get(), (np.exp(x.get()) * x.get() + 1).sum(1))
    refused = [
        lambda a: a[0] + 1,                              # indexing
        lambda a: a.reshape(-1),                         # shape changes
        lambda a: cp.sum(a, axis=1) + a,                 # the reduced array meets an input
        lambda a: cp.sum(cp.sum(a, axis=1)),             # two reductions
        lambda a: cp.amax(a, axis=1, keepdims=True),     # keepdims
        lambda a: a.sum(axis=1),                         # a fused array has no methods
        lambda a: a if bool(cp.sum(a)) else a,           # control flow on device data
        lambda a: cp.concatenate([a, a]),                # not a ufunc
    ]
    for fn in refused:
        with pytest.raises((TypeError, ValueError, NotImplementedError)):
            cp.fuse(fn)(x)
    with pytest.raises(TypeError, match="Invalid argument type"):
        ok(x, np.ones(3))
    # After the reduction only the reduced value and constants: a scalar argument is a
    # parameter of the map before it.
    np.testing.assert_allclose(cp.fuse(lambda a: cp.log(cp.sum(a, axis=1)) / 2.0)(x).get(),
                               np.log(x.get().sum(1)) / 2)
    with pytest.raises(ValueError, match="scalar argument"):
        cp.fuse(lambda a, d: cp.sum(a, axis=1) / d)(x, 2.0)


@standin_only
def test_raw_kernels_say_they_need_a_gpu(cp):
    kernel = cp.ElementwiseKernel("T x", "T y", "y = x", "copy")
    with pytest.raises(NotImplementedError, match="GPU"):
        kernel(cp.arange(3.0))
