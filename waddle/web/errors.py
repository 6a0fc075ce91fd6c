"""Exceptions to JSON responses, in one place.

The web layer's own refusals are ``RequestError``s (a ``waddle.errors.UsageError``: the
caller sent something wrong, or something the host cannot take now). The domain errors
raised below it (``IngestLog``'s ``IngestError``s, ``StreamLockedError``) know nothing
of HTTP: ``domain_answer`` gives each its status and body here. Every body is
``{"error": CODE, "detail": TEXT, ...}`` plus what locates the problem (``line``,
``field``, ``expected``...). Handlers raise; only this module builds error responses.

Anything else that escapes an endpoint is a bug: the client gets a 500 whose body says
so without internals, and the traceback goes to the ``waddle.web`` log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from waddle.errors import (
    IngestClosed,
    IngestError,
    InvalidIdError,
    LogUnavailable,
    SeqGap,
    StreamConflict,
    StreamLockedError,
    UsageError,
    WriteFailed,
)
from waddle.eventlog.record import encode

logger = logging.getLogger("waddle.web")

_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


class RequestError(UsageError):
    """A request the server refuses: HTTP status, machine-readable code, human detail.

    ``extra`` goes into the JSON body as is (``line``, ``field``, ``expected``, ``seq``).
    """

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, **self.extra}


def bad_request(error: str, detail: str, **extra: Any) -> RequestError:
    """A 400 naming what is wrong."""
    return RequestError(400, error, detail, **extra)


def not_found(what: str, value: str) -> RequestError:
    """A 404 naming the missing ``what`` (a run, a stream) in the body's ``what`` field."""
    extra: dict[str, Any] = {what: value}
    return RequestError(404, "not_found", f"no {what} {value!r} on this host", **extra)


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """JSON as the log writes it: NaN and infinities become "NaN", "Infinity", "-Infinity"."""
    return Response(
        encode(body)[:-1], status_code=status, headers=headers, media_type="application/json"
    )


async def request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return json_response(exc.body(), exc.status, exc.headers)


def domain_answer(exc: IngestError | StreamLockedError) -> RequestError:
    """The answer to a domain error raised below the web layer (``waddle.errors``)."""
    detail = str(exc)
    if isinstance(exc, SeqGap):
        extra: dict[str, Any] = {
            "stream": exc.stream,
            "expected": exc.expected,
            "seq": exc.expected - 1,
        }
        return RequestError(409, "seq_gap", detail, **extra)
    if isinstance(exc, StreamConflict):
        return RequestError(409, "stream_conflict", detail, stream=exc.stream)
    if isinstance(exc, StreamLockedError):
        return RequestError(409, "stream_locked", detail, stream=exc.stream)
    if isinstance(exc, WriteFailed):
        return RequestError(503, "write_failed", detail, stream=exc.stream, seq=exc.held, written=0)
    if isinstance(exc, LogUnavailable):
        return RequestError(503, "log_unavailable", detail)
    if isinstance(exc, IngestClosed):
        return RequestError(503, "shutting_down", detail)
    return RequestError(503, "unavailable", detail, stream=exc.stream)


async def domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, (IngestError, StreamLockedError))
    return await request_error(request, domain_answer(exc))


async def invalid_id(request: Request, exc: Exception) -> Response:
    return json_response({"error": "invalid_id", "detail": str(exc)}, 400)


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) in our body shape."""
    assert isinstance(exc, HTTPException)
    error = _REASONS.get(exc.status_code, "error")
    detail = exc.detail if exc.status_code != 404 else f"no endpoint at {request.url.path}"
    return json_response({"error": error, "detail": detail}, exc.status_code, exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    """The catch-all: log the traceback here, tell the client nothing of the internals."""
    logger.error("waddle: unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response(
        {"error": "internal", "detail": "the server failed; the traceback is in its log"}, 500
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    RequestError: request_error,
    IngestError: domain_error,
    StreamLockedError: domain_error,
    InvalidIdError: invalid_id,
    HTTPException: http_exception,
    Exception: internal_error,
}
