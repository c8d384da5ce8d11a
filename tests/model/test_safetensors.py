"""tinygpt.model.safetensors: round trips, every malformed-file error, atomic saves."""

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygpt.model.safetensors import load_file, load_metadata, save_file


def raw_file(header, data=b"", pad=True):
    """Build safetensors bytes by hand, so tests do not trust the writer under test."""
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + data


def write(tmp_path, content, name="x.safetensors"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


# ------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, np.int64, np.int32,
                                   np.int8, np.uint8, np.bool_])
def test_round_trip_dtypes(tmp_path, dtype):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 5)) * 10).astype(dtype)
    save_file({"a": a, "scalar": np.array(2.5, np.float32), "empty": np.zeros((0, 4), dtype)},
              tmp_path / "t.safetensors")
    out = load_file(tmp_path / "t.safetensors")
    assert out["a"].dtype == np.dtype(dtype) and out["a"].shape == (3, 5)
    np.testing.assert_array_equal(out["a"], a)
    assert out["scalar"].shape == () and out["scalar"] == np.float32(2.5)
    assert out["empty"].shape == (0, 4)


@settings(deadline=None, max_examples=50)
@given(st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda s: s != "__metadata__"),
    hnp.arrays(st.sampled_from([np.float32, np.float16, np.int32, np.uint8]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    max_size=5))
def test_round_trip_property(tmp_path_factory, tensors):
    path = tmp_path_factory.mktemp("st") / "p.safetensors"
    save_file(tensors, path, metadata={"format": "np"})
    out = load_file(path)
    assert out.keys() == tensors.keys()
    for name, a in tensors.items():
        assert out[name].dtype == a.dtype and out[name].shape == a.shape
        np.testing.assert_array_equal(out[name], a)  # NaN == NaN here
    assert load_metadata(path) == {"format": "np"}


def test_layout_is_aligned_and_padded(tmp_path):
    path = tmp_path / "a.safetensors"
    save_file({"b": np.ones(3, np.uint8), "w": np.ones(5, np.float64), "h": np.ones(1, np.float16)},
              path)
    content = path.read_bytes()
    n = int.from_bytes(content[:8], "little")
    assert n % 8 == 0
    header = json.loads(content[8:8 + n])
    for info in header.values():
        size = {"F64": 8, "F16": 2, "U8": 1}[info["dtype"]]
        assert info["data_offsets"][0] % size == 0
    for a in load_file(path).values():
        assert a.flags.aligned and a.flags.writeable


def test_non_contiguous_and_big_endian_inputs(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T       # a transposed view
    b = np.arange(4, dtype=">f4")                              # big-endian
    save_file({"a": a, "b": b}, tmp_path / "v.safetensors")
    out = load_file(tmp_path / "v.safetensors")
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], b)


def test_bf16_read_as_float32(tmp_path):
    # bfloat16 is a float32's top 16 bits; pick values that bf16 represents exactly.
    values = np.array([[1.0, -2.5], [0.15625, 2.0**127], [np.inf, -0.0]], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")
    path = write(tmp_path, raw_file(
        {"w": {"dtype": "BF16", "shape": [3, 2], "data_offsets": [0, 12]}}, bf16.tobytes()))
    w = load_file(path)["w"]
    assert w.dtype == np.float32 and w.shape == (3, 2)
    np.testing.assert_array_equal(w, values)
    assert np.signbit(w[2, 1])


def test_metadata_and_hand_made_file(tmp_path):
    data = np.array([1, 2, 3], "<i4").tobytes() + np.array([0.5], "<f2").tobytes()
    path = write(tmp_path, raw_file({
        "__metadata__": {"author": "test"},
        "h": {"dtype": "F16", "shape": [1], "data_offsets": [12, 14]},
        "i": {"dtype": "I32", "shape": [3], "data_offsets": [0, 12]}}, data, pad=False))
    out = load_file(path)
    assert out["i"].tolist() == [1, 2, 3] and out["h"].tolist() == [0.5]
    assert load_metadata(path) == {"author": "test"}


# ------------------------------------------------------------------------------- malformed files

F32_4 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}


@pytest.mark.parametrize("content, message", [
    (b"", "shorter than the 8-byte header length"),
    (b"\x01\x02\x03", "shorter than the 8-byte header length"),
    ((100).to_bytes(8, "little") + b"{}", "truncated header"),
    ((4).to_bytes(8, "little") + b"{abc", "not JSON"),
    ((2).to_bytes(8, "little") + b"\xff\xfe", "not JSON"),
    (raw_file([1, 2]), "must be a JSON object"),
    (raw_file({"a": F32_4}, b"\0" * 8), "past the end of the file"),
    (raw_file({"a": F32_4, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}},
              b"\0" * 16), "overlapping"),
    (raw_file({"a": {"dtype": "Q8", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4),
     "unknown dtype 'Q8'"),
    (raw_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16),
     "needs 12 bytes"),
    (raw_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16),
     "not contiguous"),
    (raw_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 16),
     "not contiguous"),
    (raw_file({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}), "shape"),
    (raw_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4),
     "data_offsets"),
    (raw_file({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "needs dtype, shape"),
    (raw_file({"__metadata__": {"k": 1}}), "__metadata__"),
    ((24).to_bytes(8, "little") + b'{"a": {}, "a": {}}      ', "twice"),
])
def test_malformed_files(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as info:
        load_file(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------- bad input to save

@pytest.mark.parametrize("tensors, error, message", [
    ({"a": np.zeros(2, np.complex64)}, ValueError, "cannot store"),
    ({"a": np.array(["x"])}, ValueError, "cannot store"),
    ({"a": [1.0, 2.0]}, TypeError, "NumPy arrays"),
    ({"__metadata__": np.zeros(1, np.float32)}, ValueError, "not allowed"),
    ({1: np.zeros(1, np.float32)}, ValueError, "not allowed"),
])
def test_bad_tensors_rejected_before_writing(tmp_path, tensors, error, message):
    path = tmp_path / "keep.safetensors"
    save_file({"old": np.ones(2, np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(error, match=message):
        save_file(tensors, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.safetensors"]


def test_bad_metadata_rejected(tmp_path):
    with pytest.raises(TypeError, match="metadata"):
        save_file({"a": np.zeros(1, np.float32)}, tmp_path / "m.safetensors", metadata={"k": 1})
    assert not (tmp_path / "m.safetensors").exists()


def test_failed_write_leaves_existing_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_file({"w": np.arange(4, dtype=np.float32)}, path)
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # fails after the data went to the temp file
    with pytest.raises(OSError, match="No space"):
        save_file({"w": np.zeros((100, 100), np.float32)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary file left behind
