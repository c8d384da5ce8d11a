"""Training checkpoints: one `.npz` file per run, written atomically (floor 5).

A checkpoint holds the model's parameters, the optimizer's state, the model and training
configs, the tokenizer, the iteration and every random generator's state, so `--resume`
continues exactly where training stopped. Arrays are stored as NumPy `.npy` members of
a zip file (`np.savez`, loaded with `allow_pickle=False`: a checkpoint cannot run code);
everything else is one JSON document stored as a byte array under `__tinygpt__`.

Writing goes to a temporary file in the same folder, then `os.replace` renames it into
place: a crash mid-save leaves the previous checkpoint intact. Imports: numpy, stdlib.
"""

import json
import os

import zipfile

import numpy as np

from ..files import atomic_open

FORMAT = "tinygpt-checkpoint"
VERSION = 1
_META = "__tinygpt__"


class CheckpointError(ValueError):
    """A file that is not a readable tinygpt checkpoint."""


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


def load_checkpoint(path, model_class="GPT"):
    """Read a checkpoint: returns (arrays, meta). A missing, truncated or foreign file
    raises an error that names the file and the problem.

    model_class: the model the caller will build ("GPT", a language model, by default);
    a checkpoint of another model (meta "model_class", e.g. a classifier written by
    `python -m tinygpt finetune`) raises an error naming both. None accepts any.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if _META not in names:
                raise CheckpointError(
                    f"{path} is not a tinygpt checkpoint (no {_META} record); expected a file "
                    "written by `python -m tinygpt train`")
            meta = json.loads(bytes(z[_META]).decode("utf-8"))
            arrays = {name: z[name] for name in names if name != _META}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"{path} is not a readable tinygpt checkpoint (truncated or foreign file: {e})"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tinygpt checkpoint (format {meta.get('format')!r})")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path} was written by a newer tinygpt (checkpoint version {meta['version']}, this "
            f"one reads up to {VERSION})")
    found = meta.get("model_class", "GPT")
    if model_class is not None and found != model_class:
        hint = (" (a task classifier: load it with tinygpt.train.finetune.load_classifier)"
                if found != "GPT" else "")
        raise CheckpointError(f"{path} holds a {found}{hint}, not a {model_class}")
    return arrays, meta


def model_arrays(model):
    """(arrays, aliases) to save a model: arrays "model/<key>" -> NumPy array for each
    parameter, a tied one once; aliases maps each other key of a tied parameter to the
    key stored (`lm_head.weight` -> `transformer.wte.weight`)."""
    arrays, aliases, seen = {}, {}, {}
    for key, t in model.state_dict().items():
        if id(t.data) in seen:
            aliases[key] = seen[id(t.data)]
            continue
        seen[id(t.data)] = key
        arrays["model/" + key] = t.numpy()
    return arrays, aliases


def model_state(arrays, aliases):
    """The state dict that `model_arrays` saved, tied keys restored."""
    state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    for alias, target in aliases.items():
        state[alias] = state[target]
    return state
