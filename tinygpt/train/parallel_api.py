"""What the trainer asks of data parallelism, whichever way the gradients travel (floor 6).
Imports: the standard library only.

Two ways share it:

    DataParallel              (parallel.py) one process runs the loop and splits each batch
                              over processes it forks on this machine; the workers' gradients
                              are summed in shared memory. No dependency; the CPU's default.
    DistributedDataParallel   (ddp.py) every rank of an MPI launch runs the loop on batches
                              of its own; the gradients are averaged with one all-reduce of
                              a flat buffer, over MPI (CPU) or NCCL (GPUs).

Either way, after `forward_backward(batches)` every parameter's `.grad` where the update
runs holds the gradient of the mean loss over all the rows every process took this step,
so clipping and the optimizer step are those of one process training on their union.
"""

import contextlib


class DataParallelBase:
    """The trainer-facing interface of data parallelism.

    world_size: how many processes' batches make one step's batch: 1 when a batch is
                split (DataParallel), the number of ranks when each draws its own (DDP).
    """

    world_size = 1

    def forward_backward(self, batches):
        """Forward and backward of this process's (x, y) micro-batches of one step. Returns
        the mean loss over every process's rows (a float; on a GPU a 0-d Tensor there),
        and leaves the gradient of that mean in each parameter's `.grad` (added to any
        gradient already there)."""
        raise NotImplementedError

    def all_threads(self):
        """Context manager: this process's own thread settings inside it, for work it does
        alone (evaluation) while the others wait."""
        return contextlib.nullcontext()

    def close(self):
        """Release the processes, buffers and threads (twice is fine)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
