"""A GPT's parameters from its config alone (floor 5): their names and shapes, their
number (arithmetic: no per-layer table), whether they fit in memory, and an
uninitialised model to fill from a file. A file's tensors (or a config asking for a
million layers) are checked against these before any model is built.
Imports: numpy, memory, nn, model.config, model.gpt.
"""

import numpy as np

from .. import memory
from ..nn import init
from .gpt import GPT


def count_params(config, non_embedding=False):
    """The number of parameters of GPT(config), computed arithmetically from the sizes
    alone, in time independent of n_layer and n_expert (the tied head counts once); with
    non_embedding=True, without the position embedding, as nanoGPT's `get_num_params`.

    >>> count_params(GPTConfig.from_preset("gpt2"))
    124439808
    """
    C, V, T, b = config.n_embd, config.vocab_size, config.block_size, int(config.bias)

    def linear(rows, columns):
        return rows * columns + b * rows

    norm = C + b * C
    attention = linear(3 * C, C) + linear(C, C)
    moe_blocks = config.n_layer // config.moe_every if config.n_expert else 0
    hidden = config.expert_hidden_size()
    experts = config.n_expert * C + config.n_expert * (linear(hidden, C) + linear(C, hidden))
    dense = linear(4 * C, C) + linear(C, 4 * C)
    blocks = config.n_layer * (2 * norm + attention) + moe_blocks * experts \
        + (config.n_layer - moe_blocks) * dense
    positions = T * C if config.position == "learned" else 0   # rotary: no table
    return V * C + (0 if non_embedding else positions) + blocks + norm


def check_model_fits(config, dtype="float32", what=None):
    """Raise ValueError when GPT(config)'s parameters, in `dtype`, need more memory than
    this machine has (`tinygpt.memory.check_fits`), from the sizes alone: called before
    a model is allocated, so a flag or file asking for a huge model is refused at once."""
    sizes = (f"n_layer={config.n_layer}, n_embd={config.n_embd}, block_size="
             f"{config.block_size}, vocab_size={config.vocab_size}"
             + (f", n_expert={config.n_expert}" if config.n_expert else ""))
    memory.check_fits(count_params(config) * np.dtype(dtype).itemsize,
                      what or f"a GPT of {sizes}")


def parameter_shapes(config):
    """{state_dict key: shape} of GPT(config), in `state_dict()` order, computed from the
    sizes alone: a file's tensors can be checked against a config before any model is
    built. The tied head `lm_head.weight` is listed too (it is `transformer.wte.weight`).

    >>> parameter_shapes(GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=2,
    ...                            n_embd=4))["transformer.h.0.attn.c_attn.weight"]
    (12, 4)
    """
    C, V, T = config.n_embd, config.vocab_size, config.block_size
    shapes = {"transformer.wte.weight": (V, C)}
    if config.position == "learned":          # rotary positions have no table
        shapes["transformer.wpe.weight"] = (T, C)

    def linear(name, rows, columns):
        shapes[name + ".weight"] = (rows, columns)
        if config.bias:
            shapes[name + ".bias"] = (rows,)

    def norm(name):
        shapes[name + ".weight"] = (C,)
        if config.bias:
            shapes[name + ".bias"] = (C,)

    for i, experts in enumerate(config.moe_layers()):
        block = f"transformer.h.{i}."
        norm(block + "ln_1")
        linear(block + "attn.c_attn", 3 * C, C)
        linear(block + "attn.c_proj", C, C)
        norm(block + "ln_2")
        if experts:                         # tinygpt/model/moe.py: a router, then each expert
            shapes[block + "mlp.router.weight"] = (config.n_expert, C)
            hidden = config.expert_hidden_size()
            mlps = [f"{block}mlp.experts.{e}." for e in range(config.n_expert)]
        else:
            hidden, mlps = 4 * C, [block + "mlp."]
        for mlp in mlps:
            linear(mlp + "c_fc", hidden, C)
            linear(mlp + "c_proj", C, hidden)
    norm("transformer.ln_f")
    shapes["lm_head.weight"] = (V, C)
    return shapes


def empty_gpt(config, dtype="float32"):
    """GPT(config) on the CPU with uninitialised float parameters of `dtype`, to be filled
    from a file (`nn.init.skip_init`: no random numbers drawn, no memory touched)."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating-point type, got {dtype}")
    check_model_fits(config, dtype)         # in the dtype the parameters will have
    model = init.skip_init(GPT, config)
    for param in model.parameters():      # the tied wte/lm_head Parameter is listed once
        if param.dtype != dtype:
            param.data = np.empty(param.shape, dtype=dtype)
    return model
