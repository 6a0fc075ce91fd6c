"""The JetStream layout Waddle uses, and ``waddle nats setup`` that creates it.

One stream (``WADDLE``) holds every event relays publish, on the subject
``waddle.events.<partition>.<project>.<stream>`` (``subject``): the partition is a
stable hash of the stream id (CRC-32 modulo P, ``partition``), so all of a stream's
events are in one partition. P is fixed when the stream is created (``--partitions``)
and kept in its metadata, where relays and ingesters read it (``partitions_of``). Each
partition has a durable pull consumer (``waddle-ingest-<p>``); an ingester pulls the
partitions it leases in the ``waddle-leases`` bucket, whose entries expire unless
renewed, and counts the live ingesters in ``waddle-members``
(``waddle.consumers.nats.leases``).

Retention: limits (not work-queue), so what the ingesters acknowledged stays in the
broker until ``max_age`` or ``max_bytes`` drops the oldest: a new consumer (a second set
of ingesters, a lake) can replay it, and an ingester that takes over a stream mid-way
reads its start. A message is a window of a stream's consecutive events (``pack``,
``unpack``). Deduplication: a publish repeats an earlier one when it carries the same
``Nats-Msg-Id`` (``<stream>:<first seq>-<last seq>``) within ``duplicate_window``
seconds; the broker then acknowledges it without storing it again. The broker remembers
every id of the window, so the window costs memory in proportion to the message rate.
``setup`` is idempotent: it creates what is missing and updates what differs.

The client side (connecting, backoff, pulls) is ``waddle.consumers.nats.client``.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from waddle.consumers.nats.client import connect
from waddle.errors import TransientError, UsageError

STREAM = "WADDLE"
SUBJECT_PREFIX = "waddle.events"
CONSUMER_PREFIX = "waddle-ingest-"
LEASES = "waddle-leases"
MEMBERS = "waddle-members"
PARTITIONS_KEY = "waddle_partitions"
DEFAULT_PARTITIONS = 16
# A lease not renewed within this long is free: a dead ingester's partitions wait so long.
DEFAULT_LEASE_S = 15.0
MSG_ID = "Nats-Msg-Id"
DAY_S = 86400.0
DEFAULT_MAX_AGE_S = 7 * DAY_S
DEFAULT_DUPLICATE_WINDOW_S = 120.0
# An ingester that took a message and died: the broker hands it to another after this.
DEFAULT_ACK_WAIT_S = 30.0
# Unacknowledged messages per partition: each a window of up to 128 KiB, so 2,048 bound
# what an ingester may be handed and not yet have written to about 256 MiB a partition.
DEFAULT_MAX_ACK_PENDING = 2_048
_NOT_A_TOKEN = re.compile(r"[^A-Za-z0-9_-]+")


class NotSetUp(TransientError):
    """The server has no Waddle stream, or one without partitions: ``waddle nats setup``."""


@dataclass(frozen=True)
class Layout:
    """What ``setup`` creates: limits of the stream, and the consumer's redelivery."""

    max_age_s: float = DEFAULT_MAX_AGE_S
    max_bytes: int = -1  # no limit beyond the server's own store limit
    duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S
    replicas: int = 1
    ack_wait_s: float = DEFAULT_ACK_WAIT_S
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING
    partitions: int | None = None  # None: DEFAULT_PARTITIONS for a new stream, else kept
    lease_s: float = DEFAULT_LEASE_S


def check_nats_url(url: str) -> str:
    """``url`` if it is ``nats://HOST:PORT``; a usage error naming the form otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls") or not parts.hostname:
        raise UsageError(f"not a NATS server address: {url!r}; give nats://HOST:PORT")
    return url


def is_nats_url(url: str) -> bool:
    """Whether ``url`` names a NATS server rather than an HTTP host."""
    return urlsplit(url).scheme in ("nats", "tls")


def token(value: str) -> str:
    """``value`` as one subject token: dots and wildcards would split or widen it."""
    return _NOT_A_TOKEN.sub("_", value)[:128] or "_"


def partition(stream: str, partitions: int) -> int:
    """The partition of a stream: CRC-32 of its id's UTF-8 bytes, modulo ``partitions``
    (stable across processes and versions, unlike Python's ``hash``)."""
    return zlib.crc32(stream.encode()) % partitions


def subject(project: str | None, stream: str, partitions: int) -> str:
    """The subject of a stream's events: ``waddle.events.<partition>.<project>.<stream>``."""
    where = partition(stream, partitions)
    return f"{SUBJECT_PREFIX}.{where}.{token(project or '_')}.{token(stream)}"


def consumer_name(where: int) -> str:
    """The durable consumer of partition ``where``."""
    return f"{CONSUMER_PREFIX}{where}"


async def partitions_of(js: Any) -> int:
    """P, from the stream's metadata; ``NotSetUp`` when there is no such stream yet."""
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(STREAM)
    except NotFoundError as exc:
        raise NotSetUp(f"the NATS server has no stream {STREAM}") from exc
    value = (info.config.metadata or {}).get(PARTITIONS_KEY, "")
    if not value.isdigit() or int(value) < 1:
        raise NotSetUp(f"the stream {STREAM} has no partitions (set up by an older Waddle)")
    return int(value)


def msg_id(stream: str, first: int, last: int) -> str:
    """The deduplication id of a window of events: ``<stream>:<first seq>-<last seq>``.

    Both ends, not the first seq alone: a window published again after a crash may be
    longer (the relay read more the second time), and under the first seq's id alone the
    broker would drop it as a repeat, losing its tail."""
    return f"{stream}:{first}-{last}"


def parse_msg_id(value: str | None) -> tuple[str, int] | None:
    """``(stream, first seq)`` of a ``Nats-Msg-Id`` (``<stream>:<first>-<last>``, or
    ``<stream>:<seq>`` from older relays); None when it is not one of ours."""
    stream, _, seqs = (value or "").rpartition(":")
    first, _, last = seqs.partition("-")
    if not stream or not first.isdigit() or not (last.isdigit() or seqs == first):
        return None
    return stream, int(first)


def pack(lines: Sequence[bytes], start: int, limit: int, count: int) -> list[tuple[int, int]]:
    """Cut ``lines[start:]`` into at most ``count`` messages of at most ``limit`` bytes
    each (a longer line goes alone): ``(first, end)`` index ranges, consecutive.

    A message is a window of a stream's consecutive events, its lines as the log holds
    them, so that what costs per message (a publish, an ack, a delivery) is paid once
    per window rather than once per event."""
    windows: list[tuple[int, int]] = []
    first, size = start, 0
    for index in range(start, len(lines)):
        if index > first and size + len(lines[index]) > limit:
            windows.append((first, index))
            if len(windows) == count:
                return windows
            first, size = index, 0
        size += len(lines[index])
    if first < len(lines):
        windows.append((first, len(lines)))
    return windows


def unpack(data: bytes) -> list[bytes]:
    """The lines of a message, without their newlines (one event's line, as older relays
    sent it, has none)."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


async def ensure(js: Any, layout: Layout) -> list[str]:
    """Create or update the stream, the consumers and the buckets; what was done."""
    from nats.js import api
    from nats.js.errors import NotFoundError

    try:
        held = await partitions_of(js)
    except NotSetUp as exc:
        if isinstance(exc.__cause__, NotFoundError):
            held = None
        else:
            raise UsageError(
                f"{exc}; delete it (nats stream rm {STREAM}) after the ingesters took "
                "everything, then run setup again"
            ) from exc
    count = layout.partitions or held or DEFAULT_PARTITIONS
    if held is not None and count != held:
        raise UsageError(
            f"the stream {STREAM} has {held} partitions, not {count}: a stream's partition "
            "would change mid-way. Keep --partitions, or start a new stream (docs/nats.md)"
        )
    stream = api.StreamConfig(
        name=STREAM,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.OLD,
        storage=api.StorageType.FILE,
        max_age=layout.max_age_s,
        max_bytes=layout.max_bytes,
        duplicate_window=layout.duplicate_window_s,
        num_replicas=layout.replicas,
        metadata={PARTITIONS_KEY: str(count)},
    )
    if held is None:
        await js.add_stream(stream)
        done = [f"created stream {STREAM} with {count} partitions"]
    else:
        await js.update_stream(stream)
        done = [f"stream {STREAM} exists, {count} partitions (limits updated)"]
    for where in range(count):
        consumer = api.ConsumerConfig(
            durable_name=consumer_name(where),
            filter_subject=f"{SUBJECT_PREFIX}.{where}.>",
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=layout.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=layout.max_ack_pending,
            num_replicas=layout.replicas,
        )
        await js.add_consumer(STREAM, consumer)
    done.append(f"durable consumers {consumer_name(0)} to {consumer_name(count - 1)} ready")
    for bucket in (LEASES, MEMBERS):
        await _bucket(js, bucket, layout)
    done.append(f"buckets {LEASES} and {MEMBERS} ready (lease {layout.lease_s:g} s)")
    return done


async def _bucket(js: Any, bucket: str, layout: Layout) -> None:
    """Create a bucket whose entries expire after the lease, or set its lease anew."""
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        info = await js.stream_info(f"KV_{bucket}")
    except NotFoundError:
        await js.create_key_value(
            bucket=bucket, history=1, ttl=layout.lease_s, replicas=layout.replicas
        )
        return
    config = info.config
    config.max_age = layout.lease_s
    config.duplicate_window = min(config.duplicate_window or layout.lease_s, layout.lease_s)
    try:
        await js.update_stream(config)
    except BadRequestError as exc:
        raise UsageError(f"cannot change the lease of bucket {bucket}: {exc}") from exc


def setup(url: str, layout: Layout | None = None, *, timeout: float = 30.0) -> list[str]:
    """``waddle nats setup``: the JetStream layout on the server at ``url`` (idempotent)."""
    check_nats_url(url)

    async def main() -> list[str]:
        try:
            nc = await connect(url, "setup")
        except Exception as exc:  # nats-py raises several kinds for an unreachable server
            raise UsageError(
                f"cannot reach the NATS server {url} ({exc or type(exc).__name__}); start it "
                "with JetStream on (nats-server -js) and try again"
            ) from exc
        try:
            return await ensure(nc.jetstream(), layout or Layout())
        finally:
            await nc.close()

    return asyncio.run(asyncio.wait_for(main(), timeout))
