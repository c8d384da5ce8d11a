"""`python -m tinygpt tokenizer train | encode | decode`, run in-process through
`tinygpt.cli.main`."""

import json

import pytest

from tinygpt.cli import main
from tinygpt.data import BPETokenizer

TEXT = ("First Citizen: Before we proceed any further, hear me speak. We're all resolved "
        "rather to die than to famish? It's 1234 times; café, naïve 日本語 😀\n\n") * 20


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_train_saves_a_tokenizer_that_train_reads(tmp_path, corpus, capsys):
    output = tmp_path / "sub" / "bpe.json"
    assert main(["tokenizer", "train", "--input", str(corpus), "--vocab_size", "300",
                 "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "training a byte-level BPE of 300 tokens" in printed
    assert "learned 44 merges" in printed and f"saved to {output}" in printed
    tok = BPETokenizer.load(output)
    assert tok.vocab_size == 301 and tok.eot_token == 300
    # The same merges as the library's own training on the same text.
    assert tok.to_dict() == BPETokenizer.train(TEXT, 300).to_dict()
    assert tok.decode(tok.encode(TEXT)) == TEXT


def test_train_refuses_to_overwrite(tmp_path, corpus, capsys):
    output = tmp_path / "bpe.json"
    output.write_text("mine")
    args = ["tokenizer", "train", "--input", str(corpus), "--vocab_size", "280",
            "--output", str(output)]
    assert main(args) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert output.read_text() == "mine"
    assert main(args + ["--overwrite"]) == 0
    assert BPETokenizer.load(output).vocab_size == 281


@pytest.mark.parametrize("args, message", [
    (["--vocab_size", "100"], "at least 256"),
    (["--input", "missing.txt"], "no input file"),
])
def test_train_bad_input(tmp_path, corpus, capsys, args, message):
    base = {"--input": str(corpus), "--vocab_size": "300", "--output": str(tmp_path / "o.json")}
    base.update(dict(zip(args[::2], args[1::2])))
    assert main(["tokenizer", "train", *[x for kv in base.items() for x in kv]]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_encode_and_decode(tmp_path, capsys):
    tok = BPETokenizer.train(TEXT, 300)
    path = tmp_path / "bpe.json"
    tok.save(path)
    assert main(["tokenizer", "encode", "--tokenizer", str(path), "--text", "We're all café"]) == 0
    ids = [int(i) for i in capsys.readouterr().out.split()]
    assert ids == tok.encode("We're all café")
    assert main(["tokenizer", "decode", "--tokenizer", str(path), "--ids",
                 " ".join(map(str, ids[:2])), ",".join(map(str, ids[2:]))]) == 0
    assert capsys.readouterr().out == "We're all café\n"

    # Special tokens: refused by default, encoded as their id when allowed.
    assert main(["tokenizer", "encode", "--tokenizer", str(path), "--text", "a<|endoftext|>"]) == 1
    assert "special token" in capsys.readouterr().err
    assert main(["tokenizer", "encode", "--tokenizer", str(path), "--text", "a<|endoftext|>",
                 "--allow_special"]) == 0
    assert capsys.readouterr().out.split()[-1] == "300"

    text_file = tmp_path / "t.txt"
    text_file.write_text("hear me speak", encoding="utf-8")
    assert main(["tokenizer", "encode", "--tokenizer", str(path), "--input", str(text_file)]) == 0
    assert [int(i) for i in capsys.readouterr().out.split()] == tok.encode("hear me speak")


def test_encode_decode_errors(tmp_path, capsys):
    tok = BPETokenizer.train(TEXT, 300)
    path = tmp_path / "bpe.json"
    tok.save(path)
    assert main(["tokenizer", "decode", "--tokenizer", str(path), "--ids", "5", "x"]) == 1
    assert "'x' is not an integer" in capsys.readouterr().err
    assert main(["tokenizer", "decode", "--tokenizer", str(path), "--ids", "999"]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["tokenizer", "encode", "--tokenizer", str(tmp_path / "nope.json"),
                 "--text", "a"]) == 1
    assert "no tokenizer file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    assert main(["tokenizer", "encode", "--tokenizer", str(tmp_path / "bad.json"),
                 "--text", "a"]) == 1
    assert "not a tinygpt BPE tokenizer" in capsys.readouterr().err
    assert main(["tokenizer", "encode", "--tokenizer", str(tmp_path), "--text", "a"]) == 1
    assert "holds no tokenizer" in capsys.readouterr().err


def test_gpt2_and_model_folders(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("TINYGPT_GPT2_VOCAB", str(shared_data / "gpt2.tiktoken"))
    assert main(["tokenizer", "encode", "--tokenizer", "gpt2", "--text", "Hello world"]) == 0
    assert capsys.readouterr().out.split() == ["15496", "995"]
    # A model folder's vocab.json + merges.txt (here: derived from a saved tokenizer).
    from tinygpt.data.tokenizers import hf_tokenizer_files
    vocab, merges = hf_tokenizer_files(BPETokenizer.train(TEXT, 300))
    (tmp_path / "vocab.json").write_text(vocab, encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges, encoding="utf-8")
    assert main(["tokenizer", "decode", "--tokenizer", str(tmp_path), "--ids", "70", "300"]) == 0
    assert capsys.readouterr().out == "F<|endoftext|>\n"
