"""Bottleneck adapters and LoRA in training runs: `train --init_from ... --adapter_size`
(base frozen, adapters saved alone, resume bit for bit, mixed precision) and `finetune`
with `--adapter_size` or `--lora_rank` (the head trained, the classifier loads back)."""

import json

import numpy as np
import pytest

from tinygpt import GPT
from tinygpt.cli import main as cli_main
from tinygpt.data.cloze import load_task
from tinygpt.model.bottleneck import load_bottleneck
from tinygpt.model.checkpoint import load_checkpoint
from tinygpt.train import TrainConfig, Trainer, load_for_inference
from tinygpt.train.finetune import (FinetuneConfig, accuracy, build_classifier, encode_split,
                                    load_classifier)

from pretrained_base import base  # noqa: F401  (the fixture)
from test_finetune import SMALL, yes_no_task




def config(base, out="run", **options):
    return TrainConfig(**{"init_from": str(base / "base"), "data": str(base / "text.txt"),
                          "out_dir": str(base / out), "block_size": 16, "batch_size": 4,
                          "max_iters": 8, "eval_interval": 4, "eval_iters": 1,
                          "learning_rate": 1e-2, "adapter_size": 4, "processes": 1,
                          **options})


def test_train_with_adapters_keeps_the_base_and_saves_them_alone(base):
    trainer = Trainer(config(base), log=lambda line: None)
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    adapters = {id(p) for n, p in trainer.model.named_parameters() if ".bottleneck." in n}
    assert optimized == adapters and len(adapters) == 2 * 2 * 4
    trainer.run()
    arrays, _ = load_checkpoint(base / "run" / "ckpt.npz")
    original = {k: v.numpy() for k, v in GPT.from_pretrained(base / "base").state_dict().items()}
    frozen = {k[len("model/"):]: v for k, v in arrays.items()
              if k.startswith("model/") and ".bottleneck." not in k}
    assert len(frozen) == len(original) - 1                        # the tied head stored once
    for key, value in frozen.items():
        np.testing.assert_array_equal(value, original[key][:len(value)], err_msg=key)
    ups = [v for k, v in arrays.items() if k.endswith("bottleneck.up.weight")]
    assert ups and all(np.abs(u).max() > 0 for u in ups)          # the adapters moved
    model, _ = load_for_inference(base / "run")
    alone = GPT.from_pretrained(base / "base")
    alone.crop_block_size(16)
    load_bottleneck(alone, base / "run" / "bottleneck")
    idx = np.arange(16)[None] % model.config.vocab_size
    np.testing.assert_array_equal(alone.eval()(idx)[0].numpy(), model(idx)[0].numpy())
    assert cli_main(["sample", "--out_dir", str(base / "run"), "--num_tokens", "5"]) == 0


def test_resume_is_bit_exact(base):
    Trainer(config(base, "straight"), log=lambda line: None).run()
    Trainer(config(base, "halves", max_iters=4), log=lambda line: None).run()
    resumed = Trainer(TrainConfig(out_dir=str(base / "halves"), resume=True, max_iters=8,
                                  processes=1), log=lambda line: None)
    assert resumed.iter_num == 4 and resumed.config.adapter_size == 4
    resumed.run()
    a, _ = load_checkpoint(base / "straight" / "ckpt.npz")
    b, _ = load_checkpoint(base / "halves" / "ckpt.npz")
    weights = [k for k in a if k.startswith(("model/", "optim/"))]
    assert any(".bottleneck." in k for k in weights) and set(weights) <= set(b)
    for key in weights:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_mixed_precision_trains_the_adapters(base):
    trainer = Trainer(config(base, "half", dtype="float16", max_iters=4),
                      log=lambda line: None)
    trainer.run()
    assert trainer.model.transformer.h[0].attn.bottleneck.up.weight.dtype == np.float16
    state = load_checkpoint(base / "half" / "ckpt.npz")[0]
    up = state["model/transformer.h.0.attn.bottleneck.up.weight"]
    assert up.dtype == np.float32 and np.isfinite(up).all() and np.abs(up).max() > 0


@pytest.mark.parametrize("extra, message", [
    (["--adapter_size", "-1"], "adapter_size (0: no bottleneck adapters) must be an int >= 0"),
    (["--adapter_size", "4", "--lora_rank", "2"], "lora_rank and adapter_size are not combined"),
])
def test_bad_train_settings_stop_before_anything_is_written(base, capsys, extra, message):
    args = ["train", "--init_from", str(base / "base"), "--data", str(base / "text.txt"),
            "--out_dir", str(base / "run"), *extra]
    assert cli_main(args) == 1
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
    assert not (base / "run").exists()
    assert cli_main(["train", "--data", str(base / "text.txt"), "--out_dir", str(base / "r2"),
                     "--adapter_size", "4"]) == 1
    assert "adapter_size adapts a pre-trained model" in capsys.readouterr().err


@pytest.mark.parametrize("method, flags", [
    ("bottleneck", ["--adapter_size", "8"]),
    ("lora", ["--lora_rank", "4", "--lora_alpha", "8"]),
])
def test_finetune_trains_the_adapters_and_the_head(tmp_path, capsys, method, flags):
    task = yes_no_task(tmp_path / "task")
    out = tmp_path / "run"
    args = ["finetune", "--task", task, "--out_dir", str(out), *SMALL, "--epochs", "3",
            "--learning_rate", "1e-2", "--lm_coef", "0", *flags]
    assert cli_main(args) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["test_accuracy"] >= 0.9
    model, tokenizer, special = load_classifier(out)
    C, L = 16, 1
    expected = {"bottleneck": L * 2 * (2 * C * 8 + 8 + C),
                "lora": L * 4 * (C + 3 * C + C + C + C + 4 * C + 4 * C + C)}[method] + C + 1
    assert results["trainable_parameters"] == expected
    test = encode_split(load_task(task).test, tokenizer, special, model.config.block_size)
    assert accuracy(model, test, batch_size=5) == results["test_accuracy"]
    # The base is the one the run started from: frozen.
    cfg = FinetuneConfig(task=task, n_layer=1, n_head=2, n_embd=16, block_size=24)
    start, _, _ = build_classifier(cfg, load_task(task))
    trained = model.state_dict()
    for key, value in start.state_dict().items():
        if key.startswith("transformer.") and key in trained:
            np.testing.assert_array_equal(trained[key].numpy(), value.numpy(), err_msg=key)
    assert (out / "bottleneck").is_dir() == (method == "bottleneck")
    if method == "bottleneck":      # the saved adapters and head on the same start
        fresh, _, _ = build_classifier(cfg, load_task(task))
        load_bottleneck(fresh, out / "bottleneck")
        assert accuracy(fresh, test, batch_size=5) == results["test_accuracy"]

def test_finetune_refuses_both_methods_and_bad_sizes(tmp_path, capsys):
    task = yes_no_task(tmp_path / "task")
    for flags, message in [(["--lora_rank", "2", "--adapter_size", "4"], "choose one"),
                           (["--adapter_size", "-2"], "adapter_size (0: off) must be an int >= 0")]:
        assert cli_main(["finetune", "--task", task, "--out_dir", str(tmp_path / "run"),
                         *SMALL, *flags]) == 1
        assert message in capsys.readouterr().err
        assert not (tmp_path / "run").exists()
