"""Padded batches and banded layers in the GPT: every row of a padded batch gives the logits
and the greedy tokens it gives alone, no gradient reaches a padded position, the KV cache is
right for padded rows and keeps only its window in a banded layer (float64 throughout)."""

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig

V, PAD = 23, 22                 # the pad id appears nowhere else
LENGTHS = [7, 3, 5]             # the rows' real lengths

CONFIGS = {
    "dense": dict(),
    "alternate": dict(attn_window=3, attn_pattern="alternate"),
    "banded": dict(attn_window=2, attn_pattern="banded"),
}


def make_model(kind, dropout=0.0):
    tg.manual_seed(0)
    config = GPTConfig(block_size=12, vocab_size=V, n_layer=2, n_head=2, n_embd=16,
                       dropout=dropout, **CONFIGS[kind])
    return GPT(config).to(tg.float64)


def rows(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, PAD, n) for n in LENGTHS]


def padded(sequences, side):
    """(idx, attention_mask) with the rows padded to the longest, on `side`."""
    T = max(len(r) for r in sequences)
    idx = np.full((len(sequences), T), PAD)
    mask = np.zeros((len(sequences), T), dtype=np.int64)
    for i, r in enumerate(sequences):
        cols = slice(T - len(r), T) if side == "left" else slice(0, len(r))
        idx[i, cols], mask[i, cols] = r, 1
    return idx, mask


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
def test_each_padded_row_gives_its_logits_alone(kind, side, reference):
    model = make_model(kind)
    sequences = rows()
    idx, mask = padded(sequences, side)
    with tg.use_reference_ops(reference):
        logits = model(idx, attention_mask=mask)[0].numpy()
        for i, r in enumerate(sequences):
            alone = model(r[None])[0].numpy()[0]
            real = mask[i].astype(bool)
            np.testing.assert_allclose(logits[i][real], alone, rtol=1e-10, atol=1e-10)


def test_an_all_ones_mask_changes_nothing():
    model = make_model("alternate")
    idx = np.random.default_rng(1).integers(0, V, (2, 9))
    np.testing.assert_allclose(model(idx, attention_mask=np.ones((2, 9)))[0].numpy(),
                               model(idx)[0].numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_right_padded_training_gives_the_loss_and_gradients_of_the_rows_alone(kind):
    # loss over the padded batch (targets -100 at the pads) is the mean over every real
    # target; the rows alone give means over their own: weighted by their counts, the same.
    model = make_model(kind)
    sequences = rows(2)
    idx, mask = padded([r[:-1] for r in sequences], "right")
    targets = np.full(idx.shape, -100)
    for i, r in enumerate(sequences):
        targets[i, :len(r) - 1] = r[1:]
    _, loss = model(idx, targets, attention_mask=mask)
    loss.backward()
    padded_grads = {n: p.grad.numpy() * mask.sum() for n, p in model.named_parameters()}
    total = 0.0
    alone = {n: 0.0 for n in padded_grads}
    for r in sequences:
        model.zero_grad()
        _, row_loss = model(r[None, :-1], r[None, 1:])
        row_loss.backward()
        total += row_loss.item() * (len(r) - 1)
        for n, p in model.named_parameters():
            alone[n] = alone[n] + p.grad.numpy() * (len(r) - 1)
    np.testing.assert_allclose(loss.item() * mask.sum(), total, rtol=1e-12)
    for n in alone:
        np.testing.assert_allclose(padded_grads[n], alone[n], rtol=1e-9, atol=1e-12, err_msg=n)


def test_no_gradient_reaches_a_padded_position():
    model = make_model("dense")
    idx, mask = padded(rows(3), "left")
    seen = {}
    wte = model.transformer.wte
    original = wte.forward

    def keep_output(x):
        out = original(x)
        out.retain_grad()
        seen["out"] = out
        return out
    wte.forward = keep_output
    targets = np.where(mask.astype(bool), idx, -100)
    model(idx, targets, attention_mask=mask)[1].backward()
    grad = seen["out"].grad.numpy()
    assert np.all(grad[~mask.astype(bool)] == 0)
    assert np.all(np.abs(grad[mask.astype(bool)]).sum(axis=-1) > 0)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_greedy_tokens_of_a_left_padded_batch_are_each_rows_alone(kind):
    model = make_model(kind)
    sequences = rows(4)
    idx, mask = padded(sequences, "left")
    out = model.generate(idx, 4, do_sample=False, attention_mask=mask).numpy()
    for i, r in enumerate(sequences):
        alone = model.generate(r[None], 4, do_sample=False).numpy()[0]
        assert out[i, -4:].tolist() == alone[-4:].tolist()


def cached_logits(model, monkeypatch, idx, steps, mask=None):
    """The last-position logits generation computes at each step, with its KV cache."""
    from tinygpt.model import generation
    seen, real = [], generation.Sampler.__call__
    monkeypatch.setattr(generation.Sampler, "__call__",
                        lambda self, logits: seen.append(np.array(logits)) or real(self, logits))
    columns = [c.numpy() for c in model.generate_iter(idx, steps, do_sample=False,
                                                      attention_mask=mask)]
    return seen, columns


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_the_kv_cache_equals_recomputing_the_padded_sequence(kind, monkeypatch):
    # Each cached step's logits equal a full forward of everything so far, padding mask
    # included; past block_size (12) both crop to the last 12 tokens.
    model = make_model(kind)
    idx, mask = padded(rows(5), "left")
    seen, columns = cached_logits(model, monkeypatch, idx, 8, mask)
    tokens, real = idx, mask
    for logits, column in zip(seen, columns):
        full = model(tokens[:, -12:], attention_mask=real[:, -12:])[0].numpy()[:, -1]
        np.testing.assert_allclose(logits, full, rtol=1e-10, atol=1e-10)
        tokens = np.concatenate([tokens, column], axis=1)
        real = np.concatenate([real, np.ones((len(idx), 1), dtype=np.int64)], axis=1)


def test_a_banded_layers_cache_keeps_only_its_window():
    from tinygpt.model.generation import KVCache
    cache = KVCache(2, 2, 12, 4, np.float64, "cpu", window=3)
    assert cache.k.shape == (2, 2, 3, 4)
    rng = np.random.default_rng(0)
    ks = rng.standard_normal((2, 2, 7, 4))
    cache.append(tg.tensor(ks[:, :, :5]), tg.tensor(ks[:, :, :5]))       # prefill 5
    keys, _, mask = cache.append(tg.tensor(ks[:, :, 5:6]), tg.tensor(ks[:, :, 5:6]))
    # position 5 sees positions 3, 4, 5: those keys, in some slot order, and no mask
    assert mask is None
    assert sorted(map(tuple, keys.numpy()[0, 0].round(12))) == sorted(
        map(tuple, ks[0, 0, 3:6].round(12)))


@pytest.mark.parametrize("kind", ["banded", "alternate"])
def test_banded_generation_with_the_cache_equals_recomputing_with_the_band(kind, monkeypatch):
    model = make_model(kind)
    idx = np.random.default_rng(6).integers(0, V, (2, 4))
    seen, columns = cached_logits(model, monkeypatch, idx, 10)     # past block_size too
    tokens = idx
    for logits, column in zip(seen, columns):
        full = model(tokens[:, -12:])[0].numpy()[:, -1]
        np.testing.assert_allclose(logits, full, rtol=1e-10, atol=1e-10)
        tokens = np.concatenate([tokens, column], axis=1)


@pytest.mark.parametrize("bad", [np.ones((2, 5)), np.ones(4), np.ones((2, 4, 1))])
def test_a_mask_of_the_wrong_shape_is_refused(bad):
    model = make_model("dense")
    idx = np.zeros((2, 4), dtype=np.int64)
    with pytest.raises(ValueError, match=r"expected \(batch, sequence\) = \(2, 4\)"):
        model(idx, attention_mask=bad)
    with pytest.raises(ValueError, match=r"expected \(batch, sequence\) = \(2, 4\)"):
        model.generate(idx, 1, attention_mask=bad)


def test_a_banded_gpt_is_not_saved_as_gpt2(tmp_path):
    model = make_model("alternate")
    with pytest.raises(ValueError, match="banded attention layers .* no Hugging Face GPT-2"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_banded_config_round_trips_through_a_dict():
    config = make_model("alternate").config
    again = GPTConfig.from_dict(config.to_dict())
    assert again.layer_windows() == config.layer_windows() == [None, 3]
