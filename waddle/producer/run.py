"""Run: the object a training script logs into (wandb's shape).

Step rules: each committed ``log()`` without ``step=`` goes to the current step and then
advances it; ``commit=False`` gathers values into the current step until a committed
call; ``step=N`` logs at N and moves the current step to N+1 if that is ahead. Unlike
wandb, a ``step`` below the current one is recorded, never dropped. ``seq`` (transport
order) and ``step`` (the user's x axis) are independent.

The run's other parts live beside it: what it is (``about``), its files and artifacts
(``run_files``), ``define_metric`` (``metric_definitions``), how its end is recorded
(``exit_codes``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from waddle.blobs.store import BlobStore
from waddle.errors import EncodeError, UsageError
from waddle.eventlog.record import encode
from waddle.eventlog.writer import StreamWriter
from waddle.limits import INT64_MAX
from waddle.producer.about import RunAbout, RunInfo
from waddle.producer.artifacts import Artifact, as_artifact, find_version
from waddle.producer.config import Config
from waddle.producer.console import ConsoleCapture
from waddle.producer.exit_codes import SIGNAL_EXIT_BASE, recordable_exit_code, status_for
from waddle.producer.metric_definitions import check_metric_definition, with_step_metrics
from waddle.producer.run_files import RunFiles
from waddle.producer.system import SystemSampler
from waddle.producer.watch import Watcher, watch_models

logger = logging.getLogger("waddle")
_now = time.time


class Run(RunInfo):
    """One process's part of a run: writes its stream until ``finish``."""

    # What ``log()`` reads on every call lives in slots: CPython (3.11) keeps an object's
    # attributes inline, each read one indexed load, only while the class has at most
    # about 30 of them; past that every ``self.x`` is a dict lookup (0.08 us per log()).
    __slots__ = (
        "_deferred",
        "_defined",
        "_finished",
        "_last",
        "_lock",
        "_pending",
        "_step",
        "_writer",
    )

    def __init__(
        self,
        *,
        writer: StreamWriter,
        run_id: str,
        stream: str,
        project: str,
        name: str,
        root: Path,
        config: Config,
        step: int = 0,
        on_finish: Callable[[Run], object] | None = None,
        about: RunAbout | None = None,
    ) -> None:
        self._describe(run_id, project, name, root, config, about or RunAbout())
        self.stream = stream
        self._last = self.summary.last
        self._writer = writer
        # The writer's own lock guards the step rules too: one lock per log() call.
        self._lock = writer.lock
        self._step = step
        self._pending: dict[str, Any] = {}
        self._pending_step = step
        self._sampler: SystemSampler | None = None
        self._console: ConsoleCapture | None = None
        self._finished = False
        self.killed_by: int | None = None
        self._on_finish = on_finish
        self._deferred: Callable[[], object] | None = None
        self._files = RunFiles(root, run_id, self._record, writer.count_dropped)
        self._watchers: list[Watcher] = []
        self._synced: dict[str, str] = {}  # metric or glob -> its step metric (step_sync)
        # Whether define_metric asked for a step_sync or a summary rule: the one test the
        # hot path makes for both (without, a step's values are the summary's last ones).
        self._defined = False
        config._attach(lambda changes: self._record("config", {"config": changes}))
        self.summary._attach(lambda changes: self._record("summary", {"summary": changes}))

    def define_metric(
        self,
        name: str,
        step_metric: str | None = None,
        step_sync: bool | None = None,
        hidden: bool | None = None,
        summary: str | None = None,
        goal: str | None = None,
        overwrite: bool | None = None,
    ) -> None:
        """Say how a metric (or a glob of metrics, ``"eval/*"``) is drawn and summarised.

        Recorded as a ``define_metric`` event (the dashboard draws the metric against
        ``step_metric``). ``summary`` is what the run's summary keeps for it: ``min``,
        ``max``, ``mean``, ``last`` (the default) or ``none``. With ``step_sync``, a
        ``log()`` lacking ``step_metric`` gets its last logged value.
        """
        definition = check_metric_definition(name, step_metric, summary, goal, hidden)
        self._record("define_metric", definition)
        if summary is not None:
            self.summary.define(name, summary)
        if step_sync and step_metric:
            self._synced[name] = step_metric
        self._defined = bool(self._synced or self.summary.rules)

    @property
    def step(self) -> int:
        """The step the next ``log()`` without ``step=`` goes to."""
        return self._step

    @property
    def dropped(self) -> int:
        """Events lost to I/O trouble so far (also reported at finish)."""
        return self._writer.dropped_total

    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        """Record ``data`` at a step. Raises only for misuse; I/O trouble is counted."""
        if type(data) is not dict:
            if not isinstance(data, Mapping):
                raise UsageError(f"log() takes a dict of values, got {type(data).__qualname__}")
            data = dict(data)
        with self._lock:
            if self._finished:
                raise UsageError(f"run {self.id} has finished; call waddle.init() for a new run")
            if step is None and commit and not self._pending:
                step = self._step
                self._write_metrics(step, data)
                self._step = step + 1
            else:
                self._log_slow(data, step, commit)
        if self._deferred is not None:
            self._deferred()

    def _record(self, kind: str, fields: dict[str, Any]) -> None:
        """Write a config or summary change under the run's lock (see ``defer_signal``)."""
        with self._lock:
            self._writer.append_locked(kind, fields)
        if self._deferred is not None:
            self._deferred()

    def defer_signal(self, action: Callable[[], object]) -> bool:
        """Whether a signal handler may finish this run now; if not, ``action`` runs later.

        A handler runs in the main thread between two bytecodes; when it interrupted this
        run's own ``log()`` there, finishing now would deadlock on the run's lock, so the
        action waits for that call to end. Another thread holding the lock lets go soon.
        """
        if self._lock.acquire(timeout=0.25):
            self._lock.release()
            return True
        self._deferred = action
        return False

    def _log_slow(self, data: dict[str, Any], step: int | None, commit: bool) -> None:
        """The rarer step rules: an explicit step, or gathering with ``commit=False``."""
        if step is None:
            step = self._step
        elif type(step) is not int or not 0 <= step <= INT64_MAX:
            raise UsageError(f"step must be an integer from 0 to 2**63-1, got {step!r}")
        if self._pending and step != self._pending_step:
            self._flush_pending()
        if commit:
            self._write_metrics(step, {**self._pending, **data})
            self._pending = {}
            self._step = max(self._step, step + 1)
        else:
            event: dict[str, Any] = {"data": data}
            try:  # an unencodable value must fail at this call, not later
                encode(event, False)
            except EncodeError:
                self._encode_typed(event)
            data = event["data"]
            self._pending = {**self._pending, **data}
            self._pending_step = step
            self._step = max(self._step, step)

    def _flush_pending(self) -> None:
        self._write_metrics(self._pending_step, self._pending)
        self._pending = {}
        self._step = max(self._step, self._pending_step + 1)

    def _write_metrics(self, step: int, data: dict[str, Any]) -> None:
        """Write one metrics event and fold it into the summary, which then holds exactly
        what the log holds: values dropped for I/O trouble stay out, and an exception
        raised into the call (Ctrl-C) leaves the summary as the log is."""
        if self._defined:
            data = with_step_metrics(self._synced, self._last, data)
        writer = self._writer
        event: dict[str, Any] = {
            "seq": writer.next_seq,
            "ts": _now(),
            "type": "metrics",
            "step": step,
            "data": data,
        }
        try:  # inline: the scalar hot path is this one call
            line = encode(event, False)
        except EncodeError:
            line = self._encode_typed(event)
            data = event["data"]
        try:
            if writer.write_lines_locked(line, 1):
                if self._defined:
                    self.summary.observe(data, event["seq"])
                else:
                    self._last.update(data)
        except BaseException:
            self._settle_summary(event)
            raise

    def _settle_summary(self, event: dict[str, Any]) -> None:
        """After an exception inside ``_write_metrics``: fold ``event`` into the summary if
        the writer kept it. Folding is idempotent (a value seen twice counts once), so a
        fold the exception cut short, or had already finished, is simply done again."""
        if self._writer.next_seq > event["seq"]:
            self.summary.observe(event["data"], event["seq"])

    @property
    def blobs(self) -> BlobStore:
        """The blob store of the run's Waddle folder (media, saved files, artifacts)."""
        return self._files.blobs

    def _encode_typed(self, event: dict[str, Any]) -> bytes:
        """``encode(event)`` with media as typed values (blobs written first) and stand-ins
        left out, which replaces ``event["data"]``: what ``log`` does when the plain
        encode failed. The scalar hot path pays nothing for media: only a failed encode
        (``encode(event, False)``, which skips naming the bad key) looks for them."""
        data = self._files.typed(event["data"])
        if data is not event["data"]:
            event["data"] = data
        return encode(event)  # the error, if any, names the key

    def save(
        self, glob_str: str | None = None, base_path: str | None = None, policy: str = "live"
    ) -> list[str]:
        """Record the files ``glob_str`` matches with the run (``artifact`` events of kind
        ``file``, after their blobs); their names, relative to ``base_path`` (by default
        the pattern's folder before its first wildcard). ``live`` saves now and again at
        finish (what changed), ``now`` only now, ``end`` only at finish."""
        return self._files.save(glob_str, base_path, policy)

    def log_code(
        self,
        root: str | None = ".",
        name: str | None = None,
        include_fn: Callable[[str, str], bool] | None = None,
        exclude_fn: Callable[[str, str], bool] | None = None,
    ) -> list[str]:
        """Record the source files under ``root`` (``.py`` files unless ``include_fn``
        says otherwise) as ``artifact`` events of kind ``code``; their names."""
        return self._files.log_code(root or ".", include_fn, exclude_fn)

    def log_artifact(
        self,
        artifact_or_path: Artifact | str | os.PathLike[str],
        name: str | None = None,
        type: str | None = None,
        aliases: list[str] | None = None,
        **unused: Any,
    ) -> Artifact:
        """Log a version of an artifact: the same content is the same version (v0, v1,
        ...); ``latest`` and ``aliases`` move to it. A path makes an artifact of it."""
        return self._files.log_artifact(artifact_or_path, name, type, aliases)

    def use_artifact(self, artifact_or_name: Artifact | str, **unused: Any) -> Artifact:
        """The version ``"name"``, ``"name:alias"`` or ``"name:vN"`` names (an artifact
        not logged yet is logged first), recorded as an ``artifact_use`` event (lineage);
        ``download()`` on it writes its files. UsageError when no such version exists."""
        return self._files.use_artifact(artifact_or_name)

    def watch(
        self,
        models: Any,
        criterion: Any = None,
        log: str | None = "gradients",
        log_freq: int = 1000,
        idx: int | None = None,
        log_graph: bool = False,
    ) -> None:
        """Log histograms of a torch model's ``gradients``, ``parameters`` or ``all``
        every ``log_freq`` backward (forward) passes (see ``waddle.producer.watch``)."""
        self._watchers += watch_models(self._log_watched, models, log, log_freq)

    def unwatch(self, models: Any = None) -> None:
        """Remove the hooks ``watch`` set on ``models`` (all models when None)."""
        listed = models if isinstance(models, list | tuple) else [models]
        for watcher in list(self._watchers):
            if models is None or any(watcher.model is model for model in listed):
                watcher.remove()
                self._watchers.remove(watcher)

    def _log_watched(self, histograms: dict[str, Any]) -> None:
        """A hook's histograms join the current step; after finish there is no step."""
        if histograms and not self._finished:
            self.log(histograms, commit=False)

    def start_system_metrics(self, sampler: SystemSampler) -> None:
        self._sampler = sampler
        sampler.start()

    def capture_console(self) -> None:
        """Record stdout and stderr as ``console`` events until ``finish``."""
        self._console = ConsoleCapture(
            lambda stream, text: self._record("console", {"stream": stream, "text": text})
        )

    def finish(self, exit_code: int | None = None, *, status: str | None = None) -> None:
        """Flush, write the final summary and the ``finish`` event, fsync, release the lock.

        Safe to call twice; later calls do nothing. A run that received SIGTERM finishes
        as ``killed``. An exit code beyond 64 bits (or not an integer) is recorded as
        none, with a warning: finishing never raises over it.
        """
        with self._lock:
            if self._finished:
                return
            self._finished = True
            if self._pending:
                self._flush_pending()
        self.unwatch()
        if self._sampler is not None:
            self._sampler.stop()
        if self._console is not None:
            self._console.close()
        self._files.finish()
        summary = self.summary.as_dict()
        if summary:
            self._writer.append("summary", {"summary": summary, "final": True})
        self.config._attach(None)
        self.summary._attach(None)
        if self.killed_by is not None:  # decided as late as possible: a signal may come now
            status = "killed"
            exit_code = SIGNAL_EXIT_BASE + self.killed_by if exit_code is None else exit_code
        self._writer.append(
            "finish",
            {
                "exit_code": recordable_exit_code(exit_code),
                "status": status or status_for(exit_code),
                "dropped": dict(self._writer.dropped),
            },
        )
        self._writer.close()
        if self._writer.dropped_total:
            logger.warning(
                "waddle: run %s lost %d event(s) to I/O trouble: %s",
                self.id,
                self._writer.dropped_total,
                self._writer.dropped,
            )
        if self._on_finish is not None:
            self._on_finish(self)
        if self._deferred is not None:
            self._deferred()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish(exit_code=SIGNAL_EXIT_BASE + 2, status="killed")
        else:
            self.finish(exit_code=1)


class DisabledRun(Run):
    """``mode="disabled"``: config and summary work in memory; logging costs nothing."""

    def __init__(
        self,
        run_id: str,
        project: str,
        name: str,
        root: Path,
        config: Config,
        on_finish: Callable[[Run], object] | None = None,
        about: RunAbout | None = None,
    ) -> None:
        self._describe(run_id, project, name, root, config, about or RunAbout())
        self.stream = run_id
        self._step = 0
        self.killed_by = None
        self._on_finish = on_finish

    @property
    def dropped(self) -> int:
        return 0

    disabled = True

    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        """Does nothing."""

    def define_metric(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Does nothing."""

    def save(self, glob_str: str | None = None, *args: Any, **kwargs: Any) -> list[str]:
        """Saves nothing."""
        return []

    def log_code(self, *args: Any, **kwargs: Any) -> list[str]:
        """Records nothing."""
        return []

    def watch(self, models: Any, *args: Any, **kwargs: Any) -> None:
        """Sets no hooks."""

    def unwatch(self, models: Any = None) -> None:
        """Nothing to remove."""

    def log_artifact(self, artifact_or_path: Any, *args: Any, **kwargs: Any) -> Artifact:
        """Records nothing; the artifact as given (a path becomes an artifact)."""
        return as_artifact(artifact_or_path, kwargs.get("name"), kwargs.get("type"))

    def use_artifact(self, artifact_or_name: Artifact | str, **kwargs: Any) -> Artifact:
        """Records nothing; the version named, as an enabled run would find it."""
        if isinstance(artifact_or_name, Artifact):
            return artifact_or_name
        return find_version(self.root, BlobStore(self.root), artifact_or_name)[0]

    def finish(self, exit_code: int | None = None, *, status: str | None = None) -> None:
        """Ends the run as the current one; writes nothing."""
        if self._on_finish is not None:
            self._on_finish(self)

    def defer_signal(self, action: Callable[[], object]) -> bool:
        """Never in the way of a signal handler: it holds no lock."""
        return True
