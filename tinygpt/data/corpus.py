"""Training texts: a built-in default, tiny Shakespeare, or any UTF-8 file (floor 4, data).

`load_text(source)` takes one of

- "default": a corpus that ships with every Python installation, so training works offline
  on a fresh machine with nothing downloaded. It is the Python Language Reference's help
  topics (`pydoc_data.topics`, the pages `help("topics")` shows: statements, operators,
  the data model, ...), in sorted topic order, separated by blank lines: about 465,000
  characters of English prose and grammar, 103 distinct characters on Python 3.11. CPython
  generates that file from its documentation at each release, so the text is the same on
  every machine with the same Python release (between releases it changes only by
  documentation fixes).
- "shakespeare": tiny Shakespeare (1,115,394 characters, 65 distinct), found in this order:
  the file named by $TINYGPT_SHAKESPEARE, the cache folder (`cache_dir()`), else downloaded
  once from SHAKESPEARE_URL into the cache. Its sha256 is checked every time.
- a path to a UTF-8 text file.

Downloads go to a temporary file beside the target, are checked, and only then renamed
into place, so an interrupted download never leaves a half file under the real name (and
the next download removes what a killed one left).

Imports: the standard library only.
"""

import functools
import hashlib
import os
import sys
from pathlib import Path

from ..files import cache_dir  # noqa: F401  (re-exported by tinygpt.data)
from ..files import remove_stale_temp_files, temp_path
from ..memory import check_fits, format_bytes

CORPORA = ("default", "shakespeare")
# Bytes of memory a text file takes a byte of it: the bytes read, then a token id (int64,
# 8 bytes) for each, as a trainer holds them.
TEXT_MEMORY_FACTOR = 9
SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                   "tinyshakespeare/input.txt")
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_ENV = "TINYGPT_SHAKESPEARE"


class DownloadError(OSError):
    """A download failed: no connection, an HTTP error, or a checksum mismatch."""


# --- the built-in default -----------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def default_text():
    """The built-in corpus: CPython's help topics joined in sorted order (see above)."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:
        raise RuntimeError(
            "the 'default' corpus is the standard library's pydoc_data.topics, which this "
            "Python installation lacks; pass a text file instead (or 'shakespeare')") from e
    return "\n\n".join(topics[name] for name in sorted(topics))


# --- downloads --------------------------------------------------------------------------
def sha256_of(path):
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url, path, sha256=None, timeout=30.0, progress=True):
    """Fetch `url` (http, https or file) into `path` and return `path`.

    The bytes go to a temporary file beside `path`; when `sha256` is given they must hash
    to it, else the temporary file is deleted and DownloadError says so. Only a complete,
    checked download is renamed to `path`. A progress line goes to stderr.
    """
    # Imported here: urllib pulls in http, email and ssl, 15 ms that only a download needs.
    import http.client
    import urllib.error
    import urllib.request

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)        # downloads killed before they finished
    tmp = temp_path(path, "part")
    digest = hashlib.sha256()
    show = _Progress(url, sys.stderr) if progress else None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            length = response.headers.get("Content-Length") if response.headers else None
            total = int(length) if length and length.isdigit() else None
            done = 0
            for chunk in iter(lambda: response.read(1 << 16), b""):
                f.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if show:
                    show.update(done, total)
        if show:
            show.finish(done)
    except (OSError, http.client.HTTPException, ValueError) as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP error {e.code} ({e.reason})"
        else:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise DownloadError(f"could not download {url}: {reason}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sha256 is not None and digest.hexdigest() != sha256.lower():
        tmp.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {url}: expected sha256 {sha256}, got "
            f"{digest.hexdigest()}; the downloaded file was deleted (the server sent "
            "something else: a proxy's error page, or a changed file)")
    os.replace(tmp, path)
    return path


class _Progress:
    """'downloading URL: 0.5 / 1.1 MB' on stderr: rewritten in place on a terminal, a
    line at the start and one at the end elsewhere (log files)."""

    def __init__(self, url, stream):
        self.url, self.stream = url, stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        print(f"downloading {url}", file=stream, flush=True, end="" if self.tty else "\n")

    def update(self, done, total):
        if self.tty:
            size = f"{done / 1e6:.1f} / {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
            print(f"\rdownloading {self.url}: {size}", file=self.stream, end="", flush=True)

    def finish(self, done):
        start = "\r" if self.tty else ""
        print(f"{start}downloaded {self.url}: {done:,} bytes", file=self.stream, flush=True)


def _how_to_supply():
    return (f"to use tiny Shakespeare without a connection, download {SHAKESPEARE_URL} "
            f"on a machine that has one and either put it at "
            f"{cache_dir() / SHAKESPEARE_FILE} or set {SHAKESPEARE_ENV}=/path/to/input.txt")


def _check_shakespeare(path, origin):
    digest = sha256_of(path)
    if digest != SHAKESPEARE_SHA256:
        raise ValueError(
            f"{path} ({origin}) is not tiny Shakespeare: its sha256 is {digest}, expected "
            f"{SHAKESPEARE_SHA256}. To train on this file anyway, pass its path as the data "
            "source instead of 'shakespeare'")
    return path


def shakespeare_path(url=SHAKESPEARE_URL, timeout=30.0, progress=True):
    """The path of a checked copy of tiny Shakespeare: $TINYGPT_SHAKESPEARE, else the
    cached copy, else a fresh download from `url` into the cache."""
    local = os.environ.get(SHAKESPEARE_ENV)
    if local:
        path = Path(local).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"${SHAKESPEARE_ENV} names {str(path)!r}, which is not a file")
        return _check_shakespeare(path, f"from ${SHAKESPEARE_ENV}")
    cached = cache_dir() / SHAKESPEARE_FILE
    if cached.is_file():
        return _check_shakespeare(cached, "the cached copy")
    try:
        return download(url, cached, sha256=SHAKESPEARE_SHA256, timeout=timeout,
                        progress=progress)
    except DownloadError as e:
        raise DownloadError(f"{e}\n{_how_to_supply()}") from e


# --- loading ----------------------------------------------------------------------------
def read_text_file(path):
    """The text of a UTF-8 file, exactly (line endings kept). A folder, a missing file or
    one that is not a regular file (a device such as /dev/zero, a pipe: they may never
    end) raises an OSError naming it, before anything is read; a byte that is not valid
    UTF-8 raises ValueError naming its offset. A file whose bytes and tokens (as int64, up
    to one a byte: TEXT_MEMORY_FACTOR times its size) would not fit in this machine's
    memory raises ValueError before it is read (tinygpt.memory.check_fits)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; expected a text file")
    if not path.is_file():
        raise OSError(f"{str(path)!r} is not a regular file (a device, pipe or socket, which "
                      "may never end); expected a text file")
    size = path.stat().st_size
    check_fits(size * TEXT_MEMORY_FACTOR,
               f"{path} ({format_bytes(size)}), read and tokenized (its bytes, then a token "
               f"id of 8 bytes for each)")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text: byte 0x{data[e.start]:02x} at byte offset {e.start} "
            f"cannot be decoded ({e.reason}); convert the file to UTF-8 first") from None


def load_text(source="default", min_chars=1):
    """The training text of `source`: "default", "shakespeare" or a file path (see the
    module docstring). A text with fewer than `min_chars` characters raises ValueError:
    pass block_size + 1, the length of one (input, target) window.

    >>> text = load_text("default", min_chars=65)
    """
    if min_chars < 1:
        raise ValueError(f"min_chars must be >= 1, got {min_chars}")
    if isinstance(source, str) and source == "default":
        name, text = "the default corpus", default_text()
    elif isinstance(source, str) and source == "shakespeare":
        path = shakespeare_path()
        name, text = str(path), read_text_file(path)
    else:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(
                f"a corpus is a name or a path, got {type(source).__name__}")
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"no such file: {str(source)!r}; a corpus is a path to a UTF-8 text file or "
                f"one of the built-in names {', '.join(repr(c) for c in CORPORA)}")
        name, text = str(path), read_text_file(path)
    if not text:
        raise ValueError(f"{name} is empty; a corpus needs at least {min_chars} characters")
    if len(text) < min_chars:
        raise ValueError(
            f"{name} has {len(text)} characters, fewer than the {min_chars} needed (a model "
            "with block_size T needs T + 1 characters for one input/target window)")
    return text
