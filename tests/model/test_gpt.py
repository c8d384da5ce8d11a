"""The GPT: config, nanoGPT's parameter names, weight tying, initialisation, parameter
counts, a float64 gradient check of the whole model, causality, dtype hygiene, bad input
and overfitting one batch."""

import math

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.model import GPT, GPTConfig, count_params
from conftest import assert_close

TINY = dict(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8)


def tiny_gpt(dtype=tg.float64, seed=0, **overrides):
    tg.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides})).to(dtype)


def tokens(shape, vocab=TINY["vocab_size"], seed=0):
    return np.random.default_rng(seed).integers(0, vocab, shape)


# --- config ---------------------------------------------------------------------------------
def test_config_defaults_are_nanogpts():
    c = GPTConfig()
    assert (c.block_size, c.vocab_size, c.n_layer, c.n_head, c.n_embd, c.dropout, c.bias) == \
        (1024, 50304, 12, 12, 768, 0.0, True)
    assert c.gelu_approximate == "tanh"


@pytest.mark.parametrize("name, sizes", [
    ("gpt-nano", (3, 3, 48)), ("gpt-micro", (4, 4, 128)), ("gpt-mini", (6, 6, 192)),
    ("gpt2", (12, 12, 768)), ("gpt2-medium", (24, 16, 1024)), ("gpt2-large", (36, 20, 1280)),
    ("gpt2-xl", (48, 25, 1600))])
def test_presets(name, sizes):
    c = GPTConfig.from_preset(name)
    assert (c.n_layer, c.n_head, c.n_embd) == sizes
    if name.startswith("gpt2"):
        assert (c.vocab_size, c.block_size) == (50257, 1024)
    assert GPTConfig.from_preset(name, dropout=0.1, vocab_size=65).vocab_size == 65


def test_config_dict_round_trip():
    c = GPTConfig(**TINY, dropout=0.25, bias=False, gelu_approximate="none")
    assert GPTConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown field.*n_embed"):
        GPTConfig.from_dict({**c.to_dict(), "n_embed": 3})


@pytest.mark.parametrize("fields, error, message", [
    (dict(n_embd=10, n_head=3), ValueError, r"n_embd \(10\).*n_head \(3\)"),
    (dict(n_layer=0), ValueError, "n_layer must be a positive int, got 0"),
    (dict(vocab_size=-5), ValueError, "vocab_size must be a positive int, got -5"),
    (dict(block_size=8.0), TypeError, "block_size must be a positive int, got float 8.0"),
    (dict(dropout=1.0), ValueError, r"dropout must be a probability in \[0, 1\), got 1.0"),
    (dict(dropout=-0.1), ValueError, "dropout"),
    (dict(bias="yes"), TypeError, "bias"),
    (dict(gelu_approximate="fast"), ValueError, "gelu_approximate"),
])
def test_invalid_configs_name_the_numbers(fields, error, message):
    with pytest.raises(error, match=message):
        GPTConfig(**{**TINY, **fields})


def test_unknown_preset():
    with pytest.raises(ValueError, match="gpt3.*gpt-nano"):
        GPTConfig.from_preset("gpt3")
    with pytest.raises(TypeError, match="GPTConfig"):
        GPT({"n_layer": 2})


# --- structure ------------------------------------------------------------------------------
def expected_state_dict(C, V, T, n_layer, bias=True):
    """nanoGPT's keys and shapes, written out."""
    keys = [("transformer.wte.weight", (V, C)), ("transformer.wpe.weight", (T, C))]
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        keys += [(p + "ln_1.weight", (C,)), (p + "ln_1.bias", (C,)),
                 (p + "attn.c_attn.weight", (3 * C, C)), (p + "attn.c_attn.bias", (3 * C,)),
                 (p + "attn.c_proj.weight", (C, C)), (p + "attn.c_proj.bias", (C,)),
                 (p + "ln_2.weight", (C,)), (p + "ln_2.bias", (C,)),
                 (p + "mlp.c_fc.weight", (4 * C, C)), (p + "mlp.c_fc.bias", (4 * C,)),
                 (p + "mlp.c_proj.weight", (C, 4 * C)), (p + "mlp.c_proj.bias", (C,))]
    keys += [("transformer.ln_f.weight", (C,)), ("transformer.ln_f.bias", (C,)),
             ("lm_head.weight", (V, C))]
    if not bias:
        keys = [(k, s) for k, s in keys if not k.endswith(".bias")]
    return keys


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_keys_and_shapes_are_nanogpts(bias):
    model = GPT(GPTConfig(block_size=16, vocab_size=37, n_layer=3, n_head=4, n_embd=24,
                          bias=bias))
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == expected_state_dict(24, 37, 16, 3, bias)
    # named_parameters lists the tied weight once, under the embedding's name.
    names = [n for n, _ in model.named_parameters()]
    assert names == [k for k, _ in got if k != "lm_head.weight"]


def test_head_is_tied_to_token_embedding():
    model = tiny_gpt(tg.float32)
    wte = model.transformer.wte.weight
    assert model.lm_head.weight is wte
    assert model.lm_head.weight.data is wte.data
    state = model.state_dict()
    assert state["lm_head.weight"].data is state["transformer.wte.weight"].data
    assert sum(p is wte for p in model.parameters()) == 1
    assert wte.name == "transformer.wte.weight"
    # A load writes into the one shared array.
    new = state["transformer.wte.weight"].numpy() + 1.0
    model.load_state_dict({k: (new if k in ("lm_head.weight", "transformer.wte.weight") else v)
                           for k, v in state.items()})
    assert model.lm_head.weight is wte and np.array_equal(wte.numpy(), new)


def test_init_statistics():
    tg.manual_seed(0)
    L = 4
    model = GPT(GPTConfig(block_size=64, vocab_size=512, n_layer=L, n_head=4, n_embd=64))
    groups = {"0.02": [], "proj": [], "bias": [], "ln_weight": []}
    for name, p in model.named_parameters():
        values = p.numpy().ravel()
        if name.endswith("c_proj.weight"):
            groups["proj"].append(values)
        elif name.endswith(".bias"):
            groups["bias"].append(values)
        elif ".ln_" in name or "ln_f" in name:
            groups["ln_weight"].append(values)
        else:
            groups["0.02"].append(values)
    normal = np.concatenate(groups["0.02"])
    proj = np.concatenate(groups["proj"])
    assert abs(normal.std() - 0.02) < 0.02 * 0.03 and abs(normal.mean()) < 1e-3
    target = 0.02 / math.sqrt(2 * L)
    assert abs(proj.std() - target) < target * 0.03 and abs(proj.mean()) < 1e-3
    for name in ("transformer.wte.weight", "transformer.wpe.weight",
                 "transformer.h.0.attn.c_attn.weight", "transformer.h.3.mlp.c_fc.weight"):
        std = dict(model.named_parameters())[name].numpy().std()
        assert abs(std - 0.02) < 0.002, (name, std)
    assert not np.concatenate(groups["bias"]).any()
    assert np.all(np.concatenate(groups["ln_weight"]) == 1.0)


def test_init_is_reproducible():
    a, b = tiny_gpt(seed=3), tiny_gpt(seed=3)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy(), err_msg=name)
    c = tiny_gpt(seed=4)
    assert not np.array_equal(c.transformer.wte.weight.numpy(), a.transformer.wte.weight.numpy())


# --- parameter counts -------------------------------------------------------------------------
@pytest.mark.parametrize("name, total", [
    ("gpt2", 124_439_808), ("gpt2-medium", 354_823_168),
    ("gpt2-large", 774_030_080), ("gpt2-xl", 1_557_611_200)])
def test_gpt2_parameter_counts(name, total):
    """The published sizes (124M, 350M, 774M, 1558M) with the head tied to wte."""
    config = GPTConfig.from_preset(name)
    assert count_params(config) == total
    assert count_params(config, non_embedding=True) == total - 1024 * config.n_embd


@pytest.mark.parametrize("fields", [dict(), dict(bias=False), dict(n_layer=3, n_embd=12, n_head=3)])
def test_count_params_matches_a_built_model(fields):
    model = tiny_gpt(tg.float32, **fields)
    assert model.num_parameters() == count_params(model.config)
    assert model.get_num_params() == count_params(model.config, non_embedding=True)
    assert model.get_num_params(non_embedding=False) == sum(
        p.numel() for p in model.parameters())
    assert repr(model).endswith(f"# {model.num_parameters():,} parameters")


# --- forward ----------------------------------------------------------------------------------
def test_forward_shapes_and_loss():
    model = tiny_gpt()
    idx, targets = tokens((3, 6)), tokens((3, 6), seed=1)
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 6, 11) and loss.shape == ()
    log_probs = logits.numpy() - np.log(np.exp(logits.numpy()).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probs, targets[..., None], -1).mean()
    assert_close(loss.item(), expected)
    logits_only, none = model(tg.tensor(idx))
    assert none is None
    assert_close(logits_only.numpy(), logits.numpy())
    last, _ = model(idx, last_only=True)
    assert last.shape == (3, 1, 11)
    assert_close(last.numpy(), logits.numpy()[:, -1:])


def test_ignore_index_minus_one():
    model = tiny_gpt()
    idx, targets = tokens((2, 6)), tokens((2, 6), seed=1)
    masked = targets.copy()
    masked[:, :3] = -1
    _, loss = model(idx, masked)
    logits, _ = model(idx)
    lp = logits.numpy() - np.log(np.exp(logits.numpy()).sum(-1, keepdims=True))
    picked = np.take_along_axis(lp[:, 3:], targets[:, 3:, None], -1)
    assert_close(loss.item(), -picked.mean())


def test_causality():
    """Changing the tokens after position t leaves the logits at positions <= t unchanged."""
    model = tiny_gpt()
    idx = tokens((2, 8))
    base, _ = model(idx)
    rng = np.random.default_rng(5)
    for t in range(7):
        changed = idx.copy()
        shift = rng.integers(1, 11, changed[:, t + 1:].shape)      # never 0: every id changes
        changed[:, t + 1:] = (changed[:, t + 1:] + shift) % 11
        logits, _ = model(changed)
        assert_close(logits.numpy()[:, :t + 1], base.numpy()[:, :t + 1])
        # ...and the next position does see the change (the check can fail).
        assert np.abs(logits.numpy()[:, t + 1] - base.numpy()[:, t + 1]).max() > 1e-6


def test_eval_is_deterministic_with_dropout():
    model = tiny_gpt(dropout=0.3)
    idx = tokens((2, 8))
    train_a, _ = model(idx)
    train_b, _ = model(idx)
    assert not np.allclose(train_a.numpy(), train_b.numpy())     # dropout is active
    model.eval()
    a, _ = model(idx)
    b, _ = model(idx)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    plain = tiny_gpt(dropout=0.0)
    plain.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(plain(idx)[0].numpy(), a.numpy())   # dropout fully off


def test_bad_inputs_are_named():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="sequence length 9.*block_size 8"):
        model(tokens((1, 9)))
    with pytest.raises(ValueError, match=r"token id 11 .*\[0, 10\].*vocab_size 11"):
        model(np.array([[1, 11, 2]]))
    with pytest.raises(ValueError, match="token id -2"):
        model(np.array([[1, -2, 2]]))
    with pytest.raises(TypeError, match="integer token ids.*float"):
        model(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"shape \(batch, sequence\).*\(3,\)"):
        model(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="no tokens"):
        model(np.zeros((2, 0), dtype=np.int64))
    with pytest.raises(ValueError, match=r"targets of shape \(2, 3\).*\(2, 4\)"):
        model(tokens((2, 4)), tokens((2, 3)))
    with pytest.raises(IndexError, match="target 11"):
        model(tokens((1, 4)), np.array([[0, 1, 11, 2]]))


def test_crop_block_size():
    model = tiny_gpt()
    model.crop_block_size(5)
    assert model.config.block_size == 5 and model.transformer.wpe.weight.shape == (5, 8)
    assert model(tokens((1, 5)))[0].shape == (1, 5, 11)
    with pytest.raises(ValueError, match="block_size 5"):
        model(tokens((1, 6)))
    with pytest.raises(ValueError, match=r"\[1, 5\]"):
        model.crop_block_size(6)


# --- gradients --------------------------------------------------------------------------------
def directional_check(model, objective, n_directions=3, eps=1e-6, rtol=1e-6, atol=1e-9):
    """Compare the analytic gradient against central differences of `objective()` along
    random directions: a few through all parameters at once, then one per parameter tensor
    (so a mismatch names its tensor)."""
    params = list(model.named_parameters())
    model.zero_grad()
    objective().backward()
    grads = {name: p.grad.numpy() for name, p in params}
    rng = np.random.default_rng(0)

    def check(direction, label):
        originals = {name: p.data.copy() for name, p in params if name in direction}
        values = []
        with tg.no_grad():
            for sign in (1.0, -1.0):
                for name, p in params:
                    if name in direction:
                        p.data[...] = originals[name] + sign * eps * direction[name]
                values.append(objective().item())
        for name, p in params:
            if name in direction:
                p.data[...] = originals[name]
        numeric = (values[0] - values[1]) / (2 * eps)
        analytic = sum(float((grads[n] * u).sum()) for n, u in direction.items())
        if abs(analytic - numeric) > atol + rtol * abs(numeric):
            failures.append(f"{label}: analytic {analytic!r}, numeric {numeric!r}")

    failures = []
    for _ in range(n_directions):
        check({name: rng.standard_normal(p.shape) for name, p in params}, "all parameters")
    for name, p in params:
        check({name: rng.standard_normal(p.shape)}, name)
    assert not failures, "gradient mismatch along random directions of\n" + "\n".join(failures)
    # Every parameter received a gradient.
    assert all(np.abs(g).max() > 0 for g in grads.values())


@pytest.mark.parametrize("fields", [
    dict(),
    dict(bias=False, gelu_approximate="none", n_head=4),
    dict(dropout=0.2),
], ids=["gpt2-style", "no-bias-erf-gelu", "dropout"])
def test_whole_gpt_directional_gradient_check_float64(fields):
    model = tiny_gpt(**fields)
    idx, targets = tokens((2, 7)), tokens((2, 7), seed=1)
    targets[0, :2] = -1                                   # ignored positions
    upstream = tg.tensor(np.random.default_rng(2).standard_normal((2, 7, 11)))

    def loss():
        tg.manual_seed(11)                                # the same dropout masks each call
        return model(idx, targets)[1]

    def logits_dot_upstream():
        tg.manual_seed(11)
        return (model(idx)[0] * upstream).sum()

    directional_check(model, loss)
    directional_check(model, logits_dot_upstream)


def test_float32_stays_float32():
    model = tiny_gpt(tg.float32, dropout=0.1)
    dtypes = []

    def record(module, inputs, output):
        for t in (output if isinstance(output, tuple) else (output,)):
            if t is not None:
                dtypes.append((type(module).__name__, t.dtype))

    for module in model.modules():
        module.register_forward_hook(record)
    logits, loss = model(tokens((2, 8)), tokens((2, 8), seed=1))
    loss.backward()
    assert logits.dtype == np.float32 and loss.dtype == np.float32
    assert len(dtypes) > 20 and all(dtype == np.float32 for _, dtype in dtypes), dtypes
    for name, p in model.named_parameters():
        assert p.dtype == np.float32 and p.grad.dtype == np.float32, name


def test_overfits_one_batch():
    """SGD with momentum drives the loss on one fixed batch to nearly zero."""
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=10, n_layer=2, n_head=2, n_embd=32))
    x, y = tokens((4, 8), vocab=10, seed=1), tokens((4, 8), vocab=10, seed=2)
    params = list(model.parameters())
    velocity = [np.zeros_like(p.data) for p in params]
    first = None
    for _ in range(100):
        _, loss = model(x, y)
        first = loss.item() if first is None else first
        model.zero_grad()
        loss.backward()
        for p, v in zip(params, velocity):
            v *= 0.9
            v += p.grad.data
            p.data -= 0.1 * v
    assert first > 2.0                       # about ln(10) at the start
    assert model(x, y)[1].item() < 0.01


def test_train_step_and_generation_on_each_device(device):
    cpu = tiny_gpt(tg.float32)
    model = tiny_gpt(tg.float32).to(device)
    assert model.device == device and model.lm_head.weight is model.transformer.wte.weight
    x, y = tokens((2, 8)), tokens((2, 8), seed=1)
    logits, loss = model(x, y)
    loss.backward()
    assert logits.device == device
    assert all(p.device == device and p.grad.device == device for p in model.parameters())
    cpu_logits, cpu_loss = cpu(x, y)
    assert_close(logits.numpy(), cpu_logits.numpy(), np.float32, scale=10)
    out = model.generate(x[:, :3], 9, top_k=4, seed=0)
    assert out.device == device and out.shape == (2, 12)
