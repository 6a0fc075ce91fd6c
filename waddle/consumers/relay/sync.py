"""``waddle sync URL``: send a host everything on disk that it has not got yet, then exit.

Sync is the relay consumer (``waddle.consumers.relay.consumer``) run once: under the relay's name
for that host (``relay-<host>-<port>``) and from its committed offsets, so a sync, a
later sync and a running relay never send an event twice to the host's log (and if
they did, the host would acknowledge it without writing it again). While a relay to
that host runs, sync refuses to start: that relay is already doing it.

What "everything" means: when sync starts it notes the last complete event of every
stream, and it is done once the host holds each of those. Runs that are still writing
are fine: sync sends what is on disk at that moment (and whatever it reads on the way);
the rest goes with the next sync or a running relay.

Exit codes: 0 when the host holds everything that was on disk; 1 when the host could
not be reached within ``timeout`` seconds (from the first failed request), when a relay
to the host is already running, or on SIGINT/SIGTERM; 2 when the host refused (a wrong
token, not a Waddle host, a stream it cannot take). Whatever happens, nothing is lost:
offsets are committed only for what the host acknowledged, so running sync again
resumes. The progress bar (events, bytes, rate, ETA) goes to ``out`` on a terminal; other
outputs get a line every few seconds and a summary.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from waddle.consumers.base import run_consumer
from waddle.consumers.lag import bytes_behind, last_seq, segment_sizes
from waddle.consumers.relay.client import DEFAULT_TIMEOUT_S
from waddle.consumers.relay.consumer import RelayConsumer
from waddle.errors import ConsumerLockedError, PermanentError
from waddle.eventlog.reader import Batch, LogReader, Offset
from waddle.signals import StopEvent, on_stop_signals

DEFAULT_SYNC_TIMEOUT_S = 30.0
_BAR_WIDTH = 24
_MIB = 1024 * 1024
_LOG_EVERY_S = 5.0


class SyncProgress:
    """Progress of one sync, measured on what the host acknowledged (the relay's offsets).

    Implements ``waddle.consumers.base.Progress``; sets ``stop`` once the host holds
    every stream's last event as it was at ``begin`` (parked streams count as done).
    """

    def __init__(self, relay: RelayConsumer, stop: threading.Event, out: TextIO, tty: bool) -> None:
        self.relay = relay
        self.stop = stop
        self.out = out
        self.tty = tty
        self.done = False
        self.targets: dict[str, int] = {}
        self.sizes: dict[str, dict[int, int]] = {}
        self.start: dict[str, Offset] = {}
        self.total_events = 0
        self.total_bytes = 0
        self.sent_events = 0
        self.sent_bytes = 0
        self._began = time.monotonic()
        self._shown = 0.0

    def begin(self, name: str, offsets: Mapping[str, Offset]) -> None:
        reader = LogReader(self.relay.root)
        for stream in reader.streams():
            offset = offsets.get(stream, Offset())
            target = last_seq(reader.log_dir / stream)
            if target > offset.seq:
                self.targets[stream] = target
                self.start[stream] = offset
                self.sizes[stream] = segment_sizes(reader.log_dir / stream)
                self.total_events += target - offset.seq
                self.total_bytes += bytes_behind(self.sizes[stream], offset)
        self._began = time.monotonic()
        self._shown = 0.0 if self.tty else self._began
        self._check()

    def advance(self, name: str, batches: list[Batch]) -> None:
        self.update()
        self._show()

    def update(self) -> None:
        """Recount from the offsets the host has acknowledged; stop once it holds all."""
        acked = self.relay.acked()
        events = 0
        done_bytes = 0
        for stream, target in self.targets.items():
            start = self.start[stream]
            now = acked.get(stream, start)
            events += max(min(now.seq, target) - start.seq, 0)
            sizes = self.sizes[stream]
            done_bytes += max(bytes_behind(sizes, start) - bytes_behind(sizes, now), 0)
        self.sent_events, self.sent_bytes = events, done_bytes
        self._check(acked)

    def _check(self, acked: Mapping[str, Offset] | None = None) -> None:
        acked = acked if acked is not None else self.relay.acked()
        if all(
            stream in self.relay.parked or acked.get(stream, Offset()).seq >= target
            for stream, target in self.targets.items()
        ):
            self.done = True
            self.stop.set()

    def _show(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._shown < (0.2 if self.tty else _LOG_EVERY_S):
            return
        self._shown = now
        if not self.total_events:
            return
        elapsed = max(now - self._began, 1e-9)
        rate = self.sent_events / elapsed
        share = min(self.sent_events / self.total_events, 1.0)
        left = self.total_events - self.sent_events
        eta = _clock(left / rate) if rate > 0 and left > 0 else "-"
        figures = (
            f"{self.sent_events:,}/{self.total_events:,} events  "
            f"{self.sent_bytes / _MIB:.1f}/{self.total_bytes / _MIB:.1f} MiB  "
            f"{rate:,.0f} events/s  ETA {eta}"
        )
        if self.tty:
            filled = int(_BAR_WIDTH * share)
            bar = "#" * filled + "." * (_BAR_WIDTH - filled)
            self.out.write(f"\rsyncing [{bar}] {100 * share:3.0f}%  {figures}\033[K")
            if final:
                self.out.write("\n")
        elif not final:
            self.out.write(f"syncing: {figures}\n")
        self.out.flush()

    def finish(self) -> None:
        """Close the bar's line (a terminal) before the summary is printed."""
        if self.tty and self._shown:
            self._show(final=True)


def sync(
    root: Path | str,
    url: str,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_SYNC_TIMEOUT_S,
    out: TextIO | None = None,
    tty: bool | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Relay what is on disk in ``root`` to ``url`` and return the exit code (see above)."""
    root = Path(root)
    out = out if out is not None else sys.stderr
    tty = out.isatty() if tty is None else tty
    stop = stop or StopEvent()  # its set() also wakes a tail waiting with nothing live
    relay = RelayConsumer(
        root,
        url,
        token=token,
        stop=stop,
        give_up_after=timeout,
        stop_on_failure=True,
        timeout=min(DEFAULT_TIMEOUT_S, timeout),
        linger=0.0,
    )
    progress = SyncProgress(relay, stop, out, tty)
    started = time.monotonic()
    restore = on_stop_signals(lambda signum: stop.set())
    try:
        run_consumer(relay, root, stop, once=True, progress=progress)
    except ConsumerLockedError:
        out.write(
            f"waddle sync: a relay to {relay.url} is already running on {root} and forwards "
            f"everything; stop it first to sync by hand (`waddle consumers` shows its lag)\n"
        )
        return 1
    finally:
        restore()
        progress.update()
        progress.finish()
    return _report(relay, progress, out, time.monotonic() - started)


def _report(relay: RelayConsumer, progress: SyncProgress, out: TextIO, seconds: float) -> int:
    """The summary line; the exit code."""
    left = progress.total_events - progress.sent_events
    if relay.failure is not None:
        kind = 2 if isinstance(relay.failure, PermanentError) else 1
        out.write(
            f"waddle sync: {relay.failure}\nwaddle sync: {left:,} events not relayed yet; "
            "nothing was lost, run sync again once that is fixed\n"
        )
        return kind
    for stream, reason in sorted(relay.parked.items()):
        out.write(f"waddle sync: stream {stream!r} not relayed: {reason}\n")
    if relay.parked:
        return 2
    if not progress.done:
        out.write(
            f"waddle sync: interrupted; {left:,} events not relayed yet (nothing lost: "
            "run sync again)\n"
        )
        return 1
    if not progress.total_events:
        out.write(f"waddle sync: nothing new to relay to {relay.url}\n")
    else:
        out.write(
            f"waddle sync: relayed {progress.total_events:,} events "
            f"({progress.total_bytes / _MIB:.1f} MiB) of {len(progress.targets)} streams "
            f"to {relay.url} in {seconds:.1f}s\n"
        )
    return 0


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
