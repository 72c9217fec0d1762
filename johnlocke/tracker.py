"""Announce and scrape: store + strategy + intervals. No aiohttp here.

The frontend hands over a parsed request and the peer's packed IP (4 or 16 bytes) and gets back
the bencoded answer. A ``ClientError`` raised anywhere below becomes a ``failure reason``; the
store guarantees it changed nothing when it raises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from socket import AF_INET, AF_INET6, inet_ntop
from zlib import crc32

from johnlocke import protocol
from johnlocke.config import Config
from johnlocke.errors import ClientError
from johnlocke.protocol import EVENT_COMPLETED, EVENT_STOPPED, AnnounceRequest
from johnlocke.store import ADDR_LEN, Store
from johnlocke.strategy import StrategySet

log = logging.getLogger("johnlocke.tracker")


class Tracker:
    def __init__(self, config: Config, store: Store) -> None:
        self.store = store
        self.strategies = StrategySet(config.strategy)  # raises StrategyLoadError
        self.rng = random.Random()
        # Sent to clients that did not echo one back (BEP 3 "tracker id"); stable per process.
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
        self._max_scrape = config.scrape.max_hashes

    async def announce(self, req: AnnounceRequest, ip: bytes, trusted: bool = False) -> bytes:
        """Apply one announce from ``ip`` (packed); ``trusted`` if it came via a trusted proxy."""
        if req.ip is not None and (trusted or self._allow_ip_param):
            ip = protocol.parse_ip(req.ip)
        addr = ip + req.port.to_bytes(2, "big")
        key_hash = crc32(req.key) if req.key else 0
        tracker_id = None if req.trackerid else self.tracker_id
        if req.event == EVENT_STOPPED:
            complete, incomplete, downloaded = await self.store.remove(
                req.info_hash, req.peer_id, addr, key_hash
            )
            return protocol.encode_announce(
                self._interval,
                self._min_interval,
                complete,
                incomplete,
                downloaded,
                protocol.EMPTY_STRING,
                protocol.EMPTY_STRING,
                ip,
                tracker_id,
            )
        # left=0 makes a seeder even without event=completed: rtorrent sends "completed" late
        # and aria2/ctorrent often never do. "completed" with bytes left is believed too.
        completed = req.event == EVENT_COMPLETED
        view = await self.store.announce(
            req.info_hash, req.peer_id, addr, req.left == 0 or completed, key_hash, completed
        )
        numwant = self._numwant_default if req.numwant is None else req.numwant
        if numwant > self._numwant_max:
            numwant = self._numwant_max
        chosen = self.strategies.choose(view)
        picks = chosen.strategy.select(view, numwant, self.rng) if numwant else []
        interval = self._interval
        min_interval = self._min_interval
        if chosen.interval is not None:
            wanted = chosen.interval(view)
            if wanted is not None and wanted > 0:
                interval = wanted
                if min_interval > wanted:
                    min_interval = wanted
        if req.compact:
            blob = view.compact(picks)
            if len(blob) > numwant * ADDR_LEN[view.family]:
                blob = blob[: numwant * ADDR_LEN[view.family]]  # a strategy sent too many
            compact = protocol.bstr(blob)
            if view.family:
                peers, peers6 = protocol.EMPTY_STRING, compact
            else:
                peers, peers6 = compact, protocol.EMPTY_STRING
        else:
            peers = protocol.dict_peers_value(
                [_dict_peer(a, p) for a, p in view.peer_list(picks)[:numwant]], req.no_peer_id
            )
            peers6 = protocol.EMPTY_STRING
        return protocol.encode_announce(
            interval,
            min_interval,
            view.complete,
            view.incomplete,
            view.downloaded,
            peers,
            peers6,
            ip,
            tracker_id,
        )

    async def scrape(self, info_hashes: list[bytes]) -> bytes:
        if not info_hashes:
            if not self._full_scrape:
                raise ClientError("full scrape is disabled; ask for one or more info_hash")
            return protocol.encode_scrape(await self.store.scrape_all())
        if len(info_hashes) > self._max_scrape:
            raise ClientError(f"too many info_hash in one scrape (at most {self._max_scrape})")
        # Deduplicate: a bencoded dict must not repeat a key.
        return protocol.encode_scrape(await self.store.scrape(list(dict.fromkeys(info_hashes))))

    # --- housekeeping ----------------------------------------------------------------------

    async def sweep_once(self) -> int:
        cutoff = self.store.now() - self.config.announce.peer_timeout
        return await self.store.sweep(cutoff)

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
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None

    def reload(self, config: Config) -> None:
        # Load every new strategy before swapping anything: a bad section changes nothing.
        # Swarms are untouched; strategies only read them.
        if config.strategy != self.config.strategy:
            self.strategies = StrategySet(config.strategy)
        self._apply(config)


def _dict_peer(addr: bytes, peer_id: bytes) -> tuple[str, int, bytes]:
    """(ip text, port, peer_id) for non-compact answers."""
    family = AF_INET if len(addr) == 6 else AF_INET6
    return inet_ntop(family, addr[:-2]), int.from_bytes(addr[-2:], "big"), peer_id
