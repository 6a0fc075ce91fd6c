"""waddle.signals: the first SIGINT/SIGTERM asks to stop, the second forces; restore; a
StopEvent set by a handler, whatever its thread was doing, never hangs."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.helpers import SUBPROCESS_TIMEOUT_S, child_env, eventually
from waddle.signals import StopEvent, on_stop_signals

# A SIGTERM whose handler sets the stop, raised before the n-th bytecode that a wait on
# a ``StopEvent`` runs in signals.py or threading.py, once for every n before it blocks
# (counted by a first wait that another thread ends): each wait must return True. A
# handler that waits on a lock its own thread holds, or a wait that misses the set, hangs.
SIGNALLED_WAITS = """
import signal, sys, threading
import waddle.signals
from waddle.signals import StopEvent, on_stop_signals

TRACED = {waddle.signals.__file__, threading.__file__}

def wait(signal_at, ended_by=None):
    stop = StopEvent()
    restore = on_stop_signals(lambda signum: stop.set())
    ops = [0]

    def trace(frame, event, arg):
        if frame.f_code.co_filename not in TRACED:
            return None
        frame.f_trace_opcodes = True
        if event == "opcode":
            ops[0] += 1
            if ops[0] == signal_at:
                signal.raise_signal(signal.SIGTERM)
        return trace

    if ended_by is not None:
        ended_by(stop, ops)
    sys.settrace(trace)
    try:
        return stop.wait(), ops[0]
    finally:
        sys.settrace(None)
        restore()

blocked = []

def end_later(stop, ops):
    def end():
        blocked.append(ops[0])
        stop.set()
    threading.Timer(0.5, end).start()

wait(0, end_later)
for signal_at in range(1, blocked[0] + 1):
    woke, ops = wait(signal_at)
    assert woke and ops >= signal_at, (signal_at, woke, ops)
print(blocked[0])
"""


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


def test_a_stop_signal_during_any_bytecode_of_a_wait_stops_it() -> None:
    try:
        child = subprocess.run(
            [sys.executable, "-c", SIGNALLED_WAITS],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a stop signal during a wait on a StopEvent hung the process")
    assert child.returncode == 0, child.stderr
    assert int(child.stdout) > 20  # the bytecodes before the wait blocks, each signalled


def test_a_signal_ends_a_wait_on_the_main_thread_at_once() -> None:
    stop = StopEvent()
    restore = on_stop_signals(lambda signum: stop.set())
    signaller = threading.Timer(
        0.05, signal.pthread_kill, (threading.main_thread().ident, signal.SIGTERM)
    )
    began = time.monotonic()
    signaller.start()
    try:
        woke = stop.wait(SUBPROCESS_TIMEOUT_S)
    finally:
        signaller.join()
        restore()
    assert woke and time.monotonic() - began < SUBPROCESS_TIMEOUT_S  # not its timeout


def test_a_stop_event_waits_and_clears_as_a_threading_event() -> None:
    stop = StopEvent()
    assert isinstance(stop, threading.Event)
    assert not stop.wait(0) and not stop.wait(-1) and not stop.wait(0.01)
    woken: list[bool] = []
    waiter = threading.Thread(target=lambda: woken.append(stop.wait()))
    waiter.start()
    eventually(lambda: stop._wakes, timeout=10, what="the waiter blocked")  # its release
    stop.set()
    waiter.join(SUBPROCESS_TIMEOUT_S)
    assert woken == [True] and stop.is_set() and stop.wait(0)
    stop.set()  # again: nothing left to release
    stop.clear()
    assert not stop.is_set() and not stop.wait(0.01)
