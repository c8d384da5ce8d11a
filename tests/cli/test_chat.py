"""The chat: one KV cache across turns (each turn runs only its own tokens), the oldest
turns dropped past block_size with what is computed equal to a fresh run on the kept text,
and `python -m tinygpt chat` as a real process on scripted input: replies, /reset, /exit,
end of input and Ctrl-C."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tinygpt as tg
from conftest import REPO
from tinygpt import GPT, GPTConfig
from tinygpt.data import CharTokenizer
from tinygpt.model import generation as gpt_module
from tinygpt.model.chat import Conversation

TEXT = "abcdefghijklmnopqrstuvwxyz :\n?!."


@pytest.fixture
def chat_parts():
    tokenizer = CharTokenizer.from_text(TEXT)
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=40, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2,
                          n_embd=16, attn_window=6, attn_pattern="alternate"))
    return model.to(tg.float64), tokenizer


def recording(monkeypatch):
    """The logits every sampling step sees, from now on."""
    seen, real = [], gpt_module.Sampler.__call__
    monkeypatch.setattr(gpt_module.Sampler, "__call__",
                        lambda self, logits: seen.append(np.array(logits)) or real(self, logits))
    return seen


def test_each_turn_runs_only_its_own_tokens(chat_parts):
    model, tokenizer = chat_parts
    chat = Conversation(model, tokenizer, user_prefix="u: ", bot_prefix="\nb:", stop=("!",),
                        max_new_tokens=6, seed=3)
    unrun = 0
    for text in ["hi", "what", "ok"]:
        before, turns_before = chat.tokens_run, len(chat.history())
        "".join(chat.reply(text))
        prompt = len("u: " + text + "\nb:")
        reply = len(chat.history()) - turns_before - prompt
        # the previous reply's last token, this prompt, and every reply token but the last
        assert chat.tokens_run - before == unrun + prompt + reply - 1
        unrun = 1


def test_what_the_chat_computes_equals_a_fresh_run_on_the_kept_text(chat_parts, monkeypatch):
    # Every sampling step, before and after the oldest turns are dropped (block_size 40),
    # sees the logits a full forward of the kept turns and this turn so far gives.
    model, tokenizer = chat_parts
    seen = recording(monkeypatch)
    chat = Conversation(model, tokenizer, user_prefix="u: ", bot_prefix="\nb:", stop=(),
                        max_new_tokens=5, do_sample=False)
    dropped = False
    for text in ["hello there", "how are you", "fine thanks", "and you", "bye now"]:
        kept_before = len(chat.turns)
        start = len(seen)
        "".join(chat.reply(text))
        dropped |= len(chat.turns) <= kept_before
        turn = chat.turns[-1]
        earlier = [t for previous in chat.turns[:-1] for t in previous]
        prompt_len = len(tokenizer.encode("u: " + text + "\nb:"))
        for i, logits in enumerate(seen[start:]):
            tokens = earlier + turn[:prompt_len + i]
            full = model(np.array([tokens]))[0].numpy()[:, -1]
            np.testing.assert_allclose(logits, full, rtol=1e-10, atol=1e-10)
    assert dropped, "no turn was dropped: the window was never passed"
    assert len(chat.history()) <= 40


def test_a_turn_too_long_for_the_context_is_refused_before_anything_runs(chat_parts):
    model, tokenizer = chat_parts
    chat = Conversation(model, tokenizer, max_new_tokens=10)
    with pytest.raises(ValueError, match="would not fit in the model's block_size 40"):
        list(chat.reply("a" * 35))
    assert chat.tokens_run == 0 and chat.turns == []
    with pytest.raises(ValueError, match=r"max_new_tokens \(below the model.s block_size\) "
                                         r"must be an int in \[1, 39\]"):
        Conversation(model, tokenizer, max_new_tokens=40)


def test_reset_forgets_the_conversation(chat_parts):
    model, tokenizer = chat_parts
    chat = Conversation(model, tokenizer, max_new_tokens=3, do_sample=False)
    first = "".join(chat.reply("hi"))
    "".join(chat.reply("again"))
    chat.reset()
    assert chat.history() == []
    assert "".join(chat.reply("hi")) == first


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("chat-run")
    from tinygpt.train import train
    train(out_dir=str(out), max_iters=2, eval_interval=2, eval_iters=1, n_layer=1, n_head=2,
          n_embd=16, block_size=32, batch_size=2, log=lambda *a: None)
    return out


def chat_process(run_dir, *extra):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tinygpt", "chat", "--out_dir", str(run_dir),
                             "--greedy", "--max_new_tokens", "4", "--stats", *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))


def test_the_command_answers_each_line_and_ends_cleanly_at_end_of_input(run_dir):
    proc = chat_process(run_dir)
    out, err = proc.communicate("Hello\nWhat\n/reset\nHello\n", timeout=120)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) >= 3 and "Traceback" not in err
    assert err.count("(ran ") == 3 and "(conversation reset)" in err
    # after /reset the same line gets the same (greedy) reply as the first time
    first, last = lines[0], lines[-1]
    assert first == last


def test_exit_command_and_ctrl_c(run_dir):
    proc = chat_process(run_dir)
    out, err = proc.communicate("Hi\n/exit\nnever read\n", timeout=120)
    assert proc.returncode == 0 and err.count("(ran ") == 1
    proc = chat_process(run_dir)
    proc.stdin.write("Hi\n")
    proc.stdin.flush()
    deadline = time.time() + 60
    while "(ran " not in proc.stderr.readline() and time.time() < deadline:
        pass                                         # until the first reply is done
    proc.send_signal(signal.SIGINT)                  # waiting for the next line
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err


def test_a_missing_run_is_one_line_on_stderr(tmp_path):
    proc = chat_process(tmp_path / "nothing-here")
    out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 1 and "error: " in err and len(err.splitlines()) == 1
