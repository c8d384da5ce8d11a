"""The GPT model, its checkpoints and weight files (floor 5)."""

from .config import PRESETS, GPTConfig  # noqa: F401
from .gpt import GPT, count_params  # noqa: F401
