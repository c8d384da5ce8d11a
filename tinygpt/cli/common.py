"""What every command shares (floor 7): its parser, true/false flags, and the one place
where errors become one line on stderr and an exit status.

- `Parser`: argparse's parser without prefix matching (`--lr 100` is an error, never
  `--lr_decay_iters 100`), a usage error in one line, exit status 2.
- `add_bool(parser, "--name", help, default)`: a flag that takes `true` or `false`
  (also yes/no, on/off, 1/0); given alone it means true.
- `run_command(fn, args)`: runs a command's `fn(args)` and turns everything a user can
  cause into one line on stderr and its exit status (`EXIT_*`). Set TINYGPT_TRACEBACK=1 to
  see the full traceback instead.

A new command gets all of it by being listed in `tinygpt/cli/__init__.py` and building
its options on the parser it is given, with `add_bool` for its true/false flags.
"""

import argparse
import os
import signal
import sys

EXIT_OK = 0
EXIT_ERROR = 1              # bad input, a missing file, a failed run: the message says which
EXIT_USAGE = 2              # a flag argparse cannot parse
EXIT_BROKEN_PIPE = 128 + 13  # the reader of stdout went away (`sample | head`): SIGPIPE's status
# An interruption exits with 128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM.

TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with `allow_abbrev=False` and one-line usage errors (exit 2).
    Sub-commands made with `add_subparsers` are Parsers too."""

    def __init__(self, *args, allow_abbrev=False, **kwargs):
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_bool(text):
    """'true' or 'false' (or yes/no, on/off, 1/0, any case) as a bool."""
    value = str(text).strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_bool(parser, flag, help, default=None):
    """Add `--flag [true|false]`: `--flag` alone is true, `--flag false` false; absent,
    the value is `default` (None lets a caller tell a given flag from an absent one)."""
    shown = "" if default is None else f" (default: {str(default).lower()})"
    parser.add_argument(flag, type=parse_bool, nargs="?", const=True, default=default,
                        metavar="true|false", help=help + shown)


def one_line(text):
    """A message on one line: its lines joined by '; ' (by a space after a colon)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    out = ""
    for line in lines:
        out += ("" if not out else " " if out.endswith(":") else "; ") + line
    return out


def error_message(exc):
    """The one line a user sees for `exc`."""
    text = one_line(exc)
    if isinstance(exc, MemoryError):
        return "out of memory" + (f": {text}" if text else "")
    if isinstance(exc, RecursionError):
        return f"the input is nested too deeply to process ({text or 'RecursionError'})"
    return text or type(exc).__name__


# What a user can cause: bad values and files (ValueError, TypeError, OSError, including
# missing files, folders in use and failed downloads), a run that cannot go on
# (RuntimeError: non-finite losses, lost workers, no CuPy), too large an input
# (MemoryError, RecursionError), NaN logits (ArithmeticError), missing extras (ImportError).
USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError, MemoryError, ArithmeticError,
               ImportError)


def run_command(fn, args, name="tinygpt"):
    """`fn(args)`'s exit status, with every user-caused error as one line on stderr."""
    try:
        return fn(args) or EXIT_OK
    except BrokenPipeError:
        # The reader left: say nothing more, and keep Python from failing to flush at exit.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt as e:
        _print_error(f"{name}: {one_line(e) or 'interrupted'}")
        return 128 + int(getattr(e, "signum", signal.SIGINT))
    except USER_ERRORS as e:
        if os.environ.get("TINYGPT_TRACEBACK"):
            raise
        _print_error(f"{name}: error: {error_message(e)}")
        return EXIT_ERROR


def _print_error(line):
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):       # stderr itself gone
        pass


def _silence_stdout():
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):   # stdout without a descriptor (a test)
        pass
