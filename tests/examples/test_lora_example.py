"""examples/lora_finetune.py runs end to end on a small pretrained GPT folder."""

import importlib.util
import re
from pathlib import Path

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.data import CharTokenizer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lora_finetune.py"
TEXT = "The quick brown fox jumps over the lazy dog.\n" * 60


def test_lora_example_trains_saves_reloads_and_merges(tmp_path, capsys):
    tokenizer = CharTokenizer.from_text(TEXT)
    tg.manual_seed(0)
    GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2,
                  n_embd=32)).save_pretrained(tmp_path / "base", tokenizer=tokenizer)
    (tmp_path / "text.txt").write_text(TEXT)
    spec = importlib.util.spec_from_file_location("lora_finetune", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    merged = module.main([str(tmp_path / "base"), "--data", str(tmp_path / "text.txt"),
                          "--out", str(tmp_path / "adapter"), "--iters", "60",
                          "--block_size", "24", "--lr", "1e-2", "--max_new_tokens", "10"])
    out = capsys.readouterr().out
    before, after = (float(v) for v in re.findall(r"val loss (\d+\.\d+)", out))
    assert after < before - 0.3                                      # it learned
    assert float(re.search(r"difference from the adapted one (\S+)", out).group(1)) < 1e-5
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert type(merged) is GPT
