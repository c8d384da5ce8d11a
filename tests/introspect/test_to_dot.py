"""to_dot: DOT text of the graph behind a tensor, clusters per module, rendering."""

import re
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn.functional as F
from tinygpt.autograd import to_dot, trace
from tinygpt.autograd.graph import module_of

NODE = re.compile(r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)"(.*)\];$')
EDGE = re.compile(r"^\s*(n\d+) -> (n\d+);$")
CLUSTER = re.compile(r"^\s*subgraph (cluster_\d+) \{$")
CLUSTER_LABEL = re.compile(r'^\s*label="((?:[^"\\]|\\.)*)";')


def parse(text):
    """A small DOT reader for to_dot's output: nodes {id: (label, attributes, cluster)},
    edges [(tail, head)], clusters {cluster label: [node ids]}. Fails on unbalanced
    braces or a line it does not understand."""
    assert text.count("{") == text.count("}"), "unbalanced braces"
    lines = text.strip().splitlines()
    assert lines[0] == "digraph tinygpt {" and lines[-1] == "}"
    nodes, edges, clusters = {}, [], {}
    current, depth = None, 1
    for line in lines[1:-1]:
        stripped = line.strip()
        if stripped.startswith(("node [", "edge [")):
            continue
        if CLUSTER.match(line):
            current, depth = "", depth + 1
            continue
        if stripped == "}":
            current, depth = None, depth - 1
            continue
        label = CLUSTER_LABEL.match(line)
        if label and current == "":
            current = label.group(1)
            clusters.setdefault(current, [])
            continue
        node = NODE.match(line)
        if node:
            ident, text_label, attributes = node.groups()
            assert ident not in nodes, f"node {ident} defined twice"
            nodes[ident] = (text_label.replace("\\n", "\n"), attributes, current)
            if current is not None:
                clusters[current].append(ident)
            continue
        edge = EDGE.match(line)
        assert edge, f"unexpected DOT line: {line!r}"
        edges.append(edge.groups())
    assert depth == 1
    for tail, head in edges:
        assert tail in nodes and head in nodes, f"edge {tail} -> {head} to an unknown node"
        # Nodes are numbered in topological order: every input before its consumers.
        assert int(tail[1:]) < int(head[1:]), f"edge {tail} -> {head} against the order"
    return nodes, edges, clusters


def op_nodes(nodes):
    """Op nodes are boxes, leaves ellipses."""
    return {k: v for k, v in nodes.items() if "shape=ellipse" not in v[1]}


def test_one_node_per_op_and_edges_from_inputs():
    x = tg.randn(3, 4, requires_grad=True)
    w = tg.randn(4, 2, requires_grad=True)
    x.name, w.name = "x", "w"
    with trace() as t:
        h = (x @ w).tanh()
        loss = (h * h + 2.0).sum()
    text = to_dot(loss)
    nodes, edges, clusters = parse(text)
    ops = op_nodes(nodes)
    # One box per op call, whatever the graph looks like: count them with the tracer.
    assert len(ops) == len(t.records)
    assert sorted(label.split("\n")[0] for label, _, _ in ops.values()) == sorted(
        r.op for r in t.records)
    assert clusters == {}
    # Each op node receives one edge per input (h * h: two edges from the tanh node).
    indegree = {k: sum(1 for _, head in edges if head == k) for k in nodes}
    labels = {label.split("\n")[0]: k for k, (label, _, _) in nodes.items()}
    assert indegree[labels["matmul"]] == 2 and indegree[labels["mul"]] == 2
    assert [tail for tail, head in edges if head == labels["mul"]] == [labels["tanh"]] * 2
    assert indegree[labels["x"]] == 0 and indegree[labels["w"]] == 0
    # Labels carry the output's shape and dtype; the output node has a double border.
    assert nodes[labels["matmul"]][0] == "matmul\n(3, 2) float32"
    assert nodes[labels["x"]][0] == "x\n(3, 4) float32"
    assert "peripheries=2" in nodes[labels["sum"]][1]
    assert "constant" in {label.split("\n")[0] for label, _, _ in nodes.values()}


def test_shared_intermediate_is_one_node():
    x = tg.randn(5, dtype="float64", requires_grad=True)
    a = x.exp()
    y = (a * a + a).sum()
    nodes, edges, _ = parse(to_dot(y))
    labels = [label.split("\n")[0] for label, _, _ in nodes.values()]
    assert labels.count("exp") == 1
    exp_id = next(k for k, (label, _, _) in nodes.items() if label.startswith("exp"))
    assert sum(1 for tail, _ in edges if tail == exp_id) == 3


def test_method_and_leaf_without_graph():
    x = tg.randn(2, 3, requires_grad=True)
    y = x.sigmoid()
    assert y.to_dot() == to_dot(y)
    nodes, edges, _ = parse(to_dot(x))
    assert len(nodes) == 1 and not edges


def test_freed_graph_gives_a_clear_error_and_retain_graph_keeps_it():
    x = tg.randn(3, requires_grad=True)
    y = (x * 2.0).sum()
    before = to_dot(y)
    y.backward(retain_graph=True)
    assert to_dot(y) == before
    y.backward()
    with pytest.raises(RuntimeError, match="freed by backward.*retain_graph=True"):
        to_dot(y)


def test_long_chain_is_walked_without_recursion():
    n = 3 * sys.getrecursionlimit()
    x = tg.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(n):
        y = y * 1.0
    nodes, edges, _ = parse(to_dot(y))
    assert len(op_nodes(nodes)) == n
    assert len(edges) == 2 * n


def test_names_are_escaped():
    x = tg.randn(2, requires_grad=True)
    x.name = 'say "hi" \\ there'
    nodes, _, _ = parse(to_dot(x.tanh()))
    assert any(label.startswith('say \\"hi\\" \\\\ there') for label, _, _ in nodes.values())


def test_module_of():
    assert module_of("transformer.h.3.attn.c_attn.weight") == "transformer.h.3"
    assert module_of("transformer.h.11.ln_1.bias") == "transformer.h.11"
    assert module_of("transformer.wte.weight") == "transformer.wte"
    assert module_of("lm_head.weight") == "lm_head"
    assert module_of("0.weight") == "0"
    assert module_of("weight") is None


def _named(shape, name, rng):
    t = tg.tensor(rng.standard_normal(shape) * 0.1, requires_grad=True)
    t.name = name
    return t


def tiny_gpt_loss(n_layer=2, rng=None):
    """A two-block GPT forward written with F and parameters named as nanoGPT's, with the
    output head tied to the token embedding (as the GPT model does)."""
    rng = rng or np.random.default_rng(0)
    B, T, C, H, V = 2, 4, 8, 2, 11
    p = {}
    for name, shape in [("transformer.wte.weight", (V, C)), ("transformer.wpe.weight", (T, C))]:
        p[name] = _named(shape, name, rng)
    for i in range(n_layer):
        for name, shape in [("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
                            ("attn.c_attn.weight", (3 * C, C)), ("attn.c_attn.bias", (3 * C,)),
                            ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                            ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                            ("mlp.c_fc.weight", (4 * C, C)), ("mlp.c_fc.bias", (4 * C,)),
                            ("mlp.c_proj.weight", (C, 4 * C)), ("mlp.c_proj.bias", (C,))]:
            full = f"transformer.h.{i}.{name}"
            p[full] = _named(shape, full, rng)
    for name in ("transformer.ln_f.weight", "transformer.ln_f.bias"):
        p[name] = _named((C,), name, rng)
    idx = tg.tensor(rng.integers(0, V, size=(B, T)))
    targets = tg.tensor(rng.integers(0, V, size=(B, T)))

    x = F.embedding(idx, p["transformer.wte.weight"]) + F.embedding(
        tg.arange(T), p["transformer.wpe.weight"])
    for i in range(n_layer):
        q = f"transformer.h.{i}."
        h = F.layer_norm(x, (C,), p[q + "ln_1.weight"], p[q + "ln_1.bias"])
        qkv = F.linear(h, p[q + "attn.c_attn.weight"], p[q + "attn.c_attn.bias"])
        qh, kh, vh = (part.reshape(B, T, H, C // H).transpose(1, 2) for part in qkv.split(C, 2))
        att = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
        att = att.transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(att, p[q + "attn.c_proj.weight"], p[q + "attn.c_proj.bias"])
        h = F.layer_norm(x, (C,), p[q + "ln_2.weight"], p[q + "ln_2.bias"])
        h = F.gelu(F.linear(h, p[q + "mlp.c_fc.weight"], p[q + "mlp.c_fc.bias"]), "tanh")
        x = x + F.linear(h, p[q + "mlp.c_proj.weight"], p[q + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
    logits = F.linear(x, p["transformer.wte.weight"])               # tied head
    return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T)), p


def test_group_by_module_draws_one_cluster_per_block():
    loss, params = tiny_gpt_loss()
    text = to_dot(loss, group_by_module=True)
    nodes, edges, clusters = parse(text)
    assert set(clusters) == {"transformer.wte", "transformer.wpe", "transformer.h.0",
                             "transformer.h.1", "transformer.ln_f"}
    # The same graph as without clusters, only grouped.
    plain_nodes, plain_edges, _ = parse(to_dot(loss))
    assert nodes.keys() == plain_nodes.keys() and edges == plain_edges
    # Every parameter sits in the cluster its name gives, labelled with the rest of it.
    by_name = {}
    for ident, (label, attributes, cluster) in nodes.items():
        if "lightblue" in attributes:
            name = f"{cluster}.{label.split(chr(10))[0]}"
            assert name in params and cluster == module_of(name), name
            by_name[name] = ident
    assert sorted(by_name) == sorted(params)
    # Every op that consumes a block's parameters is in that block.
    consumers = {}
    for tail, head in edges:
        consumers.setdefault(tail, []).append(head)
    for name, ident in by_name.items():
        if name.startswith("transformer.h."):
            for op in consumers[ident]:
                assert nodes[op][2] == module_of(name), (name, nodes[op][0])
    ops_in = {c: [nodes[k][0].split("\n")[0] for k in members if k in op_nodes(nodes)]
              for c, members in clusters.items()}
    for i in range(2):
        block = ops_in[f"transformer.h.{i}"]
        assert block.count("layer_norm") == 2 and block.count("linear") == 4
        assert block.count("scaled_dot_product_attention") == 1
        assert block.count("add") == 2                       # both residual adds
    # The tied head joins ln_f (fed by ln_f and the embedding matrix), and so does the loss.
    assert ops_in["transformer.ln_f"].count("linear") == 1
    assert "cross_entropy" in ops_in["transformer.ln_f"]
    assert ops_in["transformer.wte"] == ["embedding"]
    # Unnamed leaves (token ids, positions, targets) stay outside every cluster.
    outside = [v[0].split("\n")[0] for v in nodes.values() if v[2] is None]
    assert outside and set(outside) <= {"constant", "input"}


def test_group_by_module_with_a_function():
    loss, _ = tiny_gpt_loss(n_layer=1)
    _, _, clusters = parse(to_dot(loss, group_by_module=lambda name: name.split(".")[0]))
    assert set(clusters) == {"transformer"}
    with pytest.raises(TypeError, match="group_by_module"):
        to_dot(loss, group_by_module="yes")


def test_path_without_render_writes_the_dot_text(tmp_path):
    x = tg.randn(2, requires_grad=True)
    text = to_dot(x.exp(), path=tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text() == text


def test_render_arguments_are_checked(tmp_path):
    y = tg.randn(2, requires_grad=True).exp()
    with pytest.raises(ValueError, match="render must be one of"):
        to_dot(y, render="jpeg", path=tmp_path / "g.jpeg")
    with pytest.raises(ValueError, match="needs path="):
        to_dot(y, render="svg")


def test_render_without_graphviz_says_how_to_install_it(tmp_path, monkeypatch):
    from tinygpt.autograd import graph
    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    y = tg.randn(2, requires_grad=True).exp()
    with pytest.raises(RuntimeError, match="install Graphviz.*apt-get install graphviz"):
        to_dot(y, render="svg", path=tmp_path / "g.svg")
    assert not (tmp_path / "g.svg").exists()


needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot not installed")


@needs_dot
def test_graphviz_accepts_the_text_and_renders(tmp_path):
    loss, _ = tiny_gpt_loss(n_layer=1)
    text = to_dot(loss, group_by_module=True, render="svg", path=tmp_path / "gpt.svg")
    assert "<svg" in (tmp_path / "gpt.svg").read_text()
    # dot's own parser agrees with ours on the number of nodes.
    out = subprocess.run(["dot", "-Tplain"], input=text.encode(), capture_output=True,
                         check=True).stdout.decode()
    assert sum(line.startswith("node ") for line in out.splitlines()) == len(parse(text)[0])
    to_dot(loss, render="png", path=tmp_path / "gpt.png")
    assert (tmp_path / "gpt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_gpt_graph_has_one_cluster_per_block_and_one_node_per_op():
    model_module = pytest.importorskip("tinygpt.model")
    config = model_module.GPTConfig(block_size=8, vocab_size=13, n_layer=3, n_head=2, n_embd=8)
    model = model_module.GPT(config)
    dict(model.named_parameters())                 # names every parameter (as the optimizer)
    idx, targets = tg.randint(0, 13, (2, 5)), tg.randint(0, 13, (2, 5))
    with trace() as t:
        _, loss = model(idx, targets)
    nodes, _, clusters = parse(to_dot(loss, group_by_module=True))
    # Every op node is an op that ran (a few may run off the loss's path, e.g. to shape
    # the logits returned).
    drawn = Counter(label.split("\n")[0] for label, _, _ in op_nodes(nodes).values())
    assert not drawn - Counter(r.op for r in t.records)
    assert drawn["linear"] == 4 * 3 + 1 and drawn["layer_norm"] == 2 * 3 + 1
    assert {f"transformer.h.{i}" for i in range(3)} <= set(clusters)
    for i in range(3):
        labels = [nodes[k][0].split("\n")[0] for k in clusters[f"transformer.h.{i}"]]
        assert "self_attention" in labels and "attn.c_attn.weight" in labels
