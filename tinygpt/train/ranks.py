"""What a run does because it is one of several processes (floor 6): the rank's GPU, the
start of rank r > 0 (its own streams, the checks that every rank holds rank 0's settings,
data and state), and the data-parallel object a step runs through (parallel_api.py).
Imports: autograd (backend), data, train.config, train.ddp, train.parallel, train.nccl,
train.zero.
"""

from dataclasses import asdict

from ..autograd import backend
from ..data import BatchSampler
from .config import INVOCATION
from .ddp import (DistributedDataParallel, check_same_settings, check_same_state,
                  load_rank_state, rank_streams)
from .parallel import DataParallel
from .zero import ZeroDataParallel, optimizer_state_bytes


def use_rank_gpu(group, device):
    """In a group on GPUs: this rank's GPU is its machine's number local_rank (before
    anything is put on one)."""
    if group.world_size > 1 and backend.normalize_device(device) != "cpu":
        from .nccl import use_local_gpu
        use_local_gpu(group)


def start_rank(trainer):
    """In a group of ranks: every rank checks that it has rank 0's settings and data,
    rank r > 0 takes its own batch and random streams (its spawns of the seed, or the
    checkpoint's, see ddp.py), and every rank checks that it holds rank 0's parameters
    and optimizer state."""
    group, cfg = trainer.group, trainer.config
    if group.world_size == 1:
        return
    settings = {k: v for k, v in asdict(cfg).items() if k not in INVOCATION}
    settings["zero"] = cfg.zero
    check_same_settings(group, {**settings, "data sha256": trainer.data_info["sha256"]})
    if group.rank > 0:
        batch_seed, random_seed = rank_streams(cfg.seed, group.rank)
        trainer.sampler = BatchSampler(trainer.train_data, cfg.block_size, cfg.batch_size,
                                       seed=batch_seed, device=cfg.device)
        backend.manual_seed(random_seed)
        saved_ranks = trainer.saving.saved_ranks
        if group.rank <= len(saved_ranks):
            load_rank_state(saved_ranks[group.rank - 1], trainer.sampler)
    check_same_state(group, trainer.model, trainer.optimizer, "at the start")
    if cfg.zero:
        each = group.all_gather(optimizer_state_bytes(trainer.optimizer),
                                what="the optimizer state's size")
        whole = trainer.optimizer.whole_state_bytes()
        trainer.log(f"ZeRO stage 1: AdamW's moments sharded over {group.world_size} ranks, "
                    f"optimizer state per rank: {', '.join(f'{b:,}' for b in each)} bytes "
                    f"(AdamW's m and v of the whole run: {whole:,})")


def make_parallel(trainer, n_micro):
    """The run's data parallelism (parallel_api.py), made at its first step: DDP over the
    ranks of a group, else DataParallel over `processes` forked processes."""
    if trainer.group.world_size > 1:
        interrupts = trainer.interrupts
        if trainer.config.zero:     # gradients reduce-scattered to the optimizer's shards
            return ZeroDataParallel(
                trainer.model, trainer.group,
                lambda batches: trainer.local_forward_backward(batches, n_micro),
                trainer.optimizer, stop_requested=lambda: interrupts.requested is not None)
        return DistributedDataParallel(
            trainer.model, trainer.group,
            lambda batches: trainer.local_forward_backward(batches, n_micro),
            stop_requested=lambda: interrupts.requested is not None)
    # Forked before the statistics hooks are switched on: only this process's run.
    return DataParallel(trainer.model, trainer.processes)
