"""What examples/adder.py and examples/sort.py share: a GPT trained on problems written as
one sequence of tokens, the prompt then the answer, and scored on its greedy answers.

A problem with a prompt of P tokens and an answer of A tokens is one sequence s of P + A
tokens. As in language modelling, the model reads s[:-1] and learns to predict s[1:]; but
only the answer is worth learning (the prompt is random), so the targets before the answer
are -1, which `GPT.forward` leaves out of the loss (minGPT's layout):

    s       = p0 p1 p2 p3 a0 a1 a2                    (P = 4, A = 3)
    inputs  = p0 p1 p2 p3 a0 a1                       (the model's block_size is P + A - 1)
    targets = -1 -1 -1 a0 a1 a2                       (the answer, each token at the
                                                       position that predicts it)

At test time the model gets the prompt alone and writes A tokens, each the most likely one
(greedy decoding); a problem counts as solved when all A tokens are right.

This file is a helper of the two examples (they import it as `digit_tasks`), not part of
the tinygpt package: it uses only tinygpt's public API.
"""

import argparse
import time

import numpy as np

import tinygpt as tg
from tinygpt.autograd import reference_ops_enabled
from tinygpt.optim import AdamW, clip_grad_norm_, configure_param_groups, get_schedule

SPLIT_SEED = 1337   # the held-out problems are the same whatever --seed says


def split_problems(n_problems, n_test):
    """Problem ids 0 .. n_problems - 1 in a fixed random order, cut in two: (train, test).

    Every problem lands in exactly one part, so the held-out problems are never trained on.
    """
    order = np.random.default_rng(SPLIT_SEED).permutation(n_problems)
    return order[n_test:], order[:n_test]


def digits(numbers, n, base=10):
    """The n digits of each of numbers (N,) in `base`, most significant first: (N, n).

    >>> digits(np.array([135, 7]), 3)
    array([[1, 3, 5],
           [0, 0, 7]])
    """
    powers = base ** np.arange(n - 1, -1, -1)
    return np.asarray(numbers, dtype=np.int64)[:, None] // powers % base


def inputs_and_targets(sequences, prompt_length):
    """The model's inputs (N, L - 1) and targets (N, L - 1) for sequences (N, L) whose first
    prompt_length tokens are the prompt: targets -1 wherever the next token is still part
    of the prompt."""
    inputs = sequences[:, :-1]
    targets = sequences[:, 1:].copy()
    targets[:, :prompt_length - 1] = -1
    return inputs, targets


def answer(model, sequences, prompt_length):
    """The model's greedy answers (N, A) to the prompts of sequences (N, P + A), and a bool
    per problem (N,): is its answer exactly the one in `sequences`?

    Greedy: each new token is the most likely one (`generate` with do_sample=False, which
    runs the prompt once and then one position per token, with a KV cache).
    """
    prompts = sequences[:, :prompt_length]
    out = model.generate(tg.tensor(prompts), sequences.shape[1] - prompt_length, do_sample=False)
    answers = out.numpy()[:, prompt_length:]
    return answers, (answers == sequences[:, prompt_length:]).all(axis=1)


def positive_int(text):
    """argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def training_flags(description, iters, eval_every):
    """An argument parser with the flags both examples share. The model's sizes default to
    minGPT's gpt-nano, the optimizer to minGPT's trainer (AdamW, betas (0.9, 0.95), weight
    decay 0.1, batch 64, gradients clipped at 1.0), with a higher peak learning rate, a
    warm-up and a cosine decay."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--iters", type=positive_int, default=iters, help="training steps")
    parser.add_argument("--batch_size", type=positive_int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="peak learning rate (warm-up, then cosine decay to lr / 10)")
    parser.add_argument("--n_layer", type=positive_int, default=3)
    parser.add_argument("--n_head", type=positive_int, default=3)
    parser.add_argument("--n_embd", type=positive_int, default=48)
    parser.add_argument("--eval_every", type=positive_int, default=eval_every,
                        help="steps between two evaluations")
    parser.add_argument("--seed", type=int, default=1337,
                        help="seeds the weights and the batches (not the train/test split)")
    parser.add_argument("--reference_ops", choices=("true", "false"), default="false",
                        help="run every op and AdamW on their reference code "
                             "(tinygpt/autograd/ops, tinygpt/optim/adamw.py)")
    return parser


def make_model(args, vocab_size, sequence_length):
    """A GPT of the sizes in args for sequences of sequence_length tokens (it reads all
    but the last). With --reference_ops true, every op and AdamW from now on run their
    reference code."""
    if args.reference_ops == "true":
        tg.use_reference_ops()          # the code you read, not the fast kernels
    print("ops: reference (tinygpt/autograd/ops, optimizer: AdamW reference)"
          if reference_ops_enabled() else
          "ops: fast kernels (tinygpt/autograd/fast, optimizer: AdamW fast paths)")
    tg.manual_seed(args.seed)
    config = tg.GPTConfig(vocab_size=vocab_size, block_size=sequence_length - 1,
                          n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                          dropout=0.0)
    model = tg.GPT(config)
    print(f"{model.num_parameters():,} parameters: {args.n_layer} layers, {args.n_head} heads, "
          f"{args.n_embd} channels")
    return model


def train(model, train_sequences, prompt_length, args, evaluate):
    """Train on batches of rows drawn from train_sequences (N, L), printing the mean loss
    and what evaluate() returns (a str) every args.eval_every steps and after the last.
    Returns the wall time in seconds, evaluations included."""
    optimizer = AdamW(configure_param_groups(model.named_parameters(), weight_decay=0.1),
                      lr=args.lr, betas=(0.9, 0.95))
    lr_at = get_schedule("cosine", max_lr=args.lr, min_lr=args.lr / 10,
                         warmup_iters=min(100, args.iters), lr_decay_iters=args.iters)
    rng = np.random.default_rng(args.seed)
    losses, start = [], time.perf_counter()
    for it in range(args.iters + 1):
        if it % args.eval_every == 0 or it == args.iters:
            mean_loss = f"{np.mean(losses):.4f}" if losses else "-"
            print(f"step {it}: loss {mean_loss}, {evaluate()}, "
                  f"{time.perf_counter() - start:.0f}s", flush=True)
            losses = []
        if it == args.iters:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(it)
        rows = rng.integers(0, len(train_sequences), args.batch_size)
        x, y = inputs_and_targets(train_sequences[rows], prompt_length)   # (B, L - 1) each
        _, loss = model(x, y)               # the mean cross-entropy over the answer tokens
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return time.perf_counter() - start


def to_show(hits, n=5):
    """Indices of problems worth printing: the first n, then up to n mistakes among the rest."""
    mistakes = np.flatnonzero(~hits[n:])[:n] + n
    return list(range(min(n, len(hits)))) + mistakes.tolist()


def percent(hits):
    """'k/n = p%' for a bool array."""
    return f"{int(hits.sum())}/{len(hits)} = {100 * hits.mean():.2f}%"
