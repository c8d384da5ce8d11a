"""`python -m tinygpt train`: train a GPT with nanoGPT-like options.

Every field of `TrainConfig` is an option of the same name (`--n_layer 6`,
`--batch_size 64`, `--bias false`); `--preset` fills several at once and explicit
options win over it. With `--resume`, options left out take the saved run's values.
Ctrl-C saves a checkpoint at the current iteration and exits with status 130.

Under `mpiexec -n N` every rank runs this command (`--distributed mpi`, found from the
environment by default). Rank 0 reports an error that every rank raises together; an
error of one rank alone is reported by it, and then every rank is ended (MPI_Abort), since
the others may be waiting for it inside a collective.
"""

import os
import signal
import sys
from dataclasses import fields

from ..train import TrainConfig
from .common import add_bool, error_message

# Training recipes; model presets (gpt-nano, gpt-micro, gpt-mini) set the model shape only.
# nanoGPT's models have no biases (its train.py default) and use the exact GELU (nn.GELU()).
RECIPES = {
    # nanoGPT's documented CPU run of config/train_shakespeare_char.py
    "shakespeare-char-cpu": dict(data="shakespeare", n_layer=4, n_head=4, n_embd=128,
                                 bias=False, gelu_approximate="none",
                                 block_size=64, batch_size=12, dropout=0.0, max_iters=2000,
                                 lr_decay_iters=2000, eval_iters=20, eval_interval=250,
                                 learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
                                 beta2=0.99, weight_decay=0.1, grad_clip=1.0),
    # nanoGPT's config/train_shakespeare_char.py (the "baby GPT", meant for a GPU)
    "shakespeare-char": dict(data="shakespeare", n_layer=6, n_head=6, n_embd=384,
                             bias=False, gelu_approximate="none", block_size=256, batch_size=64, dropout=0.2, max_iters=5000,
                             lr_decay_iters=5000, eval_iters=200, eval_interval=250,
                             learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, beta2=0.99,
                             weight_decay=0.1, grad_clip=1.0),
}
MODEL_PRESETS = {
    "gpt-nano": dict(n_layer=3, n_head=3, n_embd=48),
    "gpt-micro": dict(n_layer=4, n_head=4, n_embd=128),
    "gpt-mini": dict(n_layer=6, n_head=6, n_embd=192),
}
PRESETS = {**RECIPES, **MODEL_PRESETS}


# Flags whose default alone does not say what they do.
HELP = {"processes": "CPU processes each batch is split over, gradients summed; 0: two on "
                     "Linux with 2+ cores, else one",
        "resume": "continue the run saved in --out_dir",
        "overwrite": "replace an existing run in --out_dir",
        "allow_data_change": "resume even though the training data changed",
        "grad_clip": "the gradient norm clipped to; 0 turns clipping off",
        "reference_ops": "run every op and the optimizer on its reference code "
                         "(tinygpt/autograd/ops, optim/adamw.py): slower, the same losses "
                         "to float rounding",
        "adapter_size": "width of bottleneck adapters after each block's attention and MLP, "
                        "the rest frozen (with --init_from; 0: none)",
        "distributed": "mpi: one rank of `mpiexec -n N`, each training on batch_size rows "
                       "of its own; auto: mpi under mpiexec with 2+ ranks; none",
        "zero": "1: ZeRO stage 1 under mpiexec, each rank keeping and updating 1/N of "
                "AdamW's moments; 0: off"}


def add_arguments(parser):
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="a named recipe or model size; explicit options override it")
    for f in fields(TrainConfig):
        help = HELP.get(f.name, "")
        if isinstance(f.default, bool):
            add_bool(parser, f"--{f.name}", (help or f.name.replace("_", " "))
                     + f" (default: {str(f.default).lower()})")
            continue
        kind = {int: int, float: float, str: str}[type(f.default)]
        parser.add_argument(f"--{f.name}", type=kind, default=None,
                            help=(help + " " if help else "") + f"(default: {f.default})")


def given_values(args):
    """{field: value} of every field --preset or a flag sets."""
    values = dict(PRESETS.get(args.preset, {})) if args.preset else {}
    for f in fields(TrainConfig):
        value = getattr(args, f.name)
        if value is not None:
            values[f.name] = value
    return values


def run(args):
    given = given_values(args)
    config = TrainConfig(**given)
    from ..train import Trainer, init_process_group
    group = init_process_group(config.distributed)
    try:
        trainer = Trainer(config, given=set(given), group=group)
        trainer.run()
    except BaseException as e:
        if group.world_size > 1:
            leave_group(group, e)
        raise
    finally:
        group.close()
    if trainer.config.save_checkpoints and group.is_main:
        print(f"checkpoint: {trainer.ckpt_path}; sample with: python -m tinygpt sample "
              f"--out_dir {trainer.config.out_dir}")
    return 0


def leave_group(group, error):
    """How a rank of a group ends on `error`. One every rank raised at the same point
    (`collective`): rank 0 reports it (it goes on up), the others exit quietly with the
    same status. One of this rank alone: report it, naming the rank, and end every rank."""
    if isinstance(error, SystemExit):
        raise error
    status = (128 + int(getattr(error, "signum", signal.SIGINT))
              if isinstance(error, KeyboardInterrupt) else 1)
    if getattr(error, "collective", False):
        if group.is_main:
            return
        raise SystemExit(status)
    if os.environ.get("TINYGPT_TRACEBACK"):
        import traceback
        traceback.print_exception(error)
    message = error_message(error) if not isinstance(error, KeyboardInterrupt) else (
        f"interrupted: {error_message(error)}")
    print(f"python -m tinygpt train: error: rank {group.rank}: {message}; ending every rank",
          file=sys.stderr, flush=True)
    group.abort(status)
