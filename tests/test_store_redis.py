"""The Redis store against the shared store contract, on a real redis-server, plus what only it
promises: dual-stack peers and WebRTC records, swarms that expire whole, exact totals, shared
swarms between processes, and a store that survives Redis going away."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time

import pytest

from johnlocke.errors import ClientError
from johnlocke.store.redis import UNAVAILABLE, RedisStore, StoreUnavailable

from .redis_server import RedisServer, redis_available
from .store_contract import IH, IH2, StoreContract, addrs_of, ids_of, pid, v4, v6

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
        yield server


IH3 = b"\x33" * 20


def fresh_prefix() -> str:
    return f"t{os.urandom(6).hex()}:"


def rtc(n: int) -> bytes:
    """A WebRTC peer's 8-byte endpoint id (family 2)."""
    return b"\xee\xee" + n.to_bytes(6, "big")


class TestRedisStore(StoreContract):
    @pytest.fixture
    def make_store(self, redis_server):
        # Every test gets an empty store of its own: a fresh key prefix on the shared server.
        # The pool is large so the contract's whole-swarm checks see every peer.
        return lambda clock: RedisStore(
            redis_server.url, prefix=fresh_prefix(), clock=clock, pool=5000, timeout=5
        )


@pytest.fixture
async def store(redis_server):
    clock_t = [1000.0]
    s = RedisStore(redis_server.url, prefix=fresh_prefix(), clock=lambda: clock_t[0], timeout=5)
    s.clock_t = clock_t  # type: ignore[attr-defined]
    yield s
    await s.close()


async def counts(store, ih=IH):
    (row,) = await store.scrape([ih])
    return row[1:]


# --- dual-stack peers (BEP 7) and WebRTC records ------------------------------------------------


async def test_a_dual_stack_peer_is_one_peer_with_two_records(store):
    await store.announce(IH, pid(1), v4(1), False, 0, False)
    view = await store.announce(IH, pid(1), v6(1), False, 0, False)
    assert (view.complete, view.incomplete) == (0, 1)  # one peer
    assert (await store.stats())[1:5] == (0, 1, 0, 1)  # two records
    # Each family's view hands out that family's records, never the announcer's own.
    view4 = await store.announce(IH, pid(2), v4(2), False, 0, False)
    assert addrs_of(view4, False) == [v4(1)]
    view6 = await store.announce(IH, pid(3), v6(3), False, 0, False)
    assert addrs_of(view6, False) == [v6(1)]
    again = await store.announce(IH, pid(1), v6(1), False, 0, False)
    assert addrs_of(again, False) == [v6(3)]


async def test_the_role_is_the_peers_and_completion_counts_once(store):
    await store.announce(IH, pid(1), v4(1), False, 0, False)
    await store.announce(IH, pid(1), v6(1), False, 0, False)
    view = await store.announce(IH, pid(1), v4(1), True, 0, True)
    assert view.completed and (view.complete, view.incomplete, view.downloaded) == (1, 0, 1)
    # Its IPv6 record moved to the seeders too; its own seeder announce there counts nothing.
    assert (await store.stats())[1:5] == (1, 0, 1, 0)
    view = await store.announce(IH, pid(1), v6(1), True, 0, True)
    assert not view.completed and view.downloaded == 1
    # Back to leecher: every record follows.
    view = await store.announce(IH, pid(1), v6(1), False, 0, False)
    assert (view.complete, view.incomplete) == (0, 1)
    assert (await store.stats())[1:5] == (0, 1, 0, 1)


async def test_a_new_family_record_of_a_leecher_arriving_seeded_is_its_completion(store):
    await store.announce(IH, pid(1), v4(1), False, 0, False)
    view = await store.announce(IH, pid(1), v6(1), True, 0, False)
    assert view.completed and (view.complete, view.incomplete, view.downloaded) == (1, 0, 1)
    assert (await store.stats())[1:5] == (1, 0, 1, 0)


async def test_the_key_rule_applies_within_a_family(store):
    await store.announce(IH, pid(1), v4(1), False, 7, False)
    # No IPv6 record yet: a new one, whatever the key (no check against its IPv4 record).
    await store.announce(IH, pid(1), v6(1), False, 0, False)
    # An IPv6 record from another IPv6 address needs the key of the IPv6 record (0: refused).
    with pytest.raises(ClientError, match="another address"):
        await store.announce(IH, pid(1), v6(2), False, 7, False)
    with pytest.raises(ClientError, match="another address"):
        await store.announce(IH, pid(1), v4(2), False, 8, False)
    await store.announce(IH, pid(1), v4(2), False, 7, False)  # the IPv4 key moves it
    assert (await store.stats())[1:5] == (0, 1, 0, 1)


async def test_stopped_removes_only_that_familys_record(store):
    await store.announce(IH, pid(1), v4(1), True, 5, False)
    await store.announce(IH, pid(1), v6(1), True, 0, False)
    with pytest.raises(ClientError):
        await store.remove(IH, pid(1), v4(9), 6)
    assert await store.remove(IH, pid(1), v4(1), 0) == (1, 0, 0)  # still a seeder, by IPv6
    assert (await store.stats())[1:5] == (0, 0, 1, 0)
    assert await store.remove(IH, pid(1), v6(1), 0) == (0, 0, 0)


async def test_sweep_expires_records_by_their_own_last_seen(store):
    await store.announce(IH, pid(1), v4(1), False, 0, False)
    await store.announce(IH, pid(1), v6(1), False, 0, False)
    store.clock_t[0] += 100
    await store.announce(IH, pid(1), v6(1), False, 0, False)
    assert await store.sweep(store.now() - 50) == 1
    assert await counts(store) == (0, 1, 0)
    assert (await store.stats())[1:5] == (0, 0, 0, 1)


async def test_max_per_ip_counts_records(store):
    same4 = bytes([10, 1, 1, 1])
    await store.announce(IH, pid(1), same4 + b"\x00\x01", False, 0, False, max_per_ip=2)
    await store.announce(IH, pid(1), v6(1), False, 0, False, max_per_ip=2)
    await store.announce(IH, pid(2), same4 + b"\x00\x02", False, 0, False, max_per_ip=2)
    with pytest.raises(ClientError, match="at most 2"):
        await store.announce(IH, pid(3), same4 + b"\x00\x03", False, 0, False, max_per_ip=2)


async def test_webrtc_records_are_a_third_family(store):
    await store.announce(IH, pid(1), rtc(1), True, 0, False)
    await store.announce(IH, pid(2), rtc(2), False, 0, False)
    await store.announce(IH, pid(3), v4(3), False, 0, False)
    view = await store.announce(IH, pid(4), rtc(4), False, 0, False)
    assert view.family == 2 and view.table == 5
    assert (view.complete, view.incomplete) == (1, 3)  # every family counts
    blob = view.compact(view.sample(True, 10, random.Random(1)))
    assert blob == rtc(1)
    assert set(ids_of(view, False)) == {pid(2)}  # only WebRTC peers, never the announcer
    assert view.count(False) == 1 and view.count(True) == 1
    stats = await store.stats()
    assert (stats.swarms, *stats[1:5]) == (1, 0, 1, 0, 0)
    if len(stats) > 5:  # StoreStats with the WebRTC fields
        assert stats[5:7] == (1, 2)
    view = await store.announce(IH, pid(2), rtc(2), True, 0, False)
    assert view.completed and view.downloaded == 1


# --- what only a networked store does -----------------------------------------------------------


async def test_two_stores_with_the_same_prefix_share_swarms(redis_server):
    prefix = fresh_prefix()
    a = RedisStore(redis_server.url, prefix=prefix)
    b = RedisStore(redis_server.url, prefix=prefix)
    other = RedisStore(redis_server.url, prefix=fresh_prefix())
    try:
        await a.announce(IH, pid(1), v4(1), True, 0, False)
        view = await b.announce(IH, pid(2), v4(2), False, 0, False)
        assert addrs_of(view, True) == [v4(1)]
        assert await b.scrape([IH]) == [(IH, 1, 1, 0)]
        assert await other.scrape([IH]) == [(IH, 0, 0, 0)]
        assert (await other.stats()).swarms == 0
    finally:
        for s in (a, b, other):
            await s.close()


async def test_the_pool_bounds_what_one_announce_brings_back(redis_server):
    s = RedisStore(redis_server.url, prefix=fresh_prefix(), pool=20)
    try:
        for n in range(300):
            await s.announce(IH, pid(n), v4(n), False, 0, False)
        view = await s.announce(IH, pid(1000), v4(1000), False, 0, False)
        assert view.count(False) == 300  # the true count
        got = ids_of(view, False, 100)
        assert 20 <= len(got) <= 21 and len(set(got)) == len(got)
        assert pid(1000) not in got
    finally:
        await s.close()


async def test_an_abandoned_swarm_expires_whole_and_leaves_the_totals(redis_server):
    prefix = fresh_prefix()
    s = RedisStore(redis_server.url, prefix=prefix, ttl=2)
    try:
        await s.announce(IH, pid(1), v4(1), True, 0, False)
        await s.announce(IH, pid(2), v6(2), False, 0, True)
        await s.announce(IH2, pid(3), v4(3), False, 0, False, max_per_ip=3)
        keys = redis_server.cli("--scan", "--pattern", prefix + "{*").split()
        assert len(keys) == 6  # IH: m, 0, 3; IH2: m, 1 and a (its per-IP counts)
        assert all(0 < int(redis_server.cli("TTL", k)) <= 2 for k in keys)
        time.sleep(1.2)
        await s.announce(IH3, pid(4), v4(4), False, 0, False)  # keeps the bucket alive
        time.sleep(1.2)
        left = redis_server.cli("--scan", "--pattern", prefix + "{*").split()
        assert left and all(IH3.hex() in k for k in left)
        assert await s.scrape([IH, IH2]) == [(IH, 0, 0, 0), (IH2, 0, 0, 0)]
        assert (await s.stats())[:5] == (3, 1, 2, 0, 1)  # counted until a sweep looks
        assert await s.sweep(s.now() - 100) == 0
        assert (await s.stats())[:5] == (1, 0, 1, 0, 0)
        # The swarm can start again from nothing.
        view = await s.announce(IH, pid(9), v4(9), False, 0, False)
        assert view.created and (view.complete, view.incomplete, view.downloaded) == (0, 1, 0)
        assert (await s.stats())[:3] == (2, 0, 2)
        # When every swarm is gone, so are the totals: nothing is left behind.
        time.sleep(2.2)
        assert redis_server.cli("--scan", "--pattern", prefix + "*").split() == []
        assert (await s.stats())[:3] == (0, 0, 0)
    finally:
        await s.close()


async def test_a_recreated_swarm_takes_the_expired_one_out_of_the_totals(redis_server):
    s = RedisStore(redis_server.url, prefix=fresh_prefix(), ttl=2)
    try:
        for n in range(5):
            await s.announce(IH, pid(n), v4(n), False, 0, False)
        time.sleep(1.2)
        await s.announce(IH3, pid(1), v4(1), False, 0, False)  # keeps the bucket alive
        time.sleep(1.2)
        await s.announce(IH, pid(9), v4(9), True, 0, False)  # no sweep in between
        assert (await s.stats())[:3] == (2, 1, 1)
    finally:
        await s.close()


async def test_sweep_works_in_bounded_calls_on_a_big_swarm(redis_server):
    clock_t = [1000.0]
    s = RedisStore(redis_server.url, prefix=fresh_prefix(), clock=lambda: clock_t[0])
    try:
        await asyncio.gather(
            *[s.announce(IH, pid(n), v4(n), n % 3 == 0, 0, False) for n in range(2500)]
        )
        clock_t[0] += 10
        await s.announce(IH, pid(5000), v4(5000), False, 0, False)
        assert await s.sweep(s.now() - 5) == 2500  # two calls of at most 2000 (_SWEEP_BUDGET)
        assert await s.scrape([IH]) == [(IH, 0, 1, 0)]
        assert (await s.stats())[:3] == (1, 0, 1)
    finally:
        await s.close()


async def test_full_scrape_and_top_swarms_page_through_many_swarms(redis_server):
    s = RedisStore(redis_server.url, prefix=fresh_prefix())
    try:
        hashes = [n.to_bytes(20, "big") for n in range(1200)]
        await asyncio.gather(*[s.announce(h, pid(1), v4(1), False, 0, False) for h in hashes])
        for n in range(4):
            await s.announce(hashes[7], pid(10 + n), v4(10 + n), True, 0, False)
        rows = await s.scrape_all()
        assert len(rows) == 1200 and {r[0] for r in rows} == set(hashes)
        assert (await s.top_swarms(1)) == [(hashes[7], 4, 1, 0)]
        assert (await s.stats())[:3] == (1200, 4, 1200)
    finally:
        await s.close()


async def test_concurrent_announces_of_one_peer_count_one_completion(redis_server):
    s = RedisStore(redis_server.url, prefix=fresh_prefix())
    try:
        await s.announce(IH, pid(1), v4(1), False, 0, False)
        views = await asyncio.gather(
            *[s.announce(IH, pid(1), v4(1), True, 0, True) for _ in range(20)]
        )
        assert sum(v.completed for v in views) == 1
        assert await s.scrape([IH]) == [(IH, 1, 0, 1)]
    finally:
        await s.close()


# --- faults: a real redis-server stopped, restarted, hung and full -----------------------------


async def test_redis_down_then_back(caplog):
    server = RedisServer().start()
    s = RedisStore(server.url, prefix=fresh_prefix(), timeout=1.0)
    try:
        await s.announce(IH, pid(1), v4(1), False, 0, False)
        server.stop()
        caplog.set_level(logging.ERROR, "johnlocke.store.redis")
        t0 = time.monotonic()
        for _ in range(20):
            with pytest.raises(StoreUnavailable) as info:
                await s.announce(IH, pid(2), v4(2), False, 0, False)
        assert time.monotonic() - t0 < 20 * 1.0
        assert info.value.reason == UNAVAILABLE
        assert s.errors == 20 and s.up is False
        assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
        with pytest.raises(StoreUnavailable):
            await s.scrape([IH])
        assert await s.stats() is not None  # the last known totals, no exception
        assert await s.sweep(0) == 0
        server.start()  # same port, empty (no persistence): the script must be loaded again
        view = await s.announce(IH, pid(2), v4(2), False, 0, False)
        assert s.up is True and view.created
        assert await s.scrape([IH]) == [(IH, 0, 1, 0)]
    finally:
        await s.close()
        server.close()


async def test_a_hung_redis_answers_within_the_timeout():
    server = RedisServer().start()
    s = RedisStore(server.url, prefix=fresh_prefix(), timeout=0.5)
    try:
        await s.announce(IH, pid(1), v4(1), False, 0, False)
        server.pause()
        t0 = time.monotonic()
        results = await asyncio.gather(
            *[s.announce(IH, pid(n), v4(n), False, 0, False) for n in range(10)],
            return_exceptions=True,
        )
        took = time.monotonic() - t0
        assert all(isinstance(r, StoreUnavailable) for r in results)
        assert took < 1.5
        server.resume()
        view = await s.announce(IH, pid(3), v4(3), False, 0, False)
        assert view.complete + view.incomplete >= 2
    finally:
        await s.close()
        server.close()


async def test_a_full_redis_refuses_announces_and_changes_nothing():
    server = RedisServer().start()
    s = RedisStore(server.url, prefix=fresh_prefix(), timeout=1.0)
    try:
        await s.announce(IH, pid(1), v4(1), False, 0, False)
        server.cli("CONFIG", "SET", "maxmemory", "1")  # below what it already uses
        with pytest.raises(StoreUnavailable):
            await s.announce(IH, pid(2), v4(2), False, 0, False)
        assert await s.scrape([IH]) == [(IH, 0, 1, 0)]  # reads still work
        server.cli("CONFIG", "SET", "maxmemory", "0")
        await s.announce(IH, pid(2), v4(2), False, 0, False)
        assert await s.scrape([IH]) == [(IH, 0, 2, 0)]
    finally:
        await s.close()
        server.close()


async def test_start_with_redis_down_then_recover():
    server = RedisServer()  # not started yet
    s = RedisStore(server.url, prefix=fresh_prefix(), timeout=0.5)
    try:
        assert await s.load_scripts() is False
        assert s.up is False
        server.start()
        view = await s.announce(IH, pid(1), v4(1), False, 0, False)
        assert view.created and s.up is True
    finally:
        await s.close()
        server.close()


@pytest.mark.parametrize(
    "name", ["random", "opposite-role", "locality", "small-group", "recent", "spread"]
)
async def test_every_builtin_strategy_answers_from_a_redis_view(redis_server, name):
    from johnlocke.bittorrent import AnnounceRequest
    from johnlocke.tracker import Tracker

    from .conftest import make_config

    s = RedisStore(redis_server.url, prefix=fresh_prefix(), pool=60)
    tracker = Tracker(make_config(strategy={"name": name}), s)
    try:
        ip = bytes([10, 0, 0, 1])
        for n in range(120):  # more peers than the pool holds
            req = AnnounceRequest(IH, pid(n), 1000 + n, left=0 if n % 4 == 0 else 5, numwant=0)
            await tracker.announce(req, bytes([10, 0, n // 256, n % 256]))
        for seeder in (True, False):
            req = AnnounceRequest(IH, pid(500), 2000, left=0 if seeder else 5, numwant=40)
            answer = await tracker.announce(req, ip)
            blob = answer.peers
            got = {blob[i : i + 6] for i in range(0, len(blob), 6)}
            assert 0 < len(got) == len(blob) // 6 <= 40  # distinct peers, at most numwant
            assert ip + (2000).to_bytes(2, "big") not in got  # never the announcer itself
            assert (answer.complete, answer.incomplete) == (31 - (not seeder), 90 + (not seeder))
    finally:
        await s.close()


async def test_with_a_lease_one_process_sweeps_per_period(redis_server):
    prefix = fresh_prefix()
    clock_t = [1000.0]
    a = RedisStore(redis_server.url, prefix=prefix, sweep_lease=1.0, clock=lambda: clock_t[0])
    b = RedisStore(redis_server.url, prefix=prefix, sweep_lease=1.0, clock=lambda: clock_t[0])
    try:
        for n in range(3):
            await a.announce(IH, pid(n), v4(n), False, 0, False)
        clock_t[0] += 100
        assert await b.sweep(a.now() - 50) == 3
        await a.announce(IH, pid(9), v4(9), False, 0, False)
        clock_t[0] += 100
        assert await a.sweep(a.now() - 50) == 0  # b swept less than a lease ago
        time.sleep(1.1)
        assert await a.sweep(a.now() - 50) == 1
    finally:
        await a.close()
        await b.close()
