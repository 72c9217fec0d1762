"""The Redis store on a real 3-master Redis Cluster (three ``redis-server --cluster-enabled yes``
joined by ``redis-cli --cluster create``): the shared contract, and many swarms spread over
every node."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from johnlocke.store.redis import RedisStore

from .redis_server import RedisCluster, redis_available
from .store_contract import StoreContract, pid, v4, v6

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")


@pytest.fixture(scope="module")
def cluster():
    with RedisCluster(masters=3) as c:
        yield c


def fresh_prefix() -> str:
    return f"c{os.urandom(6).hex()}:"


class TestRedisClusterStore(StoreContract):
    @pytest.fixture
    def make_store(self, cluster):
        return lambda clock: RedisStore(
            cluster.url, cluster=True, prefix=fresh_prefix(), clock=clock, pool=5000, timeout=5
        )


async def test_many_swarms_across_every_node(cluster):
    clock_t = [1000.0]
    store = RedisStore(cluster.url, cluster=True, prefix=fresh_prefix(), clock=lambda: clock_t[0])
    try:
        rng = random.Random(3)
        hashes = [rng.randbytes(20) for _ in range(300)]
        jobs = []
        for s, ih in enumerate(hashes):
            for n in range(5):
                addr = v6(n) if n == 4 else v4(n)
                jobs.append(store.announce(ih, pid(n), addr, n == 0, 0, n == 0 and s % 2 == 0))
        await asyncio.gather(*jobs)
        # The swarms really are spread over the three masters.
        per_node = [
            sum(1 for k in node.cli("--scan", "--pattern", store.prefix.decode() + "{*}:m").split())
            for node in cluster.nodes
        ]
        assert sum(per_node) == 300 and all(n > 30 for n in per_node)
        rows = await store.scrape(hashes)
        assert [r[1:] for r in rows] == [(1, 4, 1 - s % 2) for s in range(300)]
        stats = await store.stats()
        assert stats[:5] == (300, 300, 900, 0, 300)
        assert len(await store.scrape_all()) == 300
        top = await store.top_swarms(3)
        assert len(top) == 3 and all(r[1] + r[2] == 5 for r in top)
        view = await store.announce(hashes[0], pid(9), v4(9), False, 0, False)
        assert view.count(True) == 1 and view.count(False) == 3
        clock_t[0] += 100
        for ih in hashes[:10]:
            await store.announce(ih, pid(1), v4(1), False, 0, False)
        assert await store.sweep(store.now() - 50) == 300 * 5 + 1 - 10
        assert (await store.stats())[:5] == (10, 0, 10, 0, 0)
        assert await store.drop(hashes[0]) is True
        assert (await store.stats()).swarms == 9
    finally:
        await store.close()


async def test_a_stale_slot_map_is_followed_to_the_right_node(cluster):
    """After a reshard the client's slot map is out of date: the node it asks answers MOVED,
    and the call goes through redis-py's cluster client, which follows it."""
    from redis.crc import key_slot

    store = RedisStore(cluster.url, cluster=True, prefix=fresh_prefix())
    try:
        ih = b"\x42" * 20
        await store.announce(ih, pid(1), v4(1), True, 0, False)
        link = store._link
        slot = key_slot(ih.hex().encode())
        right = link.client.nodes_manager.get_node_from_slot(slot)
        wrong = next(n for n in link.client.get_primaries() if n.name != right.name)
        link.client.nodes_manager.slots_cache[slot] = [wrong]
        view = await store.announce(ih, pid(2), v4(2), False, 0, False)
        assert (view.complete, view.incomplete) == (1, 1) and view.count(True) == 1
        assert await store.scrape([ih]) == [(ih, 1, 1, 0)]
        assert store.errors == 0
    finally:
        await store.close()
