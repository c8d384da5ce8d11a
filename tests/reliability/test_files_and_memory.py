"""tinygpt/files.py and tinygpt/memory.py: atomic writes that never replace what they must
not, folder locks across fork, stale temporary files, and memory figures with and without
/proc."""

import builtins
import os
import subprocess
import sys

import pytest

from tinygpt.train import parallel


def test_atomic_open_never_replaces_when_told_not_to(tmp_path):
    from tinygpt.files import atomic_open, atomic_write_text
    path = tmp_path / "f.txt"
    atomic_write_text(path, "first", overwrite=False)
    with pytest.raises(FileExistsError, match="not replaced"):
        atomic_write_text(path, "second", overwrite=False)
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["f.txt"]
    atomic_write_text(path, "third")
    assert path.read_text() == "third"
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "third" and os.listdir(tmp_path) == ["f.txt"]


def test_only_dead_writers_temporary_files_are_removed(tmp_path):
    from tinygpt.files import remove_stale_temp_files
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = [f".ckpt.npz.{dead.pid}.00ff00ff.tmp", f".bpe.json.{dead.pid}.00ff00ff.part",
             f".ckpt.npz.{os.getpid()}.00ff00ff.tmp", "ckpt.npz", ".ckpt.npz.12.notahex.tmp"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(names[:2])
    assert sorted(os.listdir(tmp_path)) == sorted(names[2:])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    from tinygpt.files import FolderInUseError, FolderLock
    lock = FolderLock(tmp_path).acquire()
    done_read, done_write = os.pipe()           # the child -> "I have released my copy"
    end_read, end_write = os.pipe()             # the parent -> "you may exit"
    pid = os.fork()
    if pid == 0:                                # the child outlives the parent's release
        status = 1
        try:
            status = 1 if lock.held else 0
            lock.release()                      # its copy holds nothing, removes nothing
        finally:
            os.write(done_write, b"x")
            os.read(end_read, 1)
            os._exit(status)
    try:
        os.read(done_read, 1)
        # The lock and its file are still the parent's after the child's release ...
        assert (tmp_path / ".tinygpt.lock").exists()
        with pytest.raises(FolderInUseError, match="this process"):
            FolderLock(tmp_path).acquire()
        lock.release()
        with FolderLock(tmp_path):              # ... and the child's copy did not keep it
            pass
    finally:
        os.write(end_write, b"x")
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        for fd in (done_read, done_write, end_read, end_write):
            os.close(fd)


def test_a_stale_lock_file_of_a_killed_run_is_taken_over(tmp_path):
    from tinygpt.files import FolderLock
    (tmp_path / ".tinygpt.lock").write_text("999999999\n")
    with FolderLock(tmp_path) as lock:
        assert (tmp_path / ".tinygpt.lock").read_text() == f"{os.getpid()}\n"
        assert lock.held
    assert not (tmp_path / ".tinygpt.lock").exists()


def test_read_json_names_the_file(tmp_path):
    from tinygpt.files import read_json
    (tmp_path / "deep.json").write_text("[" * 100_000)
    with pytest.raises(ValueError, match="deep.json is not valid JSON"):
        read_json(tmp_path / "deep.json")


def test_peak_rss_without_proc_falls_back_to_getrusage(monkeypatch):
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    from tinygpt import memory
    with_proc = parallel.peak_rss_mb()
    monkeypatch.setattr(builtins, "open", no_proc)
    without = parallel.peak_rss_mb()            # the data-parallel workers' figure
    assert without is not None and without > 1
    if sys.platform.startswith("linux"):
        assert with_proc > 1
    assert memory.peak_rss_mb() == pytest.approx(without, rel=0.5)


def test_total_memory_and_the_check_of_what_fits(monkeypatch):
    from tinygpt import memory
    total = memory.total_memory()
    assert total is None or total > 2**26
    monkeypatch.setattr(memory, "total_memory", lambda: 8 * 10**9)
    memory.check_fits(8 * 10**9, "a model")
    with pytest.raises(ValueError, match=r"a model needs 9.0 GB, more than this machine's "
                                         r"8.0 GB of memory"):
        memory.check_fits(9 * 10**9, "a model")
    monkeypatch.setattr(memory, "total_memory", lambda: None)
    memory.check_fits(10**18, "anything")       # unknown: nothing refused
    assert [memory.format_bytes(n) for n in (512, 3.1e6, 1.7e12)] == ["512 B", "3.1 MB",
                                                                      "1.7 TB"]
