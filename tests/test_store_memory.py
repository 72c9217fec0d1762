"""The memory store against the shared store contract, plus what only it promises."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from johnlocke.errors import ClientError
from johnlocke.store.memory import MemoryStore, runs

from .conftest import LoopTurns
from .store_contract import IH, StoreContract, pid, v4


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def make_store(self):
        return lambda clock: MemoryStore(clock=clock)


async def test_sweep_yields_to_the_event_loop_on_big_swarms():
    clock_t = [0.0]
    store = MemoryStore(clock=lambda: clock_t[0])
    for n in range(60_000):
        await store.announce(IH, pid(n), v4(n), n % 4 == 0, 0, False)
    async with LoopTurns() as turns:
        clock_t[0] += 10
        removed = await store.sweep(store.now())
    assert removed == 60_000
    assert store.swarms == {}
    # 60,000 peers in slices of 20,000: the loop got control between slices.
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


async def test_index_shrinks_after_a_swarm_empties():
    store = MemoryStore()
    for n in range(5000):
        await store.announce(IH, pid(n), v4(n), False, 0, False)
    big = len(store.swarms[IH].index)
    for n in range(4990):
        await store.remove(IH, pid(n), v4(n), 0)
    assert len(store.swarms[IH].index) < big / 16
    assert await store.scrape([IH]) == [(IH, 0, 10, 0)]


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
    assert swarm.ipc is not None
    assert 12 * n <= swarm.ipc.table.itemsize * len(swarm.ipc.table) <= 32 * n
    for i in range(0, n, 7):
        with pytest.raises(ClientError):
            await store.announce(IH, pid(n + i), v4(i, 9), False, 0, False, max_per_ip=1)
    # The table shrinks with the swarm.
    for i in range(n - 100):
        await store.remove(IH, pid(i), v4(i), 0)
    assert len(swarm.ipc.table) <= 512
    await store.announce(IH, pid(2 * n), v4(5), False, 0, False, max_per_ip=1)


async def test_top_swarms_yields_to_the_event_loop_on_many_swarms():
    store = MemoryStore()
    for n in range(50_000):
        await store.announce(n.to_bytes(20, "big"), pid(n), v4(n), False, 0, False)
    for n in range(3):  # the biggest swarm, with 4 peers
        await store.announce((777).to_bytes(20, "big"), pid(100_000 + n), v4(n), True, 0, False)
    async with LoopTurns() as turns:
        top = await store.top_swarms(2)
    assert top[0] == ((777).to_bytes(20, "big"), 3, 1, 0)
    assert len(top) == 2 and top[1][1:] == (0, 1, 0)
    # 50,000 swarms in slices of 20,000: the loop got control between slices.
    assert turns.count >= 2
    assert await store.stats() == (50_000, 3, 50_000, 0, 0)


async def test_small_swarms_have_no_index_and_cross_the_boundary_both_ways():
    store = MemoryStore()
    for n in range(16):
        await store.announce(IH, pid(n), v4(n), n % 3 == 0, 0, False)
    swarm = store.swarms[IH]
    assert swarm.index is None  # small: peer_ids are found by scanning the columns
    for n in range(16, 40):
        await store.announce(IH, pid(n), v4(n), n % 3 == 0, 0, False)
    assert swarm.index is not None
    for n in range(5, 40):
        await store.remove(IH, pid(n), v4(n), 0)
    assert swarm.index is None and swarm.used == 5
    # Every remaining peer is still found (no duplicate on re-announce), as a leecher or seeder.
    for n in range(5):
        await store.announce(IH, pid(n), v4(n), True, 0, False)
    assert await store.scrape([IH]) == [(IH, 5, 0, 3)]
