"""``/blobs/{sha256}``: the content-addressed files of ``<root>/blobs`` over HTTP.

GET serves the bytes (ranges too, for audio and video), HEAD says whether the host has
a blob (the relay asks before it uploads), PUT stores one (the relay uploads). A blob
is immutable: its ETag is its name and it may be cached forever.

A logged file is whatever a training script wrote, an SVG or an HTML page included, and
the dashboard shares this origin: a blob must never run as active content there. Every
answer carries ``X-Content-Type-Options: nosniff`` and a CSP that allows nothing and
sandboxes the document; the content type is that of a PNG, JPEG, GIF or WebP signature
at the start of the bytes (an image in a table cell has no ``media`` row), else the one
of the value's recorded format (``media`` table) when that format is inert (``INLINE``);
anything else is served as ``application/octet-stream`` with
``Content-Disposition: attachment``.

PUT streams the body into ``blobs/tmp/`` while hashing (``waddle.blobs.store``), so a
blob is never held in memory and never read twice; a body whose hash is not its name is
refused with 400 ``hash_mismatch`` and nothing is kept. Storing a blob the host already
has is a no-op (200, once the body's hash is checked; 201 when it was new). The body is
limited to ``Settings.max_blob_bytes`` (``--max-blob-bytes``); the token guards PUT as
every route.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from waddle.blobs.store import BlobStore, BlobWriter, HashMismatch, check_sha256
from waddle.errors import StoreError
from waddle.store import queries
from waddle.web.errors import RequestError, bad_request, json_response, not_found

# Formats served inline, with their content type: none of them can run script.
INLINE = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "json": "application/json",
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}
# Image signatures, checked before the store is asked: ``(offset, bytes)`` per format.
SIGNATURES = {
    "png": ((0, b"\x89PNG\r\n\x1a\n"),),
    "jpeg": ((0, b"\xff\xd8\xff"),),
    "gif": ((0, b"GIF8"),),
    "webp": ((0, b"RIFF"), (8, b"WEBP")),
}
# Body bytes gathered before one write to the temp file (in a worker thread).
WRITE_CHUNK = 1 << 20


def _sha256(request: Request) -> str:
    value = request.path_params["sha256"]
    try:
        return check_sha256(value)
    except ValueError:
        raise bad_request(
            "invalid_sha256", "a blob is named by its SHA-256: 64 lowercase hex digits"
        ) from None


def content_headers(fmt: str | None) -> tuple[str, dict[str, str]]:
    """The content type and the headers a blob of recorded format ``fmt`` is served with."""
    headers = dict(SECURITY_HEADERS)
    media_type = INLINE.get(fmt or "")
    if media_type is None:
        headers["Content-Disposition"] = "attachment"
        media_type = "application/octet-stream"
    return media_type, headers


async def get_blob(request: Request) -> Response:
    """GET or HEAD: the blob's bytes (HEAD: 200 or 404, for the relay)."""
    sha256 = _sha256(request)
    store = BlobStore(request.app.state.settings.root)
    path = store.path(sha256)
    if not await run_in_threadpool(path.is_file):
        raise not_found("blob", sha256)
    fmt = None
    if request.method == "GET":
        fmt = await run_in_threadpool(image_format, path)
        if fmt is None:
            fmt = await _recorded_format(request, sha256)
    media_type, headers = content_headers(fmt)
    headers["ETag"] = f'"{sha256}"'
    headers["Cache-Control"] = "public, max-age=31536000, immutable"
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers)


def image_format(path: Path) -> str | None:
    """``png``, ``jpeg``, ``gif`` or ``webp`` when the file starts with that signature."""
    with open(path, "rb") as file:
        head = file.read(12)
    for fmt, parts in SIGNATURES.items():
        if all(head[at : at + len(part)] == part for at, part in parts):
            return fmt
    return None


async def _recorded_format(request: Request, sha256: str) -> str | None:
    """The format the store recorded for this blob; None when unknown or unreadable."""
    try:
        cursor = request.app.state.cursor()
    except StoreError:  # the store is down: serve the bytes as a download
        return None
    try:
        return await run_in_threadpool(queries.blob_format, cursor, sha256)
    finally:
        cursor.close()


async def put_blob(request: Request) -> Response:
    """PUT: store the body as the blob ``sha256`` (see the module's docstring)."""
    sha256 = _sha256(request)
    limit: int = request.app.state.settings.max_blob_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    store = BlobStore(request.app.state.settings.root)
    if await run_in_threadpool(store.exists, sha256):
        got = await _digest(request, limit)
        if got != sha256:
            raise _mismatch(sha256, got)
        return json_response({"sha256": sha256, "stored": False}, status=200)
    writer = await run_in_threadpool(store.writer)
    with writer:
        await _receive(request, writer, limit)
        try:
            ref = await run_in_threadpool(writer.commit, sha256)
        except HashMismatch as exc:
            raise _mismatch(sha256, exc.got) from None
    return json_response({"sha256": ref.sha256, "size": ref.size, "stored": True}, status=201)


async def _receive(request: Request, writer: BlobWriter, limit: int) -> None:
    """Stream the body into ``writer``, in pieces of ``WRITE_CHUNK``; 413 past ``limit``."""
    pending: list[bytes] = []
    held = 0
    async for chunk in request.stream():
        if writer.size + held + len(chunk) > limit:
            raise _too_large(limit)
        pending.append(chunk)
        held += len(chunk)
        if held >= WRITE_CHUNK:
            await run_in_threadpool(writer.write, b"".join(pending))
            pending, held = [], 0
    if pending:
        await run_in_threadpool(writer.write, b"".join(pending))


async def _digest(request: Request, limit: int) -> str:
    """The hash of a body the host does not need to store (it has the blob already)."""
    digest = hashlib.sha256()
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit)
        digest.update(chunk)
    return digest.hexdigest()


def _mismatch(sha256: str, got: str) -> RequestError:
    return bad_request(
        "hash_mismatch",
        f"blob sent as {sha256} hashes to {got}; it was not stored",
        sha256=sha256,
        got=got,
    )


def _too_large(limit: int) -> RequestError:
    return RequestError(
        413, "too_large", f"blobs are limited to {limit} bytes (waddle serve --max-blob-bytes)"
    )
