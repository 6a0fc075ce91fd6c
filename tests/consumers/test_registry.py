"""The registry: atomic state files, registration, removal, the one-instance lock."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from waddle.consumers.registry import StateStore, destination_name
from waddle.consumers.retry import is_transient
from waddle.errors import ConsumerLockedError, InvalidIdError, PermanentError
from waddle.eventlog.reader import Offset
from waddle.ids import is_valid_id


def test_publish_load_and_list(tmp_path: Path) -> None:
    registry = StateStore(tmp_path)
    assert registry.load("duckdb") == {} and registry.registered() == []
    registry.publish("duckdb", {"b": Offset(5, 100, 9), "a": Offset()})
    registry.publish("relay", {})
    assert registry.load("duckdb") == {"a": Offset(), "b": Offset(5, 100, 9)}
    assert [r.name for r in registry.registered()] == ["duckdb", "relay"]
    assert [p.name for p in (tmp_path / "state").iterdir() if p.suffix == ".json"] != []
    assert not list((tmp_path / "state").glob(".*tmp"))


def test_remove_unregisters_and_is_refused_while_running(tmp_path: Path) -> None:
    registry = StateStore(tmp_path)
    registry.publish("relay", {"a": Offset(0, 10, 1)})
    with registry.lock("relay"):
        assert registry.is_running("relay")
        with pytest.raises(ConsumerLockedError, match="already running"):
            registry.remove("relay")
    assert registry.remove("relay")
    assert not registry.remove("relay")
    assert registry.registered() == []


def test_names_become_paths_so_bad_ones_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidIdError):
        StateStore(tmp_path).publish("../x", {})


def test_a_corrupt_state_file_names_the_remedy(tmp_path: Path) -> None:
    registry = StateStore(tmp_path)
    registry.publish("x", {})
    (tmp_path / "state" / "x.json").write_text("{not json")
    with pytest.raises(PermanentError, match="waddle consumers rm x"):
        registry.load("x")


def test_a_name_per_destination_the_default_keeps_the_plain_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "w" / "waddle.duckdb"
    (tmp_path / "link").symlink_to(tmp_path / "w", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for same in (default, Path("w/waddle.duckdb"), tmp_path / "link" / "waddle.duckdb"):
        assert destination_name("duckdb", same, default) == "duckdb"
    other = tmp_path / "elsewhere.duckdb"
    name = destination_name("duckdb", "elsewhere.duckdb", default)
    assert name == "duckdb-" + hashlib.sha256(str(other.resolve()).encode()).hexdigest()[:8]
    assert is_valid_id(name) and destination_name("duckdb", other, default) == name
    assert destination_name("duckdb", tmp_path / "third.duckdb", default) not in ("duckdb", name)


def journal_lines(root: Path, name: str) -> list[dict[str, object]]:
    return [
        orjson.loads(line)
        for line in (root / "state" / f"{name}.journal").read_bytes().splitlines()
    ]


def test_a_publish_writes_only_the_offsets_that_changed(tmp_path: Path) -> None:
    registry = StateStore(tmp_path)
    offsets = {f"s{i}": Offset(0, 10 * i, i) for i in range(200)}
    registry.publish("duckdb", offsets)
    offsets = {**offsets, "s7": Offset(0, 500, 50), "new": Offset(0, 5, 0)}
    del offsets["s3"]
    registry.publish("duckdb", offsets)
    registry.publish("duckdb", dict(offsets))  # nothing moved: an empty line
    *_, moved, idle = journal_lines(tmp_path, "duckdb")
    assert moved["offsets"] == {
        "s7": Offset(0, 500, 50).to_json(),
        "new": {**Offset(0, 5, 0).to_json()},
        "s3": None,
    }
    assert idle["offsets"] == {}
    assert StateStore(tmp_path).load("duckdb") == offsets
    registry.settle("duckdb")  # a clean stop: the snapshot alone holds every offset
    snapshot = json.loads((tmp_path / "state" / "duckdb.json").read_text())
    assert {s: Offset.from_json(o) for s, o in snapshot["offsets"].items()} == offsets


def test_a_torn_journal_line_and_a_stale_journal_are_not_read(tmp_path: Path) -> None:
    registry = StateStore(tmp_path)
    registry.publish("relay", {"a": Offset(0, 10, 1)})
    registry.publish("relay", {"a": Offset(0, 20, 2)})
    journal = tmp_path / "state" / "relay.journal"
    whole = journal.read_bytes()
    line = orjson.dumps({"updated_at": 1.0, "offsets": {"a": Offset(0, 30, 3).to_json()}})
    for cut in (1, len(line) // 2, len(line)):  # killed mid-write: no newline yet
        journal.write_bytes(whole + line[:cut])
        assert StateStore(tmp_path).load("relay") == {"a": Offset(0, 20, 2)}
    header, rest = whole.split(b"\n", 1)
    stale = orjson.dumps({"journal": orjson.loads(header)["journal"] + 1}) + b"\n" + rest
    journal.write_bytes(stale + line + b"\n")  # left from before the snapshot
    assert StateStore(tmp_path).load("relay") == {"a": Offset(0, 10, 1)}


def test_a_snapshot_from_before_journals_is_read_and_replaced(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    old = {"name": "duckdb", "updated_at": 5.0, "offsets": {"a": Offset(1, 2, 3).to_json()}}
    (state / "duckdb.json").write_bytes(orjson.dumps(old))
    registry = StateStore(tmp_path)
    assert registry.load("duckdb") == {"a": Offset(1, 2, 3)}
    assert [r.updated_at for r in registry.registered()] == [5.0]
    registry.publish("duckdb", {"a": Offset(1, 2, 3), "b": Offset(0, 4, 1)})
    registry.publish("duckdb", {"a": Offset(1, 9, 4), "b": Offset(0, 4, 1)})
    assert StateStore(tmp_path).load("duckdb") == {"a": Offset(1, 9, 4), "b": Offset(0, 4, 1)}


def test_a_snapshot_another_store_wrote_is_not_continued_by_a_stale_journal(
    tmp_path: Path,
) -> None:
    first, second = StateStore(tmp_path), StateStore(tmp_path)
    first.publish("x", {"a": Offset(0, 1, 0)})
    second.publish("x", {"a": Offset(0, 2, 1)})
    first.publish("x", {"a": Offset(0, 3, 2)})
    assert StateStore(tmp_path).load("x") == {"a": Offset(0, 3, 2)}
    assert registry_files(tmp_path) == ["x.journal", "x.json"]


def registry_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "state").iterdir())


PUBLISHER = """
import sys
from waddle.consumers import registry as module
from waddle.consumers.registry import StateStore
from waddle.eventlog.reader import Offset
module._MIN_JOURNAL_BYTES = 0  # folded whenever it outgrows the snapshot: every few
registry = StateStore(sys.argv[1])
offsets = registry.load("p")
step = offsets["all"].seq if offsets else 0
while True:
    step += 1
    offsets = {**offsets, "all": Offset(0, step, step), f"s{step % 7}": Offset(0, step, step)}
    if step % 11 == 0:
        offsets.pop(f"s{step % 7}")
    registry.publish("p", offsets)
    print(step, flush=True)
"""


def consistent(offsets: dict[str, Offset]) -> bool:
    """Whether ``offsets`` are those of one whole publish of ``PUBLISHER``."""
    last = offsets["all"].seq
    for lane in range(7):
        steps = [s for s in range(1, last + 1) if s % 7 == lane]
        kept = steps and steps[-1] % 11 != 0
        expected = Offset(0, steps[-1], steps[-1]) if kept else None
        if offsets.get(f"s{lane}") != expected:
            return False
    return True


def test_offsets_survive_sigkill_at_any_moment_whole(tmp_path: Path) -> None:
    """A publisher killed at random moments (mid-append, mid-snapshot: its journal is
    folded every few publishes) leaves the offsets of one whole publish, never fewer
    than the last that returned, never a torn one."""
    rng = random.Random(14)
    snapshot = tmp_path / "state" / "p.json"
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        first = printed = int(child.stdout.readline())
        for _ in range(rng.randint(20, 300)):  # a count of publishes, not of seconds
            printed = int(child.stdout.readline())
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        printed = max([printed, *map(int, out.split())])
        offsets = StateStore(tmp_path).load("p")
        assert offsets["all"].seq >= printed and consistent(offsets)
        folded = orjson.loads(snapshot.read_bytes())["offsets"]["all"]["seq"]
        assert folded > first  # the journal was folded into a snapshot on the way


def test_a_full_disk_names_the_file_and_the_next_publish_starts_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = StateStore(tmp_path)
    registry.publish("duckdb", {"a": Offset(0, 10, 1)})
    [before] = journal_lines(tmp_path, "duckdb")
    fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as failed:
        registry.publish("duckdb", {"a": Offset(0, 20, 2)})
    assert failed.value.errno == errno.ENOSPC and is_transient(failed.value)
    assert failed.value.filename == str(tmp_path / "state" / "duckdb.journal")
    monkeypatch.setattr(os, "fsync", fsync)
    registry.publish("duckdb", {"a": Offset(0, 30, 3)})
    assert StateStore(tmp_path).load("duckdb") == {"a": Offset(0, 30, 3)}
    [header] = journal_lines(tmp_path, "duckdb")  # a new snapshot, a new journal
    assert header.keys() == {"journal"} and header != before


KILLED_AFTER = """
import os, signal, sys
from pathlib import Path
from waddle.consumers import registry
from waddle.eventlog.reader import Offset

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

store = registry.StateStore(sys.argv[1])
if sys.argv[2] == "publish":  # killed between the new snapshot and its journal
    replace = registry._replace
    registry._replace = lambda target, body: (
        killed() if target.suffix == ".journal" else replace(target, body)
    )
    store.publish("relay", {"s": Offset(0, 20, 2)})
else:  # killed after remove's first unlink
    unlink = Path.unlink
    Path.unlink = lambda path, missing_ok=False: (unlink(path, missing_ok), killed())
    store.remove("relay")
"""


def killed_after(root: Path, action: str) -> None:
    """Run ``action`` of ``KILLED_AFTER`` in a child SIGKILLed at its chosen moment."""
    child = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER, str(root), action], timeout=60, check=False
    )
    assert child.returncode == -signal.SIGKILL


def registered_ahead(root: Path) -> StateStore:
    """A registration whose journal holds an offset past its snapshot's."""
    registry = StateStore(root)
    registry.publish("relay", {"s": Offset(0, 10, 1)})
    registry.publish("relay", {"s": Offset(0, 9000, 900)})
    assert StateStore(root).load("relay") == {"s": Offset(0, 9000, 900)}
    return registry


def test_a_journal_left_by_an_old_registration_never_continues_a_new_one(
    tmp_path: Path,
) -> None:
    """A snapshot deleted by hand leaves its journal: a new registration killed between
    its first snapshot and its journal must not take the old journal's offsets (ahead of
    what its consumer committed: retention would drop segments it has not read)."""
    registered_ahead(tmp_path)
    (tmp_path / "state" / "relay.json").unlink()
    killed_after(tmp_path, "publish")
    assert StateStore(tmp_path).load("relay") == {"s": Offset(0, 20, 2)}


def test_remove_killed_midway_leaves_no_journal_and_a_lock_clears_an_orphan(
    tmp_path: Path,
) -> None:
    registered_ahead(tmp_path)
    killed_after(tmp_path, "remove")
    assert not (tmp_path / "state" / "relay.journal").exists()
    assert StateStore(tmp_path).load("relay") == {"s": Offset(0, 10, 1)}  # behind: safe
    registry = registered_ahead(tmp_path)
    (tmp_path / "state" / "relay.json").unlink()  # a reset by hand
    with registry.lock("relay"):
        assert "relay.journal" not in registry_files(tmp_path)
