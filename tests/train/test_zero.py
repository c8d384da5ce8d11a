"""ZeRO stage 1 over MPI ranks (real `mpiexec -n 2` runs of `train --zero 1`): equal to plain
data parallelism after 20 float64 steps, optimizer state per rank half of the whole,
checkpoints that resume at another world size (2 -> 1, 1 -> 2) and with or without ZeRO
(a failing rank is named on every rank: tests/train/test_distributed.py, zero=1)."""

import re
import shutil

import numpy as np

from mpi_runs import TINY, corpus, needs_mpi, train

from tinygpt.model.checkpoint import load_checkpoint
from tinygpt.train import TrainConfig, Trainer

pytestmark = needs_mpi


def arrays(path):
    """Every array of a checkpoint (the model's and the optimizer's) and its meta."""
    return load_checkpoint(path)


def assert_same(a, b, tol=0.0):
    assert a.keys() == b.keys()
    assert any(k.startswith("optim/") for k in a)
    for key in a:
        if tol == 0.0:
            assert np.array_equal(a[key], b[key]), key
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=tol, atol=tol, err_msg=key)


def test_zero_equals_data_parallel_after_20_float64_steps(tmp_path):
    # Biases (an undecayed group beside the decayed one), a clip that binds, dropout.
    common = ["--data", corpus(tmp_path), *TINY, "--batch_size", 3, "--dtype", "float64",
              "--max_iters", 20, "--eval_interval", 10, "--log_interval", 5, "--bias", "true",
              "--learning_rate", "3e-2", "--grad_clip", "0.1", "--dropout", "0.1"]
    zero = train(tmp_path, 2, *common, "--out_dir", "zero", "--zero", 1)
    assert zero.returncode == 0, zero.stderr
    plain = train(tmp_path, 2, *common, "--out_dir", "plain")
    assert plain.returncode == 0, plain.stderr
    a, meta = arrays(tmp_path / "zero" / "ckpt.npz")
    b, plain_meta = arrays(tmp_path / "plain" / "ckpt.npz")
    assert meta["iter_num"] == 20 and meta["world_size"] == 2
    assert_same(a, b, 1e-10)
    for mine, theirs in zip(meta["history"], plain_meta["history"]):
        assert abs(mine["val_loss"] - theirs["val_loss"]) < 1e-10
    assert meta["history"][-1]["val_loss"] < meta["history"][0]["val_loss"] - 0.5  # trained

    # The optimizer state each rank holds: half of m and v (one process's AdamW holds all).
    whole = sum(v.nbytes for k, v in b.items() if k.startswith("optim/") and v.ndim > 0)
    n = sum(v.size for k, v in b.items() if k.startswith("optim/") and "exp_avg_sq" in k)
    line = re.search(r"optimizer state per rank: ([\d,]+), ([\d,]+) bytes \(AdamW's m and v "
                     r"of the whole run: ([\d,]+)\)", zero.stdout)
    assert line, zero.stdout
    per_rank = [int(x.replace(",", "")) for x in line.groups()]
    assert per_rank[2] == whole == 2 * 8 * n
    assert per_rank[0] == per_rank[1] == 2 * 8 * -(-n // 2)
    assert "ZeRO" not in plain.stdout


def test_zero_checkpoints_resume_at_another_world_size(tmp_path):
    # Without clipping, ZeRO's arithmetic is plain data parallelism's element for element:
    # every comparison below is bit for bit (float32).
    data = corpus(tmp_path)
    common = ["--data", data, *TINY, "--batch_size", 3, "--eval_interval", 4,
              "--log_interval", 4, "--grad_clip", 0]
    for name, extra in (("zero", ["--zero", 1]), ("plain", [])):
        run = train(tmp_path, 2, *common, "--out_dir", name, "--max_iters", 4, *extra)
        assert run.returncode == 0, run.stderr
        shutil.copytree(tmp_path / name, tmp_path / f"{name}-alone")
    assert_same(arrays(tmp_path / "zero" / "ckpt.npz")[0],
                arrays(tmp_path / "plain" / "ckpt.npz")[0])
    # 2 -> 2: a ZeRO run resumed with ZeRO continues as plain data parallelism does.
    for name, extra in (("zero", ["--zero", 1]), ("plain", [])):
        run = train(tmp_path, 2, "--out_dir", name, "--resume", "--max_iters", 8, *extra)
        assert run.returncode == 0, run.stderr
        assert "resuming from" in run.stdout
    assert_same(arrays(tmp_path / "zero" / "ckpt.npz")[0],
                arrays(tmp_path / "plain" / "ckpt.npz")[0])
    # 2 -> 1: one process resumes the ZeRO run (no --zero: the checkpoint is AdamW's).
    for name in ("zero-alone", "plain-alone"):
        Trainer(TrainConfig(out_dir=str(tmp_path / name), resume=True, max_iters=8),
                log=lambda line: None).run()
    a, meta = arrays(tmp_path / "zero-alone" / "ckpt.npz")
    assert meta["iter_num"] == 8 and meta["world_size"] == 1
    assert_same(a, arrays(tmp_path / "plain-alone" / "ckpt.npz")[0])
    # 1 -> 2: two ZeRO ranks resume a one-process run.
    one = TrainConfig(data=data, out_dir=str(tmp_path / "one"), n_layer=1, n_head=2,
                      n_embd=16, block_size=16, eval_iters=4, warmup_iters=2,
                      learning_rate=3e-3, batch_size=3, eval_interval=4, log_interval=4,
                      grad_clip=0.0, max_iters=4, processes=1)
    Trainer(one, log=lambda line: None).run()
    shutil.copytree(tmp_path / "one", tmp_path / "one-plain")
    for name, extra in (("one", ["--zero", 1]), ("one-plain", [])):
        run = train(tmp_path, 2, "--out_dir", name, "--resume", "--max_iters", 8, *extra)
        assert run.returncode == 0, run.stderr
    a, meta = arrays(tmp_path / "one" / "ckpt.npz")
    assert meta["iter_num"] == 8 and meta["world_size"] == 2
    assert_same(a, arrays(tmp_path / "one-plain" / "ckpt.npz")[0])
