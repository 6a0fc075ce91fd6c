"""The dashboard's own routes: its assets at ``/static/...`` from ``waddle/web/static``
(the page itself, ``index.html``, is served at ``/`` by ``waddle.web.app``) and
``/api/facets``, what the runs table offers in its menus (``waddle.web.api.api_facets``).

Mount them by adding ``*dashboard_routes()`` to ``waddle.web.app.ROUTES``. Files are sent
with ETag and Last-Modified, so a reload revalidates instead of downloading again; only
files under the folder are served (no symlinks followed, no directory listings), and the
token middleware guards them like every other route.
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from waddle.web import api

STATIC = Path(__file__).parent / "static"


def dashboard_routes() -> list[BaseRoute]:
    return [
        Route("/api/facets", api.api_facets),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
