"""The checkpoint file (floor 5): NumPy `.npy` arrays in a zip file (`np.savez`, stored
uncompressed) plus one JSON document stored as a byte array under `__tinygpt__`; written
atomically, read with suspicion. What the arrays and the JSON mean for a training run is
checkpoint.py's concern. Imports: numpy, the standard library, autograd, files.

`save_checkpoint(path, arrays, meta)` writes a temporary file in the same folder, then
`os.replace` renames it into place: a crash mid-save leaves the previous checkpoint intact.

`load_checkpoint(path, check)` trusts nothing. Before any array is read: every member must
be stored uncompressed (so nothing inflates beyond the file's own size) inside the file,
its `.npy` header must describe exactly its bytes, with a numeric dtype, and the JSON must
be a tinygpt checkpoint's of a version this tinygpt reads; `check(meta, headers)` then
refuses what the caller's semantics forbid. No pickle is ever loaded: a checkpoint cannot
run code. A file that fails any check raises CheckpointError naming the file and the
problem.

Arrays inside the JSON: `split_arrays` replaces each array of a nested state by a reference
{"__array__": name} and `join_arrays` puts them back.
"""

import json
import math
import os
import zipfile

import numpy as np

from ..autograd import backend
from ..autograd.tensor import Tensor
from ..files import atomic_open

FORMAT = "tinygpt-checkpoint"
VERSION = 1
_META = "__tinygpt__"
MAX_META_BYTES = 64 * 2 ** 20   # the JSON document; a GPT-2 tokenizer takes under 1 MB
_NPY_VERSIONS = {(1, 0): np.lib.format.read_array_header_1_0,
                 (2, 0): np.lib.format.read_array_header_2_0}


class CheckpointError(ValueError):
    """A file that is not a readable tinygpt checkpoint."""


# --- the file format ------------------------------------------------------------------------
def save_checkpoint(path, arrays, meta):
    """Write `arrays` (name -> NumPy array) and `meta` (a JSON-serialisable dict) to `path`.

    Names must not start with `__`. The file appears at `path` only once it is complete.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    document = json.dumps({"format": FORMAT, "version": VERSION, **meta}).encode("utf-8")
    members = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    for name in members:
        if name.startswith("__"):
            raise ValueError(f"checkpoint array names may not start with '__': {name!r}")
    members[_META] = np.frombuffer(document, dtype=np.uint8)
    with atomic_open(path, "wb") as f:
        np.savez(f, **members)


def load_checkpoint(path, check=None, model_class="GPT"):
    """Read a checkpoint: returns (arrays, meta). A missing, truncated, crafted or foreign
    file raises an error that names the file and the problem (see the module docstring).

    check: called as `check(meta, headers)` with headers {name: (shape, dtype)} after the
           file's structure and its JSON are checked and before any array is read; it
           raises CheckpointError to refuse the file.
    model_class: the model the caller will build ("GPT", a language model, by default); a
           checkpoint of another (meta "model_class", such as a task classifier written by
           `python -m tinygpt finetune`) raises an error naming both. None accepts any.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is not a file; expected a checkpoint (ckpt.npz)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = _members(archive, path)
            if _META not in members:
                raise CheckpointError(
                    f"{path} is not a tinygpt checkpoint (no {_META} record); expected a file "
                    "written by `python -m tinygpt train`")
            headers = {name: _npy_header(archive, info, path) for name, info in members.items()}
            meta = _read_meta(archive, members[_META], headers[_META], path)
            headers.pop(_META)
            _check_model_class(meta, model_class, path)
            if check is not None:
                check(meta, headers)
            arrays = {}
            for name, info in members.items():
                if name != _META:
                    with archive.open(info) as f:
                        arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            KeyError, TypeError, RecursionError) as e:   # TypeError: JSON of the wrong shape
        raise CheckpointError(
            f"{path} is not a readable tinygpt checkpoint (truncated or foreign file: {e})"
        ) from None
    return arrays, meta


def _check_model_class(meta, model_class, path):
    found = meta.get("model_class", "GPT")
    if model_class is not None and found != model_class:
        hint = (" (a task classifier: load it with tinygpt.train.finetune.load_classifier)"
                if found != "GPT" else "")
        raise CheckpointError(f"{path} holds a {found}{hint}, not a {model_class}")


def _members(archive, path):
    """{array name: ZipInfo}, each checked to be stored uncompressed inside the file."""
    size = os.path.getsize(path)
    members = {}
    for info in archive.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else None
        if name is None or name in members:
            what = "is not a .npy array" if name is None else "appears twice"
            raise CheckpointError(f"{path}: the member {info.filename!r} {what}")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            # np.savez stores; a compressed member could inflate to any size when read.
            raise CheckpointError(f"{path}: the member {info.filename!r} is compressed; "
                                  "tinygpt checkpoints store their arrays uncompressed")
        if info.header_offset + info.compress_size > size:
            raise CheckpointError(f"{path}: the member {info.filename!r} claims "
                                  f"{info.compress_size:,} bytes, past the end of the "
                                  f"{size:,}-byte file; is it truncated?")
        members[name] = info
    return members


def _npy_header(archive, info, path):
    """(shape, dtype) from a member's `.npy` header, checked against the member's size."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in _NPY_VERSIONS:
            raise CheckpointError(f"{path}: the member {info.filename!r} has .npy format "
                                  f"version {version}; expected 1.0 or 2.0")
        shape, _, dtype = _NPY_VERSIONS[version](f)
        header_bytes = f.tell()
    if dtype.hasobject or dtype.kind not in "biuf":
        raise CheckpointError(f"{path}: the member {info.filename!r} has dtype {dtype}; "
                              "checkpoints hold numbers only")
    nbytes = math.prod(shape) * dtype.itemsize
    if header_bytes + nbytes != info.file_size:
        raise CheckpointError(f"{path}: the member {info.filename!r} declares shape {shape} "
                              f"of {dtype} ({nbytes:,} bytes) but holds "
                              f"{info.file_size - header_bytes:,}")
    return tuple(shape), dtype


def _read_meta(archive, info, header, path):
    shape, dtype = header
    if dtype != np.uint8 or len(shape) != 1:
        raise CheckpointError(f"{path}: the {_META} record is not a byte array")
    if shape[0] > MAX_META_BYTES:
        raise CheckpointError(f"{path}: the {_META} record is {shape[0]:,} bytes, over the "
                              f"{MAX_META_BYTES:,}-byte limit")
    with archive.open(info) as f:
        document = np.lib.format.read_array(f, allow_pickle=False)
    try:
        meta = json.loads(document.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: the {_META} record is not JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path} is not a tinygpt checkpoint (format {found!r})")
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{path} was written by a newer tinygpt (checkpoint version {version!r}, this "
            f"one reads up to {VERSION})")
    return meta


# --- arrays inside JSON ---------------------------------------------------------------------
def split_arrays(obj, arrays, prefix):
    """Replace every NumPy/backend array inside nested dicts/lists by a reference
    {"__array__": name}, storing the array in `arrays` under `prefix...`; returns the
    JSON-serialisable rest. Dicts with non-string keys (parameter indices) become
    {"__items__": [[key, value], ...]}."""
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: split_arrays(v, arrays, f"{prefix}{k}/") for k, v in obj.items()}
        return {"__items__": [[k, split_arrays(v, arrays, f"{prefix}{k}/")]
                              for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [split_arrays(v, arrays, f"{prefix}{i}/") for i, v in enumerate(obj)]
    if isinstance(obj, Tensor):
        obj = obj.data
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and not isinstance(obj, np.generic):
        name = prefix.rstrip("/")
        arrays[name] = backend.to_numpy(obj)
        return {"__array__": name}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def join_arrays(obj, arrays):
    """The inverse of `split_arrays`."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        if set(obj) == {"__items__"}:
            return {k: join_arrays(v, arrays) for k, v in obj["__items__"]}
        return {k: join_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_arrays(v, arrays) for v in obj]
    return obj


def array_references(obj, out):
    """Add the array names `obj` refers to (see `split_arrays`) to the set `out`."""
    stack = [obj]
    while stack:            # a loop, not recursion: the JSON may be nested deep
        obj = stack.pop()
        if isinstance(obj, dict):
            if set(obj) == {"__array__"} and isinstance(obj["__array__"], str):
                out.add(obj["__array__"])
            else:
                stack.extend(obj.values())
        elif isinstance(obj, list):
            stack.extend(obj)
