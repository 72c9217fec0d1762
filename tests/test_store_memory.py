"""The memory store against the shared store contract, plus what only it promises."""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import time

import pytest

from johnlocke.errors import ClientError
from johnlocke.store.memory import _SEG_TARGET, _SMALL, MemoryStore, Swarm, runs

from .conftest import LoopTurns
from .store_contract import IH, IH2, StoreContract, pid, v4, v6


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def make_store(self):
        return lambda clock: MemoryStore(clock=clock)


def ihn(n: int) -> bytes:
    return n.to_bytes(20, "big")


async def test_sweep_yields_to_the_event_loop_on_big_swarms():
    clock_t = [0.0]
    store = MemoryStore(clock=lambda: clock_t[0])
    for n in range(60_000):
        await store.announce(IH, pid(n), v4(n), n % 4 == 0, 0, False)
    async with LoopTurns() as turns:
        clock_t[0] += 10
        removed = await store.sweep(store.now())
    assert removed == 60_000
    assert store.swarm_count() == 0
    # 60,000 peers in slices of 20,000: the loop got control between slices.
    assert turns.count >= 2


async def test_sweep_yields_to_the_event_loop_on_many_small_swarms():
    clock_t = [0.0]
    store = MemoryStore(clock=lambda: clock_t[0])
    for n in range(30_000):
        for j in range(1 + n % 3):  # swarms of one, two and three peers
            await store.announce(ihn(n), pid(j), v4(j), False, 0, False)
    async with LoopTurns() as turns:
        clock_t[0] += 10
        removed = await store.sweep(store.now())
    assert removed == 60_000
    assert await store.stats() == (0,) * 7
    assert turns.count >= 2


async def test_announce_during_a_sweep_is_kept():
    clock_t = [0.0]
    store = MemoryStore(clock=lambda: clock_t[0])
    for n in range(50_000):
        await store.announce(IH, pid(n), v4(n), False, 0, False)
    clock_t[0] += 10
    cutoff = store.now()

    async def late_announce():
        await asyncio.sleep(0)
        await store.announce(IH, pid(999_999), v4(1), False, 0, False)

    t0 = time.perf_counter()
    _, removed = await asyncio.gather(late_announce(), store.sweep(cutoff))
    assert time.perf_counter() - t0 < 30
    assert removed == 50_000
    assert await store.scrape([IH]) == [(IH, 0, 1, 0)]


async def test_swarms_change_tier_as_they_grow_and_shrink():
    store = MemoryStore()
    await store.announce(IH, pid(0), v4(0), True, 0, False)
    # One record: no object at all, a slot in a bucket.
    assert IH not in store.swarms and store.tiny.count == 1
    await store.announce(IH, pid(1), v6(1), False, 0, False)
    assert type(store.swarms[IH]) is bytes and store.tiny.count == 0  # packed
    for n in range(2, _SMALL):
        await store.announce(IH, pid(n), v4(n), n % 3 == 0, 0, False)
    assert type(store.swarms[IH]) is bytes  # _SMALL records
    await store.announce(IH, pid(_SMALL), v4(_SMALL), False, 0, False)
    assert isinstance(store.swarms[IH], Swarm)
    # Back to packed at half of _SMALL (not at once: no flapping at the boundary), then a slot.
    for n in range(_SMALL, _SMALL // 2, -1):
        await store.remove(IH, pid(n), v4(n), 0)
    assert isinstance(store.swarms[IH], Swarm)  # _SMALL // 2 + 1 records
    await store.remove(IH, pid(_SMALL // 2), v4(_SMALL // 2), 0)
    assert type(store.swarms[IH]) is bytes
    for n in range(2, _SMALL // 2):
        await store.remove(IH, pid(n), v4(n), 0)
    await store.remove(IH, pid(1), v6(1), 0)
    assert IH not in store.swarms and store.tiny.count == 1
    # Every step kept the peer and the count: re-announcing changes nothing.
    await store.announce(IH, pid(0), v4(0), True, 0, False)
    assert await store.scrape([IH]) == [(IH, 1, 0, 0)]
    assert await store.stats() == (1, 1, 0, 0, 0, 0, 0)


async def test_one_peer_swarms_live_in_buckets_that_split_and_merge():
    clock_t = [0.0]
    store = MemoryStore(clock=lambda: clock_t[0])
    for n in range(40_000):
        await store.announce(ihn(n), pid(n), v4(n), n % 2 == 0, 0, False)
    assert store.swarms == {} and store.tiny.count == 40_000
    assert len(store.tiny.segs) >= 40_000 // 32  # split as they filled, a bucket at a time
    rows = await store.scrape([ihn(n) for n in range(0, 40_000, 7)])
    assert all(row[1:] == ((1, 0, 0) if number % 2 == 0 else (0, 1, 0))
               for row, number in zip(rows, range(0, 40_000, 7), strict=True))  # fmt: skip
    clock_t[0] += 100
    for n in range(100):
        await store.announce(ihn(n), pid(n), v4(n), True, 0, False)
    assert await store.sweep(store.now() - 50) == 39_900
    # What is left merged back into few buckets, and is still found.
    assert len(store.tiny.segs) <= 100
    assert await store.scrape([ihn(1), ihn(99), ihn(100)]) == [
        (ihn(1), 1, 0, 1),
        (ihn(99), 1, 0, 1),
        (ihn(100), 0, 0, 0),
    ]


async def test_a_growing_swarm_never_rebuilds_more_than_a_segment_of_its_index():
    store = MemoryStore()
    for n in range(60_000):
        await store.announce(IH, pid(n), v4(n), n % 4 == 0, 0, False)
    swarm = store.swarms[IH]
    assert isinstance(swarm, Swarm)
    # A segment holds ~_SEG_TARGET records: that is the most any one announce rehashes.
    assert len(swarm.segs) >= 60_000 // (2 * _SEG_TARGET)
    assert max(len(seg) for seg in swarm.segs) <= 8 * _SEG_TARGET
    # Index memory: a few bytes per peer.
    assert sum(len(seg) for seg in swarm.segs) * 4 < 16 * 60_000
    # Shrinking merges segments back, one at a time.
    for n in range(59_000):
        await store.remove(IH, pid(n), v4(n), 0)
    assert len(swarm.segs) <= 4  # 1,000 records: merged while under a quarter of the target
    assert await store.scrape([IH]) == [(IH, 250, 750, 0)]


async def test_small_swarms_cost_the_garbage_collector_nothing():
    store = MemoryStore()
    gc.collect()
    before = len(gc.get_objects())
    for n in range(5_000):
        for j in range(1 + n % 10):
            await store.announce(ihn(n), pid(j), v4(j), j < 2, 0, False)
    gc.collect()
    # Neither bytes nor buckets are tracked: the cyclic collector never walks the swarms.
    assert len(gc.get_objects()) - before < 100


async def test_changes_count_what_changed_and_only_that():
    clock_t = [0.0]
    store = MemoryStore(clock=lambda: clock_t[0])
    c0 = store.changes
    await store.announce(IH, pid(1), v4(1), False, 0, False)
    c1 = store.changes
    assert c1 > c0
    await store.scrape([IH])
    await store.scrape_all()
    await store.stats()
    await store.top_swarms(5)
    assert await store.sweep(store.now() - 10) == 0
    await store.remove(IH2, pid(1), v4(1), 0)  # an unknown swarm
    await store.remove(IH, pid(9), v4(9), 0)  # an unknown peer
    assert store.changes == c1
    await store.announce(IH, pid(1), v4(1), False, 0, False, hold=30)  # held: nothing changed
    assert store.changes == c1
    await store.announce(IH, pid(1), v4(1), False, 0, False)  # last_seen moved
    c2 = store.changes
    assert c2 > c1
    clock_t[0] += 100
    assert await store.sweep(store.now() - 10) == 1
    assert store.changes > c2


async def test_dict_gives_its_table_back_after_a_big_sweep():
    clock_t = [0.0]
    store = MemoryStore(clock=lambda: clock_t[0])
    for n in range(30_000):
        for j in range(2):
            await store.announce(ihn(n), pid(j), v4(j), False, 0, False)
    full = sys.getsizeof(store.swarms)
    clock_t[0] += 100
    await store.announce(IH, pid(1), v4(1), False, 0, False)
    await store.announce(IH, pid(2), v4(2), False, 0, False)
    assert await store.sweep(store.now() - 50) == 60_000
    assert sys.getsizeof(store.swarms) < full / 100
    assert await store.scrape([IH]) == [(IH, 0, 2, 0)]


async def test_a_walk_never_yields_a_swarm_twice_while_swarms_change_tier():
    """dump and scrape_all may yield between batches while swarms move between the dict and
    the buckets (one record <-> two): each swarm comes at most once, and untouched ones once."""
    store = MemoryStore()
    for n in range(3000):
        for j in range(1 + n % 2):
            await store.announce(ihn(n), pid(j), v4(j), False, 0, False)
    seen: list[bytes] = []
    rng = random.Random(3)
    from johnlocke.store.memory import dumped_records

    for batch in store.dump(max_swarms=50):
        seen += [r.info_hash for r in dumped_records(batch)]
        for _ in range(20):  # swarms grow to two records and shrink to one meanwhile
            n = rng.randrange(2000)
            if n % 2:
                await store.remove(ihn(n), pid(1), v4(1), 0)
            else:
                await store.announce(ihn(n), pid(1), v4(1), False, 0, False)
    assert len(seen) == len(set(seen))
    assert set(seen) >= {ihn(n) for n in range(2000, 3000)}
    rows = await store.scrape_all()
    assert len(rows) == len({row[0] for row in rows}) == 3000


def test_runs_choose_distinct_slots_never_skip_and_exactly_k():
    rng = random.Random(0)
    for n in list(range(0, 40)) + [97, 100, 1000]:
        for skip in {0, n // 2, n - 1, n, n + 5}:
            if skip < 0:
                continue
            avail = n - 1 if skip < n else n
            for k in {0, 1, 2, 7, 8, 9, 15, 16, 17, 49, 50, avail - 1, avail, avail + 3}:
                if k < 0:
                    continue
                slots = [
                    s
                    for _, first, count in runs(0, n, skip, k, rng)
                    for s in range(first, first + count)
                ]
                assert len(slots) == len(set(slots)) == min(max(k, 0), max(avail, 0))
                assert all(0 <= s < n and s != skip for s in slots), (n, skip, k)


def test_runs_pick_every_slot_equally_often():
    rng = random.Random(1)
    n, skip, k, rounds = 100, 37, 50, 4000
    hits = [0] * n
    for _ in range(rounds):
        for _, first, count in runs(0, n, skip, k, rng):
            for s in range(first, first + count):
                hits[s] += 1
    assert hits[skip] == 0
    expected = rounds * k / (n - 1)
    assert all(abs(h - expected) < expected * 0.15 for i, h in enumerate(hits) if i != skip)


async def test_per_ip_counts_are_exact_and_small_on_a_big_swarm():
    """max_per_ip=1 over many distinct addresses refuses nobody, and costs ~12-32 B per IP."""
    store = MemoryStore()
    n = 20_000
    for i in range(n):
        await store.announce(IH, pid(i), v4(i), False, 0, False, max_per_ip=1)
    swarm = store.swarms[IH]
    assert isinstance(swarm, Swarm) and swarm.ipc is not None
    assert 12 * n <= swarm.ipc.size() <= 32 * n
    assert max(len(seg) for seg in swarm.ipc.segs) <= 8 * _SEG_TARGET  # bounded rehashes
    for i in range(0, n, 7):
        with pytest.raises(ClientError):
            await store.announce(IH, pid(n + i), v4(i, 9), False, 0, False, max_per_ip=1)
    # The table shrinks with the swarm.
    for i in range(n - 1000):
        await store.remove(IH, pid(i), v4(i), 0)
    assert swarm.ipc.size() <= 32 * 1000
    await store.announce(IH, pid(2 * n), v4(5), False, 0, False, max_per_ip=1)
    with pytest.raises(ClientError):
        await store.announce(IH, pid(2 * n + 1), v4(n - 1, 9), False, 0, False, max_per_ip=1)


async def test_top_swarms_yields_to_the_event_loop_on_many_swarms():
    store = MemoryStore()
    for n in range(50_000):
        await store.announce(ihn(n), pid(n), v4(n), False, 0, False)
    for n in range(3):  # the biggest swarm, with 4 peers
        await store.announce(ihn(777), pid(100_000 + n), v4(n), True, 0, False)
    async with LoopTurns() as turns:
        top = await store.top_swarms(2)
    assert top[0] == (ihn(777), 3, 1, 0)
    assert len(top) == 2 and top[1][1:] == (0, 1, 0)
    # 50,000 swarms in slices of 20,000: the loop got control between slices.
    assert turns.count >= 2
    assert await store.stats() == (50_000, 3, 50_000, 0, 0, 0, 0)


async def test_a_dual_stack_peer_survives_every_tier_change():
    """A peer with IPv4 and IPv6 records keeps both, counted once, as its swarm grows into a
    Swarm and shrinks back to packed."""
    store = MemoryStore()
    await store.announce(IH, pid(0), v4(0), False, 5, False)
    await store.announce(IH, pid(0), v6(0), False, 5, False)
    for n in range(1, 3 * _SMALL):
        await store.announce(IH, pid(n), v4(n), False, 0, False)
        assert (await store.scrape([IH]))[0][1:] == (0, n + 1, 0)
    view = await store.announce(IH, pid(0), v6(0), True, 5, False)  # completes over IPv6
    assert view.completed and (view.complete, view.incomplete) == (1, 3 * _SMALL - 1)
    for n in range(1, 3 * _SMALL):
        await store.remove(IH, pid(n), v4(n), 0)
    assert type(store.swarms[IH]) is bytes
    assert await store.scrape([IH]) == [(IH, 1, 0, 1)]
    assert await store.stats() == (1, 1, 0, 1, 0, 0, 0)
    await store.remove(IH, pid(0), v4(0), 5)
    assert IH not in store.swarms and await store.scrape([IH]) == [(IH, 1, 0, 1)]
