"""Fine-tune a pretrained GPT with LoRA, save the adapter alone, load it back, merge it.

    python examples/lora_finetune.py gpt2 --data ../shared/data/tinyshakespeare.txt --out lora-gpt2

The first argument is a Hugging Face GPT-2 folder (see examples/generate_gpt2.py), or any
folder `GPT.save_pretrained` wrote. `apply_lora` freezes the model and adds rank-r adapters
to the blocks' projections; only those train (about 1% of GPT-2's parameters at rank 8), so
the optimizer keeps two moments for them alone. The adapter is saved in PEFT's layout
(adapter_config.json + adapter_model.safetensors; Hugging Face's
`PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained("gpt2"), "lora-gpt2")` reads it),
loaded onto a fresh copy of the base, and merged into its weights: a plain GPT again,
which gives the same logits and samples as fast as the base.
"""

import argparse
import sys

import numpy as np

import tinygpt as tg
from tinygpt.autograd import reference_ops_enabled
from tinygpt.data import BatchSampler, train_val_split
from tinygpt.model import GPT
from tinygpt.model.adapters import load_adapter, save_adapter
from tinygpt.nn.lora import apply_lora, merge_lora
from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups


def describe_ops():
    """Which implementation of the ops and of AdamW runs, in words."""
    if reference_ops_enabled():
        return "ops: reference (tinygpt/autograd/ops, optimizer: AdamW reference)"
    return "ops: fast kernels (tinygpt/autograd/fast, optimizer: AdamW fast paths)"


def main(argv=None):
    parser = argparse.ArgumentParser(description="fine-tune a pretrained GPT with LoRA")
    parser.add_argument("model", help="a Hugging Face GPT-2 folder")
    parser.add_argument("--data", required=True, help="a UTF-8 text file")
    parser.add_argument("--out", default="lora-adapter", help="folder for the adapter")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--targets", default="c_attn,c_proj,c_fc")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--block_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--log_interval", type=int, default=20)
    parser.add_argument("--prompt", default="\n")
    parser.add_argument("--max_new_tokens", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--reference_ops", choices=("true", "false"), default="false",
                        help="run every op and AdamW on their reference code "
                             "(tinygpt/autograd/ops, tinygpt/optim/adamw.py)")
    args = parser.parse_args(argv)
    if args.reference_ops == "true":
        tg.use_reference_ops()          # the code you read, not the fast kernels
    print(describe_ops())
    tg.manual_seed(args.seed)

    model = GPT.from_pretrained(args.model)
    tokenizer = model.tokenizer
    if tokenizer is None:
        sys.exit(f"{args.model} has no tokenizer: add vocab.json and merges.txt to the folder")
    if args.block_size < model.config.block_size:
        model.crop_block_size(args.block_size)
    apply_lora(model, rank=args.rank, alpha=args.alpha, targets=tuple(args.targets.split(",")))
    total, trainable = model.num_parameters(), model.num_parameters(only_trainable=True)
    print(f"{total:,} parameters, {trainable:,} trainable ({100 * trainable / total:.2f}%)")

    with open(args.data, encoding="utf-8") as f:
        ids = np.array(tokenizer.encode(f.read()), dtype=np.int64)
    train_ids, val_ids = train_val_split(ids, 0.9)
    batches = BatchSampler(train_ids, model.config.block_size, args.batch_size, seed=args.seed)

    def val_loss():
        model.eval()
        val = BatchSampler(val_ids, model.config.block_size, args.batch_size, seed=0)
        with tg.no_grad():
            loss = float(np.mean([model(*val.get_batch())[1].item() for _ in range(5)]))
        model.train()
        return loss

    # Frozen parameters are left out of the groups: AdamW holds state for the adapters only.
    optimizer = AdamW(configure_param_groups(model.named_parameters(), 0.0), lr=args.lr)
    print(f"before: val loss {val_loss():.4f}")
    model.train()
    for it in range(args.iters):
        _, loss = model(*batches.get_batch())
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if it % args.log_interval == 0 or it == args.iters - 1:
            print(f"iter {it}: loss {loss.item():.4f}")
    print(f"after: val loss {val_loss():.4f}")

    save_adapter(model, args.out, overwrite=True, base_model_name_or_path=args.model)
    print(f"adapter saved to {args.out}")

    # A fresh copy of the base with the saved adapter gives the fine-tuned model; merging
    # folds the adapter into the weights.
    model.eval()
    reloaded = GPT.from_pretrained(args.model)
    if args.block_size < reloaded.config.block_size:
        reloaded.crop_block_size(args.block_size)
    load_adapter(reloaded, args.out)
    x = tg.tensor([tokenizer.encode(args.prompt)], dtype="int64")
    adapted = model(x)[0].numpy()
    merged = merge_lora(reloaded).eval()
    difference = float(np.abs(merged(x)[0].numpy() - adapted).max())
    print(f"merged model: largest logit difference from the adapted one {difference:.1e}")
    out = merged.generate(x, args.max_new_tokens, temperature=0.8, top_k=200, seed=args.seed)
    print(tokenizer.decode(out[0].numpy()))
    return merged


if __name__ == "__main__":
    main()
