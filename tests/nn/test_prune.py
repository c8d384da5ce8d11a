"""Magnitude pruning: exact counts, ties, zeros kept through AdamW (also under float16
mixed precision), masks recomputed after a save and load, bad input."""

import copy
import math

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.autograd import backend
from tinygpt.nn import Linear, prune, pruning_masks, restore_masks, sparsity
from tinygpt.optim import (AdamW, GradScaler, clip_grad_norm_, configure_param_groups, copy_to,
                           master_copy)


def small_gpt(dtype="float64", seed=0):
    tg.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=19, block_size=8, n_layer=2, n_head=2, n_embd=16,
                          dropout=0.0))
    return model.to(dtype)


def linear_weights(model):
    return {name: p for name, p in model.named_parameters()
            if name.endswith("weight") and p.ndim == 2 and "wte" not in name
            and "wpe" not in name and "lm_head" not in name}


def arrays(model):
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.9])
def test_global_pruning_reaches_the_exact_count_on_the_smallest_weights(amount):
    model = small_gpt()
    before = arrays(model)
    masks = prune(model, amount)
    weights = linear_weights(model)
    assert sorted(masks) == sorted(weights)             # no embedding, no head, no bias
    total = sum(p.data.size for p in weights.values())
    zeros = sum(int((p.data == 0).sum()) for p in weights.values())
    assert zeros == round(amount * total)
    assert sparsity(model) == zeros / total
    kept = np.concatenate([np.abs(before[n][masks[n]]) for n in weights])
    pruned = np.concatenate([np.abs(before[n][~masks[n]]) for n in weights])
    if pruned.size:
        assert pruned.max() <= kept.min()
    for name, value in arrays(model).items():
        if name in masks:
            np.testing.assert_array_equal(value, np.where(masks[name], before[name], 0))
        else:
            np.testing.assert_array_equal(value, before[name])        # untouched


def test_layer_pruning_reaches_the_fraction_in_every_matrix():
    model = small_gpt()
    prune(model, 0.3, scope="layer")
    for name, fraction in sparsity(model, by_parameter=True).items():
        n = linear_weights(model)[name].data.size
        assert fraction == round(0.3 * n) / n
    # Globally, the layers differ: the blocks' c_proj start smaller (GPT-2's scaled init).
    global_model = small_gpt()
    prune(global_model, 0.3)
    by_layer = sparsity(global_model, by_parameter=True)
    assert max(by_layer.values()) - min(by_layer.values()) > 0.1


def test_ties_are_broken_by_position():
    layer = Linear(8, 4, bias=False, dtype="float64")
    signs = np.where(np.arange(32) % 3 == 0, -1.0, 1.0).reshape(4, 8)
    layer.weight.data[...] = signs * 0.5                     # every magnitude equal
    layer.weight.data[3, 7] = 0.1                             # one smaller, pruned first
    masks = prune(layer, 0.25)
    expected = np.ones(32, dtype=bool)
    expected[[31, 0, 1, 2, 3, 4, 5, 6]] = False               # then row-major order
    np.testing.assert_array_equal(masks["weight"].reshape(-1), expected)


def test_pruning_again_keeps_the_pruned_and_never_goes_back():
    model = small_gpt()
    first = prune(model, 0.3)
    second = prune(model, 0.6)
    for name in first:
        assert not (second[name] & ~first[name]).any()       # pruned stays pruned
    assert sparsity(model) == pytest.approx(0.6, abs=1e-3)
    with pytest.raises(ValueError, match="pruned already"):
        prune(model, 0.5)
    assert pruning_masks(model).keys() == second.keys()


def batches(vocab, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, vocab, (3, 8)), rng.integers(0, vocab, (3, 8)))
            for _ in range(steps)]


def train(model, optimizer, data):
    for x, y in data:
        _, loss = model(x, y)
        loss.backward()
        clip_grad_norm_(model.parameters(), 0.05)             # clips: scales the zeros too
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pruned_weights_stay_exactly_zero_through_adamw(dtype):
    model = small_gpt(dtype)
    masks = prune(model, 0.5)
    before = arrays(model)
    optimizer = AdamW(configure_param_groups(model.named_parameters(), 0.1), lr=1e-2)
    train(model, optimizer, batches(19, 10))
    for name, p in linear_weights(model).items():
        w = p.numpy()
        assert (w[~masks[name]] == 0).all()
        assert (w[masks[name]] != before[name][masks[name]]).mean() > 0.9   # others train
        assert (np.asarray(optimizer.state[p]["exp_avg"])[~masks[name]] == 0).all()
    assert sparsity(model) == 0.5


def test_without_the_mask_they_would_move():
    """The check above can fail: with the hooks gone the pruned weights move."""
    model = small_gpt()
    masks = prune(model, 0.5)
    for p in linear_weights(model).values():
        p._hooks = None
    optimizer = AdamW(configure_param_groups(model.named_parameters(), 0.1), lr=1e-2)
    train(model, optimizer, batches(19, 3))
    moved = [(p.numpy()[~masks[n]] != 0).mean() for n, p in linear_weights(model).items()]
    assert min(moved) > 0.9


def test_float16_mixed_precision_keeps_master_and_copy_at_zero():
    # The trainer's float16 step: a float32 master copy made from the model, the model in
    # float16, scaled loss, gradients unscaled into the master, AdamW on the master.
    model = small_gpt("float32")
    masks = prune(model, 0.5)
    master = master_copy(model)
    model.to("float16")
    scaler = GradScaler(init_scale=2.0 ** 10)
    optimizer = AdamW(configure_param_groups(master.named_parameters(), 0.1), lr=1e-2)
    for x, y in batches(19, 10):
        _, loss = model(x, y)
        (loss * scaler.scale).backward()
        finite = scaler.unscale(model, master)
        if finite:
            optimizer.step()
        scaler.update(finite)
        optimizer.zero_grad()
        model.zero_grad()
        copy_to(master, model)
    for weights in (linear_weights(master), linear_weights(model)):
        for name, p in weights.items():
            assert (p.numpy()[~masks[name]] == 0).all()
    assert sparsity(master) == sparsity(model) == 0.5


def test_masks_recomputed_after_a_save_and_load_resume_bit_for_bit(tmp_path):
    data = batches(19, 10)
    straight = small_gpt("float32")
    prune(straight, 0.7)
    optimizer = AdamW(configure_param_groups(straight.named_parameters(), 0.1), lr=1e-2)
    train(straight, optimizer, data[:5])
    # Save as a checkpoint does: the weights (zeros included) and the optimizer's state.
    path = tmp_path / "state.npz"
    np.savez(path, **{k: v.numpy() for k, v in straight.state_dict().items()})
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    train(straight, optimizer, data[5:])

    resumed = small_gpt("float32", seed=3)
    with np.load(path) as f:
        resumed.load_state_dict({k: f[k] for k in f.files})
    assert pruning_masks(resumed) == {}
    restored = restore_masks(resumed)
    assert sparsity(resumed) == pytest.approx(0.7, abs=1e-3)
    assert all((~m).sum() > 0 for m in restored.values())
    optimizer = AdamW(configure_param_groups(resumed.named_parameters(), 0.1), lr=1e-2)
    optimizer.load_state_dict(saved_optimizer)
    train(resumed, optimizer, data[5:])
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_on_each_device(device):
    cpu, model = small_gpt(), small_gpt().to(device)
    expected, masks = prune(cpu, 0.5), prune(model, 0.5)
    for name in expected:
        np.testing.assert_array_equal(backend.to_numpy(masks[name]), expected[name])
    optimizer = AdamW(configure_param_groups(model.named_parameters(), 0.1), lr=1e-2)
    train(model, optimizer, [(tg.tensor(x, device=device), tg.tensor(y, device=device))
                             for x, y in batches(19, 3)])
    assert sparsity(model) == 0.5


def test_embeddings_only_when_asked():
    model = small_gpt()
    masks = prune(model, 0.5, parameters=["transformer.wte.weight"])
    assert list(masks) == ["transformer.wte.weight"]
    assert sparsity(model, parameters=["transformer.wte.weight"]) == 0.5
    assert model.lm_head.weight is model.transformer.wte.weight      # still tied
    assert sparsity(model) == 0.0                                    # the Linears untouched


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, math.nan, math.inf])
def test_sparsity_out_of_range_is_refused(bad):
    model = small_gpt()
    before = arrays(model)
    with pytest.raises(ValueError, match=r"sparsity \(the fraction of weights set to zero\) must be a finite number in \[0.0, 1.0\)"):
        prune(model, bad)
    for name, value in arrays(model).items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("bad", [True, False, np.bool_(True), "0.5", None])
def test_sparsity_of_another_type_is_refused(bad):
    with pytest.raises(TypeError, match=r"sparsity \(the fraction of weights set to zero\) must be a finite number"):
        prune(small_gpt(), bad)


def test_other_bad_arguments():
    model = small_gpt()
    with pytest.raises(ValueError, match="scope must be one of"):
        prune(model, 0.5, scope="row")
    with pytest.raises(ValueError, match="unknown parameter name"):
        prune(model, 0.5, parameters=["transformer.h.9.mlp.c_fc.weight"])
    with pytest.raises(ValueError, match="nothing to prune"):
        prune(tg.nn.LayerNorm(4), 0.5)
    with pytest.raises(TypeError, match="expected a Module"):
        prune(np.zeros((3, 3)), 0.5)


@pytest.mark.parametrize("adapt", ["lora", "bottleneck"])
def test_the_adapters_own_layers_are_not_pruned_by_default(adapt):
    """LoRA's B and the bottleneck's up start at zero: pruned first, they would stay zero
    and the adapters would never train. Only the base's Linear weights are pruned."""
    from tinygpt.nn.bottleneck import apply_adapters
    from tinygpt.nn.lora import apply_lora
    model = small_gpt()
    if adapt == "lora":
        apply_lora(model, rank=2, alpha=4)
        adapter_names = (".lora_A.", ".lora_B.")
    else:
        apply_adapters(model, 4)
        adapter_names = (".bottleneck.",)
    masks = prune(model, 0.5)
    assert masks and not any(any(a in name for a in adapter_names) for name in masks), \
        sorted(masks)
