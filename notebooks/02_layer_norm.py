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
# # 2. Layer norm: a derivation, its code, and what checks it
#
# Layer norm is the op where a hand-written backward is most easily wrong: every output
# of a row depends on every input of that row, through the mean and the variance. Here:
# the derivation, the reference op's code read from the package, the gradient check, the
# fast CPU kernel tested equal to the reference, and what the check says about a backward
# that is wrong by 0.1%.

# %%
import inspect
import os
from unittest import mock

import numpy as np
import matplotlib.pyplot as plt

import tinygpt as tg
import tinygpt.nn.functional as F
from tinygpt.autograd import GradcheckError, gradcheck

SMALL = os.environ.get("TINYGPT_NOTEBOOK_SMALL") == "1"
ROWS, D = (3, 8) if SMALL else (6, 32)       # the size of the checked inputs
np.set_printoptions(precision=6, suppress=True)

# The op, looked up by its registered name: tg.OPS maps each op name to its reference
# class, and that class's `kernels` maps a device to its fast kernel.
LayerNormOp = tg.OPS["layer_norm"]
LayerNormFast = LayerNormOp.kernels["cpu"]
print(LayerNormOp.__module__, LayerNormOp.__qualname__, "| CPU kernel:",
      LayerNormFast.__module__, LayerNormFast.__qualname__)

# %% [markdown]
# ## The forward pass
#
# For one row $x \in \mathbb{R}^D$ with weight $w$ and bias $b$:
#
# $$\mu = \frac1D \sum_j x_j, \qquad \sigma^2 = \frac1D \sum_j (x_j - \mu)^2, \qquad
#   r = \frac{1}{\sqrt{\sigma^2 + \epsilon}},$$
#
# $$n_j = (x_j - \mu)\, r, \qquad y_j = n_j w_j + b_j .$$
#
# Each row comes out with mean $b$ and spread $w$, whatever its scale going in:

# %%
rng = np.random.default_rng(0)
x_demo = tg.tensor(rng.normal(0, 1, size=(4, 256)) * np.array([[0.1], [1], [5], [20]])
                   + np.array([[3], [-2], [0], [10]]), dtype=tg.float32)
y_demo = F.layer_norm(x_demo, (256,))
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
for row in range(4):
    axes[0].hist(x_demo.numpy()[row], bins=40, histtype="step", label=f"row {row}")
    axes[1].hist(y_demo.numpy()[row], bins=40, histtype="step", label=f"row {row}")
axes[0].set_title("x: four rows of different mean and scale")
axes[1].set_title("layer_norm(x): every row mean 0, std 1")
axes[0].set_xlabel("value"); axes[1].set_xlabel("value"); axes[0].set_ylabel("count")
axes[1].legend()
plt.show()

# %% [markdown]
# ## The backward pass, derived
#
# Given $dy = \partial L / \partial y$: the bias and weight are easy,
# $db_j = \sum_{\text{rows}} dy_j$ and $dw_j = \sum_{\text{rows}} dy_j\, n_j$.
# For $x$, write $dn = dy \odot w$ and differentiate $n_j = (x_j - \mu) r$ with respect
# to $x_i$. The mean gives $\partial \mu / \partial x_i = 1/D$; the variance gives
#
# $$\frac{\partial r}{\partial x_i} = -\frac{r^3}{D}(x_i - \mu) = -\frac{r^2 n_i}{D},$$
#
# so that
#
# $$\frac{\partial n_j}{\partial x_i}
#   = r\left(\delta_{ij} - \frac1D\right) + (x_j - \mu)\frac{\partial r}{\partial x_i}
#   = r\left(\delta_{ij} - \frac1D - \frac{n_j n_i}{D}\right).$$
#
# Summing over $j$ with the weights $dn_j$ gives the whole backward in one line:
#
# $$dx_i = \sum_j dn_j \frac{\partial n_j}{\partial x_i}
#   = r\left(dn_i - \overline{dn} - n_i\,\overline{dn \odot n}\right),$$
#
# where the bars are means over the row. Two row means, no $D \times D$ Jacobian.
#
# ## The reference op, read from the package
#
# This is the code every layer norm of a GPT runs when `tg.use_reference_ops()` is on; the
# derivation above is its comments:

# %%
print(inspect.getsource(LayerNormOp))

# %% [markdown]
# ## The gradient check
#
# `gradcheck` compares `backward` with central differences, element by element, in
# float64, along a random upstream gradient. Here on the reference implementation, for
# $x$, $w$ and $b$ at once:

# %%
def inputs(seed=0):
    r = np.random.default_rng(seed)
    return [tg.tensor(r.normal(0, 1, size=shape), dtype=tg.float64, requires_grad=True)
            for shape in [(ROWS, D), (D,), (D,)]]


def layer_norm(x, w, b):
    return F.layer_norm(x, (D,), w, b)


with tg.use_reference_ops():
    print("reference:", gradcheck(layer_norm, inputs()))

# %% [markdown]
# ## The fast kernel equals the reference
#
# On the CPU the op runs a faster kernel by default (blocks of rows, threads); it
# subclasses the reference and must compute the same function. Same inputs, same upstream
# gradient, both implementations, in float64 and float32:

# %%
def run(fast, dtype, seed=1):
    xs = [tg.tensor(t.numpy(), dtype=dtype, requires_grad=True) for t in inputs(seed)]
    with tg.use_reference_ops(not fast):
        y = layer_norm(*xs)
        dy = tg.tensor(np.random.default_rng(2).normal(size=y.shape), dtype=dtype)
        y.backward(dy)
    return [y.numpy()] + [t.grad.numpy() for t in xs]


for dtype, tol in [(tg.float64, 1e-12), (tg.float32, 1e-5)]:
    ref, fast = run(False, dtype), run(True, dtype)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(ref, fast)]
    print(f"{np.dtype(dtype).name}: largest |fast - reference| of y, dx, dw, db:",
          ", ".join(f"{d:.1e}" for d in diffs))
    assert max(diffs) < tol
print("fast kernel gradcheck:", gradcheck(layer_norm, inputs()))

# %% [markdown]
# ## A backward wrong by 0.1%
#
# Would the check notice a small mistake? Make a copy of the op whose backward scales
# $dx$ by a factor, have `F.layer_norm` call the copy for a moment, and check again. (The
# copy has no fast kernels, so it runs its own backward; the package's op is untouched.)
#
# An element passes when $|a - n| \le \text{atol} + \text{rtol}\,|n|$. At PyTorch's
# defaults (atol $=10^{-5}$, rtol $=10^{-3}$) an error of exactly 0.1% sits on the rtol
# line and passes; float64 central differences are good to about $10^{-9}$ here, so a
# tighter check (atol $=10^{-8}$, rtol $=10^{-5}$) still passes the real op and catches it.

# %%
def wrong_by(factor):
    class SlightlyWrong(LayerNormOp):
        kernels = {}                     # no fast kernel: always this class's backward

        @staticmethod
        def backward(ctx, dy):
            dx, *rest = LayerNormOp.backward(ctx, dy)
            return (dx * factor, *rest)
    return SlightlyWrong


# the name under which nn.functional calls the op (whatever the class is called)
name = next(k for k, v in vars(F).items() if v is LayerNormOp)
TIGHT = dict(atol=1e-8, rtol=1e-5)


def verdict(factor, **tolerances):
    with mock.patch.object(F, name, wrong_by(factor)):
        try:
            gradcheck(layer_norm, inputs(), **tolerances)
            return "passes", None
        except GradcheckError as error:
            return "RAISES", error


print("dx scaled by   default tolerances   atol=1e-8, rtol=1e-5")
for factor in (1.01, 1.001, 1.0001, 1.0):
    print(f"{factor:<14} {verdict(factor)[0]:<20} {verdict(factor, **TIGHT)[0]}")

outcome, error = verdict(1.001, **TIGHT)
assert outcome == "RAISES"
print("\nThe message for 1.001 (a GradcheckError):\n")
print(error)
print("\nthe package's op, unpatched, at the tight tolerances:",
      gradcheck(layer_norm, inputs(), **TIGHT))

# %% [markdown]
# The message names the input, the element, both values and the errors. The factor 1.0
# row is the control: the copy with the true backward passes everywhere.
#
# ## Try
#
# - Drop the `- n * mean(dn * n)` term in a copy (the variance's contribution): how far off
#   is the gradient then?
# - Check with an upstream gradient of all ones (`y.sum()` instead of gradcheck's random
#   one): the mean terms make every row of $dx$ sum to zero, so which mistakes hide?
# - `python -m tinygpt gradcheck` runs the check for every op of the package.
