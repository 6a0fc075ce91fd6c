"""Blobs before the events that name them: the relay's upload half.

An event may name blobs of ``<root>/blobs`` (docs/media.md): a typed value with a
``sha256`` in ``metrics.data`` (an image, a list of them, audio, video, a table), an
``artifact`` event's file, an ``artifact_version`` event's manifest. A table's blob names
the blobs of its image cells, a manifest the blobs of its files. Before a batch of events
is posted, ``BlobRelay.ensure`` makes sure the host holds every blob the batch names,
inner blobs first: ``HEAD /blobs/{sha256}``, then ``PUT`` when the host lacks it. The
relay commits a stream's offset only after the events landed, so after a crash the
batch's blobs are checked again (HEAD: cheap) and never uploaded twice by the host
(``PUT`` is idempotent there).

Failures: the host answers ``hash_mismatch`` (the bytes were damaged on the way) → the
blob is sent again, read from disk again, a few times; a blob missing locally, or whose
local bytes do not hash to its name, parks the stream (its events stay on disk, nothing
past them is committed) with a report naming the blob and the event. Transient failures
are retried with the relay's backoff; a refused token stops the relay for that host, as
for ``/ingest``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from waddle.blobs.store import BlobStore, check_sha256
from waddle.consumers.relay.client import Backoff, KeepAlive, error_code
from waddle.consumers.relay.sender import Owner  # the relay consumer, as for a Sender
from waddle.errors import HostBusy, HostDenied, TransientError, WaddleError
from waddle.event_types import Event

logger = logging.getLogger("waddle.relay")

# Times a blob is sent again after the host found its bytes damaged.
MAX_RESENDS = 3
# Blobs the host is known to hold; forgotten when the set grows past this.
KNOWN_MAX = 1 << 16


class BlobMissing(WaddleError):
    """A blob an event names is not in the local store, or its bytes are damaged."""


class HashRefused(WaddleError):
    """The host found that the bytes it received do not hash to the blob's name."""


def _typed_blobs(value: Any) -> Iterator[tuple[str, str]]:
    """``(sha256, _type)`` of the typed values in a logged value, nested ones included."""
    if type(value) is dict:
        kind, sha256 = value.get("_type"), value.get("sha256")
        if type(kind) is str and type(sha256) is str:
            yield sha256, kind
            return
        for item in value.values():
            yield from _typed_blobs(item)
    elif type(value) is list:
        for item in value:
            yield from _typed_blobs(item)


def may_name_blobs(lines: bytes) -> bool:
    """Whether NDJSON ``lines`` may name a blob. Every reference has a ``sha256`` key, so
    lines holding neither that word nor a ``\\u`` escape (which could spell it) name none:
    one C-level search instead of walking every event of a live fleet's metrics."""
    return b"sha256" in lines or b"\\u" in lines


def named_blobs(event: Event | dict[str, Any]) -> list[tuple[str, str]]:
    """``(sha256, kind)`` of the blobs an event names directly; ``kind`` says whether the
    blob names others (``table``, ``manifest``)."""
    kind = event.get("type")
    found: list[tuple[str, str]] = []
    if kind == "metrics":
        found += _typed_blobs(event.get("data"))
    elif kind == "artifact" and type(event.get("sha256")) is str:
        found.append((event["sha256"], "file"))  # type: ignore[typeddict-item]
    elif kind == "artifact_version" and type(event.get("manifest")) is str:
        found.append((event["manifest"], "manifest"))  # type: ignore[typeddict-item]
    return found


def inner_blobs(path: Path, kind: str) -> list[str]:
    """The blobs a table (image cells) or a manifest (files) names; none for the rest."""
    if kind not in ("table", "manifest"):
        return []
    try:
        document = orjson.loads(path.read_bytes())
    except (orjson.JSONDecodeError, OSError):
        return []  # not ours to judge: the host stores it as it is
    if type(document) is not dict:
        return []
    if kind == "manifest":
        files = document.get("files")
        return (
            [f["sha256"] for f in files if type(f) is dict and type(f.get("sha256")) is str]
            if type(files) is list
            else []
        )
    return [sha256 for sha256, _ in _typed_blobs(document.get("data"))]


class BlobClient(KeepAlive):
    """HEAD and PUT of ``URL/blobs/{sha256}`` on one keep-alive connection."""

    def __init__(self, url: str, token: str | None, *, timeout: float) -> None:
        super().__init__(url, timeout)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def has(self, sha256: str) -> bool:
        """Whether the host holds the blob."""
        status, payload = self._request("HEAD", sha256, None)
        if status == 200:
            return True
        if status == 404:
            return False
        raise _refusal(self.url, "HEAD", sha256, status, payload)

    def put(self, sha256: str, path: Path) -> None:
        """Upload the file at ``path`` as blob ``sha256`` (streamed, not held in memory)."""
        status, payload = self._request("PUT", sha256, path)
        if status in (200, 201):
            return
        if status == 400 and error_code(payload) == "hash_mismatch":
            raise HashRefused(f"{self.url} found blob {sha256} damaged on the way")
        raise _refusal(self.url, "PUT", sha256, status, payload)

    def _request(self, method: str, sha256: str, path: Path | None) -> tuple[int, bytes]:
        target = f"{self.path}/blobs/{check_sha256(sha256)}"
        return self._send(lambda: self._exchange(method, target, path))

    def _exchange(self, method: str, target: str, path: Path | None) -> tuple[int, bytes]:
        connection = self._connect()
        headers = dict(self._headers)
        if path is None:
            connection.request(method, target, headers=headers)
        else:
            try:
                with open(path, "rb") as file:
                    headers["Content-Type"] = "application/octet-stream"
                    headers["Content-Length"] = str(os.fstat(file.fileno()).st_size)
                    connection.request(method, target, body=file, headers=headers)
            except FileNotFoundError as exc:
                # A store path is named by its blob.
                raise BlobMissing(f"blob {path.name} disappeared while it was sent") from exc
        response = connection.getresponse()
        payload = response.read()
        if response.will_close:
            self.close()
        return response.status, payload


def _refusal(url: str, method: str, sha256: str, status: int, payload: bytes) -> WaddleError:
    """The error for an answer that is neither a yes nor a no."""
    code = error_code(payload)
    if status >= 500 or status in (408, 425, 429):
        return HostBusy(
            f"{url} answered {status} {code} to {method} /blobs/{sha256}", status=status, code=code
        )
    if status in (401, 403):
        return HostDenied(
            f"{url} refused this relay ({status} {code}): the token is wrong or missing",
            status=status,
            code=code,
            scope="host",
        )
    if status in (404, 405):
        return HostDenied(
            f"{url} does not take blobs ({method} /blobs answered {status}): it is not a Waddle "
            "host, or one older than media support; upgrade it",
            status=status,
            code=code,
            scope="host",
        )
    return HostDenied(
        f"{url} refused blob {sha256} ({status} {code}); a blob over the host's limit needs "
        "a larger waddle serve --max-blob-bytes there",
        status=status,
        code=code,
        scope="stream",
    )


class BlobRelay:
    """Makes sure a host holds the blobs of each batch before the batch is posted."""

    def __init__(
        self,
        owner: Owner,
        root: Path,
        url: str,
        token: str | None,
        *,
        timeout: float,
        backoff: Backoff,
        give_up_after: float | None,
    ) -> None:
        self.owner = owner
        self.store = BlobStore(root)
        self.url = url
        self.token = token
        self.timeout = timeout
        self.backoff = backoff
        self.give_up_after = give_up_after
        self._clients: dict[int, BlobClient] = {}
        self._known: set[str] = set()
        self.uploaded = 0

    def close(self) -> None:
        for client in list(self._clients.values()):
            client.close()
        self._clients = {}

    def _client(self) -> BlobClient:
        key = threading.get_ident()
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = BlobClient(self.url, self.token, timeout=self.timeout)
        return client

    def ensure(self, stream: str, events: Sequence[Event], lines: bytes | None = None) -> bool:
        """True once the host holds every blob ``events`` name; False when it will not now
        (a stop, a refusal, a parked stream: the owner has been told). ``lines``: the
        events' NDJSON lines, when known; lines that cannot name a blob skip the walk."""
        if lines is not None and not may_name_blobs(lines):
            return True
        for event in events:
            for sha256, kind in named_blobs(event):
                try:
                    check_sha256(sha256)
                except ValueError:
                    continue  # the host's writer quarantines the event; no blob to send
                if not self._ensure_one(stream, event, sha256, kind):
                    return False
        return True

    def _ensure_one(self, stream: str, event: Event, sha256: str, kind: str) -> bool:
        if sha256 in self._known:
            return True
        path = self.store.path(sha256)
        if not path.is_file():
            self.owner.park(stream, self._missing(event, sha256, "is not in"))
            return False
        for inner in inner_blobs(path, kind):
            if not self._ensure_one(stream, event, inner, "file"):
                return False
        if not self._retrying(stream, event, sha256, path):
            return False
        if len(self._known) >= KNOWN_MAX:
            self._known.clear()
        self._known.add(sha256)
        return True

    def _missing(self, event: Event, sha256: str, how: str) -> str:
        return (
            f"blob {sha256}, named by event seq {event.get('seq')} ({event.get('type')}), "
            f"{how} {self.store.dir}; the host takes an event only with its blobs (restore "
            "the file, or delete the stream if it is gone for good)"
        )

    def _retrying(self, stream: str, event: Event, sha256: str, path: Path) -> bool:
        """HEAD, then PUT when missing, retried while the host is unreachable."""
        attempt, resends, since = 0, 0, None
        while not self.owner.stopping():
            began = time.monotonic()
            try:
                client = self._client()
                if not client.has(sha256):
                    client.put(sha256, path)
                    self.uploaded += 1
                return True
            except HashRefused:
                if not self.store.verify(sha256):
                    self.owner.park(stream, self._missing(event, sha256, "is damaged in"))
                    return False
                resends += 1
                if resends > MAX_RESENDS:
                    self.owner.park(
                        stream, f"the host found blob {sha256} damaged {resends} times in a row"
                    )
                    return False
                logger.warning("waddle relay: %s; sending it again", sha256)
            except BlobMissing:
                self.owner.park(stream, self._missing(event, sha256, "disappeared from"))
                return False
            except HostDenied as exc:
                if exc.scope == "host":
                    self.owner.fail(exc)
                else:
                    self.owner.park(stream, str(exc))
                return False
            except TransientError as exc:
                since = began if since is None else since
                if self.give_up_after is not None and time.monotonic() - since > self.give_up_after:
                    self.owner.fail(
                        TransientError(
                            f"could not reach {self.url} within {self.give_up_after:g}s ({exc})"
                        )
                    )
                    return False
                self._sleep(self.backoff.delay(attempt, getattr(exc, "retry_after", None)))
                attempt += 1
        return False

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.owner.stopping() and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
