"""Corpora: the built-in default (offline), files by path and their bad inputs, tiny
Shakespeare from $TINYGPT_SHAKESPEARE, the cache or a download, and the download code
against file:// URLs and a server on 127.0.0.1 (never the network)."""

import hashlib
import http.server
import os
import threading
from functools import partial

import pytest

from tinygpt.data import corpus
from tinygpt.data.corpus import (SHAKESPEARE_SHA256, SHAKESPEARE_URL, DownloadError,
                                 cache_dir, default_text, download, load_text,
                                 shakespeare_path)

UNREACHABLE = "http://127.0.0.1:9/input.txt"    # port 9 (discard): nothing listens there


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No $TINYGPT_SHAKESPEARE, and a cache folder of our own."""
    monkeypatch.delenv("TINYGPT_SHAKESPEARE", raising=False)
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- the default corpus ---------------------------------------------------------------------
def test_default_corpus_is_offline_sizeable_and_repeatable():
    text = load_text("default")
    assert len(text) > 400_000
    assert 60 < len(set(text)) < 200
    assert load_text() == text == default_text()
    # It is the standard library's help topics, in sorted order.
    from pydoc_data.topics import topics
    first = sorted(topics)[0]
    assert text.startswith(topics[first])
    assert topics["if"] in text


# --- files by path ------------------------------------------------------------------------
def test_a_file_is_read_exactly(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes("line one\r\nline two\n\u00e9t\u00e9 \U0001F600".encode("utf-8"))
    assert load_text(str(path)) == "line one\r\nline two\n\u00e9t\u00e9 \U0001F600"
    assert load_text(path) == load_text(str(path))


def test_missing_file_names_it_and_the_built_in_names(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError) as info:
        load_text(str(missing))
    message = str(info.value)
    assert str(missing) in message and "'default'" in message and "'shakespeare'" in message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_text(path)


def test_file_shorter_than_min_chars(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij", encoding="utf-8")          # 10 characters
    assert load_text(path, min_chars=10) == "abcdefghij"
    with pytest.raises(ValueError, match="10 characters, fewer than the 65 needed"):
        load_text(path, min_chars=65)


def test_non_utf8_file_names_the_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 au lait".encode("latin-1"))    # 0xe9 at offset 3
    with pytest.raises(ValueError, match="not UTF-8.*0xe9 at byte offset 3"):
        load_text(path)


def test_folder_and_bad_types(tmp_path):
    with pytest.raises(IsADirectoryError):
        load_text(tmp_path)
    with pytest.raises(TypeError):
        load_text(42)
    with pytest.raises(ValueError, match="min_chars"):
        load_text("default", min_chars=0)


# --- downloads ------------------------------------------------------------------------------
def _source(tmp_path, data=b"To be, or not to be\n" * 1000):
    path = tmp_path / "source.txt"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def test_download_file_url_with_checksum(tmp_path, capsys):
    source, digest = _source(tmp_path)
    target = tmp_path / "out" / "corpus.txt"
    assert download(source.as_uri(), target, sha256=digest) == target
    assert target.read_bytes() == source.read_bytes()
    assert _leftovers(target.parent) == []
    assert "download" in capsys.readouterr().err     # the progress line goes to stderr


def test_checksum_mismatch_deletes_the_download(tmp_path):
    source, digest = _source(tmp_path)
    target = tmp_path / "out" / "corpus.txt"
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=f"checksum mismatch.*{wrong}.*{digest}.*deleted"):
        download(source.as_uri(), target, sha256=wrong, progress=False)
    assert not target.exists() and _leftovers(target.parent) == []


@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www, stopped after the test."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_from_a_local_http_server(local_server, tmp_path, capsys):
    root, base = local_server
    data = os.urandom(300_000)
    (root / "blob.bin").write_bytes(data)
    target = tmp_path / "got.bin"
    download(f"{base}/blob.bin", target, sha256=hashlib.sha256(data).hexdigest(), timeout=10)
    assert target.read_bytes() == data
    assert "300,000 bytes" in capsys.readouterr().err
    with pytest.raises(DownloadError, match="404"):
        download(f"{base}/missing.txt", tmp_path / "missing.txt", timeout=10, progress=False)
    assert not (tmp_path / "missing.txt").exists() and _leftovers(tmp_path) == []


def test_unreachable_url_raises_download_error(tmp_path):
    with pytest.raises(DownloadError, match="could not download http://127.0.0.1:9"):
        download(UNREACHABLE, tmp_path / "x.txt", timeout=2, progress=False)
    assert list(tmp_path.iterdir()) == []


# --- tiny Shakespeare -------------------------------------------------------------------------
def test_offline_shakespeare_says_how_to_supply_the_file(clean_env):
    with pytest.raises(DownloadError) as info:
        shakespeare_path(url=UNREACHABLE, timeout=2, progress=False)
    message = str(info.value)
    assert SHAKESPEARE_URL in message
    assert str(clean_env / "tinyshakespeare.txt") in message
    assert "TINYGPT_SHAKESPEARE" in message


def test_shakespeare_from_the_environment_variable(shared_data, monkeypatch):
    monkeypatch.setenv("TINYGPT_SHAKESPEARE", str(shared_data / "tinyshakespeare.txt"))
    text = load_text("shakespeare")
    assert len(text) == 1_115_394 and len(set(text)) == 65
    assert text.startswith("First Citizen:")


def test_shakespeare_downloaded_once_into_the_cache(shared_data, clean_env):
    url = (shared_data / "tinyshakespeare.txt").as_uri()
    path = shakespeare_path(url=url, progress=False)
    assert path == clean_env / "tinyshakespeare.txt" and path.is_file()
    # The second time it comes from the cache: an unreachable URL does not matter.
    assert shakespeare_path(url=UNREACHABLE, timeout=1) == path


def test_shakespeare_checksums_are_checked(tmp_path, monkeypatch, clean_env):
    impostor = tmp_path / "not_shakespeare.txt"
    impostor.write_text("Hamlet, abridged.", encoding="utf-8")
    monkeypatch.setenv("TINYGPT_SHAKESPEARE", str(impostor))
    with pytest.raises(ValueError, match=f"not tiny Shakespeare.*{SHAKESPEARE_SHA256}"):
        load_text("shakespeare")
    monkeypatch.setenv("TINYGPT_SHAKESPEARE", str(tmp_path / "absent.txt"))
    with pytest.raises(FileNotFoundError, match="TINYGPT_SHAKESPEARE.*absent.txt"):
        load_text("shakespeare")
    # A wrong file downloaded from somewhere is refused and not kept.
    monkeypatch.delenv("TINYGPT_SHAKESPEARE")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        shakespeare_path(url=impostor.as_uri(), progress=False)
    assert not (clean_env / "tinyshakespeare.txt").exists()


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("TINYGPT_CACHE")
    assert cache_dir() == tmp_path / "b" / "tinygpt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == corpus.Path.home() / ".cache" / "tinygpt"
