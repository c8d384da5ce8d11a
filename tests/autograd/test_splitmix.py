"""The GPU's generator (tinygpt/autograd/splitmix.py): SplitMix64 read at positions, so
its state is two integers that a checkpoint saves and restores exactly. Run on NumPy here
and on the CUDA device (the stand-in without a GPU)."""

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.autograd import backend, splitmix


def numpy_generator(key):
    return splitmix.CounterGenerator(key, lambda: np, backend.fuse)


def test_the_stream_is_splitmix64():
    # Vigna's reference outputs for seed 1234567 (splitmix64.c), read at positions 0..4.
    positions = np.arange(1, 6, dtype=np.uint64) * np.uint64(splitmix.GOLDEN)
    out = splitmix.mix(np.uint64(1234567) + positions)
    assert out.tolist() == [6457827717110365317, 3203168211198807973, 9817491932198370423,
                            4593380528125082431, 16408922859458223821]


def test_uniforms_are_the_top_bits_of_the_stream():
    gen = numpy_generator(1234567)
    u64, u32 = gen.random(3), gen.random((2,), dtype=np.float32)
    bits = splitmix.mix(np.uint64(1234567) + np.arange(1, 6, dtype=np.uint64)
                        * np.uint64(splitmix.GOLDEN))
    np.testing.assert_array_equal(u64, (bits[:3] >> np.uint64(11)) * 2.0 ** -53)
    np.testing.assert_array_equal(u32, ((bits[3:] >> np.uint64(40)) * 2.0 ** -24)
                                  .astype(np.float32))
    assert u32.dtype == np.float32 and gen.state["position"] == 5


def test_draws_of_any_shape_continue_one_stream():
    whole = numpy_generator(7).random(24)
    gen = numpy_generator(7)
    parts = [gen.random((2, 3)), gen.random(()), gen.random((1, 0, 4)), gen.random((17,))]
    np.testing.assert_array_equal(np.concatenate([p.reshape(-1) for p in parts]), whole[:24])


def test_the_state_restores_the_stream_and_is_checked():
    gen = numpy_generator(3)
    gen.random(10)
    saved = gen.state
    expected = gen.standard_normal((4, 5))
    gen.random(7)
    gen.state = saved
    np.testing.assert_array_equal(gen.standard_normal((4, 5)), expected)
    for bad in ({"bit_generator": "PCG64"}, {"bit_generator": "SplitMix64", "key": -1,
                                             "position": 0}, None):
        with pytest.raises(ValueError, match="SplitMix64"):
            gen.state = bad


def test_the_distributions_have_their_moments():
    gen = numpy_generator(11)
    u = gen.random(200_000)
    z = gen.standard_normal(200_000, dtype=np.float32)
    k = gen.integers(3, 9, size=60_000)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.005
    assert z.dtype == np.float32 and abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert set(np.unique(k).tolist()) == set(range(3, 9))
    assert np.abs(np.bincount(k - 3) / len(k) - 1 / 6).max() < 0.01


def test_cuda_draws_repeat_for_a_seed_and_the_state_round_trips(device):
    tg.manual_seed(5)
    a = tg.randn(3, 4, device=device).numpy()
    state = backend.get_rng_state(device)
    b = tg.rand(6, device=device).numpy()
    tg.manual_seed(5)
    np.testing.assert_array_equal(tg.randn(3, 4, device=device).numpy(), a)
    tg.manual_seed(123)                         # another stream, then the saved state back
    backend.set_rng_state(state, device)
    np.testing.assert_array_equal(tg.rand(6, device=device).numpy(), b)
