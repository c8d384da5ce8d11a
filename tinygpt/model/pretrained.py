"""Pretrained GPT-2 weights in and out: Hugging Face folders and nanoGPT checkpoints (floor 5).

A Hugging Face GPT-2 folder (the `openai-community/gpt2` layout) holds

    config.json         n_layer, n_head, n_embd, n_positions, vocab_size, layer_norm_epsilon,
                        activation_function, ... (the fields of `transformers.GPT2Config`)
    model.safetensors   the weights: `wte.weight`, `wpe.weight`, `h.{i}.ln_1.weight`, ...,
                        `ln_f.bias`, maybe all prefixed with `transformer.`
    vocab.json, merges.txt   the tokenizer (GPT-2's `encoder.json` and `vocab.bpe` renamed)

Its names are nanoGPT's without the `transformer.` prefix, with one difference in layout:
GPT-2 was written with a `Conv1D` layer whose weight is `(in, out)`, where a `Linear`'s is
`(out, in)`. The four projection matrices (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj)
are therefore transposed on the way in and on the way out, as nanoGPT's `from_pretrained`
does. The output head is tied to `wte` and not stored; the attention-mask buffers
`h.{i}.attn.bias` / `attn.masked_bias` of older files are skipped.

Memory: loading never holds a second copy of the model. The GPT is built without random
initialisation (every parameter is about to be overwritten), and each tensor is read from
the file straight into its parameter's array, so the peak is the model plus one tensor's
temporary (for transposed, float16 or bfloat16 tensors).

    >>> model = load_pretrained("gpt2")                  # doctest: +SKIP (a downloaded folder)
    >>> save_pretrained(model, "my-gpt2")               # doctest: +SKIP

Imports: numpy, the standard library, data (tokenizers), model (GPT, safetensors);
PyTorch only inside `load_nanogpt_ckpt`.
"""

import base64
import contextlib
import json
import os
import pickle
from pathlib import Path

import numpy as np

from ..autograd import backend
from ..files import atomic_write_text
from ..data.bpe import GPT2_PATTERN, BPETokenizer, bytes_to_unicode
from ..data.char import CharTokenizer
from .. import nn
from ..nn import init as nn_init
from . import safetensors
from .config import GPTConfig
from .gpt import GPT

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tinygpt_tokenizer.json"   # the project's own format (any tokenizer, exact)
HF_VOCAB, HF_MERGES = "vocab.json", "merges.txt"           # Hugging Face's names ...
OPENAI_VOCAB, OPENAI_MERGES = "encoder.json", "vocab.bpe"  # ... for OpenAI's original files

# Weights stored (in, out) by GPT-2's Conv1D: transposed on load and on save.
CONV1D_SUFFIXES = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight",
                   ".mlp.c_proj.weight")
# Constant buffers (the causal mask) that old files carry; they are not parameters.
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")

# config.json activation_function -> GPTConfig.gelu_approximate. "gelu_new", "gelu_fast" and
# "gelu_pytorch_tanh" are the same tanh formula written three ways; "gelu" is the exact erf.
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh",
               "gelu": "none", "gelu_python": "none"}

# nanoGPT pads GPT-2's 50,257 tokens to 50,304; a model in that range without tokenizer
# files of its own is taken to speak GPT-2's vocabulary.
GPT2_VOCAB_RANGE = (50257, 50304)


# --------------------------------------------------------------------------- loading

def load_pretrained(path, dtype="float32", device="cpu", dropout=0.0):
    """A GPT with the weights of a Hugging Face GPT-2 folder, or of nanoGPT's `ckpt.pt`.

    path:    a folder with config.json + model.safetensors (any of the four GPT-2 sizes, or
             any size config.json describes); or a nanoGPT `ckpt.pt` file, or a folder that
             holds one and no config.json (needs PyTorch, see `load_nanogpt_ckpt`).
    dtype:   the parameters' dtype ("float32" by default; F32, F16 and BF16 files all load).
    device:  "cpu" or "cuda"; the weights are read on the CPU and moved once.
    dropout: the model's dropout probability. GPT-2's config.json says 0.1; like nanoGPT,
             tinygpt uses 0.0 unless told otherwise (set it for fine-tuning).

    The model's `tokenizer` attribute is the folder's tokenizer (tinygpt_tokenizer.json,
    vocab.json + merges.txt, or encoder.json + vocab.bpe), else GPT-2's own when the
    vocabulary has GPT-2's size and `BPETokenizer.gpt2()` finds it, else None (see
    `require_tokenizer`). The model is returned in eval mode.
    """
    path = Path(path)
    if path.is_file() or (path.is_dir() and not (path / CONFIG_NAME).exists()
                          and (path / "ckpt.pt").is_file()):
        if path.suffix in (".json", ".safetensors"):
            path = path.parent     # config.json or model.safetensors given: their folder
        elif path.suffix == ".npz":
            raise ValueError(f"{path} is a tinygpt training checkpoint, not pretrained "
                             f"weights: sample from it with `python -m tinygpt sample --out_dir "
                             f"{path.parent}`")
        else:
            return load_nanogpt_ckpt(path, dtype=dtype, device=device, dropout=dropout)
    if not path.is_dir():
        raise FileNotFoundError(
            f"no pretrained model folder at {str(path)!r}. tinygpt downloads nothing: fetch "
            f"the files of a GPT-2 model first, e.g. `huggingface-cli download "
            f"openai-community/gpt2 config.json model.safetensors vocab.json merges.txt "
            f"--local-dir gpt2`, then pass that folder")
    config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not weights_path.exists() and (path / f"{WEIGHTS_NAME}.index.json").exists():
        raise ValueError(f"{path} holds a sharded model (model.safetensors.index.json); "
                         f"tinygpt reads a single model.safetensors file")
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{path} is not a Hugging Face GPT-2 folder: {needed.name} is missing (it needs "
                f"{CONFIG_NAME} and {WEIGHTS_NAME}; pytorch_model.bin files are not read, "
                f"convert them to safetensors)")
    hf_config = _read_json(config_path)
    config, eps = config_from_hf(hf_config, dropout=dropout, where=config_path)
    tokenizer = find_tokenizer(path, config.vocab_size)   # fails early on a broken folder

    model = _empty_model(config, dtype)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = eps
    _load_hf_weights(model, weights_path, config)
    model.tokenizer = tokenizer
    model.eval()
    return model.to(device) if device != "cpu" else model


def config_from_hf(hf, dropout=0.0, where=CONFIG_NAME):
    """(GPTConfig, layer_norm_epsilon) from a Hugging Face GPT-2 config dict.

    Settings tinygpt's GPT cannot reproduce (another model type, an MLP width other than
    4 * n_embd, unscaled or layer-scaled attention, untied embeddings) raise ValueError.
    """
    if not isinstance(hf, dict):
        raise ValueError(f"{where}: expected a JSON object, found {type(hf).__name__}")
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"{where}: model_type is {model_type!r}; tinygpt loads GPT-2 models "
                         f"(model_type 'gpt2') only")
    if "n_positions" not in hf and "n_ctx" in hf:
        hf = {**hf, "n_positions": hf["n_ctx"]}          # very old configs
    missing = [k for k in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")
               if k not in hf]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}; a GPT-2 config.json "
                         f"gives n_layer, n_head, n_embd, n_positions and vocab_size")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{where}: activation_function {activation!r} is not supported; "
                         f"expected one of {', '.join(ACTIVATIONS)}")
    n_inner = hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * hf["n_embd"]:
        raise ValueError(f"{where}: n_inner is {n_inner}, but tinygpt's MLP is 4 * n_embd = "
                         f"{4 * hf['n_embd']} wide")
    unsupported = [(k, want) for k, want in (
        ("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False), ("tie_word_embeddings", True)) if hf.get(k, want) != want]
    if unsupported:
        k, want = unsupported[0]
        raise ValueError(f"{where}: {k} is {hf[k]!r}; tinygpt's GPT supports {want} only")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{where}: layer_norm_epsilon must be a positive number, got {eps!r}")
    try:
        config = GPTConfig(block_size=hf["n_positions"], vocab_size=hf["vocab_size"],
                           n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                           dropout=dropout, bias=True, gelu_approximate=ACTIVATIONS[activation])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    return config, float(eps)


def hf_name(key):
    """The Hugging Face name of a GPT state_dict key (without the optional `transformer.`)."""
    return key.removeprefix("transformer.")


def is_conv1d(key):
    """True for the four projection weights that GPT-2's files store transposed, (in, out)."""
    return key.endswith(CONV1D_SUFFIXES)


@contextlib.contextmanager
def _no_init():
    """Build modules without random initialisation: nn.init's fill functions do nothing.

    Filling 124M parameters with random numbers takes seconds (a minute for gpt2-xl), all
    wasted when every one is overwritten by a file next. Untouched memory also costs no RSS
    until it is written. Not thread-safe: another thread building a model meanwhile would
    get uninitialised weights (Hugging Face's `no_init_weights` has the same caveat).
    """
    names = ("normal_", "uniform_", "zeros_", "ones_")
    saved = {name: getattr(nn_init, name) for name in names}
    try:
        for name in names:
            setattr(nn_init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn_init, name, fn)


def _empty_model(config, dtype):
    """GPT(config) with uninitialised float parameters of `dtype` on the CPU (to be filled)."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating-point type, got {dtype}")
    with _no_init():
        model = GPT(config)
    for param in model.parameters():      # the tied wte/lm_head Parameter is listed once
        if param.dtype != dtype:
            param.data = np.empty(param.shape, dtype=dtype)
    return model


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None


def _plan_hf_load(model, entries, path, config):
    """Match the file's tensors to the model's parameters.

    Returns [(file name, parameter, transpose)] and the file name of a stored output head
    (or None). Every problem (missing, unexpected or duplicated tensors, shape mismatches,
    non-float dtypes) is collected and raised at once, before any data is read.
    """
    by_hf_name, head, problems = {}, None, []
    for name in entries:
        short = hf_name(name)
        if short == "lm_head.weight":
            head = name
        elif short.endswith(BUFFER_SUFFIXES):
            continue
        elif short in by_hf_name:
            problems.append(f"tensor {short!r} is stored twice, as {by_hf_name[short]!r} and "
                            f"{name!r}")
        else:
            by_hf_name[short] = name
    plan, missing = [], []
    # state_dict's tensors share their parameters' arrays: filling them fills the model.
    own = model.state_dict()
    own.pop("lm_head.weight")                    # tied to transformer.wte.weight
    for key, param in own.items():
        name = by_hf_name.pop(hf_name(key), None)
        if name is None:
            missing.append(hf_name(key))
            continue
        transpose = is_conv1d(key)
        dtype, shape = entries[name][0], tuple(entries[name][1])
        expected = tuple(reversed(param.shape)) if transpose else tuple(param.shape)
        if shape != expected:
            layout = " (Hugging Face's Conv1D layout (in, out))" if transpose else ""
            problems.append(f"tensor {name!r} has shape {shape}, but the model built from "
                            f"config.json expects {expected}{layout}")
        elif dtype not in ("F32", "F16", "BF16", "F64"):
            problems.append(f"tensor {name!r} has dtype {dtype}; expected a float dtype (F32, "
                            f"F16, BF16 or F64)")
        else:
            plan.append((name, param, transpose))
    unexpected = sorted(by_hf_name.values())
    if head is not None:
        V, C = config.vocab_size, config.n_embd
        if tuple(entries[head][1]) != (V, C):
            problems.append(f"tensor {head!r} has shape {tuple(entries[head][1])}, but the "
                            f"model expects {(V, C)}")
    if missing:
        problems.append(f"missing tensor(s): {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s), not part of a GPT-2: {_some(unexpected)}")
    if problems:
        raise ValueError(f"{path} does not fit the GPT-2 described by config.json (n_layer="
                         f"{config.n_layer}, n_head={config.n_head}, n_embd={config.n_embd}, "
                         f"n_positions={config.block_size}, vocab_size={config.vocab_size}):\n  "
                         + "\n  ".join(problems))
    return plan, head


def _some(names, limit=6):
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _load_hf_weights(model, path, config):
    """Read model.safetensors tensor by tensor into the model's parameters, in place.

    `safetensors.load_file` would read the whole data section into one buffer: a second
    copy of the model. Its header parser and checks are reused here, and the data is read
    one tensor at a time instead.
    """
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        header, data_start = safetensors._read_header(f, path, file_size)
        checked, _ = safetensors._check_entries(header, path, file_size - data_start)
        entries = {name: (dtype, shape, begin, end) for name, dtype, shape, begin, end in checked}
        plan, head = _plan_hf_load(model, entries, path, config)
        # In file order, so the reads go forward through the file.
        plan.sort(key=lambda item: entries[item[0]][2])
        for name, param, transpose in plan:
            # A transposed tensor goes through a temporary (square ones too: their shapes
            # match, but their layouts do not).
            target = None if transpose else param.data
            values = _read_tensor(f, path, data_start, name, entries[name], target)
            if values is not None:
                param.data[...] = values.T if transpose else values
        if head is not None:
            wte = model.transformer.wte.weight.data
            stored = _read_tensor(f, path, data_start, head, entries[head], None)
            if not np.array_equal(stored.astype(wte.dtype, copy=False), wte):
                raise ValueError(f"{path}: {head!r} differs from the token embedding; tinygpt's "
                                 f"GPT ties the output head to wte and cannot load an untied one")


def _read_tensor(f, path, data_start, name, entry, target):
    """Read one tensor's bytes. When `target` (a C-contiguous array) has the stored dtype and
    shape, read straight into it and return None; otherwise return a temporary array."""
    dtype, shape, begin, end = entry
    stored = safetensors._DTYPES[dtype]
    direct = (target is not None and dtype != "BF16" and target.dtype == stored
              and tuple(target.shape) == tuple(shape) and target.flags.c_contiguous)
    array = target if direct else np.empty(shape, dtype=stored)
    f.seek(data_start + begin)
    if f.readinto(memoryview(array.reshape(-1).view(np.uint8))) != end - begin:
        raise ValueError(f"{path}: the file ended inside tensor {name!r}; is it truncated?")
    if direct:
        return None
    return safetensors._bf16_to_f32(array) if dtype == "BF16" else array


# --------------------------------------------------------------------------- tokenizers

def find_tokenizer(folder, vocab_size=None):
    """The tokenizer for a model folder, or None.

    Tried in order: tinygpt_tokenizer.json (written by `save_pretrained`), vocab.json +
    merges.txt (Hugging Face), encoder.json + vocab.bpe (OpenAI), then GPT-2's tokenizer
    from `BPETokenizer.gpt2()` when `vocab_size` is GPT-2's (50,257 up to nanoGPT's 50,304)
    and the file is on this machine. A tokenizer with more ids than the model raises.
    """
    folder = Path(folder)
    tokenizer, source = None, None
    if (folder / TOKENIZER_NAME).is_file():
        source = folder / TOKENIZER_NAME
        tokenizer = tokenizer_from_dict(_read_json(source), where=source)
    else:
        for vocab, merges in ((HF_VOCAB, HF_MERGES), (OPENAI_VOCAB, OPENAI_MERGES)):
            if (folder / vocab).is_file() and (folder / merges).is_file():
                source = folder / vocab
                tokenizer = BPETokenizer.from_encoder_files(folder / vocab, folder / merges)
                break
    if tokenizer is None and vocab_size is not None \
            and GPT2_VOCAB_RANGE[0] <= vocab_size <= GPT2_VOCAB_RANGE[1]:
        try:
            return BPETokenizer.gpt2()
        except FileNotFoundError:
            return None
    if tokenizer is not None and vocab_size is not None and tokenizer.vocab_size > vocab_size:
        raise ValueError(f"{source}: the tokenizer has {tokenizer.vocab_size} token ids but the "
                         f"model's vocab_size is {vocab_size}; they do not belong together")
    return tokenizer


def require_tokenizer(model):
    """`model.tokenizer`, or a FileNotFoundError saying how to supply one."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer
    raise FileNotFoundError(
        f"this model has no tokenizer: put {HF_VOCAB} + {HF_MERGES} (or {OPENAI_VOCAB} + "
        f"{OPENAI_MERGES}, or a {TOKENIZER_NAME}) in its folder, or, for GPT-2's vocabulary, "
        f"set TINYGPT_GPT2_VOCAB=/path/to/gpt2.tiktoken (tinygpt downloads nothing)")


def tokenizer_from_dict(d, where="tokenizer"):
    """A CharTokenizer or BPETokenizer from its `to_dict()`."""
    try:
        if isinstance(d, dict) and d.get("type") == "char":
            return CharTokenizer.from_dict(d)
        return BPETokenizer.from_dict(d)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def hf_tokenizer_files(tokenizer):
    """(vocab.json text, merges.txt text) for a byte-level BPE with GPT-2's pattern, or None.

    tinygpt (like tiktoken) merges the adjacent pair whose concatenation has the lowest rank;
    Hugging Face's files list merges `a b` in priority order. The merge that made token t is
    found as tiktoken's converters do: byte-pair-merge t's bytes using only tokens of lower
    rank, which must leave exactly two parts. None when the tokenizer is not a byte-level
    BPE with GPT-2's pattern or the parts do not come out as two.
    """
    d = tokenizer.to_dict() if hasattr(tokenizer, "to_dict") else None
    if not isinstance(d, dict) or d.get("format") != "tinygpt-bpe" \
            or d.get("pattern") != GPT2_PATTERN:
        return None
    tokens = [base64.b64decode(t) for t in d["tokens"]]          # in rank order
    ids = d.get("ids", range(len(tokens)))
    ranks = {t: r for r, t in enumerate(tokens)}
    to_text = bytes_to_unicode()

    def text(token):
        return "".join(to_text[b] for b in token)

    merges = []
    for rank, token in enumerate(tokens):
        if len(token) < 2:
            continue
        parts = _merge_below(ranks, token, rank)
        if len(parts) != 2:
            return None
        merges.append(f"{text(parts[0])} {text(parts[1])}")
    vocab = {text(t): i for t, i in zip(tokens, ids)}
    vocab.update(d.get("special_tokens", {}))
    return (json.dumps(vocab, ensure_ascii=False),
            "#version: 0.2\n" + "\n".join(merges) + ("\n" if merges else ""))


def _merge_below(ranks, token, max_rank):
    """Byte-pair-merge `token`'s bytes using only tokens of rank < max_rank."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, where = max_rank, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1], max_rank)
            if r < best:
                best, where = r, i
        if where < 0:
            break
        parts[where:where + 2] = [parts[where] + parts[where + 1]]
    return parts


# --------------------------------------------------------------------------- saving

def config_to_hf(config, layer_norm_epsilon=1e-5, eos_token_id=None):
    """The Hugging Face GPT2Config dict (config.json) of a GPTConfig; a ValueError for a
    config GPT-2's format cannot describe (banded attention layers, experts)."""
    if "banded" in config.layer_patterns():
        raise ValueError(
            f"a GPT with banded attention layers (attn_pattern {config.attn_pattern!r}, "
            f"attn_window {config.attn_window}) has no Hugging Face GPT-2 form: GPT-2's "
            "layers are all dense; save it as a tinygpt checkpoint instead")
    if config.n_expert:
        raise ValueError(
            f"a GPT with mixture-of-experts layers (n_expert {config.n_expert}) has no "
            "Hugging Face GPT-2 form: GPT-2 has one MLP a block; save it as a tinygpt "
            "checkpoint instead")
    activation = "gelu_new" if config.gelu_approximate == "tanh" else "gelu"
    hf = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size,
        "n_ctx": config.block_size, "n_embd": config.n_embd, "n_layer": config.n_layer,
        "n_head": config.n_head, "n_inner": None, "activation_function": activation,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout, "layer_norm_epsilon": layer_norm_epsilon,
        "initializer_range": 0.02, "summary_type": "cls_index", "summary_use_proj": True,
        "summary_activation": None, "summary_proj_to_labels": True,
        "summary_first_dropout": 0.1, "scale_attn_weights": True, "use_cache": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "torch_dtype": "float32",
    }
    # Written even when None: transformers' default, 50256, is outside a small vocabulary.
    hf["bos_token_id"] = hf["eos_token_id"] = eos_token_id
    return hf


def hf_state_dict(model):
    """The model's weights as Hugging Face GPT-2 names -> float32 NumPy arrays.

    Names carry the `transformer.` prefix, as `GPT2LMHeadModel.save_pretrained` writes them;
    the tied head is left out; the Conv1D weights are transposed to (in, out). A model built
    with bias=False gets zero biases, which compute exactly the same thing, since GPT-2's
    layout has no bias-free variant. Arrays already float32 on the CPU are not copied.
    """
    out = {}
    for key, param in model.state_dict().items():
        if key == "lm_head.weight":
            continue
        array = backend.to_device(param.data, "cpu").astype(np.float32, copy=False)
        out["transformer." + hf_name(key)] = np.ascontiguousarray(array.T) if is_conv1d(key) \
            else array
    if not model.config.bias:
        C = model.config.n_embd
        widths = {"ln_1.bias": C, "ln_2.bias": C, "attn.c_attn.bias": 3 * C,
                  "attn.c_proj.bias": C, "mlp.c_fc.bias": 4 * C, "mlp.c_proj.bias": C}
        for i in range(model.config.n_layer):
            for name, width in widths.items():
                out[f"transformer.h.{i}.{name}"] = np.zeros(width, np.float32)
        out["transformer.ln_f.bias"] = np.zeros(C, np.float32)
    return out


def save_pretrained(model, path, overwrite=False, tokenizer=None):
    """Write `model` as a Hugging Face GPT-2 folder that `load_pretrained` and
    `transformers.GPT2LMHeadModel.from_pretrained` both read.

    Files: config.json, model.safetensors (float32, Hugging Face names and layouts) and, when
    the model has a tokenizer (`tokenizer`, else `model.tokenizer`), tinygpt_tokenizer.json
    plus, for a byte-level BPE with GPT-2's pattern, vocab.json + merges.txt. The folder is
    created if needed. An existing file of these names raises FileExistsError naming it,
    before anything is written, unless overwrite=True (which also removes tokenizer files a
    previous save left that this model does not have). Each file is written to a temporary
    file and renamed into place.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"save_pretrained expects a GPT, got {type(model).__name__}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; save_pretrained writes a "
                              f"folder of files")
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} token ids but the model's "
                         f"vocab_size is {model.config.vocab_size}")

    # Everything is prepared (and every check made) before the first file is touched.
    texts = {}
    if tokenizer is not None:
        texts[TOKENIZER_NAME] = json.dumps(tokenizer.to_dict(), ensure_ascii=False)
        hf_files = hf_tokenizer_files(tokenizer)
        if hf_files is not None:
            texts[HF_VOCAB], texts[HF_MERGES] = hf_files
    # The end-of-text id: the tokenizer's, else GPT-2's when the vocabulary is GPT-2's.
    eos = getattr(tokenizer, "eot_token", None)
    if eos is None and tokenizer is None and model.config.vocab_size >= GPT2_VOCAB_RANGE[0]:
        eos = GPT2_VOCAB_RANGE[0] - 1
    texts[CONFIG_NAME] = json.dumps(
        config_to_hf(model.config, model.transformer.ln_f.eps, eos), indent=2) + "\n"
    stale = [name for name in (TOKENIZER_NAME, HF_VOCAB, HF_MERGES)
             if name not in texts and (path / name).exists()]
    if not overwrite:
        existing = [name for name in [WEIGHTS_NAME, *texts, *stale] if (path / name).exists()]
        if existing:
            raise FileExistsError(
                f"{path / existing[0]} already exists; pass overwrite=True to replace the "
                f"model saved in {path}")
    tensors = hf_state_dict(model)

    path.mkdir(parents=True, exist_ok=True)
    # "pt" is what transformers requires in the header to load the file.
    safetensors.save_file(tensors, path / WEIGHTS_NAME, metadata={"format": "pt"})
    del tensors
    # config.json last: a folder that has one has everything else.
    for name in sorted(texts, key=lambda n: n == CONFIG_NAME):
        atomic_write_text(path / name, texts[name])
    for name in stale:
        (path / name).unlink()


# --------------------------------------------------------------------------- nanoGPT

def load_nanogpt_ckpt(path, dtype="float32", device="cpu", dropout=0.0):
    """A GPT from nanoGPT's training checkpoint `ckpt.pt` (a file, or a folder holding one).

    Needs PyTorch to unpickle the file (imported here only; tinygpt does not need it
    otherwise). nanoGPT's keys are tinygpt's (a `torch.compile` prefix `_orig_mod.` is
    stripped, the attention-mask buffers skipped) and its MLP uses the exact GELU. The
    tokenizer is GPT-2's when the vocabulary has its size and it is found, else None.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no nanoGPT checkpoint at {path}")
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading nanoGPT's checkpoint {path} needs PyTorch (pip install "
                          f"torch); tinygpt reads Hugging Face folders (config.json + "
                          f"model.safetensors) without it") from None
    try:
        # weights_only: tensors and plain values only, so a checkpoint cannot run code;
        # mmap: the tensors stay in the file until copied into the model.
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:     # files in the pre-1.6 format cannot be memory-mapped
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a nanoGPT checkpoint: expected the keys 'model' and "
                         f"'model_args', found {found}")
    args = ckpt["model_args"]
    try:
        config = GPTConfig(block_size=args["block_size"], vocab_size=args["vocab_size"],
                           n_layer=args["n_layer"], n_head=args["n_head"], n_embd=args["n_embd"],
                           bias=args.get("bias", True), dropout=dropout,
                           gelu_approximate="none")    # nanoGPT's nn.GELU() is the exact one
    except KeyError as e:
        raise ValueError(f"{path}: model_args lacks {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    state = {}
    for key, tensor in ckpt["model"].items():
        key = key.removeprefix("_orig_mod.")           # added by torch.compile
        if key.endswith(BUFFER_SUFFIXES):
            continue
        if tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()                    # bfloat16/float16 -> float32
        state[key] = tensor.detach().numpy()
    model = _empty_model(config, dtype)
    try:
        model.load_state_dict(state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    del ckpt, state
    model.tokenizer = find_tokenizer(path.parent, config.vocab_size)
    model.eval()
    return model.to(device) if device != "cpu" else model
