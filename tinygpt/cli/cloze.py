"""`python -m tinygpt cloze`: write the tiny-Shakespeare cloze task to a folder.

The folder gets train.jsonl, val.jsonl, test.jsonl (a story of a few lines of a speech,
the true next line among lines from elsewhere), pretrain.txt (the training speeches only:
pre-train on it with `python -m tinygpt train --data FOLDER/pretrain.txt`) and task.json.
See tinygpt/data/cloze.py for how the examples and splits are made.
"""

from .common import add_bool


def add_arguments(parser):
    parser.add_argument("--data", default="shakespeare",
                        help="'shakespeare' or a text file in its layout (default: shakespeare)")
    parser.add_argument("--out_dir", default="cloze", help="the folder to write (default: cloze)")
    parser.add_argument("--n_context", type=int, default=3,
                        help="lines of the story (default: 3)")
    parser.add_argument("--choices", type=int, default=2,
                        help="endings per example, the true one included (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits and draws "
                                                             "(default: 0)")
    add_bool(parser, "--overwrite", "replace a task already in --out_dir", default=False)


def run(args):
    from ..data import load_text
    from ..data.cloze import make_cloze, save_task
    for flag, value, low in (("--n_context", args.n_context, 1), ("--choices", args.choices, 2),
                             ("--seed", args.seed, 0)):
        if value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    task = make_cloze(load_text(args.data), n_context=args.n_context, n_choices=args.choices,
                      seed=args.seed)
    save_task(task, args.out_dir, overwrite=args.overwrite)
    info = task.info
    print(f"{args.out_dir}: {info['train_examples']} train, {info['val_examples']} val, "
          f"{info['test_examples']} test examples of {args.choices} choices; "
          f"pretrain.txt has {info['pretrain_chars']:,} characters (training speeches only)")
    return 0
