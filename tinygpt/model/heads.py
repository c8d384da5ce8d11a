"""Task heads on a GPT: GPT-1's supervised fine-tuning (floor 5).

GPT-1 (Radford et al., 2018, "Improving Language Understanding by Generative
Pre-Training") adapts a pre-trained language model to a task by adding one linear layer
and a few special tokens, and keeps the language-modelling loss as an auxiliary loss:

    a multiple-choice example (a story and K candidate endings) becomes K rows
        [start] story [delim] ending_k [clf]                  k = 0 .. K-1
    h = the GPT's final hidden states (N, T, C), N = B * K rows
    logits[b, k] = w . dropout(h[row (b, k), position of its clf token]) + bias
    L2 = cross-entropy of softmax over the K candidates against the right one
    L1 = the language-modelling loss on the same rows (every row, wrong endings too)
    L3 = L2 + lm_coef * L1                                    (GPT-1: lm_coef = 0.5)

The classifier weight is drawn from N(0, 0.02) and its bias is zero (`score_bias=False`
builds it without a bias, as Hugging Face's GPT2ForSequenceClassification has none);
GPT-1 applies dropout 0.1 to the pooled hidden state. `GPTForMultipleChoice` is that model;
`GPTForSequenceClassification` is the same head for one row per example and `num_labels`
classes (Hugging Face's GPT2ForSequenceClassification shape: it scores the last real
token). Both subclass `GPT`, so their parameters keep the GPT's names (`transformer.h.0...`,
`lm_head.weight`) plus the head's (`score.weight`, `score.bias`), and `generate` still works.
`save_pretrained` writes the Hugging Face folder of the matching transformers class
(`tinygpt.model.head_files`).

Padding. Rows of different lengths are padded on the right; `attention_mask` (1 for a
real token, 0 for padding, as in Hugging Face) marks them. Attention is causal, so a
real position never sees the padding after it: right padding needs no mask inside
attention, only here, to pool at each row's last real token and to leave padded targets
out of the language-modelling loss. Left padding would need the mask inside attention
and is refused with an error.

Shape letters: B examples, K candidates, N rows, T positions, C channels, V vocabulary.
Imports: autograd, nn, validate, model.gpt.
"""

from typing import NamedTuple

import numpy as np

from .. import nn, validate
from ..autograd import backend
from ..autograd.tensor import Tensor
from ..nn import functional as F
from ..nn import init
from .gpt import GPT

# GPT-1's names for the tokens it adds to the vocabulary (openai/finetune-transformer-lm).
SPECIAL_TOKENS = ("_start_", "_delimiter_", "_classify_")

IGNORE_INDEX = -100      # PyTorch's default ignore_index: a target that counts for nothing


class ClassifierOutput(NamedTuple):
    """What a task head returns: the class logits (B, K) or (B, num_labels); the loss
    to minimise (None without labels); its classification part L2 (None without labels)
    and its language-modelling part L1 (None unless lm_coef != 0)."""

    logits: Tensor
    loss: Tensor = None
    clf_loss: Tensor = None
    lm_loss: Tensor = None


def add_special_tokens(model, names=SPECIAL_TOKENS):
    """Grow `model`'s vocabulary by one id per name (rows drawn from N(0, 0.02), as GPT-1
    does) and return {name: id}. The new ids follow the old vocabulary, so a tokenizer
    keeps every id it had.

    >>> add_special_tokens(model)          # a model of vocab_size 65
    {'_start_': 65, '_delimiter_': 66, '_classify_': 67}
    """
    names = tuple(names)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"special token names must be distinct strings, got {names!r}")
    first = model.config.vocab_size
    model.resize_token_embeddings(first + len(names))
    return {name: first + i for i, name in enumerate(names)}


def task_loss(clf_logits, labels, lm_logits=None, lm_targets=None, lm_coef=0.5):
    """GPT-1's fine-tuning loss L3 = L2 + lm_coef * L1; returns (L3, L2, L1).

    clf_logits (B, K) with labels (B,): L2, the mean cross-entropy of the classes.
    lm_logits (N, T, V) with lm_targets (N, T): L1, the mean cross-entropy of the next
    tokens, targets equal to -100 left out (padding, and each row's last position). With
    lm_coef == 0, L1 is None and L3 is L2 (lm_logits may then be None).
    """
    clf_loss = F.cross_entropy(clf_logits, labels)
    if lm_coef == 0:
        return clf_loss, clf_loss, None
    if lm_logits is None or lm_targets is None:
        raise ValueError(f"lm_coef={lm_coef} needs lm_logits and lm_targets")
    lm_loss = lm_loss_of(lm_logits, lm_targets)
    return clf_loss + lm_coef * lm_loss, clf_loss, lm_loss


def lm_loss_of(lm_logits, lm_targets):
    """L1: the mean next-token cross-entropy of logits (N, T, V) at targets (N, T), the
    targets equal to -100 left out; 0 when every target is left out (rows of one real
    token predict nothing), where a mean over no targets would be NaN."""
    V = lm_logits.shape[-1]
    total = F.cross_entropy(lm_logits.reshape(-1, V), lm_targets.reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    # Divided on the device by the count, at least 1: no host round trip to ask whether
    # any target counts (the sum is 0 when none does).
    xp = backend.array_module(lm_targets.data)
    count = xp.maximum((lm_targets.data != IGNORE_INDEX).sum(), 1).astype(total.dtype)
    return total / Tensor(count)


class _TaskHeadGPT(GPT):
    """The machinery both heads share: hidden states of right-padded rows, pooling at one
    position per row, the linear head with GPT-1's initialisation, the loss. A subclass
    defines `_add_head(clf_dropout, **options)` (calling `_add_score`) and `forward`."""

    def __init__(self, config, clf_dropout=0.1, score_bias=True, **head):
        super().__init__(config)
        self._add_head(clf_dropout, score_bias, **head)

    @classmethod
    def from_gpt(cls, gpt, clf_dropout=0.1, score_bias=True, **head):
        """This head on an existing GPT (pre-trained, or loaded with `GPT.from_pretrained`).

        The GPT's modules are shared, not copied: training the head model trains `gpt`.
        """
        if not isinstance(gpt, GPT) or isinstance(gpt, _TaskHeadGPT):
            raise TypeError(f"{cls.__name__}.from_gpt expects a plain GPT, got "
                            f"{type(gpt).__name__}")
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.config = gpt.config
        model.transformer, model.lm_head = gpt.transformer, gpt.lm_head
        model.tokenizer = gpt.tokenizer
        model._add_head(clf_dropout, score_bias, **head)
        return model.train(gpt.training)

    def _add_score(self, clf_dropout, outputs, score_bias=True):
        validate.boolean("score_bias", score_bias)
        self.clf_dropout = nn.Dropout(clf_dropout)
        self.score = nn.Linear(self.config.n_embd, outputs, bias=score_bias,
                               device=self.device, dtype=self.dtype)
        init.normal_(self.score.weight, 0.0, 0.02)     # GPT-1's clf layer
        if score_bias:
            init.zeros_(self.score.bias)

    def head_options(self):
        """The keyword arguments that rebuild this head (saved with checkpoints)."""
        return {"clf_dropout": self.clf_dropout.p, "score_bias": self.score.bias is not None}

    def save_pretrained(self, path, overwrite=False, tokenizer=None, **options):
        """Write a Hugging Face folder of the matching transformers class
        (GPT2DoubleHeadsModel, GPT2ForSequenceClassification); see
        `tinygpt.model.head_files.save_head_pretrained`."""
        from .head_files import save_head_pretrained   # head_files imports this module
        return save_head_pretrained(self, path, overwrite=overwrite, tokenizer=tokenizer,
                                    **options)

    # --- the shared forward ------------------------------------------------------------
    def _pool(self, idx, attention_mask, clf_positions, lm_coef):
        """For rows idx (N, T): the hidden state at each row's clf position (N, C) and,
        when lm_coef != 0, the language-modelling logits and targets of the rows."""
        idx = self._as_tokens(idx, "input_ids")
        N, T = idx.shape
        if N == 0:
            raise ValueError("input_ids holds no rows (an empty batch): give at least one "
                             "example")
        xp = backend.array_module(idx.data)
        masked = attention_mask is not None
        lengths = _real_lengths(attention_mask, (N, T), self.device) if masked \
            else xp.full(N, T, dtype=np.int64)                       # (N,) real tokens
        positions = lengths - 1 if clf_positions is None \
            else _as_positions(clf_positions, lengths, self.device)  # (N,)
        # Right padding needs no mask in causal attention; experts need it, to route no
        # padding token (tinygpt/model/moe.py).
        hidden = self.hidden_states(idx, attention_mask if masked and self.config.n_expert
                                    else None)                       # (N, T, C)
        pooled = hidden[xp.arange(N), positions]                     # (N, C)
        if lm_coef == 0:
            return pooled, None, None
        # Position t predicts token t + 1; padding and the last position predict nothing.
        targets = xp.full((N, T), IGNORE_INDEX, dtype=np.int64)
        targets[:, :-1] = idx.data[:, 1:]
        if masked:
            targets[xp.arange(T)[None, :] >= (lengths - 1)[:, None]] = IGNORE_INDEX
        return pooled, self.lm_head(hidden), Tensor(targets)

    def _output(self, logits, labels, lm_logits, lm_targets, lm_coef):
        if labels is None:
            lm_loss = lm_loss_of(lm_logits, lm_targets) if lm_coef != 0 else None
            return ClassifierOutput(logits, None, None, lm_loss)
        labels = _as_labels(labels, logits.shape, self.device)
        return ClassifierOutput(logits, *task_loss(logits, labels, lm_logits, lm_targets,
                                                   lm_coef))


class GPTForMultipleChoice(_TaskHeadGPT):
    """GPT-1's multiple-choice model: a GPT, the special tokens' rows in its embedding, and
    a linear layer scoring each candidate row at its clf token (see the module docstring).

    forward(input_ids, labels=None, attention_mask=None, clf_positions=None, lm_coef=0.0)
        input_ids       (B, K, T) integer ids: K rows per example, right-padded
        labels          (B,) the index of the right candidate, or None
        attention_mask  (B, K, T) 1 for real tokens, 0 for padding (after them); None: none
        clf_positions   (B, K) where each row's clf token is; None: its last real token
        lm_coef         the weight of the auxiliary language-modelling loss (GPT-1: 0.5)
    -> ClassifierOutput(logits (B, K), loss, clf_loss, lm_loss)

    >>> model = GPTForMultipleChoice(GPTConfig(vocab_size=68, block_size=32, n_layer=2,
    ...                                        n_head=2, n_embd=16))
    >>> out = model(tg.randint(0, 68, (4, 2, 32)), labels=tg.tensor([0, 1, 1, 0]), lm_coef=0.5)
    >>> out.logits.shape, out.loss.shape
    ((4, 2), ())
    """

    def _add_head(self, clf_dropout, score_bias=True):
        self._add_score(clf_dropout, 1, score_bias)

    def forward(self, input_ids, labels=None, attention_mask=None, clf_positions=None,
                lm_coef=0.0):
        ids = input_ids.data if isinstance(input_ids, Tensor) else input_ids
        ids = ids if hasattr(ids, "reshape") else np.asarray(ids)
        shape = tuple(ids.shape)
        if len(shape) != 3:
            raise ValueError(f"input_ids must be (batch, choices, sequence), got shape {shape}")
        B, K, T = shape
        flat = ids.reshape(B * K, T)               # one row per candidate
        mask = None if attention_mask is None else _reshaped(attention_mask, shape, (B * K, T),
                                                            "attention_mask")
        positions = None if clf_positions is None else _reshaped(clf_positions, (B, K), (B * K,),
                                                                 "clf_positions")
        pooled, lm_logits, lm_targets = self._pool(flat, mask, positions, lm_coef)
        logits = self.score(self.clf_dropout(pooled)).view(B, K)        # (B, K)
        return self._output(logits, labels, lm_logits, lm_targets, lm_coef)


class GPTForSequenceClassification(_TaskHeadGPT):
    """A GPT with a linear head over `num_labels` classes, read at each row's last real
    token (Hugging Face's GPT2ForSequenceClassification shape; GPT-1's head and loss).

    forward(input_ids, labels=None, attention_mask=None, clf_positions=None, lm_coef=0.0)
        input_ids (B, T), labels (B,) in [0, num_labels), attention_mask (B, T),
        clf_positions (B,)  -> ClassifierOutput(logits (B, num_labels), ...)
    """

    def _add_head(self, clf_dropout, score_bias=True, num_labels=2):
        validate.integer("num_labels", num_labels, minimum=2)
        self.num_labels = num_labels
        self._add_score(clf_dropout, num_labels, score_bias)

    def head_options(self):
        return {**super().head_options(), "num_labels": self.num_labels}

    def forward(self, input_ids, labels=None, attention_mask=None, clf_positions=None,
                lm_coef=0.0):
        pooled, lm_logits, lm_targets = self._pool(input_ids, attention_mask, clf_positions,
                                                   lm_coef)
        logits = self.score(self.clf_dropout(pooled))                   # (B, num_labels)
        return self._output(logits, labels, lm_logits, lm_targets, lm_coef)


HEADS = {cls.__name__: cls for cls in (GPTForMultipleChoice, GPTForSequenceClassification)}


# --- argument checks ----------------------------------------------------------------------
def _on_device(value, device):
    """A Tensor's, array's or list's values as an array on `device`."""
    data = value.data if isinstance(value, Tensor) else value
    if isinstance(data, (list, tuple, int, np.integer)):
        data = np.asarray(data)
    return backend.to_device(data, device)


def _reshaped(value, shape, new_shape, what):
    """value (a Tensor, array or list) of `shape` as an array of `new_shape`."""
    data = value.data if isinstance(value, Tensor) else value
    data = data if hasattr(data, "reshape") else np.asarray(data)
    if tuple(data.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)} (as input_ids), got "
                         f"{tuple(data.shape)}")
    return data.reshape(new_shape)


def _real_lengths(attention_mask, shape, device):
    """The number of real tokens of each row (N,), after checking that the mask is
    (N, T) of zeros and ones with every row's ones first (right padding)."""
    mask = _on_device(attention_mask, device)
    xp = backend.array_module(mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"attention_mask must have shape {tuple(shape)} (as input_ids), got "
                         f"{tuple(mask.shape)}")
    if mask.dtype.kind not in "biuf" or bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"attention_mask must hold only 0 and 1 (1 = real token, 0 = "
                         f"padding), got dtype {mask.dtype} with other values")
    mask = mask.astype(bool)
    lengths = mask.sum(axis=1)
    if bool((lengths == 0).any()):
        raise ValueError(f"attention_mask row {int(xp.argmax(lengths == 0))} has no real token")
    right_padded = (mask == (xp.arange(shape[1])[None, :] < lengths[:, None])).all(axis=1)
    if not bool(right_padded.all()):
        raise ValueError(
            f"attention_mask row {int(xp.argmin(right_padded))} has padding (0) before a real "
            f"token (1): pad on the right; left padding needs the mask inside attention, "
            f"which this GPT does not apply")
    return lengths.astype(np.int64)


def _as_positions(clf_positions, lengths, device):
    """clf_positions (N,) as integers inside each row's `lengths` (N,) real tokens."""
    positions = _on_device(clf_positions, device)
    xp = backend.array_module(positions)
    if positions.dtype.kind not in "iu":
        raise TypeError(f"clf_positions must hold integer positions, got dtype {positions.dtype}")
    positions = positions.reshape(-1).astype(np.int64)
    if positions.shape != lengths.shape:
        raise ValueError(f"clf_positions must give one position per row ({len(lengths)}), got "
                         f"{positions.shape[0]}")
    bad = (positions < 0) | (positions >= lengths)
    if bool(bad.any()):
        row = int(xp.argmax(bad))
        raise ValueError(f"clf_positions: row {row} points at position {int(positions[row])}, "
                         f"outside its {int(lengths[row])} real tokens")
    return positions


def _as_labels(labels, logits_shape, device):
    labels = _on_device(labels, device)
    B, K = logits_shape
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if tuple(labels.shape) != (B,):
        raise ValueError(f"labels must have shape ({B},), one per example, got "
                         f"{tuple(labels.shape)}")
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if low < 0 or high >= K:
        raise ValueError(f"label {low if low < 0 else high} is out of range: there are {K} "
                         f"classes, labels must be in [0, {K - 1}]")
    return Tensor(labels.astype(np.int64))
