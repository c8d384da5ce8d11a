"""Data: tokenizers, corpora and batch sampling (floor 4)."""
