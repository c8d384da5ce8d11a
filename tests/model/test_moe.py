"""The mixture-of-experts MLP: gradients through router, gates and experts (float64 central
differences, away from ties), dispatch equal to a plain loop over tokens and their experts
(capacity drops included), the load-balancing loss by its formula, and the GPT with experts:
its state dict and config round-trip, and GPT-2's format refuses it."""

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.model.blocks import MLP
from tinygpt.model.sizes import count_params
from tinygpt.model.moe import MoE


def make_moe(capacity=1.25, top_k=2, n_expert=4, seed=0):
    tg.manual_seed(seed)
    config = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=1, n_embd=6,
                       n_expert=n_expert, expert_top_k=top_k, expert_capacity=capacity)
    return MoE(config, MLP).to(tg.float64), config


def inputs(shape=(2, 5, 6), seed=1):
    return tg.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=tg.float64,
                     requires_grad=True)


@pytest.mark.parametrize("capacity, top_k", [(0.0, 2), (1.25, 2), (0.5, 2), (1.0, 1)])
def test_gradients_through_router_gates_and_experts(capacity, top_k):
    moe, _ = make_moe(capacity, top_k)
    x = inputs()
    params = list(moe.parameters())

    def fn(x, *params):                    # the parameters are perturbed in place
        return moe(x), moe.aux_loss
    assert tg.gradcheck(fn, [x] + params)
    if capacity == 0.5:
        assert int(moe.dropped) > 0        # the drop path ran


def loop_reference(moe, x):
    """y of every token by a plain loop: its experts in order of probability, each expert
    taking assignments in token order until its capacity is full."""
    x2 = x.numpy().reshape(-1, x.shape[-1])
    N, E, k = len(x2), moe.n_expert, moe.top_k
    logits = x2 @ moe.router.weight.numpy().T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    taken = [0] * E
    out, dropped = np.zeros_like(x2), 0
    cap = moe.capacity(N)
    for n in range(N):
        top = np.argsort(-probs[n], kind="stable")[:k]
        gates = probs[n, top] / probs[n, top].sum()
        for e, g in zip(top, gates):
            if taken[e] >= cap:
                dropped += 1
                continue
            taken[e] += 1
            out[n] += g * moe.experts[e](tg.tensor(x2[n:n + 1])).numpy()[0]
    return out.reshape(x.shape), dropped


@pytest.mark.parametrize("capacity", [0.0, 1.25, 0.5])
def test_dispatch_equals_a_loop_over_tokens_and_experts(capacity):
    moe, _ = make_moe(capacity)
    x = inputs((3, 7, 6), seed=2)
    y = moe(x).numpy()
    expected, dropped = loop_reference(moe, x)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert int(moe.dropped) == dropped
    assert (dropped > 0) == (capacity == 0.5)


def test_load_balancing_loss_is_switch_transformers():
    moe, _ = make_moe(0.0)
    x = inputs((2, 6, 6), seed=3)
    moe(x)
    x2 = x.numpy().reshape(-1, 6)
    logits = x2 @ moe.router.weight.numpy().T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    fraction = np.bincount(top.ravel(), minlength=4) / top.size
    expected = 4 * np.sum(fraction * probs.mean(0))
    assert abs(moe.aux_loss.item() - expected) < 1e-12


def moe_gpt(**extra):
    tg.manual_seed(0)
    return GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=2, n_head=2, n_embd=8,
                         n_expert=4, expert_top_k=2, moe_every=2, **extra))


def test_the_gpt_adds_the_weighted_aux_loss_and_counts_parameters():
    model = moe_gpt()
    assert [type(b.mlp).__name__ for b in model.transformer.h] == ["MLP", "MoE"]
    assert model.num_parameters() == count_params(model.config)
    idx = np.random.default_rng(0).integers(0, 13, (2, 8))
    _, loss = model(idx, idx)
    stats = model.moe_stats()
    model.config.aux_loss_coef = 0.0
    _, plain = model(idx, idx)
    assert abs(loss.item() - plain.item() - 0.01 * stats["aux_loss"].item()) < 1e-6


def test_state_dict_and_config_round_trip():
    model = moe_gpt()
    again = GPT(GPTConfig.from_dict(model.config.to_dict()))
    again.load_state_dict({k: v.numpy() for k, v in model.state_dict().items()})
    assert "transformer.h.1.mlp.experts.3.c_fc.weight" in model.state_dict()
    assert "transformer.h.1.mlp.router.weight" in model.state_dict()
    idx = np.random.default_rng(1).integers(0, 13, (2, 8))
    np.testing.assert_array_equal(again(idx)[0].numpy(), model(idx)[0].numpy())


def test_gpt2s_format_refuses_experts(tmp_path):
    with pytest.raises(ValueError, match="mixture-of-experts layers .* no Hugging Face"):
        moe_gpt().save_pretrained(tmp_path / "out")


@pytest.mark.parametrize("bad, message", [
    (dict(n_expert=2, expert_top_k=3), "must not exceed n_expert"),
    (dict(n_expert=4, expert_capacity=-0.5), "expert_capacity must be a finite number"),
    (dict(n_expert=4, moe_every=0), "moe_every must be an int >= 1"),
    (dict(n_expert=4, expert_hidden=0), "expert_hidden must be a positive int"),
])
def test_bad_expert_configs_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(n_layer=2, n_embd=8, n_head=2, **bad)
