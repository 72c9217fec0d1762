"""The Redis swarm store: one swarm registry shared by every tracker process and machine.

Theory of operation
-------------------
Each announce is one ``FCALL`` of a Lua function (``redis_store.lua``, a Redis Functions
library): the upsert (key protection, the role move, the completion counted once, the
``[limits]`` options), the counts, and a bounded random pool of the announcer's family's peers
come back in one reply, from which a ``RedisView`` serves the strategy without another round
trip.

Keys. A swarm is a handful of keys sharing the hash tag ``{<hex info_hash>}``, so it lives in
one Cluster slot and one function call can touch all of it::

    P{hex}:m      hash: c, i (distinct seeders, leechers), d (downloaded), e (TTL refresh time),
                  x (index built), 0..5 (records per table)
    P{hex}:0..5   strings, one per table (family << 1 | leecher): fixed-size records
                  peer_id(20) addr(6/18/8) last_seen(u32) key(u32), dense as in the memory store
    P{hex}:i      hash: peer_id -> its slot in each family's table (swarms of more than 16
                  records; a smaller one is searched, which costs less than keeping an index)
    P{hex}:a      hash: peers per IP (/64 for IPv6), only in swarms where max_per_ip was used

Tables as strings, like the memory store's columns, keep a peer at 34 bytes (IPv4) plus its
swarm's share of the keys (~120 B/peer in all for swarms of 10), and make a pool a few GETRANGEs:
passing Redis values into Lua costs by the byte, one value per peer would cost by the peer. The
key's top two bits are the hybrid hashes the peer used, as in the memory store.

A peer is its peer_id: it has at most one record per family, and its role is the peer's, so a
role change moves all its records; ``c``/``i`` count peers, the store-wide totals count records.

Totals. ``stats()`` must be cheap, so the functions keep counters: per *bucket* a hash
``P#...:n`` (``s`` swarms, ``0``..``5`` records per table) and a registry ``P#...:r``
(info_hash -> record counts per table). Without Cluster there is one bucket (``P#:``); with
Cluster one per slot, tagged so that it shares the swarm's slot (a call touches one slot only).
Every swarm key carries a TTL (``peer_timeout`` plus margins), refreshed by announces about once
a minute and for all of a swarm's keys at once, so an abandoned swarm disappears whole even if
no tracker sweeps; the registry remembers its record counts, so the next sweep (or the swarm's
next announce) takes it out of the totals exactly, and when every swarm is gone the bucket
expires too.

Sweeps walk the registry in pages (HSCAN) and run the sweep function on each swarm of a page
(one pipeline), each call examining at most ``_SWEEP_BUDGET`` records by their last-seen times
and handing back a cursor. Scrape of many hashes is one pipeline of HMGETs; a full scrape and
``top_swarms`` page through the registry the same way.

Round trips. redis-py's per-command path costs ~110 us of CPU per call here, mostly set-up
around one small read and write (a task and a timeout per call); sending the calls that arrive
together as one pipeline on a connection we hold costs ~10-20 us each. So calls go through
``_Batcher``: a call queues its command, and up to ``_WIDTH`` flushers send what is queued as
one write and read the replies in order (redis-py's connections and hiredis parser underneath;
hiredis halves the client's cost per announce). On a Cluster the same runs per primary, the
node chosen from redis-py's slot map; a redirected reply (MOVED/ASK after a reshard) is sent
again through redis-py's cluster client, which follows it and refreshes the map. (redis-py's
cluster pipeline would cost ~230 us per announce here, the per-node pipelines ~40 us.)

Faults. Every call is answered within ``timeout``; any Redis or connection error becomes
``StoreUnavailable``, a ``ClientError`` that tells the client to come back later, and nothing
else. Errors are counted (``errors``, ``/metrics``) and logged at most once a minute; a broken
connection is dropped and the next call makes a new one, so the store recovers by itself when
Redis is back, functions included ("Function not found" loads the library again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from importlib import resources
from struct import Struct
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.asyncio import ConnectionPool
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

from johnlocke.errors import ClientError
from johnlocke.store import FAMILY_BY_LEN, Candidate, Pick, StoreStats, SwarmNotFound
from johnlocke.store.memory import runs, window

log = logging.getLogger("johnlocke.store.redis")

_SOURCE = resources.files("johnlocke.store").joinpath("redis_store.lua").read_text()
# The library and its functions are named after a hash of the source: trackers of different
# versions can share one Redis, each calling its own functions.
_VERSION = hashlib.sha1(_SOURCE.encode()).hexdigest()[:12]
LIBRARY = _SOURCE.replace("__LIBRARY__", f"johnlocke_{_VERSION}").replace(
    "__PREFIX__", f"jl{_VERSION}_"
)
FN_ANNOUNCE, FN_REMOVE, FN_SWEEP, FN_DROP, FN_TOTALS = (
    f"jl{_VERSION}_{name}".encode() for name in ("announce", "remove", "sweep", "drop", "totals")
)

UNAVAILABLE = "tracker temporarily unavailable (its swarm store is not answering); try again later"
KEY_REFUSED = "peer_id is in use from another address (send the same key)"

_FAMILY = FAMILY_BY_LEN  # address length -> family
_KEY_MASK = (1 << 30) - 1
# now, key, hold, ttl, pool, cap, proto, seeder, completed, create, a random number for the pool
_NUMS = Struct("<IIIIIBBBBBI")
_U32 = Struct("<I")
_SWEEP_ARGS = Struct("<IIII")  # cutoff, budget, cursor: table, slot
_SWEEP_BUDGET = 2000  # records one sweep call examines at most (~1 ms of Redis time)
_FROM_END = 0xFFFF_FFFF
_PAGE = 500  # swarms per page of a sweep, full scrape or top_swarms
_WIDTH = 2  # flushers (connections) per store
_MAX_BATCH = 128  # commands per pipeline
_LOG_EVERY = 60.0  # seconds between two log lines about store errors


class StoreUnavailable(ClientError):
    """Redis did not answer in time, or refused: the client is asked to come back later."""

    def __init__(self) -> None:
        super().__init__(UNAVAILABLE)


def _pack(*args: bytes) -> bytes:
    """One command in RESP, as Redis reads it."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(out)


def _slot_tags() -> list[bytes]:
    """For each Cluster slot, a short hash tag that maps to it (for the per-slot buckets)."""
    tags: list[bytes | None] = [None] * 16384
    left = 16384
    n = 0
    while left:
        tag = b"%x" % n
        s = key_slot(tag)
        if tags[s] is None:
            tags[s] = tag
            left -= 1
        n += 1
    return tags  # type: ignore[return-value]


class _Batcher:
    """Queue calls and send them as pipelines: up to ``width`` batches in flight at once.

    ``flush(items, deadline)`` sends a batch and returns one result (or exception object) per
    item, or raises. Every call is answered within ``timeout`` of its submission: a batch must
    be done by its oldest call's deadline, and calls that waited too long in the queue fail
    without being sent (one timer per batch, none per call).
    """

    def __init__(
        self,
        flush: Callable[[list[Any], float], Any],
        timeout: float,
        width: int = _WIDTH,
        max_batch: int = _MAX_BATCH,
    ) -> None:
        self._flush = flush
        self.timeout = timeout
        self.width = width
        self.max_batch = max_batch
        self.queue: list[tuple[Any, asyncio.Future[Any], float]] = []
        self.running = 0
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    def submit(self, item: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.queue.append((item, fut, loop.time() + self.timeout))
        if self.running < self.width:
            self.running += 1
            task = loop.create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.queue:
                batch = self.queue[: self.max_batch]
                del self.queue[: self.max_batch]
                now = loop.time()
                live = []
                for entry in batch:
                    if entry[2] <= now:
                        if not entry[1].done():
                            entry[1].set_exception(TimeoutError("waited too long to be sent"))
                    elif not entry[1].done():
                        live.append(entry)
                if not live:
                    continue
                try:
                    results = await self._flush([e[0] for e in live], live[0][2])
                except BaseException as exc:
                    err = exc if isinstance(exc, Exception) else RedisError("cancelled")
                    for _, fut, _ in live:
                        if not fut.done():
                            fut.set_exception(err)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut, _), result in zip(live, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self.running -= 1

    def fail_all(self, exc: Exception) -> None:
        queue, self.queue = self.queue, []
        for _, fut, _ in queue:
            if not fut.done():
                fut.set_exception(exc)


class _SingleLink:
    """Pipelines of packed commands on connections held from redis-py (one Redis server)."""

    def __init__(self, make_connection: Callable[[], Any], timeout: float) -> None:
        self.make_connection = make_connection
        self.timeout = timeout
        self.idle: list[Any] = []
        self.batcher = _Batcher(self._flush, timeout)

    @classmethod
    def from_url(cls, url: str, timeout: float) -> _SingleLink:
        pool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=None,  # every batch runs under our own deadline instead
            retry=Retry(NoBackoff(), 0),
            protocol=2,  # replies as lists, whatever redis-py's default
        )
        return cls(pool.make_connection, timeout)

    async def _flush(self, packed: list[bytes], deadline: float) -> list[Any]:
        conn = self.idle.pop() if self.idle else self.make_connection()
        results: list[Any] = []
        try:
            async with asyncio.timeout_at(deadline):
                if not conn.is_connected:
                    await conn.connect()
                await conn.send_packed_command(b"".join(packed), check_health=False)
                for _ in packed:
                    try:
                        results.append(await conn.read_response())
                    except ResponseError as exc:
                        results.append(exc)
        except BaseException:
            # Replies may still be on their way: this connection can never be trusted again.
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise
        self.idle.append(conn)
        return results

    def call(self, *args: bytes) -> asyncio.Future[Any]:
        return self.batcher.submit(_pack(*args))

    async def close(self) -> None:
        self.batcher.fail_all(RedisError("closed"))
        idle, self.idle = self.idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.disconnect()


# Replies that say the slot is served elsewhere (or not at all, for now).
_REDIRECTED = (AskError, TryAgainError, ClusterDownError)


class _ClusterLink:
    """The same on a Redis Cluster: a ``_SingleLink`` per primary, chosen by the key's slot
    from redis-py's slot map; a redirected reply (the slots moved) is sent again through
    redis-py's own cluster client, which follows MOVED/ASK and refreshes the map."""

    def __init__(self, url: str, timeout: float) -> None:
        self.client = RedisCluster.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )
        self.timeout = timeout
        self.nodes: dict[str, _SingleLink] = {}
        self._ready = False

    async def ready(self) -> None:
        if not self._ready:
            async with asyncio.timeout(self.timeout):
                await self.client.initialize()
            self._ready = True

    def _link(self, node: Any) -> _SingleLink:
        link = self.nodes.get(node.name)
        if link is None:
            kwargs = dict(node.connection_kwargs, socket_timeout=None)
            link = self.nodes[node.name] = _SingleLink(
                lambda: node.connection_class(**kwargs), self.timeout
            )
        return link

    async def call(self, *args: bytes) -> Any:
        await self.ready()
        key = args[3] if args[0] in (b"FCALL", b"FCALL_RO") else args[1]
        node = self.client.nodes_manager.get_node_from_slot(key_slot(key))
        result = await self._link(node).call(*args)
        if isinstance(result, _REDIRECTED):
            async with asyncio.timeout(self.timeout):
                try:
                    # redis-py's cluster client looks the command up by its name as text.
                    result = await self.client.execute_command(args[0].decode(), *args[1:])
                except ResponseError as exc:
                    result = exc
        return result

    async def close(self) -> None:
        for link in self.nodes.values():
            await link.close()
        with contextlib.suppress(Exception):
            await self.client.aclose()


_RUNS: dict[tuple[int, int], Struct] = {}


def _addresses(width: int, count: int) -> Struct:
    """A Struct that reads the addresses of ``count`` consecutive records (from the first
    record's address on): ``width`` bytes, then skip the record's other 28."""
    st = _RUNS.get((width, count))
    if st is None:
        if len(_RUNS) > 4096:
            _RUNS.clear()
        st = _RUNS[width, count] = Struct(f"{width}s28x" * (count - 1) + f"{width}s")
    return st


class RedisView:
    """One announcer's view of its swarm (``johnlocke.store.SwarmView``), from the script's
    reply: the counts, and a uniform random pool of up to ``pool`` (+1) records per role of
    the announcer's family, in two blobs of fixed-size records ``peer_id + addr + seen + key``.

    ``count`` is the true number of peers; ``sample``, ``window`` and ``candidates`` draw from
    the pool (the whole table when it is no larger than the pool), so a strategy asking for more
    than ``pool`` peers of one role gets at most ``pool``.
    """

    __slots__ = (
        "info_hash",
        "peer_id",
        "addr",
        "complete",
        "incomplete",
        "downloaded",
        "family",
        "seeder",
        "now",
        "completed",
        "updated",
        "created",
        "proto",
        "table",
        "sizes",
        "blobs",
        "skips",
        "width",
        "stride",
    )

    def __init__(
        self,
        info_hash: bytes,
        peer_id: bytes,
        addr: bytes,
        reply: list[Any],
        now: int,
        proto: int,
    ) -> None:
        _, c, i, d, ns, nl, role, counted, updated, created, ps, pl = reply
        w = len(addr)
        fam = _FAMILY[w]
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.addr = addr
        self.complete = c
        self.incomplete = i
        self.downloaded = d
        self.family = fam
        self.seeder = role == 0
        self.now = now
        self.completed = counted == 1
        self.updated = updated == 1
        self.created = created == 1
        self.proto = proto
        self.table = fam << 1 | role
        self.sizes = (ns, nl)
        self.blobs = (ps, pl)
        self.width = w
        stride = self.stride = 28 + w
        # The announcer's own slot in its table's pool (the pool length if it is not there).
        own = pl if role else ps
        at = own.find(peer_id)
        while at >= 0 and at % stride:
            at = own.find(peer_id, at + 1)
        skip = len(own) // stride if at < 0 else at // stride
        self.skips = (len(ps) // stride, skip) if role else (skip, len(pl) // stride)

    def count(self, seeders: bool) -> int:
        r = 0 if seeders else 1
        return self.sizes[r] - (r == (self.table & 1))

    def sample(self, seeders: bool, k: int, rng: random.Random) -> list[Pick]:
        r = 0 if seeders else 1
        n = len(self.blobs[r]) // self.stride
        return runs(self.family << 1 | r, n, self.skips[r], k, rng)

    def window(self, seeders: bool, start: int, k: int) -> list[Pick]:
        r = 0 if seeders else 1
        n = len(self.blobs[r]) // self.stride
        return window(self.family << 1 | r, n, self.skips[r], start, k)

    def candidates(self, seeders: bool, limit: int, rng: random.Random) -> list[Candidate]:
        found = self.describe(self.sample(seeders, limit, rng))
        if self.proto:
            return [c for c in found if self._speaks(c.pick[0], c.pick[1])]
        return found

    def _speaks(self, t: int, s: int) -> bool:
        blob = self.blobs[t & 1]
        key = _U32.unpack_from(blob, s * self.stride + 24 + self.width)[0]
        return bool(key >> 30 & self.proto)

    def describe(self, picks: list[Pick]) -> list[Candidate]:
        out = []
        w = self.width
        stride = self.stride
        for t, first, count in picks:
            blob = self.blobs[t & 1]
            seeder = not t & 1
            for s in range(first, first + count):
                o = s * stride
                out.append(
                    Candidate(
                        (t, s, 1),
                        blob[o + 20 : o + 20 + w],
                        blob[o : o + 20],
                        seeder,
                        _U32.unpack_from(blob, o + 20 + w)[0],
                    )
                )
        return out

    def last_seen(self, picks: list[Pick]) -> list[int]:
        out = []
        off = 20 + self.width
        stride = self.stride
        for t, first, count in picks:
            blob = self.blobs[t & 1]
            for s in range(first, first + count):
                out.append(_U32.unpack_from(blob, s * stride + off)[0])
        return out

    def compact(self, picks: list[Pick]) -> bytes:
        w = self.width
        stride = self.stride
        proto = self.proto
        out: list[bytes] = []
        for t, first, count in picks:
            blob = self.blobs[t & 1]
            o = first * stride + 20
            if not proto:
                if count > 0:  # one C call takes the addresses out of a run of records
                    out += _addresses(w, count).unpack_from(blob, o)
                continue
            end = o + count * stride
            for p in range(o, end, stride):
                if _U32.unpack_from(blob, p + w + 4)[0] >> 30 & proto:
                    out.append(blob[p : p + w])
        return b"".join(out)

    def peer_list(self, picks: list[Pick]) -> list[tuple[bytes, bytes]]:
        out = []
        w = self.width
        stride = self.stride
        proto = self.proto
        for t, first, count in picks:
            blob = self.blobs[t & 1]
            for s in range(first, first + count):
                o = s * stride
                if proto and not _U32.unpack_from(blob, o + 24 + w)[0] >> 30 & proto:
                    continue
                out.append((blob[o + 20 : o + 20 + w], blob[o : o + 20]))
        return out


class RedisStore:
    """Swarms in Redis (``johnlocke.store.Store``), shared by every process that uses the same
    ``url`` and ``prefix``."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        cluster: bool = False,
        prefix: str = "jl:",
        timeout: float = 2.0,
        pool: int = 200,
        ttl: int = 3960 + 600,
        sweep_lease: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the prefix must not contain { or }")
        self.url = url
        self.cluster = cluster
        self.prefix = prefix.encode()
        self.timeout = timeout
        self.pool = pool
        self.ttl = ttl
        # With a lease, one sweep per lease period among all processes sharing the prefix.
        self.sweep_lease = sweep_lease
        self._clock = clock
        self._link: _SingleLink | _ClusterLink = (
            _ClusterLink(url, timeout) if cluster else _SingleLink.from_url(url, timeout)
        )
        self._tags = _slot_tags() if cluster else None
        self._nums = _NUMS.pack
        self._rng = random.Random()
        # Health, for /metrics and the log.
        self.up: bool | None = None  # unknown until the first call
        self.errors = 0
        self._logged_at = -_LOG_EVERY
        self._logged_errors = 0
        self._outage_from = 0
        self._last_stats = StoreStats(*([0] * len(StoreStats._fields)))
        self._totals_pending: asyncio.Future[list[int]] | None = None
        self._loading: asyncio.Future[None] | None = None

    def now(self) -> int:
        return int(self._clock())

    # --- keys --------------------------------------------------------------------------------

    def _keys(self, info_hash: bytes) -> tuple[bytes, bytes]:
        """(the swarm's meta key, its bucket's counter key)."""
        tag = info_hash.hex().encode()
        meta = b"%b{%b}:m" % (self.prefix, tag)
        if self._tags is None:
            return meta, self.prefix + b"#:n"
        return meta, b"%b#{%b}:n" % (self.prefix, self._tags[key_slot(tag)])

    def _bucket_keys(self, suffix: bytes) -> list[bytes]:
        if self._tags is None:
            return [self.prefix + b"#:" + suffix]
        return [b"%b#{%b}:%b" % (self.prefix, tag, suffix) for tag in self._tags]

    # --- calls -------------------------------------------------------------------------------

    def _fault(self, exc: BaseException) -> StoreUnavailable:
        """Count and (at most once a minute) log a failed call; the error the client gets."""
        self.errors += 1
        was_up = self.up
        if was_up is not False:
            self._outage_from = self.errors - 1
        self.up = False
        now = time.monotonic()
        if was_up is not False or now - self._logged_at >= _LOG_EVERY:
            what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if was_up is False:
                log.error(
                    "swarm store at %s still unavailable: %d failed calls in the last %d s"
                    " (last: %s)",
                    self._where(),
                    self.errors - self._logged_errors,
                    round(now - self._logged_at),
                    what,
                )
            else:
                log.error(
                    "swarm store at %s unavailable (%s); announces and scrapes are answered"
                    " 'temporarily unavailable' until it is back",
                    self._where(),
                    what,
                )
            self._logged_at = now
            self._logged_errors = self.errors
        return StoreUnavailable()

    def _ok(self) -> None:
        if self.up is not True:
            if self.up is False:
                log.warning(
                    "swarm store at %s is back (%d failed calls meanwhile)",
                    self._where(),
                    self.errors - self._outage_from,
                )
            self.up = True

    def _where(self) -> str:
        url = self.url
        if "@" in url:  # never log a password
            scheme, _, rest = url.partition("://")
            url = f"{scheme}://***@{rest.rpartition('@')[2]}"
        return url

    async def _call(self, *args: bytes) -> Any:
        """One command through the batcher, bounded by the timeout; raises StoreUnavailable."""
        try:
            result = await self._link.call(*args)
            if _not_loaded(result):  # a new or restarted Redis: load the library
                await self._load()
                result = await self._link.call(*args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._fault(exc) from None
        if isinstance(result, Exception):  # an error reply
            raise self._fault(result)
        self._ok()
        return result

    def _fcall(self, fn: bytes, meta: bytes, bucket: bytes, *args: bytes) -> Awaitable[Any]:
        # A plain function handing back _call's coroutine: no extra frame per announce.
        return self._call(b"FCALL", fn, b"2", meta, bucket, *args)

    async def _load(self) -> None:
        """FUNCTION LOAD REPLACE on the server (every primary of a Cluster), once for all the
        calls that found it missing at the same time."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(asyncio.wait_for(self._load_now(), self.timeout))
            self._loading.add_done_callback(self._loaded)
        await asyncio.shield(self._loading)

    def _loaded(self, fut: asyncio.Future[None]) -> None:
        self._loading = None
        if not fut.cancelled():
            fut.exception()  # retrieved: the awaiting calls handle it

    async def _load_now(self) -> None:
        link = self._link
        if isinstance(link, _ClusterLink):
            await link.ready()
            for node in link.client.get_primaries():
                await link.client.execute_command(
                    "FUNCTION", "LOAD", "REPLACE", LIBRARY, target_nodes=node
                )
            return
        result = await link.call(b"FUNCTION", b"LOAD", b"REPLACE", LIBRARY.encode())
        if isinstance(result, Exception):
            raise result

    async def _many(self, commands: Sequence[tuple[bytes, ...]]) -> list[Any]:
        """Several commands at once (one pipeline when they are queued together)."""
        try:
            results = await asyncio.gather(*[self._link.call(*c) for c in commands])
            if any(_not_loaded(r) for r in results):  # a restarted Redis
                await self._load()
                results = await asyncio.gather(*[self._link.call(*c) for c in commands])
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._fault(exc) from None
        for r in results:
            if isinstance(r, Exception):
                raise self._fault(r)
        self._ok()
        return results

    # --- Store -------------------------------------------------------------------------------

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
    ) -> RedisView:
        if len(addr) not in _FAMILY:
            raise ValueError(f"an address of {len(addr)} bytes is of no family")
        now = int(self._clock())
        if key_hash > _KEY_MASK:
            key_hash = ((key_hash ^ key_hash >> 30) & _KEY_MASK) or 1  # 2 bits are proto's
        meta, bucket = self._keys(info_hash)
        reply = await self._fcall(
            FN_ANNOUNCE,
            meta,
            bucket,
            info_hash,
            peer_id,
            addr,
            self._nums(
                now,
                key_hash,
                hold,
                self.ttl,
                self.pool,
                max_per_ip,
                proto,
                seeder,
                completed_event,
                create,
                self._rng.getrandbits(32),
            ),
        )
        code = reply[0]
        if code:
            if code == 1:
                raise ClientError(KEY_REFUSED)
            if code == 2:
                raise ClientError(
                    f"too many peers from your address in this torrent (at most {reply[1]})"
                )
            raise SwarmNotFound(info_hash)
        return RedisView(info_hash, peer_id, addr, reply, now, proto)

    async def remove(
        self, info_hash: bytes, peer_id: bytes, addr: bytes, key_hash: int
    ) -> tuple[int, int, int]:
        if len(addr) not in _FAMILY:
            raise ValueError(f"an address of {len(addr)} bytes is of no family")
        if key_hash > _KEY_MASK:
            key_hash = ((key_hash ^ key_hash >> 30) & _KEY_MASK) or 1
        meta, bucket = self._keys(info_hash)
        reply = await self._fcall(
            FN_REMOVE, meta, bucket, info_hash, peer_id, addr, _U32.pack(key_hash)
        )
        if reply[0]:
            raise ClientError(KEY_REFUSED)
        return reply[1], reply[2], reply[3]

    async def scrape(self, info_hashes: list[bytes]) -> list[tuple[bytes, int, int, int]]:
        if not info_hashes:
            return []
        replies = await self._many(
            [(b"HMGET", self._keys(ih)[0], b"c", b"i", b"d") for ih in info_hashes]
        )
        return [(ih, *_counts(r)) for ih, r in zip(info_hashes, replies, strict=True)]

    async def _registry_pages(self) -> Any:
        """Every swarm the registry lists, a page of info_hashes (and record counts) at a time."""
        for key in await self._registries():
            cursor = b"0"
            while True:
                cursor, flat = await self._call(b"HSCAN", key, cursor, b"COUNT", b"%d" % _PAGE)
                if isinstance(flat, dict):  # redis-py's cluster client parses replies itself
                    yield list(flat.items())
                elif flat:
                    yield [(flat[j], flat[j + 1]) for j in range(0, len(flat), 2)]
                if cursor in (b"0", 0):
                    break

    async def _registries(self) -> list[bytes]:
        if self._tags is None:
            return self._bucket_keys(b"r")
        # Only the buckets that exist, found on every node.
        found: list[bytes] = []
        pattern = re.sub(rb"([*?\[\]\\])", rb"\\\1", self.prefix) + b"#{*}:r"
        link = self._link
        assert isinstance(link, _ClusterLink)
        try:
            async with asyncio.timeout(self.timeout * 10):
                async for key in link.client.scan_iter(match=pattern, count=1000):
                    found.append(key)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._fault(exc) from None
        return found

    async def scrape_all(self) -> list[tuple[bytes, int, int, int]]:
        rows = []
        async for page in self._registry_pages():
            rows += [row for row in await self.scrape([ih for ih, _ in page]) if any(row[1:])]
        return rows

    async def drop(self, info_hash: bytes) -> bool:
        meta, bucket = self._keys(info_hash)
        return bool(await self._fcall(FN_DROP, meta, bucket, info_hash))

    async def sweep(self, cutoff: int) -> int:
        removed = 0
        cutoff = max(cutoff, 0)
        try:
            if self.sweep_lease > 0:
                lease = b"%d" % max(1, int(self.sweep_lease * 1000))
                key = self.prefix + b"#sweep"
                if await self._call(b"SET", key, b"1", b"NX", b"PX", lease) is None:
                    return 0  # another worker or tracker swept less than a lease ago
            async for page in self._registry_pages():
                # (info_hash, cursor) for each swarm still being swept
                todo = [(ih, 0, _FROM_END) for ih, _ in page]
                while todo:
                    replies = await self._many(
                        [
                            (
                                b"FCALL",
                                FN_SWEEP,
                                b"2",
                                *self._keys(ih),
                                ih,
                                _SWEEP_ARGS.pack(cutoff, _SWEEP_BUDGET, t, hi),
                            )
                            for ih, t, hi in todo
                        ]
                    )
                    removed += sum(r[0] for r in replies)
                    todo = [
                        (ih, r[1], r[2])
                        for (ih, _, _), r in zip(todo, replies, strict=True)
                        if r[1] < 6
                    ]
        except StoreUnavailable:
            pass  # logged and counted; the next sweep carries on
        return removed

    async def load_scripts(self) -> bool:
        """Load the functions library (announces load it anyway when it is missing); False if
        Redis is unavailable."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._load()
        except (RedisError, OSError, TimeoutError) as exc:
            self._fault(exc)
            return False
        self._ok()
        return True

    async def stats(self) -> StoreStats:
        """The totals; the last known ones while Redis is unavailable (never raises)."""
        try:
            if self._tags is None:
                raw = await self._call(b"HMGET", self._bucket_keys(b"n")[0], *_STAT_FIELDS)
                values = [int(v or 0) for v in raw]
            else:
                # One pass over the nodes at a time, shared by concurrent callers.
                if self._totals_pending is None:
                    self._totals_pending = asyncio.ensure_future(self._cluster_totals())
                    self._totals_pending.add_done_callback(self._totals_done)
                values = await asyncio.shield(self._totals_pending)
        except StoreUnavailable:
            return self._last_stats
        # Tables 0..5 in the order of StoreStats' fields (those it has).
        self._last_stats = StoreStats(*values[: len(StoreStats._fields)])
        return self._last_stats

    def _totals_done(self, fut: asyncio.Future[list[int]]) -> None:
        self._totals_pending = None
        if not fut.cancelled():
            fut.exception()  # retrieved: the awaiting callers handle it

    async def _cluster_totals(self) -> list[int]:
        link = self._link
        assert isinstance(link, _ClusterLink) and self._tags is not None
        client = link.client
        tags = self._tags
        totals = [0] * 7
        try:
            async with asyncio.timeout(self.timeout):
                await link.ready()
                # Each slot's bucket under the node serving it: one pass over the slot map.
                by_node: dict[int, list[bytes]] = {}
                for s, nodes in client.nodes_manager.slots_cache.items():
                    if nodes:
                        keys = by_node.setdefault(id(nodes[0]), [])
                        keys.append(b"%b#{%b}:n" % (self.prefix, tags[s]))
                for node in client.get_primaries():
                    keys = by_node.get(id(node), [])
                    if not keys:
                        continue
                    part = await client.execute_command(
                        "FCALL_RO", FN_TOTALS, 0, *keys, target_nodes=node
                    )
                    totals = [a + int(b) for a, b in zip(totals, part, strict=True)]
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._fault(exc) from None
        self._ok()
        return totals

    async def top_swarms(self, n: int) -> list[tuple[bytes, int, int, int]]:
        if n <= 0:
            return []
        best: list[tuple[int, bytes]] = []
        try:
            async for page in self._registry_pages():
                ranked = [(sum(map(int, counts.split())), ih) for ih, counts in page]
                best = heapq.nlargest(n, best + ranked)
            rows = [row for row in await self.scrape([ih for _, ih in best]) if any(row[1:3])]
        except StoreUnavailable:
            return []
        rows.sort(key=lambda r: r[1] + r[2], reverse=True)
        return rows

    async def close(self) -> None:
        await self._link.close()

    # --- figures for /stats and /metrics (a StatsService source) ----------------------------

    def metrics(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "johnlocke_store_up", "1 while the Redis swarm store answers, else 0.", self.up is True
        )
        yield CounterMetricFamily(
            "johnlocke_store_errors",
            "Swarm store calls that failed (Redis down, slow or full); each was answered"
            " 'temporarily unavailable'.",
            value=self.errors,
        )

    def report(self) -> dict[str, Any]:
        return {"store": {"backend": "redis", "up": self.up is True, "errors": self.errors}}

    # --- a Service (start/stop around the daemon's life; reload follows [announce]) ------------

    name = "store"

    async def start(self) -> None:
        if await self.load_scripts():
            log.info("swarm store: Redis at %s", self._where())
        # else: logged by _fault; the tracker starts anyway and recovers when Redis comes.

    async def stop(self) -> None:
        pass  # the CLI closes the store last, after every service that uses it has stopped

    def reload(self, config: Any) -> None:
        self.ttl = ttl_for(config)
        self.pool = config.store.pool
        self.sweep_lease = sweep_lease_for(config)


_STAT_FIELDS = (b"s", b"0", b"1", b"2", b"3", b"4", b"5")


def _counts(reply: Iterable[Any]) -> tuple[int, int, int]:
    c, i, d = reply
    return int(c or 0), int(i or 0), int(d or 0)


def _not_loaded(result: Any) -> bool:
    return isinstance(result, ResponseError) and "Function not found" in str(result)


def ttl_for(config: Any) -> int:
    """Seconds a swarm's keys live after its last refresh: past ``peer_timeout`` by enough
    that a running tracker's sweep always forgets its peers first (and counts them off)."""
    a = config.announce
    return a.peer_timeout + 2 * a.sweep_interval + 120


def sweep_lease_for(config: Any) -> float:
    """Every worker of every tracker runs the sweep timer; one of them sweeps each period. The
    lease is a little shorter than the period, so the next timer to fire after it finds it free."""
    return 0.8 * config.announce.sweep_interval


def from_config(config: Any, **kwargs: Any) -> RedisStore:
    s = config.store
    return RedisStore(
        s.url,
        cluster=s.cluster,
        prefix=s.prefix,
        timeout=s.timeout,
        pool=s.pool,
        ttl=ttl_for(config),
        sweep_lease=sweep_lease_for(config),
        **kwargs,
    )


__all__ = [
    "RedisStore",
    "RedisView",
    "StoreUnavailable",
    "from_config",
    "sweep_lease_for",
    "ttl_for",
]
