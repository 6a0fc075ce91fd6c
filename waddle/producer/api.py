"""``waddle.init`` and the module-level API (``waddle.log``, ``waddle.finish``, ...).

Process-wide hooks are installed once: atexit and sys.excepthook on the first ``init``,
the SIGTERM handler on the first ``init`` in the main thread (only it may set one):

* atexit finishes every live run (a run nobody finished still gets its ``finish``);
* sys.excepthook marks live runs failed before the interpreter exits, then chains;
* SIGTERM (a scheduler preempting the job): with the default disposition the live runs
  finish as ``killed`` and the process then dies of SIGTERM exactly as it would have;
  a handler the program installed is called after the runs are marked killed, never
  replaced; an ignored SIGTERM stays ignored.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

from waddle import paths
from waddle.errors import UsageError
from waddle.eventlog.segment import DEFAULT_SEGMENT_BYTES, list_segments, log_dir
from waddle.eventlog.writer import StreamWriter
from waddle.ids import MAX_RANK, check_id, new_run_id, stream_id
from waddle.producer import context
from waddle.producer.about import RunAbout
from waddle.producer.config import Config, as_plain_dict
from waddle.producer.gpu import open_nvml
from waddle.producer.names import friendly_name
from waddle.producer.resume import replay_stream
from waddle.producer.run import DisabledRun, Run
from waddle.producer.system import DEFAULT_INTERVAL_S, SystemSampler
from waddle.producer.terminal import Settings, is_silent

MODES = ("online", "offline", "disabled")
# wandb's other spellings: Lightning's WandbLogger(offline=True) sets WANDB_MODE=dryrun
MODE_ALIASES = {"dryrun": "offline", "run": "online"}
RESUME_CHOICES = (None, False, True, "allow", "must", "never", "auto")

_live: list[Run] = []
_hooks_installed = False
_sigterm_chained = False
_hook_lock = threading.Lock()
# ``waddle.config`` before ``init``: values set on it are applied by the next ``init``.
_preinit_config = Config()


def _env(name: str) -> str | None:
    """``$WADDLE_<name>``, else ``$WANDB_<name>``: wandb scripts and jobs keep working."""
    return os.environ.get(f"WADDLE_{name}") or os.environ.get(f"WANDB_{name}") or None


def _env_tags() -> tuple[str, ...]:
    text = _env("TAGS") or ""
    return tuple(tag.strip() for tag in text.split(",") if tag.strip())


def _env_resume() -> bool | str | None:
    value = _env("RESUME")
    if value is None:
        return None
    lowered = value.strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(lowered, lowered)


def init(
    project: str | None = None,
    name: str | None = None,
    config: Any = None,
    tags: list[str] | tuple[str, ...] | None = None,
    notes: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    id: str | None = None,
    resume: bool | str | None = None,
    mode: str | None = None,
    settings: Settings | None = None,
    reinit: bool | str | None = None,
    config_exclude_keys: list[str] | None = None,
    config_include_keys: list[str] | None = None,
    system_metrics: bool = True,
    system_interval: float = DEFAULT_INTERVAL_S,
    console: bool = False,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    fsync_interval: float | None = None,
    **ignored: Any,
) -> Run:
    """Start a run (or continue one with ``resume=``) and return it.

    Each argument left out falls back to ``$WADDLE_<NAME>``, then ``$WANDB_<NAME>``
    (``WANDB_RUN_GROUP`` for ``group``). The run is written in the Waddle folder ``root``
    (Waddle's own argument), else ``$WADDLE_DIR``, else ``<dir>/.waddle`` (``dir`` as
    in wandb, or ``$WANDB_DIR``), else ``./.waddle``. As in wandb, a second ``init`` finishes the
    run this process has live, unless ``reinit="create_new"`` (``"return_previous"``
    returns it instead). Keyword arguments of wandb.init that have no meaning offline
    (``entity``, ``anonymous``, ...) are accepted and ignored so wandb scripts run as is.
    """
    mode = mode or _env("MODE") or "offline"
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    resume = _env_resume() if resume is None else resume
    if resume not in RESUME_CHOICES:
        raise UsageError(f"resume must be True, False, 'allow', 'must' or 'never', got {resume!r}")
    if _live and reinit == "return_previous":
        return _live[-1]
    if reinit != "create_new":
        _finish_all()
    project = str(project or _env("PROJECT") or "uncategorized")
    run_id = check_id(id or _env("RUN_ID") or new_run_id(), "run id")
    root = paths.command_root(root) if root else paths.root_dir(dir or os.environ.get("WANDB_DIR"))
    given = as_plain_dict(config)
    if config_include_keys is not None:  # wandb's: keep only these keys of ``config``
        given = {key: value for key, value in given.items() if key in config_include_keys}
    for key in config_exclude_keys or ():
        given.pop(key, None)
    values = Config({**_take_preinit_config(), **given})
    name = str(name or _env("NAME") or friendly_name(run_id))
    tags = tuple(str(tag) for tag in tags) if tags is not None else _env_tags()
    notes = _text_or_none(notes if notes is not None else _env("NOTES"))
    group = _text_or_none(group if group is not None else _env("RUN_GROUP"))
    job_type = _text_or_none(job_type if job_type is not None else _env("JOB_TYPE"))
    settings = settings if settings is not None else Settings()
    about = RunAbout(tags, notes, group, job_type, False, settings)
    if mode == "disabled":
        disabled = DisabledRun(run_id, project, name, root, values, forget, about)
        return _register(disabled)
    rank = _rank()
    stream = check_id(stream_id(run_id, rank), "stream id (run id + '.' + RANK)")
    stream_dir = log_dir(root) / stream
    resuming = resume not in (None, False, "never") and bool(list_segments(stream_dir))
    if resume == "must" and not resuming:
        raise UsageError(f"resume='must' but run {run_id!r} has no log under {root}")
    writer = StreamWriter(
        stream_dir, resume=resuming, segment_bytes=segment_bytes, fsync_interval=fsync_interval
    )
    try:
        previous = replay_stream(root, stream) if resuming else None
        if previous is not None:
            values = Config({**previous.config, **values.as_dict()})
        nvml = open_nvml() if system_metrics else None
        writer.append(
            "run",
            {
                "run_id": run_id,
                "project": project,
                "name": name,
                "config": values.as_dict(),
                "tags": list(tags),
                "notes": notes,
                "group": group,
                "job_type": job_type,
                "context": context.collect(nvml.describe() if nvml else None),
                "rank": rank,
                "resumed": resuming,
            },
        )
    except BaseException:
        writer.discard(keep_log=resuming)
        raise
    run = Run(
        writer=writer,
        run_id=run_id,
        stream=stream,
        project=project,
        name=name,
        root=root,
        config=values,
        step=previous.next_step if previous else 0,
        on_finish=forget,
        about=RunAbout(tags, notes, group, job_type, resuming, settings),
    )
    if previous is not None:
        run.summary.seed(previous.last_values, previous.explicit_summary)
    if system_metrics:
        run.start_system_metrics(
            SystemSampler(
                lambda data: writer.append("system", {"data": data}), system_interval, nvml
            )
        )
    if console:
        run.capture_console()
    return _register(run)


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _rank() -> int:
    """This process's rank from ``$RANK`` (0 when unset or not a number).

    A rank above ``MAX_RANK`` is refused here, at ``init``: no store could record it.
    """
    try:
        rank = max(int(os.environ.get("RANK", "0")), 0)
    except ValueError:
        return 0
    if rank > MAX_RANK:
        raise UsageError(f"RANK={rank} is above {MAX_RANK}, the highest rank Waddle records")
    return rank


def _register(run: Run) -> Run:
    _live.append(run)
    _install_hooks()
    return run


def forget(run: Run) -> None:
    """Called by ``Run.finish``: the run is no longer the current one. Says where the run
    is and how to see it, unless silenced (``Settings(silent=True)``, ``WADDLE_SILENT``,
    ``WANDB_SILENT``)."""
    if run in _live:
        _live.remove(run)
    if not run.disabled and not is_silent(run.settings):
        line = f"waddle: run {run.name} ({run.id}) is in {run.root}; "
        line += f"see it with: waddle serve --dir {run.root}\n"
        # finish runs at exit and in signal handlers: a closed or broken stderr (None
        # under pythonw), or a write the handler interrupted, must not raise from here
        with contextlib.suppress(OSError, RuntimeError, ValueError, AttributeError):
            sys.stderr.write(line)


def current() -> Run | None:
    """The most recently started live run, or None."""
    return _live[-1] if _live else None


def _require() -> Run:
    run = current()
    if run is None:
        raise UsageError("no active run: call waddle.init() first")
    return run


def log(data: dict[str, Any], step: int | None = None, commit: bool = True) -> None:
    """``run.log`` on the current run."""
    _require().log(data, step=step, commit=commit)


def define_metric(
    name: str,
    step_metric: str | None = None,
    step_sync: bool | None = None,
    hidden: bool | None = None,
    summary: str | None = None,
    goal: str | None = None,
    overwrite: bool | None = None,
) -> None:
    """``run.define_metric`` on the current run."""
    _require().define_metric(name, step_metric, step_sync, hidden, summary, goal, overwrite)


def _take_preinit_config() -> dict[str, Any]:
    global _preinit_config
    values = _preinit_config.as_dict()
    _preinit_config = Config()
    return values


def preinit_config() -> Config:
    """``waddle.config`` before ``init``: kept, and applied (under ``init(config=)``) by it."""
    return _preinit_config


def finish(exit_code: int | None = None) -> None:
    """``run.finish`` on the current run; nothing when there is none."""
    run = current()
    if run is not None:
        run.finish(exit_code)


def _finish_all(exit_code: int | None = None, status: str | None = None) -> None:
    for run in list(_live):
        run.finish(exit_code, status=status)


def _install_hooks() -> None:
    global _hooks_installed, _sigterm_chained
    with _hook_lock:
        chain = not _sigterm_chained and threading.current_thread() is threading.main_thread()
        _sigterm_chained = _sigterm_chained or chain
        first = not _hooks_installed
        _hooks_installed = True
    if chain:  # signal handlers can only be installed from the main thread
        _chain_sigterm()
    if not first:
        return
    atexit.register(_finish_all)
    previous_hook = sys.excepthook

    def excepthook(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            _finish_all(exit_code=130, status="killed")
        else:
            _finish_all(exit_code=1)
        previous_hook(kind, value, tb)

    sys.excepthook = excepthook


def _chain_sigterm() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        for run in _live:
            run.killed_by = signum
        if callable(previous):
            previous(signum, frame)
            return

        def die() -> None:
            _finish_all()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

        if all(run.defer_signal(die) for run in list(_live)):
            die()

    signal.signal(signal.SIGTERM, on_sigterm)
