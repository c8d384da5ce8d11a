"""`python -m tinygpt train --init_from ... --lora_rank R`: the base stays frozen, the
adapters are written alone in PEFT's layout, resume and sampling work, errors are clear."""

import os

import numpy as np
import pytest

from tinygpt import GPT
from tinygpt.cli import main as cli_main
from tinygpt.model.adapters import load_adapter
from tinygpt.model.checkpoint import load_checkpoint
from tinygpt.train import TrainConfig, Trainer, load_for_inference

from pretrained_base import base  # noqa: F401  (the fixture)




def lora_args(base, out="run", *extra):
    return ["train", "--init_from", str(base / "base"), "--data", str(base / "text.txt"),
            "--out_dir", str(base / out), "--block_size", "16", "--batch_size", "4",
            "--max_iters", "12", "--eval_interval", "6", "--eval_iters", "1",
            "--learning_rate", "1e-2", "--lora_rank", "4", "--lora_alpha", "8", *extra]


@pytest.mark.parametrize("processes", ["1", pytest.param("2", marks=pytest.mark.skipif(
    not hasattr(os, "fork"), reason="needs os.fork"))])
def test_lora_run_trains_the_adapters_only(base, processes):
    assert cli_main(lora_args(base, "run", "--processes", processes)) == 0
    arrays, _ = load_checkpoint(base / "run" / "ckpt.npz")
    # Every base weight is as pretrained (the position table cropped to block_size 16).
    original = {k: v.numpy() for k, v in GPT.from_pretrained(base / "base").state_dict().items()}
    frozen = {k[len("model/"):].replace(".base_layer", ""): v for k, v in arrays.items()
              if k.startswith("model/") and "lora_" not in k}
    assert len(frozen) == len(original) - 1                        # the tied head is stored once
    for key, value in frozen.items():
        np.testing.assert_array_equal(value, original[key][:len(value)], err_msg=key)
    lora_b = [v for k, v in arrays.items() if k.endswith("lora_B.weight")]
    assert lora_b and all(np.abs(b).max() > 0 for b in lora_b)     # the adapters moved

    # The adapter folder alone, on the original base, gives the run's model.
    adapted = load_adapter(GPT.from_pretrained(base / "base"), base / "run" / "adapter")
    model, _ = load_for_inference(base / "run")                     # merged: a plain GPT
    idx = np.arange(16)[None] % model.config.vocab_size
    np.testing.assert_allclose(adapted.eval()(idx)[0].numpy(), model(idx)[0].numpy(),
                               rtol=1e-5, atol=1e-5)


def test_optimizer_holds_the_adapters_and_resume_continues(base):
    config = TrainConfig(**{"init_from": str(base / "base"), "data": str(base / "text.txt"),
                            "out_dir": str(base / "run"), "block_size": 16, "batch_size": 4,
                            "max_iters": 6, "eval_interval": 3, "eval_iters": 1,
                            "lora_rank": 2, "lora_targets": "c_attn", "processes": 1})
    trainer = Trainer(config, log=lambda line: None)
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    adapters = {id(p) for name, p in trainer.model.named_parameters() if "lora_" in name}
    assert optimized == adapters and len(adapters) == 2 * 2          # A, B in 2 blocks
    trainer.run()
    resumed = Trainer(TrainConfig(out_dir=str(base / "run"), resume=True, max_iters=9,
                                  processes=1), log=lambda line: None)
    assert resumed.iter_num == 6 and resumed.config.lora_targets == "c_attn"
    resumed.run()
    assert cli_main(["sample", "--out_dir", str(base / "run"), "--num_tokens", "5"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--lora_rank", "-1"], "lora_rank must be 0 (no LoRA) or a positive integer"),
    (["--lora_targets", "q_proj"], "'q_proj' names no layer"),
    (["--lora_alpha", "0"], "alpha must be a finite number > 0"),
])
def test_bad_lora_settings_stop_before_anything_is_written(base, capsys, extra, message):
    assert cli_main(lora_args(base, "run", *extra)) == 1
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
    assert not (base / "run" / "ckpt.npz").exists()


def test_lora_needs_a_pretrained_model(base, capsys):
    args = ["train", "--data", str(base / "text.txt"), "--out_dir", str(base / "run"),
            "--lora_rank", "4"]
    assert cli_main(args) == 1
    captured = capsys.readouterr()
    assert "give --init_from" in captured.out + captured.err
