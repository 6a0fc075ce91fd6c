"""waddle.signals: the first SIGINT/SIGTERM asks to stop, the second forces; restore."""

from __future__ import annotations

import signal
import threading

import pytest

from waddle.signals import StopEvent, on_stop_signals


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_stops_the_second_forces(first: int) -> None:
    stops: list[int] = []
    forces: list[int] = []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    restore = on_stop_signals(stops.append, forces.append)
    try:
        signal.raise_signal(first)
        assert (stops, forces) == ([first], [])
        signal.raise_signal(signal.SIGTERM)
        assert (stops, forces) == ([first], [signal.SIGTERM])
    finally:
        restore()
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_outside_the_main_thread_nothing_is_installed() -> None:
    before = signal.getsignal(signal.SIGTERM)
    restores = []
    thread = threading.Thread(target=lambda: restores.append(on_stop_signals(print)))
    thread.start()
    thread.join(10)
    assert signal.getsignal(signal.SIGTERM) == before
    restores[0]()


def test_a_stop_event_sets_what_it_wakes_until_undone() -> None:
    stop = StopEvent()
    kept, dropped = threading.Event(), threading.Event()
    stop.wakes(kept)
    undo = stop.wakes(dropped)
    undo()
    stop.set()
    assert stop.is_set() and kept.is_set() and not dropped.is_set()
    late = threading.Event()
    stop.wakes(late)  # registered after the stop: set at once, nothing to wait for
    assert late.is_set()
