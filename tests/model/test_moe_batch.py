"""A mixture-of-experts row does not depend on its batch where it should not: in eval mode
no assignment is dropped (capacity is a training-time limit), so a row's logits are the
same alone, beside other rows and behind left padding, and cached greedy generation equals
recomputation; padding tokens are routed nowhere, take no capacity and stay out of the
load-balancing loss, in training too; unpadded training batches are routed as before."""

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.model.blocks import MLP
from tinygpt.model.moe import MoE

CONFIG = dict(vocab_size=23, block_size=24, n_layer=2, n_head=2, n_embd=16, n_expert=4,
              expert_top_k=2, expert_capacity=1.25)


def moe_gpt(seed=0, dtype=tg.float64, **overrides):
    """A GPT with experts whose weights are large enough (x 20 GPT-2's init) to decide
    the greedy tokens: a dropped assignment then shows."""
    tg.manual_seed(seed)
    model = GPT(GPTConfig(**{**CONFIG, **overrides}))
    for name, param in model.named_parameters():
        if ".mlp." in name:
            param.data *= 20
    return model.to(dtype).eval()


def rows(seed=0, shape=(4, 10)):
    return np.random.default_rng(seed).integers(0, CONFIG["vocab_size"], shape)


@pytest.mark.parametrize("dtype, tol", [(tg.float64, 1e-10), (tg.float32, 1e-5)])
def test_eval_logits_of_a_row_do_not_depend_on_its_neighbours(dtype, tol):
    model = moe_gpt(dtype=dtype)
    ids = rows()
    together = model(ids)[0].numpy()
    for b in range(len(ids)):
        alone = model(ids[b:b + 1])[0].numpy()[0]
        np.testing.assert_allclose(together[b], alone, rtol=tol, atol=tol)
    assert int(model.moe_stats()["dropped"]) == 0


@pytest.mark.parametrize("dtype, tol", [(tg.float64, 1e-10), (tg.float32, 1e-5)])
def test_eval_logits_do_not_depend_on_left_padding(dtype, tol):
    model = moe_gpt(dtype=dtype)
    ids = rows(1, (2, 10))
    padded = np.concatenate([np.zeros((2, 6), dtype=ids.dtype), ids], axis=1)
    padded[1, :6] = rows(2, (1, 6))[0]                 # row 1's padding has other ids
    mask = np.concatenate([np.zeros((2, 6)), np.ones((2, 10))], axis=1)
    got = model(padded, attention_mask=mask)[0].numpy()[:, 6:]
    alone = model(ids)[0].numpy()
    np.testing.assert_allclose(got, alone, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [tg.float64, tg.float32])
def test_cached_greedy_generation_equals_recomputation(dtype):
    model = moe_gpt(dtype=dtype, block_size=64, n_expert=8, expert_capacity=1.0)
    idx = rows(3, (3, 4))
    cached = model.generate(idx, 60, do_sample=False).numpy()
    tokens = idx.copy()
    for _ in range(60):
        logits = model(tokens)[0].numpy()[:, -1]
        tokens = np.concatenate([tokens, logits.argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(cached, tokens)


def make_moe(capacity=1.25):
    tg.manual_seed(0)
    config = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=1, n_embd=6,
                       n_expert=4, expert_top_k=2, expert_capacity=capacity)
    return MoE(config, MLP).to(tg.float64)


def test_padding_takes_no_capacity_and_no_part_in_the_aux_loss_in_training():
    moe = make_moe(capacity=0.5)                        # training mode: capacity applies
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6))
    real = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    padded = x.copy()
    padded[~real] = rng.standard_normal((int((~real).sum()), 6)) * 50   # any values at pads
    y = moe(tg.tensor(padded), key_mask=tg.tensor(real)).numpy()
    aux, dropped = moe.aux_loss.item(), int(moe.dropped)
    np.testing.assert_array_equal(y[~real], 0.0)        # padding routed nowhere
    # The same real tokens packed into one row, unpadded: the same routing and outputs.
    packed = np.concatenate([x[0, :3], x[1]])[None]
    y_packed = moe(tg.tensor(packed)).numpy()[0]
    np.testing.assert_allclose(np.concatenate([y[0, :3], y[1]]), y_packed, atol=1e-12)
    assert aux == pytest.approx(moe.aux_loss.item(), abs=1e-12)
    assert dropped == int(moe.dropped)


def test_padding_in_eval_mode_is_routed_nowhere():
    moe = make_moe().eval()
    real = np.array([[0, 0, 1, 1, 1]], dtype=bool)
    x = np.random.default_rng(1).standard_normal((1, 5, 6))
    y = moe(tg.tensor(x), key_mask=tg.tensor(real)).numpy()
    np.testing.assert_array_equal(y[0, :2], 0.0)
    np.testing.assert_allclose(y[0, 2:], moe(tg.tensor(x[:, 2:])).numpy()[0], atol=1e-12)


def test_capacity_is_a_training_time_limit():
    moe = make_moe(capacity=0.5)
    x = tg.tensor(np.random.default_rng(2).standard_normal((2, 5, 6)))
    moe(x)
    assert int(moe.dropped) > 0
    moe.eval()
    moe(x)
    assert int(moe.dropped) == 0


def test_unpadded_training_routing_is_unchanged_by_an_all_real_mask():
    moe = make_moe(capacity=0.5)
    x = tg.tensor(np.random.default_rng(3).standard_normal((2, 5, 6)))
    y = moe(x).numpy()
    aux, dropped = moe.aux_loss.item(), int(moe.dropped)
    y_masked = moe(x, key_mask=tg.tensor(np.ones((2, 5), dtype=bool))).numpy()
    np.testing.assert_array_equal(y, y_masked)
    assert (aux, dropped) == (moe.aux_loss.item(), int(moe.dropped))


def test_a_task_heads_padding_takes_no_expert_capacity_in_training():
    from tinygpt.model.heads import GPTForSequenceClassification
    tg.manual_seed(0)
    model = GPTForSequenceClassification(GPTConfig(**{**CONFIG, "expert_capacity": 0.5}),
                                         clf_dropout=0.0).to(tg.float64)   # training mode
    ids = rows(4, (1, 7))
    padded = np.concatenate([ids, rows(5, (1, 5))], axis=1)
    mask = np.concatenate([np.ones((1, 7)), np.zeros((1, 5))], axis=1)
    alone = model(ids).logits.numpy()
    assert int(model.moe_stats()["dropped"]) > 0       # capacity binds: drops happen
    np.testing.assert_allclose(model(padded, attention_mask=mask).logits.numpy(), alone,
                               rtol=1e-12, atol=1e-12)


def test_training_with_experts_resumes_bit_for_bit(tmp_path):
    from tinygpt.train import TrainConfig, Trainer
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a truth universally acknowledged, that a single man " * 40)

    def run(name, max_iters, resume=False):
        config = TrainConfig(data=str(corpus), out_dir=str(tmp_path / name), n_layer=2,
                             n_head=2, n_embd=16, block_size=16, batch_size=4, dropout=0.1,
                             n_expert=4, expert_capacity=0.5, max_iters=max_iters,
                             eval_interval=6, eval_iters=2, processes=1, resume=resume)
        trainer = Trainer(config, log=lambda line: None)
        trainer.run()
        return {k: v.numpy() for k, v in trainer.model.state_dict().items()}

    straight = run("a", 12)
    run("b", 6)
    resumed = run("b", 12, resume=True)
    for key in straight:
        np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
