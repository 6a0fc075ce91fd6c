"""Artifacts: named, versioned sets of files (``Artifact``, ``log_artifact``, ``use_artifact``).

A version is its content: the manifest (files by path, with their SHA-256 and size, and
references by URI) is a blob, and its ``digest`` (the SHA-256 of the sorted files,
references and type; not the metadata, not the run) picks the version. Logging the same
content again is the same version; new content is the next (v0, v1, ...). The versions
of each name, shared by every run of the Waddle folder, are indexed in
``<root>/artifacts/<name>.json``, updated under an flock with temp + rename
(docs/media.md). Files are copied into ``blobs/`` (hashed while copied) before the
``artifact_version`` event that names the manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

import orjson

from waddle.blobs.store import BlobStore
from waddle.errors import EncodeError, UsageError
from waddle.eventlog.record import _to_plain
from waddle.paths import PathArg, artifacts_dir

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION = re.compile(r"^v(\d+)$")
LATEST = "latest"


def check_name(name: object, what: str = "artifact name") -> str:
    """A name that is a safe file name (letters, digits, ``.``, ``_``, ``-``)."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 128:
        raise UsageError(
            f"an {what} is letters, digits, '.', '_' and '-' (at most 128), got {name!r}"
        )
    return name


def entry_path(name: str) -> str:
    """A file's path inside an artifact: relative, '/'-separated, no '..'."""
    path = PurePosixPath(name.replace(os.sep, "/"))
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise UsageError(f"a path inside an artifact must be relative, without '..': {name!r}")
    return str(path)


class Artifact:
    """A set of files, references and metadata logged as one version of ``name``."""

    def __init__(
        self,
        name: str,
        type: str,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        **unused: Any,
    ) -> None:
        self.name = check_name(name)
        self.type = str(type)
        self.description = description
        self.metadata: dict[str, Any] = dict(metadata or {})
        plain_json(self.metadata)
        self._sources: dict[str, Path] = {}  # path in the artifact -> local file
        self.references: dict[str, str] = {}  # path in the artifact -> URI
        self.entries: list[dict[str, Any]] = []  # {path, sha256, size} once logged or used
        self.version: int | None = None
        self.digest: str | None = None
        self.aliases: list[str] = []
        self._store: BlobStore | None = None
        self._staging: Path | None = None

    def add_file(self, local_path: PathArg, name: str | None = None, **unused: Any) -> None:
        """Add a file, under ``name`` (its file name by default). Copied at ``log_artifact``."""
        path = Path(local_path)
        if not path.is_file():
            raise UsageError(f"Artifact.add_file: no file at {path}")
        self._sources[entry_path(name or path.name)] = path

    def add_dir(self, local_path: PathArg, name: str | None = None, **unused: Any) -> None:
        """Add every file under a folder, under ``name/`` (the top level by default)."""
        folder = Path(local_path)
        if not folder.is_dir():
            raise UsageError(f"Artifact.add_dir: no folder at {folder}")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            self.add_file(path, f"{name}/{rel}" if name else rel)

    def add_reference(self, uri: str, name: str | None = None, **unused: Any) -> None:
        """Record a URI (``s3://...``, ``https://...``, ``file://...``) without copying it."""
        if not isinstance(uri, str) or not uri:
            raise UsageError(f"Artifact.add_reference takes a URI, got {uri!r}")
        self.references[entry_path(name or uri.rstrip("/").rsplit("/", 1)[-1])] = uri

    def new_file(self, name: str, mode: str = "x", encoding: str | None = None) -> IO[Any]:
        """A new file to write into the artifact (wandb's ``new_file``), added as ``name``."""
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="waddle-artifact-"))
        path = self._staging / entry_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sources[entry_path(name)] = path
        return open(path, mode, encoding=encoding)

    def files(self) -> list[dict[str, Any]]:
        """The files of a logged or used version: ``{path, sha256, size}`` sorted by path."""
        return list(self.entries)

    def get_path(self, name: str) -> Path:
        """Where the bytes of one file of a logged or used version are (read only)."""
        for entry in self.entries:
            if entry["path"] == name and self._store is not None:
                return self._store.path(entry["sha256"])
        raise UsageError(f"artifact {self.name} has no file {name!r}")

    def download(self, root: PathArg | None = None) -> str:
        """Write the version's files under ``root`` (``./artifacts/<name>:v<N>``); its path."""
        if self._store is None or self.version is None:
            raise UsageError("download() needs an artifact from use_artifact or log_artifact")
        target = (
            Path(root) if root is not None else Path("artifacts") / f"{self.name}:v{self.version}"
        )
        for entry in self.entries:
            path = target / entry["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._store.path(entry["sha256"]), path)
        return str(target)

    def wait(self, timeout: float | None = None) -> Artifact:
        """Logging is synchronous here: nothing to wait for."""
        return self

    @property
    def qualified_name(self) -> str:
        return f"{self.name}:v{self.version}" if self.version is not None else self.name

    def __repr__(self) -> str:
        return f"<waddle.Artifact {self.qualified_name} type={self.type!r}>"


def plain_json(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` as plain JSON values; ``EncodeError`` (at the call) when it is not."""
    try:
        text = orjson.dumps(metadata, default=_to_plain, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:
        raise EncodeError("metadata", metadata, f"artifact metadata is not JSON ({exc})") from exc
    plain: dict[str, Any] = orjson.loads(text)
    return plain


def as_artifact(
    artifact_or_path: Artifact | PathArg, name: str | None, artifact_type: str | None
) -> Artifact:
    """``log_artifact``'s argument as an Artifact: a file or folder path becomes one."""
    if isinstance(artifact_or_path, Artifact):
        return artifact_or_path
    path = Path(artifact_or_path)
    artifact = Artifact(name or path.name, artifact_type or "unspecified")
    if path.is_dir():
        artifact.add_dir(path)
    else:
        artifact.add_file(path)
    return artifact


def content_digest(
    artifact_type: str, files: list[dict[str, Any]], refs: list[dict[str, str]]
) -> str:
    """The SHA-256 that names a version's content: sorted files and references, and type."""
    body = {"type": artifact_type, "files": files, "references": refs}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def store_version(
    artifact: Artifact, store: BlobStore, root: PathArg, run_id: str, aliases: list[str]
) -> dict[str, Any]:
    """Copy the files in, write the manifest, index the version; the ``artifact_version``
    event's fields. Raises ``OSError`` for I/O trouble (the caller counts it)."""
    files = []
    for path, source in sorted(artifact._sources.items()):
        ref = store.put_file(source)
        files.append({"path": path, "sha256": ref.sha256, "size": ref.size})
    refs = [{"path": path, "uri": uri} for path, uri in sorted(artifact.references.items())]
    digest = content_digest(artifact.type, files, refs)
    metadata = plain_json(artifact.metadata)
    manifest = store.put_bytes(
        orjson.dumps(
            {
                "name": artifact.name,
                "type": artifact.type,
                "metadata": metadata,
                "files": files,
                "references": refs,
            },
            option=orjson.OPT_SORT_KEYS,
        )
    )
    with _locked_index(root, artifact.name) as index:
        versions = index.setdefault("versions", [])
        found = next((v for v in versions if v["digest"] == digest), None)
        if found is None:
            found = {
                "version": len(versions),
                "digest": digest,
                "manifest": manifest.sha256,
                "run_id": run_id,
                "created": time.time(),
            }
            versions.append(found)
        named = index.setdefault("aliases", {})
        for alias in (LATEST, *aliases):
            named[alias] = found["version"]
        held = sorted(alias for alias, version in named.items() if version == found["version"])
    artifact.entries, artifact.version, artifact.digest = files, found["version"], digest
    artifact.aliases, artifact._store = held, store
    return {
        "name": artifact.name,
        "artifact_type": artifact.type,
        "version": found["version"],
        "digest": digest,
        "manifest": found["manifest"],
        "size": sum(entry["size"] for entry in files),
        "files": len(files),
        "aliases": held,
        "metadata": metadata,
    }


def find_version(root: PathArg, store: BlobStore, spec: str) -> tuple[Artifact, str | None]:
    """The version ``spec`` names (``name``, ``name:alias``, ``name:vN``; a leading
    ``entity/project/`` is ignored) and the alias used; UsageError when there is none."""
    name, _, wanted = spec.rsplit("/", 1)[-1].partition(":")
    check_name(name)
    wanted = wanted or LATEST
    index = _read_index(artifacts_dir(root) / f"{name}.json")
    versions = index.get("versions", [])
    match = _VERSION.match(wanted)
    number = int(match.group(1)) if match else index.get("aliases", {}).get(wanted)
    if number is None or not 0 <= number < len(versions):
        known = ", ".join([f"v{v['version']}" for v in versions] + sorted(index.get("aliases", {})))
        raise UsageError(
            f"no artifact version {name}:{wanted} in {root} (known: {known or 'none'})"
        )
    found = versions[number]
    with store.open(found["manifest"]) as file:
        manifest = orjson.loads(file.read())
    artifact = Artifact(name, manifest["type"], metadata=manifest.get("metadata"))
    artifact.entries = manifest["files"]
    artifact.references = {ref["path"]: ref["uri"] for ref in manifest["references"]}
    artifact.version, artifact.digest, artifact._store = number, found["digest"], store
    artifact.aliases = sorted(a for a, v in index.get("aliases", {}).items() if v == number)
    return artifact, None if match else wanted


def _read_index(path: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    return loaded


@contextlib.contextmanager
def _locked_index(root: PathArg, name: str) -> Iterator[dict[str, Any]]:
    """The index of ``name``, read and written back (temp + rename) under its flock."""
    folder = artifacts_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    lock = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = folder / f"{name}.json"
        index = _read_index(path)
        yield index
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(orjson.dumps(index, option=orjson.OPT_INDENT_2))
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        os.close(lock)


_MAGIC = re.compile(r"[*?[]")
SAVE_POLICIES = ("live", "now", "end")
# Folders ``log_code`` never walks into: version control, trackers' own folders, caches,
# installed packages.
_SKIPPED_DIRS = frozenset(
    (".git", ".hg", ".svn", ".waddle", "wandb", "__pycache__", "node_modules", "site-packages")
)


def save_base(glob_str: str, base_path: PathArg | None) -> tuple[str, Path]:
    """The absolute pattern of ``run.save`` and the folder its names are relative to
    (``base_path``, else the part of the pattern before its first wildcard)."""
    pattern = os.path.abspath(glob_str)
    if base_path is None:
        parts = Path(pattern).parts
        fixed = next((i for i, part in enumerate(parts) if _MAGIC.search(part)), len(parts) - 1)
        return pattern, Path(*parts[:fixed])
    base = Path(base_path).absolute()
    if os.path.relpath(pattern, base).startswith(".."):
        raise UsageError(f"save(): {glob_str!r} is not under base_path {str(base)!r}")
    return pattern, base


def saved_files(pattern: str, base: Path) -> list[tuple[str, Path]]:
    """``(name, path)`` of the files ``pattern`` matches now, the name relative to ``base``."""
    import glob

    found = sorted(glob.glob(pattern, recursive=True))
    return [(Path(p).relative_to(base).as_posix(), Path(p)) for p in found if os.path.isfile(p)]


def code_files(
    root: PathArg, include_fn: Any = None, exclude_fn: Any = None
) -> list[tuple[str, Path]]:
    """``(name, path)`` of the source files under ``root``: ``include_fn(path, root)``
    (default: ``.py`` files) and not ``exclude_fn(path, root)``; caches, virtual
    environments and trackers' folders are skipped."""
    top = Path(root).absolute()
    found = []
    for folder, dirs, names in os.walk(top):
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in _SKIPPED_DIRS and not (Path(folder, d) / "pyvenv.cfg").exists()
        )
        for file_name in sorted(names):
            path = os.path.join(folder, file_name)
            keep = include_fn(path, str(top)) if include_fn else path.endswith(".py")
            if keep and not (exclude_fn and exclude_fn(path, str(top))):
                found.append((Path(path).relative_to(top).as_posix(), Path(path)))
    return sorted(found)
