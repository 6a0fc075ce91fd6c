"""Parked streams (waddle/eventlog/reader.py, ``follow``): a finished stream is not read
again until it changes, and every change still reaches the tail: a resume, a stream
created again, a new stream, with change notification, with a notification lost and
with polling only (a filesystem without inotify)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.helpers import eventually
from waddle.eventlog import parking, watch
from waddle.eventlog import reader as reader_module
from waddle.eventlog.parking import Parking
from waddle.eventlog.reader import Batch, LogReader, Offset
from waddle.eventlog.segment import segment_name
from waddle.eventlog.writer import StreamWriter

START = Offset()
# How each parked stream is woken: by a notification (a parked stream is otherwise
# checked only every 60 s, far beyond the waits below), or by the polling check alone.
MODES = {
    "notified": {"notify": True, "park_check": 60.0},
    "polling": {"notify": False, "park_check": 0.2},
}


class CountingReader(LogReader):
    """Counts the reads of each stream: a parked stream is not read."""

    def __init__(self, root: Path, **options: Any) -> None:
        super().__init__(root, **options)
        self.reads: Counter[str] = Counter()

    def read(self, stream: str, offset: Offset = START) -> Batch:
        self.reads[stream] += 1
        return super().read(stream, offset)


class Tail:
    """``follow`` in a thread, keeping every event and batch it yields."""

    def __init__(self, reader: LogReader) -> None:
        self.reader = reader
        self.stop = threading.Event()
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.restarted: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for batches in self.reader.follow({}, self.stop, 0.01):
            for batch in batches:
                if batch.restarted:
                    self.restarted.append(batch.stream)
                    self.events[batch.stream] = []
                self.events.setdefault(batch.stream, []).extend(batch.events)

    def seqs(self, stream: str) -> list[int]:
        return [event["seq"] for event in self.events.get(stream, [])]

    def types(self, stream: str) -> list[str]:
        return [event["type"] for event in self.events.get(stream, [])]


@pytest.fixture
def tail_of(tmp_path: Path) -> Iterator[Any]:
    tails: list[Tail] = []

    def start(reader: LogReader) -> Tail:
        tail = Tail(reader)
        tails.append(tail)
        tail.thread.start()
        return tail

    yield start
    for tail in tails:
        tail.stop.set()
        tail.thread.join(10)
        assert not tail.thread.is_alive()


def write(root: Path, stream: str, count: int, *, finish: bool = True) -> Path:
    """``count`` metrics events (and a finish) to ``stream``, resuming it if it exists;
    the folder is dated an hour back, as a run finished earlier would be."""
    writer = StreamWriter(root / "log" / stream, resume=(root / "log" / stream).exists())
    for step in range(count):
        writer.append("metrics", {"step": step, "data": {"loss": 1.0 / (step + 1)}})
    if finish:
        writer.append("finish", {"exit_code": 0, "status": "finished", "dropped": {}})
    writer.close()
    stream_dir = root / "log" / stream
    past = time.time() - 3600
    os.utime(stream_dir, (past, past))
    return stream_dir


def parked(reader: CountingReader, stream: str, awake: str) -> bool:
    """Whether ``stream`` went unread for 20 rounds in which ``awake`` was read."""
    before, rounds = reader.reads[stream], reader.reads[awake]
    eventually(lambda: reader.reads[awake] >= rounds + 20, timeout=10, what="20 rounds")
    return reader.reads[stream] == before


def started(tmp_path: Path, tail_of: Any, mode: str) -> tuple[CountingReader, Tail]:
    """A tail over a finished stream ``done`` and a live one ``live``, once ``done``
    is parked (``live``, which has no finish event, is read on)."""
    write(tmp_path, "done", 5)
    write(tmp_path, "live", 3, finish=False)
    reader = CountingReader(tmp_path, **MODES[mode])
    tail = tail_of(reader)
    eventually(lambda: tail.seqs("done") == list(range(6)), timeout=10, what="done read")
    eventually(lambda: parked(reader, "done", "live"), timeout=20, what="done parked")
    return reader, tail


@pytest.mark.parametrize("mode", MODES)
def test_a_finished_stream_is_parked_and_wakes_when_resumed(
    tmp_path: Path, tail_of: Any, mode: str
) -> None:
    _, tail = started(tmp_path, tail_of, mode)
    write(tmp_path, "done", 4)
    eventually(lambda: tail.seqs("done") == list(range(11)), timeout=10, what="the resume")
    assert tail.types("done")[-1] == "finish"


@pytest.mark.parametrize("mode", MODES)
def test_a_parked_stream_created_again_is_read_from_its_start(
    tmp_path: Path, tail_of: Any, mode: str
) -> None:
    _, tail = started(tmp_path, tail_of, mode)
    shutil.rmtree(tmp_path / "log" / "done")
    write(tmp_path, "done", 2)
    eventually(lambda: tail.restarted == ["done"], timeout=10, what="the new epoch")
    eventually(lambda: tail.seqs("done") == [0, 1, 2], timeout=10, what="its events")


@pytest.mark.parametrize("mode", MODES)
def test_a_new_stream_appears_while_others_are_parked(
    tmp_path: Path, tail_of: Any, mode: str
) -> None:
    _, tail = started(tmp_path, tail_of, mode)
    write(tmp_path, "fresh", 2)
    eventually(lambda: tail.seqs("fresh") == [0, 1, 2], timeout=10, what="the new stream")


def test_a_lost_notification_is_made_up_for_by_polling(
    tmp_path: Path, tail_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes: list[str] = []
    monkeypatch.setattr(watch.Watcher, "_note", lambda self, paths: notes.extend(paths))
    write(tmp_path, "done", 5)
    write(tmp_path, "live", 3, finish=False)
    reader = CountingReader(tmp_path, notify=True, park_check=0.2)
    tail = tail_of(reader)
    eventually(lambda: parked(reader, "done", "live"), timeout=20, what="done parked")
    probe = tmp_path / "log" / ".probe"

    def watching() -> bool:  # the watcher is up once it notices a file written
        probe.write_bytes(b"x")
        return any(note.endswith(".probe") for note in notes)

    eventually(watching, timeout=10, what="the watcher")
    write(tmp_path, "done", 1)
    eventually(lambda: tail.seqs("done") == list(range(8)), timeout=10, what="the resume")
    eventually(  # the notification came, and was lost
        lambda: any("done" in note for note in notes), timeout=10, what="its notification"
    )


def test_a_poll_of_its_own_reads_every_stream(tmp_path: Path) -> None:
    write(tmp_path, "done", 2)
    reader = CountingReader(tmp_path)
    offsets = {batch.stream: batch.offset for batch in reader.poll({})}
    for _ in range(3):
        assert reader.poll(offsets) == []
    assert reader.reads["done"] == 4


def open_segments(root: Path) -> set[str]:
    """The streams of which this process holds a segment open."""
    log = str(root / "log")
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith(log) and target.endswith(".ndjson"):
            held.add(Path(target).parent.name)
    return held


def test_follow_keeps_a_live_segment_open_until_the_stream_is_parked(
    tmp_path: Path, tail_of: Any
) -> None:
    """A stream read every round is read through a descriptor kept open (no open and
    close per round); a parked stream, and every stream once ``follow`` ends, holds none."""
    _, tail = started(tmp_path, tail_of, "polling")
    eventually(lambda: open_segments(tmp_path) == {"live"}, timeout=10, what="live kept open")
    write(tmp_path, "live", 2)
    eventually(lambda: tail.types("live")[-1:] == ["finish"], timeout=10, what="its finish")
    eventually(lambda: open_segments(tmp_path) == set(), timeout=10, what="live closed")
    write(tmp_path, "other", 3, finish=False)
    eventually(lambda: open_segments(tmp_path) == {"other"}, timeout=10, what="other open")
    tail.stop.set()
    tail.thread.join(10)
    assert open_segments(tmp_path) == set()


def test_a_live_stream_created_again_is_not_read_through_the_old_descriptor(
    tmp_path: Path, tail_of: Any
) -> None:
    _, tail = started(tmp_path, tail_of, "polling")
    eventually(lambda: open_segments(tmp_path) == {"live"}, timeout=10, what="live kept open")
    shutil.rmtree(tmp_path / "log" / "live")
    write(tmp_path, "live", 2, finish=False)
    eventually(lambda: tail.restarted == ["live"], timeout=10, what="the new epoch")
    eventually(lambda: tail.seqs("live") == [0, 1], timeout=10, what="its events")


class FrozenClock:
    """``time`` for ``waddle.eventlog.parking`` with a monotonic clock that moves on demand,
    and a wall clock that is the real one unless ``wall`` is set."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall: float | None = None

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time() if self.wall is None else self.wall


@pytest.mark.parametrize("counted", [True, False], ids=["link count", "no link count"])
def test_a_recent_log_folder_is_listed_again_rarely_and_still_shows_every_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: bool
) -> None:
    """A new stream makes the log folder's mtime recent: later rounds do not list it
    again each time (10,000 streams made that a cost of every round for 2 s), yet a
    second stream created in the same clock tick (the mtime unchanged) is found: at
    once where the folder's link count counts its subfolders (ext4, xfs, tmpfs), after
    ``_RACY_RELIST_S`` where it does not (btrfs)."""
    log = tmp_path / "log"
    write(tmp_path, "done", 2)
    if counted and os.stat(log).st_nlink != 3:
        pytest.skip("this filesystem does not count subfolders in a folder's link count")
    clock = FrozenClock()
    monkeypatch.setattr(parking, "time", clock)
    listings: list[str] = []
    listdir, stat = os.listdir, os.stat
    monkeypatch.setattr(os, "listdir", lambda path=".": listings.append(str(path)) or listdir(path))
    if not counted:
        monkeypatch.setattr(os, "stat", lambda path, **kw: uncounted(stat(path, **kw), path, log))
    rounds = Parking(LogReader(tmp_path, notify=False))
    assert rounds.due() == ["done"]
    write(tmp_path, "fresh", 1)
    assert rounds.due() == ["done", "fresh"]
    tick = os.stat(log).st_mtime_ns
    for _ in range(20):
        rounds.due()
    (log / "same-tick").mkdir()
    os.utime(log, ns=(tick, tick))
    if not counted:
        assert "same-tick" not in rounds.due()
        clock.now += parking._RACY_RELIST_S
    assert rounds.due() == ["done", "fresh", "same-tick"]
    assert listings.count(str(log)) == 3


def test_a_stream_deleted_and_another_created_in_one_clock_tick_is_seen_soon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc removing a stream and a producer creating another within the log folder's
    mtime tick leave both its mtime and its link count as they were: a recent folder is
    still listed again after ``_RACY_RELIST_S``, so the new stream is read then, not
    after ``_RELIST_S`` (30 s)."""
    log = tmp_path / "log"
    write(tmp_path, "kept", 2)
    write(tmp_path, "old", 2)
    tick = os.stat(log).st_mtime_ns
    clock = FrozenClock()
    clock.wall = tick / 1e9 + parking._RACY_S / 2  # the folder is recent, whatever the load
    monkeypatch.setattr(parking, "time", clock)
    rounds = Parking(LogReader(tmp_path, notify=False))
    assert rounds.due() == ["kept", "old"]
    links = os.stat(log).st_nlink
    shutil.rmtree(log / "old")
    write(tmp_path, "new", 1)
    os.utime(log, ns=(tick, tick))
    assert os.stat(log).st_nlink == links  # the key is as it was
    clock.now += parking._RACY_RELIST_S
    assert rounds.due() == ["kept", "new"]


def uncounted(result: os.stat_result, path: object, log: Path) -> object:
    """``result``, with the link count btrfs gives every folder when ``path`` is ``log``."""
    if str(path) != str(log):
        return result
    fields = ("st_ino", "st_mtime_ns", "st_mtime", "st_mode")
    return SimpleNamespace(st_nlink=1, **{name: getattr(result, name) for name in fields})


def server_clock(stream_dir: Path, ahead: float) -> None:
    """Date a stream's folder and segments, and the log folder as when the stream was
    created in it, as a file server whose clock is ``ahead`` of ours would (NFS: the
    mtimes are the server's)."""
    when = time.time() + ahead
    for path in [*stream_dir.iterdir(), stream_dir, stream_dir.parent]:
        os.utime(path, (when, when))


def following(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[FrozenClock, LogReader, Parking]:
    """A reader whose ``poll`` takes ``follow``'s rounds through the ``Parking`` returned,
    on a monotonic clock that moves only when the test moves it."""
    clock = FrozenClock()
    monkeypatch.setattr(parking, "time", clock)
    monkeypatch.setattr(reader_module, "time", clock)
    reader = LogReader(tmp_path, notify=False)
    reader._parking = rounds = Parking(reader)
    return clock, reader, rounds


def test_a_live_run_on_a_server_whose_clock_is_behind_is_not_parked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run logging once a minute for 10 min to a file server an hour behind us: its
    mtimes say it has been silent for an hour, yet it is never parked as stale (then
    read only every ``STALE_CHECK_S``), and each event is read in the next round."""
    live = write(tmp_path, "live", 1, finish=False)
    clock, reader, rounds = following(tmp_path, monkeypatch)
    offsets: dict[str, Offset] = {}
    for minute in range(10):
        server_clock(live, -3600)
        batches = reader.poll(offsets)
        assert [len(batch.events) for batch in batches] == [1]
        offsets["live"] = batches[0].offset
        for _ in range(12):  # a round every 5 s, finding nothing
            clock.now += parking.STALE_CHECK_S
            assert reader.poll(offsets) == []
            assert "live" not in rounds.parked, f"parked after {minute} min"
        write(tmp_path, "live", 1, finish=False)


def test_a_stream_dated_in_the_future_does_not_park_a_live_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run logging once a minute for 10 min, and beside it from its second minute a
    finished run dated an hour ahead (``touch``-ed, or extracted from an archive made on
    a fast clock), which stays the newest mtime the tail has seen: the live run, which
    the tail has seen being written, is never parked as stale (then read only every
    ``STALE_CHECK_S``, for the life of the process), and each event is read in the next
    round."""
    write(tmp_path, "live", 1, finish=False)
    clock, reader, rounds = following(tmp_path, monkeypatch)
    offsets: dict[str, Offset] = {}
    for minute in range(10):
        if minute == 1:
            server_clock(write(tmp_path, "ahead", 2), 3600)
        batches = {batch.stream: batch for batch in reader.poll(offsets)}
        assert len(batches["live"].events) == 1, f"minute {minute}"
        offsets.update((stream, batch.offset) for stream, batch in batches.items())
        for _ in range(12):  # a round every 5 s, finding nothing in the live run
            clock.now += parking.STALE_CHECK_S
            assert "live" not in {batch.stream for batch in reader.poll(offsets)}
            assert "live" not in rounds.parked, f"parked after {minute} min"
        write(tmp_path, "live", 1, finish=False)


def test_a_tail_started_beside_a_future_stream_parks_a_live_run_until_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tail started anew beside a finished run dated an hour ahead cannot tell a live
    run from a crashed one at first sight and parks it as stale: its next write is read
    by the stale check, one round (``STALE_CHECK_S``) late, and shows it live; it is not
    parked again, and each later event is read in the next round."""
    server_clock(write(tmp_path, "ahead", 2), 3600)
    write(tmp_path, "live", 1, finish=False)
    clock, reader, rounds = following(tmp_path, monkeypatch)
    offsets: dict[str, Offset] = {}
    for minute in range(10):
        read = []
        for turn in range(13):  # a round every 5 s for a minute
            clock.now += parking.STALE_CHECK_S if turn else 0.0
            batches = {batch.stream: batch for batch in reader.poll(offsets)}
            offsets.update((stream, batch.offset) for stream, batch in batches.items())
            read += [turn] * len(batches["live"].events if "live" in batches else [])
            assert minute == 0 or read == [] or "live" not in rounds.parked, f"minute {minute}"
        assert read == ([1] if minute == 1 else [0]), f"minute {minute}"
        assert minute > 0 or "live" in rounds.stale
        write(tmp_path, "live", 1, finish=False)


@pytest.mark.parametrize("ahead", [-3600.0, 3600.0], ids=["server behind", "server ahead"])
def test_a_crashed_run_is_parked_once_unchanged_for_stale_s_of_this_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead: float
) -> None:
    """Whatever the file server's clock (the mtimes an hour behind ours or ahead), a
    stream without a finish whose stamp stays the same is parked as stale once this
    process has seen it unchanged for ``STALE_S`` of its own clock: not sooner (a tail
    started anew waits that long), and not never."""
    server_clock(write(tmp_path, "crashed", 2, finish=False), ahead)
    clock, reader, rounds = following(tmp_path, monkeypatch)
    offsets = {batch.stream: batch.offset for batch in reader.poll({})}
    seen = clock.now  # the next round finds nothing: the stamp is first seen then
    while clock.now < seen + parking.STALE_S:
        assert reader.poll(offsets) == []
        assert not rounds.stale, f"stale after {clock.now - seen} s"
        clock.now += parking.STALE_CHECK_S
    assert reader.poll(offsets) == []
    assert rounds.stale == {"crashed"}
    assert rounds.due() == []


@pytest.mark.parametrize("ahead", [-3600.0, 3600.0], ids=["server behind", "server ahead"])
def test_a_crashed_run_beside_a_live_one_is_parked_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead: float
) -> None:
    """A run that died an hour before another one last wrote, by the file server's
    clock (an hour behind ours or ahead): its mtimes are compared with the live one's
    stamp, both the server's (the log folder is dated back with the crashed run, so
    only that stamp can tell), so it is parked as stale in the first round that finds
    nothing more in it, without waiting ``STALE_S`` of this process's clock (a tail
    restarted would otherwise poll it 20 times a second for 5 min); the live one is not
    parked."""
    server_clock(write(tmp_path, "crashed", 2, finish=False), ahead - 3600)
    server_clock(write(tmp_path, "live", 1, finish=False), ahead)
    back = time.time() + ahead - 3600
    os.utime(tmp_path / "log", (back, back))
    _, reader, rounds = following(tmp_path, monkeypatch)
    offsets = {batch.stream: batch.offset for batch in reader.poll({})}
    assert reader.poll(offsets) == []
    assert rounds.stale == {"crashed"}
    assert rounds.due() == ["live"]


@pytest.mark.parametrize("ahead", [-3600.0, 3600.0], ids=["server behind", "server ahead"])
def test_a_finished_run_is_parked_whatever_the_server_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead: float
) -> None:
    """A finished run dated an hour behind ours is parked in the first round that finds
    nothing after its finish. One dated an hour ahead (a file server's clock ahead, an
    archive made on a fast clock) is parked once this process has seen its stamp
    unchanged for ``_RACY_S`` of its own clock: our wall clock can never vouch for a
    future mtime, and it was read every round for good. Either way a resume wakes it."""
    done = write(tmp_path, "done", 2)
    server_clock(done, ahead)
    clock, reader, rounds = following(tmp_path, monkeypatch)
    offsets = {batch.stream: batch.offset for batch in reader.poll({})}
    assert reader.poll(offsets) == []
    if ahead > 0:
        assert "done" not in rounds.parked
        clock.now += parking._RACY_S
        assert reader.poll(offsets) == []
    assert "done" in rounds.parked
    assert rounds.due() == []
    write(tmp_path, "done", 1)
    server_clock(done, ahead + 1)
    clock.now += parking.PARK_CHECK_S
    [batch] = reader.poll(offsets)
    assert [event["type"] for event in batch.events] == ["metrics", "finish"]


def test_a_log_folder_dated_in_the_future_is_listed_again_only_for_racy_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log folder an hour ahead of our clock is listed every ``_RACY_RELIST_S`` only
    until this process has seen it unchanged for ``_RACY_S``, not for as long as it
    runs (a listing of 10,000 streams four times a second, and ``follow`` polling where
    it could wait for a notification); a stream created later is still found."""
    server_clock(write(tmp_path, "ahead", 2), 3600)
    log = tmp_path / "log"
    listings: list[str] = []
    listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path=".": listings.append(str(path)) or listdir(path))
    clock = FrozenClock()
    monkeypatch.setattr(parking, "time", clock)
    rounds = Parking(LogReader(tmp_path, notify=False))
    assert rounds.due() == ["ahead"]
    first_seen = clock.now
    while clock.now < first_seen + parking._RACY_S:
        clock.now += parking._RACY_RELIST_S
        rounds.due()
    assert not rounds.listed_racy
    settled_at = listings.count(str(log))
    for _ in range(20):
        clock.now += parking._RACY_RELIST_S
        assert rounds.due() == ["ahead"]
    assert listings.count(str(log)) == settled_at
    write(tmp_path, "fresh", 1)
    assert rounds.due() == ["ahead", "fresh"]


def test_a_live_stream_dated_in_the_future_is_listed_once_its_folder_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live run's folder dated an hour ahead: its segments are listed again at each
    read only until this process has seen the folder unchanged for ``_RACY_S``; after
    that its listing is reused until the folder changes, as for a folder dated in the
    past, and a segment added (rotation, a resume) is still found."""
    live = write(tmp_path, "live", 2, finish=False)
    server_clock(live, 3600)
    listed: list[Path] = []
    list_segments = reader_module.list_segments
    monkeypatch.setattr(
        reader_module, "list_segments", lambda path: listed.append(path) or list_segments(path)
    )
    clock, reader, _ = following(tmp_path, monkeypatch)
    offsets = {batch.stream: batch.offset for batch in reader.poll({})}
    clock.now += parking._RACY_S
    assert reader.poll(offsets) == []
    settled_at = len(listed)
    for _ in range(10):
        clock.now += parking.STALE_CHECK_S / 10
        assert reader.poll(offsets) == []
    assert len(listed) == settled_at
    rotated = offsets["live"].seq + 1
    (live / segment_name(rotated)).write_bytes(b"")
    server_clock(live, 3601)
    [batch] = reader.poll(offsets)
    assert batch.offset.segment == rotated
    assert len(listed) == settled_at + 1
