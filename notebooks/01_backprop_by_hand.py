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
# # 1. Backprop by hand, then by the engine
#
# One small expression, a two-layer network with a squared error, differentiated three
# ways: on paper with the chain rule, by tinygpt's backward pass, and numerically by
# central differences. The three agree; the graph the engine walks is drawn at the end.
#
# Run a cell, look, change a number (an input, a weight, the target) and run again.

# %%
import os
import shutil

import numpy as np
import matplotlib.pyplot as plt

import tinygpt as tg

SMALL = os.environ.get("TINYGPT_NOTEBOOK_SMALL") == "1"   # CI's sizes (nothing to shrink here)
np.set_printoptions(precision=6, suppress=True)

# %% [markdown]
# ## The expression
#
# An input $x \in \mathbb{R}^3$, a hidden layer of 4 tanh units and one linear output,
# scored against a target $t$:
#
# $$a = W_1 x + b_1, \qquad h = \tanh(a), \qquad y = w_2 \cdot h + b_2, \qquad
#   L = \tfrac12 (y - t)^2 .$$
#
# ## On paper
#
# Backward from $L$, each step multiplies by one local derivative (the chain rule):
#
# $$\frac{\partial L}{\partial y} = y - t$$
#
# $$\frac{\partial L}{\partial b_2} = \frac{\partial L}{\partial y}, \qquad
#   \frac{\partial L}{\partial w_2} = \frac{\partial L}{\partial y}\, h, \qquad
#   \frac{\partial L}{\partial h} = \frac{\partial L}{\partial y}\, w_2$$
#
# $$\frac{\partial L}{\partial a} = \frac{\partial L}{\partial h} \odot (1 - h^2)
#   \qquad \text{since } \tanh'(a) = 1 - \tanh^2(a)$$
#
# $$\frac{\partial L}{\partial b_1} = \frac{\partial L}{\partial a}, \qquad
#   \frac{\partial L}{\partial W_1} = \frac{\partial L}{\partial a}\, x^\top
#   \;(\text{an outer product: } \partial L / \partial W_{1,ij} = \partial L/\partial a_i \; x_j),
#   \qquad \frac{\partial L}{\partial x} = W_1^\top \frac{\partial L}{\partial a}.$$
#
# The same, as plain NumPy, one line per formula:

# %%
rng = np.random.default_rng(0)
x_np = np.array([0.5, -1.0, 2.0])
W1_np = rng.normal(0.0, 0.5, size=(4, 3))
b1_np = np.zeros(4)
w2_np = rng.normal(0.0, 0.5, size=4)
b2_np = 0.1
t_np = 1.0

# forward
a_np = W1_np @ x_np + b1_np
h_np = np.tanh(a_np)
y_np = w2_np @ h_np + b2_np
L_np = 0.5 * (y_np - t_np) ** 2

# backward, by hand
dy = y_np - t_np
db2 = dy
dw2 = dy * h_np
dh = dy * w2_np
da = dh * (1 - h_np ** 2)
db1 = da
dW1 = np.outer(da, x_np)
dx = W1_np.T @ da

print(f"L = {L_np:.6f},  dL/dy = {dy:.6f}")
print("dL/dh  =", dh)
print("dL/da  =", da)
print("dL/dW1 =\n", dW1)

# %% [markdown]
# ## The same with tinygpt tensors
#
# The forward pass is written the same way; `requires_grad=True` makes the engine record
# each op, and `L.backward()` runs the recorded ops' derivatives in reverse order. Every
# tensor here is float64, the precision the gradient check needs below.
#
# `h` is an intermediate result, not a leaf: its gradient is used and dropped during the
# backward pass unless we ask to keep it (`retain_grad`), or look at it as it passes
# (`register_hook`).

# %%
def leaf(values, name):
    t = tg.tensor(np.array(values, dtype=np.float64), requires_grad=True)
    t.name = name                       # the name the graph drawing shows
    return t


x = leaf(x_np, "x")
W1 = leaf(W1_np, "W1")
b1 = leaf(b1_np, "b1")
w2 = leaf(w2_np, "w2")
b2 = leaf(b2_np, "b2")
t = tg.tensor(t_np, dtype=tg.float64)   # the target: a constant


def loss_of(x, W1, b1, w2, b2):
    h = (W1 @ x + b1).tanh()
    y = (w2 * h).sum() + b2
    return 0.5 * (y - t) ** 2, h


L, h = loss_of(x, W1, b1, w2, b2)
h.retain_grad()
seen = {}
h.register_hook(lambda grad: seen.setdefault("dL/dh", grad.numpy().copy()))
dot_text = tg.to_dot(L)                  # draw before backward: backward frees the graph
L.backward()

print(f"L = {L.item():.6f}  (by hand {L_np:.6f})")
for name, engine, by_hand in [("dL/dW1", W1.grad, dW1), ("dL/db1", b1.grad, db1),
                              ("dL/dw2", w2.grad, dw2), ("dL/db2", b2.grad, db2),
                              ("dL/dx", x.grad, dx), ("dL/dh", h.grad, dh)]:
    diff = np.abs(engine.numpy() - by_hand).max()
    print(f"{name:7s} largest |engine - by hand| = {diff:.1e}")
    assert diff < 1e-12, name
print("the hook saw dL/dh =", seen["dL/dh"])

# %% [markdown]
# ## The numerical check
#
# Neither the paper nor the engine is evidence on its own. Central differences need no
# derivative at all: nudge one number by $\pm\varepsilon$ and watch the loss,
#
# $$\frac{\partial L}{\partial \theta} \approx
#   \frac{L(\theta + \varepsilon) - L(\theta - \varepsilon)}{2\varepsilon},$$
#
# with an error of order $\varepsilon^2$. First by hand for one weight, then
# `tinygpt.autograd.gradcheck` for every element of every input (it contracts the output
# with a random upstream gradient and raises an error naming the worst element when a
# gradient is off).

# %%
eps = 1e-6
i, j = 2, 1
plus, minus = W1_np.copy(), W1_np.copy()
plus[i, j] += eps
minus[i, j] -= eps


def loss_np(W):
    return 0.5 * (w2_np @ np.tanh(W @ x_np + b1_np) + b2_np - t_np) ** 2


numeric = (loss_np(plus) - loss_np(minus)) / (2 * eps)
print(f"dL/dW1[{i},{j}]: numeric {numeric:.10f}, by hand {dW1[i, j]:.10f}, "
      f"engine {W1.grad.numpy()[i, j]:.10f}")

from tinygpt.autograd import gradcheck

print("gradcheck:", gradcheck(lambda *p: loss_of(*p)[0], [x, W1, b1, w2, b2]))

# %% [markdown]
# ## The graph the engine walked
#
# `tg.to_dot(L)` writes the graph as Graphviz DOT text: ellipses are leaves (blue when
# they want a gradient, grey for constants such as the target and the literals 0.5 and 2),
# boxes are ops, arrows run from inputs to the op that used them, and the loss has a
# double border. With Graphviz's `dot` installed the text becomes a picture; without it,
# the small layout below draws the same nodes and edges with matplotlib: each op one row
# below the deepest op feeding it, each leaf just above the first op that uses it.

# %%
print(dot_text)

# %%
import re


def parse_dot(text):
    """Nodes {id: (label, is_leaf, wants_grad)} and edges [(src, dst)] of to_dot's text."""
    nodes, edges = {}, []
    for line in text.splitlines():
        edge = re.match(r"\s*(n\d+) -> (n\d+);", line)
        node = re.match(r'\s*(n\d+) \[label="([^"]*)"(.*)\];', line)
        if edge:
            edges.append(edge.groups())
        elif node:
            name, label, rest = node.groups()
            nodes[name] = (label.replace("\\n", "\n"), "ellipse" in rest, "lightblue" in rest)
    return nodes, edges


def draw_graph(text, ax):
    """Lay out to_dot's graph in rows and draw it: an op one row below its deepest input
    op, a leaf in the row above the first op that uses it."""
    nodes, edges = parse_dot(text)
    inputs = {n: [s for s, d in edges if d == n] for n in nodes}
    depth = {}
    for n in nodes:                      # to_dot lists nodes in topological order
        if inputs[n]:                    # an op: one row below its deepest input op
            depth[n] = 1 + max((depth[s] for s in inputs[n] if inputs[s]), default=0)
    for n in nodes:                      # a leaf: just above the first op that uses it
        if not inputs[n]:
            depth[n] = min(depth[d] for s, d in edges if s == n) - 1
    rows = {}
    for n in nodes:
        rows.setdefault(depth[n], []).append(n)
    pos = {}
    for d in sorted(rows):               # order each row by the mean position of its inputs
        row = sorted(rows[d], key=lambda n: np.mean([pos[s][0] for s in inputs[n]])
                     if inputs[n] else 0.0)
        for k, n in enumerate(row):
            pos[n] = (k - (len(row) - 1) / 2, -d)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    last = list(nodes)[-1]
    for n, (label, is_leaf, wants_grad) in nodes.items():
        color = "lightblue" if wants_grad else ("0.9" if is_leaf else "white")
        style = "round,pad=0.3" if is_leaf else "square,pad=0.3"
        ax.text(*pos[n], label, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle=style, fc=color, ec="black", lw=2 if n == last else 1))
    # Arrows from the bottom edge of a box to the top edge of the next: a box of two lines
    # of 8-point text with its padding is about 26 points high.
    inches = ax.get_position().height * ax.figure.get_figheight()
    half = 13 / 72 * (ax.get_ylim()[1] - ax.get_ylim()[0]) / inches
    for s, d in edges:
        ax.annotate("", xy=(pos[d][0], pos[d][1] + half), xytext=(pos[s][0], pos[s][1] - half),
                    arrowprops=dict(arrowstyle="-|>", color="0.4", shrinkA=0, shrinkB=0))
    ax.axis("off")


if shutil.which("dot"):
    import tempfile
    from IPython.display import Image, display
    picture = os.path.join(tempfile.mkdtemp(), "graph.png")
    tg.to_dot(loss_of(x, W1, b1, w2, b2)[0], render="png", path=picture)
    display(Image(picture))
else:
    print("Graphviz's dot is not installed here; the layout below draws the graph")
fig, ax = plt.subplots(figsize=(9, 7))
draw_graph(dot_text, ax)
ax.set_title("L = 0.5 (w2 . tanh(W1 x + b1) + b2 - t)^2: data flows downwards")
plt.show()

# %% [markdown]
# ## Try
#
# - Set `t_np` to the output `y_np`: every gradient becomes 0 (nothing to correct).
# - Make a hidden unit saturate (multiply a row of `W1_np` by 20): its $1 - h^2$ is
#   almost 0 and no gradient reaches its weights. Notebook 4 looks for such units in a GPT.
# - `python examples/backprop_walkthrough.py` does this op by op for a whole (tiny) GPT.
