"""Task data at its edges: settings that leave a split empty, a negative seed, endings
that are not a list, files that are not UTF-8 or not JSON (each error names the file),
and the heads' losses on rows with no language-modelling target or no rows at all."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPTConfig
from tinygpt.cli import main as cli_main
from tinygpt.data.cloze import load_split, load_task, make_cloze
from tinygpt.model.heads import GPTForMultipleChoice

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cloze import play  # noqa: E402


@pytest.mark.parametrize("settings, words", [
    ({"n_context": 500}, "n_context=500"),
    ({"n_choices": 2_000_000}, "n_choices=2000000"),
])
def test_settings_that_leave_a_split_empty_are_refused(settings, words):
    with pytest.raises(ValueError, match="no examples") as info:
        make_cloze(play(), **settings)
    assert words in str(info.value)


@pytest.mark.parametrize("flag, value", [("--n_context", "500"), ("--choices", "2000000")])
def test_the_command_writes_no_empty_task(tmp_path, capsys, flag, value):
    text = tmp_path / "play.txt"
    text.write_text(play())
    out = tmp_path / "task"
    status = cli_main(["cloze", "--data", str(text), "--out_dir", str(out), flag, value])
    err = capsys.readouterr().err
    assert status == 1 and "no examples" in err and flag in err and err.count("\n") == 1
    assert not out.exists()


def test_a_negative_seed_names_the_flag(tmp_path, capsys):
    text = tmp_path / "play.txt"
    text.write_text(play())
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        make_cloze(play(), seed=-1)
    assert cli_main(["cloze", "--data", str(text), "--out_dir", str(tmp_path / "t"),
                     "--seed", "-1"]) == 1
    assert "--seed" in capsys.readouterr().err


def test_endings_must_be_a_list(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"story": "s", "endings": "ab", "label": 0}) + "\n")
    with pytest.raises(ValueError, match="line 1: 'endings' must be a list of strings"):
        load_split(path)


def good_task(folder):
    folder.mkdir()
    for split in ("train", "val", "test"):
        (folder / f"{split}.jsonl").write_text(
            json.dumps({"story": "s", "endings": ["a", "b"], "label": 0}) + "\n")
    return folder


@pytest.mark.parametrize("name", ["val.jsonl", "pretrain.txt", "task.json"])
def test_a_file_that_is_not_utf8_is_named(tmp_path, name):
    folder = good_task(tmp_path / "task")
    (folder / name).write_bytes(b"\xff\xfe not text \x80")
    with pytest.raises(ValueError, match=str(folder / name)):
        load_task(folder)


def test_a_task_json_that_is_not_json_is_named(tmp_path):
    folder = good_task(tmp_path / "task")
    (folder / "task.json").write_text("{not json")
    with pytest.raises(ValueError, match=str(folder / "task.json")):
        load_task(folder)


def model():
    tg.manual_seed(0)
    return GPTForMultipleChoice(GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2,
                                          n_embd=8))


def test_rows_with_one_real_token_give_a_finite_loss():
    ids = np.arange(2 * 2 * 4, dtype=np.int64).reshape(2, 2, 4) % 10
    mask = np.zeros((2, 2, 4), dtype=np.int64)
    mask[..., 0] = 1
    labels = tg.tensor(np.array([0, 1]))
    m = model().eval()
    out = m(tg.tensor(ids), labels=labels, attention_mask=tg.tensor(mask), lm_coef=0.5)
    clf = m(tg.tensor(ids), labels=labels, attention_mask=tg.tensor(mask), lm_coef=0.0)
    assert np.isfinite(out.loss.item()) and out.lm_loss.item() == 0.0
    assert out.loss.item() == clf.loss.item()
    out.loss.backward()
    assert all(np.isfinite(p.grad.numpy()).all() for p in m.parameters() if p.grad is not None)
    # One row with targets among them: L1 is the mean over that row's targets only.
    mask[0, 0] = 1
    full = m(tg.tensor(ids[:1, :1]), labels=tg.tensor(np.array([0])), lm_coef=1.0)
    out = m(tg.tensor(ids), labels=labels, attention_mask=tg.tensor(mask), lm_coef=0.5)
    np.testing.assert_allclose(out.lm_loss.item(), full.lm_loss.item(), rtol=1e-6)


def test_an_empty_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="no rows"):
        model()(tg.tensor(np.zeros((0, 2, 4), dtype=np.int64)),
                labels=tg.tensor(np.zeros(0, dtype=np.int64)))
