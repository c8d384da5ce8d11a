"""`python -m bench NAME [ARGS...]`, from the repository root: run the benchmark `bench/NAME.py`.

NAME is one of BENCHMARKS below (`python -m bench --help` lists them with a line each);
ARGS go to that benchmark's `main(argv)` (`python -m bench ops --help`). Each benchmark module
is imported only when asked for, so a missing optional dependency of one does not break
the others.
"""

import importlib
import sys

BENCHMARKS = {
    "ops": "forward+backward time per op, beside PyTorch eager when installed",
    "train": "training steps per second of a small GPT",
    "generate": "generation tokens/s and a fine-tuning step at GPT-2's shape beside transformers",
    "products": "one- and few-row products at GPT-2's shapes: GB/s of weights streamed",
    "bpe": "GPT-2 byte-level BPE encoding throughput",
    "quality": "final validation loss of nanoGPT's CPU recipe over seeds, beside PyTorch",
    "attention": "training steps with padding masks, and banded against dense layers",
    "gpu": "the GPU check: cuda tests, gradient checks, transfers, training and generation",
    "lora": "LoRA against full fine-tuning at GPT-2's shape: trainable parameters, RSS, step time",
    "moe": "a mixture of experts against the dense MLP on the char recipe: step time and loss",
    "parallel": "training steps split over forked processes against MPI ranks, tokens/s",
    "context": "validation loss at T, 2T and 4T: learned positions, rotary, interpolation",
    "int8": "int8 weights against float32: bytes, peak RSS, tokens/s, validation loss",
    "prune": "validation loss against sparsity, with and without a recovery fine-tune",
    "peft_compare": "full fine-tuning against LoRA and bottleneck adapters: accuracy, time, RSS",
    "transfer": "an acceptability task fine-tuned from pre-training and from random init",
    "memory": "peak memory of loading pretrained GPT-2 weights and of generating with them",
}


def usage():
    lines = ["usage: python -m bench NAME [ARGS...]", "", "benchmarks:"]
    lines += [f"  {name:<13} {text}" for name, text in BENCHMARKS.items()]
    lines += ["", "`python -m bench NAME --help` lists a benchmark's options."]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}: expected one of {', '.join(BENCHMARKS)}\n\n"
              + usage(), file=sys.stderr)
        return 2
    module_name = f"{__package__ or 'bench'}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise                          # the benchmark exists but one of its imports does not
        print(f"benchmark {name!r} is not available in this installation: module "
              f"{module_name} (bench/{name}.py) is missing", file=sys.stderr)
        return 2
    from tinygpt.autograd.fast import malloc
    malloc.keep_freed_memory()          # as the trainer does: the steps timed are a trainer's
    status = module.main(rest)
    # A benchmark's main returns its exit status, or None, or (for tests that call it)
    # its results: a finished run either way.
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
