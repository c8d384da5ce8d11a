"""Task heads written as Hugging Face folders: GPT2ForSequenceClassification and
GPT2DoubleHeadsModel read them and compute the same logits; what they cannot hold is
refused before anything is written."""

import json

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.data import CharTokenizer
from tinygpt.model.head_files import head_hf_config
from tinygpt.model.heads import (GPTForMultipleChoice, GPTForSequenceClassification,
                                 add_special_tokens)
from tinygpt.model.checkpoint import load_training_state, save_training_state
from tinygpt.nn.bottleneck import apply_adapters
from tinygpt.nn.lora import apply_lora, merge_lora


def small_gpt(bias=True, gelu="none", seed=0):
    tg.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16,
                         bias=bias, gelu_approximate=gelu))


def scaled_head(model, seed=3):
    """The head's weights at N(0, 0.02) give logits near zero; make them O(1)."""
    rng = np.random.default_rng(seed)
    for p in model.score.parameters():
        p.data[...] = rng.standard_normal(p.shape).astype(p.dtype)
    return model


def load_hf(cls_name, folder):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    model, info = getattr(transformers, cls_name).from_pretrained(folder,
                                                                  output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


@pytest.mark.parametrize("bias, gelu", [(True, "none"), (False, "tanh")])
def test_sequence_classifier_round_trip(tmp_path, bias, gelu):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    model = GPTForSequenceClassification.from_gpt(small_gpt(bias, gelu), num_labels=3,
                                                  score_bias=False)
    scaled_head(model).eval()
    model.save_pretrained(tmp_path / "clf", pad_token_id=19)
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["architectures"] == ["GPT2ForSequenceClassification"]
    assert config["pad_token_id"] == 19 and len(config["id2label"]) == 3
    hf = load_hf("GPT2ForSequenceClassification", tmp_path / "clf")
    assert hf.score.bias is None
    ids = np.random.default_rng(0).integers(0, 19, (3, 10))
    mask = np.ones_like(ids)
    ids[1, 6:], mask[1, 6:] = 19, 0                      # a right-padded row
    ours = model(ids, attention_mask=mask).logits.numpy()
    with torch.no_grad():
        theirs = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert np.abs(ours).max() > 0.1
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)


def test_multiple_choice_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    gpt = small_gpt()
    tokenizer = CharTokenizer("abcdefghijklmnopq")        # 17 ids, then 3 special tokens
    gpt.resize_token_embeddings(17)
    add_special_tokens(gpt)
    model = scaled_head(GPTForMultipleChoice.from_gpt(gpt, clf_dropout=0.2)).eval()
    model.save_pretrained(tmp_path / "mc", tokenizer=tokenizer)
    config = json.loads((tmp_path / "mc" / "config.json").read_text())
    assert config["summary_type"] == "cls_index" and config["summary_use_proj"] is True
    assert config["summary_proj_to_labels"] is True and config["summary_first_dropout"] == 0.2
    assert (tmp_path / "mc" / "tinygpt_tokenizer.json").exists()
    hf = load_hf("GPT2DoubleHeadsModel", tmp_path / "mc")
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 20, (2, 3, 9))
    positions = np.array([[8, 5, 6], [3, 8, 2]])          # each row's clf token
    mask = (np.arange(9)[None, None] <= positions[..., None]).astype(np.int64)
    ours = model(ids, attention_mask=mask, clf_positions=positions).logits.numpy()
    with torch.no_grad():
        out = hf(torch.tensor(ids), mc_token_ids=torch.tensor(positions))
    assert np.abs(ours).max() > 0.1
    np.testing.assert_allclose(out.mc_logits.numpy(), ours, rtol=0, atol=1e-4)
    # The tied language-modelling head is the same too.
    lm = model.lm_head(model.hidden_states(ids[0])).numpy()
    np.testing.assert_allclose(out.logits[0].numpy(), lm, rtol=0, atol=1e-4)


def test_exports_that_transformers_cannot_hold_are_refused(tmp_path):
    biased = scaled_head(GPTForSequenceClassification.from_gpt(small_gpt()))
    with pytest.raises(ValueError, match="score_bias=False"):
        biased.save_pretrained(tmp_path / "a")
    assert not (tmp_path / "a").exists()
    biased.score.bias.data[...] = 0                        # a zero bias computes the same
    biased.save_pretrained(tmp_path / "zero")
    assert json.loads((tmp_path / "zero" / "config.json").read_text())["pad_token_id"] is None

    lora = apply_lora(GPTForMultipleChoice.from_gpt(small_gpt()), rank=2)
    with pytest.raises(ValueError, match="merge_lora"):
        lora.save_pretrained(tmp_path / "b")
    merge_lora(lora).save_pretrained(tmp_path / "b")      # merged: a plain head
    adapted = apply_adapters(GPTForMultipleChoice.from_gpt(small_gpt()), 2,
                             trainable=("score",))
    with pytest.raises(ValueError, match="bottleneck adapters"):
        adapted.save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match="bottleneck adapter's"):
        apply_adapters(small_gpt(), 2).save_pretrained(tmp_path / "d")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        merge_lora(apply_lora(GPTForMultipleChoice.from_gpt(small_gpt()), rank=2)) \
            .save_pretrained(tmp_path / "b")


def test_score_bias_option_survives_checkpoints(tmp_path):
    model = GPTForSequenceClassification.from_gpt(small_gpt(), num_labels=4, score_bias=False)
    assert model.score.bias is None and model.head_options()["score_bias"] is False
    assert "score.bias" not in model.state_dict()
    save_training_state(tmp_path / "ckpt.npz", scaled_head(model))
    rebuilt = load_training_state(tmp_path / "ckpt.npz", model_class=None).build_model()
    assert rebuilt.score.bias is None
    ids = np.arange(12).reshape(2, 6)
    np.testing.assert_array_equal(rebuilt.eval()(ids).logits.numpy(),
                                  model.eval()(ids).logits.numpy())
    with pytest.raises(TypeError, match="score_bias must be True or False"):
        GPTForMultipleChoice.from_gpt(small_gpt(), score_bias="no")
    assert head_hf_config(model, None, 7)["pad_token_id"] == 7


def test_a_head_saved_over_a_folder_keeps_no_stale_tokenizer_file(tmp_path):
    # The same folder writer as save_pretrained's: existing files are refused, and with
    # overwrite the tokenizer files of an earlier save that this one has not are removed.
    first = GPTForSequenceClassification.from_gpt(small_gpt(), num_labels=2)
    first.save_pretrained(tmp_path, tokenizer=CharTokenizer("abcdefghij"))
    assert (tmp_path / "tinygpt_tokenizer.json").exists()
    second = GPTForSequenceClassification.from_gpt(small_gpt(seed=1), num_labels=2)
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        second.save_pretrained(tmp_path)
    second.save_pretrained(tmp_path, overwrite=True)
    assert not (tmp_path / "tinygpt_tokenizer.json").exists()
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
