"""The GPT model, its checkpoints and weight files (floor 5)."""
