"""`python -m tinygpt chat`: talk with a trained GPT in the terminal, turn after turn.

The model keeps the whole conversation in its KV cache, so each turn runs only its own
tokens (`tinygpt.model.chat.Conversation`); when the conversation outgrows the model's
context, the oldest turns are dropped. Replies stream as they are sampled. Type /reset to
start over, /exit (or end the input, or Ctrl-C) to leave, /help for the commands: a line
whose first word starts with one "/" is a command (any case, trailing words ignored), an
unknown one is answered with the list; start a line with "//" to send it with one "/".
Lines may end in CRLF.
"""

import sys

from .common import add_bool
from .sample import add_model_arguments, add_sampling_arguments

COMMANDS_HELP = ("commands: /reset forgets the conversation, /exit leaves, /help shows this; "
                 "start a line with // to send one beginning with /")


def add_arguments(parser):
    add_model_arguments(parser)
    parser.add_argument("--user_prefix", default="", help="text put before each of your turns")
    parser.add_argument("--bot_prefix", default="\n",
                        help="text put after each of your turns, before the reply (default: "
                             "a newline)")
    parser.add_argument("--stop", default="\n\n",
                        help="a reply ends where this text appears (default: an empty line)")
    parser.add_argument("--max_new_tokens", type=int, default=None,
                        help="the longest reply, in tokens (default: 200, or half the model's "
                             "block_size when that is smaller)")
    add_sampling_arguments(parser)
    add_bool(parser, "--stats", "after each reply, print to stderr the tokens the model ran",
             default=False)


def run(args, stdin=None, out=None):
    from ..model.chat import Conversation
    from .sample import load
    stdin, out = stdin or sys.stdin, out or sys.stdout
    model, tokenizer = load(args)
    stop_token = getattr(tokenizer, "eot_token", None)
    chat = Conversation(model, tokenizer, user_prefix=_unescape(args.user_prefix),
                        bot_prefix=_unescape(args.bot_prefix),
                        stop=(_unescape(args.stop),), max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        do_sample=not args.greedy, seed=args.seed, stop_token=stop_token)
    interactive = stdin.isatty()
    if interactive:
        print(COMMANDS_HELP, file=sys.stderr)
    while True:
        if interactive:
            out.write("> ")
            out.flush()
        line = stdin.readline()
        if not line:                                       # end of input
            return 0
        text = line.rstrip("\n").removesuffix("\r")
        command = _command(text)
        if command == "/exit":
            return 0
        if command == "/reset":
            chat.reset()
            print("(conversation reset)", file=sys.stderr)
            continue
        if command == "/help":
            print(COMMANDS_HELP, file=sys.stderr)
            continue
        if command is not None:
            print(f"unknown command {command}; {COMMANDS_HELP}", file=sys.stderr)
            continue
        if text.lstrip().startswith("//"):
            text = text.replace("/", "", 1)
        before = chat.tokens_run
        try:
            for piece in chat.reply(text):
                out.write(piece)
                out.flush()
        except ValueError as e:                            # this turn only: say why, go on
            print(f"error: {e}", file=sys.stderr)
            continue
        out.write("\n")
        out.flush()
        if args.stats:
            print(f"(ran {chat.tokens_run - before} tokens; {len(chat.history())} in "
                  f"context)", file=sys.stderr)


def _command(text):
    """The command a line gives, lowercased ("/exit"), or None for a line to send."""
    words = text.split()
    if not words or not words[0].startswith("/") or words[0].startswith("//"):
        return None
    return words[0].lower()


def _unescape(text):
    """Command-line text with \\n and \\t written as escapes turned into the characters."""
    return text.replace("\\n", "\n").replace("\\t", "\t")
