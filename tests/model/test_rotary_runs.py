"""Rotary models through the trainer and the commands: `train --position rotary` saves
and resumes bit for bit, `sample` and `chat` run a rotary model on a longer context with
--block_size and --rope_scale, and refuse a longer context for learned positions."""

import io
from types import SimpleNamespace

import numpy as np
import pytest

from tinygpt.cli import main as cli_main
from tinygpt.cli import chat
from tinygpt.train import TrainConfig, Trainer, load_for_inference

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife. ") * 40


def tiny(tmp_path, out, **overrides):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    values = dict(data=str(corpus), out_dir=str(tmp_path / out), n_layer=1, n_head=2,
                  n_embd=16, block_size=16, batch_size=4, max_iters=8, eval_interval=4,
                  eval_iters=1, log_interval=4, warmup_iters=2, lr_decay_iters=8,
                  learning_rate=3e-3, processes=1, position="rotary", rope_base=500.0)
    values.update(overrides)
    return TrainConfig(**values)


def quiet(_line):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    Trainer(tiny(tmp, "rotary"), log=quiet).run()
    Trainer(tiny(tmp, "learned", position="learned"), log=quiet).run()
    return tmp


def test_a_rotary_run_resumes_bit_for_bit(tmp_path):
    straight = Trainer(tiny(tmp_path, "a"), log=quiet)
    straight.run()
    Trainer(tiny(tmp_path, "b", max_iters=4), log=quiet).run()
    resumed = Trainer(tiny(tmp_path, "b", resume=True), log=quiet)
    assert resumed.iter_num == 4
    assert (resumed.model.config.position, resumed.model.config.rope_base) == ("rotary", 500.0)
    resumed.run()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert "transformer.wpe.weight" not in a and a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key].numpy(), b[key].numpy()), key
    with pytest.raises(ValueError, match="rope_base"):
        Trainer(tiny(tmp_path, "b", resume=True, rope_base=100.0, max_iters=12), log=quiet)


def test_sample_runs_a_rotary_model_on_four_times_its_context(runs, capsys):
    code = cli_main(["sample", "--out_dir", str(runs / "rotary"), "--block_size", "64",
                     "--rope_scale", "4", "--num_tokens", "70", "--greedy", "--prompt", "It"])
    out = capsys.readouterr().out
    assert code == 0 and len(out) >= 72
    model, _ = load_for_inference(str(runs / "rotary"))
    assert (model.config.block_size, model.config.rope_scale) == (16, 1.0)   # the file's


def test_sample_refuses_a_longer_context_for_learned_positions(runs, capsys):
    code = cli_main(["sample", "--out_dir", str(runs / "learned"), "--block_size", "32",
                     "--num_tokens", "5"])
    err = capsys.readouterr().err
    assert code == 1
    assert "learned position embeddings exist only for the 16 trained positions" in err
    code = cli_main(["sample", "--out_dir", str(runs / "learned"), "--rope_scale", "2"])
    assert code == 1 and "rope_scale applies to rotary positions" in capsys.readouterr().err


def test_chat_runs_a_rotary_model_on_a_longer_context(runs, capsys):
    args = SimpleNamespace(out_dir=str(runs / "rotary"), init_from="", device="cpu",
                           block_size=48, rope_scale=3.0, user_prefix="", bot_prefix=" ",
                           stop="ItItIt", max_new_tokens=30, temperature=0.8, top_k=None,
                           top_p=None, greedy=True, seed=1, stats=False,
                           reference_ops=None, quantize=None)
    out = io.StringIO()
    # A turn of 5 + 30 tokens fits in 48 positions, not in the trained 16; the stop string
    # (of the vocabulary, never in the text) does not end the reply early.
    assert chat.run(args, stdin=io.StringIO("It is\n"), out=out) == 0
    assert capsys.readouterr().err == "" and len(out.getvalue()) == 31   # reply + newline
    args.block_size, args.rope_scale = None, None
    with pytest.raises(ValueError, match="below the model's block_size"):
        chat.run(args, stdin=io.StringIO("It is\n"), out=io.StringIO())


def test_the_context_benchmark_prints_its_table(tmp_path, capsys):
    from bench.context import main
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    rows = main(["--data", str(corpus), "--block_size", "8", "--max_iters", "3",
                 "--finetune_iters", "2", "--n_layer", "1", "--n_head", "2", "--n_embd", "8",
                 "--batch_size", "2", "--eval_iters", "1"])
    out = capsys.readouterr().out
    assert rows["learned (wpe)"][1:] == ["refused", "refused"]
    assert all(len(cells) == 3 for cells in rows.values()) and len(rows) == 4
    assert "| T = 8 | 2T = 16 | 4T = 32 |" in out
    # Without interpolation and with it, the rotary model is the same at T.
    assert rows["rotary, no interpolation"][0] == rows["rotary, interpolation (scale L/T)"][0]
