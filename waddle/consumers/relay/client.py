"""The HTTP side of relaying: POST events to a host's ``/ingest`` (one stream) or
``/ingest/batch`` (several), and back off.

``IngestClient`` talks to one host over one keep-alive HTTP/1.1 connection
(``http.client`` from the standard library; ``https://`` URLs use the default TLS
context). It is not thread-safe: each sending thread has its own. The relay consumer
(``waddle.consumers.relay.consumer``) and ``waddle sync`` both post through it.

Every answer and every failure is translated here, and only here, into a ``Held`` or
one of the ``waddle.errors`` relay errors. ``HostBusy`` and ``HostDenied`` are both
``HostRefused``: they carry the answer's ``status`` and ``code`` (the body's ``error``);
``HostDenied`` also a ``scope``, what the refusal stops:

=================================  ======================================================
200                                ``Held(seq)``: the host now holds the stream up to
                                   ``seq`` (all-or-nothing; duplicates acknowledged)
409 ``seq_gap``                    ``Held(expected - 1, gap=True)``: the host lacks
                                   earlier events; send from ``expected``
no connection, reset, timeout      ``HostUnreachable`` (transient): back off and retry
5xx, 408, 425, 429                 ``HostBusy`` (transient): back off and retry
                                   (``retry_after``: the host's Retry-After, seconds)
401, 403                           ``HostDenied``, scope ``host``: the token is wrong
404, 405, 415, non-4xx oddities    ``HostDenied``, scope ``host``: not a Waddle host
413                                ``HostDenied``, scope ``stream``: send less at once
other 4xx                          ``HostDenied``, scope ``stream``, naming the host's
                                   ``error`` and ``detail`` (an event it refuses, a
                                   stream a local process on the host writes)
=================================  ======================================================

A request on a kept-alive connection that the host has meanwhile closed is sent once
more on a fresh one before it counts as a failure (``/ingest`` is idempotent).

``post_batch`` sends several streams' parts to ``/ingest/batch`` (docs/api.md): the
request as a whole is answered as the table says (a 404 or 405 meaning a host older
than that endpoint), and each part of a 200 becomes a ``Held`` or the ``HostRefused``
its own status and error would have been for ``/ingest``.

Bodies are NDJSON, gzip-compressed (``Content-Encoding: gzip``, level 1: about 6x
smaller for metric events at ~1 us per event on each side) unless ``WADDLE_RELAY_GZIP=0``
says otherwise (``gzip_wanted``). A host that does not take gzip answers
``415``, or ``400 invalid_encoding`` (it read the compressed bytes as UTF-8); the client
then sends that host uncompressed bodies from then on (``compress`` turns False).
"""

from __future__ import annotations

import gzip
import http.client
import os
import random
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import orjson

from waddle.errors import HostBusy, HostDenied, HostRefused, HostUnreachable, UsageError

DEFAULT_TIMEOUT_S = 30.0
GZIP_LEVEL = 1
_NDJSON = "application/x-ndjson"
# What a keep-alive connection that the host has closed looks like on the next request.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Held:
    """What the host holds of a stream after a request: every seq up to ``seq``.

    ``gap`` is True when the host refused the request because it starts after
    ``seq + 1`` (a 409): nothing of the request was written.
    """

    seq: int
    gap: bool = False


def check_url(url: str) -> str:
    """``url`` without a trailing slash; ``UsageError`` unless it is http(s)://host[:port]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"relay URL {url!r} must look like http://HOST:PORT (or https://)")
    if parts.query or parts.fragment:
        raise UsageError(f"relay URL {url!r} must not carry a query or fragment")
    try:
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        raise UsageError(f"relay URL {url!r} has an invalid port ({exc})") from None
    return url.rstrip("/")


def gzip_wanted() -> bool:
    """Whether relay bodies are gzip-compressed: yes, unless ``WADDLE_RELAY_GZIP=0``, for a
    host on this machine, where compressing only spends CPU that relay and host share. A
    loopback URL does not tell: an ssh tunnel or a port-forward presents a remote host as
    ``localhost``, and its bodies would then cross the network 6x larger."""
    return os.environ.get("WADDLE_RELAY_GZIP", "").strip() != "0"


class KeepAlive:
    """One keep-alive HTTP/1.1 connection to a host, shared by the relay's clients.

    A request on a kept-alive connection that the host has meanwhile closed is sent once
    more on a fresh one (the relay's requests are idempotent); any other failure to talk
    to the host is ``HostUnreachable``.
    """

    def __init__(self, url: str, timeout: float) -> None:
        self.url = check_url(url)
        parts = urlsplit(self.url)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.https = parts.scheme == "https"
        self.path = parts.path
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _send(self, exchange: Callable[[], _T]) -> _T:
        """``exchange()`` (one request and its answer), again once on a stale connection."""
        reused = self._connection is not None
        try:
            try:
                return exchange()
            except _STALE:
                if not reused:
                    raise
                # The host closed an idle keep-alive connection (uvicorn does after 5 s):
                # not an outage. One more try on a fresh connection.
                self.close()
                return exchange()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise HostUnreachable(f"cannot reach {self.url}: {_describe(exc)}") from exc

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self.https:
                self._connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                self._connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout
                )
        return self._connection


class IngestClient(KeepAlive):
    """Posts NDJSON batches to ``URL/ingest?stream=ID`` with a bearer token."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        compress: bool = True,
    ) -> None:
        super().__init__(url, timeout)
        self.compress = compress
        self._headers = {"Content-Type": _NDJSON, "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def post(self, stream: str, body: bytes) -> Held:
        """Send ``body`` (NDJSON lines of ``stream``, in seq order); what the host holds.

        Raises ``HostUnreachable``, ``HostBusy`` or ``HostDenied`` as the table above says.
        """
        status, payload = self._request(f"/ingest?stream={quote(stream, safe='')}", body)
        return _answer(self.url, stream, status, _json(payload), payload, self._retry_after)

    def post_batch(self, parts: Sequence[tuple[str, int, bytes]]) -> list[Held | HostRefused]:
        """Send ``parts`` ((stream, event count, NDJSON lines) each) in one request to
        ``/ingest/batch``; per part, in order, what the host holds or why it refused it.

        Raises as ``post`` does for the request as a whole (``HostDenied`` with status
        404 or 405: the host has no ``/ingest/batch``).
        """
        chunks: list[bytes] = []
        for stream, count, lines in parts:
            chunks += (part_header(stream, count), lines)  # one copy of the lines, in join
        body = b"".join(chunks)
        status, payload = self._request("/ingest/batch", body)
        answer = _json(payload)
        entries = answer.get("streams") if status == 200 else None
        if not isinstance(entries, list):
            _answer(self.url, "(batch)", status, answer, payload, self._retry_after)
            raise HostDenied(  # a 200 without its parts: not the protocol this relay speaks
                f"{self.url} answered /ingest/batch without a list of parts",
                status=404,
                code="",
                scope="host",
            )
        if [e.get("stream") if type(e) is dict else None for e in entries] != [p[0] for p in parts]:
            raise HostDenied(
                f"{self.url} answered /ingest/batch with parts other than those sent",
                status=404,
                code="",
                scope="host",
            )
        return [_part(self.url, entry) for entry in entries]

    def _request(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` to ``path``, gzip-compressed unless the host turned that down."""
        compressed = self.compress
        status, payload = self._send_body(path, body, compressed)
        if compressed and _refuses_gzip(status, payload):
            self.compress = False
            status, payload = self._send_body(path, body, False)
        return status, payload

    def _send_body(self, path: str, body: bytes, compressed: bool) -> tuple[int, bytes]:
        headers = dict(self._headers)
        if compressed:
            body = gzip.compress(body, GZIP_LEVEL, mtime=0)
            headers["Content-Encoding"] = "gzip"
        target = f"{self.path}{path}"
        self._retry_after: float | None = None
        return self._send(lambda: self._exchange(target, body, headers))

    def _exchange(self, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        connection = self._connect()
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        self._retry_after = _seconds(response.getheader("Retry-After"))
        if response.will_close:
            self.close()
        return response.status, payload


def part_header(stream: str, count: int) -> bytes:
    """The header line of a part of an ``/ingest/batch`` body: its bytes count against
    a request's size as much as the events' lines do."""
    return b'{"stream":%s,"events":%d}\n' % (orjson.dumps(stream), count)


def _part(url: str, entry: dict[str, Any]) -> Held | HostRefused:
    """One part's entry of an ``/ingest/batch`` answer, read as ``/ingest``'s answer."""
    status = entry.get("status")
    if status == 200 and type(entry.get("seq")) is int:
        return Held(entry["seq"])  # nearly every part: without building a message for it
    body = {**entry, "detail": entry.get("message", "")}
    try:
        return _answer(
            url, str(entry["stream"]), status if type(status) is int else 0, body, b"", None
        )
    except HostRefused as exc:
        return exc


def _answer(
    url: str,
    stream: str,
    status: int,
    body: dict[str, Any],
    payload: bytes,
    retry_after: float | None,
) -> Held:
    """The one place an HTTP answer (``body``: its JSON) becomes a ``Held`` or an error."""
    code = str(body.get("error", ""))
    detail = str(body.get("detail", "")) or payload[:200].decode("utf-8", "replace").strip()
    if type(body.get("line")) is int:
        detail = f"{detail} (line {body['line']} of the body)"
    if status == 200 and type(body.get("seq")) is int:
        return Held(body["seq"])
    if status == 409 and code == "seq_gap" and type(body.get("expected")) is int:
        return Held(body["expected"] - 1, gap=True)
    if status in (401, 403):
        raise HostDenied(
            f"{url} refused this relay ({status} {code or 'unauthorized'}): the token is "
            "wrong or missing for that host; pass the host's token with --token",
            status=status,
            code=code,
            scope="host",
        )
    if status in (404, 405, 415) or status < 400:
        raise HostDenied(
            f"{url} is not a Waddle host that takes /ingest (it answered {status} "
            f"{code}{': ' + detail if detail else ''}); check the URL",
            status=status,
            code=code,
            scope="host",
        )
    if status >= 500 or status in (408, 425, 429):
        message = f"{url} answered {status} {code} for stream {stream!r}"
        raise HostBusy(
            f"{message}: {detail}" if detail else message,
            status=status,
            code=code,
            retry_after=retry_after,
        )
    raise HostDenied(
        f"{url} refused stream {stream!r} ({status} {code}): {detail}",
        status=status,
        code=code,
        scope="stream",
    )


def _refuses_gzip(status: int, payload: bytes) -> bool:
    return status == 415 or (status == 400 and error_code(payload) == "invalid_encoding")


def error_code(payload: bytes) -> str:
    """The ``error`` of a host's JSON answer (``""`` when it has none)."""
    return str(_json(payload).get("error", ""))


def _json(payload: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return value if type(value) is dict else {}


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


class Backoff:
    """Capped exponential backoff with jitter: ``base * 2**attempt``, at most ``cap``.

    Each delay is drawn from the upper half of its window ("equal jitter"), so senders
    that failed together spread out but none retries at once in a tight loop.
    """

    def __init__(
        self, base: float = 0.2, cap: float = 15.0, rng: random.Random | None = None
    ) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based); ``hint`` is a Retry-After."""
        window = min(self.cap, self.base * 2.0 ** min(attempt, 30))
        chosen = window / 2 + self.rng.uniform(0, window / 2)
        return min(self.cap, max(chosen, hint or 0.0))
