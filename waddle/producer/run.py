"""Run: the object a training script logs into (wandb's shape).

Step rules: each committed ``log()`` without ``step=`` goes to the current step and then
advances it; ``commit=False`` gathers values into the current step until a committed
call; ``step=N`` logs at N and moves the current step to N+1 if that is ahead. Unlike
wandb, a ``step`` below the current one is recorded, never dropped. ``seq`` (transport
order) and ``step`` (the user's x axis) are independent.
"""

from __future__ import annotations

import errno
import logging
import operator
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from types import TracebackType
from typing import Any, SupportsIndex
from urllib.parse import urlencode

from waddle.blobs.store import BlobStore
from waddle.errors import EncodeError, UsageError
from waddle.eventlog.record import METRIC_GOALS, METRIC_SUMMARIES, encode
from waddle.eventlog.writer import StreamWriter
from waddle.limits import INT64_MAX, INT64_MIN
from waddle.producer.artifacts import (
    SAVE_POLICIES,
    Artifact,
    as_artifact,
    check_name,
    code_files,
    find_version,
    plain_json,
    save_base,
    saved_files,
    store_version,
)
from waddle.producer.config import Config, Summary
from waddle.producer.console import ConsoleCapture
from waddle.producer.media import typed_values
from waddle.producer.media.stand_ins import without_stand_ins
from waddle.producer.system import SystemSampler
from waddle.producer.watch import Watcher, watch_models

logger = logging.getLogger("waddle")

SIGNAL_EXIT_BASE = 128
# ``waddle serve``'s default address: ``run.url`` points there (the producer does not
# import the web package to ask).
DASHBOARD_URL = "http://127.0.0.1:8080/"
_now = time.time


def status_for(exit_code: object) -> str:
    """``finished`` for a clean exit, ``failed`` otherwise."""
    return "finished" if not exit_code else "failed"


def recordable_exit_code(exit_code: object) -> int | None:
    """``exit_code`` as the log records it: an integer within 64 bits, else None.

    ``finish`` is no place to raise (it runs at exit, in handlers): an exit code the log
    cannot hold is dropped with a warning, and the status still says the run failed.
    """
    if exit_code is None:
        return None
    # ints, bools, numpy integers: whatever is an index
    code = operator.index(exit_code) if isinstance(exit_code, SupportsIndex) else None
    if code is None or not INT64_MIN <= code <= INT64_MAX:
        logger.warning(
            "waddle: exit code %.100r is not an integer within 64 bits; the run is recorded "
            "without an exit code",
            exit_code,
        )
        return None
    return code


def matches(pattern: str, key: str) -> bool:
    """Whether a metric name matches a ``define_metric`` name (``*`` is any text)."""
    return pattern == key or ("*" in pattern and fnmatchcase(key, pattern))


def check_metric_definition(
    name: object, step_metric: object, summary: object, goal: object, hidden: object
) -> dict[str, Any]:
    """The fields of a ``define_metric`` event; misuse raises here, at the call."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"define_metric() takes a metric name or glob, got {name!r}")
    if step_metric is not None and not isinstance(step_metric, str):
        raise UsageError(f"step_metric must be a metric name, got {step_metric!r}")
    if summary is not None and summary not in METRIC_SUMMARIES:
        raise UsageError(f"summary must be one of {', '.join(METRIC_SUMMARIES)}, got {summary!r}")
    if goal is not None and goal not in METRIC_GOALS:
        raise UsageError(f"goal must be one of {', '.join(METRIC_GOALS)}, got {goal!r}")
    return {
        "metric": name,
        "step_metric": step_metric,
        "summary": summary,
        "hidden": bool(hidden),
        "goal": goal,
    }


@dataclass(frozen=True)
class RunAbout:
    """What ``init`` was told about a run beyond its id and name (wandb's run attributes)."""

    tags: tuple[str, ...] = ()
    notes: str | None = None
    group: str | None = None
    job_type: str | None = None
    resumed: bool = False
    settings: Any = None


class Run:
    """One process's part of a run: writes its stream until ``finish``."""

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
        self._blobs: BlobStore | None = None
        self._watchers: list[Watcher] = []
        self._saves: list[tuple[str, Path]] = []  # save() patterns to look at again at finish
        self._saved: dict[tuple[str, str], str] = {}  # (kind, name) -> sha256 last recorded
        self._synced: dict[str, str] = {}  # metric or glob -> its step metric (step_sync)
        # Whether define_metric asked for a step_sync or a summary rule: the one test the
        # hot path makes for both (without, a step's values are the summary's last ones).
        self._defined = False
        config._attach(lambda changes: self._record("config", {"config": changes}))
        self.summary._attach(lambda changes: self._record("summary", {"summary": changes}))

    def _describe(
        self, run_id: str, project: str, name: str, root: Path, config: Config, about: RunAbout
    ) -> None:
        """The attributes wandb's run has, for a live run and a disabled one alike."""
        self.id = run_id
        self.project = project
        self.name = name
        self.root = root
        self.config = config
        self.summary = Summary()
        self.tags = about.tags
        self.notes = about.notes
        self.group = about.group
        self.job_type = about.job_type
        self.resumed = about.resumed
        self.settings = about.settings
        self.start_time = _now()

    entity: str | None = None  # no accounts offline
    offline = True  # nothing is sent anywhere; a relay consumer may copy the log later
    disabled = False

    @property
    def path(self) -> str:
        """``<project>/<id>``, what ``waddle.Api().run()`` takes."""
        return f"{self.project}/{self.id}"

    @property
    def url(self) -> str:
        """The run in the local dashboard (``waddle serve``'s default address)."""
        return f"{DASHBOARD_URL}#{urlencode({'project': self.project, 'run': self.id})}"

    def get_url(self) -> str:
        return self.url

    def project_name(self) -> str:
        return self.project

    @property
    def dir(self) -> str:
        """The run's own folder for files a script saves beside it (wandb's ``run.dir``):
        ``<root>/files/<id>``, created on first use."""
        folder = self.root / "files" / self.id
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # the script's own write will say what is wrong
            logger.warning("waddle: cannot create the run folder %s: %s", folder, exc)
        return str(folder)

    def _label(self, *args: Any, **labels: Any) -> None:
        """wandb's telemetry labels (Hugging Face calls it on every run): nothing to do."""

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

    def _with_step_metrics(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` plus the last value of each synced step metric it lacks."""
        added = {}
        for pattern, step_metric in self._synced.items():
            if step_metric in data or step_metric in added or step_metric not in self._last:
                continue
            if any(key != step_metric and matches(pattern, key) for key in data):
                added[step_metric] = self._last[step_metric]
        return {**data, **added} if added else data

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
        raised into the call (Ctrl-C) leaves the summary as the log is (``_settle``)."""
        if self._defined:
            data = self._with_step_metrics(data)
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
        try:
            if writer.write_lines_locked(line, 1):
                if self._defined:
                    self.summary.observe(event["data"], event["seq"])
                else:
                    self._last.update(event["data"])
        except BaseException:
            self._settle(event)
            raise

    def _settle(self, event: dict[str, Any]) -> None:
        """After an exception inside ``_write_metrics``: fold ``event`` into the summary if
        the writer kept it. Folding is idempotent (a value seen twice counts once), so a
        fold the exception cut short, or had already finished, is simply done again."""
        if self._writer.next_seq > event["seq"]:
            self.summary.observe(event["data"], event["seq"])

    @property
    def blobs(self) -> BlobStore:
        """The blob store of the run's Waddle folder (media, saved files, artifacts)."""
        if self._blobs is None:
            self._blobs = BlobStore(self.root, sync_each=False)  # synced at finish
        return self._blobs

    def _encode_typed(self, event: dict[str, Any]) -> bytes:
        """``encode(event)`` with media as typed values (blobs written first) and stand-ins
        left out, which replaces ``event["data"]``: what ``log`` does when the plain
        encode failed. The scalar hot path pays nothing for media: only a failed encode
        (``encode(event, False)``, which skips naming the bad key) looks for them."""
        data = self._typed(event["data"])
        if data is not event["data"]:
            event["data"] = data
        return encode(event)  # the error, if any, names the key

    def _typed(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """``data`` with media as typed values (blobs written first) and stand-ins left out."""
        return without_stand_ins(typed_values(data, self.blobs, self._blob_trouble))

    def _blob_trouble(self, what: str, exc: OSError) -> None:
        """I/O trouble writing a blob: the value is not recorded, counted as dropped."""
        logger.warning("waddle: %s was not recorded: %s", what, exc)
        cause = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        self._writer.count_dropped(f"blob {cause}", 1)

    def save(
        self, glob_str: str | None = None, base_path: str | None = None, policy: str = "live"
    ) -> list[str]:
        """Record the files ``glob_str`` matches with the run (``artifact`` events of kind
        ``file``, after their blobs); their names, relative to ``base_path`` (by default
        the pattern's folder before its first wildcard). ``live`` saves now and again at
        finish (what changed), ``now`` only now, ``end`` only at finish."""
        if not isinstance(glob_str, str | os.PathLike) or not str(glob_str):
            raise UsageError(f"save() takes a path or a glob, got {glob_str!r}")
        if policy not in SAVE_POLICIES:
            raise UsageError(f"save() policy must be one of {', '.join(SAVE_POLICIES)}")
        pattern, base = save_base(str(glob_str), base_path)
        if policy != "now":
            self._saves.append((pattern, base))
        found = saved_files(pattern, base)
        if policy == "end":
            return [name for name, _ in found]
        return self._save_files(found, "file")

    def log_code(
        self,
        root: str | None = ".",
        name: str | None = None,
        include_fn: Callable[[str, str], bool] | None = None,
        exclude_fn: Callable[[str, str], bool] | None = None,
    ) -> list[str]:
        """Record the source files under ``root`` (``.py`` files unless ``include_fn``
        says otherwise) as ``artifact`` events of kind ``code``; their names."""
        return self._save_files(code_files(root or ".", include_fn, exclude_fn), "code")

    def _save_files(self, found: list[tuple[str, Path]], kind: str) -> list[str]:
        """Copy each file into the blob store and record it, unless it is unchanged since
        this run last recorded it; I/O trouble leaves the file out, counted."""
        saved = []
        for name, path in found:
            try:
                ref = self.blobs.put_file(path)
            except OSError as exc:
                self._blob_trouble(f"file {path}", exc)
                continue
            saved.append(name)
            if self._saved.get((kind, name)) == ref.sha256:
                continue
            self._saved[(kind, name)] = ref.sha256
            fields = {"name": name, "kind": kind, "path": str(path)}
            self._record("artifact", {**fields, "size": ref.size, "sha256": ref.sha256})
        return saved

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
        artifact = as_artifact(artifact_or_path, name, type)
        wanted = [check_name(alias, "alias") for alias in aliases or ()]
        plain_json(artifact.metadata)  # changed since construction: still misuse, raised here
        try:
            fields = store_version(artifact, self.blobs, self.root, self.id, wanted)
        except OSError as exc:
            self._blob_trouble(f"artifact {artifact.name}", exc)
            return artifact
        self._record("artifact_version", fields)
        return artifact

    def use_artifact(self, artifact_or_name: Artifact | str, **unused: Any) -> Artifact:
        """The version ``"name"``, ``"name:alias"`` or ``"name:vN"`` names (an artifact
        not logged yet is logged first), recorded as an ``artifact_use`` event (lineage);
        ``download()`` on it writes its files. UsageError when no such version exists."""
        if isinstance(artifact_or_name, Artifact):
            if artifact_or_name.version is None:
                self.log_artifact(artifact_or_name)
            artifact_or_name = artifact_or_name.qualified_name
        artifact, alias = find_version(self.root, self.blobs, artifact_or_name)
        fields = {"name": artifact.name, "version": artifact.version, "digest": artifact.digest}
        self._record("artifact_use", {**fields, "alias": alias})
        return artifact

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
        for pattern, base in self._saves:
            self._save_files(saved_files(pattern, base), "file")
        if self._blobs is not None:
            try:
                self._blobs.sync()
            except OSError as exc:  # durability only: every blob is already whole
                logger.warning("waddle: syncing the run's blobs failed: %s", exc)
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

    def __repr__(self) -> str:
        return f"<waddle.Run {self.id} project={self.project!r} name={self.name!r}>"


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
