"""A fixture of the training tests: a small pretrained GPT folder to fine-tune (imported by
the test modules that use it: `from pretrained_base import base`)."""

import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.data import CharTokenizer

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind\n" * 30


@pytest.fixture
def base(tmp_path):
    """A small pretrained GPT folder (Hugging Face layout, tmp_path/base) and the text it
    fine-tunes on (tmp_path/text.txt); returns tmp_path."""
    tg.manual_seed(0)
    tokenizer = CharTokenizer.from_text(TEXT)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2,
                          n_embd=16))
    model.save_pretrained(tmp_path / "base", tokenizer=tokenizer)
    (tmp_path / "text.txt").write_text(TEXT)
    return tmp_path
