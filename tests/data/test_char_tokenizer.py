"""CharTokenizer: the sorted vocabulary, round trips, unseen characters and bad ids named,
saving with a checkpoint (JSON), the vectorised encoder agreeing with the plain one."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygpt as tg
from tinygpt.data import CharTokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


def test_vocabulary_is_the_sorted_set_of_characters():
    tok = CharTokenizer.from_text(TEXT)
    assert tok.chars == sorted(set(TEXT))
    assert tok.vocab_size == len(set(TEXT)) == len(tok)
    ids = tok.encode(TEXT)
    assert [tok.chars[i] for i in ids] == list(TEXT)
    # Ids follow code point order: sorting the text sorts its ids.
    assert tok.encode("".join(sorted(TEXT))) == sorted(ids)


@given(st.text(min_size=1, max_size=200))
def test_round_trip_any_text(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)
    np.testing.assert_array_equal(tok.encode_array(text), ids)


def test_encode_array_dtype_and_speed_path_agree():
    tok = CharTokenizer.from_text(TEXT)
    array = tok.encode_array(TEXT)
    assert array.dtype == np.uint16 and array.tolist() == tok.encode(TEXT)
    assert tok.encode_array(TEXT, dtype=np.int64).dtype == np.int64
    assert tok.encode_array("").shape == (0,)
    wide = CharTokenizer([chr(c) for c in range(0x100, 0x100 + 70000)])
    assert wide.encode_array(chr(0x100 + 69999)).dtype == np.int32


def test_decode_accepts_arrays_and_tensors():
    tok = CharTokenizer.from_text(TEXT)
    ids = tok.encode(TEXT)
    assert tok.decode(np.array(ids, dtype=np.uint16)) == TEXT
    assert tok.decode(tg.tensor(ids)) == TEXT
    assert tok.decode(tg.tensor([ids])[0]) == TEXT


@pytest.mark.parametrize("text, char, position", [
    ("hello?", "?", 5),
    ("héllo", "é", 1),
    ("hi\U0001F600", "\U0001F600", 2),
])
def test_unseen_character_is_named_with_its_position(text, char, position):
    tok = CharTokenizer.from_text("hello hi")
    for encode in (tok.encode, tok.encode_array):
        with pytest.raises(ValueError) as info:
            encode(text)
        message = str(info.value)
        assert repr(char) in message and f"position {position}" in message


@pytest.mark.parametrize("bad_id", [-1, 5, 1000])
def test_out_of_range_id_is_named_with_the_vocab_size(bad_id):
    tok = CharTokenizer.from_text("abcde")
    with pytest.raises(ValueError, match=f"token id {bad_id} .*size 5"):
        tok.decode([0, bad_id])


def test_non_integer_ids_raise():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(TypeError, match="token id must be an int, got float 1.0"):
        tok.decode([0, 1.0])
    with pytest.raises(TypeError, match="token id must be an int, got str 'a'"):
        tok.decode(["a"])


def test_to_dict_round_trips_through_json():
    text = 'tabs\tnewlines\n"quotes" \\ back\u2028slash \U0001F600 \x00'
    tok = CharTokenizer.from_text(text)
    restored = CharTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert restored == tok and restored.chars == tok.chars
    assert restored.encode(text) == tok.encode(text)


def test_from_dict_keeps_the_saved_order():
    tok = CharTokenizer.from_dict({"type": "char", "chars": "zyx"})
    assert tok.encode("xyz") == [2, 1, 0]


@pytest.mark.parametrize("bad", [{"type": "bpe", "chars": "ab"}, {"type": "char"}, "ab"])
def test_from_dict_rejects_other_descriptions(bad):
    with pytest.raises(ValueError, match="not a character tokenizer"):
        CharTokenizer.from_dict(bad)


def test_bad_vocabularies_and_texts_raise():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="repeats.*'a'"):
        CharTokenizer("aba")
    with pytest.raises(ValueError, match="one character"):
        CharTokenizer(["a", "bc"])
    with pytest.raises(ValueError, match="at least one"):
        CharTokenizer([])
    with pytest.raises(TypeError, match="str"):
        CharTokenizer.from_text(b"bytes")
    with pytest.raises(TypeError, match="str"):
        CharTokenizer.from_text("abc").encode([1, 2])
