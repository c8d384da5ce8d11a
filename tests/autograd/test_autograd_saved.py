"""What the fused ops keep for backward. A training step's memory is the activations the
graph holds; an op that saves a new array the size of its input holds a second copy of
that activation until backward. These ops save their inputs and outputs (held by the
graph and the next op anyway) and only per-row statistics beside them."""

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn.functional as F

B, T, C, H = 2, 8, 16, 2


def saved_arrays(out):
    return [a for a in out.grad_fn.saved if isinstance(a, np.ndarray)]


CASES = {
    "layer_norm": (C, lambda x: F.layer_norm(x, (C,), tg.ones(C, requires_grad=True),
                                             tg.zeros(C, requires_grad=True))),
    "gelu": (C, lambda x: F.gelu(x)),
    "gelu tanh": (C, lambda x: F.gelu(x, approximate="tanh")),
    "self_attention": (3 * C, lambda qkv: F.self_attention(qkv, H)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_op_saves_no_activation_sized_array_of_its_own(name):
    width, fn = CASES[name]
    out = fn(tg.randn(B, T, width, requires_grad=True))
    inputs = [p.data for p in out.grad_fn.parents if p is not None]
    for a in saved_arrays(out):
        if a.size < T * C:                        # per-row statistics, weights, masks
            continue
        assert any(np.shares_memory(a, b) for b in inputs + [out.data]), (
            f"{name} saves a new {a.shape} array")
