"""The server: the web app, ``/ingest``, the read API and ``/ws`` (docs/api.md).

``waddle serve`` composes the DuckDB writer, the live broadcaster and this app in one
process (``waddle.web.app.create_app``, ``waddle.web.server.serve``). Nothing here is
imported by the producer path.
"""
