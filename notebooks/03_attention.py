# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Attention: masks, weights, and the softmax backward
#
# Attention mixes the values of the positions a query may see, with weights
# $P = \mathrm{softmax}(q k^\top / \sqrt{d} + \text{mask})$. This notebook draws the masks
# tinygpt supports (causal, padded, banded) as pictures of $P$, trains a one-layer GPT
# for a few seconds on a task whose attention is easy to read, shows its weights as a
# heat map, and checks the softmax backward.

# %%
import os

import numpy as np
import matplotlib.pyplot as plt

import tinygpt as tg
import tinygpt.nn.functional as F
from tinygpt.autograd import gradcheck
from tinygpt.optim import AdamW

SMALL = os.environ.get("TINYGPT_NOTEBOOK_SMALL") == "1"
ITERS = 150 if SMALL else 400         # training steps of the reversal model below
np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## Masks, seen through the weights they allow
#
# A trick to see $P$ itself: give every key the same score (q = k = 0) and make the values
# the identity matrix. Then each output row is $P\,I = P$: the weights of that query,
# spread evenly over the keys it is allowed to see. `F.self_attention` takes the fused
# projection `qkv` (B, T, 3C) that a GPT block makes; here with one head and C = T.
#
# - **causal**: query $i$ sees keys $j \le i$;
# - **padded** (`key_mask`, Hugging Face's `attention_mask`): positions marked 0 are
#   padding, no query sees them, and a padding query that sees nothing gets weights 0;
# - **banded** (`window=W`): each query sees only its $W$ most recent positions.

# %%
T = 8


def weights_seen(key_mask=None, window=None):
    """The (T, T) attention weights of equal scores under the given masks."""
    eye = np.eye(T)[None]                                   # v = I
    qkv = tg.tensor(np.concatenate([np.zeros((1, T, 2 * T)), eye], axis=-1), dtype=tg.float64)
    mask = None if key_mask is None else tg.tensor(np.array([key_mask]))
    return F.self_attention(qkv, 1, key_mask=mask, window=window).numpy()[0]


left_padded = [0, 0, 0, 1, 1, 1, 1, 1]                      # three pads, then five tokens
masks = {
    "causal": weights_seen(),
    "padded (first 3 are padding)": weights_seen(key_mask=left_padded),
    "banded (window=3)": weights_seen(window=3),
    "padded and banded": weights_seen(key_mask=left_padded, window=3),
}
fig, axes = plt.subplots(1, 4, figsize=(15, 4))
for ax, (title, P) in zip(axes, masks.items()):
    im = ax.imshow(P, cmap="Blues", vmin=0, vmax=1)
    ax.set_title(title)
    ax.set_xlabel("key position j")
    ax.set_xticks(range(T)); ax.set_yticks(range(T))
    for i in range(T):
        for j in range(T):
            if P[i, j] > 0:
                ax.text(j, i, f"{P[i, j]:.2f}".lstrip("0"), ha="center", va="center", fontsize=7,
                        color="white" if P[i, j] > 0.5 else "black")
axes[0].set_ylabel("query position i")
fig.colorbar(im, ax=axes, shrink=0.8, label="weight")
plt.show()
for title, P in masks.items():
    print(f"{title:30s} row sums: {P.sum(axis=1)}")

# %% [markdown]
# Every row sums to 1 except the padding queries of the padded masks, which see no key at
# all and get weights 0 (not NaN).
#
# ## A trained model's attention
#
# The task: read 6 digits, then write them in reverse. To write the $k$-th answer digit,
# the model must look back at prompt position $5 - k$: attention is the only way one
# position can read another, so the weights should show an anti-diagonal. The loss is
# taken on the answer only (targets of -1 are left out of the loss).

# %%
N, V = 6, 10
tg.manual_seed(0)
rng = np.random.default_rng(0)
config = tg.GPTConfig(vocab_size=V, block_size=2 * N - 1, n_layer=1, n_head=2, n_embd=32,
                      dropout=0.0, bias=False)
model = tg.GPT(config)
optimizer = AdamW(model.parameters(), lr=3e-3)


def batch(size):
    prompt = rng.integers(0, V, size=(size, N))
    sequence = np.concatenate([prompt, prompt[:, ::-1]], axis=1)
    targets = sequence[:, 1:].copy()
    targets[:, :N - 1] = -1                 # predict the answer only
    return tg.tensor(sequence[:, :-1]), tg.tensor(targets)


losses = []
for it in range(ITERS):
    _, loss = model(*batch(64))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    losses.append(loss.item())
print(f"loss after {ITERS} steps: {losses[-1]:.4f} (ln 10 = {np.log(10):.2f} at chance)")

test_x, test_y = batch(500)
with tg.no_grad():
    logits, _ = model(test_x)
answers = logits.numpy()[:, N - 1:].argmax(-1)
accuracy = (answers == test_y.numpy()[:, N - 1:]).all(axis=1).mean()
print(f"reversed all 6 digits right in {accuracy:.0%} of 500 new sequences")
assert losses[-1] < 0.5 * losses[0]

# %% [markdown]
# To get the weights out, a forward hook on the block's `c_attn` layer keeps `qkv`, and
# the same identity trick runs `F.scaled_dot_product_attention` with $v = I$ on the
# model's own queries and keys, one head at a time. A check first: with the real values,
# that function gives what the model's fused `F.self_attention` gave.

# %%
kept = {}
attn = model.transformer.h[0].attn
handle = attn.c_attn.register_forward_hook(lambda module, inputs, out: kept.update(qkv=out))
sequence = tg.tensor(np.array([[3, 1, 4, 1, 5, 9, 9, 5, 1, 4, 1]]))
with tg.no_grad():
    model(sequence)
handle.remove()

qkv = kept["qkv"]
B, L, C3 = qkv.shape
H, hs = config.n_head, config.n_embd // config.n_head
q, k, v = (qkv.numpy().reshape(B, L, 3, H, hs).transpose(2, 0, 3, 1, 4))   # (B, H, L, hs) each
with tg.no_grad():
    split = F.scaled_dot_product_attention(tg.tensor(q), tg.tensor(k), tg.tensor(v), is_causal=True)
    fused = F.self_attention(qkv, H)
    heads_side_by_side = split.numpy().transpose(0, 2, 1, 3).reshape(B, L, -1)
    print("split heads against the fused op: largest difference",
          float(np.abs(heads_side_by_side - fused.numpy()).max()))
    eye = tg.tensor(np.broadcast_to(np.eye(L, dtype=np.float32), (B, H, L, L)).copy())
    P = F.scaled_dot_product_attention(tg.tensor(q), tg.tensor(k), eye, is_causal=True).numpy()[0]

labels = [str(t) for t in sequence.numpy()[0]]
fig, axes = plt.subplots(1, H, figsize=(11, 4.8))
for h, ax in enumerate(axes):
    im = ax.imshow(P[h], cmap="viridis", vmin=0, vmax=1)
    ax.set_title(f"head {h}")
    ax.set_xticks(range(L)); ax.set_xticklabels([f"{i}\n{s}" for i, s in enumerate(labels)])
    ax.set_yticks(range(L)); ax.set_yticklabels([f"{i}: {s}" for i, s in enumerate(labels)])
    ax.set_xlabel("key (position: token)")
    ax.axhline(N - 1.5, color="white", lw=0.8)            # answer rows below the line
axes[0].set_ylabel("query (position: token)")
fig.colorbar(im, ax=axes, shrink=0.8, label="weight")
fig.suptitle("prompt 3 1 4 1 5 9, then the answer 9 5 1 4 1 (3, the last digit, is not read): "
             "each row below the line predicts the next answer digit", fontsize=10)
plt.show()

# %% [markdown]
# The rows below the white line are the queries that write the answer: query 5 predicts
# the first answer digit (prompt position 5), query 6 the second (position 4), and so on,
# so between them the heads put most of their weight on the anti-diagonal: position
# $5 - (i - 5)$ for query $i$. Above the line (the prompt, where nothing is predicted)
# the weights follow no rule; nothing was learnt there.
#
# ## The softmax backward
#
# With $y = \mathrm{softmax}(x)$ along a row,
# $\partial y_i / \partial x_j = y_i(\delta_{ij} - y_j)$, so for an upstream gradient $dy$:
#
# $$dx = y \odot \left(dy - \textstyle\sum_j dy_j\, y_j\right).$$
#
# By hand against the engine, then the gradient check, for `F.softmax` and for the whole
# masked attention (scores, softmax, values) on both the reference code and the CPU's
# fast kernel:

# %%
r = np.random.default_rng(1)
x = tg.tensor(r.normal(size=(3, 5)), dtype=tg.float64, requires_grad=True)
dy = r.normal(size=(3, 5))
y = F.softmax(x, dim=-1)
y.backward(tg.tensor(dy))
by_hand = y.numpy() * (dy - (dy * y.numpy()).sum(axis=-1, keepdims=True))
print("softmax: largest |engine - by hand| =", float(np.abs(x.grad.numpy() - by_hand).max()))
print("gradcheck softmax:", gradcheck(lambda x: F.softmax(x, dim=-1), [x]))

qkv64 = tg.tensor(r.normal(size=(2, 6, 12)), dtype=tg.float64, requires_grad=True)
pad = tg.tensor(np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]))
for reference in (True, False):
    with tg.use_reference_ops(reference):
        ok = gradcheck(lambda t: F.self_attention(t, 2, key_mask=pad, window=3), [qkv64])
    which = "reference" if reference else "fast kernel"
    print(f"gradcheck self_attention, padded and banded, {which}:", ok)

# %% [markdown]
# Why the gradient check contracts with a *random* upstream gradient: with $dy$ all ones,
# $dx = y \odot (1 - \sum_j y_j) = 0$ whatever the backward's mistakes in the $\sum$ term.

# %%
ones = np.ones((3, 5))
dx_of_ones = y.numpy() * (ones - (ones * y.numpy()).sum(axis=-1, keepdims=True))
print("softmax backward of all ones: largest |dx| =", np.abs(dx_of_ones).max())

# %% [markdown]
# ## Try
#
# - Train with `n_head=1`: one head must then do the whole reversal.
# - Set `ITERS = 20` and look at the heat map of a model that has not learnt yet.
# - Change `window=3` to 1: what does each query see?
