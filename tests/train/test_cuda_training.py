"""Training and generation on CUDA (the CuPy stand-in without a GPU): the host never waits
for the GPU inside a training step (the loss is read on logging iterations only; ids are
checked once on the host; clipping stays on the device), generation reads one array back
per token, a resumed run continues the GPU's dropout stream exactly, and a non-finite loss
is still caught before a checkpoint is written."""

import numpy as np
import pytest
import test_trainer
from test_trainer import corpus, quiet  # noqa: F401  (corpus: a fixture)

import tinygpt as tg
from tinygpt.autograd.transfers import count_transfers
from tinygpt.model.checkpoint import load_checkpoint
from tinygpt.train import Trainer, TrainingError

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_device")]


def tiny(corpus, out_dir, **overrides):
    """test_trainer's tiny run on CUDA: 12 iterations, evaluated every 6, logged every 4."""
    values = dict(max_iters=12, eval_interval=6, log_interval=4, lr_decay_iters=12,
                  device="cuda")
    return test_trainer.tiny(corpus, out_dir, **{**values, **overrides})


def test_a_training_step_makes_no_transfer(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, tmp_path, gradient_accumulation_steps=2), log=quiet)
    for _ in range(3):
        with count_transfers() as counted:
            loss, _ = trainer.step()
            trainer.iter_num += 1
        assert counted.total == 0, counted.report()
    assert loss.device == "cuda" and np.isfinite(float(loss))


def test_a_run_reads_the_loss_once_per_logged_iteration(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, tmp_path, save_checkpoints=False), log=quiet)
    trainer.evaluate = lambda: {"train": 1.0, "val": 1.0}     # count the training alone
    with count_transfers() as counted:
        trainer.run()
    by_function = {}
    for line, n in counted.by_line.items():
        assert line.startswith("tinygpt/train/metrics.py:"), counted.report()
        function = line.rsplit("(", 1)[1].rstrip(")")
        by_function[function] = by_function.get(function, 0) + n
    # Logged: iterations 0, 4, 8 and the last, 11. Before the evaluation at 6, iteration
    # 5's loss is still unread: one more read. At 12, none is.
    assert by_function == {"read_loss": 4, "check_unread": 1}, counted.report()


def test_resume_continues_the_gpu_dropout_stream_exactly(corpus, tmp_path):
    straight = Trainer(tiny(corpus, tmp_path / "a"), log=quiet)
    straight.run()
    Trainer(tiny(corpus, tmp_path / "b", max_iters=6), log=quiet).run()
    tg.manual_seed(2024)            # as in a new process: the GPU's stream starts elsewhere
    resumed = Trainer(tiny(corpus, tmp_path / "b", resume=True), log=quiet)
    assert resumed.iter_num == 6
    resumed.run()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)
    _, meta = load_checkpoint(tmp_path / "b" / "ckpt.npz")
    assert meta["cuda_rng"]["bit_generator"] == "SplitMix64"


def test_a_non_finite_loss_is_caught_before_the_next_checkpoint(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, tmp_path, max_iters=20, eval_interval=5, log_interval=5),
                      log=quiet)
    forward = trainer.model.forward

    def poisoned(idx, targets=None, **kw):
        logits, loss = forward(idx, targets, **kw)
        if trainer.model.training and trainer.iter_num == 12:
            loss = loss * float("nan")
        return logits, loss

    trainer.model.forward = poisoned
    with pytest.raises(TrainingError, match="iterations 11-14"):
        trainer.run()
    _, meta = load_checkpoint(tmp_path / "ckpt.npz")
    assert meta["iter_num"] == 10       # the evaluation at 15 found the NaN and wrote nothing


def test_token_ids_outside_the_vocabulary_are_named_before_training(tmp_path):
    from tinygpt.data import BatchSampler
    data = np.array([1, 2, 3, 70, 4, 5, 6, 7, 8, 9], dtype=np.int64)
    with pytest.raises(ValueError, match=r"token id 70 at position 3.*\[0, 64\]"):
        BatchSampler(data, 4, 2, device="cuda", vocab_size=65)
    BatchSampler(data, 4, 2, device="cuda", vocab_size=71)


def test_generation_reads_one_array_per_token(corpus, tmp_path):
    trainer = Trainer(tiny(corpus, tmp_path, max_iters=0), log=quiet)
    model = trainer.model
    prompt = tg.tensor([[1, 2, 3], [4, 5, 6]], device="cuda")
    for kwargs in (dict(do_sample=False), dict(top_k=5, top_p=0.9, seed=1)):
        with count_transfers() as counted:
            out = model.generate(prompt, 6, **kwargs)
        assert counted.total <= 6, counted.report()
        assert out.device == "cuda" and out.shape == (2, 9)
