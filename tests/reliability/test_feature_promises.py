"""New features keep the old promises: generation refuses masks it would misread, the loss
scale stays a float32, every model-shaping size is checked against memory before anything
is allocated, a failed adapter load changes nothing, LoRA and task-head models save as
folders that load (or are refused), and non-finite or non-integer settings in flags and
adapter files are refused with errors that name the file."""

import json
import math

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig, memory
from tinygpt.model import safetensors, sizes
from tinygpt.model.adapters import load_adapter, read_adapter_config, save_adapter
from tinygpt.model.heads import GPTForMultipleChoice
from tinygpt.nn.lora import LoraConfig, apply_lora, check_lora_options, lora_layers
from tinygpt.optim.amp import GradScaler

SMALL = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def small_gpt(seed=0, **overrides):
    tg.manual_seed(seed)
    return GPT(GPTConfig(**{**SMALL, **overrides})).eval()


def adapted(seed=0, rank=4):
    model = small_gpt(seed)
    apply_lora(model, rank=rank, alpha=8)
    rng = np.random.default_rng(seed + 1)
    for _, layer in lora_layers(model):
        layer.lora_B.weight.data[...] = rng.standard_normal(layer.lora_B.weight.shape) * 0.1
    return model


def snapshot(model):
    """Everything load_adapter could change: parameter names, values, trainability, modules."""
    return ({k: v.numpy().copy() for k, v in model.state_dict().items()},
            {n: p.requires_grad for n, p in model.named_parameters()},
            [type(m).__name__ for m in model.modules()],
            model.__dict__.get("lora_config"))


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after[0].keys() == before[0].keys()
    for key in before[0]:
        np.testing.assert_array_equal(after[0][key], before[0][key])
    assert after[1:] == before[1:]


# --------------------------------------------------------------------------- generation

@pytest.mark.parametrize("mask, row, words", [
    ([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], 1, "after a real token"),
    ([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], 0, "after a real token"),
    ([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], 1, "no real token"),
])
def test_generate_refuses_right_padding_and_empty_rows(mask, row, words):
    model = small_gpt()
    ids = [[1, 2, 3, 4, 5], [5, 9, 2, 0, 0]]
    with pytest.raises(ValueError, match=f"attention_mask row {row} .*{words}"):
        model.generate(ids, 3, do_sample=False, attention_mask=mask)
    with pytest.raises(ValueError, match=f"attention_mask row {row}"):
        model.generate_iter(ids, 3, do_sample=False, attention_mask=mask)


def test_left_padding_still_generates_what_the_row_gives_alone():
    model = small_gpt()
    alone = model.generate([[5, 9, 2]], 6, do_sample=False).numpy()[0, 3:]
    both = model.generate([[0, 0, 5, 9, 2], [7, 3, 3, 1, 4]], 6, do_sample=False,
                          attention_mask=[[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]).numpy()
    np.testing.assert_array_equal(both[0, 5:], alone)


# --------------------------------------------------------------------------- loss scale

def test_loss_scale_growth_stops_below_float32_overflow():
    scaler = GradScaler(init_scale=2.0 ** 126, growth_interval=1)
    assert scaler.update(True) == "growth" and scaler.scale == 2.0 ** 127
    assert scaler.update(True) is None            # 2^128 is inf in float32: kept
    assert scaler.scale == 2.0 ** 127 and scaler.good_steps == 0
    assert scaler.update(True) is None and scaler.scale == 2.0 ** 127


def test_loss_scale_is_a_float32_value():
    scaler = GradScaler(init_scale=3.3, growth_factor=1.7, growth_interval=1)
    assert scaler.scale == float(np.float32(3.3))
    scaler.update(True)
    assert scaler.scale == float(np.float32(3.3) * np.float32(1.7))


def test_loss_scale_backoff_stops_at_float32s_smallest_normal():
    scaler = GradScaler(init_scale=2.0 ** -125)
    scaler.update(False)
    assert scaler.scale == 2.0 ** -126 == FLOAT32_TINY
    for _ in range(40):
        scaler.update(False)
    assert scaler.scale == FLOAT32_TINY and 1.0 / scaler.scale < math.inf


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf, 2.0 ** 128, 1e-40, "2"])
def test_a_saved_loss_scale_outside_float32s_normal_range_is_refused(scale):
    with pytest.raises(ValueError, match="loss scale"):
        GradScaler().load_state_dict({"scale": scale, "good_steps": 0})


@pytest.mark.parametrize("scale", [0.0, math.nan, math.inf, 2.0 ** 128])
def test_init_scale_outside_float32s_range_is_refused(scale):
    with pytest.raises(ValueError, match="init_scale"):
        GradScaler(init_scale=scale)


# --------------------------------------------------------------------------- memory

@pytest.mark.parametrize("overrides", [
    dict(), dict(bias=False), dict(n_expert=4, expert_top_k=2),
    dict(n_expert=3, expert_top_k=1, moe_every=2, n_layer=5, expert_hidden=7, bias=False),
    dict(attn_pattern="alternate", attn_window=4, n_layer=3),
])
def test_parameter_count_is_arithmetic_and_matches_the_model(monkeypatch, overrides):
    config = GPTConfig(**{**SMALL, **overrides})
    model = GPT(config)
    monkeypatch.setattr(sizes, "parameter_shapes", lambda *a: pytest.fail("shape table built"))
    assert sizes.count_params(config) == model.num_parameters()
    assert sizes.count_params(config, non_embedding=True) == model.get_num_params()


def test_a_million_layers_are_counted_without_a_shape_table(monkeypatch):
    monkeypatch.setattr(sizes, "parameter_shapes", lambda *a: pytest.fail("shape table built"))
    config = GPTConfig(**{**SMALL, "n_layer": 10 ** 6})
    assert sizes.count_params(config) == 10 ** 6 * (12 * 16 * 16 + 13 * 16) + 66 * 16 + 32


def limit_memory(monkeypatch, nbytes):
    monkeypatch.setattr(memory, "total_memory", lambda: nbytes)


# Sizes of tens of MB against a limit of 10 MB: refused before allocating, yet small enough
# that code without the check allocates them harmlessly (and the test fails).
@pytest.mark.parametrize("overrides", [dict(block_size=10 ** 6), dict(n_expert=2000),
                                       dict(n_layer=2000), dict(vocab_size=10 ** 6)])
def test_gpt_refuses_a_config_larger_than_memory_before_allocating(monkeypatch, overrides):
    limit_memory(monkeypatch, 10 ** 7)
    if "n_expert" in overrides:
        overrides["expert_top_k"] = 1
    config = GPTConfig(**{**SMALL, **overrides})
    with pytest.raises(ValueError, match="needs .* more than this machine's 10.0 MB"):
        GPT(config)


def test_apply_lora_refuses_a_rank_larger_than_memory_and_changes_nothing(monkeypatch):
    model = small_gpt()
    limit_memory(monkeypatch, 10 ** 7)
    before = snapshot(model)
    with pytest.raises(ValueError, match="LoRA adapters of rank 20000 .*needs"):
        apply_lora(model, rank=20000, alpha=16)
    assert_unchanged(model, before)
    apply_lora(model, rank=2, alpha=4)            # a sane rank still works afterwards


def test_an_adapter_folders_rank_is_checked_against_its_file_first(tmp_path, monkeypatch):
    save_adapter(adapted(), tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["r"] = 200000
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    model = small_gpt()
    before = snapshot(model)
    calls = []
    monkeypatch.setattr("tinygpt.model.adapters.apply_lora",
                        lambda *a, **k: calls.append(a) or pytest.fail("allocated"))
    with pytest.raises(ValueError, match=f"(?s){tmp_path}.*shape"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


def test_an_adapter_folders_huge_rank_is_refused_against_memory(tmp_path, monkeypatch):
    save_adapter(adapted(), tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["r"] = 20000
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    model = small_gpt()
    limit_memory(monkeypatch, 10 ** 7)
    with pytest.raises(ValueError, match="needs"):
        load_adapter(model, tmp_path)
    assert not lora_layers(model)


# --------------------------------------------------------------------------- load_adapter

def test_a_failed_load_adapter_leaves_the_model_as_it_was(tmp_path):
    source = adapted()
    save_adapter(source, tmp_path / "good")
    save_adapter(source, tmp_path / "bad")
    tensors = safetensors.load_file(tmp_path / "bad" / "adapter_model.safetensors")
    tensors.pop(next(iter(tensors)))                               # one tensor missing
    safetensors.save_file(tensors, tmp_path / "bad" / "adapter_model.safetensors")
    model = small_gpt()
    before = snapshot(model)
    with pytest.raises(ValueError, match="(?s)nothing was loaded.*missing tensor"):
        load_adapter(model, tmp_path / "bad")
    assert_unchanged(model, before)
    load_adapter(model, tmp_path / "good")                         # the next load works
    idx = np.random.default_rng(0).integers(0, 50, (2, 9))
    np.testing.assert_array_equal(model(idx)[0].numpy(), source(idx)[0].numpy())


def test_a_failed_load_into_an_adapted_model_keeps_its_adapters(tmp_path):
    source, model = adapted(seed=0), adapted(seed=5)
    save_adapter(source, tmp_path)
    tensors = safetensors.load_file(tmp_path / "adapter_model.safetensors")
    key = sorted(tensors)[-1]
    tensors[key] = tensors[key].copy()
    tensors[key][0, 0] = np.nan
    safetensors.save_file(tensors, tmp_path / "adapter_model.safetensors")
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"(?s)adapter_model.safetensors.*{key}.*finite"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


def test_int64_adapter_tensors_are_refused_naming_the_file(tmp_path):
    save_adapter(adapted(), tmp_path)
    tensors = safetensors.load_file(tmp_path / "adapter_model.safetensors")
    tensors = {k: (v * 10).astype(np.int64) for k, v in tensors.items()}
    safetensors.save_file(tensors, tmp_path / "adapter_model.safetensors")
    model = small_gpt()
    before = snapshot(model)
    with pytest.raises(ValueError, match="(?s)adapter_model.safetensors.*dtype I64"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


# --------------------------------------------------------------------------- adapter values

@pytest.mark.parametrize("field, value, words", [
    ("lora_alpha", math.inf, "lora_alpha"), ("lora_alpha", math.nan, "lora_alpha"),
    ("lora_alpha", 1e308, "lora_alpha"), ("lora_alpha", True, "lora_alpha"),
    ("r", True, "r must be"), ("r", 8.9, "r must be"), ("r", 0, "r must be"),
    ("r", "8", "r must be"), ("lora_dropout", math.nan, "lora_dropout"),
    ("lora_dropout", 1.5, "lora_dropout"), ("target_modules", [3], "target_modules"),
])
def test_adapter_config_values_are_refused_naming_the_file(tmp_path, field, value, words):
    save_adapter(adapted(), tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config[field] = value
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))   # Infinity, NaN
    with pytest.raises(ValueError, match=f"adapter_config.json.*{words}"):
        read_adapter_config(tmp_path)
    model = small_gpt()
    before = snapshot(model)
    with pytest.raises(ValueError, match="adapter_config.json"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


def test_an_integral_float_rank_is_read_as_that_rank(tmp_path):
    save_adapter(adapted(), tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["r"] = 4.0
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    assert read_adapter_config(tmp_path).r == 4


@pytest.mark.parametrize("alpha", [math.inf, -math.inf, math.nan, 1e308, 4e5])
def test_lora_alpha_must_be_finite_and_its_scale_fit_float16(alpha):
    with pytest.raises(ValueError, match="alpha"):
        check_lora_options(4, alpha, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        apply_lora(small_gpt(), rank=4, alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        LoraConfig.from_dict({"r": 4, "lora_alpha": alpha, "lora_dropout": 0.0,
                              "target_modules": ["c_attn"]})
    check_lora_options(4, 4 * 65504.0, 0.0)       # the largest scale float16 holds


# --------------------------------------------------------------------------- save_pretrained

def test_save_pretrained_merges_lora_without_changing_the_model(tmp_path):
    model = adapted()
    before = snapshot(model)
    idx = np.random.default_rng(0).integers(0, 50, (2, 9))
    expected = model(idx)[0].numpy()
    model.save_pretrained(tmp_path)
    assert_unchanged(model, before)
    names = safetensors.load_file(tmp_path / "model.safetensors")
    assert not [k for k in names if "lora_" in k or "base_layer" in k]
    loaded = GPT.from_pretrained(tmp_path)
    np.testing.assert_allclose(loaded(idx)[0].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_transformers_reads_a_saved_lora_model(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = adapted()
    idx = np.random.default_rng(0).integers(0, 50, (2, 9))
    expected = model(idx)[0].numpy()
    model.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        got = hf(torch.tensor(idx)).logits.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_a_task_head_model_is_never_written_as_a_language_model_folder(tmp_path):
    """GPT-2's language-model layout has no place for a task head: the language-model
    writer refuses one, and the model's own save_pretrained writes the matching Hugging
    Face class (GPT2DoubleHeadsModel) with its head under that class's names."""
    from tinygpt.model import pretrained
    from tinygpt.model.safetensors import load_file
    tg.manual_seed(0)
    model = GPTForMultipleChoice(GPTConfig(**SMALL))
    with pytest.raises(TypeError, match="GPTForMultipleChoice.*score"):
        pretrained.save_pretrained(model, tmp_path / "lm")
    assert not (tmp_path / "lm").exists()
    model.save_pretrained(tmp_path / "heads")
    config = json.loads((tmp_path / "heads" / "config.json").read_text(encoding="utf-8"))
    names = set(load_file(tmp_path / "heads" / "model.safetensors"))
    assert config["architectures"] == ["GPT2DoubleHeadsModel"]
    assert not any("score" in name for name in names)
    assert {"multiple_choice_head.summary.weight", "multiple_choice_head.summary.bias"} <= names


@pytest.mark.parametrize("scale", [math.nan, 0.0, math.inf])
def test_resuming_from_a_checkpoint_whose_loss_scale_is_not_usable_is_refused(tmp_path, scale):
    from runs import corpus
    from test_untrusted_files import rewrite
    from tinygpt.model.checkpoint import CheckpointError
    from tinygpt.train import TrainConfig, Trainer
    settings = dict(data=corpus(tmp_path), out_dir=str(tmp_path / "run"), max_iters=1,
                    eval_interval=1, eval_iters=1, n_layer=1, n_head=2, n_embd=8,
                    block_size=8, batch_size=2, processes=1, dtype="float16")
    Trainer(TrainConfig(**settings), log=lambda line: None).run()

    def bad_scale(meta):
        meta["grad_scaler"]["scale"] = scale
    rewrite(tmp_path / "run" / "ckpt.npz", meta=bad_scale)
    resumed = TrainConfig(**{**settings, "max_iters": 2, "resume": True})
    with pytest.raises(CheckpointError, match="ckpt.npz.*loss scale"):
        Trainer(resumed, log=lambda line: None).run()


@pytest.mark.parametrize("alpha", [math.inf, 1e308, math.nan])
def test_the_lora_alpha_flag_is_refused_before_training(tmp_path, alpha):
    from tinygpt.train import TrainConfig
    with pytest.raises(ValueError, match="alpha"):
        TrainConfig(data=str(tmp_path / "x.txt"), out_dir=str(tmp_path / "run"),
                    init_from=str(tmp_path / "gpt2"), lora_rank=8, lora_alpha=alpha)


def test_a_config_json_of_a_million_layers_is_refused_from_the_count_alone(tmp_path,
                                                                           monkeypatch):
    from tinygpt.model import pretrained
    small_gpt().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_layer"] = 10 ** 6
    (tmp_path / "config.json").write_text(json.dumps(config))
    for module in (sizes, pretrained):
        monkeypatch.setattr(module, "parameter_shapes",
                            lambda *a: pytest.fail("shape table built"))
    with pytest.raises(ValueError, match="describes .* parameters"):
        GPT.from_pretrained(tmp_path)
