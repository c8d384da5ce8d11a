"""The GPT: GPT-2's architecture with nanoGPT's module and parameter names (floor 5).

    idx (B, T) -> token embedding + position embedding -> dropout
               -> n_layer x Block: x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
               -> ln_f -> lm_head (tied to the token embedding) -> logits (B, T, V)

Shape letters: B batch, T sequence length, C = n_embd channels, H = n_head heads,
hs = C / H head size, V vocabulary, S cached key positions. Generation keeps a KV cache:
each new token runs the network on its one position and attends over the keys and values
kept from the earlier ones. Imports: autograd, nn, model.config.
"""

import math
import numbers

import numpy as np

from .. import nn
from ..autograd import backend
from ..autograd.function import no_grad
from ..autograd.tensor import Tensor, cat
from ..nn import functional as F
from ..nn import init
from .config import GPTConfig


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t sees positions <= t only.

    One Linear computes q, k and v for all heads at once (c_attn, C -> 3C, stacked in that
    order), the fused attention op mixes the values, and c_proj maps the heads back to C.
    """

    def __init__(self, config):
        super().__init__()
        C = config.n_embd
        self.c_attn = nn.Linear(C, 3 * C, bias=config.bias)
        self.c_proj = nn.Linear(C, C, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)   # on the attention weights
        self.resid_dropout = nn.Dropout(config.dropout)  # on the output
        self.n_head = config.n_head

    def forward(self, x, kv_cache=None):
        B, T, C = x.shape
        H = self.n_head
        qkv = self.c_attn(x)                               # (B, T, 3C): q, k, v side by side
        if kv_cache is None:
            # Training and plain forward: one fused op from qkv to (B, T, C), the same as
            # the split + scaled_dot_product_attention(is_causal=True) below, without copies.
            dropout_p = self.attn_dropout.p if self.training else 0.0
            return self.resid_dropout(self.c_proj(F.self_attention(qkv, H, dropout_p)))
        # Generation: keep this step's keys and values, attend over every cached one.
        # (B, T, 3C) -> (B, T, 3, H, hs) -> (3, B, H, T, hs): q, k, v are views, no copies.
        qkv = qkv.view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                  # each (B, H, T, hs)
        k, v = kv_cache.append(k, v)                       # (B, H, S, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=kv_cache.causal_mask(T))
        y = y.transpose(1, 2).reshape(B, T, C)             # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU -> C."""

    def __init__(self, config):
        super().__init__()
        C = config.n_embd
        self.c_fc = nn.Linear(C, 4 * C, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj = nn.Linear(4 * C, C, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: attention, then the MLP, each added to the
    residual stream x (B, T, C)."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None):
        x = x + self.attn(self.ln_1(x), kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class KVCache:
    """The keys and values one attention layer has computed, for positions 0..length-1.

    Preallocated at the block size, so appending one position is a copy into place.
    """

    __slots__ = ("k", "v", "length")

    def __init__(self, batch_size, n_head, capacity, head_size, dtype, device):
        xp = backend.get_array_module(device)
        self.k = xp.empty((batch_size, n_head, capacity, head_size), dtype=dtype)
        self.v = xp.empty_like(self.k)
        self.length = 0

    def append(self, k, v):
        """Store k, v (B, H, T, hs) at the next T positions; return all keys and values
        so far, (B, H, length, hs) each."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(
                f"KV cache overflow: {end} positions, but the cache holds {self.k.shape[2]}")
        self.k[:, :, start:end] = k.data
        self.v[:, :, start:end] = v.data
        self.length = end
        return Tensor(self.k[:, :, :end]), Tensor(self.v[:, :, :end])

    def causal_mask(self, t):
        """Which keys the last t queries may see: query i sits at position length - t + i
        and sees keys j <= that (boolean (t, length), True = may attend). None when t == 1:
        the newest position sees everything."""
        if t == 1:
            return None
        xp = backend.array_module(self.k)
        return Tensor(xp.tril(xp.ones((t, self.length), dtype=bool), k=self.length - t))


def count_params(config, non_embedding=False):
    """The number of parameters of GPT(config), computed from the sizes alone (the tied
    head counts once); with non_embedding=True, without the position embedding, as
    nanoGPT's `get_num_params`.

    >>> count_params(GPTConfig.from_preset("gpt2"))
    124439808
    """
    C, V, T, L = config.n_embd, config.vocab_size, config.block_size, config.n_layer
    b = 1 if config.bias else 0
    layer_norm = C + b * C
    attention = (3 * C * C + b * 3 * C) + (C * C + b * C)      # c_attn, c_proj
    mlp = (4 * C * C + b * 4 * C) + (4 * C * C + b * C)        # c_fc, c_proj
    block = 2 * layer_norm + attention + mlp
    total = V * C + T * C + L * block + layer_norm             # wte, wpe, blocks, ln_f
    return total - T * C if non_embedding else total


class GPT(nn.Module):
    """GPT-2 as nanoGPT writes it; `model(idx, targets) -> (logits, loss)`.

    >>> model = GPT(GPTConfig.from_preset("gpt-nano", vocab_size=65, block_size=32))
    >>> logits, loss = model(tg.randint(0, 65, (2, 16)), tg.randint(0, 65, (2, 16)))
    >>> logits.shape, loss.shape
    ((2, 16, 65), ())
    """

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT(config): expected a GPTConfig, got {type(config).__name__}")
        self.config = config
        C = config.n_embd
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, C),
            wpe=nn.Embedding(config.block_size, C),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(C, bias=config.bias),
        ))
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        # Weight tying: the output head scores token v by its embedding row. One Parameter
        # in two places, so both uses add into one gradient (and V * C fewer parameters).
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init: each block adds two residual branches (attn, mlp) ending in
        # c_proj; shrinking them by 1/sqrt(2 * n_layer) keeps the stream's variance flat.
        for name, param in self.named_parameters():    # also labels each Parameter's .name
            if name.endswith("c_proj.weight"):
                init.normal_(param, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, 0.0, 0.02)

    # --- sizes ----------------------------------------------------------------------------
    def get_num_params(self, non_embedding=True):
        """Parameters counted once each; by default without the position embedding (nanoGPT:
        the token embedding is the head's weight, so it stays)."""
        n = self.num_parameters()
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    @property
    def device(self):
        return self.transformer.wte.weight.device

    @property
    def dtype(self):
        return self.transformer.wte.weight.dtype

    def crop_block_size(self, block_size):
        """Shrink the context to `block_size` positions (keeps the first rows of wpe), e.g.
        to fine-tune a 1,024-position GPT-2 on short sequences."""
        if isinstance(block_size, bool) or not isinstance(block_size, int) \
                or not 0 < block_size <= self.config.block_size:
            raise ValueError(
                f"crop_block_size: block_size must be an int in [1, {self.config.block_size}], "
                f"got {block_size!r}")
        self.config.block_size = block_size
        wpe = self.transformer.wpe
        wpe.weight.data = wpe.weight.data[:block_size].copy()
        wpe.weight.grad = None
        wpe.num_embeddings = block_size

    def resize_token_embeddings(self, new_num_tokens):
        """Grow (or shrink) the vocabulary to `new_num_tokens` ids, as Hugging Face's method
        of that name; returns the token embedding (an `nn.Embedding`).

        Kept rows keep their values; new rows are drawn from N(0, 0.02), as GPT-1 draws the
        embeddings of the special tokens it adds for fine-tuning. The head stays tied: it
        is the same Parameter, whose array is replaced here. Gradients are dropped, and an
        optimizer made before the resize holds state of the old shape: make it afterwards.
        """
        if isinstance(new_num_tokens, bool) or not isinstance(new_num_tokens, numbers.Integral) \
                or new_num_tokens < 1:
            raise ValueError(f"resize_token_embeddings: new_num_tokens must be an int >= 1, got "
                             f"{new_num_tokens!r}")
        wte = self.transformer.wte
        old, new = wte.weight.data, int(new_num_tokens)
        xp = backend.array_module(old)
        grown = xp.empty((new, old.shape[1]), dtype=old.dtype)
        kept = min(new, old.shape[0])
        grown[:kept] = old[:kept]
        wte.weight.data, wte.weight.grad = grown, None
        if new > kept:
            init.normal_(Tensor(grown[kept:]), 0.0, 0.02)        # a view: fills `grown`
        wte.num_embeddings = self.lm_head.out_features = self.config.vocab_size = new
        return wte

    # --- weight files ---------------------------------------------------------------------
    tokenizer = None   # set by from_pretrained: the tokenizer found beside the weights

    @classmethod
    def from_pretrained(cls, path, dtype="float32", device="cpu", dropout=0.0):
        """A GPT from a Hugging Face GPT-2 folder (config.json + model.safetensors) or
        nanoGPT's ckpt.pt; see `tinygpt.model.pretrained.load_pretrained`."""
        from .pretrained import load_pretrained   # pretrained imports this module
        return load_pretrained(path, dtype=dtype, device=device, dropout=dropout)

    def save_pretrained(self, path, overwrite=False, tokenizer=None):
        """Write a Hugging Face GPT-2 folder; see `tinygpt.model.pretrained.save_pretrained`."""
        from .pretrained import save_pretrained
        save_pretrained(self, path, overwrite=overwrite,
                        tokenizer=tokenizer if tokenizer is not None else self.tokenizer)

    # --- forward --------------------------------------------------------------------------
    def _as_tokens(self, idx, what="idx"):
        """idx as an integer Tensor (B, T) on the model's device, with every id checked."""
        if not isinstance(idx, Tensor):
            idx = Tensor(idx)
            if idx.device != self.device:
                idx = Tensor(backend.to_device(idx.data, self.device))
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{what} must hold integer token ids, got dtype {idx.dtype}")
        if idx.ndim != 2:
            raise ValueError(
                f"{what} must have shape (batch, sequence), got shape {tuple(idx.shape)} "
                f"(for one sequence use idx[None])")
        if idx.shape[1] == 0:
            raise ValueError(f"{what} holds no tokens: shape {tuple(idx.shape)}")
        if idx.data.size:
            low, high = int(idx.data.min()), int(idx.data.max())
            vocab = self.config.vocab_size
            if low < 0 or high >= vocab:
                raise ValueError(
                    f"token id {low if low < 0 else high} in {what} is outside the vocabulary: "
                    f"ids must be in [0, {vocab - 1}] (vocab_size {vocab})")
        return idx

    def hidden_states(self, idx):
        """The final hidden states (B, T, C): the blocks' output after ln_f, what lm_head
        scores and what task heads (`tinygpt.model.heads`) read.

        idx: integer token ids (B, T) with T <= block_size (a Tensor or array).
        """
        idx = self._as_tokens(idx)
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(
                f"sequence length {T} is longer than block_size {self.config.block_size}: "
                f"the model has {self.config.block_size} learned positions")
        transformer = self.transformer
        # Positions 0..T-1 are the first T rows of wpe: a view, broadcast over the batch.
        x = transformer.drop(transformer.wte(idx) + transformer.wpe.weight[:T])  # (B, T, C)
        for block in transformer.h:
            x = block(x)
        return transformer.ln_f(x)

    def forward(self, idx, targets=None, last_only=False):
        """Logits (B, T, V) and, when `targets` (B, T) is given, the mean cross-entropy.

        idx: integer token ids (B, T) with T <= block_size (a Tensor or array). Targets
        equal to -1 are ignored in the loss (nanoGPT's convention). Without targets the loss
        is None, and `last_only=True` returns the logits of the last position only,
        (B, 1, V): all generation needs, at 1/T of the head's cost (nanoGPT does this
        whenever targets is None; here the default is every position, which evaluation
        and inspection want). With targets, last_only is ignored.
        """
        x = self.hidden_states(idx)                             # (B, T, C)
        B, T = x.shape[:2]
        if targets is None:
            if last_only:
                x = x[:, -1:]                                   # (B, 1, C)
            return self.lm_head(x), None
        logits = self.lm_head(x)                                # (B, T, V)
        targets = targets if isinstance(targets, Tensor) else Tensor(
            backend.to_device(Tensor(targets).data, self.device))
        if tuple(targets.shape) != (B, T):
            raise ValueError(
                f"targets of shape {tuple(targets.shape)} do not match idx of shape {(B, T)}")
        loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T), ignore_index=-1)
        return logits, loss

    # --- generation -----------------------------------------------------------------------
    def _forward_cached(self, idx, caches):
        """Logits (B, 1, V) of the last of the new tokens idx (B, T), which sit at the
        positions after the cached ones; their keys and values are added to `caches`."""
        B, T = idx.shape
        start = caches[0].length
        transformer = self.transformer
        x = transformer.drop(transformer.wte(idx) + transformer.wpe.weight[start:start + T])
        for block, cache in zip(transformer.h, caches):
            x = block(x, cache)
        # Layer norm and the head act on each position alone: the last one is enough.
        return self.lm_head(transformer.ln_f(x[:, -1:]))

    def _run_inference(self, fn, *args):
        """fn(*args) under no_grad with dropout off, restoring each module's mode after.

        Called around each step rather than around the whole generator, so code that runs
        between two yielded tokens sees the grad mode and training mode it set itself.
        """
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            with no_grad():
                return fn(*args)
        finally:
            for module, mode in modes:
                object.__setattr__(module, "training", mode)

    def generate_iter(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                      do_sample=True, seed=None):
        """Yield the new tokens one column (B, 1) at a time, as `generate` makes them.

        Arguments are checked here, before the first token; see `generate`.
        """
        idx = self._as_tokens(idx)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) \
                or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        sampler = Sampler(self.config.vocab_size, temperature, top_k, top_p, do_sample, seed)
        return self._generate(idx, int(max_new_tokens), sampler)

    def _generate(self, idx, max_new_tokens, sampler):
        if max_new_tokens == 0:
            return
        block_size, cfg = self.config.block_size, self.config
        xp = backend.array_module(idx.data)
        tokens = idx.data                                         # (B, T) so far
        caches = [KVCache(tokens.shape[0], cfg.n_head, block_size, cfg.head_size, self.dtype,
                          self.device) for _ in range(cfg.n_layer)]
        # Prefill: the prompt (its last block_size tokens) in one pass.
        logits = self._run_inference(self._forward_cached, Tensor(tokens[:, -block_size:]), caches)
        for step in range(max_new_tokens):
            next_ids = backend.to_device(sampler(logits.data[:, -1]), self.device)  # (B, 1)
            yield Tensor(next_ids)
            if step + 1 == max_new_tokens:
                break
            tokens = xp.concatenate([tokens, next_ids], axis=1)
            if caches[0].length < block_size:
                # One position's work: the new token at the position after the cached ones.
                logits = self._run_inference(self._forward_cached, Tensor(next_ids), caches)
            else:
                # The context is full. The next prediction sees the last block_size tokens at
                # positions 0..block_size-1 (as during training), so every cached key, made at
                # another position, is stale: crop and prefill again (a full pass per token
                # from here on: simple, and exactly what recomputing would give).
                for cache in caches:
                    cache.length = 0
                logits = self._run_inference(self._forward_cached,
                                             Tensor(tokens[:, -block_size:]), caches)

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 do_sample=True, seed=None):
        """Extend each sequence of idx (B, T) by max_new_tokens tokens -> (B, T + max_new_tokens).

        Each step turns the last position's logits into a distribution: divided by
        `temperature` (> 0; lower is more conservative), restricted to the `top_k` most likely
        tokens and/or the smallest set whose probability reaches `top_p` (nucleus sampling),
        then sampled, or the most likely token is taken when do_sample=False (greedy; the
        temperature and filters then change nothing). `seed` makes a private generator, so
        the same seed gives the same tokens; without it the draws come from the generator
        `tg.manual_seed` seeds. Dropout is off and no graph is built, whatever the mode.

        The prompt is run once (prefill) and each new token then costs one position, using
        cached keys and values. A context that would pass block_size is cropped to the last
        block_size tokens and run again, as nanoGPT's recomputing loop does.
        """
        columns = list(self.generate_iter(idx, max_new_tokens, temperature, top_k, top_p,
                                          do_sample, seed))
        idx = self._as_tokens(idx)
        return cat([idx] + columns, dim=1) if columns else Tensor(idx.data.copy())


class Sampler:
    """Turns next-token logits (B, V) into token ids (B, 1) by the rules of `GPT.generate`.

    Works in float64 NumPy on the host: (B, V) per step is small, and one code path keeps
    CPU and GPU sampling identical for a given seed.
    """

    def __init__(self, vocab_size, temperature=1.0, top_k=None, top_p=None, do_sample=True,
                 seed=None):
        if not isinstance(do_sample, bool):
            raise TypeError(f"do_sample must be True or False, got {do_sample!r}")
        if do_sample and (isinstance(temperature, bool)
                          or not isinstance(temperature, numbers.Real)
                          or not 0 < temperature < math.inf):
            raise ValueError(
                f"temperature must be a finite number > 0 when sampling, got {temperature!r} "
                f"(for the most likely token use do_sample=False)")
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
                raise TypeError(f"top_k must be an int or None, got {top_k!r}")
            if top_k < 1:
                raise ValueError(f"top_k must be >= 1 (or None for no limit), got {top_k}")
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real)
                                  or not 0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] (or None), got {top_p!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.vocab_size = vocab_size
        self.temperature, self.do_sample = float(temperature), do_sample
        # Filters that cannot remove anything are dropped, so they change nothing at all.
        self.top_k = None if top_k is None or top_k >= vocab_size else int(top_k)
        self.top_p = None if top_p is None or top_p == 1 else float(top_p)
        self.rng = None if seed is None else np.random.default_rng(seed)

    def __call__(self, logits):
        logits = backend.to_numpy(logits).astype(np.float64)      # (B, V)
        if np.isnan(logits).any():
            raise FloatingPointError(
                "the model produced NaN logits: its weights are not usable (did training "
                "diverge?)")
        if not self.do_sample:
            return logits.argmax(axis=-1)[:, None]
        V = logits.shape[-1]
        logits /= self.temperature
        if self.top_k is not None:
            # Keep the top_k largest logits (ties with the k-th are kept too).
            kth = np.partition(logits, V - self.top_k, axis=-1)[:, V - self.top_k, None]
            logits[logits < kth] = -np.inf
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        if self.top_p is not None:
            # Drop a token when the tokens ranked above it already hold top_p of the mass;
            # the most likely token always stays.
            order = np.argsort(-probs, axis=-1, kind="stable")
            ranked = np.take_along_axis(probs, order, axis=-1)
            drop = np.empty(probs.shape, dtype=bool)
            np.put_along_axis(drop, order, np.cumsum(ranked, axis=-1) - ranked >= self.top_p,
                              axis=-1)
            probs[drop] = 0.0
        # Inverse-CDF sampling, one uniform per row: the first token whose cumulative
        # probability passes u (tokens of probability 0 can never be picked).
        cdf = np.cumsum(probs, axis=-1)
        cdf /= cdf[:, -1:]
        rng = self.rng if self.rng is not None else backend.generator("cpu")
        u = rng.random(len(cdf))
        return np.minimum((cdf <= u[:, None]).sum(axis=-1), V - 1)[:, None]
