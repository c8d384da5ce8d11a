"""Side by side with nanoGPT's model written in PyTorch (skipped without torch): the same
state dict gives the same logits, loss and gradients in float64, so nanoGPT checkpoints
load and behave identically."""

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.model import GPT, GPTConfig
from conftest import assert_close

torch = pytest.importorskip("torch")
tnn = torch.nn
TF = torch.nn.functional


class CausalSelfAttention(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_attn = tnn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = tnn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.n_head = c.n_head

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = tnn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.gelu = tnn.GELU(approximate=c.gelu_approximate)
        self.c_proj = tnn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = tnn.LayerNorm(c.n_embd, bias=c.bias)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = tnn.LayerNorm(c.n_embd, bias=c.bias)
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = tnn.ModuleDict(dict(
            wte=tnn.Embedding(c.vocab_size, c.n_embd), wpe=tnn.Embedding(c.block_size, c.n_embd),
            h=tnn.ModuleList([Block(c) for _ in range(c.n_layer)]),
            ln_f=tnn.LayerNorm(c.n_embd, bias=c.bias)))
        self.lm_head = tnn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx, targets):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.size(1)))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = TF.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


@pytest.mark.parametrize("bias, gelu", [(True, "tanh"), (False, "none")])
def test_matches_nanogpt_in_pytorch(bias, gelu):
    config = GPTConfig(block_size=16, vocab_size=37, n_layer=2, n_head=4, n_embd=32, bias=bias,
                       gelu_approximate=gelu)
    tg.manual_seed(1)
    ours = GPT(config).to(tg.float64)
    theirs = NanoGPT(config).double()
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
