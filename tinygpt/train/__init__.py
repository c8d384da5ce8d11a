"""Training (floor 6): the loop, evaluation, logging, checkpoint save and resume, and
data parallelism: over the CPU's cores, and over the ranks of an MPI launch."""

from .parallel import DataParallel  # noqa: F401
from .ddp import DistributedDataParallel  # noqa: F401
from .distributed import DistributedError, ProcessGroup, init_process_group  # noqa: F401

from .config import TrainConfig  # noqa: F401
from .trainer import (Interrupted, TrainingError, Trainer, evaluate,  # noqa: F401
                      load_for_inference, train)
