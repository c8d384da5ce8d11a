"""`python -m tinygpt finetune`: fine-tune a GPT on a multiple-choice task, GPT-1's way.

Every field of `FinetuneConfig` (tinygpt/train/finetune.py) is an option of the same
name: `--task cloze --init_from out-cloze-pre --lm_coef 0.5 --learning_rate 6.25e-5`.
Without --init_from a new, randomly initialised GPT is fine-tuned (the baseline a
pre-trained model should beat). `--lora_rank 8` or `--adapter_size 32` train LoRA or
bottleneck adapters and the head only, the GPT frozen.
"""

from dataclasses import fields

from .common import add_bool

# Flags whose default alone does not say what they do.
HELP = {
    "task": "a folder with train.jsonl, val.jsonl, test.jsonl (`python -m tinygpt cloze` "
            "writes one) ",
    "init_from": "the out_dir of `python -m tinygpt train`, a Hugging Face GPT-2 folder, or "
                 "nothing for a new, randomly initialised GPT ",
    "lm_coef": "weight of the auxiliary language-modelling loss (0 turns it off) ",
    "warmup": "fraction of the steps spent warming the learning rate up ",
    "clf_dropout": "dropout on the hidden state the classifier reads ",
    "lora_rank": "LoRA's rank on the GPT's layers, which are frozen; the head is trained "
                 "(0: fine-tune every parameter) ",
    "lora_targets": "comma-separated names of the layers LoRA adapts ",
    "adapter_size": "width of the bottleneck adapters after each block's attention and MLP; "
                    "the GPT is frozen, the adapters and the head are trained (0: none) ",
}


def add_arguments(parser):
    from ..train.finetune import FinetuneConfig
    for f in fields(FinetuneConfig):
        default = f.default
        if isinstance(default, bool):
            add_bool(parser, f"--{f.name}", HELP.get(f.name, "") or
                     ("replace an existing checkpoint in --out_dir" if f.name == "overwrite"
                      else f.name.replace("_", " ")), default=default)
            continue
        kind = {int: int, float: float, str: str}[type(default)]
        parser.add_argument(f"--{f.name}", type=kind, default=default,
                            help=HELP.get(f.name, "") + f"(default: {default})")


def run(args):
    from ..train.finetune import FinetuneConfig, finetune
    config = FinetuneConfig(**{f.name: getattr(args, f.name) for f in fields(FinetuneConfig)})
    results = finetune(config)
    print(f"test accuracy {results['test_accuracy']:.4f}; classifier saved in "
          f"{config.out_dir}/ckpt.npz, results in {config.out_dir}/results.json")
    return 0
