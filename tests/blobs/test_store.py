"""The blob store: content-addressed, written once, never torn, refusing changed sources."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from waddle.blobs.store import BlobStore, BlobWriter, HashMismatch, SourceChanged, check_sha256


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(store: BlobStore) -> list[Path]:
    """Files still in ``blobs/tmp``: a write that failed must leave none."""
    tmp = store.dir / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def test_bytes_land_under_their_hash_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    ref = store.put_bytes(b"hello")
    assert (ref.sha256, ref.size) == (sha(b"hello"), 5)
    path = store.path(ref.sha256)
    assert path == tmp_path / "blobs" / ref.sha256[:2] / ref.sha256
    assert path.read_bytes() == b"hello" and store.exists(ref.sha256)
    mtime = path.stat().st_mtime_ns
    assert store.put_bytes(b"hello") == ref
    assert path.stat().st_mtime_ns == mtime  # the same content is not written again
    with store.open(ref.sha256) as file:
        assert file.read() == b"hello"
    assert store.verify(ref.sha256) and not leftovers(store)


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


def test_writers_of_the_same_content_race_harmlessly(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(1 << 16)
    refs = []
    threads = [
        threading.Thread(target=lambda: refs.append(store.put_chunks([data]))) for _ in range(8)
    ]
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
