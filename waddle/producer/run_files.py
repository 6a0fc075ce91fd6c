"""A run's files beside its log: media, saved files, logged code and artifacts.

Each file goes into the content-addressed blob store of the run's Waddle folder before
the event that names it is written, so a reader never meets a name without its file.
Misuse (a bad pattern, an unknown version) raises at the call; I/O trouble leaves the
file out, warned about and counted as dropped, never raised into the training loop.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from waddle.blobs.store import BlobStore
from waddle.errors import UsageError
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
from waddle.producer.media import typed_values
from waddle.producer.media.stand_ins import without_stand_ins

logger = logging.getLogger("waddle")

# Writes one event of the run: (type, fields).
Recorder = Callable[[str, dict[str, Any]], object]


class RunFiles:
    """The files one run records; ``record`` writes the events that name them and
    ``count_dropped`` counts what I/O trouble kept out (the stream writer's counter)."""

    def __init__(
        self, root: Path, run_id: str, record: Recorder, count_dropped: Callable[[str, int], None]
    ) -> None:
        self.root = root
        self.run_id = run_id
        self._record = record
        self._count_dropped = count_dropped
        self._blobs: BlobStore | None = None
        self._saves: list[tuple[str, Path]] = []  # save() patterns to look at again at finish
        self._saved: dict[tuple[str, str], str] = {}  # (kind, name) -> sha256 last recorded

    @property
    def blobs(self) -> BlobStore:
        """The blob store of the run's Waddle folder, opened on first use."""
        if self._blobs is None:
            self._blobs = BlobStore(self.root, sync_each=False)  # synced at finish
        return self._blobs

    def typed(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """``data`` with media as typed values (blobs written first) and stand-ins left out."""
        return without_stand_ins(typed_values(data, self.blobs, self.trouble))

    def trouble(self, what: str, exc: OSError) -> None:
        """I/O trouble writing a blob: the value is not recorded, counted as dropped."""
        logger.warning("waddle: %s was not recorded: %s", what, exc)
        cause = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        self._count_dropped(f"blob {cause}", 1)

    def save(self, glob_str: object, base_path: str | None, policy: str) -> list[str]:
        """``run.save``: record the files ``glob_str`` matches now (policy ``live`` or
        ``now``) and look again at finish (``live`` or ``end``); their names."""
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
        root: str,
        include_fn: Callable[[str, str], bool] | None,
        exclude_fn: Callable[[str, str], bool] | None,
    ) -> list[str]:
        """``run.log_code``: record the source files under ``root``; their names."""
        return self._save_files(code_files(root, include_fn, exclude_fn), "code")

    def _save_files(self, found: list[tuple[str, Path]], kind: str) -> list[str]:
        """Copy each file into the blob store and record it, unless it is unchanged since
        this run last recorded it; I/O trouble leaves the file out, counted."""
        saved = []
        for name, path in found:
            try:
                ref = self.blobs.put_file(path)
            except OSError as exc:
                self.trouble(f"file {path}", exc)
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
        name: str | None,
        type: str | None,
        aliases: list[str] | None,
    ) -> Artifact:
        """``run.log_artifact``: store a version (the same content is the same version)."""
        artifact = as_artifact(artifact_or_path, name, type)
        wanted = [check_name(alias, "alias") for alias in aliases or ()]
        plain_json(artifact.metadata)  # changed since construction: still misuse, raised here
        try:
            fields = store_version(artifact, self.blobs, self.root, self.run_id, wanted)
        except OSError as exc:
            self.trouble(f"artifact {artifact.name}", exc)
            return artifact
        self._record("artifact_version", fields)
        return artifact

    def use_artifact(self, artifact_or_name: Artifact | str) -> Artifact:
        """``run.use_artifact``: the version named, recorded as used (lineage)."""
        if isinstance(artifact_or_name, Artifact):
            if artifact_or_name.version is None:
                self.log_artifact(artifact_or_name, None, None, None)
            artifact_or_name = artifact_or_name.qualified_name
        artifact, alias = find_version(self.root, self.blobs, artifact_or_name)
        fields = {"name": artifact.name, "version": artifact.version, "digest": artifact.digest}
        self._record("artifact_use", {**fields, "alias": alias})
        return artifact

    def finish(self) -> None:
        """Save what the ``live`` and ``end`` patterns match now, then sync the blobs."""
        for pattern, base in self._saves:
            self._save_files(saved_files(pattern, base), "file")
        if self._blobs is not None:
            try:
                self._blobs.sync()
            except OSError as exc:  # durability only: every blob is already whole
                logger.warning("waddle: syncing the run's blobs failed: %s", exc)
