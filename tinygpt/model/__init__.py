"""The GPT model, its checkpoints and weight files (floor 5)."""

from .config import PRESETS, GPTConfig  # noqa: F401
from .gpt import GPT  # noqa: F401
from .sizes import count_params  # noqa: F401
