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
# # 5. Fine-tuning with LoRA
#
# A pretrained model knows one thing; fine-tuning teaches it another with few examples
# and little compute. LoRA (Hu et al., 2021) freezes every weight $W$ and learns a
# low-rank change beside it,
#
# $$y = W x + \frac{\alpha}{r} B A x, \qquad A \in \mathbb{R}^{r \times d_\text{in}},\;
#   B \in \mathbb{R}^{d_\text{out} \times r},\; B = 0 \text{ at the start},$$
#
# so only $r (d_\text{in} + d_\text{out})$ numbers per layer train, and the model starts
# out exactly the pretrained one. Here the "pretrained" model is a small GPT that copies
# six digits; LoRA turns it into one that writes each digit plus one (9 becomes 0).

# %%
import os

import numpy as np
import matplotlib.pyplot as plt

import tinygpt as tg
from tinygpt.nn.lora import apply_lora, merge_lora
from tinygpt.optim import AdamW, configure_param_groups

SMALL = os.environ.get("TINYGPT_NOTEBOOK_SMALL") == "1"
PRETRAIN_ITERS, FINETUNE_ITERS = (150, 100) if SMALL else (400, 300)
RANK = 4
N, V = 6, 10                                  # six digits, ten symbols

rng = np.random.default_rng(0)


def batch(size, task):
    """Sequences 'prompt, answer' for task "copy" (the same digits) or "add1" (each digit
    plus one, modulo 10); the loss is on the answer."""
    prompt = rng.integers(0, V, size=(size, N))
    answer = prompt if task == "copy" else (prompt + 1) % V
    sequence = np.concatenate([prompt, answer], axis=1)
    targets = sequence[:, 1:].copy()
    targets[:, :N - 1] = -1
    return tg.tensor(sequence[:, :-1]), tg.tensor(targets)


def accuracy(model, task, n=500):
    """The share of n new prompts whose whole answer the model gets right (the most likely
    digit at each answer position)."""
    x, y = batch(n, task)
    with tg.no_grad():
        logits, _ = model(x)
    return float((logits.numpy()[:, N - 1:].argmax(-1) == y.numpy()[:, N - 1:]).all(axis=1).mean())


def train(model, task, iters, lr):
    optimizer = AdamW(configure_param_groups(model.named_parameters(), 0.0), lr=lr)
    losses = []
    for _ in range(iters):
        _, loss = model(*batch(64, task))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses

# %% [markdown]
# ## The pretrained model: it copies

# %%
tg.manual_seed(0)
config = tg.GPTConfig(vocab_size=V, block_size=2 * N - 1, n_layer=2, n_head=2, n_embd=32,
                      dropout=0.0, bias=False)
base = tg.GPT(config)
pretrain_losses = train(base, "copy", PRETRAIN_ITERS, 3e-3)
print(f"copy: {accuracy(base, 'copy'):.0%} right, add1: {accuracy(base, 'add1'):.0%} right")

# %% [markdown]
# ## Adapters on the attention and MLP layers
#
# `apply_lora` wraps the named Linear layers of every block (`c_attn`, `c_proj`, `c_fc`)
# in `LoRALinear`s and freezes everything else. The counts:

# %%
state = base.state_dict()
model = tg.GPT(config)
model.load_state_dict(state)                  # a copy of the pretrained model
total_before = model.num_parameters()
apply_lora(model, rank=RANK, alpha=2 * RANK, targets=("c_attn", "c_proj", "c_fc"))
trainable = model.num_parameters(only_trainable=True)
print(f"pretrained model: {total_before:,} parameters, all trainable in full fine-tuning")
print(f"with rank-{RANK} adapters: {model.num_parameters():,} parameters, {trainable:,} trainable "
      f"({trainable / total_before:.1%} of the pretrained model's)")
print("(a large share because this model is tiny: at GPT-2's size, rank-8 adapters are about 1%)")
for name, p in model.named_parameters():
    if p.requires_grad:
        print(f"  {name:38s} {tuple(p.shape)}")

with tg.no_grad():
    x, _ = batch(4, "add1")
    same = np.array_equal(model(x)[0].numpy(), base(x)[0].numpy())
print("before fine-tuning the adapted model computes exactly what the base does:", same)
assert same

# %% [markdown]
# ## Fine-tune the adapters on the new task
#
# For comparison, full fine-tuning of another copy (every weight trains) for the same
# number of steps.

# %%
lora_losses = train(model, "add1", FINETUNE_ITERS, 1e-2)
full = tg.GPT(config)
full.load_state_dict(state)
full_losses = train(full, "add1", FINETUNE_ITERS, 3e-3)

lora_name = f"LoRA rank {RANK} ({trainable:,} trained)"
results = {
    "pretrained": (accuracy(base, "copy"), accuracy(base, "add1")),
    lora_name: (accuracy(model, "copy"), accuracy(model, "add1")),
    f"full fine-tuning ({total_before:,} trained)": (accuracy(full, "copy"),
                                                    accuracy(full, "add1")),
}
print(f"{'model':38s} {'copy':>6s} {'add1':>8s}")
for name, (c, r) in results.items():
    print(f"{name:38s} {c:6.0%} {r:8.0%}")
assert results[lora_name][1] > results["pretrained"][1]

fig, ax = plt.subplots(figsize=(8, 4))
steps = np.arange(FINETUNE_ITERS)
ax.plot(steps, lora_losses, label=f"LoRA, rank {RANK}: {trainable:,} parameters trained")
ax.plot(steps, full_losses, label=f"full fine-tuning: {total_before:,} parameters trained")
ax.set_yscale("log"); ax.set_xlabel("fine-tuning step"); ax.set_ylabel("loss on the answer")
ax.set_title("from copying to adding one: the loss on the new task")
ax.legend()
plt.show()

# %% [markdown]
# Fine-tuning costs the old skill: the pretrained weights are untouched under LoRA, but
# the model they form with the adapters now adds one, so it copies no longer.
#
# ## Merge: a plain GPT again
#
# `merge_lora` adds $\frac{\alpha}{r} B A$ into each frozen weight and puts the plain
# Linear back: the same function, at the speed of the base model, with no adapter left.

# %%
with tg.no_grad():
    x, _ = batch(8, "add1")
    before = model(x)[0].numpy()
    merge_lora(model)
    after = model(x)[0].numpy()
print("largest change in the logits from merging:", float(np.abs(after - before).max()))
print("LoRA layers left:", sum(type(m).__name__ == "LoRALinear" for m in model.modules()),
      "| add1 accuracy after merging:", f"{accuracy(model, 'add1'):.0%}")
assert np.allclose(after, before, atol=1e-4)

# %% [markdown]
# ## Try
#
# - `RANK = 1`: is one direction per layer enough?
# - Adapt `c_attn` only, then `c_fc` only: which layers does the new task need?
# - A task that moves attention instead: answer the digits in reverse order. From this
#   copying model, rank-4 adapters stayed at a loss of about ln 10 for 150 steps in our
#   runs, while full fine-tuning got about half the answers right in as many steps: a
#   small change of the weights is not always a small change of what the model does.
# - `python -m tinygpt train --init_from FOLDER --lora_rank 8` does this for a GPT-2 folder,
#   and `python -m bench lora` (from the repository root) compares LoRA with full fine-tuning there.
