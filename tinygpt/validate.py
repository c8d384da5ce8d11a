"""Argument checks, one of each kind. Standard library and NumPy only: any floor may import
it (as `tinygpt/files.py`).

Each helper takes the argument's name and value, returns the value in its plain Python
type (an `int`, a `float`) and otherwise raises an error that names the argument, repeats
the value and says what was expected:

- a value of the wrong type (a bool, a string or a float where an integer belongs, a bool
  where a number belongs): `ArgumentTypeError`, a TypeError that is also a ValueError, so
  callers that catch either keep working (as NumPy's AxisError is both a ValueError and an
  IndexError);
- a value of the right type outside its range (a negative size, NaN, a probability of 1.5,
  an unknown option): ValueError;
- a token id outside the vocabulary (or an index outside an embedding table, a class id
  outside the logits): `TokenIdError`, a ValueError that is also an IndexError: tinygpt's
  data and model checks have raised ValueError, and PyTorch's embedding and cross-entropy
  raise IndexError for an index out of range.

Bools are refused wherever a number is expected (True is an int in Python, but
`block_size=True` is a mistake); NumPy's integer and float scalars are accepted.
"""

import math
import numbers

import numpy as np


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (also a ValueError: see the module docstring)."""


class TokenIdError(ValueError, IndexError):
    """A token id (an index, a class id) outside its range (also an IndexError)."""


def _range_text(minimum, maximum, low_open=False, high_open=False):
    """'>= 1', '<= 5', 'in [0, 1)', ... ; '' when both bounds are None."""
    if minimum is not None and maximum is not None:
        return f"in {'(' if low_open else '['}{minimum}, {maximum}{')' if high_open else ']'}"
    if minimum is not None:
        return f"{'>' if low_open else '>='} {minimum}"
    if maximum is not None:
        return f"{'<' if high_open else '<='} {maximum}"
    return ""


def _describe(what, minimum, maximum, low_open=False, high_open=False, none_ok=False):
    text = " ".join(s for s in (what, _range_text(minimum, maximum, low_open, high_open)) if s)
    return text + (" (or None)" if none_ok else "")


def _in_range(value, minimum, maximum, low_open, high_open):
    if minimum is not None and (value < minimum or low_open and value == minimum):
        return False
    if maximum is not None and (value > maximum or high_open and value == maximum):
        return False
    return True


def integer(name, value, minimum=None, maximum=None, none_ok=False):
    """`value` as an int: an integer (Python's or NumPy's, not a bool) in
    [minimum, maximum] (either bound None: no bound); None passes through when none_ok.

    >>> integer("n_head", 12, minimum=1, maximum=64)
    12
    """
    return _integer(name, value, minimum, maximum, none_ok, None)


def positive_integer(name, value, none_ok=False):
    """`value` as an int >= 1 (see `integer`), described as "a positive int"."""
    return _integer(name, value, 1, None, none_ok,
                    "a positive int" + (" (or None)" if none_ok else ""))


def _integer(name, value, minimum, maximum, none_ok, expected):
    """`expected` None: "an int" and the bounds, worded only when the check fails (this
    runs for every dim argument of every op)."""
    if value is None and none_ok:
        return None
    wrong_type = isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
    if wrong_type or not _in_range(value, minimum, maximum, False, False):
        expected = expected or _describe("an int", minimum, maximum, none_ok=none_ok)
        if wrong_type:
            raise ArgumentTypeError(f"{name} must be {expected}, got {type(value).__name__} "
                                    f"{value!r}")
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def real(name, value, minimum=None, maximum=None, low_open=False, high_open=False,
         finite=True, none_ok=False):
    """`value` as a float: a real number (an int or a float, Python's or NumPy's, not a
    bool), finite unless finite=False (NaN is refused even then), within the bounds
    (closed unless low_open / high_open); None passes through when none_ok.

    >>> real("temperature", 1, minimum=0, low_open=True)
    1.0
    """
    return _real(name, value, minimum, maximum, low_open, high_open, finite, none_ok,
                 "a finite number" if finite else "a number")


def _real(name, value, minimum, maximum, low_open, high_open, finite, none_ok, what):
    if value is None and none_ok:
        return None
    expected = _describe(what, minimum, maximum, low_open, high_open, none_ok)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be {expected}, got {type(value).__name__} "
                                f"{value!r}")
    value = float(value)
    if math.isnan(value) or finite and math.isinf(value) \
            or not _in_range(value, minimum, maximum, low_open, high_open):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def probability(name, value, include_one=True, include_zero=True):
    """`value` as a float in [0, 1] (open at 1 when include_one=False, as dropout's p of a
    model that trains; open at 0 when include_zero=False, as top_p)."""
    return _real(name, value, 0, 1, not include_zero, not include_one, True, False,
                 "a probability")


def boolean(name, value):
    """`value` if it is True or False (NumPy's bools too, returned as bool)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name} must be True or False (a bool), got "
                                f"{type(value).__name__} {value!r}")
    return bool(value)


def choice(name, value, options):
    """`value` if it is one of `options` (compared with ==), else a ValueError listing
    them."""
    options = tuple(options)
    try:
        if value in options:
            return value
    except TypeError:                     # an unhashable value against a set's members
        pass
    raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")


def names(name, value, example, empty_ok=False):
    """`value` as a tuple if it is a list or tuple of non-empty strings (module names such
    as `example`), with at least one unless empty_ok; else ArgumentTypeError (a lone
    string too: a name is not a tuple of names) or ValueError (none given)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(n, str) and n for n in value):
        raise ArgumentTypeError(f"{name} must be a tuple of module names such as {example}, "
                                f"got {value!r}")
    if not value and not empty_ok:
        raise ValueError(f"{name} needs at least one module name, such as {example}")
    return tuple(value)


def token_ids(ids, vocab_size, name="token ids", what="token id", size_name="vocab_size",
              ignore_index=None):
    """Check that every entry of the integer NumPy array `ids` lies in [0, vocab_size)
    (entries equal to `ignore_index`, when given, are skipped); returns `ids`.

    Raises TokenIdError naming the first id out of range (`what`, e.g. "token id",
    "index", "target"), its position in `ids` (`name`), the valid range and the size
    (`size_name`, e.g. "vocab_size", "num_embeddings"). Only host arrays belong here:
    checking a GPU's array would make the host wait for the device.

    >>> token_ids(np.array([0, 4, 2]), 5)
    array([0, 4, 2])
    """
    if ids.size == 0:
        return ids
    keep = None if ignore_index is None else ids != ignore_index
    kept = ids if keep is None else ids[keep]
    if kept.size == 0 or (int(kept.min()) >= 0 and int(kept.max()) < vocab_size):
        return ids
    bad = (ids < 0) | (ids >= vocab_size)
    if keep is not None:
        bad &= keep
    position = tuple(int(i) for i in np.argwhere(bad)[0])
    value = int(ids[position])
    where = position[0] if len(position) == 1 else position
    also = "" if ignore_index is None else f", or ignore_index={ignore_index}"
    raise TokenIdError(f"{what} {value} at position {where} of {name} is out of range: ids "
                       f"must be in [0, {vocab_size - 1}] ({size_name} {vocab_size}{also})")
