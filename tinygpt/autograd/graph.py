"""Draw the graph behind a tensor as Graphviz DOT text (floor 2). Imports: nothing of tinygpt.

    >>> loss = (x @ w).tanh().sum()
    >>> print(to_dot(loss))            # paste into https://dreampuf.github.io/GraphvizOnline
    >>> to_dot(loss, render="svg", path="loss.svg")   # needs Graphviz's `dot` on PATH

Each op call is one box labelled with the op's name and its output's shape and dtype;
each leaf is an ellipse labelled with its `.name` (a parameter's dotted name, once
`Module.named_parameters()` has set it), shape and dtype. Edges run from each input to the
op that consumed it, so data flows top to bottom and the output is the last box (drawn
with a double border). Leaves that require a gradient are filled; constants (targets,
masks, literals) are grey.

The graph is what backward() walks and then frees, so call `to_dot` before backward(),
or call backward(retain_graph=True).
"""

import os
import shutil
import subprocess

from .engine import topological_order

_FREED = ("to_dot: this tensor's graph was freed by backward(); draw it before calling "
          "backward(), or call backward(retain_graph=True)")
FORMATS = ("svg", "png", "pdf")


def to_dot(tensor, group_by_module=False, render=None, path=None):
    """Graphviz DOT text of the graph that produced `tensor`.

    group_by_module: False, True, or a function name -> cluster name (or None). With
        True, a parameter named like `transformer.h.3.attn.c_attn.weight` goes into
        the cluster of its numbered module, `transformer.h.3`; a name without a number,
        like `transformer.wte.weight`, into its module `transformer.wte`; each op
        joins one of its inputs' clusters (see `assign_clusters`), so a whole GPT
        reads as one box per block. Inside a cluster, a parameter is labelled with the
        rest of its name (`attn.c_attn.weight` in the box `transformer.h.3`).
    render: None (DOT text only), or "svg" / "png" / "pdf": also write the picture to
        `path` with Graphviz's `dot` program.
    path: where to write: the picture when `render` is given, else the DOT text.

    Returns the DOT text. The graph is walked with an explicit stack, so a chain of
    100,000 ops draws at any recursion limit (Graphviz itself is another matter).
    """
    if render is not None:
        if render not in FORMATS:
            raise ValueError(f"to_dot: render must be one of {FORMATS} or None, got {render!r}")
        if path is None:
            raise ValueError(f"to_dot: render={render!r} needs path= (the file to write)")
    nodes = topological_order(tensor, every_input=True, freed_message=_FREED)
    index = {id(t): i for i, t in enumerate(nodes)}
    clusters = assign_clusters(nodes, _cluster_rule(group_by_module)) if group_by_module else {}

    lines = ["digraph tinygpt {",
             ('  node [shape=box, style="rounded,filled", fillcolor=white, '
              'fontname="Helvetica", fontsize=10];'),
             '  edge [arrowsize=0.6];']
    body = {}                                  # cluster name (or None) -> node lines
    for t in nodes:
        cluster = clusters.get(id(t))
        body.setdefault(cluster, []).append(
            f"  n{index[id(t)]} [{_node_attributes(t, t is tensor, cluster)}];")
    lines += body.pop(None, [])
    for k, (name, members) in enumerate(body.items()):
        lines.append(f"  subgraph cluster_{k} {{")
        lines.append(f'    label="{_escape(name)}"; style=rounded; color=gray50; '
                     'fontname="Helvetica";')
        lines += ["  " + line for line in members]
        lines.append("  }")
    for t in nodes:
        if t._ctx is not None:
            for parent in t._ctx.parents:
                lines.append(f"  n{index[id(parent)]} -> n{index[id(t)]};")
    lines.append("}")
    text = "\n".join(lines) + "\n"

    if render is not None:
        _render(text, render, path)
    elif path is not None:
        with open(path, "w") as f:
            f.write(text)
    return text


def module_of(name):
    """The cluster of a parameter name: the prefix up to its first numbered component
    (`transformer.h.3.mlp.c_fc.weight` -> `transformer.h.3`, a block of a ModuleList),
    else its module (`transformer.wte.weight` -> `transformer.wte`); None for a name
    without dots."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[:i + 1])
    return ".".join(parts[:-1]) or None


def _cluster_rule(group_by_module):
    if group_by_module is True:
        return module_of
    if callable(group_by_module):
        return group_by_module
    raise TypeError(f"to_dot: group_by_module must be a bool or a function name -> cluster, "
                    f"got {group_by_module!r}")


def assign_clusters(nodes, rule=module_of):
    """Map id(tensor) -> cluster name for the tensors `nodes` (in topological order).

    A leaf with a `.name` goes where `rule(name)` says. An op joins one of its inputs'
    clusters; when they disagree it takes the cluster that appeared most recently, a
    cluster appearing when its first op joins it and a parameter's cluster not seen yet
    counting as the most recent of all. So in a GPT, block i's first layer norm, fed
    by block i-1's residual stream and block i's weights, opens block i; the residual
    add `x + attn(x)` stays in block i; and the tied output head, fed by `ln_f` and the
    embedding matrix, joins `ln_f` rather than the embedding from the start of the graph.
    Unnamed leaves (inputs, targets, constants) belong to no cluster, nor does an op
    none of whose inputs has one. Ties go to the later input.
    """
    cluster, born = {}, {}                     # born: cluster -> when its first op joined
    for step, t in enumerate(nodes):
        ctx = t._ctx
        if ctx is None:
            name = getattr(t, "name", None)
            if name:
                found = rule(name)
                if found is not None:
                    cluster[id(t)] = found
            continue
        best, best_time = None, -1
        for parent in ctx.parents:
            c = cluster.get(id(parent))
            if c is None:
                continue
            time = born.get(c, len(nodes))     # unseen: newer than anything seen
            if time >= best_time:
                best, best_time = c, time
        if best is not None:
            cluster[id(t)] = best
            born.setdefault(best, step)
    return cluster


def _node_attributes(t, is_output, cluster=None):
    shape = "(" + ", ".join(str(n) for n in t.shape) + ("," if t.ndim == 1 else "") + ")"
    name = getattr(t, "name", None)
    if name and cluster and name.startswith(cluster + "."):
        name = name[len(cluster) + 1:]         # the cluster's label says the rest
    if t._ctx is not None:
        title = type(t._ctx).name
        if name:
            title += f" [{name}]"
        attributes = f'label="{_escape(title)}\\n{shape} {t.dtype}"'
        return attributes + (", peripheries=2" if is_output else "")
    title = name or ("input" if t.requires_grad else "constant")
    attributes = f'label="{_escape(title)}\\n{shape} {t.dtype}", shape=ellipse'
    if t.requires_grad:
        return attributes + ", fillcolor=lightblue" + (", peripheries=2" if is_output else "")
    return attributes + ", fillcolor=gray90, color=gray50, fontcolor=gray30"


def _escape(text):
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _render(text, fmt, path):
    """Write the picture with Graphviz's `dot`; a clear error when it is not installed."""
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(
            "to_dot: rendering needs Graphviz's `dot` program, which is not on PATH; install "
            "Graphviz (Debian/Ubuntu: apt-get install graphviz, macOS: brew install graphviz, "
            "conda: conda install graphviz), or call to_dot without render= and paste the "
            "DOT text into any Graphviz viewer")
    result = subprocess.run([dot, f"-T{fmt}", "-o", os.fspath(path)], input=text.encode(),
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"to_dot: `dot -T{fmt}` failed with status {result.returncode}: "
                           f"{result.stderr.decode(errors='replace').strip()}")
