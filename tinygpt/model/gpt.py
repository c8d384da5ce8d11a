"""The GPT: GPT-2's architecture with nanoGPT's module and parameter names (floor 5).

    idx (B, T) -> token embedding + position embedding -> dropout
               -> n_layer x Block: x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
               -> ln_f -> lm_head (tied to the token embedding) -> logits (B, T, V)

With `GPTConfig(position="rotary")` there is no position embedding: each attention layer
rotates its queries and keys by their positions instead (RoPE, `F.rotary`).

The blocks (attention, MLP) are in tinygpt/model/blocks.py. Shape letters: B batch, T
sequence length, C = n_embd channels, H = n_head heads, hs = C / H head size, V
vocabulary, S cached key positions. Generation keeps a KV cache:
each new token runs the network on its one position and attends over the keys and values
kept from the earlier ones (`KVCache`, `Sampler`: tinygpt/model/generation.py; sizes from a
config alone: tinygpt/model/sizes.py). Imports: autograd, nn, validate, model.config,
model.blocks, model.generation, model.moe.
"""

import math

from .. import memory, nn, validate
from ..autograd import backend
from ..autograd.function import no_grad
from ..autograd.factories import cat
from ..autograd.tensor import Tensor
from ..nn import functional as F
from ..nn import init
from .config import GPTConfig
from .generation import KVCache, Sampler
from .blocks import Block
from .moe import MoE


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
        from .sizes import check_model_fits   # sizes imports this module
        if not init.is_skipping():             # (empty_gpt checks in the dtype it fills)
            check_model_fits(config)           # before any parameter is allocated
        self.config = config
        C = config.n_embd
        # Rotary positions have no table: the attention layers rotate q and k instead.
        positions = dict(wpe=nn.Embedding(config.block_size, C)) \
            if config.position == "learned" else {}
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, C),
            **positions,
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, window, experts) for window, experts in
                             zip(config.layer_windows(), config.moe_layers())]),
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
        the token embedding is the head's weight, so it stays; rotary positions have none)."""
        n = self.num_parameters()
        if non_embedding and self.config.position == "learned":
            n -= self.transformer.wpe.weight.numel()
        return n

    @property
    def device(self):
        return self.transformer.wte.weight.device

    @property
    def dtype(self):
        # The dtype computations run in: an int8 embedding's is that of its scales.
        wte = self.transformer.wte
        return wte.weight.dtype if wte.weight.dtype.kind == "f" else wte.weight_scale.dtype

    def quantize(self, mode="int8"):
        """Make this model an int8 one for inference, in place, and return it: every
        Linear's weight and the tied embedding/head become int8 with per-row scales; the
        positions, LayerNorms and biases stay float (`tinygpt.nn.quantize_int8`). A
        quantised model cannot be trained; `tinygpt.nn.save_int8` writes its weights."""
        if mode != "int8":
            raise ValueError(f"quantize: the only mode is 'int8', got {mode!r}")
        return nn.quantize_int8(self)

    def crop_block_size(self, block_size):
        """Shrink the context to `block_size` positions (keeps the first rows of wpe), e.g.
        to fine-tune a 1,024-position GPT-2 on short sequences."""
        block_size = validate.integer("crop_block_size: block_size", block_size, minimum=1,
                                      maximum=self.config.block_size)
        self.config.block_size = block_size
        if self.config.position != "learned":
            return                                  # rotary positions: no table to crop
        wpe = self.transformer.wpe
        wpe.weight.data = wpe.weight.data[:block_size].copy()
        wpe.weight.grad = None
        wpe.num_embeddings = block_size

    def extend_context(self, block_size, rope_scale=None):
        """Run on `block_size` positions from now on, longer or shorter than trained.

        Rotary positions work at any position: a longer context needs no new parameters.
        `rope_scale` s (>= 1; None keeps the config's) uses position p as p / s (position
        interpolation, Chen et al. 2023: trained on T positions, run on s * T with every
        angle inside the trained range). Learned positions exist only for the block_size
        positions the model was trained on: a longer context is a ValueError, a shorter
        one crops wpe (`crop_block_size`), and rope_scale is refused.
        """
        config = self.config        # the new values are checked as a config's
        scale = config.rope_scale if rope_scale is None else rope_scale
        checked = GPTConfig.from_dict({**config.to_dict(), "block_size": block_size,
                                       "rope_scale": scale})
        if config.position == "learned":
            if rope_scale is not None:
                raise ValueError("extend_context: rope_scale applies to rotary positions; this "
                                 "model has learned position embeddings (position 'learned')")
            if checked.block_size > config.block_size:
                raise ValueError(
                    f"extend_context: block_size {block_size} is longer than the trained "
                    f"{config.block_size}, and learned position embeddings exist only for the "
                    f"{config.block_size} trained positions (wpe has {config.block_size} rows); "
                    "only a model with rotary positions can run on a longer context")
            if checked.block_size < config.block_size:
                self.crop_block_size(checked.block_size)
            return self
        config.block_size, config.rope_scale = checked.block_size, checked.rope_scale
        return self

    def resize_token_embeddings(self, new_num_tokens):
        """Grow (or shrink) the vocabulary to `new_num_tokens` ids, as Hugging Face's method
        of that name; returns the token embedding (an `nn.Embedding`).

        Kept rows keep their values; new rows are drawn from N(0, 0.02), as GPT-1 draws the
        embeddings of the special tokens it adds for fine-tuning. The head stays tied: it
        is the same Parameter, whose array is replaced here. Gradients are dropped, and an
        optimizer made before the resize holds state of the old shape: make it afterwards.
        """
        validate.positive_integer("resize_token_embeddings: new_num_tokens", new_num_tokens)
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
        """idx as an integer Tensor (B, T) on the model's device, its ids checked where
        that costs nothing: on the host (ids given as host data, or a model on the CPU).
        Ids already on a GPU are not checked here, which would make the host wait for the
        GPU at every call: data meant for a GPU is checked once where it is made
        (`BatchSampler(..., vocab_size=...)`, `check_token_ids`)."""
        if not isinstance(idx, Tensor):
            idx = Tensor(idx)
            if idx.device == "cpu":
                self._check_ids(idx, what)
            if idx.device != self.device:
                idx = Tensor(backend.to_device(idx.data, self.device))
        elif idx.device == "cpu":
            self._check_ids(idx, what)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{what} must hold integer token ids, got dtype {idx.dtype}")
        if idx.ndim != 2:
            raise ValueError(
                f"{what} must have shape (batch, sequence), got shape {tuple(idx.shape)} "
                f"(for one sequence use idx[None])")
        if idx.shape[1] == 0:
            raise ValueError(f"{what} holds no tokens: shape {tuple(idx.shape)}")
        return idx

    def _check_ids(self, idx, what):
        """Raise a `validate.TokenIdError` (a ValueError) naming an id of the host tensor
        `idx` outside the vocabulary and its position."""
        if idx.dtype.kind in "iu":
            validate.token_ids(idx.data, self.config.vocab_size, name=what)

    def hidden_states(self, idx, attention_mask=None):
        """The final hidden states (B, T, C): the blocks' output after ln_f, what lm_head
        scores and what task heads (`tinygpt.model.heads`) read.

        idx: integer token ids (B, T) with T <= block_size (a Tensor or array).
        attention_mask: (B, T) of ones (real tokens) and zeros (padding), as in Hugging
        Face: no position attends to padding, and each row's positions count from its first
        real token, so a left-padded or right-padded row gives the hidden states it gives
        alone (at its real positions).
        """
        idx = self._as_tokens(idx)
        B, T = idx.shape
        if T > self.config.block_size:
            what = (f"the model has {self.config.block_size} learned positions"
                    if self.config.position == "learned" else
                    "run it on a longer context with extend_context")
            raise ValueError(
                f"sequence length {T} is longer than block_size {self.config.block_size}: "
                f"{what}")
        key_mask = None if attention_mask is None else F.padding_mask(attention_mask, idx)
        x, rotary = self._embed(idx, key_mask, 0)                   # (B, T, C)
        for block in self.transformer.h:
            x = block(x, key_mask=key_mask, rotary=rotary)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, last_only=False, attention_mask=None):
        """Logits (B, T, V) and, when `targets` (B, T) is given, the mean cross-entropy.

        idx: integer token ids (B, T) with T <= block_size (a Tensor or array). Targets
        equal to -1 (nanoGPT's convention) or -100 (PyTorch's and Hugging Face's
        ignore_index) are ignored in the loss. Without targets the loss is None, and
        `last_only=True` returns the logits of the last position only, (B, 1, V): all
        generation needs, at 1/T of the head's cost (nanoGPT does this whenever targets is
        None; here the default is every position, which evaluation and inspection want).
        With targets, last_only is ignored.

        attention_mask: (B, T), padding as in `hidden_states`. Train on right-padded rows
        with -100 targets at the pads.
        """
        x = self.hidden_states(idx, attention_mask)                 # (B, T, C)
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
        xp = backend.array_module(targets.data)
        flat = Tensor(xp.where(targets.data == -100, -1, targets.data).reshape(B * T))
        loss = F.cross_entropy(logits.view(B * T, -1), flat, ignore_index=-1)
        if self.config.n_expert and self.config.aux_loss_coef:
            # The experts' load-balancing losses, weighed in (see tinygpt/model/moe.py).
            loss = loss + self.moe_stats()["aux_loss"] * self.config.aux_loss_coef
        return logits, loss

    def moe_stats(self):
        """The routing of the last forward through the mixture-of-experts layers (None
        without any): aux_loss, their load-balancing losses summed (a 0-d Tensor), and
        dropped, the assignments past an expert's capacity (a 0-d backend array)."""
        layers = [m for m in self.modules() if isinstance(m, MoE) and m.aux_loss is not None]
        if not layers:
            return None
        aux, dropped = layers[0].aux_loss, layers[0].dropped
        for layer in layers[1:]:
            aux, dropped = aux + layer.aux_loss, dropped + layer.dropped
        return {"aux_loss": aux, "dropped": dropped}

    def _embed(self, idx, key_mask, start):
        """Token plus position embeddings of idx (B, T) at positions start.., then dropout,
        and what the attention layers need for rotary positions: (positions, rope_base,
        rope_scale), or None for learned ones. With a padding mask (B, start + T) each
        row's positions count from its first real token (padding sits at position 0)."""
        transformer, config = self.transformer, self.config
        T = idx.shape[1]
        if key_mask is None or (start == 0 and backend.device_of(key_mask.data) == "cpu"
                                and bool(key_mask.data[:, 0].all())):
            # Positions start..start+T-1: rows of wpe as a view, broadcast over the batch.
            # (Also with a mask on the CPU when no row starts with padding: every real
            # position is then its index, and padded positions are never looked at.)
            if config.position == "learned":
                pos = transformer.wpe.weight[start:start + T]
            else:
                pos = Tensor(backend.array_module(idx.data).arange(start, start + T))
        else:
            xp = backend.array_module(key_mask.data)
            counts = Tensor(xp.maximum(xp.cumsum(key_mask.data, axis=1)[:, -T:] - 1, 0))
            pos = F.embedding(counts, transformer.wpe.weight) \
                if config.position == "learned" else counts           # (B, T)
        if config.position == "learned":
            return transformer.drop(transformer.wte(idx) + pos), None
        return transformer.drop(transformer.wte(idx)), (pos, config.rope_base, config.rope_scale)

    # --- generation -----------------------------------------------------------------------
    def _forward_cached(self, idx, caches, key_mask=None):
        """Logits (B, 1, V) of the last of the new tokens idx (B, T), which sit at the
        positions after the cached ones; their keys and values are added to `caches`.
        key_mask: the padding mask (B, cached + T) of every position so far, or None."""
        start = caches[0].length
        x, rotary = self._embed(idx, key_mask, start)
        new_mask = None if key_mask is None else Tensor(key_mask.data[:, start:])
        for block, cache in zip(self.transformer.h, caches):
            x = block(x, cache, new_mask, rotary)
        # Layer norm and the head act on each position alone: the last one is enough.
        return self.lm_head(self.transformer.ln_f(x[:, -1:]))

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
                      do_sample=True, seed=None, attention_mask=None):
        """Yield the new tokens one column (B, 1) at a time, as `generate` makes them.

        Arguments are checked here, before the first token; see `generate`.
        """
        idx = self._as_tokens(idx)
        validate.integer("max_new_tokens", max_new_tokens, minimum=0)
        key_mask = None if attention_mask is None else F.padding_mask(attention_mask, idx)
        if key_mask is not None:
            _check_left_padded(key_mask)
        sampler = Sampler(self.config.vocab_size, temperature, top_k, top_p, do_sample, seed)
        return self._generate(idx, int(max_new_tokens), sampler, key_mask)

    def _generate(self, idx, max_new_tokens, sampler, key_mask):
        if max_new_tokens == 0:
            return
        block_size, cfg = self.config.block_size, self.config
        xp = backend.array_module(idx.data)
        tokens = idx.data                                         # (B, T) so far
        real = None if key_mask is None else key_mask.data       # (B, T) so far
        # The cache never holds more than the prompt and the new tokens (nor more than
        # block_size: a full context is cropped and run again); checked before allocating.
        capacity = min(block_size, tokens.shape[1] + max_new_tokens)
        memory.check_fits(
            2 * cfg.n_layer * tokens.shape[0] * capacity * cfg.n_embd * self.dtype.itemsize,
            f"the KV cache of {tokens.shape[0]} sequences x {capacity} positions")
        caches = [KVCache(tokens.shape[0], cfg.n_head, capacity, cfg.head_size, self.dtype,
                          self.device, window) for window in cfg.layer_windows()]

        def prefill():
            # The last block_size tokens from position 0, every cache empty.
            for cache in caches:
                cache.reset()
            mask = None if real is None else Tensor(real[:, -block_size:])
            return self._run_inference(self._forward_cached, Tensor(tokens[:, -block_size:]),
                                       caches, mask)

        logits = prefill()
        for step in range(max_new_tokens):
            next_ids = backend.to_device(sampler(logits.data[:, -1]), self.device)  # (B, 1)
            yield Tensor(next_ids)
            if step + 1 == max_new_tokens:
                break
            tokens = xp.concatenate([tokens, next_ids], axis=1)
            if real is not None:
                real = xp.concatenate([real, xp.ones_like(real[:, :1])], axis=1)
            if caches[0].length < block_size:
                # One position's work: the new token at the position after the cached ones.
                mask = None if real is None else Tensor(real[:, -(caches[0].length + 1):])
                logits = self._run_inference(self._forward_cached, Tensor(next_ids), caches,
                                             mask)
            else:
                # The context is full. The next prediction sees the last block_size tokens at
                # positions 0..block_size-1 (as during training), so every cached key, made at
                # another position, is stale: crop and prefill again (a full pass per token
                # from here on: simple, and exactly what recomputing would give).
                logits = prefill()

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 do_sample=True, seed=None, attention_mask=None):
        """Extend each sequence of idx (B, T) by max_new_tokens tokens -> (B, T + max_new_tokens).

        Each step turns the last position's logits into a distribution: divided by
        `temperature` (> 0; lower is more conservative), restricted to the `top_k` most likely
        tokens and/or the smallest set whose probability reaches `top_p` (nucleus sampling),
        then sampled, or the most likely token is taken when do_sample=False (greedy; the
        temperature and filters then change nothing). `seed` makes a private generator, so
        the same seed gives the same tokens; without it the draws come from the generator
        `tg.manual_seed` seeds. Dropout is off and no graph is built, whatever the mode.

        Prompts of different lengths go in one batch left-padded, with `attention_mask`
        (B, T) of ones and zeros: each row then generates what it generates alone. New
        tokens follow each row's last position, so a row with padding after a real token
        (right padding) or with no real token raises ValueError naming the row.

        The prompt is run once (prefill) and each new token then costs one position, using
        cached keys and values (a banded layer keeps only its window's). A context that
        would pass block_size is cropped to the last block_size tokens and run again, as
        nanoGPT's recomputing loop does.
        """
        columns = list(self.generate_iter(idx, max_new_tokens, temperature, top_k, top_p,
                                          do_sample, seed, attention_mask))
        idx = self._as_tokens(idx)
        return cat([idx] + columns, dim=1) if columns else Tensor(idx.data.copy())


def _check_left_padded(key_mask):
    """Raise a ValueError naming the first row of the padding mask (B, T) that has no real
    token, or padding after a real token: generation appends after the last position."""
    real = backend.to_numpy(key_mask.data)
    empty = ~real.any(axis=1)
    if empty.any():
        raise ValueError(f"attention_mask row {int(empty.argmax())} has no real token: "
                         f"there is no prompt to continue")
    # Left-padded: once a row has a real token, every later position is real.
    right = (real.cumsum(axis=1) > 0) & ~real
    if right.any():
        row = int(right.any(axis=1).argmax())
        raise ValueError(f"attention_mask row {row} has padding (0) after a real token (1): "
                         f"generation continues after each row's last position, so pad "
                         f"prompts on the left")
