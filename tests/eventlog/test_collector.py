"""``waddle.eventlog.collector``: the counted, process-wide pause of the cyclic collector."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from waddle.eventlog import collector


class Node:
    """An object that can sit in a reference cycle and be watched with a weakref."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """Unreachable cyclic garbage that only the cyclic collector can free."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_the_collector_is_off_inside_and_back_on_after() -> None:
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_overlapping_pauses_end_with_the_last_holder() -> None:
    outer = collector.paused()
    outer.__enter__()
    with collector.paused():
        assert not gc.isenabled()
    assert not gc.isenabled(), "the first holder still parses"
    outer.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with collector.paused():
        pass
    assert not gc.isenabled()


def test_an_error_inside_still_ends_the_pause() -> None:
    with pytest.raises(ValueError), collector.paused():
        raise ValueError("parse failed")
    assert gc.isenabled()


def test_threads_pausing_at_once_leave_it_on() -> None:
    start = threading.Barrier(8)

    def parse() -> None:
        start.wait()
        for _ in range(200):
            with collector.paused():
                pass

    threads = [threading.Thread(target=parse) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gc.isenabled()


@pytest.mark.parametrize(("max_pause", "collected"), [(0.0, True), (60.0, False)])
def test_overlapping_pauses_collect_once_they_run_past_the_limit(
    monkeypatch: pytest.MonkeyPatch, max_pause: float, collected: bool
) -> None:
    monkeypatch.setattr(collector, "MAX_PAUSE_S", max_pause)
    outer = collector.paused()
    outer.__enter__()
    try:
        garbage = cycle()
        with collector.paused():
            pass
        assert (garbage() is None) == collected, "a pause that never ends starves the collector"
        assert not gc.isenabled(), "the outer holder still parses"
    finally:
        outer.__exit__(None, None, None)
    gc.collect()
    assert garbage() is None
