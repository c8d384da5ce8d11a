"""Bottleneck adapters: the formula and its gradients, zero-init equal to the base (plain,
padded, cached generation, float16), the frozen base, removal, copies, refusals."""

import copy

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.autograd import gradcheck
from tinygpt.model.gpt import Block
from tinygpt.model.heads import GPTForMultipleChoice
from tinygpt.nn.bottleneck import (BottleneckAdapter, BottleneckConfig, apply_adapters,
                                   bottleneck_adapters, bottleneck_parameter_shapes,
                                   remove_adapters)
from tinygpt.nn.lora import apply_lora
from tinygpt.optim import configure_param_groups

from conftest import assert_close


def small_gpt(dtype="float64", device="cpu", seed=0, **options):
    tg.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8,
                          **options))
    return model.to(dtype).to(device)


def randomize(model, seed=1, scale=0.5):
    """up starts at zero; give every adapter values so that it changes something."""
    rng = np.random.default_rng(seed)
    for _, adapter in bottleneck_adapters(model):
        for p in adapter.parameters():
            p.data[...] = tg.tensor(rng.standard_normal(p.shape) * scale, dtype=p.dtype,
                                    device=p.device).data


def gelu(x):
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def test_adapter_computes_h_plus_up_gelu_down():
    adapter = BottleneckAdapter(6, 3, dtype="float64")
    randomize_one = np.random.default_rng(0)
    for p in adapter.parameters():
        p.data[...] = randomize_one.standard_normal(p.shape)
    h = np.random.default_rng(1).standard_normal((2, 4, 6))
    Wd, bd = adapter.down.weight.numpy(), adapter.down.bias.numpy()
    Wu, bu = adapter.up.weight.numpy(), adapter.up.bias.numpy()
    expected = h + gelu(h @ Wd.T + bd) @ Wu.T + bu
    assert_close(adapter(tg.tensor(h)).numpy(), expected)
    assert adapter.num_parameters() == 2 * 6 * 3 + 3 + 6


def test_up_projection_starts_at_zero_and_down_as_the_gpt_linears():
    adapter = BottleneckAdapter(256, 64)
    np.testing.assert_array_equal(adapter.up.weight.numpy(), 0)
    np.testing.assert_array_equal(adapter.up.bias.numpy(), 0)
    np.testing.assert_array_equal(adapter.down.bias.numpy(), 0)
    assert abs(adapter.down.weight.numpy().std() - 0.02) < 0.002


def test_gradcheck_through_a_block_with_adapters():
    tg.manual_seed(0)
    config = GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=4, bias=True)
    block = Block(config).to("float64")
    apply_adapters(block, size=3, features=4)
    randomize(block, scale=0.7)
    x = tg.tensor(np.random.default_rng(2).standard_normal((2, 3, 4)), requires_grad=True)
    adapters = [p for _, a in bottleneck_adapters(block) for p in a.parameters()]
    assert len(adapters) == 8

    def fn(x, *params):
        return block(x)
    assert gradcheck(fn, [x, *adapters])
    # The frozen base gets no gradient; the adapters and the input do.
    block(x).sum().backward()
    assert block.attn.c_attn.weight.grad is None and block.ln_1.weight.grad is None
    assert all(p.grad is not None for p in adapters)


def test_adapters_sit_after_each_sublayer_before_the_residual_add():
    model = small_gpt()
    apply_adapters(model, 3)
    randomize(model)
    block = model.transformer.h[0]
    x = tg.tensor(np.random.default_rng(3).standard_normal((1, 5, 8)))
    a = block.attn.bottleneck(block.attn.forward(block.ln_1(x)))       # the hook's work
    x1 = x.numpy() + a.numpy()
    m = block.mlp.bottleneck(block.mlp.forward(block.ln_2(tg.tensor(x1))))
    assert_close(block(x).numpy(), x1 + m.numpy())


def test_zero_init_equals_the_base_and_only_adapters_train():
    model = small_gpt()
    idx = np.random.default_rng(2).integers(0, 11, (2, 8))
    before = model(idx)[0].numpy()
    apply_adapters(model, size=3)
    np.testing.assert_array_equal(model(idx)[0].numpy(), before)
    assert len(bottleneck_adapters(model)) == 2 * 2
    C, m = 8, 3
    assert model.num_parameters(only_trainable=True) == 2 * 2 * (2 * C * m + m + C)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".bottleneck." in n for n in names)
    assert "transformer.h.0.attn.c_attn.weight" in model.state_dict()     # base names kept
    _, loss = model(idx, idx)
    loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    groups = configure_param_groups(model.named_parameters(), 0.1)
    assert {id(p) for g in groups for p in g["params"]} == \
        {id(p) for p in model.parameters() if p.requires_grad}
    randomize(model)
    assert np.abs(model(idx)[0].numpy() - before).max() > 1e-3


def test_zero_init_equals_the_base_with_padding_cache_and_float16():
    ids = np.random.default_rng(4).integers(0, 11, (2, 6))
    mask = np.ones((2, 6), dtype=np.int64)
    mask[1, :2] = 0                                       # left padding, masked in attention
    for dtype in ("float64", "float16"):
        base = small_gpt(dtype)
        adapted = apply_adapters(copy.deepcopy(base), 4)
        assert adapted.transformer.h[0].attn.bottleneck.up.weight.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(adapted(ids, attention_mask=mask)[0].numpy(),
                                      base(ids, attention_mask=mask)[0].numpy())
        np.testing.assert_array_equal(
            adapted.generate(ids, 4, do_sample=False, attention_mask=mask).numpy(),
            base.generate(ids, 4, do_sample=False, attention_mask=mask).numpy())

def test_cached_generation_runs_the_adapters():
    model = apply_adapters(small_gpt(), 3)
    randomize(model)
    ids = np.random.default_rng(5).integers(0, 11, (1, 4))
    out = model.generate(ids, 3, do_sample=False).numpy()
    # Greedy decoding with the cache equals argmax of full forwards over the growing text.
    seq = ids
    for _ in range(3):
        logits = model(seq)[0].numpy()[:, -1]
        seq = np.concatenate([seq, logits.argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)


def test_remove_and_copy():
    model = small_gpt()
    idx = np.arange(8)[None] % 11
    before = model(idx)[0].numpy()
    apply_adapters(model, 2)
    randomize(model)
    twin = copy.deepcopy(model)                           # runs its own adapters
    randomize(twin, seed=7)
    assert np.abs(twin(idx)[0].numpy() - model(idx)[0].numpy()).max() > 1e-3
    remove_adapters(model)
    np.testing.assert_array_equal(model(idx)[0].numpy(), before)
    assert not bottleneck_adapters(model) and all(p.requires_grad for p in model.parameters())
    assert "bottleneck_config" not in model.__dict__
    apply_adapters(model, 2)                              # and can be adapted again


def test_a_task_head_stays_trainable_and_the_shapes_are_predicted():
    head = GPTForMultipleChoice.from_gpt(small_gpt())
    apply_adapters(head, 5, trainable=("score",))
    trained = {n for n, p in head.named_parameters() if p.requires_grad}
    assert {"score.weight", "score.bias"} <= trained
    assert all(n.startswith("score.") or ".bottleneck." in n for n in trained)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    plain = {k: s for k, s in shapes.items() if ".bottleneck." not in k}
    assert bottleneck_parameter_shapes(plain, head.bottleneck_config) == shapes
    config = BottleneckConfig.from_dict(head.bottleneck_config.to_dict())
    assert config == head.bottleneck_config == BottleneckConfig(5, ("attn", "mlp"), 8,
                                                                ("score",))


@pytest.mark.parametrize("size, error, message", [
    (0, ValueError, "bottleneck size must be a positive int"),
    (-3, ValueError, "bottleneck size must be a positive int"),
    (2.0, TypeError, "bottleneck size must be a positive int"),
    (True, TypeError, "bottleneck size must be a positive int"),
])
def test_bad_sizes_are_refused(size, error, message):
    model = small_gpt()
    with pytest.raises(error, match=message):
        apply_adapters(model, size)
    assert not bottleneck_adapters(model) and all(p.requires_grad for p in model.parameters())


def test_adapters_twice_lora_and_tied_heads_are_refused():
    model = apply_adapters(small_gpt(), 2)
    with pytest.raises(ValueError, match="already has bottleneck adapters"):
        apply_adapters(model, 2)
    with pytest.raises(ValueError, match="LoRA and bottleneck adapters are not used together"):
        apply_adapters(apply_lora(small_gpt(), rank=2), 2)
    for options, message in [
            (dict(targets=("lm_head",)), "target 'lm_head' holds a tied parameter"),
            (dict(trainable=("lm_head",)), "module 'lm_head' holds a tied parameter"),
            (dict(trainable=("wte",)), "module 'transformer.wte' holds a tied parameter"),
            (dict(targets=("q_proj",)), "target 'q_proj' names no module"),
            (dict(trainable=("score",)), "trainable module 'score' names no module"),
            (dict(targets=("drop",)), "without parameters"),
            (dict(targets="attn,mlp"), "names no module")]:
        fresh = small_gpt()
        with pytest.raises(ValueError, match=message):
            apply_adapters(fresh, 2, **options)
        assert not bottleneck_adapters(fresh)
        assert all(p.requires_grad for p in fresh.parameters())


def test_adapters_on_each_device_train_and_start_equal(device):
    model = small_gpt("float32", device)
    idx = np.random.default_rng(6).integers(0, 11, (2, 8))
    before = model(idx)[0].numpy()
    apply_adapters(model, 4)
    adapter = model.transformer.h[1].mlp.bottleneck
    assert adapter.up.weight.device == model.device == device
    np.testing.assert_array_equal(model(idx)[0].numpy(), before)
    _, loss = model(idx, idx)
    loss.backward()
    assert adapter.up.weight.grad is not None and model.transformer.wte.weight.grad is None
    assert np.abs(adapter.up.weight.grad.numpy()).max() > 0
