"""Announce and scrape: store + strategy + intervals. No aiohttp here.

A frontend (HTTP, UDP, WebSocket) hands over a parsed request and the peer's packed IP (4 or 16
bytes) and gets back an ``Answer`` (or, for a scrape, rows) to encode in its own format. A
``ClientError`` raised anywhere below is what the client is told (HTTP's ``failure reason``, a UDP
error packet); the store guarantees it changed nothing when it raises.

Access rules (``johnlocke.access``) are checked before the store is touched, so a refused
request changes nothing; with nothing to check they cost one attribute test. The abuse limits
([limits]) are options of ``Store.announce``, applied atomically by the store; when all are off
the plain call is made.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from zlib import crc32

from johnlocke.access import Access, AddressBudgets
from johnlocke.bittorrent import (
    EVENT_COMPLETED,
    EVENT_STOPPED,
    AnnounceRequest,
    Answer,
    ScrapeRow,
    parse_ip,
)
from johnlocke.config import Config
from johnlocke.errors import ClientError
from johnlocke.service import cancel_task
from johnlocke.store import Store, SwarmNotFound, SwarmView
from johnlocke.strategy import StrategySet

log = logging.getLogger("johnlocke.tracker")


class Tracker:
    def __init__(self, config: Config, store: Store, access: Access | None = None) -> None:
        self.store = store
        self.strategies = StrategySet(config.strategy)  # raises StrategyLoadError
        # Without an Access service (tests, benchmarks) the tracker is open, or, for a listed or
        # private config, admits nothing: the lists are only read by a started Access.
        self.access = access if access is not None else Access(config, store)
        self.budgets = AddressBudgets()
        self.rng = random.Random()
        # HTTP's BEP 3 "tracker id", sent to clients that did not echo one back; per process.
        self.tracker_id = os.urandom(4).hex().encode()
        self._sweeper: asyncio.Task[None] | None = None
        self._apply(config)

    def _apply(self, config: Config) -> None:
        # Settings are copied to attributes: the hot path reads them on every announce.
        self.config = config
        a = config.announce
        self._interval = a.interval
        self._min_interval = a.min_interval
        self._numwant_default = a.numwant_default
        self._numwant_max = a.numwant_max
        self._allow_ip_param = a.allow_ip_param
        self._full_scrape = config.scrape.full_scrape
        self._full_scrape_interval = config.scrape.full_scrape_interval
        self._max_scrape = config.scrape.max_hashes
        lim = config.limits
        self._hold = a.min_interval if lim.enforce_min_interval else 0
        self._max_per_ip = lim.max_peers_per_ip
        self._max_new_swarms = lim.max_new_swarms_per_ip
        self._limited = bool(self._hold or self._max_per_ip or self._max_new_swarms)

    async def announce(
        self, req: AnnounceRequest, ip: bytes, trusted: bool = False, endpoint: bytes | None = None
    ) -> Answer:
        """Apply one announce from ``ip`` (packed); ``trusted`` if it came via a trusted proxy.

        ``endpoint`` is a WebSocket peer's 8-byte endpoint id (``johnlocke.websocket.relay``):
        the peer is stored under it, in the WebRTC family, instead of ``ip`` and ``req.port``
        (``ip`` still counts for the per-address budgets); a ``compact=0`` answer's peer_list
        then pairs each chosen peer's endpoint with its peer_id."""
        info_hash = req.info_hash
        proto = 0
        if self.access.active:
            info_hash, proto = self.access.admit(info_hash, req.peer_id, req.passkey)
        source = ip
        if req.ip is not None and (trusted or self._allow_ip_param):
            ip = parse_ip(req.ip)
        addr = ip + req.port.to_bytes(2, "big") if endpoint is None else endpoint
        key_hash = crc32(req.key) if req.key else 0
        if req.event == EVENT_STOPPED:
            complete, incomplete, downloaded = await self.store.remove(
                info_hash, req.peer_id, addr, key_hash
            )
            return Answer(
                self._interval, self._min_interval, complete, incomplete, downloaded, b"",
                len(ip) == 16, ip, None, None if req.compact else [],
            )  # fmt: skip
        # left=0 makes a seeder even without event=completed: rtorrent sends "completed" late
        # and aria2/ctorrent often never do. "completed" with bytes left is believed too.
        completed = req.event == EVENT_COMPLETED
        seeder = req.left == 0 or completed
        if self._limited or proto:
            # "completed" is news the swarm needs at once ("stopped" never gets here).
            hold = 0 if completed else self._hold
            view = await self._announce_with_options(
                info_hash, req.peer_id, addr, seeder, key_hash, completed, source, proto, hold
            )
        else:
            view = await self.store.announce(
                info_hash, req.peer_id, addr, seeder, key_hash, completed
            )
        numwant = self._numwant_default if req.numwant is None else req.numwant
        if numwant > self._numwant_max:
            numwant = self._numwant_max
        strategies = self.strategies
        chosen = strategies.choose(view) if strategies.rules else strategies.default
        interval = self._interval
        min_interval = self._min_interval
        if chosen.interval is not None:
            wanted = chosen.interval(view)
            if wanted is not None and wanted > 0:
                interval = wanted
                if min_interval > wanted:
                    min_interval = wanted
        warning = None
        if self._hold and not view.updated:
            if min_interval < self._hold:
                # The swarm's strategy asks for announces sooner than [announce] min_interval:
                # hold by the min interval this client is told. (A held announce changed
                # nothing, so asking again is safe.)
                view = await self._announce_with_options(
                    info_hash,
                    req.peer_id,
                    addr,
                    seeder,
                    key_hash,
                    False,
                    source,
                    proto,
                    min_interval,
                )
            if not view.updated:
                warning = (
                    b"announce not recorded: sent less than the min interval (%d s) after the"
                    b" last one" % min_interval
                )
        picks = chosen.strategy.select(view, numwant, self.rng) if numwant else []
        if req.compact:
            blob = view.compact(picks)
            if len(blob) > numwant * len(addr):
                blob = blob[: numwant * len(addr)]  # a strategy sent too many
            return Answer(
                interval, min_interval, view.complete, view.incomplete, view.downloaded,
                blob, len(ip) == 16, ip, warning,
            )  # fmt: skip
        return Answer(
            interval, min_interval, view.complete, view.incomplete, view.downloaded,
            b"", len(ip) == 16, ip, warning, view.peer_list(picks)[:numwant],
        )  # fmt: skip

    async def _announce_with_options(
        self,
        info_hash: bytes,
        peer_id: bytes,
        addr: bytes,
        seeder: bool,
        key_hash: int,
        completed: bool,
        source: bytes,
        proto: int,
        hold: int,
    ) -> SwarmView:
        """``store.announce`` with the [limits] that are on and the hybrid ``proto``; ``source``
        is the address the request came from (budgets are per sender, whatever ip= said)."""
        cap = self._max_new_swarms
        create = cap == 0 or self.budgets.may_create(source, self.store.now(), cap)
        try:
            view = await self.store.announce(
                info_hash,
                peer_id,
                addr,
                seeder,
                key_hash,
                completed,
                hold=hold,
                max_per_ip=self._max_per_ip,
                create=create,
                proto=proto,
            )
        except SwarmNotFound:
            raise ClientError(
                f"too many new torrents from your address (at most {cap} a minute);"
                " try again in a minute"
            ) from None
        if cap and view.created:
            self.budgets.created_one(source)
        return view

    async def scrape(
        self, info_hashes: list[bytes], passkey: bytes | None = None, ip: bytes | None = None
    ) -> list[ScrapeRow]:
        """The rows to answer a scrape with, one per distinct hash asked (unlisted ones left out in
        listed and private mode), in the order asked; every swarm for a full scrape (no hash).
        ``ip`` (the sender's packed address) is needed for a full scrape's budget."""
        access = self.access
        if not info_hashes:
            if not self._full_scrape:
                raise ClientError("full scrape is disabled; ask for one or more info_hash")
            access.check_passkey(passkey)
            if self._full_scrape_interval and ip is not None:
                wait = self.budgets.full_scrape_wait(
                    ip, self.store.now(), self._full_scrape_interval
                )
                if wait:
                    # No countdown in the reason: failure reasons are counted by their text.
                    raise ClientError(
                        f"one full scrape per {self._full_scrape_interval} s per address;"
                        " try again later"
                    )
            rows = await self.store.scrape_all()
            if access.active:
                rows = access.filter_rows(rows)
            return rows
        if len(info_hashes) > self._max_scrape:
            raise ClientError(f"too many info_hash in one scrape (at most {self._max_scrape})")
        # Deduplicate: a bencoded dict must not repeat a key.
        unique = list(dict.fromkeys(info_hashes))
        if not access.active:
            return await self.store.scrape(unique)
        access.check_passkey(passkey)
        # Hashes that may not be scraped are left out; hybrids are answered under the hash
        # that was asked, from the one swarm both hashes share.
        keys = access.scrape_keys(unique)
        stored = list(dict.fromkeys(k for _, k in keys))
        counts = {row[0]: row[1:] for row in await self.store.scrape(stored)}
        return [(asked, *counts[key]) for asked, key in keys]

    async def leave(self, info_hash: bytes, peer_id: bytes, addr: bytes) -> None:
        """Remove a peer whose transport is gone (a closed WebSocket: ``addr`` is its endpoint),
        without access checks: it joined when it was admitted."""
        await self.store.remove(self.access.rules.alias.get(info_hash, info_hash), peer_id, addr, 0)

    # --- housekeeping ----------------------------------------------------------------------

    async def sweep_once(self) -> int:
        now = self.store.now()
        self.budgets.prune(now, self._full_scrape_interval)
        return await self.store.sweep(now - self.config.announce.peer_timeout)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.announce.sweep_interval)
            try:
                removed = await self.sweep_once()
                if removed:
                    log.debug("sweep forgot %d peers", removed)
            except Exception:
                log.exception("peer sweep failed; will retry")

    # --- Service -------------------------------------------------------------------------

    name = "tracker"

    async def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        await cancel_task(self._sweeper)
        self._sweeper = None

    def reload(self, config: Config) -> None:
        # Load every new strategy before swapping anything: a bad section changes nothing.
        # Swarms are untouched; strategies only read them.
        if config.strategy != self.config.strategy:
            self.strategies = StrategySet(config.strategy)
        self._apply(config)
