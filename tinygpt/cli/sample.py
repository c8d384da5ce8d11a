"""`python -m tinygpt sample`: generate text from a trained checkpoint, printing tokens
as they come. Every option is checked before the first character is printed.

Without --prompt a sample starts from a newline (the start of a line, as in the texts
tinygpt trains on); a vocabulary without a newline starts from its first token instead
(id 0, printed as the sample's first character)."""

import codecs
import sys

from .common import add_bool


def add_arguments(parser):
    add_model_arguments(parser)
    parser.add_argument("--prompt", default=None,
                        help="text to continue (default: a newline, or the vocabulary's first "
                             "token when it has no newline)")
    parser.add_argument("--num_tokens", type=int, default=500, help="tokens to generate")
    parser.add_argument("--num_samples", type=int, default=1)
    add_sampling_arguments(parser)


def add_model_arguments(parser):
    """Where the model comes from, --out_dir (a run) or --init_from (GPT-2's files), and
    the device it runs on."""
    parser.add_argument("--out_dir", default="out", help="folder of the run (ckpt.npz)")
    parser.add_argument("--init_from", default="",
                        help="a pretrained GPT-2 folder (config.json + model.safetensors) "
                             "instead of --out_dir")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--block_size", type=int, default=None,
                        help="the context to run on (default: the trained one); longer only "
                             "for a model with rotary positions")
    parser.add_argument("--rope_scale", type=float, default=None,
                        help="rotary positions: position p runs as p / rope_scale (position "
                             "interpolation, e.g. 2 at twice the trained context; default: "
                             "the model's)")
    parser.add_argument("--quantize", default=None, choices=["int8"],
                        help="run with int8 weights (per-row scales), quantised after loading")
    add_bool(parser, "--reference_ops", "run every op on its reference code "
             "(tinygpt/autograd/ops): slower, the same numbers to float rounding (default: "
             "as TINYGPT_REFERENCE_OPS says, else false)")


def add_sampling_arguments(parser):
    """How tokens are drawn (see `GPT.generate`)."""
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--top_p", type=float, default=None)
    add_bool(parser, "--greedy", "always take the likeliest token", default=False)
    parser.add_argument("--seed", type=int, default=1337)


def load(args):
    """The model and its tokenizer, on the context --block_size / --rope_scale ask for
    (`GPT.extend_context`)."""
    if args.reference_ops is not None:
        from ..autograd import use_reference_ops
        from ..train.trainer import describe_ops
        use_reference_ops(args.reference_ops)
        print(describe_ops(), file=sys.stderr, flush=True)
    if args.init_from:
        from ..data.tokenizers import require_tokenizer
        from ..model import GPT
        model = GPT.from_pretrained(args.init_from, device=args.device)
        tokenizer = require_tokenizer(model)
    else:
        from ..train import load_for_inference
        model, tokenizer = load_for_inference(args.out_dir, device=args.device)
    block_size, rope_scale = args.block_size, args.rope_scale
    if block_size is not None or rope_scale is not None:
        model.extend_context(model.config.block_size if block_size is None else block_size,
                             rope_scale=rope_scale)
    if args.quantize:
        model.quantize(args.quantize)
    return model, tokenizer


def run(args, out=None):
    from ..autograd.fast import malloc
    malloc.keep_freed_memory()          # generation allocates the same sizes every token
    out = out or sys.stdout
    for name in ("num_tokens", "num_samples"):
        low = 0 if name == "num_tokens" else 1
        if getattr(args, name) < low:
            raise ValueError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    from ..autograd import backend
    args.device = backend.normalize_device(args.device)
    backend.array_module_for_device(args.device)           # CuPy there, for cuda?
    model, tokenizer = load(args)
    if args.prompt is None:
        args.prompt, prompt = _default_prompt(tokenizer)
    else:
        prompt = tokenizer.encode(args.prompt)
    if not prompt:
        raise ValueError("the prompt encodes to no tokens; give at least one character")
    import tinygpt as tg
    for i in range(args.num_samples):
        idx = tg.tensor([prompt], dtype="int64", device=args.device)
        # Made (and its arguments checked) before the prompt is printed.
        tokens = model.generate_iter(
            idx, args.num_tokens, temperature=args.temperature, top_k=args.top_k,
            top_p=args.top_p, do_sample=not args.greedy, seed=args.seed + i)
        out.write(args.prompt)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for column in tokens:
            token = int(column.numpy().reshape(-1)[0])
            out.write(decoder.decode(_token_bytes(tokenizer, token)))
            out.flush()
        out.write(decoder.decode(b"", final=True))
        out.write("\n" + "-" * 40 + "\n" if args.num_samples > 1 else "\n")
        out.flush()
    return 0


def _default_prompt(tokenizer):
    """(text, token ids) a sample starts from without --prompt: a newline, or the
    vocabulary's first token when a newline is not in it."""
    try:
        prompt = tokenizer.encode("\n")
    except ValueError:
        prompt = []
    if prompt:
        return "\n", prompt
    return _token_bytes(tokenizer, 0).decode("utf-8", "replace"), [0]


def _token_bytes(tokenizer, token):
    if hasattr(tokenizer, "decode_bytes"):
        return tokenizer.decode_bytes([token])
    return tokenizer.decode([token]).encode("utf-8")
