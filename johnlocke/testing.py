"""A kit for strategy authors: the promises every strategy must keep, as one call.

    from johnlocke.testing import check_strategy

    def test_my_strategy_keeps_the_contract():
        check_strategy(lambda: MyStrategy(MyStrategy.Options()))

The argument makes a new strategy each time it is called (a class without options will do), so
strategies that remember what they handed out are compared fresh. Call it from a plain (not
async) test: it runs its own event loop.

``check_strategy`` builds real swarms in a memory store (empty, one peer, only seeders, only
leechers, mixed IPv4/IPv6, a few thousand peers), announces as seeders and leechers of both
families and with many ``numwant`` values, and raises ``AssertionError`` describing the first
broken promise:

- it returns a list of picks taken from the view, at most ``numwant`` peers, none twice;
- never the announcer itself, and only peers of the announcer's address family;
- the same picks for the same swarm and the same seeded ``random.Random`` (fresh instances);
- an empty swarm is no error (no peers come back);
- its optional ``interval(swarm)`` returns None or a positive whole number of seconds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from typing import Any

from johnlocke.store.memory import META_LEN, MemoryStore, MemoryView
from johnlocke.strategy import Strategy, interval_hook

_IH = b"\xaa" * 20
NUMWANTS = (1, 2, 5, 8, 9, 30, 50, 200)


def _pid(n: int) -> bytes:
    return b"-KT0001-" + n.to_bytes(12, "big")


def _addr(n: int, v6: bool) -> bytes:
    port = (1024 + n % 60000).to_bytes(2, "big")
    if v6:
        return b"\x20\x01\x0d\xb8" + bytes(8) + n.to_bytes(4, "big") + port
    return bytes([10, (n >> 16) & 255, (n >> 8) & 255, n & 255]) + port


SWARMS: dict[str, list[tuple[bool, bool]]] = {
    # name: [(seeder, ipv6) per peer]; the announcers are added on top.
    "empty": [],
    "one seeder": [(True, False)],
    "one leecher": [(False, False)],
    "only seeders": [(True, False)] * 40,
    "only leechers": [(False, False)] * 40,
    "mixed families": [(n % 3 == 0, n % 4 == 0) for n in range(120)],
    "large": [(n % 4 == 0, n % 10 == 0) for n in range(3000)],
}


async def _build(peers: list[tuple[bool, bool]]) -> MemoryStore:
    store = MemoryStore()
    for n, (seeder, v6) in enumerate(peers):
        await store.announce(_IH, _pid(n), _addr(n, v6), seeder, 0, False)
    return store


def _views(store: MemoryStore) -> Iterator[tuple[str, MemoryView]]:
    loop = asyncio.new_event_loop()
    try:
        for seeder in (False, True):
            for v6 in (False, True):
                n = 900_000 + seeder * 2 + v6
                view = loop.run_until_complete(
                    store.announce(_IH, _pid(n), _addr(n, v6), seeder, 0, False)
                )
                role = "seeder" if seeder else "leecher"
                yield f"{role} on IPv{6 if v6 else 4}", view
    finally:
        loop.close()


def _check_picks(picks: Any, view: MemoryView, numwant: int, where: str) -> int:
    assert isinstance(picks, list), f"{where}: select() returned {type(picks).__name__}, not a list"
    seen = set()
    for pick in picks:
        assert isinstance(pick, tuple) and len(pick) == 3, f"{where}: {pick!r} is not a pick"
        table, first, count = pick
        assert all(isinstance(x, int) for x in pick), f"{where}: {pick!r} is not a pick"
        assert 0 <= table < 4, f"{where}: {pick!r} names no table"
        assert table >> 1 == view.family, f"{where}: {pick!r} is of the other address family"
        size = len(view.swarm.meta[table]) // META_LEN
        assert count >= 0 and 0 <= first and first + count <= size, (
            f"{where}: {pick!r} is outside the table ({size} peers)"
        )
        for slot in range(first, first + count):
            assert (table, slot) != (view.table, view.slot), f"{where}: sent the announcer itself"
            assert (table, slot) not in seen, f"{where}: sent the same peer twice"
            seen.add((table, slot))
    assert len(seen) <= numwant, f"{where}: sent {len(seen)} peers for numwant={numwant}"
    return len(seen)


def check_strategy(make: Callable[[], Strategy], seed: int = 1234) -> None:
    """Raise AssertionError if the strategies ``make()`` returns break a promise."""
    strategy = make()
    assert callable(getattr(strategy, "select", None)), "a strategy needs a select() method"
    hook = interval_hook(strategy)
    for name, peers in SWARMS.items():
        store = asyncio.run(_build(peers))
        others = len(peers) + 3  # the other announcers count too
        for who, view in _views(store):
            for numwant in NUMWANTS:
                where = f"{type(strategy).__name__}, swarm {name!r}, {who}, numwant={numwant}"
                picks = strategy.select(view, numwant, random.Random(seed))
                got = _check_picks(picks, view, numwant, where)
                a = make().select(view, numwant, random.Random(seed))
                b = make().select(view, numwant, random.Random(seed))
                assert a == b, f"{where}: different picks under the same seed"
                if name == "empty" and view.complete + view.incomplete == 1:
                    assert got == 0, f"{where}: peers from an empty swarm"
                assert got <= others
            if hook is not None:
                value = hook(view)
                assert value is None or (isinstance(value, int) and value > 0), (
                    f"{type(strategy).__name__}: interval() returned {value!r}"
                )
