"""The command line (floor 7): `python -m tinygpt COMMAND [options]`.

Each command is a module of this package with `add_arguments(parser)` and `run(args) ->
int` (the exit status), listed in COMMANDS with a line of help. Modules are imported only
when their command runs, so `python -m tinygpt sample` does not pay for the trainer's
imports. Every command gets the conventions of `common.py`: no abbreviated flags,
true/false flags, and errors as one line on stderr with a non-zero exit status.

Started by an MPI launcher (`mpiexec -n N`), every rank runs the command. `train` reports
its ranks' errors itself; any other command runs the same on every rank, and rank 0 alone
writes to stderr (one error line, not N). Such a command is meant for one process: one
that writes files (cloze, acceptability, tokenizer) writes them from every rank, and a
rank that finds another's file there already fails with its error unseen.
"""

import contextlib
import importlib
import io
import os
import sys

from .common import EXIT_USAGE, Parser, run_command

# command name -> module name in this package
COMMANDS = {
    "train": "train",
    "sample": "sample",
    "chat": "chat",
    "tokenizer": "tokenizer",
    "gradcheck": "gradcheck",
    "plot": "plot",
    "cloze": "cloze",
    "acceptability": "acceptability",
    "finetune": "finetune",
}

_HELP = {
    "train": "train a GPT (char-level by default) and save checkpoints",
    "sample": "generate text from a checkpoint or pretrained GPT-2 weights",
    "chat": "talk with a trained GPT, turn after turn, the conversation in its KV cache",
    "tokenizer": "train a byte-level BPE tokenizer on a text file",
    "gradcheck": "gradient-check every registered op and print a table",
    "plot": "draw the loss curves and training statistics of a run as PNG files",
    "cloze": "write the tiny-Shakespeare cloze task (multiple choice) to a folder",
    "acceptability": "write a tiny-Shakespeare acceptability task (a real line against a "
                     "corrupted copy) to a folder",
    "finetune": "fine-tune a GPT on a multiple-choice task (GPT-1's head and auxiliary LM loss)",
}


def build_parser():
    parser = Parser(
        prog="python -m tinygpt",
        description="tinygpt: a GPT you can read end to end.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        sub.add_parser(name, help=_HELP[name], add_help=False)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else EXIT_USAGE
    name = argv[0]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; expected one of: {', '.join(COMMANDS)}")
    module = importlib.import_module(f".{COMMANDS[name]}", __name__)
    sub = Parser(prog=f"python -m tinygpt {name}", description=_HELP[name])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    if name != "train" and launched_rank() > 0:
        with contextlib.redirect_stderr(io.StringIO()):
            return run_command(module.run, args, name=sub.prog)
    return run_command(module.run, args, name=sub.prog)


# What MPI launchers set in each rank's environment: its world size and its rank.
_RANK_VARIABLES = (("PMI_SIZE", "PMI_RANK"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"))


def launched_rank(environ=None):
    """This process's rank among the ranks an MPI launcher started (more than one), else 0."""
    environ = os.environ if environ is None else environ
    for size, rank in _RANK_VARIABLES:
        if environ.get(size, "").isdigit() and int(environ[size]) > 1:
            text = environ.get(rank, "")
            return int(text) if text.isdigit() else 0
    return 0
