"""A mixture-of-experts MLP: each token routed to `expert_top_k` of `n_expert` expert MLPs
(the sparse MLP of GShard, Switch Transformer and GPT-4) (floor 5). Imports: autograd, nn.

For the N = B * T tokens x (N, C):

    p = softmax(router(x))                  (N, E): each token's probabilities of the experts
    top = the k largest p of each token     (N, k) expert ids (ties: the lower id)
    g = p[top] / sum(p[top])                (N, k): the gates, renormalised over the k kept
    y_n = sum_j g_nj * expert_{top_nj}(x_n) (N, C)

Dispatch, as GShard and Switch do it: each expert gets a buffer of `capacity` slots; the
assignments go to their expert's buffer in token order, and those past its capacity are
dropped (their term of y_n is 0; the block's residual connection still carries x_n). Each
expert then runs its MLP once, on its buffer: one product per expert, never every expert
over every token. Slots left empty hold a zero row.

Capacity is a training-time limit, as in Switch Transformer (its capacity factor bounds
the work of a training step): in training mode capacity = ceil(expert_capacity * N * k / E)
(every assignment when expert_capacity is 0), and the shapes stay fixed whatever the
routing, so nothing waits for the host (with a padding mask N counts the real tokens: one
number read from the device per layer). In eval mode (evaluation, generation, the chat)
no assignment is ever dropped, as in Mixtral-style inference: each buffer is as long as
the busiest expert's assignments (one number read from the device). A token's output then
depends on that token alone, so a row gives the same logits alone or beside others, and
cached generation gives what recomputing gives (up to rounding).

Padding: with a padding mask (`key_mask`, False at padding, from the GPT's
`attention_mask`), padding tokens are routed nowhere (their output is 0), take no slot,
and count in neither N (the capacity) nor the load-balancing loss below. Without a mask,
or with one that marks no padding, every token is routed exactly as before.

The gradient needs no op of its own: the buffers are gathered rows of x (getitem, whose
backward scatter-adds into x), the outputs gathered back per assignment, weighted by the
gates and summed; p[top] is a gather too, so the router learns through the gates (top
itself is piecewise constant, as selection is).

Load balancing (Switch Transformer, eq. 4): aux = E * sum_i f_i * P_i, with f_i the
fraction of the N * k assignments that chose expert i (a constant) and P_i the mean of
p[:, i] over the tokens (differentiable), both over the real tokens only; it is 1 when
both are uniform. The GPT adds
aux_loss_coef * aux, summed over its MoE layers, to the training loss.
"""

import math

import numpy as np

from .. import nn
from ..autograd import backend
from ..autograd.factories import cat
from ..autograd.tensor import Tensor
from ..nn import functional as F


class MoE(nn.Module):
    """Mixture-of-experts MLP (see the module docstring); forward(x (B, T, C)) -> (B, T, C).

    After each forward, `aux_loss` (a 0-d Tensor) and `dropped` (a 0-d backend array: the
    assignments past an expert's capacity) describe that batch's routing.
    """

    def __init__(self, config, expert_class):
        super().__init__()
        C, E = config.n_embd, config.n_expert
        self.n_expert, self.top_k = E, config.expert_top_k
        self.capacity_factor = config.expert_capacity
        self.router = nn.Linear(C, E, bias=False)
        self.experts = nn.ModuleList([expert_class(config, config.expert_hidden_size())
                                      for _ in range(E)])
        self.aux_loss = self.dropped = None

    def capacity(self, n_tokens):
        """Slots per expert in training for a batch of n_tokens (real) tokens:
        expert_capacity * N * k / E, rounded up, at most N * k; every assignment when
        expert_capacity is 0. (In eval mode nothing is dropped: see the module docstring.)"""
        assignments = n_tokens * self.top_k
        if not self.capacity_factor:
            return n_tokens
        return min(assignments, math.ceil(self.capacity_factor * assignments / self.n_expert))

    def forward(self, x, key_mask=None):
        """x (B, T, C) -> (B, T, C); key_mask (B, T), False at padding, or None."""
        B, T, C = x.shape
        E, k = self.n_expert, self.top_k
        N = B * T
        x2 = x.reshape(N, C)
        probs = F.softmax(self.router(x2), -1)                     # (N, E)
        xp = backend.array_module(probs.data)
        # The k most probable experts of each token, the lower id first among equals.
        top = xp.argsort(-probs.data, axis=-1, kind="stable")[:, :k]        # (N, k)
        tokens = xp.arange(N)[:, None]
        gates = probs[Tensor(xp.broadcast_to(tokens, top.shape).copy()), Tensor(top)]
        gates = gates / gates.sum(dim=-1, keepdim=True)             # (N, k), renormalised

        real = None if key_mask is None else key_mask.data.reshape(N).astype(bool)
        n_real = N if real is None else int(real.sum())  # sizes the buffers: read once
        if n_real == N:
            real = None                                  # no padding: routed as without a mask
        expert = top.reshape(-1)                                    # (N * k,) token-major
        if real is not None:
            expert = xp.where(xp.repeat(real, k), expert, E)        # E: padding, routed nowhere
        counts = xp.bincount(expert, minlength=E + 1)[:E]           # (E,) real assignments
        if self.training:
            cap = self.capacity(n_real)
        else:                                            # no drops: the busiest expert's count
            cap = int(counts.max()) if N else 0
        cap = max(cap, 1)
        slot, dropped = self._dispatch(xp, expert, counts, cap)
        # Each expert's buffer: the rows of x it was given, a zero row in empty slots.
        buffer_rows = xp.full(E * cap + 1, N, dtype=np.int64)      # N: the zero row
        buffer_rows[slot] = xp.repeat(xp.arange(N), k)              # trash slot E * cap last
        x_ext = cat([x2, Tensor(xp.zeros((1, C), dtype=x2.dtype))], dim=0)   # (N + 1, C)
        outputs = []
        for e, expert_mlp in enumerate(self.experts):
            rows = Tensor(buffer_rows[e * cap:(e + 1) * cap])
            outputs.append(expert_mlp(x_ext[rows]))                 # (cap, C)
        outputs.append(Tensor(xp.zeros((1, C), dtype=x2.dtype)))   # a dropped one's output
        y_slots = cat(outputs, dim=0)[Tensor(slot)]                 # (N * k, C)
        y = (y_slots.reshape(N, k, C) * gates.reshape(N, k, 1)).sum(dim=1)

        fraction = Tensor((counts / (max(n_real, 1) * k)).astype(probs.dtype))   # f_i
        if real is None:
            mean_probs = probs.mean(dim=0)
        else:                                            # P_i over the real tokens only
            weights = Tensor((real / max(n_real, 1)).astype(probs.dtype)[:, None])
            mean_probs = (probs * weights).sum(dim=0)
        self.aux_loss = (mean_probs * fraction).sum() * float(E)
        self.dropped = dropped
        return y.reshape(B, T, C)

    def _dispatch(self, xp, expert, counts, cap):
        """Where each of the N * k assignments (their expert ids, token-major; E for a
        padding token's) goes: its slot in the concatenated buffers of `cap` slots each
        (E * cap for a dropped or padding one), and the number dropped (a 0-d array).
        counts: each expert's number of assignments (E,)."""
        E = self.n_expert
        order = xp.argsort(expert, kind="stable")                   # by expert, token order kept
        starts = xp.cumsum(counts) - counts
        starts = xp.concatenate([starts, starts[-1:] + counts[-1:]])   # the padding bucket
        rank = xp.empty_like(order)
        rank[order] = xp.arange(len(expert)) - starts[expert[order]]   # place in its expert
        keep = (expert < E) & (rank < cap)
        slot = xp.where(keep, expert * cap + rank, E * cap)
        return slot, ((~keep) & (expert < E)).sum()
