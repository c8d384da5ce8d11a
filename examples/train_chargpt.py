"""Train a character-level GPT and sample from it, in one short script.

The same job as `python -m tinygpt train`, written out with the public API only, so
every step of training is on the page: batches, forward, loss, backward, clipping,
AdamW with a warm-up + cosine learning rate, evaluation, sampling.

    python examples/train_chargpt.py                          # the embedded corpus
    python examples/train_chargpt.py --data shakespeare --iters 2000
    python examples/train_chargpt.py --reference_ops true   # the ops' reference code
"""

import argparse
import time

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.autograd import reference_ops_enabled
from tinygpt.data import BatchSampler, CharTokenizer, load_text, train_val_split
from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups, get_schedule


def describe_ops():
    """Which implementation of the ops and of AdamW runs, in words."""
    if reference_ops_enabled():
        return "ops: reference (tinygpt/autograd/ops, optimizer: AdamW reference)"
    return "ops: fast kernels (tinygpt/autograd/fast, optimizer: AdamW fast paths)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--data", default="default", help="'default', 'shakespeare' or a path")
    parser.add_argument("--iters", type=int, default=500)
    parser.add_argument("--eval_every", type=int, default=100)
    parser.add_argument("--eval_iters", type=int, default=20, help="batches per evaluation")
    parser.add_argument("--sample_tokens", type=int, default=300)
    parser.add_argument("--reference_ops", choices=("true", "false"), default="false",
                        help="run every op and AdamW on their reference code "
                             "(tinygpt/autograd/ops, tinygpt/optim/adamw.py)")
    args = parser.parse_args(argv)
    if args.reference_ops == "true":
        tg.use_reference_ops()          # the code you read, not the fast kernels
    print(describe_ops())

    tg.manual_seed(1337)
    text = load_text(args.data)
    tokenizer = CharTokenizer.from_text(text)
    train_data, val_data = train_val_split(tokenizer.encode_array(text))

    # nanoGPT's small CPU recipe: 4 layers, 4 heads, 128 channels, 64 characters of context.
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=4, n_head=4,
                       n_embd=128, dropout=0.0)
    model = GPT(config)
    optimizer = AdamW(configure_param_groups(model.named_parameters(), weight_decay=0.1),
                      lr=1e-3, betas=(0.9, 0.99))
    lr_at = get_schedule("cosine", max_lr=1e-3, min_lr=1e-4,
                         warmup_iters=min(100, args.iters), lr_decay_iters=args.iters)
    batches = BatchSampler(train_data, config.block_size, batch_size=12, seed=1337)

    def evaluate(data, n=args.eval_iters):
        model.eval()
        sampler = BatchSampler(data, config.block_size, batch_size=12, seed=0)
        with tg.no_grad():
            losses = [model(*sampler.get_batch())[1].item() for _ in range(n)]
        model.train()
        return sum(losses) / n

    start = time.perf_counter()
    for it in range(args.iters + 1):
        if it % args.eval_every == 0 or it == args.iters:
            print(f"step {it}: train loss {evaluate(train_data):.4f}, "
                  f"val loss {evaluate(val_data):.4f}, {time.perf_counter() - start:.0f}s")
        if it == args.iters:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(it)
        x, y = batches.get_batch()          # (B, T) inputs and the same shifted by one
        logits, loss = model(x, y)          # (B, T, V) and the mean cross-entropy
        loss.backward()                     # d loss / d every parameter, into .grad
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    prompt = tg.tensor([tokenizer.encode(text[:1])])
    out = model.generate(prompt, args.sample_tokens, temperature=0.8, top_k=None, seed=0)
    print(tokenizer.decode(out.numpy()[0].tolist()))


if __name__ == "__main__":
    main()
