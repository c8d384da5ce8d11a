"""LoRA: the adapted layer's formula and gradients, the frozen base, merging, errors."""

import math

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.autograd import gradcheck
from tinygpt.nn import Linear
from tinygpt.nn.lora import LoRALinear, apply_lora, lora_layers, merge_lora
from tinygpt.optim import configure_param_groups

from conftest import assert_close


def small_gpt(dtype="float64", device="cpu", seed=0):
    tg.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8))
    return model.to(dtype).to(device)


def randomize_adapters(model, seed=1, scale=0.3):
    """B is zero after apply_lora; give it values so that the adapters change something."""
    rng = np.random.default_rng(seed)
    for _, layer in lora_layers(model):
        w = layer.lora_B.weight
        w.data[...] = tg.tensor(rng.standard_normal(w.shape) * scale, dtype=w.dtype,
                                device=w.device).data


def test_layer_computes_the_lora_formula():
    rng = np.random.default_rng(0)
    base = Linear(6, 5, dtype="float64")
    layer = LoRALinear(base, rank=3, alpha=12)
    layer.lora_B.weight.data[...] = rng.standard_normal((5, 3))
    x = rng.standard_normal((2, 4, 6))
    W, b = base.weight.numpy(), base.bias.numpy()
    A, B = layer.lora_A.weight.numpy(), layer.lora_B.weight.numpy()
    expected = x @ W.T + b + (12 / 3) * x @ A.T @ B.T
    assert_close(layer(tg.tensor(x)).numpy(), expected)
    assert_close(layer.delta_weight(), 4.0 * B @ A)
    assert layer.weight is base.weight and layer.bias is base.bias


def test_a_is_initialised_as_peft_and_b_at_zero():
    layer = LoRALinear(Linear(400, 300), rank=64, alpha=16)
    A = layer.lora_A.weight.numpy()
    bound = 1 / math.sqrt(400)          # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))
    assert A.shape == (64, 400) and np.abs(A).max() <= bound
    assert abs(A.std() - bound / math.sqrt(3)) < 0.02 * bound
    assert layer.lora_B.weight.shape == (300, 64)
    np.testing.assert_array_equal(layer.lora_B.weight.numpy(), 0)


def test_gradcheck_lora_layer_with_dropout():
    rng = np.random.default_rng(1)
    layer = LoRALinear(Linear(5, 4, dtype="float64"), rank=2, alpha=3, dropout=0.25)
    layer.lora_B.weight.data[...] = rng.standard_normal((4, 2))
    x = tg.tensor(rng.standard_normal((3, 5)), requires_grad=True)

    def fn(x, a, b):
        tg.manual_seed(3)                # one fixed dropout mask
        return layer(x)
    assert gradcheck(fn, [x, layer.lora_A.weight, layer.lora_B.weight])
    layer.eval()
    tg.manual_seed(3)
    y_eval = layer(x).numpy()
    expected = layer.base_layer(x).numpy() + x.numpy() @ layer.delta_weight().T
    assert_close(y_eval, expected)       # no dropout in eval mode


def test_adapted_model_starts_equal_and_trains_the_adapters_only():
    model = small_gpt()
    idx = np.random.default_rng(2).integers(0, 11, (2, 8))
    before = model(idx)[0].numpy()
    apply_lora(model, rank=2, alpha=4, targets=("c_attn", "c_proj", "c_fc"))
    np.testing.assert_array_equal(model(idx)[0].numpy(), before)
    assert len(lora_layers(model)) == 2 * 4     # c_attn, attn.c_proj, c_fc, mlp.c_proj
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    C = 8
    per_block = 2 * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
    assert model.num_parameters(only_trainable=True) == 2 * per_block
    assert "transformer.h.0.attn.c_attn.base_layer.weight" in model.state_dict()
    _, loss = model(idx, idx)
    loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    groups = configure_param_groups(model.named_parameters(), 0.1)
    optimized = {id(p) for g in groups for p in g["params"]}
    assert optimized == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("dtype, rtol, atol", [("float64", 0, 1e-12), ("float32", 0, 1e-5)])
def test_merge_gives_a_plain_gpt_with_the_same_outputs(dtype, rtol, atol, device):
    model = small_gpt(dtype, device)
    plain_keys = list(model.state_dict())
    apply_lora(model, rank=4, alpha=8, dropout=0.1)
    randomize_adapters(model)
    model.eval()
    idx = tg.tensor(np.random.default_rng(3).integers(0, 11, (3, 8)), device=device)
    adapted = model(idx)[0].numpy()
    merged = merge_lora(model)
    assert merged is model and type(merged) is GPT and not lora_layers(merged)
    assert list(merged.state_dict()) == plain_keys
    assert all(p.requires_grad for p in merged.parameters())
    assert "lora_config" not in merged.__dict__
    np.testing.assert_allclose(merged(idx)[0].numpy(), adapted, rtol=rtol, atol=atol)
    # The merged weights load into a freshly built GPT: nothing of LoRA is left.
    fresh = GPT(merged.config).to(dtype)
    fresh.load_state_dict(merged.state_dict())


def test_dropout_acts_in_training_only():
    model = small_gpt()
    apply_lora(model, rank=2, alpha=2, dropout=0.5, targets=("c_attn",))
    randomize_adapters(model)
    idx = np.random.default_rng(4).integers(0, 11, (2, 8))
    model.train()
    tg.manual_seed(0)
    a = model(idx)[0].numpy()
    tg.manual_seed(1)
    b = model(idx)[0].numpy()
    assert not np.allclose(a, b)
    model.eval()
    np.testing.assert_array_equal(model(idx)[0].numpy(), model(idx)[0].numpy())


def test_targets_match_like_peft():
    model = small_gpt()
    apply_lora(model, targets=("attn.c_proj",))
    assert [name for name, _ in lora_layers(model)] == ["transformer.h.0.attn.c_proj",
                                                        "transformer.h.1.attn.c_proj"]


def test_bad_settings_are_named():
    model = small_gpt()
    for rank in (0, -2):
        with pytest.raises(ValueError, match="rank must be a positive int"):
            apply_lora(model, rank=rank)
    with pytest.raises(TypeError, match="rank must be a positive int, got float 2.5"):
        apply_lora(model, rank=2.5)
    with pytest.raises(ValueError, match="alpha"):
        apply_lora(model, alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        apply_lora(model, dropout=1.0)
    with pytest.raises(TypeError, match="LoRA targets must be a tuple of module names"):
        apply_lora(model, targets="c_attn")
    with pytest.raises(ValueError, match="LoRA targets needs at least one module name"):
        apply_lora(model, targets=())
    with pytest.raises(ValueError, match="'q_proj' names no layer.*c_attn, c_fc, c_proj, "
                                         "lm_head"):
        apply_lora(model, targets=("c_attn", "q_proj"))
    with pytest.raises(ValueError, match="LayerNorm; LoRA adapts Linear layers only"):
        apply_lora(model, targets=("ln_1",))
    with pytest.raises(ValueError, match="tied"):
        apply_lora(model, targets=("lm_head",))
    # Nothing was changed by the refused calls.
    assert not lora_layers(model) and all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="no LoRA adapters to merge"):
        merge_lora(model)
    apply_lora(model, rank=2)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(model, rank=2)
