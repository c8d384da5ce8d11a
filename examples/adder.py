"""Teach a GPT to add: minGPT's adder project, on tinygpt.

A problem a + b with n-digit operands is one sequence of 3n + 1 digits: the n digits of a,
the n digits of b (both padded with zeros), then the n + 1 digits of the sum reversed,
last digit first, the order in which a carry reaches the next digit. For n = 2,
85 + 50 = 135 is the sequence

    8 5 5 0 5 3 1

The model reads the 2n digits of the problem and writes the sum's n + 1; the loss counts
the sum's digits only (examples/digit_tasks.py shows the layout). Of the (10**n)**2
problems, 20% (at most 500) are held out with a fixed seed and never trained on. After
training the model answers each held-out problem greedily, and an answer counts only when
every digit is right.

    python examples/adder.py                           # 2 digits
    python examples/adder.py --ndigit 3 --iters 5000
"""

import numpy as np

from digit_tasks import (answer, digits, make_model, percent, split_problems, to_show, train,
                         training_flags)


def encode(problems, ndigit):
    """Problem ids (N,) -> sequences (N, 3 * ndigit + 1). Id i stands for a + b with
    a = i // 10**ndigit and b = i % 10**ndigit, so ids 0 .. 100**ndigit - 1 are every problem.

    >>> encode(np.array([8550]), 2)
    array([[8, 5, 5, 0, 5, 3, 1]])
    """
    a, b = np.divmod(np.asarray(problems, dtype=np.int64), 10 ** ndigit)
    total = digits(a + b, ndigit + 1)[:, ::-1]                  # reversed: last digit first
    return np.concatenate([digits(a, ndigit), digits(b, ndigit), total], axis=1)


def decode(digit_rows):
    """Digits (N, n), most significant first -> the numbers they write (N,)."""
    return digit_rows @ 10 ** np.arange(digit_rows.shape[1] - 1, -1, -1)


def main(argv=None):
    parser = training_flags(__doc__.splitlines()[0], iters=2000, eval_every=250)
    parser.add_argument("--ndigit", type=int, default=2, help="digits of each operand, 1 to 3")
    parser.add_argument("--eval_train", type=int, default=500,
                        help="training problems scored at each evaluation")
    args = parser.parse_args(argv)
    n = args.ndigit
    if not 1 <= n <= 3:
        # 4 digits would make 10**8 problems: too many to list and split in memory.
        parser.error(f"--ndigit must be 1, 2 or 3, got {n}")

    n_problems = 10 ** (2 * n)
    train_ids, test_ids = split_problems(n_problems, n_test=min(n_problems // 5, 500))
    train_sequences, test_sequences = encode(train_ids, n), encode(test_ids, n)
    train_sample = train_sequences[:args.eval_train]      # already in random order
    print(f"{n}-digit addition: {len(train_ids):,} training problems, "
          f"{len(test_ids)} held out")
    model = make_model(args, vocab_size=10, sequence_length=3 * n + 1)

    def evaluate():
        return (f"held-out {100 * answer(model, test_sequences, 2 * n)[1].mean():.1f}%, "
                f"train {100 * answer(model, train_sample, 2 * n)[1].mean():.1f}%")

    seconds = train(model, train_sequences, 2 * n, args, evaluate)

    answers, test_hits = answer(model, test_sequences, 2 * n)
    train_hits = answer(model, train_sample, 2 * n)[1]
    print(f"held-out problems solved: {percent(test_hits)}")
    print(f"training problems solved (a sample): {percent(train_hits)}")
    print(f"{args.iters} steps in {seconds:.0f} s, evaluations included")

    # A few held-out problems, then the mistakes (up to five), in the usual notation.
    a, b = decode(test_sequences[:, :n]), decode(test_sequences[:, n:2 * n])
    said = decode(answers[:, ::-1])
    for i in to_show(test_hits):
        verdict = "right" if said[i] == a[i] + b[i] else f"wrong, it is {a[i] + b[i]}"
        print(f"  GPT: {a[i]} + {b[i]} = {said[i]}   ({verdict})")
    return dict(test_accuracy=float(test_hits.mean()), train_accuracy=float(train_hits.mean()),
                seconds=seconds, parameters=model.num_parameters())


if __name__ == "__main__":
    main()
