"""The swarm store: where peers live. One interface, several drivers (memory now, Redis later).

Every driver passes the shared contract suite in ``tests/store_contract.py``.

How peers are handed out
------------------------
An announce returns a ``SwarmView``: the swarm as the announcing peer sees it. Peers are never
materialised as one Python object each on the hot path. A strategy chooses them as ``Pick``
values, ``(table, first, count)`` runs of consecutive peers in one of the view's tables, and the
tracker turns the picks into the answer with ``view.compact(picks)`` (one slice per run: the
store keeps compact addresses contiguously, in wire format) or ``view.peer_list(picks)``.

Tables are numbered ``family << 1 | leecher``: 0 IPv4 seeders, 1 IPv4 leechers, 2 IPv6 seeders,
3 IPv6 leechers. A view only hands out peers of the announcer's family.

When a strategy needs to look at peers (their address, peer_id, last-seen time), it asks for a
bounded pool of ``Candidate`` tuples and returns ``candidate.pick`` for those it keeps.
"""

from __future__ import annotations

import random
from typing import NamedTuple, Protocol

IPV4 = 0
IPV6 = 1
ADDR_LEN = (6, 18)  # compact address + port, per family

Pick = tuple[int, int, int]
"""``(table, first, count)``: ``count`` consecutive peers of a view's table from slot ``first``."""


class Candidate(NamedTuple):
    """One peer, for strategies that inspect peers before choosing."""

    pick: Pick  # return this to send the peer
    addr: bytes  # compact address: 4 or 16 bytes of IP, then 2 bytes of port (big-endian)
    peer_id: bytes
    seeder: bool
    last_seen: int  # in the store's clock (``Store.now()``), whole seconds

    @property
    def ip(self) -> bytes:
        """The packed IP address (4 or 16 bytes)."""
        return self.addr[:-2]

    @property
    def port(self) -> int:
        return int.from_bytes(self.addr[-2:], "big")


class SwarmView(Protocol):
    """One swarm as one announcing peer sees it, right after its announce was applied.

    ``complete``/``incomplete``/``downloaded`` count the whole swarm (both families, the
    announcer included). ``family`` and ``seeder`` describe the announcer; ``addr`` and
    ``peer_id`` are its own; ``info_hash`` names the swarm. No method ever hands out the
    announcer itself, and every method's work is bounded by what it returns.
    """

    info_hash: bytes
    peer_id: bytes
    addr: bytes
    complete: int
    incomplete: int
    downloaded: int
    family: int
    seeder: bool
    now: int

    def count(self, seeders: bool) -> int:
        """Peers of that role in the announcer's family, the announcer excluded."""
        ...

    def sample(self, seeders: bool, k: int, rng: random.Random) -> list[Pick]:
        """``min(k, count(seeders))`` distinct peers of that role, as picks.

        Every peer is equally likely to be chosen (probability k/count). For speed the choice is
        made in short runs of neighbouring slots spread evenly over the table from a random
        rotation, so the work is O(k/8) slices, with no copy or shuffle of the table.
        """
        ...

    def window(self, seeders: bool, start: int, k: int) -> list[Pick]:
        """``min(k, count(seeders))`` consecutive peers of that role in the store's order.

        Positions count from 0 to ``count(seeders) - 1`` (the announcer is not counted) and
        wrap around, so ``start`` may be any integer: a strategy can walk a swarm round-robin.
        """
        ...

    def candidates(self, seeders: bool, limit: int, rng: random.Random) -> list[Candidate]:
        """Up to ``limit`` distinct peers of that role (a uniform sample, as ``sample``)."""
        ...

    def describe(self, picks: list[Pick]) -> list[Candidate]:
        """The peers behind some picks, one ``Candidate`` each."""
        ...

    def last_seen(self, picks: list[Pick]) -> list[int]:
        """When each picked peer last announced (store clock), one value per peer, in order."""
        ...

    def compact(self, picks: list[Pick]) -> bytes:
        """The picked peers' compact addresses, concatenated (the BEP 23/7 peer string)."""
        ...

    def peer_list(self, picks: list[Pick]) -> list[tuple[bytes, bytes]]:
        """(compact address, peer_id) for each picked peer, for non-compact answers."""
        ...


class Store(Protocol):
    """What the tracker needs from wherever swarms are kept.

    Methods are awaitable so a networked driver (Redis) fits; the memory driver never suspends
    per peer. Every method leaves the store unchanged when it raises.
    """

    def now(self) -> int:
        """The store's clock in whole seconds, the unit of ``last_seen``."""
        ...

    async def announce(
        self,
        info_hash: bytes,
        peer_id: bytes,
        addr: bytes,
        seeder: bool,
        key_hash: int,
        completed_event: bool,
    ) -> SwarmView:
        """Add or refresh a peer and return its swarm as it sees it.

        ``addr`` is the 6- or 18-byte compact address. A peer_id already in the swarm from another
        IP is accepted only with the same non-zero ``key_hash``, otherwise ``ClientError``. A
        known leecher that comes back as a seeder increments the swarm's ``downloaded`` once; so
        does an unknown peer that arrives as a seeder with ``completed_event`` (it finished
        while the store did not know it). A missing swarm is created.
        """
        ...

    async def remove(
        self, info_hash: bytes, peer_id: bytes, addr: bytes, key_hash: int
    ) -> tuple[int, int, int]:
        """Remove a peer (event=stopped); return the swarm's (complete, incomplete, downloaded).

        An unknown swarm or peer is not an error (zeros or the current counts come back). A peer_id
        from another IP without its key is refused with ``ClientError`` and stays.
        """
        ...

    async def scrape(self, info_hashes: list[bytes]) -> list[tuple[bytes, int, int, int]]:
        """(info_hash, complete, incomplete, downloaded) per hash; unknown hashes give zeros."""
        ...

    async def scrape_all(self) -> list[tuple[bytes, int, int, int]]:
        """The same for every swarm the store holds."""
        ...

    async def sweep(self, cutoff: int) -> int:
        """Forget peers last seen before ``cutoff`` and drop empty swarms; return how many peers.

        Runs in slices: it never holds the event loop for more than a few milliseconds.
        """
        ...

    async def stats(self) -> tuple[int, int, int]:
        """(swarms, seeders, leechers) over the whole store."""
        ...

    async def close(self) -> None: ...
