"""tinygpt.model.pretrained: Hugging Face GPT-2 folders in and out, nanoGPT checkpoints,
tokenizers found beside the weights, and the two GPT-2 examples.

Every folder is built here with random weights (no downloads). The safetensors files are
written by this module's own small writer, in Hugging Face's layout (Conv1D weights (in, out)),
so the loader is checked against an independent description of the format. The expected
model is the same weights set with `load_state_dict`, transposed by the test itself.
"""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

import tinygpt as tg
from conftest import REPO, assert_close
from tinygpt.data import BPETokenizer, CharTokenizer
from tinygpt.model import GPT, GPTConfig
from tinygpt.data.tokenizers import require_tokenizer
from tinygpt.model.pretrained import load_nanogpt_ckpt, load_pretrained, save_pretrained
from tinygpt.model.safetensors import load_file
from tinygpt.nn import init as nn_init

# Not square anywhere it matters: c_attn (8, 24), c_fc (8, 32); c_proj (8, 8) is square, which
# is the case where a forgotten transpose keeps the right shape and the wrong values.
SIZES = dict(n_layer=2, n_head=2, n_embd=8, n_positions=16, vocab_size=37)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
ST_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8"}


def hf_config(**overrides):
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_ctx": 16,
            "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "n_inner": None,
            "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, **SIZES, **overrides}


def random_hf_weights(seed=0, n_layer=2, n_embd=8, n_positions=16, vocab_size=37):
    """HF-layout float32 weights (Conv1D as (in, out)), names without the prefix."""
    rng = np.random.default_rng(seed)
    C = n_embd

    def r(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    w = {"wte.weight": r(vocab_size, C), "wpe.weight": r(n_positions, C),
         "ln_f.weight": 1 + r(C), "ln_f.bias": r(C)}
    for i in range(n_layer):
        h = f"h.{i}."
        w.update({h + "ln_1.weight": 1 + r(C), h + "ln_1.bias": r(C),
                  h + "attn.c_attn.weight": r(C, 3 * C), h + "attn.c_attn.bias": r(3 * C),
                  h + "attn.c_proj.weight": r(C, C), h + "attn.c_proj.bias": r(C),
                  h + "ln_2.weight": 1 + r(C), h + "ln_2.bias": r(C),
                  h + "mlp.c_fc.weight": r(C, 4 * C), h + "mlp.c_fc.bias": r(4 * C),
                  h + "mlp.c_proj.weight": r(4 * C, C), h + "mlp.c_proj.bias": r(C)})
    return w


def write_safetensors(path, tensors):
    """A minimal independent safetensors writer: name -> (dtype name, float32 values).

    BF16 is written as the top 16 bits of each float32 (values chosen exactly representable
    by the caller's rounding, see `as_stored`)."""
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dtype, values) in tensors.items():
        if dtype == "BF16":
            raw = (np.ascontiguousarray(values, np.float32).view(np.uint32) >> 16) \
                .astype("<u2").tobytes()
        else:
            raw = np.ascontiguousarray(values).astype(ST_DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.shape(values)),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(chunks))


def as_stored(values, dtype):
    """The float32 values a loader must see after storing `values` as `dtype`."""
    if dtype == "F16":
        return values.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        return ((values.view(np.uint32) >> 16) << 16).view(np.float32)
    return values


def make_folder(folder, weights=None, config=None, dtype="F32", prefix="", extra=None):
    """Write config.json + model.safetensors; returns the float32 weights as stored."""
    weights = random_hf_weights() if weights is None else weights
    stored = {k: as_stored(v, dtype) for k, v in weights.items()}
    tensors = {prefix + k: (dtype, v) for k, v in stored.items()}
    tensors.update(extra or {})
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors", tensors)
    (folder / "config.json").write_text(json.dumps(config or hf_config()))
    return stored


def reference_model(stored, gelu="tanh"):
    """The GPT the loader should build, with the weights set by load_state_dict."""
    config = GPTConfig(block_size=SIZES["n_positions"], vocab_size=SIZES["vocab_size"],
                       n_layer=SIZES["n_layer"], n_head=SIZES["n_head"],
                       n_embd=SIZES["n_embd"], gelu_approximate=gelu)
    model = GPT(config)
    state = {}
    for k, v in stored.items():
        state["transformer." + k] = v.T if k.endswith(CONV1D) else v
    state["lm_head.weight"] = stored["wte.weight"]
    model.load_state_dict(state)
    return model.eval()


IDX = np.random.default_rng(1).integers(0, SIZES["vocab_size"], (2, 11))


def logits(model, idx=IDX):
    return model(idx)[0].numpy()


@pytest.fixture
def no_gpt2_vocab(monkeypatch, tmp_path):
    """Make sure GPT-2's vocabulary cannot be found outside the test's folders."""
    monkeypatch.delenv("TINYGPT_GPT2_VOCAB", raising=False)
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "empty-cache"))


# --------------------------------------------------------------------------- loading

@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
@pytest.mark.parametrize("layout", ["openai", "transformers"])
def test_load_matches_load_state_dict(tmp_path, dtype, layout):
    # openai-community/gpt2's layout: no prefix, with the attention-mask buffers; a file
    # saved by transformers: the `transformer.` prefix and (sometimes) the tied head.
    weights = random_hf_weights()
    if layout == "openai":
        mask = np.tril(np.ones((1, 1, 16, 16), np.float32))
        extra = {f"h.{i}.attn.bias": ("F32", mask) for i in range(2)}
        extra["h.0.attn.masked_bias"] = ("F32", np.array(-1e4, np.float32))
        stored = make_folder(tmp_path, weights, dtype=dtype, extra=extra)
    else:
        extra = {"lm_head.weight": (dtype, weights["wte.weight"])}
        stored = make_folder(tmp_path, weights, dtype=dtype, prefix="transformer.", extra=extra)
    model = load_pretrained(tmp_path)
    assert model.dtype == np.float32 and not model.training
    assert model.transformer.wte.weight is model.lm_head.weight
    assert_close(logits(model), logits(reference_model(stored)), np.float32)


def test_conv1d_weights_are_transposed(tmp_path):
    stored = make_folder(tmp_path)
    model = load_pretrained(tmp_path)
    block = model.transformer.h[1]
    for name, linear in (("attn.c_attn", block.attn.c_attn), ("attn.c_proj", block.attn.c_proj),
                         ("mlp.c_fc", block.mlp.c_fc), ("mlp.c_proj", block.mlp.c_proj)):
        w = stored[f"h.1.{name}.weight"]                         # (in, out)
        assert linear.weight.shape == (w.shape[1], w.shape[0])
        np.testing.assert_array_equal(linear.weight.numpy(), w.T)
    # Embeddings are not Conv1D: stored as they are used.
    np.testing.assert_array_equal(model.transformer.wte.weight.numpy(), stored["wte.weight"])


def test_config_fields_are_read(tmp_path):
    make_folder(tmp_path, config=hf_config(activation_function="gelu", layer_norm_epsilon=1e-3))
    model = load_pretrained(tmp_path, dropout=0.25)
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size) == (2, 2, 8, 16, 37)
    assert c.gelu_approximate == "none" and c.dropout == 0.25 and c.bias
    assert {m.eps for m in model.modules() if isinstance(m, tg.nn.LayerNorm)} == {1e-3}


def test_dtype_and_file_path(tmp_path):
    stored = make_folder(tmp_path)
    model = load_pretrained(tmp_path / "config.json", dtype="float64")
    assert all(p.dtype == np.float64 for p in model.parameters())
    expected = reference_model(stored).to("float64")
    assert_close(logits(model), logits(expected), np.float64)


def test_random_init_is_skipped_without_patching_nn_init(tmp_path, monkeypatch):
    make_folder(tmp_path)
    functions = {name: getattr(nn_init, name) for name in ("normal_", "uniform_", "zeros_",
                                                           "ones_")}
    seen = []
    build = GPT.__init__

    def watching(self, config):
        # Mid-build: nn.init's functions are the module's own, not stand-ins.
        seen.append(all(getattr(nn_init, n) is f for n, f in functions.items()))
        build(self, config)

    monkeypatch.setattr(GPT, "__init__", watching)
    tg.manual_seed(0)
    state = tg.autograd.backend.get_rng_state()
    load_pretrained(tmp_path)
    assert seen == [True]
    assert tg.autograd.backend.get_rng_state() == state      # not one random number drawn
    GPT(GPTConfig(block_size=4, vocab_size=5, n_layer=1, n_head=1, n_embd=4))
    assert tg.autograd.backend.get_rng_state() != state, "nn.init must work after loading"


def test_skip_init_leaves_other_threads_initialising():
    import threading
    filled = []

    class Probe(tg.nn.Module):
        def __init__(self):
            super().__init__()
            # Under skip_init here; a thread started now must still initialise.
            t = tg.zeros(1000)
            worker = threading.Thread(target=lambda: filled.append(
                bool(nn_init.normal_(t).numpy().any())))
            worker.start()
            worker.join()
            filled.append(bool(nn_init.normal_(tg.zeros(1000)).numpy().any()))

    nn_init.skip_init(Probe)
    assert filled == [True, False]


# --------------------------------------------------------------------------- bad input

def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="downloads nothing"):
        load_pretrained(tmp_path / "gpt2")
    make_folder(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        load_pretrained(tmp_path)
    make_folder(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_pretrained(tmp_path)


def test_missing_and_unexpected_tensors(tmp_path):
    weights = random_hf_weights()
    del weights["h.1.mlp.c_fc.bias"]
    weights["h.0.attn.rotary.weight"] = np.zeros(3, np.float32)
    make_folder(tmp_path, weights)
    with pytest.raises(ValueError) as e:
        load_pretrained(tmp_path)
    assert "missing tensor(s): 'h.1.mlp.c_fc.bias'" in str(e.value)
    assert "'h.0.attn.rotary.weight'" in str(e.value)


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
    weights = random_hf_weights()
    # A Linear-layout (out, in) matrix where the file should hold Conv1D's (in, out).
    weights["h.0.mlp.c_fc.weight"] = weights["h.0.mlp.c_fc.weight"].T.copy()
    make_folder(tmp_path, weights)
    with pytest.raises(ValueError, match=r"'h\.0\.mlp\.c_fc\.weight' has shape \(32, 8\).*"
                                         r"expects \(8, 32\)"):
        load_pretrained(tmp_path)
    # A config.json that does not describe the file: every tensor of the wrong size.
    make_folder(tmp_path, config=hf_config(n_embd=4))
    with pytest.raises(ValueError, match=r"'wte\.weight' has shape \(37, 8\).*\(37, 4\)"):
        load_pretrained(tmp_path)
    # One too large for the file is refused from the sizes alone, before any name is listed.
    make_folder(tmp_path, config=hf_config(n_embd=16))
    with pytest.raises(ValueError, match=r"describes 7,440 parameters.*does not belong"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("change, message", [
    (dict(model_type="llama"), "model_type is 'llama'"),
    (dict(n_inner=64), "n_inner is 64"),
    (dict(activation_function="relu"), "activation_function 'relu'"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (dict(n_head=3), "divisible by n_head"),
    (dict(n_layer=None), "missing field"),
])
def test_unsupported_configs(tmp_path, change, message):
    config = hf_config(**change)
    config = {k: v for k, v in config.items() if v is not None or k == "n_inner"}
    make_folder(tmp_path, config=config)
    with pytest.raises(ValueError, match=message):
        load_pretrained(tmp_path)


def test_bad_tensor_contents(tmp_path):
    weights = random_hf_weights()
    make_folder(tmp_path, weights, prefix="transformer.",
                extra={"lm_head.weight": ("F32", weights["wte.weight"] + 1)})
    with pytest.raises(ValueError, match="untied"):
        load_pretrained(tmp_path)
    make_folder(tmp_path, extra={"h.0.ln_1.weight": ("I64", np.ones(8, np.int64))})
    with pytest.raises(ValueError, match="'h.0.ln_1.weight' has dtype I64; expected a float"):
        load_pretrained(tmp_path)
    make_folder(tmp_path, weights, extra={
        "transformer.wpe.weight": ("F32", weights["wpe.weight"])})
    with pytest.raises(ValueError, match="'wpe.weight' is stored twice"):
        load_pretrained(tmp_path)
    make_folder(tmp_path, weights)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated|contiguous"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_pretrained(tmp_path)


# --------------------------------------------------------------------------- saving

def test_save_then_reload(tmp_path, no_gpt2_vocab):
    stored = make_folder(tmp_path / "in", config=hf_config(layer_norm_epsilon=1e-4))
    model = load_pretrained(tmp_path / "in")
    save_pretrained(model, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "model.safetensors"]

    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["n_positions"],
            config["n_ctx"], config["vocab_size"]) == (2, 2, 8, 16, 16, 37)
    assert config["activation_function"] == "gelu_new" and config["layer_norm_epsilon"] == 1e-4
    assert config["eos_token_id"] is None        # no tokenizer, and not GPT-2's vocabulary

    # Hugging Face names and Conv1D layouts, the tied head left out.
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert set(saved) == {"transformer." + k for k in stored}
    for k, v in stored.items():
        np.testing.assert_array_equal(saved["transformer." + k], v)

    again = load_pretrained(tmp_path / "out")
    assert_close(logits(again), logits(model), np.float32)
    assert {m.eps for m in again.modules() if isinstance(m, tg.nn.LayerNorm)} == {1e-4}
    first = model.generate(IDX[:1, :3], 5, top_k=5, seed=3).numpy()
    second = again.generate(IDX[:1, :3], 5, top_k=5, seed=3).numpy()
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("bias, gelu", [(False, "none"), (True, "none"), (False, "tanh")])
def test_models_built_here_round_trip(tmp_path, bias, gelu, no_gpt2_vocab):
    # bias=False has no Hugging Face form: zero biases compute exactly the same thing.
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=37, n_layer=2, n_head=2, n_embd=8,
                          bias=bias, gelu_approximate=gelu)).eval()
    save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["activation_function"] == {"none": "gelu", "tanh": "gelu_new"}[gelu]
    again = load_pretrained(tmp_path)
    assert again.config.gelu_approximate == gelu and again.config.bias
    assert_close(logits(again), logits(model), np.float32)


def test_save_refuses_to_overwrite(tmp_path, no_gpt2_vocab):
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=20, n_layer=1, n_head=1, n_embd=4))
    model.tokenizer = CharTokenizer("abcdefghij")
    save_pretrained(model, tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert set(before) == {"config.json", "model.safetensors", "tinygpt_tokenizer.json"}

    other = GPT(GPTConfig(block_size=8, vocab_size=20, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(FileExistsError, match="model.safetensors already exists"):
        save_pretrained(other, tmp_path)
    for name in ("model.safetensors", "config.json"):
        (tmp_path / name).unlink()
    with pytest.raises(FileExistsError, match="tinygpt_tokenizer.json already exists"):
        save_pretrained(other, tmp_path)       # a stale tokenizer counts too
    for name in ("model.safetensors", "config.json"):
        (tmp_path / name).write_bytes(before[name])
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert after == before

    save_pretrained(other, tmp_path, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    idx = IDX[:, :8] % 20
    assert_close(logits(load_pretrained(tmp_path), idx), logits(other.eval(), idx), np.float32)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        save_pretrained(other, tmp_path / "file")
    with pytest.raises(TypeError, match="expects a GPT"):
        save_pretrained(object(), tmp_path / "new")


# --------------------------------------------------------------------------- tokenizers

TEXT = ("First Citizen: Before we proceed any further, hear me speak. We're all resolved "
        "rather to die than to famish? It's 1234 times; café, naïve 日本語 😀\n\n") * 4


def test_tokenizer_files_travel_with_the_model(tmp_path, no_gpt2_vocab):
    tokenizer = BPETokenizer.train(TEXT, 300)
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=301, n_layer=1, n_head=1, n_embd=4))
    model.tokenizer = tokenizer
    save_pretrained(model, tmp_path)
    names = set(os.listdir(tmp_path))
    assert {"tinygpt_tokenizer.json", "vocab.json", "merges.txt"} <= names
    assert json.loads((tmp_path / "config.json").read_text())["eos_token_id"] == 300
    expected = tokenizer.encode(TEXT + "unseen words, zebra!")

    # tinygpt's own file, then Hugging Face's pair, then OpenAI's names for the same files.
    assert load_pretrained(tmp_path).tokenizer.encode(TEXT + "unseen words, zebra!") == expected
    (tmp_path / "tinygpt_tokenizer.json").unlink()
    hf = load_pretrained(tmp_path).tokenizer
    assert hf.encode(TEXT + "unseen words, zebra!") == expected
    assert hf.encode("<|endoftext|>", allowed_special="all") == [300]
    (tmp_path / "vocab.json").rename(tmp_path / "encoder.json")
    (tmp_path / "merges.txt").rename(tmp_path / "vocab.bpe")
    assert load_pretrained(tmp_path).tokenizer.encode(TEXT + "unseen words, zebra!") == expected
    (tmp_path / "vocab.bpe").unlink()
    model = load_pretrained(tmp_path)
    assert model.tokenizer is None
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        require_tokenizer(model)


def test_tokenizer_must_fit_the_model(tmp_path, no_gpt2_vocab):
    tokenizer = BPETokenizer.train(TEXT, 300)
    model = GPT(GPTConfig(block_size=8, vocab_size=100, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(ValueError, match="301 token ids but the model's vocab_size is 100"):
        save_pretrained(model, tmp_path, tokenizer=tokenizer)
    make_folder(tmp_path)                       # vocab_size 37
    (tmp_path / "tinygpt_tokenizer.json").write_text(json.dumps(tokenizer.to_dict()))
    with pytest.raises(ValueError, match="301 token ids but the model's vocab_size is 37"):
        load_pretrained(tmp_path)


def test_gpt2_vocabulary_is_attached_and_exported(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("TINYGPT_GPT2_VOCAB", str(shared_data / "gpt2.tiktoken"))
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=50257, n_layer=1, n_head=1, n_embd=4))
    save_pretrained(model, tmp_path)            # no tokenizer: GPT-2's ids are assumed
    assert json.loads((tmp_path / "config.json").read_text())["eos_token_id"] == 50256
    loaded = load_pretrained(tmp_path)          # no tokenizer files: GPT-2's is found
    assert loaded.tokenizer.encode("Hello world") == [15496, 995]

    # Exported as vocab.json + merges.txt, GPT-2's vocabulary reads back identically.
    save_pretrained(loaded, tmp_path / "with-vocab")
    (tmp_path / "with-vocab" / "tinygpt_tokenizer.json").unlink()
    monkeypatch.setenv("TINYGPT_GPT2_VOCAB", str(tmp_path / "nowhere"))
    again = load_pretrained(tmp_path / "with-vocab").tokenizer
    assert again is not None
    assert again.encode(TEXT) == loaded.tokenizer.encode(TEXT)
    merges = (tmp_path / "with-vocab" / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and merges[1] == "Ġ t" and len(merges) == 50001


# --------------------------------------------------------------------------- nanoGPT

def test_nanogpt_checkpoint(tmp_path, no_gpt2_vocab):
    torch = pytest.importorskip("torch")
    stored = make_folder(tmp_path / "hf")
    reference = reference_model(stored, gelu="none")    # nanoGPT's MLP uses the exact GELU
    state = {"_orig_mod." + k: torch.from_numpy(v.numpy())
             for k, v in reference.state_dict().items()}
    state["_orig_mod.transformer.h.0.attn.bias"] = torch.ones(1, 1, 16, 16)
    model_args = dict(n_layer=2, n_head=2, n_embd=8, block_size=16, bias=True, vocab_size=37,
                      dropout=0.0)
    torch.save({"model": state, "model_args": model_args, "iter_num": 5,
                "config": {"dataset": "x"}}, tmp_path / "ckpt.pt")
    for path in (tmp_path / "ckpt.pt", tmp_path):
        model = load_pretrained(path)
        assert model.config.gelu_approximate == "none" and model.tokenizer is None
        assert_close(logits(model), logits(reference), np.float32)

    torch.save({"model": {}, "model_args": model_args}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="missing keys"):
        load_nanogpt_ckpt(tmp_path / "empty.pt")
    # Refused from the sizes, before a million layers are built.
    torch.save({"model": state, "model_args": {**model_args, "n_layer": 1_000_000}},
               tmp_path / "huge.pt")
    with pytest.raises(ValueError, match="model_args describe"):
        load_nanogpt_ckpt(tmp_path / "huge.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a nanoGPT checkpoint"):
        load_nanogpt_ckpt(tmp_path / "other.pt")


def test_nanogpt_checkpoint_without_torch(tmp_path, monkeypatch):
    (tmp_path / "ckpt.pt").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)     # `import torch` raises ImportError
    with pytest.raises(ImportError, match="needs PyTorch"):
        load_pretrained(tmp_path / "ckpt.pt")


# --------------------------------------------------------------------------- transformers

def test_transformers_reads_what_we_write(tmp_path, no_gpt2_vocab):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    make_folder(tmp_path / "in")
    model = load_pretrained(tmp_path / "in")
    save_pretrained(model, tmp_path / "out")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        theirs = hf(torch.from_numpy(IDX)).logits.numpy()
    np.testing.assert_allclose(theirs, logits(model), rtol=1e-5, atol=1e-5)
    hf.save_pretrained(tmp_path / "theirs")
    np.testing.assert_allclose(logits(load_pretrained(tmp_path / "theirs")), theirs,
                               rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- examples

def _example(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_gpt2(tmp_path, monkeypatch, no_gpt2_vocab):
    """A random GPT-2 folder with a small trained BPE tokenizer; GPT gets from_pretrained /
    save_pretrained from this module if the model file does not define them (yet)."""
    if not hasattr(GPT, "from_pretrained"):
        monkeypatch.setattr(GPT, "from_pretrained",
                            classmethod(lambda cls, path, **kw: load_pretrained(path, **kw)),
                            raising=False)
    if not hasattr(GPT, "save_pretrained"):
        monkeypatch.setattr(GPT, "save_pretrained",
                            lambda self, path, **kw: save_pretrained(self, path, **kw),
                            raising=False)
    tokenizer = BPETokenizer.train(TEXT, 300)
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=301, n_layer=1, n_head=2, n_embd=8))
    model.tokenizer = tokenizer
    save_pretrained(model, tmp_path / "gpt2-tiny")
    (tmp_path / "text.txt").write_text(TEXT * 3, encoding="utf-8")
    return tmp_path


def test_generate_example(tiny_gpt2, capsys):
    import io
    out = io.StringIO()
    _example("generate_gpt2").main([str(tiny_gpt2 / "gpt2-tiny"), "--prompt", "First",
                                    "--max_new_tokens", "6", "--top_k", "20", "--top_p", "0.9"],
                                   out=out)
    text = out.getvalue()
    assert text.startswith("First") and len(text) > len("First\n")
    assert "6 tokens in" in capsys.readouterr().err


def test_finetune_example(tiny_gpt2, capsys):
    module = _example("finetune_gpt2")
    model = module.main([str(tiny_gpt2 / "gpt2-tiny"), "--data", str(tiny_gpt2 / "text.txt"),
                         "--iters", "3", "--batch_size", "2", "--block_size", "16",
                         "--eval_iters", "1", "--max_new_tokens", "4", "--lr", "1e-3",
                         "--out", str(tiny_gpt2 / "tuned")])
    printed = capsys.readouterr().out
    assert "before: val loss" in printed and "after: val loss" in printed
    assert "iter 2: loss" in printed
    tuned = load_pretrained(tiny_gpt2 / "tuned")
    assert tuned.config.block_size == 16
    assert_close(logits(tuned, IDX % 301), logits(model.eval(), IDX % 301), np.float32)
    original = load_pretrained(tiny_gpt2 / "gpt2-tiny")
    assert not np.allclose(tuned.transformer.wte.weight.numpy(),
                           original.transformer.wte.weight.numpy())
