"""Evaluation (floor 6): the mean loss of each split, in eval mode without a graph, split
over the ranks of a group. Imports: numpy, autograd (no_grad), data (BatchSampler).

Evaluation draws its batches from a generator of its own, seeded the same each time, so
every evaluation sees the same windows and evaluating never moves the training stream.
"""

import numpy as np

from ..autograd import no_grad
from ..data import BatchSampler


def evaluate(model, splits, block_size, batch_size, eval_iters, device="cpu", seed=0,
             group=None):
    """Mean loss over `eval_iters` random batches of each split, in eval mode, no graph.

    `splits` maps a name to an array of token ids. The batches come from a generator
    seeded with `seed`, so every evaluation sees the same windows and the training
    batch stream is left untouched. With a process group of N ranks (distributed.py),
    rank r computes batches r, r + N, ... of the same windows and the sums are
    all-reduced: every rank gets the one-process means (to float rounding).
    """
    rank, ranks = (group.rank, group.world_size) if group is not None else (0, 1)
    was_training = model.training
    model.eval()
    sums = np.zeros(len(splits))
    try:
        with no_grad():
            for i, data in enumerate(splits.values()):
                sampler = BatchSampler(data, block_size, batch_size, seed=seed, device=device)
                for k in range(eval_iters):
                    if k % ranks == rank:
                        sums[i] += model(*sampler.get_batch())[1].item()
                    else:
                        sampler.sample_starts()         # another rank's batch
    finally:
        model.train(was_training)
    if ranks > 1:
        group.all_reduce_(sums, what="the evaluation's all-reduce")
    return {name: float(total / eval_iters) for name, total in zip(splits, sums)}
