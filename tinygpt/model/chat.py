"""A conversation with a GPT that remembers the earlier turns (floor 5): the text so far is
one token sequence, and its keys and values stay in the model's KV cache from turn to
turn, so a new turn runs only its own tokens. Imports: autograd, validate, model.gpt.

Each turn appends `user_prefix + text + bot_prefix` and then the reply, token by token,
until the reply ends with a stop string (or a stop token, or max_new_tokens). The reply's
text is yielded as it comes, except a tail that could be the start of a stop string: it
is held back until the next token says, so no part of a stop string is ever yielded.
max_new_tokens defaults to 200 or half the model's block_size, whichever is smaller; the
fixed texts (prefixes, stop strings) must be in the tokenizer's vocabulary. When the next
turn would not fit in the model's block_size (with room for a reply of max_new_tokens), the
oldest turns are dropped and the cache rebuilt from the turns kept, from position 0, as a
model trained on windows of block_size tokens expects: the conversation goes on, and what
the model computes is what a fresh run on the kept text would compute.
"""

import numpy as np

from .. import validate
from ..autograd import backend
from ..autograd.tensor import Tensor
from .generation import KVCache, Sampler


class Conversation:
    """A chat with `model`; `reply(text)` yields the reply's pieces of text as they come.

    >>> chat = Conversation(model, tokenizer, user_prefix="User: ", bot_prefix="\\nBot:")
    >>> print("".join(chat.reply("Hello")))                           # doctest: +SKIP
    """

    def __init__(self, model, tokenizer, user_prefix="", bot_prefix="", stop=("\n",),
                 max_new_tokens=None, temperature=0.8, top_k=None, top_p=None,
                 do_sample=True, seed=None, stop_token=None):
        self.model, self.tokenizer = model, tokenizer
        self.user_prefix, self.bot_prefix = user_prefix, bot_prefix
        self.stop = tuple(s for s in stop if s)
        self.stop_token = stop_token
        for name, text in [("user_prefix", user_prefix), ("bot_prefix", bot_prefix),
                           *(("stop", s) for s in self.stop)]:
            try:
                tokenizer.encode(text)
            except ValueError as e:
                raise ValueError(f"{name} {text!r} cannot be encoded: {e}") from None
        block_size = model.config.block_size
        if max_new_tokens is None:
            max_new_tokens = max(1, min(200, block_size // 2))
        validate.integer("max_new_tokens (below the model's block_size)", max_new_tokens,
                         minimum=1, maximum=block_size - 1)
        self.max_new_tokens = max_new_tokens
        self.sampler = Sampler(model.config.vocab_size, temperature, top_k, top_p, do_sample,
                               seed)
        self.turns = []              # token ids of each finished turn (prompt and reply)
        self.tokens_run = 0          # positions the model has run, all turns together
        self._caches = None
        self._unrun = []             # the last turn's final token, not yet in the cache

    # --- the text so far ------------------------------------------------------------------
    def reset(self):
        """Forget the conversation."""
        self.turns, self._caches, self._unrun = [], None, []

    def history(self):
        """The token ids of the turns kept, in order."""
        return [t for turn in self.turns for t in turn]

    def _fit(self, needed):
        """Drop the oldest turns until `needed` more tokens fit in block_size; True when
        some were dropped (the cache must then be rebuilt)."""
        block_size = self.model.config.block_size
        dropped = False
        while self.turns and len(self.history()) + needed > block_size:
            self.turns.pop(0)
            dropped = True
        return dropped

    # --- a turn ---------------------------------------------------------------------------
    def reply(self, text):
        """Yield the reply to `text` piece by piece (decoded text as tokens come); the turn
        is then part of the conversation. A ValueError before anything is run when the
        text cannot be encoded or its turn alone would not fit in block_size."""
        prompt = self.tokenizer.encode(self.user_prefix + text + self.bot_prefix)
        block_size = self.model.config.block_size
        if len(prompt) + self.max_new_tokens > block_size:
            raise ValueError(
                f"this turn is {len(prompt)} tokens; with a reply of up to "
                f"{self.max_new_tokens} it would not fit in the model's block_size "
                f"{block_size}: say less, or lower the reply length")
        if self._fit(len(prompt) + self.max_new_tokens) or self._caches is None:
            self._rebuild()
        logits = self._run(self._unrun + prompt)
        reply, text_so_far, shown = [], "", 0     # shown: the characters yielded so far
        decoder = _Decoder(self.tokenizer)
        while True:
            token = int(backend.to_numpy(self.sampler(logits.data[:, -1]))[0, 0])
            reply.append(token)
            if token == self.stop_token:
                break
            text_so_far += decoder.add(token)
            cut = min((text_so_far.find(s) for s in self.stop if s in text_so_far),
                      default=None)
            if cut is not None:
                # What comes before the stop string is the reply's last piece.
                if cut > shown:
                    yield text_so_far[shown:cut]
                shown = None
                break
            ready = len(text_so_far) - _stop_start(text_so_far, self.stop)
            if ready > shown:
                yield text_so_far[shown:ready]
                shown = ready
            if len(reply) == self.max_new_tokens:
                break
            logits = self._run([token])
        if shown is not None:               # no stop string: what was held back is text
            rest = text_so_far[shown:] + decoder.flush()
            if rest:
                yield rest
        # The reply's last token is run with the next turn's prompt, if there is one.
        self.turns.append(prompt + reply)
        self._unrun = reply[-1:]

    def _run(self, tokens):
        """Run `tokens` at the positions after the cached ones; the last one's logits."""
        self.tokens_run += len(tokens)
        device = self.model.device
        idx = Tensor(backend.to_device(np.asarray([tokens], dtype=np.int64), device))
        return self.model._run_inference(self.model._forward_cached, idx, self._caches)

    def _rebuild(self):
        """Empty caches, then the kept turns run again from position 0."""
        cfg, model = self.model.config, self.model
        self._caches = [KVCache(1, cfg.n_head, cfg.block_size, cfg.head_size, model.dtype,
                                model.device, window) for window in cfg.layer_windows()]
        history = self.history()
        if history:
            self._run(history)
        self._unrun = []


def _stop_start(text, stops):
    """The length of the longest end of `text` that begins one of `stops` (0 if none)."""
    for k in range(min(len(text), max((len(s) for s in stops), default=1) - 1), 0, -1):
        if any(s.startswith(text[-k:]) for s in stops):
            return k
    return 0


class _Decoder:
    """Bytes or characters of tokens as text, holding back an incomplete UTF-8 sequence."""

    def __init__(self, tokenizer):
        import codecs
        self.tokenizer = tokenizer
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token):
        if hasattr(self.tokenizer, "decode_bytes"):
            return self.utf8.decode(self.tokenizer.decode_bytes([token]))
        return self.tokenizer.decode([token])

    def flush(self):
        return self.utf8.decode(b"", final=True)
