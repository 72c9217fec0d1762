"""The swarm store: where peers live. One interface, two drivers: memory (one process) and Redis.

Every driver passes the shared contract suite in ``tests/store_contract.py``.

Peers, records and families
---------------------------
A peer is its peer_id within a swarm. It holds at most one *record* (an address, the time it
was last seen, the hash of its ``key``) per address family: IPv4, IPv6 and WebRTC. BEP 7
clients announce once per local address with one peer_id, so a dual-stack peer has an IPv4 and
an IPv6 record; a WebTorrent peer's record is in the WebRTC family, whose "address" is an
opaque 8-byte endpoint id chosen by the WebSocket frontend (which process and connection holds
the peer's socket). The family is told by the address length: 6 bytes IPv4 (4 of IP, 2 of
port), 18 IPv6 (16 + 2), 8 WebRTC (``ADDR_LEN``). An announce from family f touches only the
peer's family-f record; the role (seeder or leecher) is the peer's, so all its records move
together when it changes. ``complete``/``incomplete`` count distinct peers: a dual-stack peer
counts once. The store-wide ``StoreStats`` counts records per family instead (addresses).

How peers are handed out
------------------------
An announce returns a ``SwarmView``: the swarm as the announcing peer sees it. Peers are never
materialised as one Python object each on the hot path. A strategy chooses them as ``Pick``
values, ``(table, first, count)`` runs of consecutive peers in one of the view's tables, and the
tracker turns the picks into the answer with ``view.compact(picks)`` (one slice per run: the
store keeps compact addresses contiguously, in wire format) or ``view.peer_list(picks)``.

Tables are numbered ``family << 1 | leecher``: 0 IPv4 seeders, 1 IPv4 leechers, 2 IPv6 seeders,
3 IPv6 leechers, 4 WebRTC seeders, 5 WebRTC leechers. A view only hands out records of the
announcer's family, never the announcer's own: IPv4 and IPv6 announcers never get WebRTC peers,
and a WebRTC announcer gets only WebRTC peers.

When a strategy needs to look at peers (their address, peer_id, last-seen time), it asks for a
bounded pool of ``Candidate`` tuples and returns ``candidate.pick`` for those it keeps.
"""

from __future__ import annotations

import random
from typing import NamedTuple, Protocol

IPV4 = 0
IPV6 = 1
WEBRTC = 2
FAMILIES = 3
TABLES = 2 * FAMILIES
ADDR_LEN = (6, 18, 8)  # the address of a record, per family: IP + port, or a WebRTC endpoint id
FAMILY_BY_LEN = {6: IPV4, 18: IPV6, 8: WEBRTC}

Pick = tuple[int, int, int]
"""``(table, first, count)``: ``count`` consecutive peers of a view's table from slot ``first``."""


class Candidate(NamedTuple):
    """One peer, for strategies that inspect peers before choosing."""

    pick: Pick  # return this to send the peer
    # Compact address: 4 or 16 bytes of IP, then 2 bytes of port (big-endian); for a WebRTC
    # peer its 8-byte endpoint id (``ip`` and ``port`` mean nothing there).
    addr: bytes
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


class StoreStats(NamedTuple):
    """Store-wide counts: swarms, and records (addresses) per table, in the order of table
    numbers. A dual-stack peer counts once in each family it announced from."""

    swarms: int
    seeders_ipv4: int
    leechers_ipv4: int
    seeders_ipv6: int
    leechers_ipv6: int
    seeders_rtc: int = 0
    leechers_rtc: int = 0

    @property
    def seeders(self) -> int:
        return self.seeders_ipv4 + self.seeders_ipv6 + self.seeders_rtc

    @property
    def leechers(self) -> int:
        return self.leechers_ipv4 + self.leechers_ipv6 + self.leechers_rtc

    @property
    def peers(self) -> int:
        return self.seeders + self.leechers


class SwarmView(Protocol):
    """One swarm as one announcing peer sees it, right after its announce was applied.

    ``complete``/``incomplete``/``downloaded`` count the whole swarm (distinct peers of every
    family, the announcer included). ``family`` and ``seeder`` describe the announcer; ``addr``
    and ``peer_id`` are its own; ``info_hash`` names the swarm. Every method works on the
    records of the announcer's family only; none ever hands out the announcer itself, and every
    method's work is bounded by what it returns. A view is read right after the announce that
    made it (the store may change under it at the next call).
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
        """Records of that role in the announcer's family, the announcer excluded."""
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


class SwarmNotFound(LookupError):
    """``Store.announce(..., create=False)`` found no swarm for the info_hash."""


class Store(Protocol):
    """What the tracker needs from wherever swarms are kept.

    Methods are awaitable so a networked driver (Redis) fits; the memory driver never suspends
    per peer. Every method leaves the store unchanged when it raises.

    A swarm's peers and records, as every driver keeps them (see the module docstring):

    - A peer is its peer_id within the swarm, with at most one record per family. An announce
      from family f (the address length tells it) adds or refreshes the family-f record only.
    - The ``key`` rule applies within a family: a peer_id that already has a family-f record
      from another IP (for WebRTC: another endpoint id) is accepted only with the same non-zero
      ``key_hash``, else ``ClientError``; from the same IP, a new port or key simply replaces
      the old. A peer_id with no family-f record gets a new one without any key check against
      its other families.
    - The role is the peer's: an announce that makes it a seeder moves all of its records to
      the seeder tables (and back to the leecher tables likewise), and ``downloaded`` counts a
      completion once per peer.
    - ``complete``/``incomplete`` (views and scrape rows) count distinct peers; ``stats()``
      counts records per family.
    - ``remove`` (event=stopped) from family f removes the family-f record only, under the same
      key rule; the peer stays, and is counted, while another record remains. ``sweep``
      expires each record by its own last_seen. ``max_per_ip`` counts records per IP (an IPv6
      address by its /64, a WebRTC record by its endpoint id).
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
        *,
        hold: int = 0,
        max_per_ip: int = 0,
        create: bool = True,
        proto: int = 0,
    ) -> SwarmView:
        """Add or refresh the peer's record of ``addr``'s family; return the swarm as it sees it.

        ``addr`` is 6 (IPv4), 18 (IPv6) or 8 (WebRTC) bytes; another length is a ``ValueError``.
        The key rule and the roles are as described above. A known leecher (in any family)
        that comes back as a seeder increments the swarm's ``downloaded`` once; so does an
        unknown peer that arrives as a seeder with ``completed_event`` (it finished while the
        store did not know it). A missing swarm is created.

        The abuse limits (all off at their defaults):

        - ``hold``: a record whose last announce is less than ``hold`` seconds old changes
          nothing at all (address, role, last_seen stay); the announce gets the swarm as it
          is, and the view's ``updated`` is False. A new record is never held.
        - ``max_per_ip``: a new record is refused with ``ClientError`` when its IP already has
          that many records in the swarm. A driver may count approximately, but only ever too
          many, never too few.
        - ``create=False``: a swarm the store does not hold is not created; ``SwarmNotFound``
          is raised instead.

        Hybrid torrents (BEP 52): the tracker keeps one swarm for both info-hashes and says with
        ``proto`` (1: v1, 2: v2; 0: not a hybrid) which one this announce used. The store
        remembers, per peer, every hash it announced under, and the view's ``compact``,
        ``peer_list`` and ``candidates`` leave out peers that did not announce under the same
        one (``count``, ``sample`` and ``describe`` still include them, so a strategy's picks
        and their descriptions line up). A hybrid-aware client greets a peer with the hash of
        the answer that named it, so a v1-only peer named in a v2 answer would be greeted with
        the v2 hash and hang up.

        Besides the ``SwarmView`` attributes, the view tells what this announce did:
        ``completed`` (it counted a download), ``updated`` (False when held) and ``created``
        (it created the swarm).
        """
        ...

    async def remove(
        self, info_hash: bytes, peer_id: bytes, addr: bytes, key_hash: int
    ) -> tuple[int, int, int]:
        """Remove the peer's record of ``addr``'s family (event=stopped); return the swarm's
        (complete, incomplete, downloaded).

        An unknown swarm, peer or record is not an error (zeros or the current counts come back).
        A peer_id whose record is from another IP, sent without its key, is refused with
        ``ClientError`` and stays. The peer's records in other families stay. An address of no
        family is a ``ValueError``, as in ``announce``.
        """
        ...

    async def scrape(self, info_hashes: list[bytes]) -> list[tuple[bytes, int, int, int]]:
        """(info_hash, complete, incomplete, downloaded) per hash; unknown hashes give zeros."""
        ...

    async def scrape_all(self) -> list[tuple[bytes, int, int, int]]:
        """The same for every swarm the store holds."""
        ...

    async def drop(self, info_hash: bytes) -> bool:
        """Forget a swarm and all its peers (a torrent no longer tracked); False if unknown."""
        ...

    async def sweep(self, cutoff: int) -> int:
        """Forget records last seen before ``cutoff`` and drop empty swarms; return how many
        records.

        Runs in slices: it never holds the event loop for more than a few milliseconds.
        """
        ...

    async def stats(self) -> StoreStats:
        """Swarm and record counts over the whole store (records per family and role).

        Read on every metrics scrape and every few seconds for the status page's plots, so it
        must be cheap whatever the store's size (the memory store keeps running totals).
        """
        ...

    async def top_swarms(self, n: int) -> list[tuple[bytes, int, int, int]]:
        """The ``n`` swarms with the most peers, most first, as scrape rows.

        May visit every swarm: it is for the stats page, not the hot path, and must yield to
        the event loop as ``sweep`` does.
        """
        ...

    async def close(self) -> None: ...
