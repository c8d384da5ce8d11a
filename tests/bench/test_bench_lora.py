"""The LoRA benchmark at a small shape: both modes run, the table says what they train."""

import sys

import pytest

from tinygpt import GPTConfig
from bench import lora as bench
from tinygpt.model import count_params


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_lora_benchmark_table(capsys):
    assert bench.main(["--preset", "gpt-nano", "--block_size", "16", "--steps", "1",
                       "--rounds", "1", "--rank", "4", "--targets", "c_attn"]) == 0
    out = capsys.readouterr().out
    config = GPTConfig.from_preset("gpt-nano", block_size=16)
    full = count_params(config)
    lora = config.n_layer * 4 * (config.n_embd + 3 * config.n_embd)   # r (in + out) per block
    assert f"| full fine-tuning | {full:,} | 100.00% |" in out
    assert f"| LoRA r=4 (c_attn) | {lora:,} | {100 * lora / full:.2f}% |" in out
    assert f"| LoRA / full | {lora / full:.4f} |" in out


def test_bad_options_are_refused(capsys):
    assert bench.main(["--rank", "0"]) == 2
    assert "--rank must be >= 1" in capsys.readouterr().err
