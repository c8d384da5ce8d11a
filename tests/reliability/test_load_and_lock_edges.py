"""Left from earlier rounds: a text file too large for memory once tokenized is refused
before it is read; `sample`'s default prompt on a vocabulary without a newline; the
folder lock where the platform has no fcntl says that it locks nothing."""

import pytest

import tinygpt.memory
from tinygpt import files
from tinygpt.cli import main as cli_main
from tinygpt.data import corpus
from tinygpt.data.corpus import load_text


def test_a_text_too_large_for_memory_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.txt"
    path.write_text("a" * 2000)
    monkeypatch.setattr(tinygpt.memory, "total_memory", lambda: 10_000)
    read = []
    real = corpus.Path.read_bytes
    monkeypatch.setattr(corpus.Path, "read_bytes", lambda self: read.append(self) or real(self))
    with pytest.raises(ValueError, match="more than this machine's") as info:
        load_text(str(path))
    assert str(path) in str(info.value) and "2.0 kB" in str(info.value)
    assert read == []
    path.write_text("a" * 1000)             # 9 bytes a byte (bytes, then int64 tokens) fit
    assert load_text(str(path)) == "a" * 1000


def test_the_default_prompt_without_a_newline_in_the_vocabulary(tmp_path, capsys):
    text = tmp_path / "flat.txt"
    text.write_text("abcabcabd" * 40)
    out = tmp_path / "run"
    assert cli_main(["train", "--data", str(text), "--out_dir", str(out), "--n_layer", "1",
                     "--n_head", "2", "--n_embd", "16", "--block_size", "8",
                     "--batch_size", "2", "--max_iters", "2", "--eval_interval", "2",
                     "--eval_iters", "1", "--processes", "1"]) == 0
    capsys.readouterr()
    assert cli_main(["sample", "--out_dir", str(out), "--num_tokens", "5", "--greedy"]) == 0
    printed = capsys.readouterr().out
    # the vocabulary's first token ('a') starts the sample, then 5 tokens
    assert printed.startswith("a") and len(printed.rstrip("\n")) == 6
    assert set(printed.rstrip("\n")) <= set("abcd")


def test_without_fcntl_the_lock_says_it_locks_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "fcntl", None)
    lock = files.FolderLock(tmp_path / "run")
    with pytest.warns(RuntimeWarning, match="no fcntl.*not locked") as record:
        lock.acquire()
    assert str(tmp_path / "run") in str(record[0].message)
    lock.release()


def test_a_model_that_fits_only_in_float16_is_built_empty_in_float16(monkeypatch):
    # empty_gpt (what every loader fills) checks the memory in the dtype it fills, not the
    # float32 of GPT(config)'s own check, which skip_init leaves untouched.
    from tinygpt.model import GPTConfig
    from tinygpt.model.sizes import count_params, empty_gpt
    config = GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16)
    n = count_params(config)
    monkeypatch.setattr(tinygpt.memory, "total_memory", lambda: 3 * n)
    model = empty_gpt(config, "float16")
    assert all(p.dtype == "float16" for p in model.parameters())
    with pytest.raises(ValueError, match="more than this machine's"):
        empty_gpt(config, "float32")
    with pytest.raises(ValueError, match="more than this machine's"):
        tinygpt.model.GPT(config)


def test_the_kv_cache_holds_what_generation_needs_and_is_checked_before_it_is_made(
        monkeypatch):
    # A rotary model runs on any block_size: the cache is sized by the prompt and the new
    # tokens (at most block_size), and a cache larger than memory is refused up front.
    import numpy as np
    import tinygpt as tg
    from tinygpt.model import GPT, GPTConfig
    from tinygpt.model import generation
    tg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=8,
                          position="rotary")).extend_context(10 ** 9)
    sizes, real = [], generation.KVCache.__init__
    monkeypatch.setattr(generation.KVCache, "__init__",
                        lambda self, B, H, capacity, *a, **k: sizes.append(capacity)
                        or real(self, B, H, capacity, *a, **k))
    prompt = np.array([[1, 2, 3]])
    assert model.generate(prompt, 4, do_sample=False).shape == (1, 7)
    assert sizes == [7]
    monkeypatch.setattr(tinygpt.memory, "total_memory", lambda: 10_000)
    with pytest.raises(ValueError, match=r"the KV cache of 1 sequences x 1003 positions"):
        model.generate(prompt, 1000, do_sample=False)
