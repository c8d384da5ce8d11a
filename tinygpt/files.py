"""Files written safely, and the cache folder. Standard library only: any floor may import it.

Every file tinygpt writes for a user (checkpoints, weights, tokenizers, generated docs)
goes to a temporary file in the same folder, is flushed to disk, and only then renamed
into place: a crash or a full disk leaves the previous file as it was, never half of one.
"""

import contextlib
import os
import secrets
from pathlib import Path


def cache_dir():
    """Where downloads and hand-supplied files are kept: $TINYGPT_CACHE, else
    $XDG_CACHE_HOME/tinygpt, else ~/.cache/tinygpt."""
    if os.environ.get("TINYGPT_CACHE"):
        return Path(os.environ["TINYGPT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tinygpt"


@contextlib.contextmanager
def atomic_open(path, mode="wb", **kwargs):
    """Open a temporary file beside `path` for writing; on a clean exit it is synced and
    renamed to `path`, on an error it is removed and `path` is untouched.

    >>> with atomic_open("out/ckpt.npz") as f:
    ...     f.write(data)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())   # the bytes are on disk before the rename makes them the file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text):
    """Write `text` (UTF-8, newlines as given) to `path` through `atomic_open`."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
