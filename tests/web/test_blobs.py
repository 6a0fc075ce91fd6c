"""``/blobs/{sha256}`` on a real server: bytes intact, inert headers, PUT checks."""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.consumers.logs import open_stream, run_fields
from tests.helpers import eventually
from waddle.paths import blobs_dir

from .conftest import Server, start_server

TOKEN = "blob-test-token"
LIMIT = 4096
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'
HTML = b"<!doctype html><html><body><script>fetch('/api/runs')</script></body></html>"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28)
INERT = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def place(root: Path, data: bytes) -> str:
    """A blob written by hand where the contract puts it."""
    digest = sha(data)
    folder = blobs_dir(root) / digest[:2]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / digest).write_bytes(data)
    return digest


def headers(reply: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in reply.headers.items()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("blobs") / "root"
    root.mkdir()
    for data in (PNG, SVG, HTML, WAV):
        place(root, data)
    # Values whose recorded formats decide the content type: wav is inert, svg is not.
    writer = open_stream(root, "mediarun")
    writer.append("run", run_fields("mediarun"))
    for step, (data, fmt) in enumerate(((WAV, "wav"), (SVG, "svg"))):
        value = {"_type": "audio", "sha256": sha(data), "size": len(data), "format": fmt}
        writer.append("metrics", {"step": step, "data": {"sound": value}})
    writer.close()
    server = start_server(root, "--max-blob-bytes", str(LIMIT), token=TOKEN)
    eventually(
        lambda: (
            server.get("/api/runs/mediarun/media").status == 200
            and server.get_json("/api/runs/mediarun/media") != []
        ),
        what="the media rows",
    )
    yield server
    assert server.stop() == 0, server.stderr()


def test_an_image_is_served_inline_with_its_bytes_intact(server: Server) -> None:
    reply = server.get(f"/blobs/{sha(PNG)}")
    assert reply.status == 200 and sha(reply.body) == sha(PNG)
    found = headers(reply)
    assert found["content-type"] == "image/png"
    assert "content-disposition" not in found
    assert {k.lower(): v for k, v in INERT.items()}.items() <= found.items()
    assert found["etag"] == f'"{sha(PNG)}"' and "immutable" in found["cache-control"]
    again = server.get(f"/blobs/{sha(PNG)}", headers={"If-None-Match": f'"{sha(PNG)}"'})
    assert again.status == 304 and again.body == b""
    part = server.get(f"/blobs/{sha(PNG)}", headers={"Range": "bytes=0-7"})
    assert part.status == 206 and part.body == PNG[:8]


@pytest.mark.parametrize("data", [SVG, HTML], ids=["svg", "html"])
def test_svg_and_html_are_downloads_that_cannot_run(server: Server, data: bytes) -> None:
    reply = server.get(f"/blobs/{sha(data)}")
    assert reply.status == 200 and reply.body == data
    found = headers(reply)
    assert found["content-type"] == "application/octet-stream"
    assert found["content-disposition"] == "attachment"
    assert {k.lower(): v for k, v in INERT.items()}.items() <= found.items()


def test_the_recorded_format_sets_the_type_of_inert_formats_only(server: Server) -> None:
    wav = headers(server.get(f"/blobs/{sha(WAV)}"))
    assert wav["content-type"] == "audio/wav" and "content-disposition" not in wav
    # The SVG above is recorded as format "svg" too: still a download.
    svg = headers(server.get(f"/blobs/{sha(SVG)}"))
    assert svg["content-type"] == "application/octet-stream"


def test_head_says_whether_the_host_has_a_blob(server: Server) -> None:
    have = server.request("HEAD", f"/blobs/{sha(PNG)}")
    assert have.status == 200 and have.body == b""
    assert server.request("HEAD", f"/blobs/{sha(b'never stored')}").status == 404
    assert server.get(f"/blobs/{sha(b'never stored')}").status == 404


@pytest.mark.parametrize(
    "name",
    ["abc", "A" * 64, "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "g" * 64, sha(PNG)[:63] + "%00"],
)
def test_a_name_that_is_not_a_sha256_is_refused(server: Server, name: str) -> None:
    for method in ("GET", "HEAD", "PUT"):
        reply = server.request(method, f"/blobs/{name}", b"x" if method == "PUT" else None)
        assert reply.status in (400, 404), (method, name, reply.status)
        if method == "GET":
            assert reply.status == 404 or reply.json()["error"] == "invalid_sha256"


def test_put_stores_a_blob_once_and_checks_its_hash(server: Server) -> None:
    data = b"uploaded " * 100
    digest = sha(data)
    target = blobs_dir(server.root) / digest[:2] / digest
    first = server.request("PUT", f"/blobs/{digest}", data)
    assert first.status == 201, first.body
    assert target.read_bytes() == data
    second = server.request("PUT", f"/blobs/{digest}", data)
    assert second.status == 200 and target.read_bytes() == data
    wrong = server.request("PUT", f"/blobs/{digest}", b"other bytes under a stored name")
    assert wrong.status == 400 and wrong.json()["error"] == "hash_mismatch"
    assert target.read_bytes() == data
    assert sha(server.get(f"/blobs/{digest}").body) == digest


def test_a_body_whose_hash_differs_is_refused_and_nothing_kept(server: Server) -> None:
    claimed = sha(b"what was meant")
    reply = server.request("PUT", f"/blobs/{claimed}", b"what arrived")
    assert reply.status == 400 and reply.json()["error"] == "hash_mismatch"
    assert not (blobs_dir(server.root) / claimed[:2] / claimed).exists()
    assert not (blobs_dir(server.root) / sha(b"what arrived")[:2] / sha(b"what arrived")).exists()
    assert list((blobs_dir(server.root) / "tmp").iterdir()) == []


def test_put_needs_the_token_and_keeps_to_the_limit(server: Server) -> None:
    data = b"guarded"
    refused = server.request("PUT", f"/blobs/{sha(data)}", data, auth=False)
    assert refused.status == 401
    assert server.request("HEAD", f"/blobs/{sha(data)}", auth=False).status == 401
    assert not (blobs_dir(server.root) / sha(data)[:2] / sha(data)).exists()
    big = b"b" * (LIMIT + 1)
    reply = server.request("PUT", f"/blobs/{sha(big)}", big)
    assert reply.status == 413 and reply.json()["error"] == "too_large"
    assert not (blobs_dir(server.root) / sha(big)[:2] / sha(big)).exists()
    exact = b"e" * LIMIT
    assert server.request("PUT", f"/blobs/{sha(exact)}", exact).status == 201


def test_a_streamed_body_is_cut_off_at_the_limit(server: Server) -> None:
    """No Content-Length (chunked): the limit holds while the body streams in."""
    big = b"c" * (LIMIT + 10)
    connection = http.client.HTTPConnection(server.host, server.port, timeout=20)
    try:
        connection.request(
            "PUT",
            f"/blobs/{sha(big)}",
            body=iter([big[:1000], big[1000:]]),
            headers={"Authorization": f"Bearer {TOKEN}"},
            encode_chunked=True,
        )
        reply = connection.getresponse()
        assert reply.status == 413 and b"too_large" in reply.read()
    finally:
        connection.close()
    assert not (blobs_dir(server.root) / sha(big)[:2] / sha(big)).exists()
    assert list((blobs_dir(server.root) / "tmp").iterdir()) == []
