"""Training (floor 6): the loop, evaluation, logging, checkpoint save and resume."""

from .trainer import TrainConfig, TrainingError, Trainer, evaluate, load_for_inference, train  # noqa: F401
