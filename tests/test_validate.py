"""tinygpt.validate: each helper's accepted values, returned types and refusals."""

import math
import re
from pathlib import Path

import numpy as np
import pytest

from tinygpt import validate as v
from tinygpt.validate import ArgumentTypeError, TokenIdError


def test_the_error_types_are_both_of_their_kinds():
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)
    assert issubclass(TokenIdError, ValueError) and issubclass(TokenIdError, IndexError)
    assert not issubclass(TokenIdError, TypeError)


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3)])
def test_integer_accepts_python_and_numpy_ints_and_returns_an_int(value):
    out = v.integer("n", value, minimum=1, maximum=3)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [True, np.bool_(False), 2.0, "2", None, [2]])
def test_integer_refuses_what_is_not_an_int_naming_it(value):
    with pytest.raises(ArgumentTypeError, match=r"^block_size must be an int >= 1, got "):
        v.integer("block_size", value, minimum=1)


@pytest.mark.parametrize("value, message", [
    (0, r"^n must be an int in \[1, 5\], got 0$"),
    (6, r"^n must be an int in \[1, 5\], got 6$"),
])
def test_integer_refuses_values_out_of_range(value, message):
    with pytest.raises(ValueError, match=message) as info:
        v.integer("n", value, minimum=1, maximum=5)
    assert not isinstance(info.value, TypeError)


def test_integer_bounds_one_sided_and_none():
    assert v.integer("n", -7) == -7
    assert v.integer("n", 9, maximum=9) == 9
    with pytest.raises(ValueError, match=r"n must be an int <= 9, got 10"):
        v.integer("n", 10, maximum=9)
    assert v.integer("n", None, none_ok=True) is None
    with pytest.raises(ArgumentTypeError, match=r"n must be an int >= 1, got NoneType None"):
        v.integer("n", None, minimum=1)


def test_positive_integer():
    assert v.positive_integer("k", 1) == 1
    assert v.positive_integer("k", None, none_ok=True) is None
    with pytest.raises(ValueError, match=r"^k must be a positive int, got 0$"):
        v.positive_integer("k", 0)
    with pytest.raises(ArgumentTypeError, match=r"^k must be a positive int, got bool True$"):
        v.positive_integer("k", True)
    with pytest.raises(ArgumentTypeError, match=r"a positive int \(or None\), got str '1'"):
        v.positive_integer("k", "1", none_ok=True)


@pytest.mark.parametrize("value", [2, 2.5, np.float32(2.5), np.int32(2)])
def test_real_accepts_ints_and_floats_and_returns_a_float(value):
    out = v.real("x", value, minimum=0, low_open=True)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value", [True, "1.0", None, 1j])
def test_real_refuses_what_is_not_a_real_number(value):
    with pytest.raises(ArgumentTypeError, match=r"^lr must be a finite number >= 0, got "):
        v.real("lr", value, minimum=0)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_real_refuses_nan_and_infinities(value):
    with pytest.raises(ValueError, match=rf"^lr must be a finite number, got {value}$"):
        v.real("lr", value)


def test_real_allows_infinity_only_when_asked_and_never_nan():
    assert v.real("x", math.inf, finite=False) == math.inf
    with pytest.raises(ValueError, match=r"x must be a number >= 0, got nan"):
        v.real("x", math.nan, minimum=0, finite=False)


@pytest.mark.parametrize("value, kwargs, message", [
    (0.0, dict(minimum=0, low_open=True), r"t must be a finite number > 0, got 0.0"),
    (1.0, dict(maximum=1, high_open=True), r"t must be a finite number < 1, got 1.0"),
    (1.5, dict(minimum=0, maximum=1), r"t must be a finite number in \[0, 1\], got 1.5"),
    (0.0, dict(minimum=0, maximum=1, low_open=True), r"in \(0, 1\], got 0.0"),
])
def test_real_bounds_open_and_closed(value, kwargs, message):
    with pytest.raises(ValueError, match=message):
        v.real("t", value, **kwargs)


def test_probability_closed_and_open_ends():
    assert v.probability("p", 0) == 0.0 and v.probability("p", 1) == 1.0
    with pytest.raises(ValueError, match=r"^p must be a probability in \[0, 1\), got 1.0$"):
        v.probability("p", 1.0, include_one=False)
    with pytest.raises(ValueError, match=r"^top_p must be a probability in \(0, 1\], got 0.0$"):
        v.probability("top_p", 0.0, include_zero=False)
    with pytest.raises(ValueError, match=r"in \[0, 1\], got -0.1"):
        v.probability("p", -0.1)
    with pytest.raises(ArgumentTypeError, match="got bool False"):
        v.probability("p", False)


def test_boolean():
    assert v.boolean("bias", True) is True and v.boolean("bias", np.bool_(False)) is False
    for value in (1, 0, "True", None):
        with pytest.raises(ArgumentTypeError,
                           match=r"^bias must be True or False \(a bool\), got "):
            v.boolean("bias", value)


def test_choice():
    assert v.choice("reduction", "sum", ("mean", "sum")) == "sum"
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', got 'max'"):
        v.choice("reduction", "max", ("mean", "sum"))
    with pytest.raises(ValueError, match=r"got \['mean'\]"):
        v.choice("reduction", ["mean"], {"mean", "sum"})


def test_names_accepts_tuples_and_lists_of_names_and_returns_a_tuple():
    assert v.names("targets", ["c_attn", "c_fc"], ("c_attn",)) == ("c_attn", "c_fc")
    assert v.names("trainable", (), ("score",), empty_ok=True) == ()


@pytest.mark.parametrize("value", ["c_attn", ("c_attn", ""), ("c_attn", 3), None, {"c_fc"}])
def test_names_refuses_what_is_not_a_tuple_of_names(value):
    with pytest.raises(TypeError, match=r"targets must be a tuple of module names such as "
                                        r"\('c_attn',\), got"):
        v.names("targets", value, ("c_attn",))


def test_names_refuses_none_unless_asked():
    with pytest.raises(ValueError, match=r"targets needs at least one module name, such as"):
        v.names("targets", [], ("c_attn",))


def test_token_ids_accepts_ids_in_range_and_returns_them():
    ids = np.array([[0, 4], [2, 3]])
    assert v.token_ids(ids, 5) is ids
    assert v.token_ids(np.zeros((0,), np.int64), 1).size == 0
    assert v.token_ids(np.array([-100, 1]), 2, ignore_index=-100) is not None
    assert v.token_ids(np.array([-100, -100]), 2, ignore_index=-100) is not None


@pytest.mark.parametrize("ids, message", [
    (np.array([0, 5, 9]), r"^token id 5 at position 1 of token ids is out of range: ids must "
                          r"be in \[0, 4\] \(vocab_size 5\)$"),
    (np.array([0, -1, 9]), r"^token id -1 at position 1 "),
    (np.array([[0, 1], [1, 7]]), r"^token id 7 at position \(1, 1\) "),
])
def test_token_ids_names_the_first_id_out_of_range_and_its_position(ids, message):
    with pytest.raises(TokenIdError, match=message):
        v.token_ids(ids, 5)


def test_token_ids_wording_and_ignore_index():
    with pytest.raises(IndexError, match=r"^target 3 at position 2 of targets is out of range: "
                                         r"ids must be in \[0, 2\] \(classes 3, or "
                                         r"ignore_index=-100\)$"):
        v.token_ids(np.array([-100, 1, 3]), 3, name="targets", what="target",
                    size_name="classes", ignore_index=-100)
    with pytest.raises(ValueError, match=r"index -100 at position 0"):
        v.token_ids(np.array([-100, 1]), 3, what="index")


# Modules that check values read from a file, where the file's format, not a Python
# argument, says what is allowed (an adapter file's r of 4.0 reads as 4).
FILE_READERS = {"tinygpt/model/safetensors.py", "tinygpt/model/adapters.py"}
_HAND_CHECK = re.compile(r"isinstance\([^)]*\bbool\b[^)]*\)\s*or\s+not\s+isinstance\(")


def test_argument_checks_go_through_validate():
    """One place for argument checks: no module of the package writes the
    "isinstance(v, bool) or not isinstance(v, ...)" check by hand (validate.py does)."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for path in sorted((root / "tinygpt").rglob("*.py")):
        name = path.relative_to(root).as_posix()
        if name == "tinygpt/validate.py" or name in FILE_READERS:
            continue
        text = " ".join(path.read_text(encoding="utf-8").split())   # across line breaks
        found += [f"{name}: {m.group(0)[:60]}" for m in _HAND_CHECK.finditer(text)]
    assert found == [], f"use tinygpt.validate for these argument checks: {found}"
