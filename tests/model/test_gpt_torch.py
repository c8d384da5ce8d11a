"""Side by side with nanoGPT's model written in PyTorch (skipped without torch): the same
state dict gives the same logits, loss and gradients in float64, so nanoGPT checkpoints
load and behave identically."""

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.model import GPT, GPTConfig
from conftest import assert_close

torch = pytest.importorskip("torch")
from bench.torch_gpt import torch_gpt_class  # noqa: E402  (after the skip)


@pytest.mark.parametrize("bias, gelu", [(True, "tanh"), (False, "none")])
def test_matches_nanogpt_in_pytorch(bias, gelu):
    config = GPTConfig(block_size=16, vocab_size=37, n_layer=2, n_head=4, n_embd=32, bias=bias,
                       gelu_approximate=gelu)
    tg.manual_seed(1)
    ours = GPT(config).to(tg.float64)
    theirs = torch_gpt_class()(config).double()
    result = theirs.load_state_dict(
        {k: torch.from_numpy(v.numpy()) for k, v in ours.state_dict().items()}, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 37, (3, 16)), rng.integers(0, 37, (3, 16))
    targets[0, :5] = -1
    logits, loss = ours(idx, targets)
    loss.backward()
    t_logits, t_loss = theirs(torch.from_numpy(idx), torch.from_numpy(targets))
    t_loss.backward()
    assert_close(logits.numpy(), t_logits.detach().numpy())
    assert_close(loss.item(), t_loss.item())
    t_params = dict(theirs.named_parameters())
    names = [name for name, _ in ours.named_parameters()]
    assert names == list(t_params)          # same names, same order, tied head once
    for name, p in ours.named_parameters():
        assert_close(p.grad.numpy(), t_params[name].grad.numpy())
    # And the other way: a PyTorch state dict (Tensors converted to arrays) loads into ours.
    fresh = GPT(config).to(tg.float64)
    fresh.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert_close(fresh(idx)[0].numpy(), logits.numpy())
