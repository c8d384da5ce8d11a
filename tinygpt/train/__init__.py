"""Training (floor 6): the loop, evaluation, logging, checkpoint save and resume, and
data parallelism over the CPU's cores."""

from .parallel import DataParallel  # noqa: F401

from .trainer import TrainConfig, TrainingError, Trainer, evaluate, load_for_inference, train  # noqa: F401
