"""``follow`` with no stream live (waddle/eventlog/reader.py, ``Parking.quiet``): it waits
until woken instead of polling, and whatever can change that wakes it: a notification
(a resumed run, a new stream), a hint, a stop. Without notification it polls as before.

The idle wait is made an hour long here (``IDLE_WAIT_S``), so whatever these tests see
arrive was woken for, never found by the wait running out.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.eventlog.test_reader_parking import Tail, write
from tests.helpers import eventually
from waddle.eventlog import parking as parking_module
from waddle.eventlog import reader as reader_module
from waddle.eventlog import watch as watch_module
from waddle.eventlog.parking import Parking
from waddle.eventlog.reader import LogReader
from waddle.eventlog.watch import Hints, Watcher
from waddle.signals import StopEvent

HOUR = 3600.0
# How long the watcher takes to tell of a change at most, with room: a step and a
# debounce of watchfiles (``waddle.eventlog.watch``), twice.
WATCH_TELLS_S = 2 * (watch_module._STEP_MS + watch_module._DEBOUNCE_MS) / 1000


class QuietReader(LogReader):
    """Counts its rounds and notes when ``follow`` found nothing live (and waits)."""

    def __init__(self, root: Path, **options: Any) -> None:
        super().__init__(root, park_check=HOUR, hint_check=HOUR, **options)
        self.rounds = 0
        self.quiet = threading.Event()
        self.quiet_round = 0  # the round after which it last went to wait

    def poll(self, offsets: Any) -> Any:
        self.rounds += 1
        return super().poll(offsets)

    def _quiet(self, parking: Parking) -> bool:
        quiet = super()._quiet(parking)
        if quiet:
            self.quiet_round = self.rounds
            self.quiet.set()
        return quiet


@pytest.fixture(autouse=True)
def hour_long_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_module, "IDLE_WAIT_S", HOUR)


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.stop.set()
        tail.reader.wake()
        tail.thread.join(10)
        assert not tail.thread.is_alive()


def settled(root: Path) -> Path:
    """The log folder, with a ``.probe`` file in it, dated an hour back: a folder changed
    within the last 2 s is polled whatever its streams are (``Parking.listed_racy``), so
    a test that changed it just before acting would see its change found by polling."""
    folder = root / "log"
    folder.mkdir(exist_ok=True)
    (folder / ".probe").write_bytes(b"")
    past = time.time() - 3600
    os.utime(folder, (past, past))
    return folder / ".probe"


def resting(reader: QuietReader, tails: list[Tail], root: Path, tail: Tail | None = None) -> Tail:
    """A tail of ``reader`` waiting with nothing live, once its watcher is up: rewriting
    ``.probe`` (which leaves the folder's mtime as it was) wakes it (the watcher starts
    after the first idle round, and a change made before it watches would go unnoticed).
    Returns once the tail waits again, so that what the test does next is found only by
    what wakes it.

    "Waits again" is a quiet wait after the round the wake caused, told by its round
    number: clearing ``quiet`` after that round missed a round that had already gone to
    wait (an hour here), and the tail was never seen waiting again (once in CI)."""
    probe = settled(root)
    tail = tail or Tail(reader)
    tails.append(tail)
    tail.thread.start()
    eventually(reader.quiet.is_set, timeout=10, what="a quiet wait")
    rounds = reader.rounds

    def woken() -> bool:
        # One write per watcher's telling time: a write every poll left notifications
        # in flight that woke the tail after this returned, for a round the test did not
        # cause (and a change it looks for found by that round instead).
        probe.write_bytes(b"x")
        told = time.monotonic() + WATCH_TELLS_S
        while reader.rounds == rounds and time.monotonic() < told:
            time.sleep(0.02)
        return reader.rounds > rounds

    eventually(woken, timeout=10, what="the watcher")
    woke = reader.rounds
    eventually(lambda: reader.quiet_round >= woke, timeout=10, what="a quiet wait again")
    return tail


@pytest.fixture
def stale_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream without a finish is stale as soon as a read finds nothing more: a run
    is stale after ``STALE_S`` (5 min) of this process's clock, whatever its mtimes say,
    and these tests do not wait that long."""
    monkeypatch.setattr(parking_module, "STALE_S", 0.0)


def test_a_resumed_run_wakes_a_quiet_tail(tmp_path: Path, tails: list[Tail]) -> None:
    write(tmp_path, "done", 3)
    tail = resting(QuietReader(tmp_path, notify=True), tails, tmp_path)
    assert tail.seqs("done") == [0, 1, 2, 3]
    write(tmp_path, "done", 2)
    eventually(lambda: tail.seqs("done") == list(range(7)), timeout=10, what="the resume")


def test_a_new_stream_wakes_a_quiet_tail(tmp_path: Path, tails: list[Tail]) -> None:
    write(tmp_path, "done", 3)
    tail = resting(QuietReader(tmp_path, notify=True), tails, tmp_path)
    write(tmp_path, "fresh", 2, finish=False)
    eventually(lambda: tail.seqs("fresh") == [0, 1], timeout=10, what="the new stream")


def test_an_empty_folder_is_quiet_and_a_first_stream_wakes_it(
    tmp_path: Path, tails: list[Tail]
) -> None:
    (tmp_path / "log").mkdir()
    tail = resting(QuietReader(tmp_path, notify=True), tails, tmp_path)
    write(tmp_path, "first", 1)
    eventually(lambda: tail.seqs("first") == [0, 1], timeout=10, what="the first stream")


def test_a_hint_wakes_a_quiet_tail(tmp_path: Path, tails: list[Tail]) -> None:
    write(tmp_path, "done", 1)
    write(tmp_path, "ingested", 1, finish=False)
    hints = Hints()
    hints.cover("ingested")  # live, but told by its writer when it grows
    tail = resting(QuietReader(tmp_path, notify=True, hints=hints.subscribe()), tails, tmp_path)
    eventually(lambda: tail.seqs("ingested") == [0], timeout=10, what="the first read")
    # Notifications lost from here on: only the hint can wake the tail.
    watcher = Watcher._shared[str((tmp_path / "log").absolute())]
    watcher._note = lambda paths: None  # type: ignore[method-assign]
    write(tmp_path, "ingested", 2, finish=False)
    hints.grew(["ingested"])
    eventually(lambda: tail.seqs("ingested") == [0, 1, 2], timeout=10, what="the hinted events")


def test_a_hint_sets_the_wake_events_once_per_take() -> None:
    hints = Hints()
    queue = hints.subscribe()
    wake, other, dropped = threading.Event(), threading.Event(), threading.Event()
    queue.wakes(wake)
    queue.wakes(other)  # a second waiter replaces nothing
    queue.wakes(dropped)()
    hints.grew(["a"])
    assert wake.is_set() and other.is_set() and not dropped.is_set()
    wake.clear()
    hints.grew(["b"])  # the reader has not taken "a" yet: it is awake already
    assert not wake.is_set()
    assert queue.take() == {"a", "b"}
    hints.grew([])
    assert not wake.is_set()
    hints.grew(["c"])
    assert wake.is_set()


def test_a_live_stream_keeps_the_tail_polling(
    tmp_path: Path, tails: list[Tail], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every notification is lost (as on a network filesystem, where the writes of other
    # machines are never told) and the folder is settled: only polling can deliver.
    monkeypatch.setattr(Watcher, "_note", lambda self, paths: None)
    write(tmp_path, "done", 1)
    write(tmp_path, "live", 1, finish=False)
    settled(tmp_path)
    reader = QuietReader(tmp_path, notify=True)
    tail = Tail(reader)
    tails.append(tail)
    tail.thread.start()
    eventually(lambda: tail.seqs("live") == [0], timeout=10, what="the first read")
    eventually(lambda: reader.rounds > 50, timeout=10, what="50 rounds")
    write(tmp_path, "live", 2, finish=False)
    eventually(lambda: tail.seqs("live") == [0, 1, 2], timeout=10, what="the live events")
    assert not reader.quiet.is_set()


@pytest.mark.usefixtures("stale_at_once")
def test_a_crashed_run_does_not_keep_the_tail_awake(tmp_path: Path, tails: list[Tail]) -> None:
    write(tmp_path, "done", 1)
    write(tmp_path, "crashed", 2, finish=False)  # killed: no finish
    tail = resting(QuietReader(tmp_path, notify=True), tails, tmp_path)
    assert tail.seqs("crashed") == [0, 1]


@pytest.mark.usefixtures("stale_at_once")
def test_a_stale_run_that_grows_is_read_again_when_notified(
    tmp_path: Path, tails: list[Tail]
) -> None:
    write(tmp_path, "done", 1)
    write(tmp_path, "crashed", 2, finish=False)
    tail = resting(QuietReader(tmp_path, notify=True), tails, tmp_path)
    write(tmp_path, "crashed", 2, finish=False)  # it was a live run that logs rarely
    eventually(lambda: tail.seqs("crashed") == [0, 1, 2, 3], timeout=10, what="its new events")


@pytest.mark.usefixtures("stale_at_once")
def test_a_stale_run_that_grows_is_read_again_by_its_stamp(
    tmp_path: Path, tails: list[Tail], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Notifications lost; the idle wait and the stale check short, the finished check
    # an hour away: only the stale stream's own stamp check can find its new events.
    monkeypatch.setattr(reader_module, "IDLE_WAIT_S", 0.05)
    monkeypatch.setattr(parking_module, "STALE_CHECK_S", 0.1)
    write(tmp_path, "done", 1)
    write(tmp_path, "crashed", 2, finish=False)
    settled(tmp_path)
    reader = QuietReader(tmp_path, notify=True)
    tail = Tail(reader)
    tails.append(tail)
    tail.thread.start()
    eventually(reader.quiet.is_set, timeout=10, what="a quiet wait")
    watcher = Watcher._shared[str((tmp_path / "log").absolute())]
    watcher._note = lambda paths: None  # type: ignore[method-assign]
    write(tmp_path, "crashed", 2, finish=False)
    eventually(lambda: tail.seqs("crashed") == [0, 1, 2, 3], timeout=10, what="its new events")


@pytest.mark.parametrize("why", ["notify=False", "no watchfiles", "nfs", "WADDLE_NOTIFY=0"])
def test_without_notification_it_polls(
    tmp_path: Path, tails: list[Tail], monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    if why == "no watchfiles":
        monkeypatch.setattr(Watcher, "start", lambda self: None)
    elif why == "nfs":  # inotify would set up, and never see another machine's writes
        mountinfo = tmp_path / "mountinfo"
        mountinfo.write_text(f"1 0 0:1 / / rw - ext4 /dev/sda1 rw\n{mount(tmp_path, 'nfs4')}")
        monkeypatch.setattr(watch_module, "MOUNTINFO", str(mountinfo))
    elif why == "WADDLE_NOTIFY=0":
        monkeypatch.setenv("WADDLE_NOTIFY", "0")
    write(tmp_path, "done", 1)
    settled(tmp_path)  # else the just-made log folder is polled for 2 s whatever
    reader = QuietReader(tmp_path, notify=why != "notify=False")
    tail = Tail(reader)
    tails.append(tail)
    tail.thread.start()
    eventually(lambda: reader.rounds > 50, timeout=10, what="50 rounds")
    write(tmp_path, "fresh", 1, finish=False)
    eventually(lambda: tail.seqs("fresh") == [0], timeout=10, what="the new stream")
    assert not reader.quiet.is_set()


def mount(point: Path, kind: str) -> str:
    """A /proc/self/mountinfo line: ``point`` is a mount of type ``kind``."""
    escaped = os.path.realpath(point).replace(" ", "\\040")
    return f"36 1 0:50 / {escaped} rw,relatime shared:1 - {kind} server:/export rw\n"


def test_a_filesystem_s_type_is_its_longest_mount_point_s(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        + mount(tmp_path / "nfs", "nfs")
        + mount(tmp_path / "nfs x", "cifs")  # a space, written \\040
        + mount(tmp_path / "nfsdata", "ext4")  # "nfs" is a prefix of its name, not a folder
        + mount(tmp_path / "nfs" / "local", "tmpfs")
    )
    kinds = {
        name: watch_module.filesystem_type(tmp_path / name, str(mountinfo))
        for name in ["nfs", "nfs/a/log", "nfs x/log", "nfsdata/log", "nfs/local/log", "else"]
    }
    assert kinds == {
        "nfs": "nfs",
        "nfs/a/log": "nfs",
        "nfs x/log": "cifs",
        "nfsdata/log": "ext4",
        "nfs/local/log": "tmpfs",
        "else": "ext4",
    }
    assert watch_module.filesystem_type(tmp_path, str(tmp_path / "missing")) is None


def test_a_mount_over_another_on_the_same_point_is_the_one_that_counts(tmp_path: Path) -> None:
    # NFS through systemd's automount: the autofs trigger first, the NFS mount over it.
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        + mount(tmp_path / "data", "autofs")
        + mount(tmp_path / "data", "nfs4")
    )
    assert watch_module.filesystem_type(tmp_path / "data" / "log", str(mountinfo)) == "nfs4"


@pytest.mark.parametrize(
    ("kind", "trusted"),
    [
        *[("ext4", True), ("tmpfs", True), ("fuse.fuse-overlayfs", True)],
        *[
            ("nfs4", False),
            ("cifs", False),
            ("9p", False),
            ("lustre", False),
            ("fuse.sshfs", False),
        ],
    ],
)
def test_notification_is_not_trusted_on_a_network_filesystem(
    tmp_path: Path, kind: str, trusted: bool
) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n" + mount(tmp_path, kind))
    assert (watch_module.unwatchable(tmp_path / "log", str(mountinfo)) is None) == trusted


def test_a_network_filesystem_is_polled_and_said_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n" + mount(tmp_path, "nfs4"))
    monkeypatch.setattr(watch_module, "MOUNTINFO", str(mountinfo))
    (tmp_path / "log").mkdir()
    caplog.set_level("INFO", logger="waddle.eventlog")
    watches = [Watcher.subscribe(tmp_path / "log", threading.Event()) for _ in range(3)]
    try:
        assert not any(watch.active for watch in watches)
    finally:
        for watch in watches:
            watch.close()
    told = [r.getMessage() for r in caplog.records if "no change notification" in r.getMessage()]
    assert len(told) == 1 and "nfs4" in told[0]


def test_a_watcher_that_fails_wakes_its_readers_to_poll(tmp_path: Path, tails: list[Tail]) -> None:
    write(tmp_path, "done", 1)
    reader = QuietReader(tmp_path, notify=True)
    tail = resting(reader, tails, tmp_path)
    watcher = Watcher._shared[str((tmp_path / "log").absolute())]
    watcher._stop.set()  # the watching thread ends, as on an error
    eventually(lambda: not watcher.active, timeout=10, what="the watcher ended")
    write(tmp_path, "fresh", 1, finish=False)
    eventually(lambda: tail.seqs("fresh") == [0], timeout=10, what="the new stream, polled")


def test_a_reader_whose_watcher_ended_subscribes_again(
    tmp_path: Path, tails: list[Tail], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parking_module, "_REWATCH_S", 0.0)
    write(tmp_path, "done", 1)
    reader = QuietReader(tmp_path, notify=True)
    tail = resting(reader, tails, tmp_path)
    key = str((tmp_path / "log").absolute())
    ended = Watcher._shared[key]
    reader.quiet.clear()  # the tail waits: nothing calls its _quiet until it is woken
    ended._stop.set()  # the watching thread ends, as on an error
    eventually(lambda: Watcher._shared.get(key) is not ended, timeout=10, what="it left")

    def watched_again() -> bool:
        watcher = Watcher._shared.get(key)
        return watcher is not None and watcher is not ended and watcher.active

    eventually(watched_again, timeout=10, what="a new watcher")
    eventually(reader.quiet.is_set, timeout=10, what="a quiet wait again")
    write(tmp_path, "done", 1)  # resumed: only a notification wakes the tail
    eventually(lambda: tail.seqs("done") == [0, 1, 2, 3], timeout=10, what="the resume")


def test_a_reader_with_notification_off_does_not_subscribe_again(
    tmp_path: Path, tails: list[Tail], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parking_module, "_REWATCH_S", 0.0)
    monkeypatch.setenv("WADDLE_NOTIFY", "0")
    subscribed: list[Path] = []
    subscribe = Watcher.subscribe

    def counting(log_dir: Path, wake: threading.Event) -> Any:
        subscribed.append(log_dir)
        return subscribe(log_dir, wake)

    monkeypatch.setattr(Watcher, "subscribe", counting)
    write(tmp_path, "done", 1)
    reader = QuietReader(tmp_path, notify=True)
    tail = Tail(reader)
    tails.append(tail)
    tail.thread.start()
    eventually(lambda: reader.rounds > 50, timeout=10, what="50 rounds")
    assert len(subscribed) == 1  # nothing to try again: no mountinfo read every round


def test_a_log_folder_made_anew_is_watched_anew(
    tmp_path: Path, tails: list[Tail], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "done", 1)
    reader = QuietReader(tmp_path, notify=True)
    tail = resting(reader, tails, tmp_path)
    # Rounds go on (the idle wait short), but a parked stream's check is an hour away:
    # its resume is found only if the new folder is watched.
    monkeypatch.setattr(reader_module, "IDLE_WAIT_S", 0.05)
    shutil.rmtree(tmp_path / "log")
    write(tmp_path, "again", 1)
    settled(tmp_path)
    eventually(lambda: tail.seqs("again") == [0, 1], timeout=10, what="the new folder's stream")
    reader.quiet.clear()
    eventually(reader.quiet.is_set, timeout=10, what="a quiet wait again")
    write(tmp_path, "again", 1)
    eventually(lambda: tail.seqs("again") == [0, 1, 2, 3], timeout=10, what="the resume")


def test_stop_and_wake_end_a_quiet_wait(tmp_path: Path, tails: list[Tail]) -> None:
    write(tmp_path, "done", 1)
    reader = QuietReader(tmp_path, notify=True)
    tail = resting(reader, tails, tmp_path)
    tails.remove(tail)
    tail.stop.set()
    reader.wake()
    tail.thread.join(10)
    assert not tail.thread.is_alive()


def test_a_stop_event_ends_a_quiet_wait_when_set(tmp_path: Path, tails: list[Tail]) -> None:
    write(tmp_path, "done", 1)
    reader = QuietReader(tmp_path, notify=True)
    tail = Tail(reader)
    tail.stop = StopEvent()  # what the commands stop with: nobody calls wake()
    tail = resting(reader, tails, tmp_path, tail)
    tails.remove(tail)
    tail.stop.set()
    tail.thread.join(10)
    assert not tail.thread.is_alive()
    assert not tail.stop._wakes  # follow no longer registered on it


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "waddle-watch" and t.is_alive()]


def test_readers_of_one_folder_share_one_watcher(tmp_path: Path, tails: list[Tail]) -> None:
    write(tmp_path, "done", 1)
    before = len(watch_threads())
    first = resting(QuietReader(tmp_path, notify=True), tails, tmp_path)
    second = resting(QuietReader(tmp_path, notify=True), tails, tmp_path)
    assert len(watch_threads()) == before + 1
    watcher = Watcher._shared[str((tmp_path / "log").absolute())]
    assert len(watcher._watches) == 2
    for tail in (first, second):
        tails.remove(tail)
        tail.stop.set()
        tail.reader.wake()
        tail.thread.join(10)
        assert not tail.thread.is_alive()
    assert not watcher.active
    assert str((tmp_path / "log").absolute()) not in Watcher._shared
    assert len(watch_threads()) == before
