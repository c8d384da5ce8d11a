"""Generation: the KV cache against full recomputation (float64), cropping at block_size,
modes, streaming, the sampling rules and their argument errors."""

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.model import GPT, GPTConfig
from tinygpt.model.generation import Sampler
from conftest import assert_close

TINY = dict(block_size=8, vocab_size=13, n_layer=2, n_head=2, n_embd=16)


def tiny_gpt(dtype=tg.float64, seed=0, **overrides):
    tg.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides})).to(dtype)


def prompt(shape, seed=0):
    return np.random.default_rng(seed).integers(0, TINY["vocab_size"], shape)


def record_head(model):
    """Capture the logits of every lm_head call (one per generation step)."""
    calls = []
    handle = model.lm_head.register_forward_hook(lambda m, i, out: calls.append(out.numpy()))
    return calls, handle


@pytest.mark.parametrize("prompt_len, new, do_sample", [
    (3, 4, False),     # stays inside the block: prefill + one position per step
    (3, 12, False),    # runs past block_size: crop and prefill again
    (11, 5, True),     # prompt longer than block_size, sampled tokens
    (1, 9, True),
])
def test_kv_cache_matches_full_recomputation_float64(prompt_len, new, do_sample):
    model = tiny_gpt()
    block = TINY["block_size"]
    calls, handle = record_head(model)
    out = model.generate(prompt((2, prompt_len)), new, do_sample=do_sample, seed=3).numpy()
    handle.remove()
    assert out.shape == (2, prompt_len + new)
    assert len(calls) == new                      # one head call per generated token
    for step, cached in enumerate(calls):
        length = prompt_len + step                # tokens known before this step
        context = out[:, :length][:, -block:]     # what nanoGPT's loop feeds the model
        full, _ = model(context)
        assert cached.shape == (2, 1, TINY["vocab_size"])
        assert_close(cached[:, 0], full.numpy()[:, -1])


def test_each_cached_step_runs_one_position():
    model = tiny_gpt()
    lengths = []
    model.transformer.h[0].attn.c_attn.register_forward_hook(
        lambda m, inputs, out: lengths.append(inputs[0].shape[1]))
    model.generate(prompt((1, 3)), 10, do_sample=False)
    # prefill 3; positions 3..7 one at a time; then the block is full: crop, 8 each step.
    assert lengths == [3, 1, 1, 1, 1, 1, 8, 8, 8, 8]


def test_generate_keeps_the_prompt_and_returns_ids():
    model = tiny_gpt(tg.float32)
    p = prompt((3, 4))
    out = model.generate(tg.tensor(p), 6, seed=0)
    assert out.shape == (3, 10) and out.dtype.kind == "i"
    np.testing.assert_array_equal(out.numpy()[:, :4], p)
    assert out.numpy().min() >= 0 and out.numpy().max() < TINY["vocab_size"]
    assert not out.requires_grad
    np.testing.assert_array_equal(model.generate(p, 0).numpy(), p)


def test_generate_iter_streams_the_same_tokens():
    model = tiny_gpt(tg.float32)
    p = prompt((2, 3))
    columns = list(model.generate_iter(p, 7, top_k=5, seed=4))
    assert len(columns) == 7 and all(c.shape == (2, 1) for c in columns)
    full = model.generate(p, 7, top_k=5, seed=4).numpy()
    np.testing.assert_array_equal(np.concatenate([c.numpy() for c in columns], axis=1), full[:, 3:])


def test_generation_turns_dropout_off_and_restores_modes():
    model = tiny_gpt(dropout=0.5)
    model.transformer.h[1].eval()                 # a mixed state, to be restored exactly
    before = [m.training for m in model.modules()]
    p = prompt((2, 3))
    a = model.generate(p, 8, do_sample=False).numpy()
    b = model.generate(p, 8, do_sample=False).numpy()
    np.testing.assert_array_equal(a, b)
    assert [m.training for m in model.modules()] == before
    plain = tiny_gpt(dropout=0.0)
    plain.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(plain.generate(p, 8, do_sample=False).numpy(), a)


def test_grad_mode_is_untouched_between_streamed_tokens():
    model = tiny_gpt(tg.float32)
    for _ in model.generate_iter(prompt((1, 2)), 3):
        assert tg.is_grad_enabled()
        assert model.training


# --- sampling -----------------------------------------------------------------------------------
def test_top_k_1_is_greedy():
    model = tiny_gpt()
    p = prompt((2, 3))
    greedy = model.generate(p, 10, do_sample=False).numpy()
    np.testing.assert_array_equal(model.generate(p, 10, top_k=1, seed=0).numpy(), greedy)
    np.testing.assert_array_equal(model.generate(p, 10, top_p=1e-9, seed=0).numpy(), greedy)
    # Greedy ignores the temperature.
    np.testing.assert_array_equal(model.generate(p, 10, temperature=0, do_sample=False).numpy(),
                                  greedy)
    calls, handle = record_head(model)
    out = model.generate(p, 6, do_sample=False).numpy()
    handle.remove()
    for step, logits in enumerate(calls):
        np.testing.assert_array_equal(out[:, 3 + step], logits[:, 0].argmax(-1))


def test_filters_that_remove_nothing_change_nothing():
    model = tiny_gpt()
    p = prompt((2, 3))
    plain = model.generate(p, 12, seed=7).numpy()
    for kwargs in (dict(top_k=13), dict(top_k=100), dict(top_p=1.0), dict(top_k=13, top_p=1)):
        np.testing.assert_array_equal(model.generate(p, 12, seed=7, **kwargs).numpy(), plain)


def test_seeds():
    model = tiny_gpt(tg.float32)
    p = prompt((4, 2))
    a = model.generate(p, 16, seed=123).numpy()
    np.testing.assert_array_equal(model.generate(p, 16, seed=123).numpy(), a)
    assert not np.array_equal(model.generate(p, 16, seed=124).numpy(), a)
    # Without a seed the draws come from the generator manual_seed sets.
    tg.manual_seed(9)
    b = model.generate(p, 16).numpy()
    tg.manual_seed(9)
    np.testing.assert_array_equal(model.generate(p, 16).numpy(), b)


def test_top_k_samples_only_the_k_largest():
    model = tiny_gpt()
    calls, handle = record_head(model)
    out = model.generate(prompt((3, 2)), 10, top_k=3, temperature=5.0, seed=1).numpy()
    handle.remove()
    for step, logits in enumerate(calls):
        top3 = np.argsort(logits[:, 0], axis=-1)[:, -3:]
        assert all(out[b, 2 + step] in top3[b] for b in range(3))


def test_sampler_distribution():
    """Frequencies over many rows follow softmax(logits / T), restricted by top_k / top_p."""
    logits = np.log(np.array([0.5, 0.25, 0.15, 0.1]))
    rows = np.tile(logits, (40000, 1))

    def frequencies(**kwargs):
        ids = Sampler(4, seed=0, **kwargs)(rows)[:, 0]
        return np.bincount(ids, minlength=4) / len(ids)

    np.testing.assert_allclose(frequencies(), [0.5, 0.25, 0.15, 0.1], atol=0.01)
    hot = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum()
    np.testing.assert_allclose(frequencies(temperature=2.0), hot, atol=0.01)
    np.testing.assert_allclose(frequencies(top_k=2), [2 / 3, 1 / 3, 0, 0], atol=0.01)
    # top_p=0.7: 0.5 alone is short of 0.7, 0.5 + 0.25 reaches it: keep the first two.
    np.testing.assert_allclose(frequencies(top_p=0.7), [2 / 3, 1 / 3, 0, 0], atol=0.01)
    np.testing.assert_allclose(frequencies(top_p=0.8), [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0],
                               atol=0.01)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(top_k=0), ValueError, r"top_k must be a positive int \(or None\), got 0"),
    (dict(top_k=-3), ValueError, r"top_k must be a positive int \(or None\), got -3"),
    (dict(top_k=2.5), TypeError, r"top_k must be a positive int \(or None\), got float 2.5"),
    (dict(top_p=0.0), ValueError, r"top_p \(or None\) must be a probability in \(0, 1\], got 0.0"),
    (dict(top_p=1.5), ValueError, r"top_p \(or None\) must be a probability in \(0, 1\], got 1.5"),
    (dict(temperature=0.0), ValueError, "temperature .*must be a finite number > 0, got 0.0"),
    (dict(temperature=-1.0), ValueError, "temperature.*-1.0"),
    (dict(do_sample="yes"), TypeError, "do_sample"),
    (dict(seed="abc"), TypeError, "seed"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens.*-1"),
])
def test_bad_sampling_arguments_raise_before_any_work(kwargs, error, message):
    model = tiny_gpt(tg.float32)
    calls, _ = record_head(model)
    args = dict(max_new_tokens=5)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        model.generate_iter(prompt((1, 3)), **args)   # raises at the call, not on next()
    with pytest.raises(error, match=message):
        model.generate(prompt((1, 3)), **args)
    assert calls == []


def test_bad_prompts():
    model = tiny_gpt(tg.float32)
    with pytest.raises(ValueError, match="token id 13"):
        model.generate(np.array([[1, 13]]), 2)
    with pytest.raises(ValueError, match=r"idx\[None\]"):
        model.generate(np.array([1, 2]), 2)


def test_nan_logits_are_an_error_not_token_zero():
    with pytest.raises(FloatingPointError, match="NaN"):
        Sampler(3, seed=0)(np.array([[0.0, np.nan, 1.0]]))


# --- sampling that cannot overflow -----------------------------------------------------------
def test_a_tiny_temperature_picks_the_argmax():
    logits = np.array([[0.0, 3.0, 1.0, 2.999], [5.0, -1.0, 4.0, 0.0]])
    for temperature in (1e-320, 1e-300, 1e-8):
        picks = Sampler(4, temperature=temperature, seed=0)(logits)
        assert picks.ravel().tolist() == [1, 0], temperature


def test_an_infinite_logit_is_the_argmax_and_nan_or_all_minus_inf_an_error():
    logits = np.array([[0.0, np.inf, 1.0, -np.inf], [np.inf, 2.0, np.inf, 0.0]])
    for _ in range(5):
        picks = Sampler(4, temperature=1.0, top_k=3, top_p=0.9)(logits).ravel().tolist()
        assert picks[0] == 1 and picks[1] in (0, 2)
    assert Sampler(4, do_sample=False)(logits).ravel().tolist() == [1, 0]
    with pytest.raises(FloatingPointError, match="-inf"):
        Sampler(4)(np.full((1, 4), -np.inf))
    with pytest.raises(FloatingPointError, match="NaN"):
        Sampler(4)(np.array([[0.0, np.nan, 1.0, 2.0]]))


def test_sampling_at_ordinary_temperatures_is_unchanged():
    # The same distribution as softmax(logits / T): the shift by the maximum changes nothing.
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]])) * 0.5
    picks = Sampler(4, temperature=0.5, seed=3)(np.repeat(logits, 20000, axis=0)).ravel()
    np.testing.assert_allclose(np.bincount(picks, minlength=4) / 20000, [0.1, 0.2, 0.3, 0.4],
                               atol=0.015)
