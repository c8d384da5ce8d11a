"""The chat at its edges: the reply length defaults to what fits the model, a stop string
of several characters is never partly printed, commands are read case-insensitively with
trailing words (and unknown ones never reach the model), CRLF input, and fixed text
outside the vocabulary refused at the start."""

import io

import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.cli import main as cli_main
from tinygpt.data import CharTokenizer
from tinygpt.model import generation as gen_module
from tinygpt.model.chat import Conversation

TEXT = "abcdefghijklmnopqrstuvwxyz :\n?!."


def parts(block_size=40):
    tokenizer = CharTokenizer.from_text(TEXT)
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=tokenizer.vocab_size, n_layer=1,
                          n_head=2, n_embd=16))
    return model, tokenizer


def scripted(monkeypatch, tokenizer, text):
    """The sampler returns the tokens of `text`, one a step, then 'z' forever."""
    ids = iter(tokenizer.encode(text))
    real = gen_module.Sampler.__call__

    def call(self, logits):
        out = real(self, logits)
        out[...] = next(ids, tokenizer.encode("z")[0])
        return out
    monkeypatch.setattr(gen_module.Sampler, "__call__", call)


def test_the_default_reply_length_fits_the_model():
    model, tokenizer = parts(block_size=16)
    chat = Conversation(model, tokenizer)
    assert chat.max_new_tokens == 8
    assert Conversation(*parts(block_size=1024)).max_new_tokens == 200
    assert "".join(chat.reply("hi")) is not None


@pytest.mark.parametrize("stop, script, limit, expected", [
    ("\"H", "ab\"Hxx", 10, "ab"),         # the stop string's first character held back
    ("xyz", "abxyqz", 5, "abxyq"),         # held back, then let go: not a stop after all
    ("xyz", "abxy", 4, "abxy"),            # held back at the length limit: let go
    ("bxq", "abxq", 4, "a"),
])
def test_a_stop_string_is_never_partly_printed(monkeypatch, stop, script, limit, expected):
    tokenizer = CharTokenizer.from_text(TEXT + "\"H")
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=40, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2,
                          n_embd=16))
    scripted(monkeypatch, tokenizer, script)
    chat = Conversation(model, tokenizer, stop=(stop,), max_new_tokens=limit)
    pieces = list(chat.reply("q"))
    assert "".join(pieces) == expected and all(pieces)
    # no piece ends in the middle of a stop string that then came
    shown = ""
    for piece in pieces:
        shown += piece
        assert not any(shown.endswith(stop[:k]) for k in range(1, len(stop))) \
            or shown == expected


def test_fixed_text_outside_the_vocabulary_is_refused_at_the_start():
    model, tokenizer = parts()
    for options, name in [({"user_prefix": "User: "}, "user_prefix"),
                          ({"bot_prefix": "\nBot>"}, "bot_prefix"), ({"stop": ("@@",)}, "stop")]:
        with pytest.raises(ValueError, match=name) as info:
            Conversation(model, tokenizer, **options)
        assert "'U'" in str(info.value) or "'B'" in str(info.value) or "'@'" in str(info.value)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("chat-run")
    from tinygpt.train import train
    train(out_dir=str(out), max_iters=2, eval_interval=2, eval_iters=1, n_layer=1, n_head=2,
          n_embd=16, block_size=16, batch_size=2, log=lambda *a: None)
    return out


def chat(monkeypatch, capsys, run_dir, text, *extra):
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    status = cli_main(["chat", "--out_dir", str(run_dir), "--greedy", *extra])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_default_model_chats_with_the_default_reply_length(monkeypatch, capsys, run_dir):
    status, out, err = chat(monkeypatch, capsys, run_dir, "Hi\n")
    assert status == 0 and "error" not in err, err


def test_commands_any_case_with_trailing_words(monkeypatch, capsys, run_dir):
    status, out, err = chat(monkeypatch, capsys, run_dir,
                            "/HELP me\n/Reset now\n/x\n/exit now\nnever read\n", "--stats")
    assert status == 0, err
    assert "/reset" in err and "(conversation reset)" in err
    assert "unknown command /x" in err
    assert "(ran " not in err and out == ""           # no line went to the model


def test_crlf_lines_are_read_as_lines(monkeypatch, capsys, run_dir):
    status, out, err = chat(monkeypatch, capsys, run_dir, "Hi\r\nthe\r\n/exit\r\n", "--stats",
                            "--max_new_tokens", "3")
    assert status == 0 and "error" not in err and err.count("(ran ") == 2, err


def test_a_prefix_outside_the_vocabulary_is_one_error_at_the_start(monkeypatch, capsys,
                                                                   run_dir):
    status, out, err = chat(monkeypatch, capsys, run_dir, "Hi\nthe\n",
                            "--user_prefix", "\u00a7 ")
    assert status == 1 and "user_prefix" in err and err.count("\n") == 1 and out == ""
