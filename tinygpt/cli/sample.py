"""`python -m tinygpt sample`: generate text from a trained checkpoint, printing tokens
as they come."""

import codecs
import sys


def add_arguments(parser):
    parser.add_argument("--out_dir", default="out", help="folder of the run (ckpt.npz)")
    parser.add_argument("--init_from", default="",
                        help="a pretrained GPT-2 folder (config.json + model.safetensors) "
                             "instead of --out_dir")
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--num_tokens", type=int, default=500, help="tokens to generate")
    parser.add_argument("--num_samples", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--greedy", action="store_true", help="always take the likeliest token")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--device", default="cpu")


def load(args):
    if args.init_from:
        from ..model import GPT
        from ..model.pretrained import require_tokenizer
        model = GPT.from_pretrained(args.init_from, device=args.device)
        return model, require_tokenizer(model)
    from ..train import load_for_inference
    return load_for_inference(args.out_dir, device=args.device)


def run(args, out=None):
    from ..autograd.fast import malloc
    malloc.keep_freed_memory()          # generation allocates the same sizes every token
    out = out or sys.stdout
    if args.num_tokens < 0:
        print(f"error: --num_tokens must be >= 0, got {args.num_tokens}", file=sys.stderr)
        return 1
    try:
        model, tokenizer = load(args)
        prompt = tokenizer.encode(args.prompt)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not prompt:
        print("error: the prompt encodes to no tokens; give at least one character",
              file=sys.stderr)
        return 1
    import tinygpt as tg
    for i in range(args.num_samples):
        idx = tg.tensor([prompt], dtype="int64", device=args.device)
        out.write(args.prompt)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            for column in model.generate_iter(
                    idx, args.num_tokens, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, do_sample=not args.greedy, seed=args.seed + i):
                token = int(column.numpy().reshape(-1)[0])
                out.write(decoder.decode(_token_bytes(tokenizer, token)))
                out.flush()
        except ValueError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            return 1
        out.write(decoder.decode(b"", final=True))
        out.write("\n" + "-" * 40 + "\n" if args.num_samples > 1 else "\n")
        out.flush()
    return 0


def _token_bytes(tokenizer, token):
    if hasattr(tokenizer, "decode_bytes"):
        return tokenizer.decode_bytes([token])
    return tokenizer.decode([token]).encode("utf-8")
