"""The CuPy that tinygpt's CUDA path needs: CuPy 14 (put_along_axis, NumPy 2's type
promotion), said in setup.cfg's cuda extra and checked when CuPy is first imported."""

import configparser
import re
import sys
import types

import pytest

from conftest import REPO
from tinygpt.autograd import backend


def test_the_cuda_extra_requires_cupy_14():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    extra = config["options.extras_require"]["cuda"]
    found = re.search(r"cupy-cuda\d+x\s*>=\s*(\d+)", extra)
    assert found, f"no cupy requirement in the cuda extra: {extra!r}"
    assert (int(found.group(1)),) >= backend.CUPY_MIN_VERSION[:1]


@pytest.mark.parametrize("version", ["13.6.0", "12.3.0"])
def test_an_older_cupy_is_refused_with_the_version_it_needs(version, monkeypatch):
    old = types.ModuleType("cupy")
    old.__version__ = version
    monkeypatch.setitem(sys.modules, "cupy", old)
    monkeypatch.setattr(backend, "_cupy", None)
    with pytest.raises(RuntimeError, match=rf"CuPy >= 14.*found CuPy {re.escape(version)}"):
        backend.array_module_for_device("cuda")


@pytest.mark.parametrize("text, expected", [("14.2.0", (14, 2)), ("15.0.0a1", (15, 0)),
                                            ("13.6.0", (13, 6)), ("14.0.0rc1", (14, 0))])
def test_version_numbers_are_read(text, expected):
    assert backend._version_tuple(text) == expected
