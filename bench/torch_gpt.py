"""nanoGPT's GPT in PyTorch eager, for side-by-side benchmarks and tests (PyTorch is
optional: `torch_gpt_class()` imports it on first use).

The same module and parameter names as tinygpt's `GPT` (so state dicts load both ways),
pre-LayerNorm blocks, a fused c_attn, causal `scaled_dot_product_attention`, the config's
GELU, a 4x MLP, the lm_head tied to the token embedding, GPT-2's initialisation.
`forward(idx, targets=None)` returns (logits, loss) as tinygpt's does. Never imported by
the package.
"""

import functools
import math


@functools.cache
def torch_gpt_class():
    """nanoGPT's model in PyTorch eager (built on first use: torch is optional). Same module
    and parameter names as tinygpt's GPT, pre-LayerNorm blocks, fused c_attn, causal
    `scaled_dot_product_attention`, the config's GELU, 4x MLP, tied lm_head, GPT-2's init.
    Modules are created and initialised in nanoGPT's order, so `torch.manual_seed(s)` gives
    nanoGPT's initial weights."""
    import torch
    from torch import nn
    from torch.nn import functional as TF

    class CausalSelfAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            C = config.n_embd
            self.c_attn = nn.Linear(C, 3 * C, bias=config.bias)
            self.c_proj = nn.Linear(C, C, bias=config.bias)
            self.resid_dropout = nn.Dropout(config.dropout)
            self.n_head, self.dropout = config.n_head, config.dropout

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                       for t in (q, k, v))                                  # (B, H, T, hs)
            y = TF.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.c_proj(y))

    class MLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
            self.gelu = nn.GELU(approximate=config.gelu_approximate)
            self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
            self.dropout = nn.Dropout(config.dropout)

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
            self.attn = CausalSelfAttention(config)
            self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
            self.mlp = MLP(config)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class TorchGPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            C = config.n_embd
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(config.vocab_size, C), wpe=nn.Embedding(config.block_size, C),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(C, bias=config.bias)))
            self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight
            self.apply(self._init_weights)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

        @staticmethod
        def _init_weights(module):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

        def forward(self, idx, targets=None):
            T = idx.size(1)
            pos = torch.arange(T, device=idx.device)
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
            for block in self.transformer.h:
                x = block(x)
            logits = self.lm_head(self.transformer.ln_f(x))
            if targets is None:
                return logits, None
            loss = TF.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                    ignore_index=-1)
            return logits, loss

    return TorchGPT
