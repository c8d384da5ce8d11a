"""Files written safely, folders locked, and the cache folder. Standard library only: any
floor may import it.

Every file tinygpt writes for a user (checkpoints, weights, tokenizers, generated docs)
goes to a temporary file in the same folder, is flushed to disk, and only then renamed
into place: a crash or a full disk leaves the previous file as it was, never half of one.
A writer killed before the rename (`kill -9`, a power cut) leaves its temporary file
behind, named `.NAME.PID.HEX.tmp`; the next write in that folder removes the temporary
files of writers that are no longer running (`remove_stale_temp_files`).

Two processes writing one folder at once (two training runs on one `--out_dir`) would each
replace the other's files. `FolderLock` is an advisory, exclusive lock on a folder, held
for as long as one writer uses it: the operating system releases it when the process ends,
however it ends, so a killed run never leaves a stale lock behind.
"""

import contextlib
import errno
import json
import os
import re
import secrets
import warnings
import weakref
from pathlib import Path

try:
    import fcntl
except ImportError:         # Windows: no advisory locks; FolderLock then locks nothing
    fcntl = None

LOCK_NAME = ".tinygpt.lock"
# `.NAME.PID.HEX.tmp` (atomic_open) and `.NAME.PID.HEX.part` (downloads)
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.(?:tmp|part)$")


def cache_dir():
    """Where downloads and hand-supplied files are kept: $TINYGPT_CACHE, else
    $XDG_CACHE_HOME/tinygpt, else ~/.cache/tinygpt."""
    if os.environ.get("TINYGPT_CACHE"):
        return Path(os.environ["TINYGPT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tinygpt"


# --- temporary files ----------------------------------------------------------------------
def temp_path(path, suffix="tmp"):
    """The name of a temporary file beside `path` for this process: `.NAME.PID.HEX.tmp`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.{suffix}")


def pid_alive(pid):
    """True when a process `pid` exists (also one of another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:         # a platform without signal 0 (Windows): assume it runs
        return True
    return True


def remove_stale_temp_files(folder):
    """Remove the temporary files that writers no longer running left in `folder` (killed
    during a save); returns their names. Files of live processes, this one included, stay."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TEMP_NAME.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))
            removed.append(name)
    return removed


@contextlib.contextmanager
def atomic_open(path, mode="wb", overwrite=True, **kwargs):
    """Open a temporary file beside `path` for writing; on a clean exit it is synced and
    renamed to `path`, on an error it is removed and `path` is untouched.

    With overwrite=False an existing `path` is never replaced, even by a file that appears
    while this one is written: FileExistsError instead (the temporary file is removed).

    >>> with atomic_open("out/ckpt.npz") as f:
    ...     f.write(data)
    """
    path = Path(path)
    remove_stale_temp_files(path.parent)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())   # the bytes are on disk before the rename makes them the file
        if overwrite:
            os.replace(tmp, path)
        else:
            _rename_no_replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _rename_no_replace(tmp, path):
    """Rename `tmp` to `path` unless `path` exists (checked and done in one step)."""
    try:
        os.link(tmp, path)              # fails with EEXIST when path exists: no race
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; not replaced") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # A file system without hard links: claim the name, then replace the empty claim.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise FileExistsError(f"{path} already exists; not replaced") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write_text(path, text, overwrite=True):
    """Write `text` (UTF-8, newlines as given) to `path` through `atomic_open`."""
    with atomic_open(path, "w", overwrite=overwrite, encoding="utf-8", newline="") as f:
        f.write(text)


# --- folder locks -------------------------------------------------------------------------
class FolderInUseError(RuntimeError):
    """Another process holds the lock of a folder tinygpt was asked to write."""


_held = weakref.WeakSet()   # the FolderLocks this process holds


def _close_in_child():
    # A forked child (a data-parallel worker) shares the lock's open file: closing its copy
    # leaves the parent's lock in place, and an orphaned child cannot keep it alive. The
    # child's copy of the lock then holds nothing, so it can never remove the lock file.
    for lock in list(_held):
        with contextlib.suppress(OSError, TypeError):
            os.close(lock.fd)
        lock.fd = None
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class FolderLock:
    """An exclusive advisory lock on `folder` (created if missing), held from `acquire()`
    to `release()` or the end of the process; also a context manager.

    A second holder, in this process or another, gets FolderInUseError naming the folder
    and the process that holds it (its pid is written in the lock file) and `hint`, what
    to do instead. The lock file (`.tinygpt.lock`) is removed on release. Without `fcntl`
    (Windows) nothing is locked, and `acquire()` says so in a RuntimeWarning.

    >>> with FolderLock("out"):
    ...     save_everything("out")
    """

    def __init__(self, folder, hint="wait for it to finish, or write somewhere else"):
        self.folder, self.hint = Path(folder), hint
        self.path = self.folder / LOCK_NAME
        self.fd = None

    @property
    def held(self):
        return self.fd is not None

    def check(self):
        """Raise FolderInUseError now if another holder has the lock; creates nothing."""
        if self.fd is not None or fcntl is None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError:
            return                  # no lock file (or no folder): nobody holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._in_use(fd) from None
        finally:
            os.close(fd)            # closing our descriptor releases a lock we just took

    def acquire(self):
        if self.fd is not None:
            return self
        if fcntl is None:
            warnings.warn(f"this platform has no fcntl (advisory locks): {self.folder} is not "
                          f"locked, so nothing stops a second run from writing it at the same "
                          f"time", RuntimeWarning, stacklevel=2)
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _folder_error(self.folder, e) from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise _folder_error(self.folder, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                error = self._in_use(fd)
                os.close(fd)
                raise error from None
            # The file may have been removed by its last holder between our open and our
            # lock: then we hold a lock on a file nobody else can see; take the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        _held.add(self)
        return self

    def _in_use(self, fd):
        holder = _read_pid(fd)
        who = (f"process {holder}" + (" (this process)" if holder == os.getpid() else "")
               if holder else "another process")
        return FolderInUseError(f"{self.folder} is in use by {who}, which holds {self.path}: "
                                f"{self.hint}")

    def release(self):
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        _held.discard(self)
        # Removed while still locked, so no one can lock the old file after we let go.
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False

    def __del__(self):
        with contextlib.suppress(Exception):
            self.release()


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _folder_error(folder, error):
    """An OSError about `folder` that names it and says what is wrong in words."""
    reason = error.strerror or str(error)
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        reason = "a file (not a folder) is in the way"
    return type(error)(f"cannot use {folder} as a folder: {reason}")


def read_json(path):
    """The JSON document in the file `path`; a file that is not JSON (or nests too deep to
    parse) raises ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON ({type(e).__name__}: {e})") from None
