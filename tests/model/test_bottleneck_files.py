"""Bottleneck adapters saved and loaded alone, and in training checkpoints."""

import json

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.model.bottleneck import (CONFIG_NAME, WEIGHTS_NAME, load_bottleneck,
                                      save_bottleneck)
from tinygpt.model.checkpoint import (CheckpointError, load_training_state,
                                      save_training_state)
from tinygpt.model.heads import GPTForMultipleChoice
from tinygpt.nn.bottleneck import apply_adapters, bottleneck_adapters
from tinygpt.model import safetensors


def small_gpt(seed=0, dtype="float32"):
    tg.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8)).to(dtype)


def trained_like(model, seed=1):
    rng = np.random.default_rng(seed)
    for _, adapter in bottleneck_adapters(model):
        for p in adapter.parameters():
            p.data[...] = rng.standard_normal(p.shape).astype(p.dtype) * 0.5
    return model


IDX = np.arange(16).reshape(2, 8) % 13


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saved_adapters_alone_rebuild_the_model_on_its_base(tmp_path, dtype):
    model = trained_like(apply_adapters(small_gpt(dtype=dtype), 3))
    save_bottleneck(model, tmp_path / "b")
    config = json.loads((tmp_path / "b" / CONFIG_NAME).read_text())
    assert config["method"] == "bottleneck" and config["size"] == 3
    stored = safetensors.load_file(tmp_path / "b" / WEIGHTS_NAME)
    assert sorted(stored) == sorted(k for k in model.state_dict() if ".bottleneck." in k)
    assert len(stored) == 2 * 2 * 4                       # 2 blocks, 2 adapters, 4 tensors
    rebuilt = load_bottleneck(small_gpt(dtype=dtype), tmp_path / "b")
    np.testing.assert_array_equal(rebuilt(IDX)[0].numpy(), model(IDX)[0].numpy())
    assert rebuilt.num_parameters(only_trainable=True) == \
        model.num_parameters(only_trainable=True)
    # Into a model that has adapters already: the tensors are copied.
    again = load_bottleneck(apply_adapters(small_gpt(dtype=dtype), 3), tmp_path / "b")
    np.testing.assert_array_equal(again(IDX)[0].numpy(), model(IDX)[0].numpy())


def test_a_head_is_saved_with_its_adapters(tmp_path):
    head = apply_adapters(GPTForMultipleChoice.from_gpt(small_gpt()), 2, trainable=("score",))
    trained_like(head)
    head.score.weight.data[...] = 0.3
    save_bottleneck(head, tmp_path / "b")
    stored = safetensors.load_file(tmp_path / "b" / WEIGHTS_NAME)
    assert {"score.weight", "score.bias"} <= set(stored)
    tg.manual_seed(9)                                     # another head, the same base
    rebuilt = load_bottleneck(GPTForMultipleChoice.from_gpt(small_gpt()), tmp_path / "b")
    ids = np.arange(2 * 2 * 6).reshape(2, 2, 6) % 13
    np.testing.assert_array_equal(rebuilt.eval()(ids).logits.numpy(),
                                  head.eval()(ids).logits.numpy())


def test_refusals_leave_files_and_models_as_they_were(tmp_path):
    model = trained_like(apply_adapters(small_gpt(), 3))
    save_bottleneck(model, tmp_path / "b")
    before = (tmp_path / "b" / WEIGHTS_NAME).read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_bottleneck(trained_like(apply_adapters(small_gpt(), 3), seed=4), tmp_path / "b")
    assert (tmp_path / "b" / WEIGHTS_NAME).read_bytes() == before
    with pytest.raises(ValueError, match="no bottleneck adapters"):
        save_bottleneck(small_gpt(), tmp_path / "c")
    assert not (tmp_path / "c").exists()

    other = apply_adapters(small_gpt(), 5)
    with pytest.raises(ValueError, match="the model's are"):
        load_bottleneck(other, tmp_path / "b")
    # A base of another width: every tensor named, nothing loaded, no adapters left behind.
    tg.manual_seed(0)
    wide = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=12))
    with pytest.raises(ValueError, match="features 8 must be the model's width"):
        load_bottleneck(wide, tmp_path / "b")
    assert not bottleneck_adapters(wide) and all(p.requires_grad for p in wide.parameters())
    with pytest.raises(FileNotFoundError, match="not a bottleneck adapter folder"):
        load_bottleneck(small_gpt(), tmp_path)


def test_load_checks_shapes_before_copying(tmp_path):
    model = trained_like(apply_adapters(small_gpt(), 3))
    save_bottleneck(model, tmp_path / "b")
    tensors = safetensors.load_file(tmp_path / "b" / WEIGHTS_NAME)
    key = "transformer.h.1.mlp.bottleneck.up.weight"
    tensors[key] = np.zeros((8, 4), np.float32)
    safetensors.save_file(tensors, tmp_path / "b" / WEIGHTS_NAME)
    fresh = small_gpt()
    with pytest.raises(ValueError, match=f"tensor '{key}' has shape \\(8, 4\\)"):
        load_bottleneck(fresh, tmp_path / "b")
    assert not bottleneck_adapters(fresh)


def test_a_size_from_the_file_is_checked_before_any_adapter_is_made(tmp_path, monkeypatch):
    # config.json's size decides what apply_adapters allocates: a size the tensors do not
    # have, or adapters larger than memory, are refused from the header alone.
    from tinygpt import memory
    from tinygpt.model import bottleneck as files
    save_bottleneck(trained_like(apply_adapters(small_gpt(), 3)), tmp_path / "b")
    made = []
    monkeypatch.setattr(files, "apply_adapters", lambda *a, **k: made.append(a))
    config = json.loads((tmp_path / "b" / CONFIG_NAME).read_text())
    (tmp_path / "b" / CONFIG_NAME).write_text(json.dumps({**config, "size": 10 ** 9}))
    with pytest.raises(ValueError, match=r"has shape \(3, 8\), the model's is \(1000000000, 8\)"):
        load_bottleneck(small_gpt(), tmp_path / "b")
    (tmp_path / "b" / CONFIG_NAME).write_text(json.dumps(config))
    model = small_gpt()
    monkeypatch.setattr(memory, "total_memory", lambda: 1000)
    with pytest.raises(ValueError, match="the bottleneck adapters of .* more than this"):
        load_bottleneck(model, tmp_path / "b")
    assert made == []


def test_checkpoints_rebuild_the_adapters(tmp_path):
    model = trained_like(apply_adapters(small_gpt(), 3))
    save_training_state(tmp_path / "ckpt.npz", model)
    state = load_training_state(tmp_path / "ckpt.npz")
    assert state.meta["bottleneck"]["size"] == 3
    rebuilt = state.build_model()
    np.testing.assert_array_equal(rebuilt(IDX)[0].numpy(), model(IDX)[0].numpy())
    assert {n for n, p in rebuilt.named_parameters() if p.requires_grad} == \
        {n for n, p in model.named_parameters() if p.requires_grad}

    # A checkpoint whose adapters do not match its recorded structure is refused.
    from tinygpt.model.checkpoint import load_checkpoint, save_checkpoint
    arrays, meta = load_checkpoint(tmp_path / "ckpt.npz")
    meta["bottleneck"]["size"] = 4
    save_checkpoint(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(CheckpointError, match="bottleneck.down.weight has shape"):
        load_training_state(tmp_path / "bad.npz")
