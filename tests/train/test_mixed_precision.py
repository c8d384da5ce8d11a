"""Mixed precision (--dtype float16): float16 activations and gradients, float32 master
weights and optimizer state, dynamic loss scaling that recovers from an overflowing scale
where a fixed one never steps, a final loss within 0.05 of float32's, exact resume."""

import json

import numpy as np
import pytest

from tinygpt.autograd.trace import trace
from tinygpt.optim import GradScaler
from tinygpt.train import TrainConfig, Trainer

TINY = dict(n_layer=1, n_embd=32, n_head=2, block_size=16, batch_size=8, eval_iters=5,
            log_interval=10, processes=1)


def trainer(tmp_path, name, **overrides):
    config = TrainConfig(out_dir=str(tmp_path / name), **{**TINY, **overrides})
    return Trainer(config, log=lambda line: None)


def weights(t):
    model = t.master if t.master is not None else t.model
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_master_weights_and_optimizer_state_stay_float32(tmp_path):
    t = trainer(tmp_path, "audit", dtype="float16", max_iters=2, eval_interval=2)
    with trace() as seen:
        t.step()
        t.step()
    assert {p.dtype.name for p in t.model.parameters()} == {"float16"}
    assert {p.dtype.name for p in t.master.parameters()} == {"float32"}
    for state in t.optimizer.state.values():
        assert state["exp_avg"].dtype == np.float32 and state["exp_avg_sq"].dtype == np.float32
    forward = [(r.op, str(r.dtype)) for r in seen.records if r.direction == "forward"]
    # every activation float16; the loss float32: cross-entropy's, times the loss scale
    wide = [(op, dtype) for op, dtype in forward if dtype not in ("float16", "None")]
    assert wide == [("cross_entropy", "float32"), ("mul", "float32")] * 2
    # the model's float16 copy is the master weights rounded
    for p, m in zip(t.model.parameters(), t.master.parameters()):
        np.testing.assert_array_equal(p.numpy(), m.numpy().astype(np.float16))
    t.close()


def run_steps(t, n):
    for _ in range(n):
        t.step()
        t.iter_num += 1


def test_dynamic_scaling_recovers_from_a_scale_that_overflows(tmp_path):
    # Starting at 1e9, float16 gradients overflow: a fixed scale skips every step, the
    # dynamic one halves until they fit, then trains.
    fixed = trainer(tmp_path, "fixed", dtype="float16", loss_scale=1e9, loss_scale_window=0,
                    max_iters=20, eval_interval=20)
    before = weights(fixed)
    run_steps(fixed, 20)
    after = weights(fixed)
    assert all(np.array_equal(before[k], after[k]) for k in before)     # never stepped
    assert fixed.scaler.scale == 1e9
    fixed.close()

    dynamic = trainer(tmp_path, "dynamic", dtype="float16", loss_scale=1e9, max_iters=20,
                      eval_interval=20)
    before = weights(dynamic)
    run_steps(dynamic, 20)
    assert dynamic.scaler.scale < 1e9 / 8                     # backed off several times
    backoffs = [e for e in dynamic.scale_events if e["change"] == "backoff"]
    assert backoffs and all(e["scale"] == e["previous"] / 2 for e in backoffs)
    after = weights(dynamic)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    dynamic.close()


def test_the_scale_grows_after_a_window_of_good_steps_and_is_logged(tmp_path):
    t = trainer(tmp_path, "grow", dtype="float16", loss_scale=64.0, loss_scale_window=3,
                max_iters=7, eval_interval=7)
    t.run()
    events = [json.loads(line) for line in open(tmp_path / "grow" / "log.jsonl")
              if '"loss_scale"' in line]
    assert [e["scale"] for e in events] == [128.0, 256.0]
    assert all(e["change"] == "growth" for e in events)


def test_float16_training_ends_within_0_05_of_float32(tmp_path):
    losses = {}
    for dtype in ("float32", "float16"):
        t = trainer(tmp_path, dtype, dtype=dtype, max_iters=150, eval_interval=150,
                    learning_rate=3e-3)
        history = t.run()
        losses[dtype] = history[-1]["val_loss"]
    assert losses["float16"] < 3.1                           # it learned (from ~4.6)
    assert abs(losses["float16"] - losses["float32"]) < 0.05, losses


def test_resume_continues_exactly(tmp_path):
    straight = trainer(tmp_path, "straight", dtype="float16", max_iters=12, eval_interval=6,
                       dropout=0.1)
    straight.run()
    final = weights(straight)
    first = trainer(tmp_path, "split", dtype="float16", max_iters=6, eval_interval=6,
                    dropout=0.1)
    first.run()
    resumed = Trainer(TrainConfig(out_dir=str(tmp_path / "split"), resume=True, max_iters=12),
                      log=lambda line: None, given={"out_dir", "resume", "max_iters"})
    assert {p.dtype.name for p in resumed.master.parameters()} == {"float32"}
    resumed.run()
    again = weights(resumed)
    for k in final:
        np.testing.assert_array_equal(again[k], final[k], err_msg=k)


@pytest.mark.parametrize("bad, message", [
    (dict(dtype="bfloat16"), "neither NumPy nor CuPy has a bfloat16"),
    (dict(dtype="float16", processes=2), "runs in one process"),
    (dict(dtype="float16", loss_scale=0.0), r"loss_scale \(float32's normal range"),
    (dict(dtype="float16", loss_scale=1e39), r"loss_scale .* must be a finite number in"),
    (dict(dtype="float16", loss_scale=1e-40), r"loss_scale .* got 1e-40"),
    (dict(dtype="int8"), "dtype must be 'float32', 'float64' or 'float16'"),
])
def test_bad_precision_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_grad_scaler_rules():
    s = GradScaler(init_scale=8.0, growth_interval=2)
    assert s.update(True) is None and s.update(True) == "growth" and s.scale == 16.0
    assert s.update(False) == "backoff" and s.scale == 8.0 and s.good_steps == 0
    state = s.state_dict()
    again = GradScaler()
    again.load_state_dict(state)
    assert again.scale == 8.0
    with pytest.raises(ValueError, match="backoff_factor"):
        GradScaler(backoff_factor=1.5)


def test_master_gradients_are_the_float32_gradients_to_float16_precision(tmp_path):
    import tinygpt as tg
    t = trainer(tmp_path, "grads", dtype="float16", max_iters=1, eval_interval=1)
    x, y = t.sampler.get_batch()
    reference = t.master                            # the float32 weights, as a float32 model
    _, loss = reference(x, y)
    loss.backward()
    expected = [p.grad.numpy().copy() for p in reference.parameters()]
    reference.zero_grad()
    _, loss16 = t.model(x, y)
    t.precision.scaled_backward(loss16, 1)
    assert t.scaler.unscale(t.model, t.master)
    for got, want in zip((p.grad.numpy() for p in t.master.parameters()), expected):
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, atol=2e-2 * scale)
    assert tg.float16 == t.model.dtype
    t.close()
