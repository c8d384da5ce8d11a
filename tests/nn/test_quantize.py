"""int8 weights: the per-row error bound, zero rows, a GPT's logits and generation, the
refusal to train, int8 files and `sample --quantize int8`."""

import os

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.cli import main as cli_main
from tinygpt.nn import Int8Embedding, Int8Linear, Linear, load_int8, quantize_int8, save_int8
from tinygpt.nn.quantize import dequantize, quantize_per_channel, weight_bytes
from tinygpt.optim import AdamW, configure_param_groups

from conftest import assert_close


def rows_of_many_sizes(dtype, seed=0):
    """A (6, 40) weight whose rows span five orders of magnitude, one of them all zero."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((6, 40)) * np.array([1e-3, 1e-1, 1.0, 10.0, 1e2, 1.0])[:, None]
    w[5] = 0.0
    return w.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_each_element_is_within_half_a_step(dtype):
    w = rows_of_many_sizes(dtype)
    q, scale = quantize_per_channel(w)
    assert q.dtype == np.int8 and scale.dtype == w.dtype and scale.shape == (6,)
    assert q.min() >= -127 and q.max() <= 127
    np.testing.assert_allclose(scale[:5], np.abs(w[:5]).max(axis=1) / 127, rtol=1e-6)
    # The largest element of each row lands on +-127 exactly.
    assert (np.abs(q[:5]).max(axis=1) == 127).all()
    err = np.abs(w.astype(np.float64) - dequantize(q, scale).astype(np.float64))
    # Half a step, plus the rounding of one product in the weights' own precision.
    ulp = np.finfo(dtype).eps * np.abs(w).max(axis=1, keepdims=True)
    assert (err <= scale[:, None].astype(np.float64) / 2 + ulp).all()


def test_a_zero_row_stays_zero_without_a_division_by_zero():
    w = np.zeros((3, 4), dtype=np.float32)
    w[1] = [0.5, -1.0, 0.25, 0.0]
    with np.errstate(all="raise"):
        q, scale = quantize_per_channel(w)
    assert scale[0] == 0 and scale[2] == 0 and (q[[0, 2]] == 0).all()
    assert (dequantize(q, scale)[[0, 2]] == 0).all()
    assert q[1].tolist() == [64, -127, 32, 0]


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="2-d floating point"):
        quantize_per_channel(np.ones(4, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize_per_channel(np.array([[1.0, np.nan]]))


def test_int8_linear_is_the_linear_of_the_dequantised_weight():
    tg.manual_seed(0)
    layer = Linear(40, 6, dtype="float64")
    layer.weight.data[...] = rows_of_many_sizes("float64")
    x = np.random.default_rng(1).standard_normal((3, 5, 40))
    exact = x @ layer.weight.data.T + layer.bias.data
    int8 = Int8Linear.from_linear(layer)
    with tg.no_grad():
        y = int8(tg.tensor(x)).numpy()
    w = dequantize(int8.weight.data, int8.weight_scale.data)
    assert_close(y, x @ w.T + layer.bias.data)
    # Against the float layer: |dy_o| <= sum_i |x_i| * scale_o / 2.
    bound = np.abs(x).sum(axis=-1, keepdims=True) * int8.weight_scale.data / 2
    assert (np.abs(y - exact) <= bound * (1 + 1e-9)).all()


def small_gpt(dtype="float64", seed=0):
    tg.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=23, block_size=12, n_layer=2, n_head=2, n_embd=16,
                          dropout=0.0))
    return model.to(dtype).eval()


def dequantised_twin(model):
    """A float GPT whose weights are the int8 model's, dequantised."""
    twin = small_gpt()
    names = dict(model.named_parameters())
    for name, p in twin.named_parameters():
        q = names[name]
        p.data[...] = dequantize(q.data, names[name + "_scale"].data) \
            if q.dtype == np.int8 else q.data
    return twin


def test_the_tied_head_is_quantised_once_and_positions_stay_float():
    model = small_gpt().quantize()
    wte, head = model.transformer.wte, model.lm_head
    assert isinstance(wte, Int8Embedding) and isinstance(head, Int8Linear)
    assert wte.weight is head.weight and wte.weight_scale is head.weight_scale
    assert model.transformer.wpe.weight.dtype == np.float64
    assert model.dtype == np.float64
    for block in model.transformer.h:
        for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
            assert isinstance(layer, Int8Linear) and layer.weight.dtype == np.int8
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="already quantised"):
        model.quantize()
    with pytest.raises(ValueError, match="only mode is 'int8'"):
        small_gpt().quantize("int4")


def test_logits_within_the_bound_derived_from_the_weights_error():
    model = small_gpt()
    idx = np.random.default_rng(0).integers(0, 23, (2, 12))
    # First order: |u . dlogits| <= sum over weights of |d(u . logits)/dw| * (scale / 2).
    # The first-order bound takes every error at its worst sign; a factor 2 covers the
    # second-order terms, which are (scale / 2)^2 small.
    rng = np.random.default_rng(1)
    us = [rng.standard_normal((2, 12, 23)) for _ in range(3)]
    bounds = []
    float_logits = None
    for u in us:
        model.zero_grad()
        logits, _ = model(idx)
        float_logits = logits.numpy()
        (logits * tg.tensor(u)).sum().backward()
        bound = 0.0
        for module in model.modules():
            if isinstance(module, Linear):
                _, scale = quantize_per_channel(module.weight.data)
                bound += (np.abs(module.weight.grad.numpy()) * scale[:, None] / 2).sum()
        bounds.append(bound)
    quantised = small_gpt().quantize()
    with tg.no_grad():
        q_logits = quantised(idx)[0].numpy()
    for u, bound in zip(us, bounds):
        assert abs(((q_logits - float_logits) * u).sum()) <= 2 * bound
    assert np.abs(q_logits - float_logits).max() > 0            # it did change something
    # And exactly the float model of the dequantised weights (float64 rounding apart).
    twin = dequantised_twin(quantised)
    with tg.no_grad():
        assert_close(q_logits, twin(idx)[0].numpy())


def test_greedy_generation_with_the_kv_cache():
    model = small_gpt().quantize()
    twin = dequantised_twin(model)
    prompt = np.array([[3, 1, 4, 1, 5]])
    out = model.generate(prompt, 15, do_sample=False).numpy()         # past block_size too
    assert out.shape == (1, 20)
    np.testing.assert_array_equal(out, twin.generate(prompt, 15, do_sample=False).numpy())
    # The cached path equals a full forward over the window at every step.
    tokens = prompt
    for _ in range(15):
        with tg.no_grad():
            logits = model(tokens[:, -12:])[0].numpy()
        tokens = np.concatenate([tokens, logits[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, tokens)


def test_on_each_device(device):
    cpu = small_gpt().quantize()
    model = small_gpt().to(device).quantize()
    assert model.transformer.wte.weight.device == device
    prompt = np.array([[3, 1, 4]])
    np.testing.assert_array_equal(model.generate(prompt, 14, do_sample=False).numpy(),
                                  cpu.generate(prompt, 14, do_sample=False).numpy())
    with tg.no_grad():
        assert_close(model(prompt)[0].numpy(), cpu(prompt)[0].numpy())


def test_float32_model_generates_in_float32():
    model = small_gpt("float32").quantize()
    assert model.dtype == np.float32
    with tg.no_grad():
        assert model(np.array([[1, 2, 3]]))[0].dtype == np.float32
    assert model.generate(np.array([[1, 2]]), 5, seed=0).shape == (1, 7)


def test_a_quantised_model_refuses_training():
    model = small_gpt().quantize()
    model.train()
    idx = np.random.default_rng(0).integers(0, 23, (2, 8))
    _, loss = model(idx, idx)                                  # the forward still works
    with pytest.raises(RuntimeError, match="int8 .*inference-only"):
        loss.backward()
    with pytest.raises(TypeError, match="int8 .*inference-only"):
        AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(TypeError, match="int8 .*inference-only"):
        configure_param_groups(model.named_parameters(), 0.1)
    # A float input that requires grad does not get a gradient through an int8 layer.
    layer = Int8Linear.from_linear(Linear(4, 3))
    x = tg.randn(2, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only"):
        layer(x).sum().backward()


def test_int8_file_round_trip_and_size(tmp_path):
    model = small_gpt("float32").quantize()
    path = tmp_path / "model.npz"
    size = save_int8(model, path)
    assert size == os.path.getsize(path)
    with np.load(path) as f:
        assert "lm_head.weight" not in f.files                  # the tied matrix once
        assert f["transformer.wte.weight"].dtype == np.int8
        assert f["transformer.h.0.attn.c_attn.weight_scale"].dtype == np.float32
    other = small_gpt("float32", seed=5).quantize()
    load_int8(other, path)
    assert other.lm_head.weight is other.transformer.wte.weight
    idx = np.array([[1, 2, 3, 4]])
    with tg.no_grad():
        np.testing.assert_array_equal(model(idx)[0].numpy(), other(idx)[0].numpy())
    # The file holds the weights' bytes once each: int8 matrices, float scales and the rest.
    with np.load(path) as f:
        stored = sum(f[name].nbytes for name in f.files)
    assert stored == weight_bytes(model) < weight_bytes(small_gpt("float32")) / 2
    with pytest.raises(ValueError, match="not quantised"):
        save_int8(small_gpt(), tmp_path / "x.npz")
    with pytest.raises(ValueError, match="end in .npz"):
        save_int8(model, tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()


def test_quantize_int8_on_any_module():
    layers = tg.nn.Sequential(Linear(4, 8), tg.nn.GELU(), Linear(8, 2))
    x = tg.randn(3, 4)
    with tg.no_grad():
        before = layers(x).numpy()
        quantize_int8(layers)
        after = layers(x).numpy()
    assert all(isinstance(layers[i], Int8Linear) for i in (0, 2))
    np.testing.assert_allclose(after, before, atol=0.05)
    with pytest.raises(TypeError, match="expected a Module"):
        quantize_int8(np.zeros(3))


def test_sample_quantize_int8(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("It is a truth universally acknowledged. " * 40, encoding="utf-8")
    out = str(tmp_path / "run")
    assert cli_main(["train", "--data", str(corpus), "--out_dir", out, "--n_layer", "1",
                     "--n_head", "2", "--n_embd", "16", "--block_size", "16",
                     "--batch_size", "4", "--max_iters", "4", "--eval_interval", "4",
                     "--eval_iters", "1", "--log_interval", "2", "--processes", "1"]) == 0
    capsys.readouterr()
    args = ["sample", "--out_dir", out, "--prompt", "It", "--num_tokens", "12", "--greedy"]
    assert cli_main(args + ["--quantize", "int8"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("It") and len(text.splitlines()[0]) == 14
    with pytest.raises(SystemExit) as exc:
        cli_main(args + ["--quantize", "int4"])
    assert exc.value.code == 2
    assert "--quantize" in capsys.readouterr().err
