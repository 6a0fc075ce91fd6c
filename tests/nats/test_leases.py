"""Partition leases against a real nats-server: fair shares, the surplus given up to a
newcomer, a lost renewal, and a restarted ingester taking back its own leases."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.nats.conftest import NatsServer
from waddle.consumers.nats.broker import LEASES, MEMBERS
from waddle.consumers.nats.leases import Leases, lease_key


async def leases_of(url: str, *names: str) -> tuple[Any, Any, list[Leases]]:
    import nats

    client = await nats.connect(servers=[url])
    js = client.jetstream()
    kv, members = await js.key_value(LEASES), await js.key_value(MEMBERS)
    return client, kv, [Leases(name, 4, kv, members) for name in names]


def test_shares_move_to_a_newcomer_and_a_lost_renewal_gives_the_partition_up(
    nats_server: NatsServer,
) -> None:
    async def main() -> None:
        client, kv, (a, b) = await leases_of(nats_server.url, "a", "b")
        try:
            assert await a.round() == ({0, 1, 2, 3}, set())  # alone: every partition
            assert await b.round() == (set(), set())  # two members now: none is free
            taken, given = await a.round()  # a keeps its share and gives up the rest
            assert taken == set() and len(given) == 2 and set(a.held) == {0, 1, 2, 3} - given
            assert await b.round() == (given, set())
            # One of a's leases expires and a third ingester takes it before a renews.
            lost = min(a.held)
            await kv.purge(lease_key(lost))
            await kv.create(lease_key(lost), b"c")
            assert await a.round() == (set(), {lost})
            assert (await kv.get(lease_key(lost))).value == b"c"
            # a restarted under its name takes back at once what is still under it.
            again = Leases("a", 4, kv, a.members)
            kept = set(a.held)
            assert await again.round() == (kept, set())
            await again.release_all()  # a stop: the others need not wait for the lease
            left = await kv.keys()
            assert left and not {lease_key(p) for p in kept} & set(left)
        finally:
            await client.close()

    asyncio.run(asyncio.wait_for(main(), 60))
