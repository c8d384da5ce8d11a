"""Batches: targets are the inputs shifted by one, every start index is reachable and none
beyond, seeding and save/restore of the sampler's generator, the 90/10 split, bad inputs."""

import json
import pickle

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.data import BatchSampler, as_token_array, get_batch, train_val_split


def _starts(x):
    return x.numpy()[:, 0].tolist()


def test_targets_are_the_inputs_shifted_by_one():
    data = np.random.default_rng(0).integers(0, 50, size=500).astype(np.uint16)
    sampler = BatchSampler(data, block_size=16, batch_size=8, seed=0)
    x, y = sampler.get_batch()
    assert isinstance(x, tg.Tensor) and x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == np.int64 and x.device == "cpu"
    np.testing.assert_array_equal(x.numpy()[:, 1:], y.numpy()[:, :-1])
    # Each row is a window of the data: find it from a distinct-valued copy of the text.
    positions = BatchSampler(np.arange(500), 16, 8, seed=0).get_batch()[0].numpy()[:, 0]
    for row, i in zip(range(8), positions):
        np.testing.assert_array_equal(x.numpy()[row], data[i:i + 16])
        np.testing.assert_array_equal(y.numpy()[row], data[i + 1:i + 17])


def test_every_start_index_is_reachable_and_none_beyond():
    block_size, n = 8, 8 + 6                # starts 0 .. n - block_size - 1 = 0 .. 5
    sampler = BatchSampler(np.arange(n), block_size, batch_size=4, seed=1)
    assert sampler.num_windows == 6
    seen = set()
    for _ in range(50):
        x, y = sampler.get_batch()
        seen.update(_starts(x))
        assert y.numpy().max() <= n - 1
    assert seen == set(range(6))


def test_the_smallest_possible_data_has_one_window():
    x, y = BatchSampler(np.arange(5), block_size=4, batch_size=3, seed=0).get_batch()
    np.testing.assert_array_equal(x.numpy(), np.tile(np.arange(4), (3, 1)))
    np.testing.assert_array_equal(y.numpy(), np.tile(np.arange(1, 5), (3, 1)))


def test_seeds_repeat_and_differ():
    data = np.arange(1000)
    a = [_starts(BatchSampler(data, 8, 16, seed=7).get_batch()[0]) for _ in range(2)]
    b = _starts(BatchSampler(data, 8, 16, seed=8).get_batch()[0])
    assert a[0] == a[1] and a[0] != b


def test_batch_stream_is_independent_of_the_weights_stream():
    # tg.manual_seed(s) and BatchSampler(seed=s) must not share random bits: the batch
    # positions would then be a function of the initial weights.
    tg.manual_seed(3)
    weights_bits = tg.autograd.backend.generator("cpu").bit_generator.random_raw(64)
    sampler = BatchSampler(np.arange(1000), 8, 16, seed=3)
    batch_bits = sampler.rng.bit_generator.random_raw(64)
    assert not set(weights_bits.tolist()) & set(batch_bits.tolist())


def test_no_seed_follows_manual_seed():
    data = np.arange(1000)
    tg.manual_seed(42)
    first = _starts(BatchSampler(data, 8, 16).get_batch()[0])
    tg.manual_seed(42)
    assert _starts(BatchSampler(data, 8, 16).get_batch()[0]) == first


def test_state_dict_resumes_the_same_batches():
    data = np.arange(10_000)
    sampler = BatchSampler(data, 32, 4, seed=3)
    for _ in range(3):
        sampler.get_batch()
    state = pickle.loads(pickle.dumps(sampler.state_dict()))
    json.dumps(state)                     # plain ints and strings: any checkpoint format
    expected = [_starts(sampler.get_batch()[0]) for _ in range(4)]
    resumed = BatchSampler(data, 32, 4, seed=999)
    resumed.load_state_dict(state)
    assert [_starts(resumed.get_batch()[0]) for _ in range(4)] == expected


def test_iteration_draws_batches():
    sampler = BatchSampler(np.arange(100), 4, 2, seed=0)
    twin = BatchSampler(np.arange(100), 4, 2, seed=0)
    for (x, _), _step in zip(sampler, range(3)):
        np.testing.assert_array_equal(x.numpy(), twin.get_batch()[0].numpy())


def test_get_batch_function():
    data = np.arange(300)
    x, y = get_batch(data, 10, 5, rng=np.random.default_rng(0))
    starts = np.random.default_rng(0).integers(0, 300 - 10, size=5)
    np.testing.assert_array_equal(x.numpy(), starts[:, None] + np.arange(10))
    np.testing.assert_array_equal(y.numpy(), x.numpy() + 1)
    tg.manual_seed(5)
    first = get_batch(data, 10, 5)[0].numpy()
    tg.manual_seed(5)
    np.testing.assert_array_equal(get_batch(data, 10, 5)[0].numpy(), first)


def test_cuda_batches_equal_cpu_batches(device):
    data = np.arange(2000).astype(np.uint16)
    x_cpu, y_cpu = BatchSampler(data, 16, 4, seed=11).get_batch()
    x, y = BatchSampler(data, 16, 4, seed=11, device=device).get_batch()
    assert x.device == device and x.dtype == np.int64
    np.testing.assert_array_equal(x.numpy(), x_cpu.numpy())
    np.testing.assert_array_equal(y.numpy(), y_cpu.numpy())


def test_train_val_split_is_90_10_in_order():
    data = np.arange(1001, dtype=np.uint16)
    train, val = train_val_split(data)
    assert len(train) == int(0.9 * 1001) == 900 and len(val) == 101
    np.testing.assert_array_equal(np.concatenate([train, val]), data)
    assert train.dtype == np.uint16
    train, val = train_val_split(list(range(10)), frac=0.5)
    assert train.tolist() == [0, 1, 2, 3, 4] and val.tolist() == [5, 6, 7, 8, 9]


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_train_val_split_bad_fraction(frac):
    with pytest.raises(ValueError, match="fraction"):
        train_val_split(np.arange(100), frac)


def test_train_val_split_too_little_data():
    with pytest.raises(ValueError, match="empty training"):
        train_val_split(np.arange(1))


def test_data_too_short_names_both_numbers():
    with pytest.raises(ValueError, match="64 tokens are too few for block_size 64.*65"):
        BatchSampler(np.arange(64), block_size=64, batch_size=2)
    with pytest.raises(ValueError, match="too few"):
        get_batch(np.arange(3), 3, 1)


@pytest.mark.parametrize("block_size, batch_size, name", [
    (0, 4, "block_size"), (8, 0, "batch_size"), (8, -1, "batch_size"), (8.0, 4, "block_size"),
    (True, 4, "block_size"),
])
def test_bad_sizes(block_size, batch_size, name):
    with pytest.raises(ValueError, match=name):
        BatchSampler(np.arange(100), block_size, batch_size)


def test_bad_data():
    with pytest.raises(ValueError, match="1-D"):
        BatchSampler(np.zeros((10, 10), dtype=np.int64), 4, 2)
    with pytest.raises(TypeError, match="integers"):
        BatchSampler(np.linspace(0, 1, 100), 4, 2)
    assert as_token_array(tg.tensor([1, 2, 3])).tolist() == [1, 2, 3]


def test_bad_state_dict():
    sampler = BatchSampler(np.arange(100), 4, 2, seed=0)
    with pytest.raises(ValueError, match="not a BatchSampler state"):
        sampler.load_state_dict({"rng": {"bit_generator": "MT19937"}})
    with pytest.raises(ValueError, match="not a BatchSampler state"):
        sampler.load_state_dict([1, 2])
