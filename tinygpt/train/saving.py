"""A run's checkpoint (floor 6): out_dir/ckpt.npz with everything needed to resume, the
other ranks' streams, and a LoRA run's or a bottleneck-adapter run's adapters alone.
Imports: autograd (backend), model (checkpoint, adapters, bottleneck), train.ddp.

Exact resume: the checkpoint written at iteration `it` holds the state *before* step `it`
(parameters, or the float32 master under mixed precision; optimizer moments; the batch
sampler's and the random generators' states; the loss scaler), the config, the history
of evaluations and the data's fingerprint. start.py reads it back.
"""

from dataclasses import asdict

from ..autograd import backend
from ..model.adapters import save_adapter
from ..model.bottleneck import save_bottleneck
from ..model.checkpoint import save_training_state
from .ddp import check_same_state, gather_rank_states


class Saving:
    """path: the checkpoint's path; saved_at: the iteration of the last checkpoint written
    (or resumed from), None before any; saved_ranks: the streams of ranks 1, 2, ... as the
    checkpoint resumed holds them ([] for a new run)."""

    def __init__(self, path, adapter_path, bottleneck_path):
        self.path = path
        self.adapter_path = adapter_path
        self.bottleneck_path = bottleneck_path
        self.saved_at = None
        self.saved_ranks = []

    def save(self, trainer):
        """Write the checkpoint (atomically). In a group every rank calls it: the ranks'
        streams are gathered, their states checked equal, and rank 0 alone writes."""
        group, cfg = trainer.group, trainer.config
        ranks, optimizer = self.saved_ranks, trainer.optimizer
        if cfg.zero:        # every rank sends its shard of the moments (zero.py)
            optimizer = GatheredState(optimizer.state_dict())
        if group.world_size > 1:
            ranks = gather_rank_states(group, trainer.sampler, self.saved_ranks)
            check_same_state(group, trainer.model, optimizer,    # gathered once, above
                             f"at iteration {trainer.iter_num}")
        if not group.is_main:
            self.saved_at = trainer.iter_num
            return
        precision = trainer.precision
        save_training_state(
            self.path, precision.weights(trainer.model), optimizer, trainer.tokenizer,
            train_config=asdict(cfg), sampler=trainer.sampler.state_dict(),
            rng=backend.get_rng_state(), cuda_rng=backend.get_rng_state("cuda"),
            iter_num=trainer.iter_num, history=trainer.history, data=trainer.data_info,
            world_size=group.world_size, ranks=ranks, **precision.state())
        if cfg.lora_rank:       # the adapters alone too, for PEFT and load_adapter
            save_adapter(trainer.model, self.adapter_path, overwrite=True,
                         base_model_name_or_path=cfg.init_from)
        if cfg.adapter_size:    # the bottleneck adapters alone (float32 master under float16)
            save_bottleneck(precision.weights(trainer.model), self.bottleneck_path,
                            overwrite=True)
        self.saved_at = trainer.iter_num


class GatheredState:
    """An optimizer's state_dict, gathered from the ranks, standing for the optimizer."""

    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return self.state
