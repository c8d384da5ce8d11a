"""--reference_ops: a run on the reference code of every op and of AdamW, in this process
and in the forked data-parallel workers, recorded in the run's config, said in the log,
and with the default run's losses to float rounding."""

import json
import os

import numpy as np
import pytest
from test_trainer import corpus, quiet, tiny  # noqa: F401  (corpus: a fixture)

from tinygpt.autograd import reference_ops_enabled
from tinygpt.autograd.function import OPS
from tinygpt.model.checkpoint import load_checkpoint
from tinygpt.train import Trainer


def _losses(out_dir):
    with open(os.path.join(out_dir, "log.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return [r.get("loss", r.get("val_loss")) for r in records if r["event"] in ("train", "eval")]


def test_a_run_on_the_references_follows_the_default_run(corpus, tmp_path):
    lines = []
    Trainer(tiny(corpus, tmp_path / "fast", processes=1), log=quiet).run()
    Trainer(tiny(corpus, tmp_path / "ref", processes=1, reference_ops=True),
            log=lines.append).run()
    assert not reference_ops_enabled()          # the process's ops given back at the end
    assert lines[1].startswith("ops: reference (tinygpt/autograd/ops, optimizer: AdamW")
    fast, ref = _losses(tmp_path / "fast"), _losses(tmp_path / "ref")
    assert len(fast) == len(ref) > 5 and fast != ref    # other code, other roundings
    np.testing.assert_allclose(ref, fast, rtol=1e-5)
    _, meta = load_checkpoint(tmp_path / "ref" / "ckpt.npz")
    assert meta["train_config"]["reference_ops"] is True


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("reference", [True, False])
def test_the_forked_workers_run_the_references_too(corpus, tmp_path, monkeypatch, reference):
    """Every fast CPU kernel raises: a run split over two processes gets through on the
    references only (without the switch, the workers' first fast kernel fails the run)."""
    def refuse(*args, **kwargs):
        raise RuntimeError("a fast kernel ran")

    for op in OPS.values():
        kernel = op.kernels.get("cpu")
        if kernel is not None and kernel is not op:
            monkeypatch.setattr(kernel, "forward", refuse)
    trainer = Trainer(tiny(corpus, tmp_path, processes=2, max_iters=4, eval_interval=4,
                           reference_ops=reference), log=quiet)
    assert trainer.processes == 2
    if reference:
        assert len(trainer.run()) == 2
    else:
        with pytest.raises(Exception, match="a fast kernel ran"):
            trainer.run()
    assert not reference_ops_enabled()


def test_train_and_sample_take_the_switch_on_the_command_line(corpus, tmp_path, capsys):
    from tinygpt.autograd import use_reference_ops
    from tinygpt.cli import main as cli_main
    out = str(tmp_path / "run")
    with use_reference_ops(False):          # the process's ops restored afterwards
        assert cli_main(["train", "--data", corpus, "--out_dir", out, "--n_layer", "1",
                         "--n_head", "2", "--n_embd", "16", "--block_size", "16",
                         "--batch_size", "4", "--max_iters", "4", "--eval_interval", "4",
                         "--eval_iters", "1", "--processes", "1",
                         "--reference_ops", "true"]) == 0
        assert "ops: reference" in capsys.readouterr().out
    _, meta = load_checkpoint(tmp_path / "run" / "ckpt.npz")
    assert meta["train_config"]["reference_ops"] is True
    texts = []
    for flag in ("false", "true"):
        with use_reference_ops(False):
            assert cli_main(["sample", "--out_dir", out, "--prompt", "It is", "--greedy",
                             "--num_tokens", "12", "--reference_ops", flag]) == 0
        captured = capsys.readouterr()
        assert captured.err.startswith("ops: reference" if flag == "true" else "ops: fast")
        texts.append(captured.out)
    assert texts[0] == texts[1] and texts[0].startswith("It is")


def test_a_resumed_run_keeps_the_switch_of_its_checkpoint(corpus, tmp_path):
    Trainer(tiny(corpus, tmp_path, processes=1, max_iters=4, eval_interval=4,
                 reference_ops=True), log=quiet).run()
    lines = []
    resumed = Trainer(tiny(corpus, tmp_path, processes=1, max_iters=8, eval_interval=4,
                           lr_decay_iters=8, resume=True), log=lines.append,
                      given={"max_iters", "lr_decay_iters", "resume", "out_dir", "data"})
    assert resumed.config.reference_ops is True and reference_ops_enabled()
    resumed.run()
    assert not reference_ops_enabled()
    assert any(line.startswith("ops: reference") for line in lines)
