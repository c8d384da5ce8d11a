"""`python -m tinygpt acceptability`: write a tiny-Shakespeare acceptability task (2-way
multiple choice) to a folder.

The folder gets train.jsonl, val.jsonl, test.jsonl (a real line of a speech against the
same line with two words swapped, its words shuffled, one word misspelt or one replaced),
pretrain.txt (the training speeches only: pre-train on it with `python -m tinygpt train
--data FOLDER/pretrain.txt`) and task.json, in the format of `cloze`: `python -m tinygpt
finetune --task FOLDER` reads it. See tinygpt/data/acceptability.py for how the examples
and splits are made.
"""

from ..data.acceptability import KINDS
from .common import add_bool


def add_arguments(parser):
    parser.add_argument("--data", default="shakespeare",
                        help="'shakespeare' or a text file in its layout (default: shakespeare)")
    parser.add_argument("--out_dir", default="acceptability",
                        help="the folder to write (default: acceptability)")
    parser.add_argument("--kind", default="swap", choices=KINDS,
                        help="swap: two plain words trade places; shuffle: the plain words "
                             "in another order; misspell: one plain word's letters scrambled; "
                             "replace: one plain word becomes another of the same length "
                             "(default: swap)")
    add_bool(parser, "--last_word", "misspell or replace the last word that can change "
                                    "(misspell and replace only)", default=False)
    parser.add_argument("--min_words", type=int, default=4,
                        help="the fewest words of a line used (default: 4)")
    for split, what in (("train", "training"), ("val", "validation"), ("test", "test")):
        parser.add_argument(f"--n_{split}", type=int, default=None,
                            help=f"{what} examples to keep, drawn at random (default: one per "
                                 f"usable line)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits and draws "
                                                             "(default: 0)")
    add_bool(parser, "--overwrite", "replace a task already in --out_dir", default=False)


def run(args):
    from ..data import load_text
    from ..data.acceptability import make_acceptability
    from ..data.cloze import save_task
    for flag, value, low in (("--min_words", args.min_words, 2), ("--seed", args.seed, 0),
                             ("--n_train", args.n_train, 1), ("--n_val", args.n_val, 1),
                             ("--n_test", args.n_test, 1)):
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    task = make_acceptability(load_text(args.data), kind=args.kind, seed=args.seed,
                              min_words=args.min_words, n_train=args.n_train,
                              n_val=args.n_val, n_test=args.n_test, last_word=args.last_word)
    save_task(task, args.out_dir, overwrite=args.overwrite)
    info = task.info
    print(f"{args.out_dir}: {info['train_examples']} train, {info['val_examples']} val, "
          f"{info['test_examples']} test examples ({args.kind}, 2 choices); pretrain.txt has "
          f"{info['pretrain_chars']:,} characters (training speeches only)")
    return 0
