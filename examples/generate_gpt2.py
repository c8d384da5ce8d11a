"""Generate text with GPT-2's weights, printing each token as it comes.

    python examples/generate_gpt2.py gpt2 --prompt "Hello, I'm a language model," --top_k 50

The first argument is a Hugging Face GPT-2 folder (config.json, model.safetensors, vocab.json,
merges.txt). tinygpt downloads nothing; fetch one with, for example,

    huggingface-cli download openai-community/gpt2 config.json model.safetensors \
        vocab.json merges.txt --local-dir gpt2

(gpt2-medium, gpt2-large and gpt2-xl load the same way). Sampling follows `GPT.generate`:
temperature, then top-k and/or top-p (nucleus) filtering; --greedy takes the likeliest token.
"""

import argparse
import codecs
import sys
import time

import tinygpt as tg
from tinygpt.autograd import reference_ops_enabled
from tinygpt.model import GPT


def describe_ops():
    """Which implementation of the ops and of AdamW runs, in words."""
    if reference_ops_enabled():
        return "ops: reference (tinygpt/autograd/ops, optimizer: AdamW reference)"
    return "ops: fast kernels (tinygpt/autograd/fast, optimizer: AdamW fast paths)"


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(description="generate text with pretrained GPT-2",
                                     allow_abbrev=False)
    parser.add_argument("model", help="a Hugging Face GPT-2 folder")
    parser.add_argument("--prompt", default="Hello, I'm a language model,")
    parser.add_argument("--max_new_tokens", type=int, default=100)
    parser.add_argument("--num_samples", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=50)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference_ops", choices=("true", "false"), default="false",
                        help="run every op and AdamW on their reference code "
                             "(tinygpt/autograd/ops, tinygpt/optim/adamw.py)")
    args = parser.parse_args(argv)
    if args.reference_ops == "true":
        tg.use_reference_ops()          # the code you read, not the fast kernels
    print(describe_ops(), file=sys.stderr)

    start = time.perf_counter()
    model = GPT.from_pretrained(args.model)
    model.to(args.device)
    tokenizer = model.tokenizer
    if tokenizer is None:
        sys.exit(f"{args.model} has no tokenizer: add vocab.json and merges.txt to the folder")
    print(f"loaded {model.get_num_params() / 1e6:.1f}M parameters in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)

    prompt = tg.tensor([tokenizer.encode(args.prompt)], dtype="int64", device=args.device)
    for i in range(args.num_samples):
        out.write(args.prompt)
        # A token can end in the middle of a UTF-8 character: decode bytes incrementally.
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        start = time.perf_counter()
        for column in model.generate_iter(prompt, args.max_new_tokens,
                                          temperature=args.temperature, top_k=args.top_k,
                                          top_p=args.top_p, do_sample=not args.greedy,
                                          seed=args.seed + i):
            out.write(text.decode(tokenizer.decode_bytes(column.numpy()[0])))
            out.flush()
        out.write(text.decode(b"", final=True) + "\n")
        seconds = time.perf_counter() - start
        print(f"--- {args.max_new_tokens} tokens in {seconds:.1f} s "
              f"({args.max_new_tokens / max(seconds, 1e-9):.1f} tokens/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
