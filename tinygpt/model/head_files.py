"""Task heads saved as Hugging Face folders of the matching transformers class (floor 5).

transformers has a GPT-2 class for each of tinygpt's two heads (tinygpt/model/heads.py):

    tinygpt                         transformers            the head's tensors there
    GPTForMultipleChoice        ->  GPT2DoubleHeadsModel    multiple_choice_head.summary
                                                            .weight (1, C), .bias (1,)
    GPTForSequenceClassification -> GPT2ForSequenceClassification    score.weight
                                                            (num_labels, C), no bias

The GPT under the head is written as `save_pretrained` writes a GPT (config.json,
model.safetensors with `transformer.` names and Conv1D layouts, the tokenizer files); the
head's tensors are added under the class's names, and config.json names the class and
its head's settings:

- GPT2DoubleHeadsModel: `summary_type="cls_index"` (the hidden state at the position
  `mc_token_ids` gives, as tinygpt's `clf_positions`), `summary_use_proj=True`,
  `summary_proj_to_labels=True` with `num_labels=1` (a Linear(C, 1) with bias, the
  head's own), `summary_activation=None`, `summary_first_dropout` = the head's
  clf_dropout, `summary_last_dropout=0`. Without `mc_token_ids` transformers reads the
  last position of each row, padding included: pass the clf positions.
- GPT2ForSequenceClassification: its score layer has no bias. A head built with
  `score_bias=False` is written as it is; a head with a bias is written only when the
  bias is exactly zero (it computes the same), otherwise refused with an error naming
  score_bias=False. transformers pools at the rightmost token that is not
  `pad_token_id` (where tinygpt reads the attention mask), and applies no dropout to
  the pooled state (tinygpt's clf_dropout, training only, has no counterpart there).
  `pad_token_id` defaults to the tokenizer's end-of-text id, else None (transformers then
  takes the last position and refuses batches of more than one row).

Refused, before any file is written: a model with LoRA layers (merge_lora first), a
model with bottleneck adapters (no transformers GPT-2 class has them), what a GPT-2
folder cannot describe (rotary positions, banded layers, experts: `config_to_hf`).

Imports: the standard library, numpy, nn (LoRA, bottleneck
adapters), model (heads; pretrained, whose folder writer it shares).
"""

import json

import numpy as np

from ..nn.bottleneck import bottleneck_adapters
from ..nn.lora import lora_layers
from .heads import GPTForMultipleChoice, GPTForSequenceClassification
from .pretrained import (CONFIG_NAME, config_to_hf, hf_state_dict, tokenizer_texts,
                         write_hf_folder)

HF_CLASSES = {GPTForMultipleChoice: "GPT2DoubleHeadsModel",
              GPTForSequenceClassification: "GPT2ForSequenceClassification"}


def head_hf_config(model, tokenizer=None, pad_token_id=None):
    """The config.json dict of the transformers class matching `model`'s head."""
    eos = getattr(tokenizer, "eot_token", None)
    hf = config_to_hf(model.config, model.transformer.ln_f.eps, eos)
    labels = 1 if isinstance(model, GPTForMultipleChoice) else model.num_labels
    hf["architectures"] = [HF_CLASSES[type(model)]]
    hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(labels)}
    hf["label2id"] = {f"LABEL_{i}": i for i in range(labels)}
    if isinstance(model, GPTForMultipleChoice):
        hf.update(summary_type="cls_index", summary_use_proj=True, summary_activation=None,
                  summary_proj_to_labels=True, summary_first_dropout=model.clf_dropout.p,
                  summary_last_dropout=0.0)
    else:
        hf["pad_token_id"] = eos if pad_token_id is None else int(pad_token_id)
    return hf


def head_hf_state_dict(model):
    """{Hugging Face name: float32 array} of a task head model: the GPT's tensors as
    `hf_state_dict` names them, and the head's under the transformers class's names."""
    tensors = hf_state_dict(model)
    weight = tensors.pop("transformer.score.weight")
    bias = tensors.pop("transformer.score.bias", None)
    if isinstance(model, GPTForMultipleChoice):
        tensors["multiple_choice_head.summary.weight"] = weight
        tensors["multiple_choice_head.summary.bias"] = bias if bias is not None \
            else np.zeros(1, np.float32)
        return tensors
    if bias is not None and bool(np.any(bias != 0)):
        raise ValueError(
            "transformers' GPT2ForSequenceClassification has no bias on its score layer, and "
            "this head's bias is not zero: build the head with score_bias=False "
            "(GPTForSequenceClassification.from_gpt(gpt, score_bias=False)) to export it")
    tensors["score.weight"] = weight
    return tensors


def check_exportable(model):
    """Raise an error naming why `model` has no transformers form; None if it has one."""
    if type(model) not in HF_CLASSES:
        raise TypeError(f"save_head_pretrained writes a task head (GPTForMultipleChoice or "
                        f"GPTForSequenceClassification), got {type(model).__name__}")
    if lora_layers(model):
        raise ValueError("the model has LoRA layers, which transformers' GPT-2 classes do "
                         "not hold: merge_lora(model) first folds them into the weights")
    if bottleneck_adapters(model):
        raise ValueError("the model has bottleneck adapters, which no transformers GPT-2 "
                         "class has (and which cannot be merged into the weights): save it "
                         "as a tinygpt checkpoint, or save the adapters with save_bottleneck")


def save_head_pretrained(model, path, overwrite=False, tokenizer=None, pad_token_id=None):
    """Write a task head model as the Hugging Face folder of its transformers class (see
    the module docstring): config.json, model.safetensors (float32) and the tokenizer's
    files, as `save_pretrained` writes a GPT's (`write_hf_folder`). An existing file of
    these names raises FileExistsError naming it, before anything is written, unless
    overwrite=True (which also removes tokenizer files a previous save left).

    >>> model.save_pretrained("my-classifier")               # doctest: +SKIP
    >>> GPT2ForSequenceClassification.from_pretrained("my-classifier")   # doctest: +SKIP
    """
    check_exportable(model)
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    texts = tokenizer_texts(tokenizer)
    texts[CONFIG_NAME] = json.dumps(head_hf_config(model, tokenizer, pad_token_id),
                                    indent=2) + "\n"
    write_hf_folder(path, texts, head_hf_state_dict(model), overwrite)

