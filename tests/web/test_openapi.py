"""``/openapi.json`` describes every route, and a fuzzer finds no input that gets a 500.

The fuzzing is schemathesis (generating requests from the document, valid and not)
against a real server; every answer must be a documented status with a documented
content type and body shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, settings
from starlette.routing import Mount, Route, WebSocketRoute

import waddle
from waddle.web.app import ROUTES
from waddle.web.openapi import spec

from .conftest import Server, start_server, wait_for_run

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import checks  # noqa: E402


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """Generated NDJSON bodies are strings; anything else goes as a JSON line (json for
    what orjson refuses: integers beyond 64 bits)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


UNDOCUMENTED = {"/", "/openapi.json"}  # the page and the document itself
schema = schemathesis.openapi.from_dict(spec())


def test_every_http_route_is_described() -> None:
    documented = set(spec()["paths"])
    # ``{key:path}`` (a key with slashes) is ``{key}`` in OpenAPI.
    routes = {r.path.replace(":path}", "}") for r in ROUTES if isinstance(r, Route)} - UNDOCUMENTED
    assert routes == documented
    assert any(isinstance(r, WebSocketRoute) for r in ROUTES)
    assert all(isinstance(r, (Route, WebSocketRoute, Mount)) for r in ROUTES)


def test_the_served_document_is_the_spec(fuzz_server: Server) -> None:
    assert fuzz_server.get_json("/openapi.json") == spec()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("fuzz") / "root")
    run = waddle.init(project="fuzz", root=server.root, id="fuzzrun", system_metrics=False)
    for step in range(50):
        run.log({"loss": 1 / (step + 1), "nan": float("nan")})
    run.finish()
    wait_for_run(server, "fuzzrun")
    yield server
    assert server.stop() == 0, server.stderr()


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_input_gets_a_500(case: Any, fuzz_server: Server) -> None:
    case.call_and_validate(base_url=fuzz_server.url.rstrip("/"), checks=CHECKS, timeout=20)
