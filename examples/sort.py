"""Teach a GPT to sort: minGPT's demo, sequences of 6 digits from {0, 1, 2}.

A problem is one sequence of 12 tokens: the 6 digits to sort, then the same digits in
ascending order. For example 2 0 1 1 0 2 is the sequence

    2 0 1 1 0 2 0 0 1 1 2 2

The model reads the first 6 and writes the other 6; the loss counts the sorted digits only
(examples/digit_tasks.py shows the layout). Of the 3**6 = 729 possible inputs, a quarter
are held out with a fixed seed and never trained on. After training the model sorts each
held-out sequence greedily, and an answer counts only when all 6 digits are right.

    python examples/sort.py
"""

import numpy as np

from digit_tasks import (answer, digits, make_model, percent, split_problems, to_show, train,
                         training_flags)


def encode(problems, length, num_digits):
    """Problem ids (N,) -> sequences (N, 2 * length). Id i stands for the input whose digits
    are i written in base num_digits, so ids 0 .. num_digits**length - 1 are every input.

    >>> encode(np.array([2 * 243 + 1 * 27 + 1 * 9 + 2]), 6, 3)
    array([[2, 0, 1, 1, 0, 2, 0, 0, 1, 1, 2, 2]])
    """
    inputs = digits(problems, length, base=num_digits)
    return np.concatenate([inputs, np.sort(inputs, axis=1)], axis=1)


def main(argv=None):
    parser = training_flags(__doc__.splitlines()[0], iters=500, eval_every=100)
    parser.add_argument("--length", type=int, default=6, help="digits to sort")
    parser.add_argument("--num_digits", type=int, default=3, help="digits 0 .. num_digits - 1")
    args = parser.parse_args(argv)
    length, num_digits = args.length, args.num_digits
    if not (length >= 1 and num_digits >= 2 and num_digits ** length <= 10 ** 6):
        # Every input is listed and split, so their number must stay modest.
        parser.error(f"--length must be >= 1 and --num_digits >= 2 with num_digits**length "
                     f"at most 10**6, got {length} and {num_digits}")

    n_problems = num_digits ** length
    train_ids, test_ids = split_problems(n_problems, n_test=max(1, n_problems // 4))
    train_sequences, test_sequences = (encode(train_ids, length, num_digits),
                                       encode(test_ids, length, num_digits))
    print(f"sorting {length} digits from 0 to {num_digits - 1}: {len(train_ids)} training "
          f"sequences, {len(test_ids)} held out")
    model = make_model(args, vocab_size=num_digits, sequence_length=2 * length)

    def evaluate():
        return (f"held-out {100 * answer(model, test_sequences, length)[1].mean():.1f}%, "
                f"train {100 * answer(model, train_sequences, length)[1].mean():.1f}%")

    seconds = train(model, train_sequences, length, args, evaluate)

    answers, test_hits = answer(model, test_sequences, length)
    train_hits = answer(model, train_sequences, length)[1]
    print(f"held-out sequences sorted: {percent(test_hits)}")
    print(f"training sequences sorted: {percent(train_hits)}")
    print(f"{args.iters} steps in {seconds:.0f} s, evaluations included")

    # A few held-out sequences, then the mistakes (up to five).
    for i in to_show(test_hits):
        verdict = "right" if test_hits[i] else f"wrong, it is {test_sequences[i, length:]}"
        print(f"  GPT: sorted({test_sequences[i, :length]}) = {answers[i]}   ({verdict})")
    return dict(test_accuracy=float(test_hits.mean()), train_accuracy=float(train_hits.mean()),
                seconds=seconds, parameters=model.num_parameters())


if __name__ == "__main__":
    main()
