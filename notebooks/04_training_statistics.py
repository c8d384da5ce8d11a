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
# # 4. Training a character GPT, and looking inside while it learns
#
# The makemore lectures train a network and then look at it: the loss curve, the
# histograms of activations and gradients layer by layer, the units that have stopped
# learning, how big each update is next to the weight it changes. The same here for a
# small GPT trained by tinygpt's `Trainer` on the corpus that ships with Python (the
# Language Reference pages, `--data default`), with `stats=True` logging the gradient
# and update statistics as it goes.

# %%
import os
import tempfile

import numpy as np
import matplotlib.pyplot as plt

import tinygpt as tg
from tinygpt.data import BatchSampler, load_text
from tinygpt.train import TrainConfig, Trainer
from tinygpt.train.stats import read_log

SMALL = os.environ.get("TINYGPT_NOTEBOOK_SMALL") == "1"
# About a minute on a 2-core laptop; CI's small run takes a few seconds.
ITERS, BATCH = (80, 8) if SMALL else (500, 16)
out_dir = tempfile.mkdtemp(prefix="tinygpt-notebook-")
config = TrainConfig(out_dir=out_dir, data="default", n_layer=4, n_head=4, n_embd=64,
                     block_size=32, batch_size=BATCH, max_iters=ITERS, learning_rate=1e-3,
                     warmup_iters=ITERS // 10, lr_decay_iters=ITERS, eval_interval=ITERS // 5,
                     eval_iters=5, log_interval=max(1, ITERS // 50), stats=True, processes=1,
                     save_checkpoints=False)
lines = []
trainer = Trainer(config, log=lines.append)   # builds the model and reads the data
model, tokenizer = trainer.model, trainer.tokenizer
print(f"{model.num_parameters():,} parameters; {ITERS} iterations of {BATCH} x 32 characters")

# %% [markdown]
# ## Samples before training
#
# An untrained model spreads its probability evenly over the characters: its loss is about
# $\ln V$ and its text is noise.

# %%
prompt = tg.tensor([tokenizer.encode("def ")])


def sample(n=200):
    out = model.generate(prompt, n, temperature=0.8, seed=0)
    return tokenizer.decode(out.numpy()[0].tolist())


print(f"vocabulary {tokenizer.vocab_size}, ln V = {np.log(tokenizer.vocab_size):.2f}\n")
print(sample())

# %% [markdown]
# ## Activations and gradients, one batch at a time
#
# Forward hooks on each block's first MLP layer keep the GELU's input (the pre-activation)
# and, through a tensor hook, the gradient flowing back into the GELU's output. The same
# snapshot is taken at initialisation and after training.

# %%
ids = tokenizer.encode_array(load_text("default"))
probe = BatchSampler(ids, 32, 32, seed=0).get_batch()      # one fixed batch of 32 rows


def snapshot(model):
    """Per block: the GELU's inputs and the gradients reaching its outputs, for one batch;
    and each block's c_fc weight gradient."""
    pre, grad = {}, {}
    handles = []
    for i, block in enumerate(model.transformer.h):
        def keep_pre(module, inputs, out, i=i):
            pre[i] = out.numpy().copy()
        def keep_grad(module, inputs, out, i=i):
            out.register_hook(lambda g: grad.__setitem__(i, g.numpy().copy()))
        handles.append(block.mlp.c_fc.register_forward_hook(keep_pre))
        handles.append(block.mlp.gelu.register_forward_hook(keep_grad))
    _, loss = model(*probe)
    loss.backward()
    weight_grads = {i: block.mlp.c_fc.weight.grad.numpy().copy()
                    for i, block in enumerate(model.transformer.h)}
    for h in handles:
        h.remove()
    model.zero_grad()
    return pre, grad, weight_grads


at_init = snapshot(model)

# %% [markdown]
# ## Train
#
# `Trainer.run()` is the same loop as `python -m tinygpt train`: AdamW, warm-up and cosine
# decay, gradient clipping, evaluation every `eval_interval` steps. Its log lines went to
# `lines`; its records (losses, evaluations, statistics) to `out_dir/log.jsonl`.

# %%
trainer.run()
print("\n".join(lines[:2] + ["..."] + lines[-3:]))
log = read_log(os.path.join(out_dir, "log.jsonl"))
after = snapshot(model)

# %% [markdown]
# ## Loss curves
#
# (The validation split is the corpus's last 10%; its loss can sit below the training
# split's when that part of the text happens to be easier to predict.)

# %%
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot([r["iter"] for r in log["train"]], [r["loss"] for r in log["train"]], lw=1,
        alpha=0.6, label="training batch")
ax.plot([r["iter"] for r in log["eval"]], [r["train_loss"] for r in log["eval"]], "o-",
        label="train split (evaluated)")
ax.plot([r["iter"] for r in log["eval"]], [r["val_loss"] for r in log["eval"]], "s-",
        label="validation split")
ax.axhline(np.log(tokenizer.vocab_size), color="gray", ls=":", label="ln V (uniform guess)")
ax.set_xlabel("iteration"); ax.set_ylabel("cross-entropy loss"); ax.legend()
ax.set_title("the loss falls from ln V as the model learns the characters' statistics")
plt.show()

# %% [markdown]
# ## Activation histograms, layer by layer
#
# At initialisation every block's pre-activations are narrow and alike (small weights on
# layer-normed inputs); after training the blocks differ, each with its own spread and
# longer tails. The second row shows the gradients arriving at each GELU's output: alike
# at initialisation, smaller in the later blocks after training. A layer whose gradients
# were far smaller than the others' would learn more slowly.

# %%
fig, axes = plt.subplots(2, 2, figsize=(12, 7))
for col, (title, snap) in enumerate([("at initialisation", at_init), ("after training", after)]):
    pre, grad, _ = snap
    for i in pre:
        values = pre[i].ravel()
        axes[0, col].hist(values, bins=80, histtype="step", density=True,
                          label=f"block {i}: std {values.std():.2f}, "
                                f"{(values < -3).mean():.1%} below -3")
        g = grad[i].ravel()
        axes[1, col].hist(g, bins=80, histtype="step", density=True,
                          label=f"block {i}: std {g.std():.1e}")
    axes[0, col].set_title(f"GELU inputs, {title}")
    axes[1, col].set_title(f"gradients at the GELU outputs, {title}")
    axes[0, col].set_xlabel("pre-activation"); axes[1, col].set_xlabel("dL/d(GELU output)")
    axes[0, col].legend(fontsize=8); axes[1, col].legend(fontsize=8)
    axes[1, col].set_yscale("log")
    axes[1, col].ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Dead units: where no gradient gets through
#
# GELU is flat for inputs below about $-3$: there $\mathrm{GELU}'(x) \approx 0$ and a unit
# passes almost no gradient back, as a saturated tanh does in the lectures. The pictures
# are white where the pre-activation is below $-3$, for 64 positions (rows) and every
# unit of block 0 (columns). A column white from top to bottom is a dead unit: it learns
# nothing from this batch. A well-initialised GPT has almost none. To see what a bad
# initialisation looks like, the third picture scales block 0's `c_fc` weights by 30
# (as too large an init does), on a copy of the model: the gradient then stops at a good
# part of the entries. (These MLPs have no biases, so a unit's input changes sign from
# one position to the next and whole columns rarely die; with biases, or after a large
# update pushes a bias far below 0, they do.)

# %%
import copy

loud = copy.deepcopy(model)
loud.transformer.h[0].mlp.c_fc.weight.data *= 30
too_large = snapshot(loud)
assert not np.shares_memory(loud.transformer.h[0].mlp.c_fc.weight.data,
                            model.transformer.h[0].mlp.c_fc.weight.data)   # a real copy

fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
for ax, (title, snap) in zip(axes, [("at initialisation", at_init), ("after training", after),
                                    ("c_fc weights x 30", too_large)]):
    below = snap[0][0].reshape(-1, snap[0][0].shape[-1])[:64] < -3
    dead = below.all(axis=0).sum()
    ax.imshow(below, cmap="gray", interpolation="nearest", aspect="auto", vmin=0, vmax=1)
    ax.set_title(f"block 0, {title}: {below.mean():.1%} below -3, {dead} dead units", fontsize=9)
    ax.set_xlabel("unit"); ax.set_ylabel("position")
plt.show()

# %% [markdown]
# ## What the statistics log says
#
# With `stats=True` the trainer logged, every `log_interval` steps, each parameter's
# gradient norm and its update-to-data ratio $\lVert \Delta p \rVert / \lVert p \rVert$
# across the optimizer step (the lectures' rule of thumb: about $10^{-3}$, a $\log_{10}$
# of $-3$), and the mean and spread of each block's output (the residual stream).
# `python -m tinygpt plot` draws the same from a run's folder.

# %%
stats = log["stats"]
iters = [r["iter"] for r in stats]
weights = [name for name in stats[-1]["params"] if name.endswith(("c_fc.weight", "c_attn.weight"))]
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for name in weights:
    ratios = [r["params"][name]["update_ratio"] for r in stats]
    axes[0].plot(iters, np.log10(ratios), label=name.replace("transformer.", ""))
axes[0].axhline(-3, color="black", ls=":", label="1e-3")
axes[0].set_xlabel("iteration"); axes[0].set_ylabel("log10 update / data")
axes[0].set_title("update-to-data ratio of the blocks' weights"); axes[0].legend(fontsize=7)
for block in stats[-1]["activations"]:
    axes[1].plot(iters, [r["activations"][block]["std"] for r in stats],
                 label=block.replace("transformer.", ""))
axes[1].set_xlabel("iteration"); axes[1].set_ylabel("std")
axes[1].set_title("spread of each block's output (the residual stream)"); axes[1].legend()
plt.show()

# %% [markdown]
# And the gradients of the weights themselves: each block's `c_fc` weight gradient after
# training, with its gradient-to-data ratio (the spread of the gradient over that of the
# weight).

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
for i, g in after[2].items():
    w = model.transformer.h[i].mlp.c_fc.weight.numpy()
    ax.hist(g.ravel(), bins=80, histtype="step", density=True,
            label=f"block {i}: grad std {g.std():.1e}, grad:data {g.std() / w.std():.1e}")
ax.set_yscale("log"); ax.set_xlabel("dL/dW of c_fc"); ax.legend(fontsize=8)
ax.set_title("weight gradients, after training")
plt.show()

# %% [markdown]
# ## Samples after training
#
# Same prompt, same seed: instead of noise, groups of common letters separated by spaces,
# the shapes of words (with the small CI run, only the first hints of them). A longer run of
# a larger model, `python -m tinygpt train` (2000 steps, 128 channels), writes real words.

# %%
print(sample())

# %% [markdown]
# ## Try
#
# - Multiply every `c_fc` weight by 30 *before* training and train again: do the dead
#   units recover?
# - Set `learning_rate=1e-2` and watch the update ratios rise above $10^{-2}$.
# - Train longer (`ITERS = 2000`) and compare the samples.
