"""Training (floor 6): the loop, evaluation, logging, checkpoint save and resume, and
data parallelism: over the CPU's cores, and over the ranks of an MPI launch."""

from .parallel import DataParallel  # noqa: F401
from .ddp import DistributedDataParallel  # noqa: F401
from .distributed import DistributedError, ProcessGroup, init_process_group  # noqa: F401

from .config import TrainConfig  # noqa: F401
from .evaluation import evaluate  # noqa: F401
from .inference import load_for_inference  # noqa: F401
from .interrupts import Interrupted  # noqa: F401
from .metrics import TrainingError  # noqa: F401
from .trainer import Trainer, train  # noqa: F401
