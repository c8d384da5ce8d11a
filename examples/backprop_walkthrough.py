"""Watch backpropagation happen, one op at a time: first a four-op expression, then a
whole (tiny) GPT.

    python examples/backprop_walkthrough.py                 # writes into out-walkthrough/
    python examples/backprop_walkthrough.py --out_dir /tmp/walk

The forward pass runs under a recording `tinygpt.autograd.trace`, which sees every op
with its inputs. backward() then gives each intermediate tensor its gradient dL/dy
(`retain_grad()`). For each op on the path from the inputs to the loss, the walkthrough
prints:

- the derivative the op implements, read from the op's own docstring;
- for a few elements of each input x, the gradient flowing back through this op,
  computed twice: analytically by the op's backward (the vector-Jacobian product
  dy . dy/dx, which is what the backward pass runs), and numerically by central
  differences, (f(x + eps) - f(x - eps)) / (2 eps) with f(x) = sum(dy * op(x));
- at the end, dL/dx of a few leaves (the parameters) against central differences of
  the whole loss: the chain rule, checked end to end.

Everything runs in float64, where central differences agree with backward to about 1e-9,
and on the reference ops (`tg.use_reference_ops()`): the plain code whose docstrings are
printed, not the CPU's fast kernels.
Last, the graph is written as Graphviz DOT text (and rendered to SVG when Graphviz's
`dot` is installed). Exit status 1 when any pair disagrees.
"""

import argparse
import inspect
import os
import shutil
import sys

import numpy as np

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.autograd import to_dot, trace
from tinygpt.autograd.docs import op_doc

EPS = 1e-6                   # the central-difference step (float64)
ATOL, RTOL = 1e-6, 1e-4      # |analytic - numeric| <= ATOL + RTOL * |numeric|
ELEMENTS = 2                 # elements shown per input: those with the largest gradient


class Recorder(trace):
    """A trace that also keeps each op call: (op class, ctx, input tensors, params)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, cls, ctx, inputs, params):
        self.calls.append((cls, ctx, list(inputs), dict(params)))
        return super().forward(cls, ctx, inputs, params)


def ops_on_path(loss, recorder):
    """The recorded calls whose output the loss depends on, in forward order, each with
    its output tensor; `retain_grad()` is called on every such output."""
    outputs, stack, seen = {}, [loss], set()
    while stack:                              # walk the graph back from the loss
        t = stack.pop()
        ctx = t.grad_fn
        if ctx is None or id(ctx) in seen:
            continue
        seen.add(id(ctx))
        outputs[id(ctx)] = t
        stack.extend(p for p in ctx.parents if p.requires_grad)
    path = []
    for cls, ctx, inputs, params in recorder.calls:
        out = outputs.get(id(ctx))
        if out is not None:
            out.retain_grad()
            path.append((cls, inputs, params, out))
    return path


def local_gradients(cls, inputs, params, dy):
    """For each input that requires grad: (index, analytic, numeric) arrays where
    analytic is the op's backward of `dy` and numeric the central differences of
    sum(dy * op(x)) at the ELEMENTS entries with the largest |analytic|."""
    fresh = [tg.tensor(x.numpy(), requires_grad=x.requires_grad) for x in inputs]
    cls.apply(*fresh, **params).backward(dy)
    results = []
    for i, x in enumerate(fresh):
        if not x.requires_grad:               # integer ids, masks, targets: no gradient
            continue
        analytic = x.grad.numpy()
        order = np.argsort(-np.abs(analytic), axis=None, kind="stable")[:ELEMENTS]
        rows = []
        for flat in order:
            index = np.unravel_index(flat, analytic.shape)
            numeric = central_difference(
                lambda args: (cls.apply(*args, **params).numpy() * dy.numpy()).sum(),
                fresh, i, index)
            rows.append((index, float(analytic[index]), numeric))
        results.append((i, x.shape, rows))
    return results


def central_difference(f, inputs, i, index):
    """(f(x_i + eps e_index) - f(x_i - eps e_index)) / (2 eps), the other inputs fixed."""
    values = []
    for sign in (+1, -1):
        data = inputs[i].numpy().copy()
        data[index] += sign * EPS
        args = [tg.tensor(data) if j == i else tg.tensor(x.numpy())
                for j, x in enumerate(inputs)]
        with tg.no_grad():
            values.append(float(f(args)))
    return (values[0] - values[1]) / (2 * EPS)


class Report:
    """Prints the comparisons and remembers the worst one."""

    def __init__(self):
        self.count = 0
        self.failures = 0
        self.worst = 0.0

    def row(self, label, analytic, numeric):
        diff = abs(analytic - numeric)
        ok = diff <= ATOL + RTOL * abs(numeric)
        self.count += 1
        self.failures += not ok
        self.worst = max(self.worst, diff)
        print(f"      {label:<28} analytic {analytic:+.9e}   numeric {numeric:+.9e}   "
              f"|diff| {diff:.1e}{'' if ok else '   MISMATCH'}")


def explain_ops(path, report):
    """Print each op's derivative and its local analytic / numeric gradients."""
    explained = set()
    for step, (cls, inputs, params, out) in enumerate(path, 1):
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        print(f"\n[{step}] {cls.name}({shapes}) -> {tuple(out.shape)}")
        if cls.name not in explained:
            explained.add(cls.name)
            doc = op_doc(cls)
            print(f"    forward:    {doc['forward']}")
            derivative = inspect.cleandoc(doc["derivative"]) or "(not stated in the docstring)"
            lines = derivative.splitlines()
            print(f"    derivative: {lines[0]}")
            for line in lines[1:]:
                print(f"                {line}")
        else:
            print(f"    derivative: as for {cls.name} above")
        if out.grad is None:
            print("    (no gradient reached this op's output)")
            continue
        for i, shape, rows in local_gradients(cls, inputs, params, out.grad):
            print(f"    {_gradient_name(cls, i)}, input {i} {tuple(shape)}:")
            for index, analytic, numeric in rows:
                report.row(f"[{', '.join(map(str, index))}]", analytic, numeric)


def _gradient_name(cls, i):
    """`da`, `dx`, `dweight`: d and the name forward gives its input i, when it names it
    (layer norm takes its weight and bias as `*params`)."""
    names = []
    for p in list(inspect.signature(cls.forward).parameters.values())[1:]:
        if p.kind is not p.POSITIONAL_OR_KEYWORD:
            break
        names.append(p.name)
    return f"d{names[i]}" if i < len(names) else "gradient"


def check_leaves(loss_fn, leaves, report):
    """dL/dleaf from backward against central differences of the whole loss."""
    print("\nEnd to end: dL/dx of the leaves, backward against central differences of L")
    for name, leaf in leaves:
        grad = leaf.grad.numpy()
        order = np.argsort(-np.abs(grad), axis=None, kind="stable")[:ELEMENTS]
        print(f"    {name} {tuple(leaf.shape)}:")
        for flat in order:
            index = np.unravel_index(flat, grad.shape)
            saved = leaf.data[index].copy()
            values = []
            for sign in (+1, -1):
                leaf.data[index] = saved + sign * EPS
                with tg.no_grad():
                    values.append(loss_fn().item())
            leaf.data[index] = saved
            numeric = (values[0] - values[1]) / (2 * EPS)
            report.row(f"[{', '.join(map(str, index))}]", float(grad[index]), numeric)


def write_graph(loss, out_dir, name, group_by_module=False):
    """Write the DOT text of loss's graph (before backward frees it); render it as SVG
    when Graphviz is installed. Returns the paths written."""
    dot_path = os.path.join(out_dir, f"{name}.dot")
    text = to_dot(loss, group_by_module=group_by_module, path=dot_path)
    written = [dot_path]
    if shutil.which("dot"):
        svg_path = os.path.join(out_dir, f"{name}.svg")
        to_dot(loss, group_by_module=group_by_module, render="svg", path=svg_path)
        written.append(svg_path)
    print(f"\nwrote the graph ({text.count('->')} edges) to {' and '.join(written)}"
          + ("" if len(written) > 1 else " (install Graphviz for an SVG: dot -Tsvg)"))
    return written


def expression(out_dir, report):
    print("=" * 78)
    print("Part 1: L = sum(tanh(a * b + c)) with a, b of shape (3,) and a scalar c")
    print("=" * 78)
    a = tg.tensor([0.5, -1.0, 2.0], dtype=tg.float64, requires_grad=True)
    b = tg.tensor([1.5, 0.25, -0.5], dtype=tg.float64, requires_grad=True)
    c = tg.tensor(0.1, dtype=tg.float64, requires_grad=True)
    a.name, b.name, c.name = "a", "b", "c"

    def loss_fn():
        return (a * b + c).tanh().sum()

    with Recorder() as recorder:
        loss = loss_fn()
    print(f"L = {loss.item():.6f}")
    path = ops_on_path(loss, recorder)
    graph = write_graph(loss, out_dir, "expression")
    loss.backward()
    explain_ops(path, report)
    check_leaves(loss_fn, [("a", a), ("b", b), ("c", c)], report)
    return graph


def gpt(out_dir, report):
    print("\n" + "=" * 78)
    print("Part 2: a tiny GPT (1 block, 2 heads, 8 channels, float64) and its loss")
    print("=" * 78)
    tg.manual_seed(0)
    config = GPTConfig(block_size=8, vocab_size=12, n_layer=1, n_head=2, n_embd=8, dropout=0.0)
    model = GPT(config)
    model.to(tg.float64)
    rng = np.random.default_rng(0)
    idx = tg.tensor(rng.integers(0, config.vocab_size, size=(2, 6)))
    targets = tg.tensor(rng.integers(0, config.vocab_size, size=(2, 6)))

    def loss_fn():
        return model(idx, targets)[1]

    with Recorder() as recorder:
        loss = loss_fn()
    print(f"loss = {loss.item():.6f} (about ln {config.vocab_size} = "
          f"{np.log(config.vocab_size):.6f} for an untrained model)")
    path = ops_on_path(loss, recorder)
    graph = write_graph(loss, out_dir, "gpt", group_by_module=True)
    loss.backward()
    explain_ops(path, report)
    named = dict(model.named_parameters())
    leaves = [(name, named[name]) for name in
              ("transformer.wte.weight", "transformer.h.0.attn.c_attn.weight",
               "transformer.h.0.mlp.c_fc.bias", "transformer.ln_f.weight")]
    check_leaves(loss_fn, leaves, report)
    return graph


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out_dir", default="out-walkthrough",
                        help="where to write the graphs (default: out-walkthrough)")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    tg.use_reference_ops()         # the code the printed docstrings describe
    report = Report()
    written = expression(args.out_dir, report) + gpt(args.out_dir, report)
    print(f"\n{report.count} gradients compared, largest |analytic - numeric| = "
          f"{report.worst:.1e}; {report.failures} mismatch(es)")
    print("graphs: " + ", ".join(written))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
