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
initialisation (`empty_gpt`: every parameter is about to be overwritten), and each tensor
is read from the file straight into its parameter's array, so the peak is the model plus
one tensor's temporary (for transposed, float16 or bfloat16 tensors).

    >>> model = load_pretrained("gpt2")                  # doctest: +SKIP (a downloaded folder)
    >>> save_pretrained(model, "my-gpt2")               # doctest: +SKIP

Untrusted sizes: a config.json is checked against the weight file before anything is
built. Its parameter count must fit in the file (two bytes a parameter at least) and in
this machine's memory, and every tensor's name, shape and dtype must be the config's:
`n_layer: 1000000` beside a 500 MB file is refused in microseconds, not after minutes
of allocating.

Imports: numpy, the standard library, data (tokenizers), nn, validate, model (GPT, heads,
safetensors); PyTorch only inside `load_nanogpt_ckpt`.
"""

import json
import pickle
from pathlib import Path

import numpy as np

from .. import validate
from ..autograd import backend
from ..data.tokenizers import (GPT2_VOCAB_RANGE, HF_MERGES, HF_VOCAB, TOKENIZER_NAME,
                               find_tokenizer, hf_tokenizer_files)
from ..files import read_json
from ..memory import check_fits, format_bytes
from .. import nn
from . import safetensors
from .config import GPTConfig
from ..nn.lora import merged_state
from .gpt import GPT
from .heads import _TaskHeadGPT as HEADS_BASE
from .sizes import count_params, empty_gpt, parameter_shapes

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# Weights stored (in, out) by GPT-2's Conv1D: transposed on load and on save.
CONV1D_SUFFIXES = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight",
                   ".mlp.c_proj.weight")
# Constant buffers (the causal mask) that old files carry; they are not parameters.
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")

# config.json activation_function -> GPTConfig.gelu_approximate. "gelu_new", "gelu_fast" and
# "gelu_pytorch_tanh" are the same tanh formula written three ways; "gelu" is the exact erf.
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh",
               "gelu": "none", "gelu_python": "none"}


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
    `tinygpt.data.require_tokenizer`). The model is returned in eval mode.
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
    hf_config = read_json(config_path)
    config, eps = config_from_hf(hf_config, dropout=dropout, where=config_path)
    tokenizer = find_tokenizer(path, config.vocab_size)   # fails early on a broken folder

    with open(weights_path, "rb") as f:
        entries, _, data_start = safetensors.read_index(f, weights_path)
        _check_size(config, dtype, config_path, weights_path,
                    f.seek(0, 2) - data_start)
        plan, head = _plan_hf_load(entries, weights_path, config)
        model = empty_gpt(config, dtype)
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = eps
        _read_hf_weights(f, weights_path, data_start, model, entries, plan, head)
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
    validate.real(f"{where}: layer_norm_epsilon", eps, minimum=0, low_open=True)
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


def _check_size(config, dtype, config_path, weights_path, data_bytes):
    """Refuse a config whose parameters the weight file cannot hold, or that this machine
    cannot, from the sizes alone (before any name is listed or any array allocated)."""
    n_params = count_params(config)
    sizes = (f"n_layer={config.n_layer}, n_head={config.n_head}, n_embd={config.n_embd}, "
             f"n_positions={config.block_size}, vocab_size={config.vocab_size}")
    if 2 * n_params > data_bytes:      # F16 and BF16, the smallest float dtypes, take 2 bytes
        raise ValueError(f"{config_path} ({sizes}) describes {n_params:,} parameters, but "
                         f"{weights_path} holds {format_bytes(data_bytes)} of tensor data, too "
                         f"little for them even at 2 bytes each: the config does not belong "
                         f"to these weights")
    check_fits(n_params * np.dtype(dtype).itemsize, f"the model of {config_path} ({sizes})")


def _plan_hf_load(entries, path, config):
    """Match the file's tensors to the parameters of GPT(config), from the shapes alone.

    Returns [(file name, state_dict key, transpose)] and the file name of a stored output
    head (or None). Every problem (missing, unexpected or duplicated tensors, shape
    mismatches, non-float dtypes) is collected and raised at once, before any data is read
    and before the model is built.
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
    shapes = parameter_shapes(config)
    shapes.pop("lm_head.weight")                  # tied to transformer.wte.weight
    for key, shape in shapes.items():
        name = by_hf_name.pop(hf_name(key), None)
        if name is None:
            missing.append(hf_name(key))
            continue
        transpose = is_conv1d(key)
        expected = tuple(reversed(shape)) if transpose else shape
        if entries[name].shape != expected:
            layout = " (Hugging Face's Conv1D layout (in, out))" if transpose else ""
            problems.append(f"tensor {name!r} has shape {entries[name].shape}, but the model "
                            f"built from config.json expects {expected}{layout}")
        elif entries[name].dtype not in ("F32", "F16", "BF16", "F64"):
            problems.append(f"tensor {name!r} has dtype {entries[name].dtype}; expected a float "
                            f"dtype (F32, F16, BF16 or F64)")
        else:
            plan.append((name, key, transpose))
    unexpected = sorted(by_hf_name.values())
    if head is not None:
        V, C = config.vocab_size, config.n_embd
        if entries[head].shape != (V, C) or entries[head].dtype not in ("F32", "F16", "BF16",
                                                                         "F64"):
            problems.append(f"tensor {head!r} has shape {entries[head].shape} and dtype "
                            f"{entries[head].dtype}, but the model expects a float {(V, C)}")
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


def _read_hf_weights(f, path, data_start, model, entries, plan, head):
    """Read the planned tensors from the open model.safetensors `f` into the model's
    parameters, in place, one at a time (`safetensors.load_file` would read the whole data
    section into one buffer: a second copy of the model)."""
    # state_dict's tensors share their parameters' arrays: filling them fills the model.
    params = model.state_dict()
    # In file order, so the reads go forward through the file.
    plan = sorted(plan, key=lambda item: entries[item[0]].begin)
    for name, key, transpose in plan:
        param = params[key]
        # A transposed tensor goes through a temporary (square ones too: their shapes
        # match, but their layouts do not).
        target = None if transpose else param.data
        values = safetensors.read_tensor(f, path, data_start, name, entries[name], target)
        if values is not None:
            param.data[...] = values.T if transpose else values
    if head is not None:
        wte = model.transformer.wte.weight.data
        stored = safetensors.read_tensor(f, path, data_start, head, entries[head])
        if not np.array_equal(stored.astype(wte.dtype, copy=False), wte):
            raise ValueError(f"{path}: {head!r} differs from the token embedding; tinygpt's "
                             f"GPT ties the output head to wte and cannot load an untied one")


# --------------------------------------------------------------------------- saving

def config_to_hf(config, layer_norm_epsilon=1e-5, eos_token_id=None):
    """The Hugging Face GPT2Config dict (config.json) of a GPTConfig; a ValueError for a
    config GPT-2's format cannot describe (banded attention layers, experts, rotary
    positions)."""
    if config.position != "learned":
        raise ValueError(
            f"a GPT with {config.position} positions (position {config.position!r}) has no "
            "Hugging Face GPT-2 form: GPT-2 adds a learned position embedding (wpe) and has "
            "no rotary attention; save it as a tinygpt checkpoint instead")
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
    the tied head is left out; the Conv1D weights are transposed to (in, out). LoRA adapters
    are merged into copies of their layers' weights (W + alpha / r * B A; the model keeps
    its adapters), since GPT-2's layout has no place for them. A model built
    with bias=False gets zero biases, which compute exactly the same thing, since GPT-2's
    layout has no bias-free variant. Arrays already float32 on the CPU are not copied.
    """
    out = {}
    for key, data in merged_state(model).items():
        if key == "lm_head.weight":
            continue
        if ".bottleneck." in key:
            raise ValueError(f"{key} is a bottleneck adapter's, and GPT-2's layout has no "
                             f"adapters: save the model as a tinygpt checkpoint, or the "
                             f"adapters alone with save_bottleneck")
        array = backend.to_device(data, "cpu").astype(np.float32, copy=False)
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
    created if needed. A LoRA-adapted model is saved with its adapters merged (the model
    itself keeps them); a task-head model (tinygpt.model.heads) is refused. An existing file of these names raises FileExistsError naming it,
    before anything is written, unless overwrite=True (which also removes tokenizer files a
    previous save left that this model does not have). Each file is written to a temporary
    file and renamed into place, and the folder is locked meanwhile (`FolderLock`): a
    second save into it, from this process or another, fails at once.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"save_pretrained expects a GPT, got {type(model).__name__}")
    if isinstance(model, HEADS_BASE):
        raise TypeError(
            f"save_pretrained writes a GPT-2 language model (what GPT2LMHeadModel loads); a "
            f"{type(model).__name__} also has a task head (score) that GPT-2's folder layout "
            f"has no place for: keep it as the tinygpt checkpoint fine-tuning writes")
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} token ids but the model's "
                         f"vocab_size is {model.config.vocab_size}")

    # Everything is prepared (and every check made) before the first file is touched.
    texts = tokenizer_texts(tokenizer)
    # The end-of-text id: the tokenizer's, else GPT-2's when the vocabulary is GPT-2's.
    eos = getattr(tokenizer, "eot_token", None)
    if eos is None and tokenizer is None and model.config.vocab_size >= GPT2_VOCAB_RANGE[0]:
        eos = GPT2_VOCAB_RANGE[0] - 1
    texts[CONFIG_NAME] = json.dumps(
        config_to_hf(model.config, model.transformer.ln_f.eps, eos), indent=2) + "\n"
    write_hf_folder(path, texts, hf_state_dict(model), overwrite)


def tokenizer_texts(tokenizer):
    """{file name: text} of a tokenizer's files in a Hugging Face folder: tinygpt's own,
    plus vocab.json and merges.txt for a byte-level BPE with GPT-2's pattern; {} for None."""
    texts = {}
    if tokenizer is not None:
        texts[TOKENIZER_NAME] = json.dumps(tokenizer.to_dict(), ensure_ascii=False)
        hf_files = hf_tokenizer_files(tokenizer)
        if hf_files is not None:
            texts[HF_VOCAB], texts[HF_MERGES] = hf_files
    return texts


def write_hf_folder(path, texts, tensors, overwrite):
    """Write model.safetensors from `tensors` and each of `texts` ({file name: text},
    config.json among them, last) into the folder `path` (`safetensors.save_folder`); a
    tokenizer file of an earlier save that this one has not is refused, or removed with
    overwrite."""
    # "pt" is what transformers requires in the header to load the file.
    safetensors.save_folder(path, tensors, WEIGHTS_NAME, texts, CONFIG_NAME, overwrite,
                            "the model", metadata={"format": "pt"},
                            optional=(TOKENIZER_NAME, HF_VOCAB, HF_MERGES))


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
    # From the sizes, before a model of model_args' size is built.
    stored = sum(v.size for k, v in state.items() if k != "lm_head.weight")
    if count_params(config) > stored:
        raise ValueError(f"{path}: model_args describe {count_params(config):,} parameters but "
                         f"the tensors hold {stored:,} values: missing keys, or model_args of "
                         f"another model")
    model = empty_gpt(config, dtype)
    try:
        model.load_state_dict(state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    del ckpt, state
    model.tokenizer = find_tokenizer(path.parent, config.vocab_size)
    model.eval()
    return model.to(device) if device != "cpu" else model
