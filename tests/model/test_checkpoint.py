"""Training checkpoints as a format of their own: save and load a run's state without the
training loop, and the sizes a config implies without building a model."""

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.data import BPETokenizer, CharTokenizer
from tinygpt.model.checkpoint import (join_arrays, load_checkpoint, load_training_state,
                                      save_training_state, split_arrays)
from tinygpt.model.sizes import count_params, empty_gpt, parameter_shapes
from tinygpt.optim import AdamW


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_shapes_are_the_models_without_building_it(bias):
    config = tg.GPTConfig(vocab_size=13, block_size=6, n_layer=2, n_head=2, n_embd=8, bias=bias)
    model = tg.GPT(config)
    shapes = parameter_shapes(config)
    assert list(shapes) == list(model.state_dict())
    assert all(shapes[k] == tuple(v.shape) for k, v in model.state_dict().items())
    tied = config.vocab_size * config.n_embd
    assert sum(np.prod(s) for s in shapes.values()) - tied == count_params(config)


def test_empty_gpt_has_the_shapes_and_dtype_and_draws_nothing():
    config = tg.GPTConfig(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_embd=8)
    tg.manual_seed(1)
    state = tg.autograd.backend.get_rng_state()
    model = empty_gpt(config, "float64")
    assert tg.autograd.backend.get_rng_state() == state
    assert {p.dtype for p in model.parameters()} == {np.dtype(np.float64)}
    assert model.lm_head.weight is model.transformer.wte.weight
    with pytest.raises(TypeError, match="floating-point"):
        empty_gpt(config, "int32")


def test_a_training_state_round_trips(tmp_path):
    tg.manual_seed(0)
    model = tg.GPT(tg.GPTConfig(vocab_size=300, block_size=8, n_layer=1, n_head=2, n_embd=8,
                                dropout=0.1))
    optimizer = AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        _, loss = model(tg.randint(0, 300, (2, 8)), tg.randint(0, 300, (2, 8)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    tokenizer = BPETokenizer.train("hello world, hello tinygpt " * 10, 280)
    save_training_state(tmp_path / "c.npz", model, optimizer, tokenizer, iter_num=2,
                        extra={"array": np.arange(3)})
    state = load_training_state(tmp_path / "c.npz")
    assert state.meta["iter_num"] == 2 and state.meta["extra"]["array"].tolist() == [0, 1, 2]
    assert state.tokenizer.encode("hello") == tokenizer.encode("hello")
    rebuilt = state.build_model(dropout=0.0)
    assert rebuilt.config.dropout == 0.0 and state.config.dropout == 0.1
    for (key, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert np.array_equal(a.numpy(), b.numpy()), key
    twin = AdamW(rebuilt.parameters(), lr=1e-2)
    twin.load_state_dict(state.optimizer_state)
    for index, entries in optimizer.state_dict()["state"].items():
        for name, value in entries.items():
            assert np.array_equal(np.asarray(value), np.asarray(
                twin.state_dict()["state"][index][name]))
    # The tied head is stored once.
    arrays, meta = load_checkpoint(tmp_path / "c.npz")
    assert "model/lm_head.weight" not in arrays
    assert meta["model_aliases"] == {"lm_head.weight": "transformer.wte.weight"}


def test_arrays_inside_json_round_trip():
    obj = {"a": [np.ones(2), {"b": np.zeros((1, 2))}], 3: {"step": np.int64(4)}, "c": "text"}
    arrays = {}
    document = split_arrays(obj, arrays, "x/")
    assert sorted(arrays) == ["x/a/0", "x/a/1/b"]
    back = join_arrays(document, arrays)
    assert back[3] == {"step": 4} and back["c"] == "text"
    assert np.array_equal(back["a"][1]["b"], np.zeros((1, 2)))


def test_a_character_tokenizer_is_saved_too(tmp_path):
    model = tg.GPT(tg.GPTConfig(vocab_size=4, block_size=4, n_layer=1, n_head=1, n_embd=4))
    save_training_state(tmp_path / "c.npz", model, tokenizer=CharTokenizer("abcd"))
    state = load_training_state(tmp_path / "c.npz")
    assert state.tokenizer == CharTokenizer("abcd") and state.optimizer_state is None
