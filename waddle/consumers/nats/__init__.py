"""NATS JetStream, past one central host: relays publish to a broker, ingesters pull.

* ``broker``: the JetStream layout (stream, a durable consumer per partition, lease
  buckets), ``waddle nats setup``, subjects, message ids and windows;
* ``client``: connecting, backoff through an outage, pulls, an event loop for threads;
* ``publisher``: the relay to JetStream (``waddle-consume --relay nats://``,
  ``waddle sync nats://``);
* ``leases``: which partitions an ingester pulls (expiring leases, fair shares);
* ``windows``: an ingester's windows of a stream, chained by seq, and the backfill of a
  stream that moved to it mid-way.

The ingester (``waddle serve --from nats://``) writes into a host's log, so it lives with
the host: ``waddle.web.nats_ingest``. docs/nats.md says how to run them.
"""
