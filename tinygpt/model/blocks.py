"""The transformer block of the GPT: masked multi-head self-attention and the MLP, each
after a layer norm and added back to the residual stream (floor 5).

    x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))        (GPT-2's pre-norm block)

nanoGPT's module and parameter names: `attn.c_attn` (C -> 3C: q, k, v stacked), `attn.c_proj`,
`mlp.c_fc` (C -> 4C), `mlp.c_proj`, `ln_1`, `ln_2`. Shape letters: B batch, T sequence
length, C = n_embd channels, H = n_head heads, hs = C / H head size. The GPT around the
blocks is tinygpt/model/gpt.py. Imports: autograd, nn, model.moe.
"""

from .. import nn
from ..autograd.factories import cat
from ..nn import functional as F
from .moe import MoE


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t sees positions <= t only (in a banded
    layer, only the `window` most recent of them).

    One Linear computes q, k and v for all heads at once (c_attn, C -> 3C, stacked in that
    order), the fused attention op mixes the values, and c_proj maps the heads back to C.
    With `rotary` = (positions, base, scale), q and k of each head are first rotated by
    their positions (`F.rotary`: positions (T,) or (B, T)).
    """

    def __init__(self, config, window=None):
        super().__init__()
        C = config.n_embd
        self.c_attn = nn.Linear(C, 3 * C, bias=config.bias)
        self.c_proj = nn.Linear(C, C, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)   # on the attention weights
        self.resid_dropout = nn.Dropout(config.dropout)  # on the output
        self.n_head = config.n_head
        self.window = window

    def forward(self, x, kv_cache=None, key_mask=None, rotary=None):
        B, T, C = x.shape
        H = self.n_head
        qkv = self.c_attn(x)                               # (B, T, 3C): q, k, v side by side
        if rotary is not None and kv_cache is None:
            # q and k of every head as one (B, 2H, T, hs) tensor, rotated in one op, then
            # put back beside v, so that the fused attention below runs as without RoPE.
            qk = qkv[:, :, :2 * C].reshape(B, T, 2 * H, C // H).transpose(1, 2)
            qk = F.rotary(qk, *rotary).transpose(1, 2).reshape(B, T, 2 * C)
            qkv = cat([qk, qkv[:, :, 2 * C:]], dim=2)
        if kv_cache is None:
            # Training and plain forward: one fused op from qkv to (B, T, C), the same as
            # the split + scaled_dot_product_attention below, without the copies.
            dropout_p = self.attn_dropout.p if self.training else 0.0
            y = F.self_attention(qkv, H, dropout_p, key_mask=key_mask, window=self.window)
            return self.resid_dropout(self.c_proj(y))
        # Generation: keep this step's keys and values, attend over the cached ones.
        # (B, T, 3C) -> (B, T, 3, H, hs) -> (3, B, H, T, hs): q, k, v are views, no copies.
        qkv = qkv.view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                  # each (B, H, T, hs)
        if rotary is not None:
            # Rotated at their absolute positions: the cache keeps rotated keys.
            q, k = F.rotary(q, *rotary), F.rotary(k, *rotary)
        k, v, mask = kv_cache.append(k, v, key_mask)      # (B, H, S, hs), mask (B, 1, T, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, C)             # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C (or `hidden`) -> GELU -> C."""

    def __init__(self, config, hidden=None):
        super().__init__()
        C = config.n_embd
        hidden = hidden or 4 * C
        self.c_fc = nn.Linear(C, hidden, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj = nn.Linear(hidden, C, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: attention, then the MLP (or a mixture of expert
    MLPs), each added to the residual stream x (B, T, C)."""

    def __init__(self, config, window=None, experts=False):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, window)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MoE(config, MLP) if experts else MLP(config)

    def forward(self, x, kv_cache=None, key_mask=None, rotary=None):
        x = x + self.attn(self.ln_1(x), kv_cache, key_mask, rotary)
        if isinstance(self.mlp, MoE):                   # padding is routed to no expert
            return x + self.mlp(self.ln_2(x), key_mask)
        return x + self.mlp(self.ln_2(x))
