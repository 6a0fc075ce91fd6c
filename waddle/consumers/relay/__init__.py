"""Relaying a folder's streams to a central host, and ``waddle sync``.

One home for the relay's four parts, from the top down:

* ``consumer``: the durable relay consumer (``waddle-consume --relay URL``): which
  streams go where, offsets committed only for what the host acknowledged;
* ``sync``: ``waddle sync URL``, the same consumer run once with a progress bar;
* ``sender``: sending one stream's events until the host holds them (409, 413, retries);
* ``client``: the HTTP client of ``/ingest`` and the translation of its answers.

Delivery: at-least-once on the wire, exactly-once in the host's log (the host is
idempotent by (stream, seq)); see ``consumer`` for the whole contract.
"""
