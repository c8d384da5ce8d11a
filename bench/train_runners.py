"""`python -m bench train`'s two frameworks: the GPT config of a benchmark config, its
FLOPs per step, and one framework's model and optimizer (`Runner`: tinygpt's, in one
process or split over `DataParallel` processes, or PyTorch's eager model from
bench/torch_gpt.py), each timing one training step.
Imports: numpy, tinygpt, bench.torch_gpt; torch through the runner that is given it.
"""

import contextlib
import time

import numpy as np

import tinygpt as tg
from tinygpt.autograd import backend
from tinygpt.model import GPT, GPTConfig
from tinygpt.model.sizes import count_params
from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups
from tinygpt.train.parallel import DataParallel, peak_rss_mb

from .torch_gpt import torch_gpt_class

LR, BETAS, WEIGHT_DECAY, MAX_NORM = 1e-3, (0.9, 0.99), 0.1, 1.0
DEFAULT_GELU = "tanh"       # GPTConfig's; --gelu none gives the exact one


def flops_per_step(spec):
    """FLOPs of one training step of `spec` (see the module docstring)."""
    B, T, C, L = spec["batch_size"], spec["block_size"], spec["n_embd"], spec["n_layer"]
    N = count_params(gpt_config(spec, 0.0), non_embedding=True)
    return B * T * (6 * N + 12 * L * T * C)


def gpt_config(spec, dropout):
    """The GPTConfig of a config; its GELU is spec["gelu"] (set from --gelu), else tanh."""
    return GPTConfig(block_size=spec["block_size"], vocab_size=spec["vocab_size"],
                     n_layer=spec["n_layer"], n_head=spec["n_head"], n_embd=spec["n_embd"],
                     dropout=dropout, bias=spec["bias"],
                     gelu_approximate=spec.get("gelu", DEFAULT_GELU))


# --- one framework's training step ----------------------------------------------------------
class Runner:
    """One framework's model and optimizer. `step(idx, targets)` times one training step:
    forward and backward, clipping, the optimizer step, zeroing the gradients; subclasses
    give `forward_backward`, `clip`, `zero_grad`, `sync` and `opt`."""

    def step(self, idx, targets):
        """(step seconds, optimizer-step seconds, loss tensor)."""
        self.sync()
        start = time.perf_counter()
        loss = self.forward_backward(idx, targets)
        self.clip()
        self.sync()
        opt_start = time.perf_counter()
        self.opt.step()
        self.sync()
        opt_end = time.perf_counter()
        self.zero_grad()
        self.sync()
        return time.perf_counter() - start, opt_end - opt_start, loss


class TinygptRunner(Runner):
    """A tinygpt GPT and its AdamW; `step(idx, targets)` runs one timed training step, each
    batch split over `processes` CPU processes (`DataParallel`) when more than one."""

    name = "tinygpt"

    def __init__(self, spec, dropout, device, seed, processes=1, threads=None):
        tg.manual_seed(seed)
        self.device = device
        self.model = GPT(gpt_config(spec, dropout)).to(device)
        self.model.train()
        self.params = list(self.model.parameters())
        self.opt = AdamW(configure_param_groups(self.model.named_parameters(), WEIGHT_DECAY),
                         lr=LR, betas=BETAS)
        self.parallel = DataParallel(self.model, processes, threads) if processes > 1 else None

    def forward_backward(self, idx, targets):
        """Forward and backward of one batch; the loss."""
        if self.parallel is not None:
            return tg.tensor(self.parallel.forward_backward([(idx, targets)]))
        _, loss = self.model(idx, targets)
        loss.backward()
        return loss

    def all_threads(self):
        """Context manager: this process on all its threads (the workers wait meanwhile)."""
        return self.parallel.all_threads() if self.parallel else contextlib.nullcontext()

    def peak_rss_mb(self):
        """Peak RSS of the processes, summed (a worker's counts what it shares with this
        process at the fork: an overestimate)."""
        return sum(self.parallel.peak_rss_mb()) if self.parallel else peak_rss_mb()

    def close(self):
        if self.parallel is not None:
            self.parallel.close()

    def batch(self, tokens):
        """(idx, targets) on the device from a (B, T + 1) NumPy array of token ids."""
        idx = tg.tensor(np.ascontiguousarray(tokens[:, :-1]), device=self.device)
        targets = tg.tensor(np.ascontiguousarray(tokens[:, 1:]), device=self.device)
        return idx, targets

    def sync(self):
        backend.synchronize(self.device)

    def clip(self):
        clip_grad_norm_(self.params, MAX_NORM)

    def zero_grad(self):
        self.opt.zero_grad()

    def state_dict(self):
        return {k: v.numpy() for k, v in self.model.state_dict().items()}


class TorchRunner(Runner):
    """The same step in PyTorch eager: `torch_gpt_class()`, torch.optim.AdamW (for-loop,
    fused=False) with the same groups, torch.nn.utils.clip_grad_norm_."""

    name = "torch"

    def __init__(self, torch, spec, dropout, device, seed, weights=None):
        self.torch = torch
        self.device = "cuda" if device == "cuda" else "cpu"
        torch.manual_seed(seed)
        model = torch_gpt_class()(gpt_config(spec, dropout))
        if weights is not None:                        # start from tinygpt's initial weights
            model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
        self.model = model.to(self.device)
        self.model.train()
        self.params = list(self.model.parameters())
        named = list(self.model.named_parameters())    # the tied weight is listed once
        groups = [{"params": [p for _, p in named if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
                  {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, fused=False)

    def batch(self, tokens):
        torch = self.torch
        idx = torch.from_numpy(np.ascontiguousarray(tokens[:, :-1])).to(self.device)
        targets = torch.from_numpy(np.ascontiguousarray(tokens[:, 1:])).to(self.device)
        return idx, targets

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def forward_backward(self, idx, targets):
        _, loss = self.model(idx, targets)
        loss.backward()
        return loss

    def all_threads(self):
        return contextlib.nullcontext()

    def peak_rss_mb(self):
        return peak_rss_mb()

    def close(self):
        pass

    def clip(self):
        self.torch.nn.utils.clip_grad_norm_(self.params, MAX_NORM)

    def zero_grad(self):
        self.opt.zero_grad(set_to_none=True)
