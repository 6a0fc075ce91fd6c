"""What a run is, beside what it records: its id and names, its folder, and the other
attributes wandb's run has (``path``, ``url``, ``dir``, tags, notes, ...).

Shared by a live run and a disabled one, so that a script reads them alike in both.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from waddle.producer.config import Config, Summary

logger = logging.getLogger("waddle")

# ``waddle serve``'s default address: ``run.url`` points there (the producer does not
# import the web package to ask).
DASHBOARD_URL = "http://127.0.0.1:8080/"


@dataclass(frozen=True)
class RunAbout:
    """What ``init`` was told about a run beyond its id and name (wandb's run attributes)."""

    tags: tuple[str, ...] = ()
    notes: str | None = None
    group: str | None = None
    job_type: str | None = None
    resumed: bool = False
    settings: Any = None


class RunInfo:
    """The attributes wandb's run has; a run class calls ``_describe`` first."""

    entity: str | None = None  # no accounts offline
    offline = True  # nothing is sent anywhere; a relay consumer may copy the log later
    disabled = False

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
        self.start_time = time.time()

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

    def __repr__(self) -> str:
        return f"<waddle.Run {self.id} project={self.project!r} name={self.name!r}>"
