"""An ingester's view of a stream's messages: windows of consecutive events, chained from
the seq after the one its log holds, and the backfill of a prefix it never received.

A message is a window of one stream's events from the seq its id names
(``waddle.consumers.nats.broker.pack``). Windows may overlap (a relay published again
after a crash, cut at other seqs) and arrive in any order (redeliveries); ``chain``
takes each seq once. ``backfill`` reads a stream's windows straight from the broker's
stream (an ephemeral consumer on the stream's subject, from its first message), for a
stream that reached this ingester mid-way: it moved here from another ingester, whose
partition this one took over, and the durable consumer no longer delivers what the
other acknowledged. Retention (limits, not work-queue) keeps it in the broker.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from waddle.consumers.nats.broker import MSG_ID, STREAM, parse_msg_id, unpack
from waddle.consumers.nats.client import Puller

# A backfill's pull that came back empty while the broker still counts messages for it
# (answered late, on a loaded machine) is followed by one that waits this long.
BACKFILL_WAIT_S = 1.0
# Empty pulls in a row after which a backfill ends whatever the broker's count says.
BACKFILL_IDLE_ROUNDS = 3


@dataclass(slots=True)
class Window:
    """One message: a window of a stream's consecutive events from seq ``first``;
    ``msg`` is None for one read by a backfill (nothing to acknowledge); ``size``, the
    bytes of its payload (what keeping it costs)."""

    first: int
    msg: Any
    lines: list[bytes]
    size: int

    @classmethod
    def of(cls, first: int, msg: Any, data: bytes) -> Window:
        """The window of a message's payload ``data``."""
        return cls(first, msg, unpack(data), len(data))

    @property
    def last(self) -> int:
        return self.first + len(self.lines) - 1


FIRST = attrgetter("first")


def chain(waiting: list[Window], held: int) -> tuple[list[Window], list[bytes]]:
    """Take from ``waiting`` the windows that start at or before the seq after ``held``,
    in order: those windows, and the lines of the seqs they add past ``held`` (a window
    re-published with other boundaries overlaps another; each seq is taken once)."""
    waiting.sort(key=FIRST)
    after = held + 1
    lines: list[bytes] = []
    count = 0
    for window in waiting:
        if window.first > after:
            break
        count += 1
        if window.last >= after:
            lines += window.lines[after - window.first :]
            after = window.last + 1
    run = waiting[:count]
    del waiting[:count]
    return run, lines


async def backfill(
    client: Any, stream: str, subject: str, held: int, upto: int, batch: int
) -> tuple[list[Window], int]:
    """The windows of ``stream`` (on ``subject``) that carry seqs ``held + 1`` up to
    ``upto`` (exclusive), read from the broker; and the first seq they do not reach
    (``upto`` when the broker held them all, less when retention dropped some)."""
    from nats.js import api
    from nats.js.errors import NotFoundError

    js = client.jetstream()
    config = api.ConsumerConfig(
        filter_subject=subject,
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.ALL,
        inactive_threshold=60.0,  # the server removes it should this process die
        mem_storage=True,
    )
    info = await js.add_consumer(STREAM, config)
    name, left = info.name, info.num_pending
    puller = Puller(client, STREAM, name)
    found: list[Window] = []
    after = held + 1
    received = idle = 0
    try:
        while after < upto and left > 0 and idle <= BACKFILL_IDLE_ROUNDS:
            msgs = await puller.fetch(batch, 0) or await puller.fetch(batch, BACKFILL_WAIT_S)
            if not msgs:  # none came in time: the broker's count says whether more will
                idle += 1
                now = await js.consumer_info(STREAM, name)
                left = now.num_pending + now.delivered.consumer_seq - received
                continue
            idle = 0
            received += len(msgs)
            left -= len(msgs)
            for msg in msgs:
                ident = parse_msg_id((msg.headers or {}).get(MSG_ID))
                if ident is None or ident[0] != stream:
                    continue  # another stream whose id maps to the same subject
                window = Window.of(ident[1], None, msg.data)
                if window.first <= after <= window.last:
                    found.append(window)
                    after = window.last + 1
    finally:
        await puller.close()
        with contextlib.suppress(NotFoundError):  # removed already, as inactive
            await js.delete_consumer(STREAM, name)
    return found, min(after, upto)
