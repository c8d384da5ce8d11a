"""How the auxiliary language-modelling loss L1 is averaged (docs/transfer.md): over every
real target of the batch, as Hugging Face's GPT2DoubleHeadsModel does, not within each row
and then over rows, as GPT-1's code (finetune-transformer-lm) does. With rows of different
lengths the two differ; this pins which one tinygpt computes."""

import numpy as np

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.model.heads import GPTForMultipleChoice

from conftest import assert_close


def test_l1_is_the_mean_over_all_real_targets_not_the_mean_of_row_means():
    tg.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=8,
                        dropout=0.0)).to("float64")
    model = GPTForMultipleChoice.from_gpt(gpt, clf_dropout=0.0).eval()
    rng = np.random.default_rng(3)
    lengths = np.array([[3, 12], [7, 4]])              # very unequal rows
    B, K, T = 2, 2, int(lengths.max())
    ids = np.zeros((B, K, T), np.int64)
    mask = np.zeros((B, K, T), np.int64)
    for b in range(B):
        for k in range(K):
            ids[b, k, :lengths[b, k]] = rng.integers(0, 11, lengths[b, k])
            mask[b, k, :lengths[b, k]] = 1
    out = model(tg.tensor(ids), labels=tg.tensor([0, 1]), attention_mask=mask, lm_coef=0.5)

    row_losses = []                                     # each row's targets' losses
    for b in range(B):
        for k in range(K):
            row = ids[b, k, :lengths[b, k]]
            logits, _ = gpt(tg.tensor(row[None]))
            z = logits.numpy()[0]
            logp = z - z.max(-1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
            row_losses.append(-logp[np.arange(len(row) - 1), row[1:]])
    over_tokens = np.concatenate(row_losses).mean()               # tinygpt, transformers
    over_rows = np.mean([losses.mean() for losses in row_losses])  # GPT-1's code
    assert abs(over_tokens - over_rows) > 1e-3                    # the batch tells them apart
    assert_close(out.lm_loss.item(), over_tokens)
