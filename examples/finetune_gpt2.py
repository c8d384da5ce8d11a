"""Fine-tune pretrained GPT-2 on a text file, then sample from it (nanoGPT's
finetune_shakespeare, on tinygpt).

    python examples/finetune_gpt2.py gpt2 --data ../shared/data/tinyshakespeare.txt

The first argument is a Hugging Face GPT-2 folder (see examples/generate_gpt2.py). The text is
tokenised with the model's own BPE, and training runs a few hundred AdamW steps at a small,
constant learning rate, as nanoGPT does: the model already knows English, it only has to
pick up the style. With --out, the fine-tuned model is saved as a Hugging Face folder.
"""

import argparse
import sys

import numpy as np

import tinygpt as tg
from tinygpt.autograd import reference_ops_enabled
from tinygpt.data import BatchSampler, train_val_split
from tinygpt.model import GPT
from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups


def describe_ops():
    """Which implementation of the ops and of AdamW runs, in words."""
    if reference_ops_enabled():
        return "ops: reference (tinygpt/autograd/ops, optimizer: AdamW reference)"
    return "ops: fast kernels (tinygpt/autograd/fast, optimizer: AdamW fast paths)"


def main(argv=None):
    parser = argparse.ArgumentParser(description="fine-tune pretrained GPT-2 on a text file",
                                     allow_abbrev=False)
    parser.add_argument("model", help="a Hugging Face GPT-2 folder")
    parser.add_argument("--data", required=True, help="a UTF-8 text file")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--block_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--eval_iters", type=int, default=10)
    parser.add_argument("--log_interval", type=int, default=10)
    parser.add_argument("--prompt", default="\n")
    parser.add_argument("--max_new_tokens", type=int, default=200)
    parser.add_argument("--out", default=None, help="save the fine-tuned model to this folder")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference_ops", choices=("true", "false"), default="false",
                        help="run every op and AdamW on their reference code "
                             "(tinygpt/autograd/ops, tinygpt/optim/adamw.py)")
    args = parser.parse_args(argv)
    if args.reference_ops == "true":
        tg.use_reference_ops()          # the code you read, not the fast kernels
    print(describe_ops())
    tg.manual_seed(args.seed)

    model = GPT.from_pretrained(args.model)
    model.to(args.device)
    tokenizer = model.tokenizer
    if tokenizer is None:
        sys.exit(f"{args.model} has no tokenizer: add vocab.json and merges.txt to the folder")
    # GPT-2 has 1,024 positions; shorter windows train faster and need less memory.
    if args.block_size < model.config.block_size:
        model.crop_block_size(args.block_size)
    block_size = model.config.block_size

    with open(args.data, encoding="utf-8") as f:
        ids = np.array(tokenizer.encode(f.read()), dtype=np.int64)
    train_ids, val_ids = train_val_split(ids, 0.9)
    print(f"{len(ids):,} tokens: {len(train_ids):,} to train on, {len(val_ids):,} to validate")
    batches = BatchSampler(train_ids, block_size, args.batch_size, seed=args.seed,
                           device=args.device)

    def val_loss():
        model.eval()
        val = BatchSampler(val_ids, block_size, args.batch_size, seed=0, device=args.device)
        with tg.no_grad():
            losses = [model(*val.get_batch())[1].item() for _ in range(args.eval_iters)]
        model.train()
        return float(np.mean(losses))

    # Weight decay on the matrices only (not on biases and LayerNorm gains), as nanoGPT.
    optimizer = AdamW(configure_param_groups(model.named_parameters(), 0.1), lr=args.lr,
                      betas=(0.9, 0.95))
    print(f"before: val loss {val_loss():.4f}")
    model.train()
    for it in range(args.iters):
        x, y = batches.get_batch()
        _, loss = model(x, y)
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if it % args.log_interval == 0 or it == args.iters - 1:
            print(f"iter {it}: loss {loss.item():.4f}")
    print(f"after: val loss {val_loss():.4f}")

    if args.out:
        model.save_pretrained(args.out)
        print(f"saved to {args.out}")
    prompt = tg.tensor([tokenizer.encode(args.prompt)], dtype="int64", device=args.device)
    out = model.generate(prompt, args.max_new_tokens, temperature=0.8, top_k=200, seed=args.seed)
    print(tokenizer.decode(out[0].numpy()))
    return model


if __name__ == "__main__":
    main()
