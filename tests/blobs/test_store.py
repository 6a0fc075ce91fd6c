"""The blob store: content-addressed, written once, never torn, refusing changed sources."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import child_env
from waddle.blobs import store as store_module
from waddle.blobs.store import (
    CHECK_FIRST,
    BlobStore,
    BlobWriter,
    HashMismatch,
    SourceChanged,
    check_sha256,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(store: BlobStore) -> list[Path]:
    """Files still in ``blobs/tmp``: a write that failed must leave none."""
    tmp = store.dir / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


@pytest.mark.parametrize("size", [5, CHECK_FIRST + 1], ids=["small", "large"])
def test_bytes_land_under_their_hash_once(tmp_path: Path, size: int) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(size)
    ref = store.put_bytes(data)
    assert (ref.sha256, ref.size) == (sha(data), size)
    path = store.path(ref.sha256)
    assert path == tmp_path / "blobs" / ref.sha256[:2] / ref.sha256
    assert path.read_bytes() == data and store.exists(ref.sha256)
    stat = path.stat()
    assert store.put_bytes(data) == ref
    assert path.stat() == stat  # the same content is not written again
    with store.open(ref.sha256) as file:
        assert file.read() == data
    assert store.verify(ref.sha256) and not leftovers(store)


def test_content_stored_lately_is_looked_for_not_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same table logged at every step: the store remembers the digest and finds the
    blob with a stat instead of making a file that the link then refuses. What it
    remembers is checked: a blob removed since (retention) is written again."""
    store = BlobStore(tmp_path)
    data = os.urandom(1000)
    ref = store.put_bytes(data)
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a: opened.append(path) or real_open(path, *a))
    assert [store.put_bytes(data) for _ in range(3)] == [ref] * 3
    assert opened == []
    store.path(ref.sha256).unlink()
    assert store.put_bytes(data) == ref
    assert store.verify(ref.sha256) and len(opened) == 1


# A child that writes one blob and is SIGKILLed halfway through writing its bytes.
KILLED_MID_WRITE = """
import os, signal, sys
from waddle.blobs.store import BlobStore
real_write = os.write
def write(fd, data):
    real_write(fd, bytes(data[: len(data) // 2]))
    os.kill(os.getpid(), signal.SIGKILL)
os.write = write
BlobStore(sys.argv[1]).put_bytes(bytes.fromhex(sys.argv[2]))
"""


@pytest.mark.skipif(not store_module._UNNAMED_OK, reason="no O_TMPFILE or /proc here")
def test_a_writer_killed_mid_blob_leaves_nothing_behind(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    child = subprocess.run(
        [sys.executable, "-c", KILLED_MID_WRITE, str(tmp_path), data.hex()],
        env=child_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    store = BlobStore(tmp_path)
    assert not list(store.dir.glob("??/*"))  # no half blob under its name
    assert not leftovers(store)  # and no temp file for anyone to clean up
    ref = store.put_bytes(data)
    assert store.verify(ref.sha256) and ref.sha256 == sha(data)


@pytest.mark.parametrize("refused", ["open", "open in a new store", "link"])
def test_without_unnamed_files_it_renames_and_stops_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    """A filesystem without O_TMPFILE (or a kernel before 3.11) refuses the open
    (EOPNOTSUPP; in a new store, where ``blobs/tmp`` is still missing, ENOENT first); a
    sandbox's /proc may refuse to name the file (EXDEV). Either way the store writes temp
    file + rename from then on, and leaves no temp file."""
    asked: list[str] = []
    real_open, real_link = os.open, os.link
    unnamed = getattr(os, "O_TMPFILE", -1)

    def refusing_open(path: str, flags: int, *args: int) -> int:
        if refused.startswith("open") and flags & unnamed == unnamed:
            if refused == "open in a new store" and not os.path.isdir(path):
                raise FileNotFoundError(errno.ENOENT, "no such folder", path)
            asked.append(path)
            raise OSError(errno.EOPNOTSUPP, "no unnamed files here")
        return real_open(path, flags, *args)

    def refusing_link(source: str, target: str, **kwargs: int) -> None:
        if refused == "link" and source.startswith("/proc/self/fd/"):
            asked.append(target)
            raise OSError(errno.EXDEV, "not across this /proc")
        real_link(source, target, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    monkeypatch.setattr(os, "link", refusing_link)
    store = BlobStore(tmp_path)
    monkeypatch.setattr(store, "_unnamed", True)
    refs = [store.put_bytes(data) for data in (b"a", b"b", b"a")]
    assert len(asked) == 1
    assert [ref.sha256 for ref in refs] == [sha(b"a"), sha(b"b"), sha(b"a")]
    assert all(store.verify(ref.sha256) for ref in refs) and not leftovers(store)
    assert store.unsynced == 0  # sync_each: every one was fsynced


def test_the_fan_out_folders_are_made_once_in_the_background(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.put_bytes(b"first")
    deadline = time.monotonic() + 30
    while len(list(store.dir.glob("??"))) < 256 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(p.name for p in store.dir.glob("??")) == [f"{i:02x}" for i in range(256)]
    assert [p for p in store.dir.glob("??/*")] == [store.path(sha(b"first"))]


def test_verify_finds_a_missing_or_damaged_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    ref = store.put_bytes(b"x" * 1000)
    store.path(ref.sha256).write_bytes(b"y" * 1000)
    assert not store.verify(ref.sha256)
    assert not store.verify(sha(b"never stored"))


def test_a_name_that_is_not_a_hash_is_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    for bad in ("../../etc/passwd", "A" * 64, "ab", sha(b"x").upper()):
        with pytest.raises(ValueError):
            store.path(bad)
    assert check_sha256(sha(b"x")) == sha(b"x")


def test_a_large_file_is_hashed_while_copied(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    data = os.urandom(3 * (1 << 20) + 17)
    source.write_bytes(data)
    store = BlobStore(tmp_path / "root")
    ref = store.put_file(source)
    assert (ref.sha256, ref.size) == (sha(data), len(data))
    assert store.path(ref.sha256).read_bytes() == data and not leftovers(store)


def test_chunks_under_a_wrong_hash_are_not_kept(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(HashMismatch) as caught:
        store.put_chunks([b"ab", b"c"], expected=sha(b"abd"))
    assert caught.value.got == sha(b"abc")
    assert not store.exists(sha(b"abc")) and not store.exists(sha(b"abd"))
    assert not leftovers(store)
    assert store.put_chunks([b"ab", b"c"], expected=sha(b"abc")).size == 3


@pytest.mark.parametrize("change", ["disappears", "grows", "is replaced"])
def test_a_file_that_changes_while_hashed_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    source = tmp_path / "ckpt.pt"
    source.write_bytes(os.urandom(2 * (1 << 20)))
    store = BlobStore(tmp_path / "root")
    real_write = BlobWriter.write

    def write(self: BlobWriter, chunk: bytes) -> None:
        """The first chunk copied: the training job rotates its checkpoint right then."""
        if self.size == 0:
            if change == "grows":
                with open(source, "ab") as file:
                    file.write(b"more")
            else:
                source.unlink()
                if change == "is replaced":
                    source.write_bytes(b"another checkpoint")
        real_write(self, chunk)

    monkeypatch.setattr(BlobWriter, "write", write)
    with pytest.raises(SourceChanged, match=r"ckpt\.pt"):
        store.put_file(source)
    assert not leftovers(store)
    assert not list(store.dir.glob("??/*"))


@pytest.mark.parametrize("how", ["put_chunks", "put_bytes"])
def test_writers_of_the_same_content_race_harmlessly(tmp_path: Path, how: str) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(1 << 15)
    put = (
        (lambda: store.put_chunks([data]))
        if how == "put_chunks"
        else (lambda: store.put_bytes(data))
    )
    refs = []
    threads = [threading.Thread(target=lambda: refs.append(put())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(refs) == 8 and len(set(refs)) == 1
    assert store.verify(sha(data)) and not leftovers(store)


def test_blobs_without_their_own_fsync_are_synced_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []
    syncs: list[None] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: fsyncs.append(fd) or real_fsync(fd))
    monkeypatch.setattr(os, "sync", lambda: syncs.append(None))
    store = BlobStore(tmp_path, sync_each=False)
    store.put_bytes(b"a")
    store.put_bytes(b"b")
    store.put_bytes(b"a")  # already there: nothing to sync
    assert (fsyncs, store.unsynced) == ([], 2)
    source = tmp_path / "file"
    source.write_bytes(b"c")
    store.put_file(source)  # files always fsync
    assert len(fsyncs) == 1 and store.unsynced == 2
    store.sync()
    store.sync()
    assert len(syncs) == 1 and store.unsynced == 0
    assert all(store.verify(sha(data)) for data in (b"a", b"b", b"c"))
