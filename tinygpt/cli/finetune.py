"""`python -m tinygpt finetune`: fine-tune a GPT on a multiple-choice task, GPT-1's way.

Every field of `FinetuneConfig` (tinygpt/train/finetune.py) is an option of the same
name: `--task cloze --init_from out-cloze-pre --lm_coef 0.5 --learning_rate 6.25e-5`.
Without --init_from a new, randomly initialised GPT is fine-tuned (the baseline a
pre-trained model should beat).
"""

import argparse
import sys
from dataclasses import fields

# Flags whose default alone does not say what they do.
HELP = {
    "task": "a folder with train.jsonl, val.jsonl, test.jsonl (`python -m tinygpt cloze` "
            "writes one) ",
    "init_from": "the out_dir of `python -m tinygpt train`, a Hugging Face GPT-2 folder, or "
                 "nothing for a new, randomly initialised GPT ",
    "lm_coef": "weight of the auxiliary language-modelling loss (0 turns it off) ",
    "warmup": "fraction of the steps spent warming the learning rate up ",
    "clf_dropout": "dropout on the hidden state the classifier reads ",
}


def _bool(text):
    value = text.lower()
    if value not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value == "true"


def add_arguments(parser):
    from ..train.finetune import FinetuneConfig
    parser.allow_abbrev = False     # an abbreviation could silently pick another flag
    for f in fields(FinetuneConfig):
        default = f.default
        if f.name == "overwrite":
            parser.add_argument("--overwrite", action="store_true",
                                help="replace an existing checkpoint in --out_dir")
            continue
        kind = {bool: _bool, int: int, float: float, str: str}[type(default)]
        parser.add_argument(f"--{f.name}", type=kind, default=default,
                            metavar="true|false" if kind is _bool else None,
                            help=HELP.get(f.name, "") + f"(default: {default})")


def run(args):
    from ..train.finetune import FinetuneConfig, finetune
    from ..train.trainer import TrainingError
    try:
        config = FinetuneConfig(**{f.name: getattr(args, f.name) for f in fields(FinetuneConfig)})
        results = finetune(config)
    except (ValueError, TypeError, OSError, TrainingError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 1
    print(f"test accuracy {results['test_accuracy']:.4f}; classifier saved in "
          f"{config.out_dir}/ckpt.npz, results in {config.out_dir}/results.json")
    return 0
