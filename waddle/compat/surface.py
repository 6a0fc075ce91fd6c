"""The parts of wandb's module-level API that Waddle answers without a server or an account.

Each name here is a local equivalent (``termlog`` prints to stderr, ``login`` succeeds
because there is nothing to log in to) or a no-op that says so once on stderr. None of
them raises: a training job must not die on a call that an offline tracker cannot
honour. ``waddle`` exports every name in ``__all__``, so ``import waddle as wandb`` and
the ``wandb`` package that ``waddle run`` provides answer the same.
"""

from __future__ import annotations

import enum
from typing import Any

from waddle.errors import UsageError
from waddle.ids import new_run_id
from waddle.producer.terminal import Settings, termerror, termlog, termwarn

# The names that stand at the top level of ``wandb``; ``ConfigError`` and ``generate_id``
# live in its submodules (``wandb.sdk.lib.config_util``, ``wandb.util``).
__all__ = [
    "AlertLevel",
    "Settings",
    "alert",
    "log_artifact",
    "login",
    "mark_preempting",
    "require",
    "save",
    "setup",
    "termerror",
    "termlog",
    "termwarn",
    "unwatch",
    "use_artifact",
    "watch",
]

# wandb raises ConfigError when a config change is refused; Waddle's refusal is a
# UsageError, so ``except ConfigError`` in an integration catches what it means to.
ConfigError = UsageError


class AlertLevel(str, enum.Enum):
    """The levels of ``alert``."""

    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"


def alert(
    title: str,
    text: str,
    level: str | AlertLevel | None = None,
    wait_duration: float | None = None,
) -> None:
    """Print the alert to stderr: Waddle has no service to send a mail or a Slack message."""
    label = AlertLevel(level).value if level is not None else AlertLevel.INFO.value
    termwarn(f"alert [{label}] {title}: {text}")


def login(*args: Any, **kwargs: Any) -> bool:
    """True: an offline tracker has no account to log in to."""
    return True


def setup(settings: Settings | None = None) -> None:
    """Nothing to prepare: Waddle starts no service process."""


def require(requirement: str | None = None) -> None:
    """Nothing to require (Lightning asks for wandb's "service", which Waddle does not need)."""


def mark_preempting() -> None:
    """Nothing to mark: a scheduler's SIGTERM is already recorded as a ``killed`` finish."""


def watch(
    models: Any = None,
    criterion: Any = None,
    log: str | None = "gradients",
    log_freq: int = 1000,
    idx: int | None = None,
    log_graph: bool = False,
) -> None:
    """``run.watch`` on the current run: histograms of a torch model's gradients and/or
    parameters every ``log_freq`` steps. Without a run, says so once and does nothing."""
    run = _current_or_say("watch()")
    if run is not None:
        run.watch(models, criterion, log=log, log_freq=log_freq, idx=idx, log_graph=log_graph)


def unwatch(models: Any = None) -> None:
    """``run.unwatch`` on the current run: the hooks of ``watch`` are removed."""
    from waddle.producer.api import current

    run = current()
    if run is not None:
        run.unwatch(models)


def save(
    glob_str: str | None = None, base_path: str | None = None, policy: str = "live"
) -> list[str]:
    """``run.save`` on the current run: the names of the files saved (none without a run,
    which is said once)."""
    run = _current_or_say("save()")
    return [] if run is None else run.save(glob_str, base_path, policy)


def log_artifact(artifact: Any = None, *args: Any, **kwargs: Any) -> Any:
    """``run.log_artifact`` on the current run (without one, says so once)."""
    run = _current_or_say("log_artifact()")
    return artifact if run is None else run.log_artifact(artifact, *args, **kwargs)


def use_artifact(artifact: Any = None, *args: Any, **kwargs: Any) -> Any:
    """``run.use_artifact`` on the current run; UsageError without one (the script needs
    the files it asks for)."""
    from waddle.producer.api import current

    run = current()
    if run is None:
        raise UsageError("use_artifact() needs a run: call waddle.init() first")
    return run.use_artifact(artifact, *args, **kwargs)


def _current_or_say(call: str) -> Any:
    """The current run; None, said once on stderr, when there is none."""
    from waddle.producer.api import current  # here: the producer imports this module

    run = current()
    if run is None:
        termwarn(f"{call} records nothing without a run (call waddle.init() first)", repeat=False)
    return run


def generate_id(length: int = 8) -> str:
    """A fresh run id. Always Waddle's 12 characters: ``length`` is accepted for wandb's
    signature, but an 8-character id collides too easily (see ``waddle.ids``)."""
    return new_run_id()
