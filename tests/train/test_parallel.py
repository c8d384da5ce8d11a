"""Data parallelism over processes: the split step's loss and gradients are the one-process
step's, parameters reach the workers, errors and lost workers reach the caller, workers end."""

import json
import os
import signal

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.autograd import backend
from tinygpt.autograd.fast import blas as fast_blas
from tinygpt.autograd.fast import threads as fast_threads
from tinygpt.optim import AdamW
from tinygpt.train import TrainConfig, Trainer
from tinygpt.train import parallel
from tinygpt.train.parallel import DataParallel, WorkerError, shard_sizes

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

V, T = 11, 8


def model(dropout=0.0, dtype="float64", seed=0):
    tg.manual_seed(seed)
    config = GPTConfig(block_size=T, vocab_size=V, n_layer=2, n_head=2, n_embd=16,
                       dropout=dropout, bias=True)
    return GPT(config).to(dtype)


def batch(rows, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (rows, T)), rng.integers(0, V, (rows, T))


def one_process(m, batches):
    """The reference: the mean loss of the micro-batches and its gradients, in one process."""
    total = 0.0
    for x, y in batches:
        _, loss = m(tg.tensor(x), tg.tensor(y))
        (loss / len(batches)).backward()
        total += loss.item() / len(batches)
    grads = [p.grad.data.copy() for p in m.parameters()]
    m.zero_grad()
    return total, grads


def grads_of(m):
    return [p.grad.data.copy() for p in m.parameters()]


def test_shards_are_as_equal_as_can_be():
    assert shard_sizes(12, 2) == [6, 6]
    assert shard_sizes(5, 2) == [3, 2]
    assert shard_sizes(7, 3) == [3, 2, 2]
    assert sum(shard_sizes(64, 5)) == 64


@pytest.mark.parametrize("processes, rows, micro", [(2, 6, 1), (2, 5, 1), (3, 7, 2)])
def test_split_step_gives_the_one_process_loss_and_gradients(processes, rows, micro):
    m = model()
    batches = [batch(rows, seed=s) for s in range(micro)]
    want_loss, want = one_process(m, batches)
    with DataParallel(m, processes) as dp:
        loss = dp.forward_backward(batches)
        got = grads_of(m)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)


def test_gradients_add_to_those_already_there():
    m = model()
    x, y = batch(4)
    _, want = one_process(m, [(x, y)])
    with DataParallel(m, 2) as dp:
        dp.forward_backward([(x, y)])
        dp.forward_backward([(x, y)])
        for g, w in zip(grads_of(m), want):
            np.testing.assert_allclose(g, 2 * w, rtol=1e-10, atol=1e-13)


def test_workers_see_the_optimizer_updates_and_replaced_parameters():
    m, twin = model(), model()
    opt, twin_opt = AdamW(m.parameters(), lr=1e-2), AdamW(twin.parameters(), lr=1e-2)
    with DataParallel(m, 2) as dp:
        for step in range(3):
            x, y = batch(4, seed=step)
            dp.forward_backward([(x, y)])
            opt.step()
            opt.zero_grad()
            one_process(twin, [(x, y)])     # grads taken, then redo them for the update
            _, loss = twin(tg.tensor(x), tg.tensor(y))
            loss.backward()
            twin_opt.step()
            twin_opt.zero_grad()
        for p, q in zip(m.parameters(), twin.parameters()):
            np.testing.assert_allclose(p.data, q.data, rtol=1e-9, atol=1e-12)
        # Arrays replaced outside the optimizer: the next step must use them everywhere.
        for p, q in zip(m.parameters(), model(seed=5).parameters()):
            p.data = q.data.copy()
        x, y = batch(4, seed=9)
        dp.forward_backward([(x, y)])
        _, want = one_process(model(seed=5), [(x, y)])
        for g, w in zip(grads_of(m), want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)


def test_dropout_masks_repeat_with_the_seed_and_differ_between_processes():
    def run(seed):
        m = model(dropout=0.5)
        backend.manual_seed(seed)
        with DataParallel(m, 2) as dp:
            x, y = batch(2)
            x[1] = x[0]                     # the same row in each process
            y[1] = y[0]
            dp.forward_backward([(x, y)])
            return grads_of(m)

    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))
    # Same row, same weights: only different masks in the two processes make the split
    # gradient differ from twice the one-row gradient of the calling process's mask.
    m = model(dropout=0.0)
    x, y = batch(2)
    x[1], y[1] = x[0], y[0]
    with DataParallel(m, 2) as dp:
        dp.forward_backward([(x, y)])
        no_dropout = grads_of(m)
    assert not all(np.allclose(p, q) for p, q in zip(a, no_dropout))


def test_an_error_in_a_worker_is_raised_here_and_the_workers_go_on():
    m = model()
    with DataParallel(m, 2) as dp:
        x, y = batch(4)
        x[3, 0] = V + 3                         # a bad token id in the worker's rows
        with pytest.raises(ValueError, match="data-parallel worker") as error:
            dp.forward_backward([(x, y)])
        assert "Traceback" in str(error.value)
        assert all(p.grad is None for p in m.parameters())
        x, y = batch(4)
        _, want = one_process(model(), [(x, y)])
        dp.forward_backward([(x, y)])
        for g, w in zip(grads_of(m), want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)


def test_an_error_here_still_collects_the_workers_replies():
    m = model()
    with DataParallel(m, 2) as dp:
        x, y = batch(4)
        x[0, 0] = -1                            # a bad token id in this process's rows
        with pytest.raises(ValueError):
            dp.forward_backward([(x, y)])
        dp.forward_backward([batch(4)])         # in step: the worker's reply was taken
        assert all(p.grad is not None for p in m.parameters())


def test_a_killed_worker_is_reported_and_the_rest_stopped():
    dp = DataParallel(model(), 3)
    pids = [pid for pid, _ in dp.workers]
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(WorkerError, match="worker 1 has exited"):
        dp.forward_backward([batch(6)])
    assert dp.workers is None
    for pid in pids:                            # reaped: no zombies left behind
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    with pytest.raises(RuntimeError, match="closed"):
        dp.forward_backward([batch(6)])


def test_close_ends_the_workers_and_gives_the_threads_back():
    before = fast_threads.get_num_threads(), fast_blas.get_blas_num_threads()
    dp = DataParallel(model(), 2, threads=1)
    assert fast_threads.get_num_threads() == 1
    with dp.all_threads():
        assert (fast_threads.get_num_threads(), fast_blas.get_blas_num_threads()) == before
    assert fast_threads.get_num_threads() == 1
    sizes = dp.peak_rss_mb()
    assert len(sizes) == 2 and all(s > 1 for s in sizes)
    pids = [pid for pid, _ in dp.workers]
    dp.close()
    dp.close()                                  # twice is fine
    assert (fast_threads.get_num_threads(), fast_blas.get_blas_num_threads()) == before
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_one_process_forks_nothing():
    m = model()
    x, y = batch(3)
    want_loss, want = one_process(m, [(x, y)])
    with DataParallel(m, 1) as dp:
        assert dp.workers == []
        assert dp.forward_backward([(x, y)]) == pytest.approx(want_loss, rel=1e-12)
    for g, w in zip(grads_of(m), want):
        np.testing.assert_allclose(g, w, rtol=1e-12)


@pytest.mark.parametrize("processes", [0, -2, True, 2.0, "2"])
def test_bad_process_counts_are_named(processes):
    with pytest.raises(ValueError, match="processes must be a positive int, got "):
        DataParallel(model(), processes)


def test_bad_settings_are_named(monkeypatch):
    with DataParallel(model(), 3) as dp:
        with pytest.raises(ValueError, match="a batch of 2 rows cannot be split over 3"):
            dp.forward_backward([batch(2)])
        with pytest.raises(ValueError, match="same number of rows"):
            dp.forward_backward([(batch(4)[0], batch(3)[1])])
        with pytest.raises(ValueError, match="at least one"):
            dp.forward_backward([])
    with pytest.raises(ValueError, match="device 'cuda'"):
        parallel.check_processes(2, "cuda")
    with pytest.raises(ValueError, match="processes \\(4\\) must not exceed batch_size \\(3\\)"):
        TrainConfig(processes=4, batch_size=3)
    monkeypatch.delattr(os, "fork")
    with pytest.raises(ValueError, match="needs os.fork"):
        DataParallel(model(), 2)
    assert parallel.auto_processes(8, 12) == 1
    assert TrainConfig(processes=0).resolved_processes() == 1


def test_auto_processes(monkeypatch):
    monkeypatch.setattr(parallel.sys, "platform", "darwin")    # fork, but Accelerate
    assert parallel.auto_processes(2, 12) == 1
    monkeypatch.setattr(parallel.sys, "platform", "linux")
    assert parallel.auto_processes(2, 12) == 2
    assert parallel.auto_processes(16, 12) == 2
    assert parallel.auto_processes(1, 12) == 1
    assert parallel.auto_processes(2, 1) == 1
    assert parallel.auto_processes(2, 12, "cuda") == 1
    assert TrainConfig(processes=3, batch_size=3).resolved_processes() == 3


TEXT = "the quick brown fox jumps over the lazy dog; " * 60


def trainer(tmp_path, name, **overrides):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    values = dict(data=str(corpus), out_dir=str(tmp_path / name), n_layer=1, n_head=2,
                  n_embd=16, block_size=16, batch_size=5, dropout=0.0, max_iters=12,
                  eval_interval=6, eval_iters=2, log_interval=4, warmup_iters=2,
                  lr_decay_iters=12, learning_rate=3e-3, dtype="float64",
                  gradient_accumulation_steps=2)
    values.update(overrides)
    lines = []
    return Trainer(TrainConfig(**values), log=lines.append), lines


def test_training_split_over_processes_follows_the_one_process_run(tmp_path):
    one, _ = trainer(tmp_path, "one", processes=1)
    two, lines = trainer(tmp_path, "two", processes=2)
    assert two.processes == 2
    history_one, history_two = one.run(), two.run()
    assert any("each batch split over 2 processes" in line for line in lines)
    assert two.parallel is None                 # run() stopped the workers
    for a, b in zip(history_one, history_two):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-9)
    for (k, p), (_, q) in zip(one.model.state_dict().items(), two.model.state_dict().items()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-7, atol=1e-10, err_msg=k)


def test_frozen_parameters_get_no_gradient():
    m = model()
    m.transformer.wpe.weight.requires_grad = False
    with DataParallel(m, 2) as dp:
        dp.forward_backward([batch(4)])
    assert m.transformer.wpe.weight.grad is None
    assert m.transformer.wte.weight.grad is not None


def test_statistics_see_the_summed_gradient(tmp_path):
    # --stats with the batch split: gradient norms are those of the whole batch.
    one, _ = trainer(tmp_path, "one", processes=1, stats=True, max_iters=5)
    two, _ = trainer(tmp_path, "two", processes=2, stats=True, max_iters=5)
    one.run()
    two.run()

    def grad_norms(t):
        with open(os.path.join(t.out_dir, "log.jsonl")) as f:
            records = [json.loads(line) for line in f]
        return [r["params"]["transformer.wte.weight"]["grad_norm"] for r in records
                if r.get("event") == "stats"]

    a, b = grad_norms(one), grad_norms(two)
    assert len(a) == len(b) >= 2
    assert b == pytest.approx(a, rel=1e-9)
