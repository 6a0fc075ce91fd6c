"""Which partitions an ingester pulls: leases in a key-value bucket whose entries expire.

An ingester holds partition p while it renews key ``p<p>`` of ``waddle-leases`` (an
update on the revision it last saw); the bucket's ``max_age`` is the lease, so an entry
not renewed within it disappears and the partition is free. A renewal that fails means
the lease expired and another ingester may hold p now: the caller stops pulling p at
once. Each live ingester also renews a key in ``waddle-members``, so each knows how many
share the work and holds at most its share, ceil(P / members): a dead ingester's
partitions are taken by the others one lease after its last renewal (at their next
round), and when an ingester starts, those holding more than their share release the
surplus (delete their key) for it to take. An ingester restarted under the same name
takes back the leases still under that name at once. Names must be unique: two live
ingesters of one name would take each other's leases.

Guarantees: a partition has at most one holder *that renewed within the lease*; an
ingester that stalls past its lease may pull a few messages of a partition another now
holds before its next renewal fails. That is harmless for the logs (each is idempotent
by (stream, seq), and ``waddle.web.nats_ingest`` takes a stream that moved from its
first seq) but means a stream may have an unfinished copy in two ingesters' logs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import zlib
from typing import Any

logger = logging.getLogger("waddle.nats")


def lease_key(where: int) -> str:
    return f"p{where}"


def member_key(name: str) -> str:
    """A valid bucket key for any ingester name (host and path hold ``:`` and ``/``)."""
    return "m" + name.encode().hex()


class Leases:
    """The partitions this ingester holds (partition -> the revision it last wrote)."""

    def __init__(self, name: str, partitions: int, leases: Any, members: Any) -> None:
        self.name = name
        self.partitions = partitions
        self.leases = leases
        self.members = members
        self.held: dict[int, int] = {}
        # Where this ingester starts looking for free partitions: ingesters starting
        # together then try different ones first.
        self._first = zlib.crc32(name.encode()) % partitions

    async def round(self) -> tuple[set[int], set[int]]:
        """Renew, release the surplus, claim up to the share: (taken, given up)."""
        from nats.js.errors import KeyWrongLastSequenceError, NoKeysError

        await self.members.put(member_key(self.name), self.name.encode())
        try:
            count = len(await self.members.keys())
        except NoKeysError:  # our own key expired between put and keys: a stalled round
            count = 1
        share = math.ceil(self.partitions / max(count, 1))
        lost: set[int] = set()
        for where, revision in list(self.held.items()):
            try:
                self.held[where] = await self.leases.update(
                    lease_key(where), self.name.encode(), last=revision
                )
            except KeyWrongLastSequenceError:
                logger.warning(
                    "waddle ingester %s: its lease on partition %d expired; it stops pulling it",
                    self.name,
                    where,
                )
                del self.held[where]
                lost.add(where)
        for where in sorted(self.held, reverse=True)[: max(0, len(self.held) - share)]:
            await self.release(where)
            lost.add(where)
        taken: set[int] = set()
        for step in range(self.partitions):
            if len(self.held) >= share:
                break
            where = (self._first + step) % self.partitions
            if where in self.held:
                continue
            claimed = await self._claim(where)
            if claimed is not None:
                self.held[where] = claimed
                taken.add(where)
        return taken, lost

    async def _claim(self, where: int) -> int | None:
        """The revision of a new lease on ``where``; None when another ingester holds it.
        A lease under this ingester's own name (it was restarted) is taken back at once."""
        from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

        try:
            return int(await self.leases.create(lease_key(where), self.name.encode()))
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self.leases.get(lease_key(where))
            if entry.value != self.name.encode():
                return None
            return int(await self.leases.update(lease_key(where), entry.value, last=entry.revision))
        except (NotFoundError, KeyWrongLastSequenceError):
            return None  # it expired or changed hands meanwhile: the next round looks again

    async def release(self, where: int) -> None:
        """Give partition ``where`` up now, for another ingester to take at its next round."""
        from nats.js.errors import KeyWrongLastSequenceError

        revision = self.held.pop(where)
        # Failing: it had expired and another took it, so nothing of ours is left there.
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.leases.delete(lease_key(where), last=revision)

    async def release_all(self) -> None:
        """Give every partition up and leave the members (a graceful stop)."""
        for where in list(self.held):
            await self.release(where)
        await self.members.purge(member_key(self.name))
