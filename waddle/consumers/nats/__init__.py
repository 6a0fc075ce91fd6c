"""NATS JetStream, past one central host: relays publish to a broker, ingesters pull.

* ``broker``: the JetStream layout (stream, shared durable consumer, owners bucket),
  ``waddle nats setup``, subjects and message ids;
* ``publisher``: the relay to JetStream (``waddle-consume --relay nats://``,
  ``waddle sync nats://``).

The ingester (``waddle serve --from nats://``) writes into a host's log, so it lives with
the host: ``waddle.web.nats_ingest``. docs/nats.md says how to run them.
"""
