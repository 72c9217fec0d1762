"""The swarm store: where peers live. One interface, several drivers (memory now, Redis later).

Every driver passes the shared contract suite in ``tests/store_contract.py``.

Peer records
------------
A peer is handed around as one ``bytes`` record laid out as the wire wants it, so that a compact
answer is a join of record prefixes and never a Python object per peer:

    IPv4: addr(4) port(2) peer_id(20) last_seen(4, little-endian) key_hash(4)   = 34 bytes
    IPv6: addr(16) port(2) peer_id(20) last_seen(4, little-endian) key_hash(4)  = 46 bytes

``record[:6]`` (or ``[:18]``) is the BEP 23 / BEP 7 compact form. ``last_seen`` is in the store's
own clock (whole seconds, see ``Store.now``). ``key_hash`` is the CRC-32 of the client's ``key``
parameter (0 when it sent none). ``johnlocke.store.records`` has helpers to read the fields.
"""

from __future__ import annotations

import random
from typing import Protocol

IPV4 = 0
IPV6 = 1
ADDR_LEN = (6, 18)  # compact address + port, per family
RECORD_LEN = (34, 46)


class SwarmView(Protocol):
    """One swarm as one announcing peer sees it, right after its announce was applied.

    ``complete``/``incomplete``/``downloaded`` count the whole swarm (both families, the
    announcing peer included). ``family`` is the announcing peer's address family.
    """

    complete: int
    incomplete: int
    downloaded: int
    family: int
    seeder: bool

    def count(self, seeders: bool) -> int:
        """Peers of that role in the announcer's family, the announcer excluded."""
        ...

    def sample(self, seeders: bool, k: int, rng: random.Random) -> list[bytes]:
        """Up to ``k`` records of that role in the announcer's family, never the announcer.

        Every peer is equally likely to be picked; work is O(k), never O(swarm).
        """
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
