"""The token (header, cookie, ``?token=``), the loopback-only default and the Host check."""

from __future__ import annotations

import http.cookiejar
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from waddle.errors import UsageError
from waddle.web.settings import Settings, is_loopback

from .conftest import Server

PATHS = [
    "/",
    "/openapi.json",
    "/info",
    "/runs",
    "/run/abc",
    "/api/runs",
    "/api/runs/abc",
    "/api/runs/abc/keys",
    "/api/runs/abc/metrics",
    "/api/runs/abc/system",
    "/api/runs/abc/console",
    "/no/such/path",
]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from .conftest import start_server

    server = start_server(tmp_path_factory.mktemp("auth") / "root", token="t0k3n/with+chars")
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.mark.parametrize("path", PATHS)
def test_every_endpoint_needs_the_token(guarded: Server, path: str) -> None:
    wrong_cookie = {"Cookie": f"waddle-token-{guarded.port}=nope"}
    for headers in ({}, {"Authorization": "Bearer nope"}, wrong_cookie):
        reply = guarded.get(path, headers=headers, auth=False)
        assert reply.status == 401, (path, headers)
        assert reply.json()["error"] == "unauthorized" and "token" in reply.json()["detail"]
    assert guarded.get(path).status != 401


def test_a_token_in_the_url_sets_an_httponly_cookie(guarded: Server) -> None:
    reply = guarded.get("/?token=t0k3n%2Fwith%2Bchars", auth=False)
    assert reply.status == 200
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"waddle-token-{guarded.port}=") and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    value = cookie.split(";", 1)[0]
    assert guarded.get("/api/runs", headers={"Cookie": value}, auth=False).status == 200
    assert guarded.get("/api/runs?token=wrong", auth=False).status == 401


def test_servers_on_two_ports_of_one_host_keep_their_cookies_apart(serve: Any) -> None:
    servers: list[Server] = [serve(token="first-token"), serve(token="second-token")]
    jar = http.cookiejar.CookieJar()  # like a browser, it sends a host's cookies to every port
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    for server in servers:
        with browser.open(f"http://127.0.0.1:{server.port}/?token={server.token}", timeout=20):
            pass
    cookies = {cookie.name: cookie.value for cookie in jar}
    assert set(cookies) == {f"waddle-token-{server.port}" for server in servers}
    for server in servers:  # each finds its own cookie among both
        with browser.open(f"http://127.0.0.1:{server.port}/api/runs", timeout=20) as reply:
            assert reply.status == 200
    for owner, other in (servers, servers[::-1]):
        value = cookies[f"waddle-token-{owner.port}"]
        for name in (f"waddle-token-{owner.port}", f"waddle-token-{other.port}"):
            reply = other.get("/api/runs", headers={"Cookie": f"{name}={value}"}, auth=False)
            assert reply.status == 401, (name, other.port)


def test_without_a_token_only_loopback_host_names_are_answered(serve: Any) -> None:
    server: Server = serve()
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "[::1]:1"):
        assert server.get("/info", headers={"Host": host}).status == 200, host
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example"):
        reply = server.get("/info", headers={"Host": host})
        assert reply.status == 403 and reply.json()["error"] == "host_not_allowed", host


def test_binding_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(UsageError, match="token"):
        Settings(root=Path("/nonexistent"), host="0.0.0.0")
    assert Settings(root=Path("/x"), host="0.0.0.0", token="t").token == "t"
    with pytest.raises(UsageError):
        Settings(root=Path("/x"), token="")


def test_the_command_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "waddle",
            "serve",
            "--dir",
            str(tmp_path),
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 1
    assert "refusing to bind '0.0.0.0' without a token" in result.stderr
    assert not (tmp_path / "log").exists()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.2", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
