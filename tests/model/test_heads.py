"""Task heads (GPT-1 fine-tuning): hidden states, vocabulary growth, the multiple-choice and
sequence-classification heads against plain loops, gradient checks, errors, checkpoints."""

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.autograd import gradcheck
from tinygpt.model.checkpoint import CheckpointError
from tinygpt.model.heads import (GPTForMultipleChoice, GPTForSequenceClassification,
                                 add_special_tokens, task_loss)

from conftest import assert_close


def tiny_gpt(dtype="float64", vocab=10, n_embd=8, dropout=0.0, seed=0):
    tg.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab, block_size=12, n_layer=1, n_head=2, n_embd=n_embd,
                       dropout=dropout)
    return GPT(config).to(dtype)


def ragged_batch(rng, B, K, vocab, lengths):
    """input_ids (B, K, T) right-padded with 0 and its attention mask; lengths (B, K)."""
    T = int(lengths.max())
    ids = np.zeros((B, K, T), np.int64)
    mask = np.zeros((B, K, T), np.int64)
    for b in range(B):
        for k in range(K):
            n = lengths[b, k]
            ids[b, k, :n] = rng.integers(0, vocab, n)
            mask[b, k, :n] = 1
    return ids, mask


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


# --- the GPT's new parts ---------------------------------------------------------------------
def test_hidden_states_are_what_the_head_scores():
    model = tiny_gpt()
    idx = np.random.default_rng(0).integers(0, 10, (2, 7))
    hidden = model.hidden_states(idx)
    assert hidden.shape == (2, 7, 8)
    np.testing.assert_array_equal(model.lm_head(hidden).numpy(), model(idx)[0].numpy())


def test_resize_token_embeddings_keeps_rows_and_the_tie():
    model = tiny_gpt(vocab=10, n_embd=64, dtype="float32")
    old = model.transformer.wte.weight.numpy().copy()
    model.resize_token_embeddings(60)
    wte = model.transformer.wte.weight
    assert model.lm_head.weight is wte and wte.shape == (60, 64)
    assert model.config.vocab_size == 60 and model.transformer.wte.num_embeddings == 60
    np.testing.assert_array_equal(wte.numpy()[:10], old)
    new = wte.numpy()[10:]
    assert abs(new.std() - 0.02) < 0.002 and abs(new.mean()) < 0.002     # 3,200 draws
    logits, _ = model(np.array([[59, 3]]))
    assert logits.shape == (1, 2, 60)
    model.resize_token_embeddings(5)              # shrinking keeps the first rows
    np.testing.assert_array_equal(model.transformer.wte.weight.numpy(), old[:5])
    with pytest.raises(ValueError, match="new_num_tokens"):
        model.resize_token_embeddings(0)


def test_add_special_tokens_appends_ids():
    model = tiny_gpt(vocab=10)
    assert add_special_tokens(model) == {"_start_": 10, "_delimiter_": 11, "_classify_": 12}
    assert model.config.vocab_size == 13
    with pytest.raises(ValueError, match="distinct"):
        add_special_tokens(model, ("a", "a"))


# --- against plain loops -------------------------------------------------------------------
def test_multiple_choice_matches_a_loop_over_candidates(device):
    """Each row run alone, unpadded, through the plain GPT; the head's logit, the softmax
    over candidates, the LM loss over real tokens and L3 = L2 + 0.5 L1 recomputed in NumPy."""
    rng = np.random.default_rng(1)
    gpt = tiny_gpt()
    model = GPTForMultipleChoice.from_gpt(gpt, clf_dropout=0.1).to(device).eval()
    B, K = 3, 4
    lengths = rng.integers(3, 10, (B, K))
    ids, mask = ragged_batch(rng, B, K, 10, lengths)
    labels = np.array([2, 0, 3])
    out = model(tg.tensor(ids, device=device), labels=tg.tensor(labels, device=device),
                attention_mask=mask, lm_coef=0.5)

    w, bias = model.score.weight.numpy()[0], model.score.bias.numpy()[0]
    expected = np.zeros((B, K))
    lm_terms = []
    for b in range(B):
        for k in range(K):
            row = ids[b, k, :lengths[b, k]][None]                      # alone, no padding
            hidden = gpt.hidden_states(tg.tensor(row, device=device))
            expected[b, k] = hidden.numpy()[0, -1] @ w + bias          # its last real token
            logp = log_softmax(gpt.lm_head(hidden).numpy()[0])
            lm_terms += [-logp[t, row[0, t + 1]] for t in range(row.shape[1] - 1)]
    assert_close(out.logits.numpy(), expected)
    clf = -np.mean(log_softmax(expected)[np.arange(B), labels])
    assert_close(out.clf_loss.item(), clf)
    assert_close(out.lm_loss.item(), np.mean(lm_terms))
    assert_close(out.loss.item(), clf + 0.5 * np.mean(lm_terms))


def test_multiple_choice_pools_at_given_positions():
    rng = np.random.default_rng(2)
    gpt = tiny_gpt()
    model = GPTForMultipleChoice.from_gpt(gpt).eval()
    ids = rng.integers(0, 10, (2, 2, 9))
    positions = np.array([[3, 8], [0, 5]])
    logits = model(ids, clf_positions=positions).logits.numpy()
    hidden = gpt.hidden_states(ids.reshape(4, 9)).numpy()
    w, bias = model.score.weight.numpy()[0], model.score.bias.numpy()[0]
    expected = hidden[np.arange(4), positions.reshape(-1)] @ w + bias
    assert_close(logits, expected.reshape(2, 2))
    # Without a mask or positions, every row is read at its last position.
    assert_close(model(ids).logits.numpy(), (hidden[:, -1] @ w + bias).reshape(2, 2))


def test_sequence_classification_matches_a_loop():
    rng = np.random.default_rng(3)
    gpt = tiny_gpt()
    model = GPTForSequenceClassification.from_gpt(gpt, num_labels=3).eval()
    lengths = np.array([[5], [9], [2]])
    ids, mask = ragged_batch(rng, 3, 1, 10, lengths)
    ids, mask = ids[:, 0], mask[:, 0]
    labels = np.array([2, 0, 1])
    out = model(ids, labels=labels, attention_mask=mask)
    assert out.logits.shape == (3, 3) and out.lm_loss is None
    W, bias = model.score.weight.numpy(), model.score.bias.numpy()
    expected = np.stack([gpt.hidden_states(ids[b:b + 1, :lengths[b, 0]]).numpy()[0, -1] @ W.T + bias
                         for b in range(3)])
    assert_close(out.logits.numpy(), expected)
    assert_close(out.loss.item(), -np.mean(log_softmax(expected)[np.arange(3), labels]))


def test_head_is_initialised_as_gpt1():
    model = GPTForMultipleChoice(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1,
                                           n_embd=512))
    assert model.score.weight.shape == (1, 512)
    assert abs(model.score.weight.numpy().std() - 0.02) < 0.003
    np.testing.assert_array_equal(model.score.bias.numpy(), 0)
    names = [name for name, _ in model.named_parameters()]
    assert names[0] == "transformer.wte.weight" and names[-2:] == ["score.weight", "score.bias"]


def test_from_gpt_shares_the_gpt():
    gpt = tiny_gpt(dtype="float32")
    model = GPTForMultipleChoice.from_gpt(gpt)
    assert model.transformer.wte.weight is gpt.transformer.wte.weight
    assert model.lm_head.weight is model.transformer.wte.weight
    with pytest.raises(TypeError, match="plain GPT"):
        GPTForMultipleChoice.from_gpt(model)


# --- gradient checks -------------------------------------------------------------------------
def test_gradcheck_multiple_choice_head_and_combined_loss():
    """L3 of the whole model in training mode (dropout 0.1 in the GPT and on the pooled
    state, the mask fixed by reseeding) against central differences, for the head's
    weights and GPT parameters below it."""
    rng = np.random.default_rng(4)
    gpt = tiny_gpt(dropout=0.1)
    add_special_tokens(gpt)
    model = GPTForMultipleChoice.from_gpt(gpt, clf_dropout=0.1).train()
    lengths = np.array([[4, 6], [5, 3]])
    ids, mask = ragged_batch(rng, 2, 2, 13, lengths)
    labels = np.array([1, 0])
    params = [model.score.weight, model.score.bias, model.transformer.ln_f.weight,
              model.transformer.h[0].attn.c_proj.weight]

    def loss(*_):
        tg.manual_seed(7)
        return model(ids, labels=labels, attention_mask=mask, lm_coef=0.5).loss
    assert gradcheck(loss, params)


def test_gradcheck_task_loss():
    rng = np.random.default_rng(5)
    clf = tg.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    lm = tg.tensor(rng.standard_normal((2, 5, 7)), requires_grad=True)
    targets = tg.tensor(np.array([[1, 2, 3, -100, -100], [6, 0, 0, 5, -100]]))
    labels = tg.tensor(np.array([0, 3, 1]))
    assert gradcheck(lambda clf, lm: task_loss(clf, labels, lm, targets, 0.5)[0], [clf, lm])
    total, l2, l1 = task_loss(clf, labels, lm, targets, 0.5)
    assert_close(total.item(), l2.item() + 0.5 * l1.item())
    total, l2, l1 = task_loss(clf, labels, lm_coef=0)
    assert l1 is None and total is l2


# --- errors --------------------------------------------------------------------------------
def test_bad_arguments_are_named():
    model = GPTForMultipleChoice.from_gpt(tiny_gpt()).eval()
    ids = np.zeros((2, 2, 5), np.int64)
    with pytest.raises(ValueError, match=r"\(batch, choices, sequence\)"):
        model(ids[0])
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(ids, attention_mask=np.ones((2, 5)))
    left = np.ones((2, 2, 5), np.int64)
    left[1, 0, 0] = 0
    with pytest.raises(ValueError, match="pad on the right"):
        model(ids, attention_mask=left)
    with pytest.raises(ValueError, match="only 0 and 1"):
        model(ids, attention_mask=np.full((2, 2, 5), 2))
    empty = np.ones((2, 2, 5), np.int64)
    empty[0, 1] = 0
    with pytest.raises(ValueError, match="row 1 has no real token"):
        model(ids, attention_mask=empty)
    with pytest.raises(ValueError, match="label 2 is out of range"):
        model(ids, labels=np.array([0, 2]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        model(ids, labels=np.array([0, 1, 1]))
    with pytest.raises(TypeError, match="integer"):
        model(ids, labels=np.array([0.0, 1.0]))
    short = np.ones((2, 2, 5), np.int64)
    short[0, 0, 3:] = 0
    with pytest.raises(ValueError, match="position 4, outside its 3 real tokens"):
        model(ids, attention_mask=short, clf_positions=np.full((2, 2), 4))
    with pytest.raises(ValueError, match="num_labels"):
        GPTForSequenceClassification.from_gpt(tiny_gpt(), num_labels=1)


def test_a_classifier_checkpoint_is_refused_as_a_plain_gpt(tmp_path):
    from tinygpt.data import CharTokenizer
    from tinygpt.train import load_for_inference
    from tinygpt.train.finetune import load_classifier, save_classifier
    gpt = tiny_gpt(dtype="float32")
    special = add_special_tokens(gpt)
    model = GPTForMultipleChoice.from_gpt(gpt).eval()
    tokenizer = CharTokenizer("abcdefghij")
    save_classifier(tmp_path / "ckpt.npz", model, tokenizer, special)
    with pytest.raises(CheckpointError, match="GPTForMultipleChoice.*load_classifier"):
        load_for_inference(tmp_path)
    with pytest.raises(ValueError, match="unexpected keys: score.weight, score.bias"):
        GPT(gpt.config).load_state_dict(model.state_dict())
    loaded, loaded_tokenizer, loaded_special = load_classifier(tmp_path)
    assert type(loaded) is GPTForMultipleChoice and loaded_special == special
    assert loaded_tokenizer == tokenizer
    ids = np.random.default_rng(0).integers(0, 13, (2, 2, 6))
    np.testing.assert_array_equal(loaded(ids).logits.numpy(), model(ids).logits.numpy())
