"""Gradient accumulation: backward on loss / N for N micro-batches adds up, in .grad, to the
gradient of one big batch; the optimizer step that follows is the same too."""

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn.functional as F
from conftest import assert_close
from tinygpt.optim import AdamW, clip_grad_norm_


def _model(seed):
    """A linear classifier from tg ops: logits = x @ W^T + b, in float64."""
    rng = np.random.default_rng(seed)
    w = tg.tensor(rng.standard_normal((5, 7)), requires_grad=True)
    b = tg.tensor(rng.standard_normal(5), requires_grad=True)
    return w, b


def _loss(w, b, x, y):
    logits = x @ w.T + b
    return F.cross_entropy(logits, y)          # mean over the batch


@pytest.mark.parametrize("n_micro", [1, 2, 4, 8])
def test_accumulated_gradient_equals_the_big_batch_gradient(n_micro):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 7))
    y = rng.integers(0, 5, size=16)

    w, b = _model(1)
    _loss(w, b, tg.tensor(x), tg.tensor(y)).backward()
    big = w.grad.numpy(), b.grad.numpy()

    w2, b2 = _model(1)
    for xs, ys in zip(np.split(x, n_micro), np.split(y, n_micro)):
        loss = _loss(w2, b2, tg.tensor(xs), tg.tensor(ys)) / n_micro
        loss.backward()
    assert_close(w2.grad.numpy(), big[0])
    assert_close(b2.grad.numpy(), big[1])


def test_step_after_accumulation_equals_the_big_batch_step():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 7))
    y = rng.integers(0, 5, size=12)
    results = []
    for n_micro in (1, 3):
        w, b = _model(3)
        opt = AdamW([w, b], lr=1e-2, weight_decay=0.1)
        for _ in range(3):
            for xs, ys in zip(np.split(x, n_micro), np.split(y, n_micro)):
                (_loss(w, b, tg.tensor(xs), tg.tensor(ys)) / n_micro).backward()
            clip_grad_norm_([w, b], 0.5)
            opt.step()
            opt.zero_grad()
        results.append((w.numpy(), b.numpy()))
    assert_close(results[1][0], results[0][0])
    assert_close(results[1][1], results[0][1])
