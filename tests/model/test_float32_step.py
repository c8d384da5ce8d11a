"""A float32 training step stays float32 everywhere: the loss, every activation and every
gradient an op hands back, the parameters, their gradients and AdamW's state.

NumPy 2 promotes `float32_array * np.float64(x)` to float64 without a word (NEP 50), and
the engine casts each leaf's gradient back to the parameter's dtype, so a promotion inside
an op would only show as a slower step. The tracer below records the dtype of every op's
forward output and of every gradient its backward returns, and the last test plants such a
promotion to show that the check catches it. Each test runs on the reference ops and on
the fast kernels.
"""

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.autograd.function import KERNELS, OPS, reference_ops_enabled
from tinygpt.autograd.trace import trace
from tinygpt.model import GPT, GPTConfig
from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups

FLOAT32 = np.dtype(np.float32)


class DtypeTrace(trace):
    """A `trace` that also keeps (op, dtype) for every gradient array a backward returns."""

    def __init__(self):
        super().__init__()
        self.input_grads = []

    def backward(self, ctx, dy):
        dxs = super().backward(ctx, dy)
        self.input_grads += [(type(ctx).name, dx.dtype) for dx in dxs if dx is not None]
        return dxs


def train_steps(steps=2):
    """`steps` float32 training steps of a small GPT (dropout on, so the dropout op runs)
    under a DtypeTrace; returns (model, optimizer, losses, clip norms, trace)."""
    tg.manual_seed(0)
    config = GPTConfig(block_size=8, vocab_size=13, n_layer=2, n_head=2, n_embd=16,
                       dropout=0.1, bias=True)
    model = GPT(config)
    model.train()
    opt = AdamW(configure_param_groups(model.named_parameters(), 0.1), lr=1e-3,
                betas=(0.9, 0.99))
    rng = np.random.default_rng(0)
    losses, norms = [], []
    with DtypeTrace() as t:
        for _ in range(steps):
            tokens = rng.integers(0, config.vocab_size, size=(3, config.block_size + 1))
            _, loss = model(tg.tensor(tokens[:, :-1]), tg.tensor(tokens[:, 1:]))
            loss.backward()
            norms.append(clip_grad_norm_(model.parameters(), 1.0))
            losses.append(loss)
            grads = {name: p.grad for name, p in model.named_parameters()}
            opt.step()
            opt.zero_grad()
    return model, opt, losses, norms, grads, t


def not_float32(pairs):
    """The (op, dtype) pairs whose dtype is floating point but not float32."""
    return sorted({(op, str(dtype)) for op, dtype in pairs
                   if dtype is not None and np.dtype(dtype).kind == "f" and dtype != FLOAT32})


pytestmark = pytest.mark.usefixtures("ops_impl")


def test_every_array_of_a_float32_step_is_float32():
    model, opt, losses, norms, grads, t = train_steps()
    assert all(loss.dtype == FLOAT32 and loss.data.dtype == FLOAT32 for loss in losses)
    assert all(norm.dtype == FLOAT32 for norm in norms)

    forward = [(r.op, r.dtype) for r in t.records if r.direction == "forward"]
    upstream = [(r.op, r.dtype) for r in t.records if r.direction == "backward"]
    # The step really ran the ops it should check, forward and backward.
    ops_run = {op for op, _ in forward}
    assert {"linear", "layer_norm", "gelu", "self_attention", "cross_entropy",
            "embedding", "dropout"} <= ops_run
    assert upstream and t.input_grads
    assert not_float32(forward) == [], "op outputs promoted in forward"
    assert not_float32(upstream) == [], "gradients reaching an op's backward promoted"
    assert not_float32(t.input_grads) == [], "gradients returned by an op's backward promoted"

    for name, p in model.named_parameters():
        assert p.dtype == FLOAT32, name
        assert grads[name] is not None and grads[name].data.dtype == FLOAT32, name
        state = opt.state[p]
        assert state["step"] == 2
        assert state["exp_avg"].dtype == FLOAT32 and state["exp_avg_sq"].dtype == FLOAT32, name
    assert all(buf.dtype == FLOAT32 for buf in opt._scratch.values())


def test_the_check_catches_a_float64_promotion_inside_an_op(monkeypatch):
    # Plant NumPy 2's silent promotion in GELU's forward; the parameters' gradients would
    # still come out float32 (the engine casts leaf gradients), the traced dtypes must not.
    # The class that runs float32 GELU on the CPU now: the reference, or its fast kernel.
    gelu = OPS["gelu"] if reference_ops_enabled() else KERNELS["gelu"].get("cpu", OPS["gelu"])
    original = gelu.forward

    def promoting_forward(ctx, x, **params):
        return original(ctx, x, **params) * np.float64(1.0)

    monkeypatch.setattr(gelu, "forward", staticmethod(promoting_forward))
    _, _, _, _, grads, t = train_steps(steps=1)
    forward = [(r.op, r.dtype) for r in t.records if r.direction == "forward"]
    assert ("gelu", "float64") in not_float32(forward)
    assert not_float32(t.input_grads)                  # the promotion spreads to backward
    assert all(g.data.dtype == FLOAT32 for g in grads.values())   # ...and is cast away here


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_not_float32_flags_only_other_float_dtypes(dtype):
    found = not_float32([("op", np.dtype(dtype)), ("index", np.dtype(np.int64)),
                         ("mask", np.dtype(bool)), ("none", None)])
    assert found == ([] if dtype == np.float32 else [("op", "float64")])
