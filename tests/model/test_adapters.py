"""LoRA adapters alone on disk, in PEFT's layout: names, shapes, round trips, errors, and
(where PyTorch, transformers and peft are installed) PEFT reading ours and we reading PEFT's."""

import json

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.model import safetensors
from tinygpt.model.adapters import load_adapter, read_adapter_config, save_adapter
from tinygpt.model.heads import GPTForMultipleChoice
from tinygpt.nn.lora import apply_lora, lora_layers


def adapted_gpt(seed=0, rank=4, targets=("c_attn", "c_proj", "c_fc")):
    tg.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16))
    apply_lora(model, rank=rank, alpha=8, targets=targets)
    rng = np.random.default_rng(seed + 1)
    for _, layer in lora_layers(model):
        layer.lora_B.weight.data[...] = rng.standard_normal(layer.lora_B.weight.shape) * 0.1
    return model.eval()


def test_files_have_pefts_names_shapes_and_config(tmp_path):
    model = adapted_gpt()
    save_adapter(model, tmp_path / "adapter", base_model_name_or_path="gpt2")
    tensors = safetensors.load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    p = "base_model.model.transformer.h.0."
    assert tensors[p + "attn.c_attn.lora_A.weight"].shape == (4, 16)
    assert tensors[p + "attn.c_attn.lora_B.weight"].shape == (48, 4)
    assert tensors[p + "attn.c_proj.lora_B.weight"].shape == (16, 4)
    assert tensors[p + "mlp.c_fc.lora_B.weight"].shape == (64, 4)
    assert tensors[p + "mlp.c_proj.lora_A.weight"].shape == (4, 64)
    assert len(tensors) == 2 * 2 * 4 and all(t.dtype == np.float32 for t in tensors.values())
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8.0, 0.0)
    assert config["target_modules"] == ["c_attn", "c_proj", "c_fc"]
    assert config["fan_in_fan_out"] is True and config["base_model_name_or_path"] == "gpt2"


def test_round_trip_onto_a_fresh_base(tmp_path):
    model = adapted_gpt()
    idx = np.random.default_rng(0).integers(0, 50, (2, 9))
    save_adapter(model, tmp_path)
    tg.manual_seed(0)
    fresh = GPT(model.config)              # the same base weights (same seed), no adapters
    load_adapter(fresh, tmp_path)
    assert fresh.lora_config == model.lora_config
    np.testing.assert_array_equal(fresh.eval()(idx)[0].numpy(), model(idx)[0].numpy())


def test_existing_files_are_kept_and_bad_folders_named(tmp_path):
    model = adapted_gpt()
    save_adapter(model, tmp_path)
    before = (tmp_path / "adapter_model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_adapter(adapted_gpt(seed=5), tmp_path)
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match="no LoRA adapters"):
        save_adapter(GPT(model.config), tmp_path / "other")
    with pytest.raises(TypeError, match="GPTForMultipleChoice"):
        save_adapter(GPTForMultipleChoice(model.config), tmp_path / "other")
    # Another rank on an already adapted model: refused before anything is copied.
    with pytest.raises(ValueError, match="rank 4 and alpha 8; the model's adapters have "
                                         "rank 2"):
        load_adapter(adapted_gpt(rank=2), tmp_path)
    # Other layers adapted: every missing and unexpected tensor is named.
    other = adapted_gpt(targets=("c_attn",))
    with pytest.raises(ValueError, match="unexpected tensor .*attn.c_proj.lora_A"):
        load_adapter(other, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    for change, message in (({"peft_type": "IA3"}, "LoRA adapters only"),
                            ({"use_dora": True}, "use_dora"),
                            ({"target_modules": ".*attn.*"}, "pattern")):
        (tmp_path / "adapter_config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match=message):
            read_adapter_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        read_adapter_config(tmp_path / "missing")


def test_peft_reads_ours_and_we_read_pefts(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    model = adapted_gpt()
    tg.manual_seed(0)                      # the base weights adapted_gpt started from
    base = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16))
    base.save_pretrained(tmp_path / "base")
    save_adapter(model, tmp_path / "ours")
    idx = np.random.default_rng(1).integers(0, 50, (2, 10))
    ours = model(idx)[0].numpy()

    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    adapted = peft.PeftModel.from_pretrained(hf, tmp_path / "ours").eval()
    with torch.no_grad():
        theirs = adapted(torch.tensor(idx)).logits.numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)

    adapted.save_pretrained(tmp_path / "theirs")
    tg.manual_seed(0)
    again = GPT(model.config)
    load_adapter(again, tmp_path / "theirs")
    np.testing.assert_allclose(again.eval()(idx)[0].numpy(), ours, rtol=1e-5, atol=1e-6)
