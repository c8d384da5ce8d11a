"""Generation and a fine-tuning step at GPT-2's shape, tinygpt beside Hugging Face
transformers (`python -m bench generate`).

The weights: a `transformers.GPT2LMHeadModel` built from a `GPT2Config` of the preset's
shape (GPT-2 124M by default) with transformers' own random initialisation and seeded,
dropout 0, saved as a Hugging Face folder (config.json + model.safetensors) in a temporary
directory; tinygpt loads the same folder (`load_pretrained`), so both run the same numbers.

  generate   for each batch size (--batch, default 1 and 8) and mode (--modes: greedy, and
             sampled at temperature 1 with top-k 50), a prompt of --prompt random tokens
             extended by --tokens new ones with the KV cache: tinygpt's `GPT.generate`,
             transformers' `generate(use_cache=True)` under `torch.inference_mode()`, end of
             text never stopping either. tokens/s counts every sequence's new tokens
             (batch x --tokens per run). In greedy mode the tokens must be identical: the
             table says whether they are, and from which step they part if not.
  finetune   one training step of the whole model (--ft-batch x --ft-block random tokens;
             forward, cross-entropy over every position, backward, clip_grad_norm_(1.0),
             AdamW lr 1e-4 with weight decay 0.1 on the matrices, zero_grad), tinygpt in one
             process (no batch split), PyTorch's AdamW (for-loop) on transformers' model.

Each framework runs in its own fresh process for each round, the rounds in alternating
order (tinygpt first, then transformers first, ...), so a machine whose load drifts
weighs on both alike; each round's ratio compares two processes that ran back to back.
`--before DIR` adds a third: the tinygpt of another checkout (DIR holding its `tinygpt`
package, e.g. an export of an older commit), run the same way in the same rounds, for
before/after figures of a change. Reported: per framework and case the median over the
rounds (of each process's median over --repeats runs, after one warm-up) with [min-max],
and the median of the rounds' ratios with their spread. The header names the host, its
BLAS and the thread counts (`host`).

Imports: the standard library, numpy, the host header; torch and transformers in the
parent only to write the weights, and in the child processes. Never imported by the
package.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import with_root_on_path

MODES = ("greedy", "sampled")
TOP_K = 50
TASKS = ("generate", "finetune")
FRAMEWORKS = ("tinygpt", "transformers")

# The body of each measuring process: argv[1] is its settings as JSON; it prints one line
# of JSON. It imports tinygpt from PYTHONPATH (this checkout's, or --before's).
_CHILD = r"""
import json, sys, time
import numpy as np
s = json.loads(sys.argv[1])
fw, task, folder, threads = s["framework"], s["task"], s["folder"], s["threads"]
if fw == "transformers":
    import torch
    from transformers import GPT2LMHeadModel
    torch.set_num_threads(threads)
    model = GPT2LMHeadModel.from_pretrained(folder, torch_dtype=torch.float32)
    model.generation_config.eos_token_id = None        # never stop early
    model.generation_config.pad_token_id = 0
else:
    import tinygpt as tg
    from tinygpt.autograd.fast import threads as fast_threads
    from tinygpt.autograd.fast.malloc import keep_freed_memory
    from tinygpt.model.pretrained import load_pretrained
    keep_freed_memory()                 # as tinygpt's trainer and sample command do
    fast_threads.set_num_threads(threads)
    model = load_pretrained(folder, dropout=0.0)
V = s["vocab_size"]
out = {"package": tg.__file__ if fw == "tinygpt" else None}

def gen(prompt, n, sampled):
    if fw == "transformers":
        ids = torch.from_numpy(prompt)
        with torch.inference_mode():
            y = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                               do_sample=sampled, top_k=s["top_k"] if sampled else None,
                               top_p=None, temperature=1.0 if sampled else None,
                               use_cache=True)
        return y[:, prompt.shape[1]:].numpy()
    y = model.generate(prompt, n, do_sample=sampled, top_k=s["top_k"], seed=0)
    return y.numpy()[:, prompt.shape[1]:]

if task == "generate":
    model.eval()
    for batch in s["batches"]:
        prompt = np.random.default_rng(s["seed"]).integers(0, V, (batch, s["prompt"]))
        for mode in s["modes"]:
            sampled = mode == "sampled"
            gen(prompt, 2, sampled)                       # warm-up
            times, tokens = [], None
            for _ in range(s["repeats"]):
                start = time.perf_counter()
                new = gen(prompt, s["tokens"], sampled)
                times.append(time.perf_counter() - start)
                tokens = new.tolist() if tokens is None else tokens
            out[f"{mode} B{batch}"] = {"seconds": times, "tokens": tokens if not sampled else None,
                                       "new_tokens": batch * s["tokens"]}
else:
    B, T = s["ft_batch"], s["ft_block"]
    rng = np.random.default_rng(s["seed"])
    if fw == "transformers":
        import torch.nn.functional as F
        model.train()
        named = list(model.named_parameters())
        opt = torch.optim.AdamW(
            [{"params": [p for _, p in named if p.dim() >= 2], "weight_decay": 0.1},
             {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0}],
            lr=1e-4, foreach=False, fused=False)
        params = [p for _, p in named]

        def step(x, y):
            logits = model(input_ids=torch.from_numpy(x)).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                   torch.from_numpy(y).reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss)
    else:
        from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups
        model.train()
        opt = AdamW(configure_param_groups(model.named_parameters(), 0.1), lr=1e-4)
        params = list(model.parameters())

        def step(x, y):
            _, loss = model(x, y)
            loss.backward()
            clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()
            return float(loss.item())
    times, losses = [], []
    for i in range(s["ft_steps"] + 1):                     # the first step is not timed
        tokens = rng.integers(0, V, (B, T + 1))
        start = time.perf_counter()
        losses.append(step(np.ascontiguousarray(tokens[:, :-1]),
                           np.ascontiguousarray(tokens[:, 1:])))
        if i:
            times.append(time.perf_counter() - start)
    out["finetune"] = {"seconds": times, "first_loss": losses[0]}
print(json.dumps(out))
"""


def write_weights(folder, preset, seed):
    """A Hugging Face GPT-2 folder of `preset`'s shape with transformers' random weights
    (seeded), dropout 0; returns the vocabulary size."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tinygpt.model.config import GPTConfig
    cfg = GPTConfig.from_preset(preset)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size,
                        n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        activation_function="gelu_new")
    GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    return cfg.vocab_size


def run_child(framework, settings, root):
    """One measuring process's JSON (`_CHILD`), tinygpt imported from `root`."""
    env = with_root_on_path(os.environ, root)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(settings["threads"])
    kind = "transformers" if framework == "transformers" else "tinygpt"
    # `python -c` puts its working directory first on sys.path: run it in `root`, so that
    # the tinygpt imported is root's and not the one of the directory the benchmark ran in.
    done = subprocess.run([sys.executable, "-c", _CHILD,
                           json.dumps(dict(settings, framework=kind))],
                          cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"the {framework} process failed (exit {done.returncode}):\n"
                           f"{done.stderr.strip()[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    package = out.pop("package")
    if kind == "tinygpt" and Path(package).resolve().parents[1] != Path(root).resolve():
        raise RuntimeError(f"the {framework} process imported tinygpt from {package}, "
                           f"expected the one in {root}")
    return out


def first_difference(a, b):
    """The first step (column) at which two (B, n) token lists differ, or None."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return 0
    columns = np.flatnonzero((a != b).any(axis=0))
    return int(columns[0]) if columns.size else None


def summarize(runs, frameworks):
    """From {framework: [one process's JSON per round]}: per case, each framework's
    per-round rates (tokens/s, or ms a step for finetune: each process's median over its
    runs), their median and spread, and the rounds' ratios of tinygpt (and before) to
    transformers, and of tinygpt to before, under "ratios" keyed "tinygpt/transformers"
    etc. (tokens/s over tokens/s; ms over ms for finetune)."""
    cases = list(next(iter(runs.values()))[0])
    table = {}
    for case in cases:
        row = {}
        for fw in frameworks:
            per_round = []
            for result in runs[fw]:
                entry = result[case]
                seconds = statistics.median(entry["seconds"])
                per_round.append(1e3 * seconds if case == "finetune"
                                 else entry["new_tokens"] / seconds)
            row[fw] = dict(rounds=per_round, median=statistics.median(per_round),
                           spread=[min(per_round), max(per_round)])
        row["ratios"] = {}
        for ours, theirs in ratio_pairs(frameworks):
            ratios = [a / b for a, b in zip(row[ours]["rounds"], row[theirs]["rounds"])]
            row["ratios"][f"{ours}/{theirs}"] = dict(
                rounds=ratios, median=statistics.median(ratios), spread=[min(ratios), max(ratios)])
        if case.startswith("greedy"):
            reference = "transformers" if "transformers" in frameworks else frameworks[-1]
            theirs = runs[reference][0][case]["tokens"]
            row["first_difference"] = {
                f"{fw}/{reference}": first_difference(runs[fw][0][case]["tokens"], theirs)
                for fw in frameworks if fw != reference}
        table[case] = row
    return table


def ratio_pairs(frameworks):
    """The (ours, theirs) pairs whose ratios the table shows."""
    return [(a, b) for a, b in (("tinygpt", "transformers"), ("before", "transformers"),
                                ("tinygpt", "before")) if a in frameworks and b in frameworks]


def print_table(table, frameworks, header, args):
    print("\n" + "\n".join(header))
    print(f"{args.preset}; generation: prompt {args.prompt} tokens + {args.tokens} new, KV "
          f"cache, tokens/s over all sequences; finetune: B{args.ft_batch} x T{args.ft_block}, "
          f"ms/step; median over {args.rounds} rounds [min-max]; ratios per round, their "
          f"median [min-max] (tokens/s: above 1 the first is faster; finetune ms: below 1)")
    pairs = [f"{a}/{b}" for a, b in ratio_pairs(frameworks)]
    print(f"{'case':<12}" + "".join(f"{fw:>26}" for fw in frameworks)
          + "".join(f"{pair:>26}" for pair in pairs))

    def cell(x, digits):
        return (f"{x['median']:.{digits}f} [{x['spread'][0]:.{digits}f}-"
                f"{x['spread'][1]:.{digits}f}]")

    for case, row in table.items():
        print(f"{case:<12}" + "".join(f"{cell(row[fw], 1):>26}" for fw in frameworks)
              + "".join(f"{cell(row['ratios'][pair], 2):>26}" for pair in pairs))
    for case, row in table.items():
        for pair, where in row.get("first_difference", {}).items():
            ours, theirs = pair.split("/")
            print(f"{case}: {ours}'s tokens " + (
                f"identical to {theirs}'" if where is None
                else f"differ from {theirs}' from new token {where}"))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench generate", allow_abbrev=False,
        description="Generation tokens/s and a fine-tuning step at GPT-2's shape, tinygpt "
                    "beside Hugging Face transformers, each in its own processes in rounds.")
    parser.add_argument("--preset", default="gpt2", help="model shape (default gpt2: 124M)")
    parser.add_argument("--tasks", default="generate,finetune",
                        help="comma-separated, of generate and finetune (default both)")
    parser.add_argument("--batch", default="1,8", help="batch sizes to generate (default 1,8)")
    parser.add_argument("--modes", default="greedy,sampled",
                        help=f"comma-separated, of {', '.join(MODES)} (default both)")
    parser.add_argument("--prompt", type=int, default=8, help="prompt tokens (default 8)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens (default 32)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed generations per case in each process (default 2)")
    parser.add_argument("--ft-batch", type=int, default=4, help="finetune rows (default 4)")
    parser.add_argument("--ft-block", type=int, default=128,
                        help="finetune tokens a row (default 128)")
    parser.add_argument("--ft-steps", type=int, default=3,
                        help="timed finetune steps per process, after one (default 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of one process per framework (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of every framework (default: the usable cores)")
    parser.add_argument("--before", metavar="DIR", default=None,
                        help="also run the tinygpt package found in DIR (another checkout)")
    parser.add_argument("--no-transformers", action="store_true",
                        help="run tinygpt (and --before) only; transformers still writes the "
                             "weights")
    parser.add_argument("--seed", type=int, default=0, help="weights and prompts")
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH")
    args = parser.parse_args(argv)
    args.task_list = [t for t in args.tasks.split(",") if t]
    args.mode_list = [m for m in args.modes.split(",") if m]
    if not args.task_list or set(args.task_list) - set(TASKS):
        parser.error(f"--tasks: expected some of {', '.join(TASKS)}, got {args.tasks!r}")
    if "generate" in args.task_list and (not args.mode_list or set(args.mode_list) - set(MODES)):
        parser.error(f"--modes: expected some of {', '.join(MODES)}, got {args.modes!r}")
    try:
        args.batches = [int(b) for b in args.batch.split(",") if b]
    except ValueError:
        parser.error(f"--batch: expected comma-separated integers, got {args.batch!r}")
    for name in ("prompt", "tokens", "repeats", "ft_batch", "ft_block", "ft_steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.batches or min(args.batches) < 1:
        parser.error(f"--batch: expected sizes >= 1, got {args.batch!r}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.no_transformers and args.before is None:
        parser.error("--no-transformers needs --before: nothing to compare tinygpt with")
    if args.before is not None and not (Path(args.before) / "tinygpt" / "__init__.py").is_file():
        parser.error(f"--before: {args.before} holds no tinygpt package (tinygpt/__init__.py)")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"this benchmark needs torch and transformers: {e}", file=sys.stderr)
        return 2
    import tinygpt
    from tinygpt.autograd.fast import threads as fast_threads

    from .host import header_lines, host_info
    threads = args.threads or fast_threads.usable_cores()
    fast_threads.set_num_threads(threads)
    torch.set_num_threads(threads)
    header = header_lines(host_info(torch))
    header[0] += f"; transformers {transformers.__version__}"
    print("\n".join(header), flush=True)
    root = Path(tinygpt.__file__).resolve().parents[1]
    frameworks = {"tinygpt": root} if args.no_transformers else {"tinygpt": root,
                                                                  "transformers": root}
    if args.before:
        frameworks["before"] = Path(args.before).resolve()
    results = {}
    with tempfile.TemporaryDirectory(prefix="tinygpt-bench-generate-") as folder:
        vocab = write_weights(folder, args.preset, args.seed)
        settings = dict(folder=folder, threads=threads, vocab_size=vocab, seed=args.seed,
                        batches=args.batches, modes=args.mode_list, prompt=args.prompt,
                        tokens=args.tokens, repeats=args.repeats, top_k=TOP_K,
                        ft_batch=args.ft_batch, ft_block=args.ft_block,
                        ft_steps=args.ft_steps)
        for task in args.task_list:
            runs = {fw: [] for fw in frameworks}
            for r in range(args.rounds):
                order = list(frameworks) if r % 2 == 0 else list(frameworks)[::-1]
                for fw in order:
                    try:
                        out = run_child(fw, dict(settings, task=task), frameworks[fw])
                    except RuntimeError as e:
                        print(f"error: {e}", file=sys.stderr)
                        return 1
                    runs[fw].append(out)
                    print(f"  {task} round {r + 1} {fw}: " + ", ".join(
                        f"{case} {statistics.median(v['seconds']):.3f} s"
                        for case, v in out.items()), flush=True)
            results[task] = summarize(runs, list(frameworks))
    table = {case: row for task in results.values() for case, row in task.items()}
    print_table(table, list(frameworks), header, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(host=host_info(torch), preset=args.preset, prompt=args.prompt,
                           tokens=args.tokens, ft_batch=args.ft_batch, ft_block=args.ft_block,
                           rounds=args.rounds, threads=threads, results=table), f, indent=1)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("generate")
