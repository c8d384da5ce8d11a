"""`GPTConfig`: the sizes of a GPT, with nanoGPT's field names and named presets (floor 5).

Imports: the standard library and tinygpt.validate.
"""

from dataclasses import asdict, dataclass, fields

from .. import validate

# name -> the fields it sets. minGPT's small models keep the default vocabulary and block
# size (set them for your data); GPT-2's are the published models (OpenAI's vocabulary of
# 50,257 tokens, 1,024 positions).
PRESETS = {
    "gpt-nano": dict(n_layer=3, n_head=3, n_embd=48),
    "gpt-micro": dict(n_layer=4, n_head=4, n_embd=128),
    "gpt-mini": dict(n_layer=6, n_head=6, n_embd=192),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, vocab_size=50257, block_size=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, vocab_size=50257, block_size=1024),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, vocab_size=50257, block_size=1024),
}

GELU_APPROXIMATIONS = ("none", "tanh")
ATTENTION_PATTERNS = ("dense", "banded", "alternate")
POSITIONS = ("learned", "rotary")


@dataclass
class GPTConfig:
    """The shape of a GPT. Defaults are nanoGPT's (GPT-2 small with the vocabulary padded
    to 50,304, a multiple of 64), plus the GELU variant (GPT-2 used the tanh form).

    >>> GPTConfig.from_preset("gpt-nano", vocab_size=65, block_size=64).n_embd
    48
    """

    block_size: int = 1024      # longest sequence (number of learned positions)
    vocab_size: int = 50304     # number of token ids
    n_layer: int = 12           # transformer blocks
    n_head: int = 12            # attention heads per block; n_embd % n_head == 0
    n_embd: int = 768           # channels C of the residual stream
    dropout: float = 0.0        # on embeddings, attention weights and residual branches
    bias: bool = True           # biases in Linear and LayerNorm layers (GPT-2 has them)
    gelu_approximate: str = "tanh"  # "tanh" (GPT-2's) or "none" (exact, erf)
    # GPT-3's locally banded layers: in a banded layer each position attends to the
    # attn_window most recent positions, itself included; a dense layer to every earlier one.
    # attn_pattern: "dense" (every layer), "banded" (every layer), "alternate" (dense,
    # banded, dense, ... from layer 0, as GPT-3), or a list of "dense" / "banded" per layer.
    attn_window: int = None
    attn_pattern: object = "dense"
    # A mixture of experts (tinygpt/model/moe.py) in place of the MLP of every moe_every-th
    # block (1: every block; 2: blocks 1, 3, 5, ...): n_expert experts (0: none), each token
    # routed to expert_top_k of them. Each expert's hidden width is expert_hidden (default
    # 4 * n_embd / expert_top_k: a token's active parameters equal the dense MLP's). In
    # training an expert takes at most expert_capacity * tokens * top_k / n_expert
    # assignments of a batch (0: no limit; in eval mode nothing is dropped, and padding is
    # never routed); aux_loss_coef weighs the load-balancing loss.
    n_expert: int = 0
    expert_top_k: int = 2
    expert_hidden: int = None
    expert_capacity: float = 1.25
    moe_every: int = 1
    aux_loss_coef: float = 0.01
    # Positions: "learned" (GPT-2's table wpe of block_size rows, added to the token
    # embeddings) or "rotary" (RoPE: no wpe; each head's q and k are rotated by angles
    # proportional to their position, GPT-NeoX's rotate-half pairing with frequencies
    # rope_base^(-2i / head_size); head_size must be even). rope_scale s >= 1 uses position
    # p as p / s (position interpolation: a model trained on T positions run on s * T).
    position: str = "learned"
    rope_base: float = 10000.0
    rope_scale: float = 1.0

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = validate.positive_integer(f"GPTConfig: {name}", getattr(self, name))
            setattr(self, name, value)          # NumPy ints become plain ints (JSON-safe)
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"each head gets n_embd / n_head channels")
        self.dropout = validate.probability("GPTConfig: dropout", self.dropout, include_one=False)
        validate.boolean("GPTConfig: bias", self.bias)
        validate.choice("GPTConfig: gelu_approximate", self.gelu_approximate, GELU_APPROXIMATIONS)
        self._check_attention()
        self._check_experts()
        self._check_positions()

    def _check_positions(self):
        validate.choice("GPTConfig: position", self.position, POSITIONS)
        self.rope_base = validate.real("GPTConfig: rope_base", self.rope_base, minimum=1.0,
                                       low_open=True)
        self.rope_scale = validate.real("GPTConfig: rope_scale", self.rope_scale, minimum=1.0)
        if self.position == "rotary" and self.head_size % 2:
            raise ValueError(
                f"GPTConfig: position 'rotary' needs an even head size (n_embd / n_head), got "
                f"{self.n_embd} / {self.n_head} = {self.head_size}: RoPE rotates channel "
                "pairs (i, i + head_size / 2)")

    def _check_experts(self):
        for name in ("n_expert", "expert_top_k", "moe_every"):
            value = getattr(self, name)
            low = 0 if name == "n_expert" else 1
            setattr(self, name, validate.integer(f"GPTConfig: {name}", value, minimum=low))
        if self.n_expert and self.expert_top_k > self.n_expert:
            raise ValueError(f"GPTConfig: expert_top_k ({self.expert_top_k}) must not exceed "
                             f"n_expert ({self.n_expert}): each token goes to distinct experts")
        validate.positive_integer("GPTConfig: expert_hidden", self.expert_hidden, none_ok=True)
        for name in ("expert_capacity", "aux_loss_coef"):
            setattr(self, name, validate.real(f"GPTConfig: {name}", getattr(self, name), minimum=0))

    def expert_hidden_size(self):
        """Each expert's hidden width: expert_hidden, else 4 * n_embd / expert_top_k."""
        return self.expert_hidden or max(1, 4 * self.n_embd // self.expert_top_k)

    def moe_layers(self):
        """Whether each block's MLP is a mixture of experts."""
        return [bool(self.n_expert) and (i + 1) % self.moe_every == 0
                for i in range(self.n_layer)]

    def _check_attention(self):
        pattern = self.attn_pattern
        if isinstance(pattern, (list, tuple)):
            if len(pattern) != self.n_layer or any(p not in ("dense", "banded") for p in pattern):
                raise ValueError(
                    f"GPTConfig: attn_pattern as a list needs one 'dense' or 'banded' per "
                    f"layer ({self.n_layer}), got {list(pattern)!r}")
            self.attn_pattern = list(pattern)
        elif pattern not in ATTENTION_PATTERNS:
            raise ValueError(f"GPTConfig: attn_pattern must be one of {ATTENTION_PATTERNS} or "
                             f"a list of 'dense' / 'banded' per layer, got {pattern!r}")
        window = self.attn_window
        validate.positive_integer("GPTConfig: attn_window", window, none_ok=True)
        banded = "banded" in self.layer_patterns()
        if banded and window is None:
            raise ValueError(f"GPTConfig: attn_pattern {pattern!r} has banded layers; give "
                             "their width as attn_window")
        if window is not None and not banded:
            raise ValueError(f"GPTConfig: attn_window={window} needs banded layers: set "
                             "attn_pattern to 'banded', 'alternate' or a list")
        self.attn_window = None if window is None else int(window)

    def layer_patterns(self):
        """'dense' or 'banded' for each layer."""
        pattern = self.attn_pattern
        if isinstance(pattern, list):
            return list(pattern)
        if pattern == "alternate":
            return ["dense" if i % 2 == 0 else "banded" for i in range(self.n_layer)]
        return [pattern] * self.n_layer

    def layer_windows(self):
        """Each layer's attention window: attn_window for a banded layer, None for a dense one."""
        return [self.attn_window if p == "banded" else None for p in self.layer_patterns()]

    @property
    def head_size(self):
        return self.n_embd // self.n_head

    @classmethod
    def from_preset(cls, name, **overrides):
        """A named configuration (see `PRESETS`), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown GPT preset {name!r}; presets: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def to_dict(self):
        """The fields as a plain dict (JSON-serialisable; saved in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """The inverse of `to_dict`; an unknown field is an error naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"GPTConfig: unknown field(s) {', '.join(unknown)}; the fields are "
                f"{', '.join(sorted(known))}")
        return cls(**d)

