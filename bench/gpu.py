"""The GPU check: everything about tinygpt's CUDA path that needs a real GPU, in one
unattended run of at most a few minutes (`python -m bench gpu`).

Sections, in this order (each one's failure is reported and the next runs; the
measurements come before the two slowest checks, which compile most of CuPy's kernels on
a machine whose kernel cache is empty):

    versions   Python, NumPy, CuPy, CUDA, the GPU, PyTorch
    parity     one GPT training step (forward, backward, clip, AdamW) on the CPU and the
               GPU from the same weights and batch: loss, gradients and new weights
    syncs      device-to-host transfers of a training step and of generation, by source
               line (`tinygpt.autograd.transfers`): none in a step, one per token
    train      ms per training step at `baby` and at GPT-2 124M's shape (batch 8 x 1024)
               beside PyTorch CUDA eager on the same batches (bench/train.py's runners),
               and each framework's peak GPU memory
    generate   greedy generation tokens/s at GPT-2 124M's shape with the KV cache, beside
               PyTorch eager with a KV cache of its own
    gradcheck  every op's gradient-check case on CUDA in float64, fast kernels and
               references (`tinygpt.autograd.checks.run_check`)
    tests      the test suite's cuda-marked tests (pytest -m cuda), on the real CuPy,
               stopped at the budget
    nccl       with 2+ GPUs and mpiexec: `mpiexec -n 2` ranks, one GPU each, reduce their
               gradients with NCCL (DistributedDataParallel): the mean of the ranks',
               on every rank, with no read back to the host; skipped with the reason
               otherwise

The results go to OUT/gpu_check.json and OUT/gpu_check.log (and OUT/tests.log), OUT being
--out, else $OUT, else ./gpu-check. A section that would start past --budget seconds is
skipped and says so. `--tiny` runs every section on tiny shapes in seconds (the test
suite runs it on the CuPy stand-in to check this script's plumbing).
Imports: tinygpt, numpy; torch and pytest lazily and optionally.
"""

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from . import with_root_on_path

import tinygpt as tg
from tinygpt.autograd import backend
from tinygpt.autograd.checks import CASES, run_check
from tinygpt.autograd.transfers import count_transfers
from tinygpt.model import GPT, GPTConfig
from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups

from .train import TinygptRunner, TorchRunner, flops_per_step, gpt_config, time_config

SECTIONS = ("versions", "parity", "syncs", "train", "precision", "generate", "gradcheck",
            "tests", "nccl")
# Training shapes: nanoGPT's shakespeare_char config and GPT-2 124M's at batch 8.
TRAIN_SPECS = {
    "baby": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64,
                 vocab_size=65, bias=True),
    "gpt2-124M": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, batch_size=8,
                      vocab_size=50257, bias=True),
}
TINY_SPEC = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=2, vocab_size=65,
                 bias=True)
REPO = Path(__file__).resolve().parents[1]


class Report:
    """The sections' results, printed as they come and written as JSON after each."""

    def __init__(self, out, budget):
        self.out, self.budget, self.start = out, budget, time.perf_counter()
        self.results = {"budget_s": budget, "sections": {}}
        self.log_file = open(out / "gpu_check.log", "w", encoding="utf-8")

    def log(self, text):
        print(text, flush=True)
        self.log_file.write(text + "\n")
        self.log_file.flush()

    def elapsed(self):
        return time.perf_counter() - self.start

    def run(self, name, fn, *args):
        """fn(*args) -> dict, recorded under `name`; an exception is recorded, not raised."""
        if self.elapsed() > self.budget:
            entry = {"status": "skipped", "reason": f"the {self.budget:.0f} s budget was "
                     f"spent ({self.elapsed():.0f} s)"}
        else:
            self.log(f"\n[{name}]")
            start = time.perf_counter()
            try:
                entry = {"status": "ok", **fn(*args)}
            except Exception as e:          # a failed section is reported; the rest runs
                entry = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc()[-3000:]}
                self.log(f"  FAILED: {entry['error']}")
            entry["seconds"] = round(time.perf_counter() - start, 2)
        self.results["sections"][name] = entry
        self.log(f"  -> {entry['status']} ({entry.get('seconds', 0)} s)")
        self.write()

    def write(self):
        self.results["fuse_fallbacks"] = dict(backend.fuse_fallbacks)
        self.results["elapsed_s"] = round(self.elapsed(), 2)
        with open(self.out / "gpu_check.json", "w", encoding="utf-8") as f:
            json.dump(self.results, f, indent=1, default=str)


# --- sections ------------------------------------------------------------------------------------
def versions(report, torch):
    cp = backend.array_module_for_device("cuda")
    runtime = cp.cuda.runtime
    props = runtime.getDeviceProperties(0)
    name = props.get("name", b"?")
    info = dict(python=platform.python_version(), numpy=np.__version__, cupy=cp.__version__,
                cuda_runtime=runtime.runtimeGetVersion(), cuda_driver=runtime.driverGetVersion(),
                gpu=name.decode() if isinstance(name, bytes) else str(name),
                gpu_memory_gb=round(props.get("totalGlobalMem", 0) / 2 ** 30, 1),
                torch=getattr(torch, "__version__", None),
                torch_cuda=bool(torch and torch.cuda.is_available()))
    for key, value in info.items():
        report.log(f"  {key}: {value}")
    return info


def gradcheck(report):
    """Every op's case on CUDA in float64, on the fast kernels and on the references."""
    rows, failed = [], []
    for reference in (False, True):
        with tg.use_reference_ops(reference):
            for name in sorted(CASES):
                row = run_check(name, np.random.default_rng(0), device="cuda")
                row["implementation"] = "reference" if reference else "fast"
                rows.append(row)
                if not row["passed"]:
                    failed.append(f"{name} ({row['implementation']}): {row['error']}")
    report.log(f"  {len(rows) - len(failed)}/{len(rows)} gradient checks passed")
    for line in failed:
        report.log(f"  failed: {line[:300]}")
    return {"checks": len(rows), "failed": failed,
            "worst_rel_err": max((r["max_rel_err"] for r in rows if r["passed"]), default=0.0)}


def _step(model, params, idx, targets, device):
    """One training step on `device`; (loss, gradients, new weights) as NumPy arrays."""
    opt = AdamW(configure_param_groups(model.named_parameters(), 0.1), lr=1e-3,
                betas=(0.9, 0.99))
    _, loss = model(tg.tensor(idx, device=device), tg.tensor(targets, device=device))
    loss.backward()
    grads = [p.grad.numpy() for p in params]
    clip_grad_norm_(params, 1.0)
    opt.step()
    return float(loss), grads, [p.numpy() for p in params]


def parity(report, spec):
    """The same step on the CPU and the GPU, in float64 and float32."""
    out = {}
    for dtype in ("float64", "float32"):
        results = []
        for device in ("cpu", "cuda"):
            tg.manual_seed(0)
            model = GPT(gpt_config(spec, 0.0)).to(dtype).to(device)
            rng = np.random.default_rng(1)
            tokens = rng.integers(0, spec["vocab_size"], (spec["batch_size"],
                                                           spec["block_size"] + 1))
            results.append(_step(model, list(model.parameters()), tokens[:, :-1],
                                 tokens[:, 1:], device))
        (loss_cpu, g_cpu, w_cpu), (loss_gpu, g_gpu, w_gpu) = results
        grad_err = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))
                       for a, b in zip(g_gpu, g_cpu))
        weight_err = max(float(np.max(np.abs(a - b))) for a, b in zip(w_gpu, w_cpu))
        out[dtype] = dict(loss_cpu=loss_cpu, loss_gpu=loss_gpu,
                          loss_rel_err=abs(loss_gpu - loss_cpu) / abs(loss_cpu),
                          grad_max_rel_err=grad_err, weight_max_abs_err=weight_err)
        report.log(f"  {dtype}: loss cpu {loss_cpu:.8f} gpu {loss_gpu:.8f}; gradients within "
                   f"{grad_err:.2e} (relative to each tensor's largest); weights after the "
                   f"step within {weight_err:.2e}")
    return out


def syncs(report, spec, new_tokens):
    """Transfers of training steps (clip and AdamW included) and of generation, by line."""
    tg.manual_seed(0)
    runner = TinygptRunner(spec, 0.0, "cuda", seed=0)
    rng = np.random.default_rng(0)
    counts = []
    for i in range(4):                   # the first steps build the fused kernels
        idx, targets = runner.batch(rng.integers(0, spec["vocab_size"],
                                                 (spec["batch_size"], spec["block_size"] + 1)))
        with count_transfers() as counted:
            loss = runner.forward_backward(idx, targets)
            runner.clip()
            runner.opt.step()
            runner.zero_grad()
        counts.append(counted)
        del loss
    step = counts[-1]
    report.log(f"  a training step: {step.report()}")
    model = runner.model
    prompt = tg.tensor(rng.integers(0, spec["vocab_size"], (1, 4)), device="cuda")
    with count_transfers() as generated:
        model.generate(prompt, new_tokens, do_sample=False)
    report.log(f"  generating {new_tokens} tokens: {generated.report()}")
    return {"step_transfers": [c.total for c in counts], "step_by_line": dict(step.by_line),
            "generate_tokens": new_tokens, "generate_transfers": generated.total,
            "generate_by_line": dict(generated.by_line)}


def tests(report, tiny):
    """pytest -m cuda in a subprocess until the budget's end (30 s at least), its output in
    OUT/tests.log."""
    timeout = max(30.0, report.budget - report.elapsed())
    if not (REPO / "tests" / "conftest.py").exists():
        return {"skipped": f"no test suite beside the package ({REPO / 'tests'})"}
    target = ["tests/autograd/test_cupy_standin.py"] if tiny else ["tests"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
           *target]
    env = dict(with_root_on_path(os.environ), HYPOTHESIS_PROFILE="ci")
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        output, code = f"{e.stdout or ''}\n{e.stderr or ''}\ntimed out after {timeout} s", -1
    (report.out / "tests.log").write_text(output if isinstance(output, str) else str(output))
    summary = next((line for line in reversed(output.splitlines())
                    if " passed" in line or " failed" in line or " error" in line), "")
    report.log(f"  pytest -m cuda: {summary or 'no summary line'} (exit {code})")
    failures = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"exit_code": code, "summary": summary, "failures": failures[:50]}


NCCL_CHECK = """
import numpy as np
import tinygpt as tg
from tinygpt.autograd.transfers import count_transfers
from tinygpt.train import DistributedDataParallel, init_process_group
from tinygpt.train.nccl import use_local_gpu
group = init_process_group("mpi")
use_local_gpu(group)
tg.manual_seed(0)
model = tg.GPT(tg.GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=16))
model.to("cuda")
def local(batches):      # rank r's gradient: r + 1 everywhere, its loss r + 1
    for p in model.parameters():
        p.grad = tg.Tensor(p.data * 0 + (group.rank + 1))
    return tg.tensor(float(group.rank + 1), device="cuda")
ddp = DistributedDataParallel(model, group, local)
with count_transfers() as counted:
    loss = ddp.forward_backward([])
ok = all(np.allclose(p.grad.numpy(), 1.5) for p in model.parameters())
print(f"rank {group.rank}: mean {ok}, loss {float(loss.item())}, reads {counted.total}",
      flush=True)
ddp.close()
group.close()
"""


def nccl(report):
    """Two ranks on two GPUs reduce with NCCL (a subprocess under mpiexec)."""
    cp = backend.array_module_for_device("cuda")
    count = cp.cuda.runtime.getDeviceCount()
    launcher = Path(sys.executable).with_name("mpiexec")
    launcher = str(launcher) if launcher.exists() else shutil.which("mpiexec")
    if count < 2 or launcher is None:
        reason = (f"needs 2 GPUs, this machine has {count}" if count < 2 else
                  "needs mpiexec (pip install 'tinygpt[mpi]')")
        report.log(f"  skipped: {reason}")
        return {"skipped": reason}
    done = subprocess.run([launcher, "-n", "2", sys.executable, "-c", NCCL_CHECK],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    lines = sorted(line for line in done.stdout.splitlines() if line.startswith("rank "))
    for line in lines:
        report.log(f"  {line}")
    passed = (done.returncode == 0 and len(lines) == 2
              and all("mean True, loss 1.5, reads 0" in line for line in lines))
    if not passed:
        raise RuntimeError(f"NCCL check failed (exit {done.returncode}): "
                           f"{(done.stdout + done.stderr)[-1500:]}")
    return {"ranks": lines}


def _gpu_memory_mb(torch):
    """(tinygpt's CuPy pool bytes reserved, PyTorch's peak reserved, peak allocated) in MB."""
    pool = backend.array_module_for_device("cuda").get_default_memory_pool()
    mb = 2 ** 20
    ours = pool.total_bytes() / mb
    if torch is None or not torch.cuda.is_available():
        return ours, None, None
    return (ours, torch.cuda.max_memory_reserved() / mb,
            torch.cuda.max_memory_allocated() / mb)


def train(report, specs, torch, warmup, iters):
    """Step times beside PyTorch eager, alternating on the same batches; peak memory."""
    cp = backend.array_module_for_device("cuda")
    out = {}
    for name, spec in specs.items():
        spec = dict(spec, gelu="tanh")
        gc.collect()                        # the last config's arrays, then the pool's blocks
        cp.get_default_memory_pool().free_all_blocks()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        runners = [TinygptRunner(spec, 0.0, "cuda", seed=0)]
        if torch is not None and torch.cuda.is_available():
            runners.append(TorchRunner(torch, spec, 0.0, "cuda", 0,
                                       weights=runners[0].state_dict()))
        steps, opts, first_loss = time_config(spec, runners, warmup, iters, seed=0)
        ours_mb, torch_reserved_mb, torch_allocated_mb = _gpu_memory_mb(
            torch if len(runners) > 1 else None)
        ms = {k: 1e3 * float(np.median(v)) for k, v in steps.items()}
        row = dict(spec=spec, tinygpt_ms=ms["tinygpt"], torch_ms=ms.get("torch"),
                   ratio=ms["tinygpt"] / ms["torch"] if "torch" in ms else None,
                   tinygpt_optimizer_ms=1e3 * float(np.median(opts["tinygpt"])),
                   torch_optimizer_ms=1e3 * float(np.median(opts["torch"]))
                   if "torch" in opts else None,
                   tinygpt_steps_ms=[1e3 * s for s in steps["tinygpt"]],
                   torch_steps_ms=[1e3 * s for s in steps.get("torch", [])],
                   tflops=flops_per_step(spec) / (ms["tinygpt"] / 1e3) / 1e12,
                   first_loss=first_loss, tinygpt_pool_reserved_mb=ours_mb,
                   torch_peak_reserved_mb=torch_reserved_mb,
                   torch_peak_allocated_mb=torch_allocated_mb)
        out[name] = row
        report.log(f"  {name}: tinygpt {row['tinygpt_ms']:.1f} ms/step"
                   + (f", PyTorch {row['torch_ms']:.1f} ms/step, ratio {row['ratio']:.2f}"
                      if row["torch_ms"] else " (PyTorch not measured)")
                   + f"; GPU memory: tinygpt {ours_mb:.0f} MB reserved"
                   + (f", PyTorch {torch_reserved_mb:.0f} MB reserved at peak "
                      f"({torch_allocated_mb:.0f} MB allocated)" if torch_reserved_mb else ""))
        del runners
    return out


def precision(report, spec, iters):
    """Mixed precision on the GPU: `iters` training iterations of `spec` on the default
    corpus in float32 and in float16 (float32 master weights, dynamic loss scaling) from
    the same seed and batches; each one's median ms per iteration and final losses."""
    import tempfile
    from tinygpt.train import TrainConfig, Trainer
    out = {}
    for dtype in ("float32", "float16"):
        with tempfile.TemporaryDirectory() as folder:
            config = TrainConfig(
                out_dir=folder, device="cuda", dtype=dtype, max_iters=iters,
                eval_interval=iters, eval_iters=2, log_interval=1, save_checkpoints=False,
                processes=1, warmup_iters=max(1, iters // 5), lr_decay_iters=iters,
                **{k: spec[k] for k in ("n_layer", "n_head", "n_embd", "block_size",
                                        "batch_size")})
            trainer = Trainer(config, log=lambda line: None)
            history = trainer.run()
            with open(trainer.log_path, encoding="utf-8") as f:
                ms = [json.loads(line)["ms_per_iter"] for line in f if '"train"' in line]
        out[dtype] = dict(ms_per_iter=float(np.median(ms[1:] or ms)),
                          train_loss=history[-1]["train_loss"], val_loss=history[-1]["val_loss"],
                          loss_scale=trainer.scaler.scale if trainer.scaler else None)
        report.log(f"  {dtype}: {out[dtype]['ms_per_iter']:.1f} ms/iter, val loss "
                   f"{out[dtype]['val_loss']:.4f} after {iters} iterations")
    out["speedup"] = out["float32"]["ms_per_iter"] / out["float16"]["ms_per_iter"]
    return out


def torch_generate_cached(torch, model, idx, new_tokens):
    """Greedy generation with a preallocated KV cache in PyTorch eager: the prompt in one
    pass, then each new token at its position against the cached keys and values."""
    functional = torch.nn.functional
    blocks, transformer = model.transformer.h, model.transformer
    B, T0 = idx.shape
    H = blocks[0].attn.n_head
    C = transformer.wte.weight.shape[1]
    capacity = T0 + new_tokens
    caches = [(torch.empty(B, H, capacity, C // H, device=idx.device),
               torch.empty(B, H, capacity, C // H, device=idx.device)) for _ in blocks]

    def forward(tokens, start):
        T = tokens.shape[1]
        x = transformer.wte(tokens) + transformer.wpe(
            torch.arange(start, start + T, device=tokens.device))
        for block, (k_cache, v_cache) in zip(blocks, caches):
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            k_cache[:, :, start:start + T] = k
            v_cache[:, :, start:start + T] = v
            y = functional.scaled_dot_product_attention(
                q, k_cache[:, :, :start + T], v_cache[:, :, :start + T], is_causal=T > 1)
            x = x + block.attn.c_proj(y.transpose(1, 2).reshape(B, T, C))
            x = x + block.mlp(block.ln_2(x))
        return model.lm_head(transformer.ln_f(x[:, -1:]))

    with torch.no_grad():
        logits = forward(idx, 0)
        out = [idx]
        for step in range(new_tokens):
            next_id = logits[:, -1].argmax(dim=-1, keepdim=True)
            out.append(next_id)
            if step + 1 < new_tokens:
                logits = forward(next_id, T0 + step)
    return torch.cat(out, dim=1)


def generate(report, config, torch, new_tokens, prompt_tokens=8):
    """Greedy tokens/s of both with a KV cache, from the same random weights."""
    tg.manual_seed(0)
    model = GPT(config).to("cuda")
    model.eval()
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, (1, prompt_tokens))
    prompt_gpu = tg.tensor(prompt, device="cuda")
    model.generate(prompt_gpu, 2, do_sample=False)                     # warm-up
    backend.synchronize("cuda")
    start = time.perf_counter()
    ours = model.generate(prompt_gpu, new_tokens, do_sample=False)
    backend.synchronize("cuda")
    ours_s = time.perf_counter() - start
    row = dict(n_params=model.num_parameters(), new_tokens=new_tokens,
               prompt_tokens=prompt_tokens, tinygpt_tokens_per_s=new_tokens / ours_s)
    if torch is not None and torch.cuda.is_available():
        from .torch_gpt import torch_gpt_class
        theirs_model = torch_gpt_class()(config)
        theirs_model.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in
                                      model.state_dict().items()})
        theirs_model = theirs_model.to("cuda").eval()
        idx = torch.from_numpy(prompt).to("cuda")
        torch_generate_cached(torch, theirs_model, idx, 2)             # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        theirs = torch_generate_cached(torch, theirs_model, idx, new_tokens)
        torch.cuda.synchronize()
        theirs_s = time.perf_counter() - start
        row.update(torch_tokens_per_s=new_tokens / theirs_s,
                   ratio_tokens_per_s=(new_tokens / ours_s) / (new_tokens / theirs_s),
                   same_tokens=bool(np.array_equal(ours.numpy(), theirs.cpu().numpy())))
    report.log(f"  {row['n_params'] / 1e6:.0f}M parameters, {new_tokens} tokens: tinygpt "
               f"{row['tinygpt_tokens_per_s']:.1f} tokens/s" + (
                   f", PyTorch {row['torch_tokens_per_s']:.1f} tokens/s (same tokens: "
                   f"{row['same_tokens']})" if "torch_tokens_per_s" in row else ""))
    return row


# --- the command --------------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench gpu",
        description="The GPU check: versions, gradient checks and CPU parity on CUDA, "
                    "transfers per step, the cuda tests, training and generation beside "
                    "PyTorch; results in OUT/gpu_check.json.")
    parser.add_argument("--out", default=None,
                        help="folder for the logs and JSON (default: $OUT, else ./gpu-check)")
    parser.add_argument("--budget", type=float, default=280.0,
                        help="seconds after which no section starts, and the tests stop "
                             "(default 280: with the last section and start-up, within 6 "
                             "minutes)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny shapes everywhere (seconds; checks this script itself)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default: all of "
                             f"{','.join(SECTIONS)})")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {unknown}; expected some of {list(SECTIONS)}")
    if not backend.cuda_available():
        parser.error("no usable GPU: CuPy (>= 14) and a CUDA device are needed")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    out = Path(args.out or os.environ.get("OUT") or "gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    report = Report(out, args.budget)
    report.log(f"tinygpt GPU check -> {out}/gpu_check.json (budget {args.budget:.0f} s"
               f"{', tiny shapes' if args.tiny else ''})")
    specs = {"tiny": TINY_SPEC} if args.tiny else TRAIN_SPECS
    small = TINY_SPEC if args.tiny else dict(TINY_SPEC, n_layer=2, n_embd=64, n_head=4,
                                             block_size=64, batch_size=4)
    generation = (GPTConfig(**{k: v for k, v in TINY_SPEC.items() if k != "batch_size"})
                  if args.tiny else GPTConfig.from_preset("gpt2"))
    plan = {
        "versions": (versions, report, torch),
        "gradcheck": (gradcheck, report),
        "parity": (parity, report, small),
        "syncs": (syncs, report, small, 8),
        "tests": (tests, report, args.tiny),
        "train": (train, report, specs, torch, 1 if args.tiny else 2, 2 if args.tiny else 6),
        "precision": (precision, report, TINY_SPEC if args.tiny else TRAIN_SPECS["baby"],
                      3 if args.tiny else 30),
        "generate": (generate, report, generation, torch, 8 if args.tiny else 100),
        "nccl": (nccl, report),
    }
    for name in SECTIONS:
        if name in args.sections:
            fn, *rest = plan[name]
            report.run(name, fn, *rest)
    failed = [n for n, e in report.results["sections"].items() if e["status"] == "failed"]
    report.log(f"\ndone in {report.elapsed():.0f} s; failed sections: {failed or 'none'}; "
               f"fused kernels run unfused: {sorted(backend.fuse_fallbacks) or 'none'}")
    report.log_file.close()
    return 1 if failed else 0


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("gpu")
