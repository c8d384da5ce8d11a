"""Rotary positions (RoPE): the op against an explicit rotation of channel pairs, the
attention layer against a plain NumPy formula, gradients, position interpolation, the KV
cache (dense, left-padded, banded, experts) against the full forward in float64, and a
rotary GPT's config, shapes and weight files."""

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.autograd import gradcheck
from tinygpt.autograd.tensor import Tensor
from tinygpt.model.generation import KVCache
from tinygpt.nn import functional as F

V = 19


def plain_rotary(x, positions, base=10000.0, scale=1.0):
    """x (..., T, hs) with each pair (i, i + hs/2) rotated by (p / scale) * base^(-2i/hs),
    one pair at a time: (a, b) -> (a cos - b sin, a sin + b cos)."""
    hs = x.shape[-1]
    half = hs // 2
    out = np.empty_like(x)
    p = np.asarray(positions, dtype=np.float64) / scale
    if p.ndim == 2:
        p = p[:, None]                                   # (B, 1, T): every head
    for i in range(half):
        theta = p * base ** (-2.0 * i / hs)
        a, b = x[..., i], x[..., i + half]
        out[..., i] = a * np.cos(theta) - b * np.sin(theta)
        out[..., i + half] = a * np.sin(theta) + b * np.cos(theta)
    return out


def rotary_gpt(seed=0, **extra):
    tg.manual_seed(seed)
    values = dict(block_size=12, vocab_size=V, n_layer=2, n_head=2, n_embd=16,
                  position="rotary")
    values.update(extra)
    return GPT(GPTConfig(**values)).to(tg.float64)


# --- the op -------------------------------------------------------------------------------
@pytest.mark.parametrize("positions", [np.arange(5) + 3, np.array([[0, 0, 1, 2, 3],
                                                                    [0, 1, 2, 3, 4]])])
@pytest.mark.parametrize("base, scale", [(10000.0, 1.0), (500.0, 4.0)])
def test_rotary_rotates_each_pair_by_its_angle(positions, base, scale):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 8))
    y = F.rotary(tg.tensor(x), positions, base=base, scale=scale).numpy()
    np.testing.assert_allclose(y, plain_rotary(x, positions, base, scale), rtol=0, atol=1e-12)
    # A rotation keeps each pair's length.
    np.testing.assert_allclose(y[..., :4] ** 2 + y[..., 4:] ** 2,
                               x[..., :4] ** 2 + x[..., 4:] ** 2, rtol=1e-12)


def test_rotary_gradients_pass_the_gradient_check():
    rng = np.random.default_rng(1)
    x = tg.tensor(rng.standard_normal((2, 2, 4, 6)), requires_grad=True)
    assert gradcheck(lambda x: F.rotary(x, [5, 6, 7, 8], base=100.0, scale=1.5), [x])
    assert gradcheck(lambda x: F.rotary(x, [[0, 0, 1, 2], [0, 1, 2, 3]]), [x])


def test_rope_scale_s_at_position_p_is_scale_1_at_p_over_s():
    x = tg.tensor(np.random.default_rng(2).standard_normal((1, 2, 6, 8)))
    p = np.arange(6) * 3
    for s in (2.0, 3.0, 4.0):
        scaled = F.rotary(x, p, scale=s).numpy()
        plain = F.rotary(x, p.astype(np.float64) / s, scale=1.0).numpy()
        np.testing.assert_allclose(scaled, plain, rtol=0, atol=1e-13)
    assert not np.allclose(F.rotary(x, p, scale=2.0).numpy(), F.rotary(x, p).numpy())


def test_rotary_attention_scores_depend_on_the_offset_only():
    rng = np.random.default_rng(3)
    q, k = (tg.tensor(rng.standard_normal((1, 1, 1, 8))) for _ in range(2))
    def score(i, j):
        return float((F.rotary(q, [i]).numpy() * F.rotary(k, [j]).numpy()).sum())
    assert score(7, 3) == pytest.approx(score(4, 0), abs=1e-12)
    assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-6)


@pytest.mark.parametrize("shape, positions, match", [
    ((2, 5, 8), range(5), "must be \\(B, H, T, head_size\\)"),
    ((1, 2, 5, 7), range(5), "even head_size"),
    ((1, 2, 5, 8), range(4), "expected \\(5,\\) or \\(1, 5\\)"),
])
def test_rotary_names_bad_shapes(shape, positions, match):
    with pytest.raises(ValueError, match=match):
        F.rotary(tg.zeros(shape), list(positions))


def test_rotary_names_bad_options():
    x = tg.zeros((1, 1, 2, 4))
    with pytest.raises(ValueError, match="scale must be a finite number >= 1"):
        F.rotary(x, [0, 1], scale=0.5)
    with pytest.raises(ValueError, match="base must be a finite number > 1"):
        F.rotary(x, [0, 1], base=1.0)
    with pytest.raises(ValueError, match="even head size"):
        GPTConfig(n_embd=12, n_head=4, position="rotary")
    with pytest.raises(ValueError, match="position must be one of"):
        GPTConfig(position="alibi")


# --- the attention layer and the GPT ------------------------------------------------------
def plain_attention(attn, x, base, scale):
    """The rotary attention layer in NumPy: qkv, heads, pairs rotated, causal softmax."""
    B, T, C = x.shape
    H, hs = attn.n_head, C // attn.n_head
    qkv = x @ attn.c_attn.weight.numpy().T + attn.c_attn.bias.numpy()
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, H, hs).transpose(0, 2, 1, 3)
               for i in range(3))
    q, k = plain_rotary(q, np.arange(T), base, scale), plain_rotary(k, np.arange(T), base, scale)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    y = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return y @ attn.c_proj.weight.numpy().T + attn.c_proj.bias.numpy()


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
def test_rotary_attention_equals_the_plain_formula(reference):
    model = rotary_gpt(rope_base=300.0, rope_scale=2.0)
    attn = model.transformer.h[0].attn
    x = np.random.default_rng(4).standard_normal((2, 7, 16))
    with tg.use_reference_ops(reference):
        y = attn(tg.tensor(x), rotary=(Tensor(np.arange(7)), 300.0, 2.0)).numpy()
    np.testing.assert_allclose(y, plain_attention(attn, x, 300.0, 2.0), rtol=0, atol=1e-12)


def test_a_rotary_gpt_has_no_position_table_and_learned_is_unchanged():
    model = rotary_gpt()
    names = list(model.state_dict())
    assert "transformer.wpe.weight" not in names and names[0] == "transformer.wte.weight"
    learned = GPT(GPTConfig(block_size=12, vocab_size=V, n_layer=2, n_head=2, n_embd=16))
    assert list(learned.state_dict()) == names[:1] + ["transformer.wpe.weight"] + names[1:]
    assert learned.config.position == "learned"
    assert model.get_num_params() == model.num_parameters()
    # Gradients through a rotary attention layer (float64 central differences).
    attn = model.transformer.h[1].attn
    x = tg.tensor(np.random.default_rng(5).standard_normal((2, 5, 16)), requires_grad=True)
    rotary = (Tensor(np.array([[0, 0, 1, 2, 3], [0, 1, 2, 3, 4]])), 100.0, 1.5)
    assert gradcheck(lambda x: attn(x, key_mask=Tensor(np.array([[0, 1, 1, 1, 1],
                                                                 [1, 1, 1, 1, 1]], bool)),
                                    rotary=rotary), [x])


# --- the KV cache: every step equals the full forward -------------------------------------
CACHED = {
    "dense": dict(),
    "banded": dict(attn_window=3, attn_pattern="alternate"),
    "experts": dict(n_expert=4, expert_top_k=2, moe_every=2, expert_capacity=0.0),
}


def left_padded(seed, lengths, T):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, V, (len(lengths), T))
    mask = np.zeros((len(lengths), T), dtype=bool)
    for i, n in enumerate(lengths):
        mask[i, T - n:] = True
    return idx, mask


@pytest.mark.parametrize("kind", sorted(CACHED))
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
def test_cached_logits_equal_the_full_forward_at_every_step(kind, padded):
    model = rotary_gpt(**CACHED[kind]).eval()
    cfg = model.config
    idx, mask = left_padded(6, [12, 8, 10], 12)
    prompt = 4 if not padded else 5
    caches = [KVCache(3, cfg.n_head, cfg.block_size, cfg.head_size, model.dtype, model.device,
                      window) for window in cfg.layer_windows()]
    def seen(t):          # the padding mask of positions 0..t-1, as generate passes it
        return Tensor(mask[:, :t]) if padded else None
    with tg.no_grad():
        logits = model._forward_cached(Tensor(idx[:, :prompt]), caches, seen(prompt))
        for t in range(prompt, idx.shape[1] + 1):
            full = model(idx[:, :t], attention_mask=None if seen(t) is None else mask[:, :t])
            np.testing.assert_allclose(logits.numpy()[:, -1], full[0].numpy()[:, -1],
                                       rtol=0, atol=1e-10, err_msg=f"step {t}")
            if t < idx.shape[1]:
                logits = model._forward_cached(Tensor(idx[:, t:t + 1]), caches, seen(t + 1))


def recomputed_greedy(model, idx, steps, mask=None):
    """Greedy tokens from the full forward over the last block_size tokens, every step."""
    T = model.config.block_size
    out, real = idx.copy(), None if mask is None else mask.copy()
    for _ in range(steps):
        logits = model(out[:, -T:], attention_mask=None if real is None else real[:, -T:])[0]
        out = np.concatenate([out, logits.numpy()[:, -1].argmax(-1)[:, None]], axis=1)
        if real is not None:
            real = np.concatenate([real, np.ones_like(real[:, :1])], axis=1)
    return out


@pytest.mark.parametrize("kind", sorted(CACHED))
def test_greedy_generation_equals_recomputing(kind):
    model = rotary_gpt(**CACHED[kind])
    idx, mask = left_padded(7, [6, 3], 6)
    # Past block_size (12): the context is cropped and run again.
    got = model.generate(idx, 10, do_sample=False, attention_mask=mask).numpy()
    assert np.array_equal(got, recomputed_greedy(model, idx, 10, mask))
    got = model.generate(idx[:1], 10, do_sample=False).numpy()
    assert np.array_equal(got, recomputed_greedy(model, idx[:1], 10))


# --- a longer context ---------------------------------------------------------------------
def test_extend_context_runs_a_rotary_model_longer():
    model = rotary_gpt()
    idx = np.random.default_rng(8).integers(0, V, (1, 48))
    with pytest.raises(ValueError, match="longer than block_size 12.*extend_context"):
        model(idx)
    short = model(idx[:, :12])[0].numpy()
    model.extend_context(48, rope_scale=4.0)
    assert (model.config.block_size, model.config.rope_scale) == (48, 4.0)
    assert model(idx)[0].shape == (1, 48, V)
    # Position interpolation: the first 12 tokens now sit at positions 0, 1/4, ..., 11/4.
    assert not np.allclose(model(idx[:, :12])[0].numpy(), short)
    model.extend_context(12, rope_scale=1.0)
    np.testing.assert_allclose(model(idx[:, :12])[0].numpy(), short, rtol=0, atol=1e-12)
    got = model.extend_context(24, rope_scale=2.0).generate(idx[:, :20], 8,
                                                            do_sample=False).numpy()
    assert np.array_equal(got, recomputed_greedy(model, idx[:, :20], 8))
    with pytest.raises(ValueError, match="rope_scale must be a finite number >= 1"):
        model.extend_context(24, rope_scale=0.5)
    assert model.config.rope_scale == 2.0                    # unchanged by the refusal


def test_learned_positions_refuse_a_longer_context():
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=12, vocab_size=V, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match="learned position embeddings exist only for the 12 "
                                         "trained positions"):
        model.extend_context(24)
    with pytest.raises(ValueError, match="rope_scale applies to rotary positions"):
        model.extend_context(12, rope_scale=2.0)
    assert model.config.block_size == 12
    model.extend_context(8)                                  # shorter: wpe is cropped
    assert model.transformer.wpe.weight.shape == (8, 8)


# --- files ----------------------------------------------------------------------------------
def test_a_rotary_checkpoint_round_trips(tmp_path):
    from tinygpt.data import CharTokenizer
    from tinygpt.model.checkpoint import load_training_state, save_training_state
    from tinygpt.model.sizes import count_params, parameter_shapes
    from tinygpt.optim import AdamW
    model = rotary_gpt(rope_base=500.0, rope_scale=2.0)
    shapes = parameter_shapes(model.config)
    assert list(shapes) == list(model.state_dict())
    assert all(shapes[k] == tuple(v.shape) for k, v in model.state_dict().items())
    assert count_params(model.config) == count_params(model.config, non_embedding=True) \
        == model.num_parameters()
    optimizer = AdamW(model.parameters(), lr=1e-2)
    idx = np.random.default_rng(9).integers(0, V, (2, 12))
    model(idx, idx)[1].backward()
    optimizer.step()
    tokenizer = CharTokenizer.from_text("".join(chr(97 + i) for i in range(V)))
    save_training_state(tmp_path / "c.npz", model, optimizer, tokenizer, iter_num=1)
    state = load_training_state(tmp_path / "c.npz")
    assert (state.config.position, state.config.rope_base, state.config.rope_scale) == \
        ("rotary", 500.0, 2.0)
    rebuilt = state.build_model(dtype="float64")
    np.testing.assert_array_equal(rebuilt(idx)[0].numpy(), model(idx)[0].numpy())


def test_gpt2_files_refuse_a_rotary_model(tmp_path):
    with pytest.raises(ValueError, match="rotary positions .* no Hugging Face GPT-2 form"):
        rotary_gpt().save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_rotary_gpt_generates_the_same_on_cuda(cuda_device):
    model = rotary_gpt(**CACHED["banded"])
    idx, mask = left_padded(10, [6, 3], 6)
    want = model.generate(idx, 8, do_sample=False, attention_mask=mask).numpy()
    logits = model(idx, attention_mask=mask)[0].numpy()
    model.to(cuda_device)
    got = model.generate(idx, 8, do_sample=False, attention_mask=mask).numpy()
    assert np.array_equal(got, want)
    np.testing.assert_allclose(model(idx, attention_mask=mask)[0].numpy(), logits, rtol=0,
                               atol=1e-10)
