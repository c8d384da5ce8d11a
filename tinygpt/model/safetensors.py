"""Reading and writing safetensors files, written from scratch (floor 5, the model's weights).

The format (https://github.com/huggingface/safetensors) is deliberately simple:

    [8 bytes]  N, the header length, an unsigned 64-bit little-endian integer
    [N bytes]  a JSON header: {name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]},
               ..., "__metadata__": {str: str}} (the metadata is optional)
    [rest]     the data section: each tensor's raw little-endian bytes at [b, e), offsets counted
               from the start of the data section

A valid file's tensors tile the data section exactly: no gaps, no overlaps, nothing after the
last one. Every reader checks all of that and raises one ValueError naming the file and the
problem, whatever the bytes (a truncated download, a foreign file, or one crafted to exhaust
memory or the parser), so nothing loads garbage and nothing is allocated that the file does
not hold.

`load_file` reads a whole file; `read_index` + `read_tensor` read one tensor at a time, which
is how a loader fills a model's parameters without a second copy of the weights.

Imports: numpy, the standard library and tinygpt.files (atomic writes).
"""

import json
import math
import os
from pathlib import Path

import numpy as np

from ..files import FolderLock, atomic_open, atomic_write_text

# safetensors dtype name -> NumPy dtype of the stored (little-endian) bytes. BF16 has no NumPy
# dtype: it is read as uint16 and widened to float32 in `bf16_to_f32`.
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# NumPy dtype kind + size -> safetensors name, for writing (BF16 is never written: NumPy has none).
_NAMES = {(dt.kind, dt.itemsize): name for name, dt in DTYPES.items() if name != "BF16"}

# The reference implementation refuses headers over 100 MB; a larger N means a corrupt file,
# and refusing it early avoids trying to read gigabytes as JSON.
_MAX_HEADER = 100_000_000
# NumPy 1.x arrays have at most 32 dimensions (2.x: 64); no real tensor comes near.
MAX_DIMS = 32


class TensorInfo(tuple):
    """Where one tensor lies: (dtype name, shape, begin, end), offsets counted from the
    start of the data section."""

    __slots__ = ()

    def __new__(cls, dtype, shape, begin, end):
        return super().__new__(cls, (dtype, tuple(shape), begin, end))

    dtype = property(lambda self: self[0])
    shape = property(lambda self: self[1])
    begin = property(lambda self: self[2])
    end = property(lambda self: self[3])


def bf16_to_f32(raw):
    """bfloat16 is the top half of a float32: shift the 16 bits up and reinterpret."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _no_duplicates(pairs):
    """json object hook: a name given twice would silently lose a tensor, so refuse it."""
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        name = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the header names {name!r} twice")
    return d


def _read_header(f, path, file_size):
    """Read and check the length prefix and the JSON header; return (header, data_start)."""
    if file_size < 8:
        raise ValueError(f"{path}: not a safetensors file: it is {file_size} bytes, shorter than "
                         f"the 8-byte header length")
    n = int.from_bytes(f.read(8), "little")
    if n > file_size - 8:
        raise ValueError(f"{path}: truncated header: the header length says {n} bytes but only "
                         f"{file_size - 8} follow")
    if n > _MAX_HEADER:
        raise ValueError(f"{path}: header length {n} is over the {_MAX_HEADER}-byte limit")
    try:
        header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: the header is not JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: the header nests too deeply to be a safetensors header"
                         ) from None
    except ValueError as e:  # from _no_duplicates
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header must be a JSON object, found "
                         f"{type(header).__name__}")
    return header, 8 + n


def _check_entries(header, path, data_len):
    """Check each tensor entry and that they tile the data section; return ({name:
    TensorInfo} in offset order, metadata)."""
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"{path}: __metadata__ must map strings to strings")
    entries = []
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise ValueError(f"{path}: tensor {name!r} needs dtype, shape and data_offsets, found "
                             f"{info!r:.100}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype {dtype!r:.100}; known: "
                             f"{', '.join(DTYPES)}")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {shape!r:.100}; expected a "
                             f"list of non-negative ints")
        if len(shape) > MAX_DIMS:
            raise ValueError(f"{path}: tensor {name!r} has {len(shape)} dimensions; at most "
                             f"{MAX_DIMS} are supported")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise ValueError(f"{path}: tensor {name!r} has data_offsets {offsets!r:.100}; "
                             f"expected [begin, end] with 0 <= begin <= end")
        begin, end = offsets
        if end > data_len:
            raise ValueError(f"{path}: tensor {name!r} has data_offsets [{begin}, {end}] past the "
                             f"end of the file (the data section is {data_len} bytes); is the "
                             f"file truncated?")
        nbytes = math.prod(shape) * DTYPES[dtype].itemsize
        if end - begin != nbytes:
            raise ValueError(f"{path}: tensor {name!r} of shape {shape} and dtype {dtype} needs "
                             f"{nbytes} bytes, but its data_offsets [{begin}, {end}] hold "
                             f"{end - begin}")
        entries.append((name, TensorInfo(dtype, shape, begin, end)))

    # The tensors, sorted by offset, must each start where the previous one ended.
    entries.sort(key=lambda e: (e[1].begin, e[1].end))
    position, previous = 0, None
    for name, (_, _, begin, end) in entries:
        if begin < position:
            raise ValueError(f"{path}: tensors {previous!r} and {name!r} have overlapping "
                             f"data_offsets (byte {begin} is used twice)")
        if begin > position:
            raise ValueError(f"{path}: data is not contiguous: bytes [{position}, {begin}) before "
                             f"tensor {name!r} belong to no tensor")
        position, previous = end, name
    if position != data_len:
        raise ValueError(f"{path}: data is not contiguous: the tensors end at byte {position} "
                         f"but the data section has {data_len} bytes")
    return dict(entries), metadata


def read_index(f, path):
    """Read and check the header of the open safetensors file `f` (binary, at its start).

    Returns (entries, metadata, data_start): entries maps each tensor's name to its
    `TensorInfo` (dtype, shape, begin, end), in file order; metadata is the header's
    "__metadata__" (str -> str, or {}); data_start is the file offset of the data section.
    Every check of the module docstring is made here, before any tensor is read.
    """
    file_size = os.fstat(f.fileno()).st_size
    header, data_start = _read_header(f, path, file_size)
    entries, metadata = _check_entries(header, path, file_size - data_start)
    return entries, metadata, data_start


def read_tensor(f, path, data_start, name, info, out=None):
    """Read one tensor (`info` from `read_index`) from the open file `f`.

    When `out` is a C-contiguous array of the stored dtype and shape, the bytes go straight
    into it and None is returned; otherwise a new array is returned (BF16 widened to
    float32). A file that ends early raises ValueError naming the tensor.
    """
    dtype, shape, begin, end = info
    stored = DTYPES[dtype]
    direct = (out is not None and dtype != "BF16" and out.dtype == stored
              and tuple(out.shape) == tuple(shape) and out.flags.c_contiguous)
    array = out if direct else np.empty(shape, dtype=stored)
    f.seek(data_start + begin)
    if f.readinto(memoryview(array.reshape(-1).view(np.uint8))) != end - begin:
        raise ValueError(f"{path}: the file ended inside tensor {name!r}; is it truncated?")
    if direct:
        return None
    if dtype == "BF16":
        return bf16_to_f32(array)
    return array if stored.isnative else array.astype(stored.newbyteorder("="))


def load_file(path):
    """Load every tensor of a safetensors file as a dict name -> np.ndarray.

    F32/F16/F64 and the integer dtypes keep their dtype; BF16 becomes float32 (NumPy has no
    bfloat16). The data section is read once into one buffer, and arrays are views of it, so
    loading holds one copy of the weights (BF16 tensors and misaligned ones get their own).
    Raises ValueError naming the problem for a malformed file.

        >>> save_file({"w": np.ones((2, 3), np.float32)}, "w.safetensors")   # doctest: +SKIP
        >>> load_file("w.safetensors")["w"].shape                           # doctest: +SKIP
        (2, 3)
    """
    path = Path(path)
    with open(path, "rb") as f:
        entries, _, data_start = read_index(f, path)
        buffer = bytearray(os.fstat(f.fileno()).st_size - data_start)  # writable arrays
        if f.readinto(buffer) != len(buffer):
            raise ValueError(f"{path}: the file changed size while it was read")

    tensors = {}
    for name, (dtype, shape, begin, end) in entries.items():
        stored = DTYPES[dtype]
        array = np.frombuffer(buffer, dtype=stored, count=(end - begin) // stored.itemsize,
                              offset=begin).reshape(shape)
        if dtype == "BF16":
            array = bf16_to_f32(array)
        elif not stored.isnative:
            array = array.astype(stored.newbyteorder("="))  # only on big-endian machines
        elif not array.flags.aligned:
            array = array.copy()  # unaligned views work, but slowly, and some libraries refuse them
        tensors[name] = array
    return tensors


def load_metadata(path):
    """The header's "__metadata__" dict (str -> str) of a safetensors file, or {}."""
    path = Path(path)
    with open(path, "rb") as f:
        return read_index(f, path)[1]


def save_file(tensors, path, metadata=None):
    """Write a dict name -> np.ndarray as a safetensors file.

    Every input is checked before anything is written, and the file is written to a temporary
    file in the same folder and then renamed into place: an error or a crash leaves an existing
    file at `path` untouched. `metadata` (str -> str) goes into the header's "__metadata__".
    Tensors are laid out widest dtype first, so that each starts at a multiple of its item size
    (the header is padded with spaces to a multiple of 8).
    """
    if not isinstance(tensors, dict):
        raise TypeError(f"save_file expects a dict name -> array, got {type(tensors).__name__}")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError(f"metadata must be a dict of str -> str, got {metadata!r}")
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"tensor name {name!r} is not allowed; names are strings other than "
                             f"'__metadata__'")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"tensor {name!r} is a {type(value).__name__}; save_file expects NumPy "
                            f"arrays (use .numpy() on a Tensor)")
        key = (value.dtype.kind, value.dtype.itemsize)
        if key not in _NAMES:
            supported = ", ".join(sorted({str(d) for d in DTYPES.values()}))
            raise ValueError(f"tensor {name!r} has dtype {value.dtype}, which safetensors cannot "
                             f"store; supported: {supported}")
        # Little-endian and C-contiguous, as the format stores them (no copy when already so).
        # (np.asarray, not np.ascontiguousarray, which turns a 0-d array into a 1-d one.)
        arrays[name] = np.asarray(value, dtype=value.dtype.newbyteorder("<"), order="C")

    # Widest first (stable, so names keep their order within a width): offsets stay aligned.
    order = sorted(arrays, key=lambda k: -arrays[k].dtype.itemsize)
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name in order:
        a = arrays[name]
        header[name] = {"dtype": _NAMES[(a.dtype.kind, a.dtype.itemsize)], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # pad so the data section starts 8-aligned

    with atomic_open(path, "wb") as f:
        f.write(len(header_bytes).to_bytes(8, "little"))
        f.write(header_bytes)
        for name in order:
            f.write(arrays[name].reshape(-1).view(np.uint8))  # raw bytes, no copy


def save_folder(path, tensors, weights_name, texts, config_name, overwrite, what,
                metadata=None, optional=()):
    """Write `tensors` to path/weights_name and each of `texts` ({file name: text}) into
    the folder `path`, `config_name` last (a folder that has one has everything else),
    under the folder's lock (`FolderLock`: two saves into one folder fail, not mix). An
    existing file of these names, or of `optional` names this save does not write (files
    an earlier save may have left, such as a tokenizer's), raises FileExistsError before
    anything is written unless overwrite=True, which also removes those; `what` names the
    folder's contents in the message ("the adapter", ...)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; a folder of files is "
                              f"written there")
    with FolderLock(path, hint="another save into this folder is under way; wait for it, "
                               "or save elsewhere"):
        stale = [name for name in optional if name not in texts and (path / name).exists()]
        if not overwrite:
            existing = [name for name in [weights_name, *texts, *stale]
                        if (path / name).exists()]
            if existing:
                raise FileExistsError(f"{path / existing[0]} already exists; pass "
                                      f"overwrite=True to replace {what} saved in {path}")
        save_file(tensors, path / weights_name, metadata=metadata)
        del tensors
        for name in sorted(texts, key=lambda n: n == config_name):
            atomic_write_text(path / name, texts[name])
        for name in stale:
            (path / name).unlink()
