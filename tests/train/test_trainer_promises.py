"""The trainer keeps its promises for every flag: a pretrained start trains as a fresh run
does (dropout on) and resumes bit for bit; settings changed on resume are applied to the
model or refused, never only recorded; a pretrained model's shape is never silently
overridden; a folder a run left before its first checkpoint is not stuck; the memory a
run needs is checked before it is allocated; the resume hint is the command to run."""

import types

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.data import CharTokenizer
from tinygpt.model.checkpoint import load_checkpoint, load_training_state
from tinygpt.model.moe import MoE
from tinygpt.nn.lora import LoRALinear
from tinygpt.train import TrainConfig, Trainer
from tinygpt.train.interrupts import resume_hint

from pretrained_base import base  # noqa: F401  (the fixture)

QUIET = dict(log=lambda line: None)



def settings(base, out="run", **extra):
    return {"init_from": str(base / "base"), "data": str(base / "text.txt"),
            "out_dir": str(base / out), "block_size": 16, "batch_size": 4, "max_iters": 12,
            "eval_interval": 4, "eval_iters": 1, "learning_rate": 1e-2, "processes": 1,
            **extra}


def weights(path):
    arrays, _ = load_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith("model/")}


def run(config, given=None, **overrides):
    trainer = Trainer(TrainConfig(**{**config, **overrides}), given=given, **QUIET)
    trainer.run()
    return trainer


# --- a pretrained start trains with dropout, and resumes bit for bit ---------------------
def test_init_from_trains_in_training_mode_with_its_dropout(base):
    trainer = Trainer(TrainConfig(**settings(base, dropout=0.5, lora_rank=2,
                                             lora_dropout=0.9)), **QUIET)
    assert all(m.training for m in trainer.model.modules())
    adapters = [m for m in trainer.model.modules() if isinstance(m, LoRALinear)]
    assert adapters and all(a.lora_dropout.p == 0.9 for a in adapters)
    trainer.close()


@pytest.mark.parametrize("lora", [{}, {"lora_rank": 2, "lora_dropout": 0.2}])
def test_init_from_with_dropout_resumes_bit_for_bit(base, lora):
    run(settings(base, "straight", dropout=0.1, **lora))
    run(settings(base, "split", dropout=0.1, **lora), max_iters=5)
    Trainer(TrainConfig(out_dir=str(base / "split"), resume=True, max_iters=12),
            **QUIET).run()
    straight, split = weights(base / "straight" / "ckpt.npz"), weights(base / "split" / "ckpt.npz")
    assert straight.keys() == split.keys()
    for key in straight:
        np.testing.assert_array_equal(straight[key], split[key], err_msg=key)


def test_dropout_changes_a_pretrained_run(base):
    losses = []
    for p in (0.0, 0.5):
        trainer = run(settings(base, f"p{p}", dropout=p), max_iters=4)
        losses.append(trainer.history[-1]["train_loss"])
    assert losses[0] != losses[1]


# --- settings changed on resume are applied, or refused ----------------------------------
def test_expert_settings_changed_on_resume_reach_the_model(base):
    config = {"data": str(base / "text.txt"), "out_dir": str(base / "moe"), "n_layer": 2,
              "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4, "max_iters": 2,
              "eval_interval": 2, "eval_iters": 1, "n_expert": 4, "processes": 1}
    run(config)
    resumed = Trainer(TrainConfig(out_dir=str(base / "moe"), resume=True, max_iters=4,
                                  expert_capacity=2.0, aux_loss_coef=0.05), **QUIET)
    layers = [m for m in resumed.model.modules() if isinstance(m, MoE)]
    assert layers and all(m.capacity_factor == 2.0 for m in layers)
    assert resumed.model.config.expert_capacity == 2.0
    assert resumed.model.config.aux_loss_coef == 0.05
    resumed.run()
    saved = load_training_state(base / "moe" / "ckpt.npz")
    assert saved.config.expert_capacity == 2.0 and saved.config.aux_loss_coef == 0.05
    assert saved.meta["train_config"]["expert_capacity"] == 2.0


def test_lora_settings_changed_on_resume_reach_the_model(base):
    run(settings(base, lora_rank=2, lora_alpha=8.0), max_iters=2, eval_interval=2)
    resumed = Trainer(TrainConfig(out_dir=str(base / "run"), resume=True, max_iters=4,
                                  lora_alpha=4.0, lora_dropout=0.3), **QUIET)
    adapters = [m for m in resumed.model.modules() if isinstance(m, LoRALinear)]
    assert adapters
    for a in adapters:
        assert a.alpha == 4.0 and a.scaling == 2.0 and a.lora_dropout.p == 0.3
    assert resumed.model.lora_config.lora_alpha == 4.0
    assert resumed.model.lora_config.lora_dropout == 0.3
    resumed.run()
    saved = load_training_state(base / "run" / "ckpt.npz")
    assert saved.meta["lora"]["lora_alpha"] == 4.0 and saved.meta["lora"]["lora_dropout"] == 0.3


def test_optimizer_settings_changed_on_resume_reach_the_optimizer(base):
    # load_state_dict brings back the saved groups' betas and weight decay with the
    # moments: the run's own settings must win, as the log says they changed.
    run(settings(base), max_iters=2, eval_interval=2)
    resumed = Trainer(TrainConfig(out_dir=str(base / "run"), resume=True, max_iters=4,
                                  beta1=0.5, beta2=0.9, weight_decay=0.0), **QUIET)
    groups = resumed.optimizer.param_groups
    assert all(g["betas"] == (0.5, 0.9) and g["weight_decay"] == 0.0 for g in groups)
    assert all(resumed.optimizer.state[p]["step"] == 2 for p in groups[0]["params"])
    resumed.run()
    saved = load_training_state(base / "run" / "ckpt.npz").optimizer_state
    assert all(tuple(g["betas"]) == (0.5, 0.9) and g["weight_decay"] == 0.0
               for g in saved["param_groups"])


def test_a_loss_scale_given_on_resume_replaces_the_saved_one(base):
    config = {"data": str(base / "text.txt"), "out_dir": str(base / "half"), "n_layer": 1,
              "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4, "max_iters": 2,
              "eval_interval": 2, "eval_iters": 1, "dtype": "float16", "processes": 1,
              "loss_scale_window": 0}
    run(config)
    kept = Trainer(TrainConfig(out_dir=str(base / "half"), resume=True, max_iters=4), **QUIET)
    assert kept.scaler.scale == 65536.0
    kept.close()
    resumed = Trainer(TrainConfig(out_dir=str(base / "half"), resume=True, max_iters=4,
                                  loss_scale=8.0), **QUIET)
    assert resumed.scaler.scale == 8.0
    resumed.close()


@pytest.mark.parametrize("flags, named", [
    ({"n_expert": 8}, "--n_expert 8 (the pretrained model's: 0)"),
    ({"n_layer": 3}, "--n_layer 3 (the pretrained model's: 2)"),
    ({"n_embd": 32, "n_head": 4}, "--n_embd 32 (the pretrained model's: 16)"),
    ({"attn_window": 4, "attn_pattern": "banded"}, "--attn_window 4 (the pretrained model's: 0)"),
    ({"position": "rotary"}, "--position 'rotary' (the pretrained model's: 'learned')"),
])
def test_init_from_refuses_a_shape_other_than_the_pretrained_models(base, flags, named):
    with pytest.raises(ValueError, match="init_from") as caught:
        Trainer(TrainConfig(**settings(base, **flags)), **QUIET)
    assert named in str(caught.value)
    assert not (base / "run").exists()


def test_init_from_records_the_shape_it_used(base):
    # The same value as the folder's is fine; what is left out is the folder's.
    trainer = Trainer(TrainConfig(**settings(base, n_layer=2)), **QUIET)
    cfg = trainer.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_expert, cfg.position) == \
        (2, 2, 16, 0, "learned")
    trainer.close()


# --- a run that dies before its first checkpoint leaves no stuck folder -------------------
def test_experts_in_no_layer_are_refused():
    with pytest.raises(ValueError, match="moe_every 5 .* n_layer 4"):
        TrainConfig(n_expert=8, moe_every=5)


def test_a_folder_without_a_checkpoint_takes_a_new_run(base, monkeypatch):
    config = {"data": str(base / "text.txt"), "out_dir": str(base / "died"), "n_layer": 1,
              "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4, "max_iters": 2,
              "eval_interval": 2, "eval_iters": 1, "processes": 1}

    def dies(self):
        raise RuntimeError("killed during the first evaluation")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "evaluate", dies)
        with pytest.raises(RuntimeError, match="first evaluation"):
            run(config)
    assert (base / "died" / "log.jsonl").exists()
    assert not (base / "died" / "ckpt.npz").exists()
    with pytest.raises(FileNotFoundError) as caught:
        Trainer(TrainConfig(out_dir=str(base / "died"), resume=True), **QUIET)
    message = str(caught.value)
    assert "no checkpoint" in message and "without --resume" in message
    trainer = run(config)                               # a new run starts there
    assert trainer.iter_num == 2 and (base / "died" / "ckpt.npz").exists()


# --- memory is checked before the optimizer is made --------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_run_that_cannot_fit_is_refused_before_anything_is_allocated(base, monkeypatch,
                                                                       dtype):
    from tinygpt import memory
    from tinygpt.model.sizes import count_params
    config = TrainConfig(data=str(base / "text.txt"), out_dir=str(base / "big"), n_layer=2,
                         n_head=2, n_embd=16, block_size=16, batch_size=4, dtype=dtype,
                         processes=1)
    vocab = CharTokenizer.from_text((base / "text.txt").read_text()).vocab_size
    n = count_params(config.model_config(vocab))
    # The weights alone fit; with gradients and AdamW's two moments they do not.
    monkeypatch.setattr(memory, "total_memory", lambda: 2 * 4 * n)
    with pytest.raises(ValueError, match="gradients and AdamW's moments"):
        Trainer(config, **QUIET)
    assert not (base / "big").exists()
    monkeypatch.setattr(memory, "total_memory", lambda: 10 * 4 * n)
    Trainer(config, **QUIET).close()


# --- the resume hint is the command to run -----------------------------------------------
def test_the_resume_hint_names_mpiexec_under_mpi():
    group = types.SimpleNamespace(world_size=3, backend="mpi")
    hint = resume_hint(types.SimpleNamespace(out_dir="out", group=group))
    assert "mpiexec -n 3 python -m tinygpt train --out_dir out --resume" in hint
    alone = types.SimpleNamespace(world_size=1, backend="none")
    hint = resume_hint(types.SimpleNamespace(out_dir="out", group=alone))
    assert hint.endswith(": python -m tinygpt train --out_dir out --resume")


# --- the trainer's and the optimizer's arguments are checked by tinygpt.validate ----------
@pytest.mark.parametrize("make", [
    lambda: TrainConfig(learning_rate=True),
    lambda: TrainConfig(n_layer=2.0),
    lambda: TrainConfig(resume=1),
    lambda: TrainConfig(out_dir=3),
    lambda: tg.optim.AdamW([tg.ones(2, requires_grad=True)], lr="0.1"),
    lambda: tg.optim.clip_grad_norm_([tg.ones(2, requires_grad=True)], max_norm=True),
    lambda: tg.optim.get_schedule("cosine", max_lr=1e-3, warmup_iters=1.5, lr_decay_iters=9),
    lambda: tg.optim.cosine_with_warmup(True, 1e-3, 0.0, 1, 9),
])
def test_a_value_of_the_wrong_type_is_an_argument_type_error(make):
    from tinygpt.validate import ArgumentTypeError
    with pytest.raises(ArgumentTypeError):
        make()


@pytest.mark.parametrize("make, named", [
    (lambda: TrainConfig(dropout=float("nan")), "dropout"),
    (lambda: TrainConfig(loss_scale_window=-1), "loss_scale_window must be an int >= 0"),
    (lambda: tg.optim.AdamW([tg.ones(2, requires_grad=True)], lr=float("inf")), "lr"),
    (lambda: tg.optim.SGD([tg.ones(2, requires_grad=True)], lr=0.1, momentum=float("inf")),
     "momentum"),
])
def test_out_of_range_values_are_named(make, named):
    with pytest.raises(ValueError, match=named):
        make()


# --- a pruned model trained by the Trainer keeps its zeros across a resume -----------------
def test_a_resumed_pruned_run_keeps_its_zeros_with_restore_masks(base):
    from tinygpt.nn import prune, restore_masks
    config = {"data": str(base / "text.txt"), "out_dir": str(base / "pruned"), "n_layer": 1,
              "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4, "max_iters": 3,
              "eval_interval": 3, "eval_iters": 1, "processes": 1, "dropout": 0.1}
    trainer = Trainer(TrainConfig(**config), **QUIET)
    masks = prune(trainer.model, 0.5)
    trainer.run()
    resumed = Trainer(TrainConfig(out_dir=str(base / "pruned"), resume=True, max_iters=6),
                      **QUIET)
    assert restore_masks(resumed.model).keys() == masks.keys()
    resumed.run()
    params = dict(resumed.model.named_parameters())
    for name, mask in masks.items():
        assert (params[name].numpy()[~mask] == 0).all(), name


def test_lora_settings_on_resume_of_a_run_without_adapters_are_refused(base):
    config = {"data": str(base / "text.txt"), "out_dir": str(base / "plain"), "n_layer": 1,
              "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4, "max_iters": 2,
              "eval_interval": 2, "eval_iters": 1, "processes": 1}
    run(config)
    with pytest.raises(ValueError, match="--lora_alpha changes nothing: .* no LoRA adapters"):
        Trainer(TrainConfig(out_dir=str(base / "plain"), resume=True, lora_alpha=4.0), **QUIET)


def test_the_command_line_refuses_experts_in_no_layer_and_unsticks_a_folder(base, capsys):
    from tinygpt.cli import main as cli_main
    common = ["--data", str(base / "text.txt"), "--out_dir", str(base / "cli"), "--n_layer",
              "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16", "--batch_size",
              "4", "--max_iters", "2", "--eval_interval", "2", "--eval_iters", "1",
              "--processes", "1"]
    assert cli_main(["train", *common, "--n_expert", "8", "--moe_every", "5"]) == 1
    assert "moe_every 5 puts the experts in no layer of n_layer 1" in capsys.readouterr().err
    assert not (base / "cli").exists()
    (base / "cli").mkdir()
    (base / "cli" / "log.jsonl").write_text('{"event": "eval", "it')     # cut by a kill
    assert cli_main(["train", "--out_dir", str(base / "cli"), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "start a new run" in err and "without --resume" in err
    assert cli_main(["train", *common]) == 0
    assert (base / "cli" / "ckpt.npz").exists()


def test_finetune_checks_the_memory_of_its_optimizer(tmp_path, monkeypatch, capsys):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_finetune import SMALL, yes_no_task

    from tinygpt import memory
    from tinygpt.cli import main as cli_main
    task = yes_no_task(tmp_path / "task", n=(16, 8, 8))
    weights = []
    real = memory.check_fits

    def weights_only(nbytes, what):     # room for the weights alone: GPT() asks first
        if not weights:
            weights.append(nbytes)
        real(nbytes, what)

    monkeypatch.setattr(memory, "check_fits", weights_only)
    monkeypatch.setattr(memory, "total_memory", lambda: weights[0] if weights else 1 << 40)
    status = cli_main(["finetune", "--task", task, "--out_dir", str(tmp_path / "run"), *SMALL,
                       "--epochs", "1"])
    assert status == 1
    assert "gradients and AdamW's moments" in capsys.readouterr().err
    assert not (tmp_path / "run" / "ckpt.npz").exists()


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), True])
def test_data_parallel_timeouts_are_checked(timeout):
    from tinygpt.train import DataParallel
    with pytest.raises(ValueError, match=r"timeout \(seconds\) must be a finite number > 0"):
        DataParallel(GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1,
                                   n_embd=4)), 1, timeout=timeout)
