"""The error function NumPy lacks (`backend.erf`): float64 to float64 precision (Cody),
float32 to float32 precision, odd, exactly +-1 far out, and written into `out` bit for bit.
"""

import math

import numpy as np
import pytest

import composed
import tinygpt as tg
from tinygpt.autograd import backend


def test_exact_erf_is_accurate_to_float64_precision():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-7, 7, 20001), rng.standard_normal(5000) * 3,
                        [0.0, -0.0, 0.5, -0.5, 4.0, -4.0, 1e-300, -1e-20, 6.0, 27.0, 40.0],
                        np.nextafter(0.5, [0, 1]), np.nextafter(4.0, [0, 5])])
    got = backend.erf(x)
    expected = np.array([math.erf(v) for v in x])
    rel = np.abs(got - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    assert rel.max() < 1e-15, f"worst at x={x[rel.argmax()]!r}: {rel.max():.3g}"
    assert np.signbit(backend.erf(np.array([-0.0]))[0])
    assert backend.erf(np.array([np.inf, -np.inf])).tolist() == [1.0, -1.0]


def test_erf_keeps_float32_and_accepts_zero_d():
    x = np.linspace(-3, 3, 7, dtype=np.float32)
    assert backend.erf(x).dtype == np.float32
    assert float(backend.erf(np.float64(0.5))) == math.erf(0.5)


def test_composed_erf_twin_is_itself_accurate():
    x = np.linspace(-4, 4, 161)
    got = composed.erf(tg.tensor(x, dtype=tg.float64)).numpy()
    np.testing.assert_allclose(got, [math.erf(v) for v in x], rtol=1e-14, atol=1e-15)


def test_float32_erf_is_accurate_to_float32_precision():
    x = np.linspace(-7, 7, 20001, dtype=np.float32)
    y = backend.erf(x)
    assert y.dtype == np.float32
    reference = np.array([math.erf(float(v)) for v in x])
    assert np.abs(y - reference).max() < 5e-7
    # odd, and exactly +-1 far out
    assert np.array_equal(backend.erf(-x), -y)
    assert backend.erf(np.float32([30.0]))[0] == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_into_out_writes_the_same_bits_there(dtype):
    x = np.linspace(-6, 6, 1001).astype(dtype)
    out = np.full_like(x, np.nan)
    assert backend.erf(x, out=out) is out
    assert np.array_equal(out, backend.erf(x))
