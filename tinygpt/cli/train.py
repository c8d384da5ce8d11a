"""`python -m tinygpt train`: train a GPT with nanoGPT-like options.

Every field of `TrainConfig` is an option of the same name (`--n_layer 6`,
`--batch_size 64`, `--bias false`); `--preset` fills several at once and explicit
options win over it.
"""

import argparse
from dataclasses import fields

from ..train import TrainConfig, TrainingError

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


def _bool(text):
    value = text.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# Flags whose default alone does not say what they do.
HELP = {"processes": "CPU processes each batch is split over, gradients summed; 0: two on "
                     "Linux with 2+ cores, else one "}


def add_arguments(parser):
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="a named recipe or model size; explicit options override it")
    defaults = TrainConfig.__dataclass_fields__
    for f in fields(TrainConfig):
        default = defaults[f.name].default
        kind = {bool: _bool, int: int, float: float, str: str}[type(default)]
        if f.name == "resume":
            parser.add_argument("--resume", action="store_true",
                                help="continue the run saved in --out_dir")
            continue
        if f.name == "overwrite":
            parser.add_argument("--overwrite", action="store_true",
                                help="replace an existing checkpoint in --out_dir")
            continue
        parser.add_argument(f"--{f.name}", type=kind, default=None,
                            help=HELP.get(f.name, "") + f"(default: {default})")


def config_from_args(args):
    values = dict(PRESETS.get(args.preset, {})) if args.preset else {}
    for f in fields(TrainConfig):
        value = getattr(args, f.name)
        if value is not None and value is not False:
            values[f.name] = value
    return TrainConfig(**values)


def run(args):
    try:
        config = config_from_args(args)
        from ..train import Trainer
        trainer = Trainer(config)
        trainer.run()
    except (ValueError, FileNotFoundError, FileExistsError, TrainingError) as e:
        print(f"error: {e}")
        return 1
    print(f"checkpoint: {trainer.ckpt_path}; sample with: python -m tinygpt sample "
          f"--out_dir {config.out_dir}")
    return 0
