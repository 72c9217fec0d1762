"""What the tracker is doing, for ``/stats``, ``/metrics`` and the status page. No aiohttp here.

Theory of operation
-------------------
The hot path only touches plain integers on one ``Stats`` object (``__slots__``, no locks:
everything runs on the event loop): one latency histogram per endpoint (whose count is the
request count), announces by event, and failures by reason; the announces of one peer in
``client_sample`` are also counted by client (their peer_id prefix). Nothing else happens per
request, and no prometheus_client object is touched.

``StatsService`` turns counters into figures. A 1 s ticker records the cumulative request
counts in a short ring, so rates over the last 10 s and 60 s are differences across it; every
``history_interval`` seconds it also keeps a sample of the store-wide counts (and the rates and
RSS) for the status page's one-hour plots. Store-wide counts are O(1) (the store keeps running
totals); only the top swarms need a pass over every swarm, which the store does in slices, and
which is cached for a few seconds and shared by concurrent readers.

``/metrics`` comes from prometheus_client through a custom collector that reads the same
counters when Prometheus scrapes, so the registry costs nothing between scrapes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import resource
import sys
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from johnlocke import __version__, compiled
from johnlocke.config import Config
from johnlocke.service import cancel_task
from johnlocke.store import Store, StoreStats

log = logging.getLogger("johnlocke.stats")

# Upper bounds (seconds) of the latency buckets; the last bucket is everything slower.
LATENCY_BOUNDS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
# Indexed by protocol.EVENT_*: none, started, completed, stopped, paused.
EVENT_NAMES = ("none", "started", "completed", "stopped", "paused")
INTERNAL_REASON = "internal tracker error"
# Failure reasons and client prefixes can carry what a client sent: past these many distinct
# keys, new ones are counted together, so a hostile client cannot grow the dicts.
MAX_REASONS = 50
MAX_CLIENTS = 200
OTHER = "(other)"
_GOT_NUMBER = re.compile(r"\bgot \d+")
_MAX_REASON_LENGTH = 120
_SHADOW_STYLE = re.compile(rb"[A-Za-z0-9.\-]{1,8}")
# How long a computed top-swarms list is reused: ranking visits every swarm.
TOP_CACHE_SECONDS = 5.0
LOOPBACK = (ip_network("127.0.0.0/8"), ip_network("::1/128"))

# Azureus-style peer_id prefixes ("-qB4520-"): the two letters name the client.
CLIENT_NAMES = {
    "AG": "Ares",
    "AZ": "Vuze",
    "BC": "BitComet",
    "BI": "BiglyBT",
    "BT": "BitTorrent",
    "CD": "Enhanced CTorrent",
    "DE": "Deluge",
    "FD": "Free Download Manager",
    "FW": "FrostWire",
    "FX": "Freebox",
    "KT": "KTorrent",
    "LT": "libtorrent (Rasterbar)",
    "lt": "libTorrent (rTorrent)",
    "MG": "MediaGet",
    "PI": "PicoTorrent",
    "qB": "qBittorrent",
    "SD": "Thunder",
    "TL": "Tribler",
    "TR": "Transmission",
    "UM": "µTorrent Mac",
    "UT": "µTorrent",
    "UW": "µTorrent Web",
    "WD": "WebTorrent Desktop",
    "WW": "WebTorrent",
    "XL": "Xunlei",
}
# Other styles: the leading letters before the version.
OTHER_CLIENT_NAMES = {"A2": "aria2", "M": "BitTorrent (mainline)", "S": "Shadow", "T": "BitTornado"}


class Histogram:
    """Integer counts in fixed buckets, Prometheus style (a bucket holds values <= its bound)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """An estimate as Prometheus' histogram_quantile makes it (linear within a bucket)."""
        total = self.count
        if not total:
            return None
        rank = q * total
        seen = 0
        for i, n in enumerate(self.counts):
            if seen + n >= rank and n:
                if i == len(self.bounds):
                    return self.bounds[-1]  # beyond the last bound: the best we can say
                low = self.bounds[i - 1] if i else 0.0
                return low + (self.bounds[i] - low) * (rank - seen) / n
            seen += n
        return self.bounds[-1]

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs, ``+Inf`` last."""
        out = []
        acc = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), acc))
        return out


class Stats:
    """The counters the request handlers increment. Read them, never reset them."""

    __slots__ = (
        "announce_latency",
        "scrape_latency",
        "events",
        "failures",
        "clients",
        "client_sample",
        "clients_sampled",
        "started_at",
        "started_wall",
        "snapshot_time",
        "udp",
        "websocket",
    )

    def __init__(self, client_sample: int = 8, clock: Callable[[], float] = time.monotonic) -> None:
        self.announce_latency = Histogram()
        self.scrape_latency = Histogram()
        self.events = [0] * len(EVENT_NAMES)  # announces applied, by event
        self.failures: dict[str, int] = {}
        self.clients: dict[bytes, int] = {}
        # The announces of 1 peer in client_sample (by a hash of its peer_id) are counted by
        # client.
        self.client_sample = client_sample
        self.clients_sampled = 0
        self.started_at = clock()
        self.started_wall = time.time()
        # Unix time of the last snapshot written to disk; set by whatever writes snapshots.
        self.snapshot_time: float | None = None
        # The UDP frontend's own counters; the attributes above count HTTP.
        self.udp = UdpStats()
        # The WebSocket (WebTorrent) frontend's own counters.
        self.websocket = WebSocketStats()

    @property
    def announces(self) -> int:
        """Announces answered over every transport."""
        return (
            self.announce_latency.count
            + self.udp.announce_latency.count
            + self.websocket.announce_latency.count
        )

    @property
    def scrapes(self) -> int:
        return (
            self.scrape_latency.count
            + self.udp.scrape_latency.count
            + self.websocket.scrape_latency.count
        )

    def fail(self, reason: str) -> None:
        """Count one request answered with ``reason`` (normalised; distinct keys capped)."""
        if len(reason) > _MAX_REASON_LENGTH:
            reason = reason[:_MAX_REASON_LENGTH] + "..."
        if "got " in reason:
            reason = _GOT_NUMBER.sub("got N", reason)
        failures = self.failures
        if reason not in failures and len(failures) >= MAX_REASONS:
            reason = OTHER
        failures[reason] = failures.get(reason, 0) + 1

    def count_client(self, peer_id: bytes) -> None:
        """Count one sampled announce by its client."""
        self.clients_sampled += 1
        key = client_prefix(peer_id)
        clients = self.clients
        if key not in clients and len(clients) >= MAX_CLIENTS:
            key = b""
        clients[key] = clients.get(key, 0) + 1


class _TransportStats:
    """What every frontend beside HTTP counts as HTTP does: latencies (whose counts are the
    requests), announces by event, failures by reason."""

    __slots__ = ("announce_latency", "scrape_latency", "events", "failures")

    def __init__(self) -> None:
        self.announce_latency = Histogram()
        self.scrape_latency = Histogram()
        self.events = [0] * len(EVENT_NAMES)
        self.failures: dict[str, int] = {}

    # Failure reasons are normalised and capped as HTTP's are.
    fail = Stats.fail


class UdpStats(_TransportStats):
    """The UDP frontend's counters: as HTTP's, plus connects, datagrams that were not
    requests (by reason: too short, too long, bad protocol id, bad connection id...) and
    answers dropped because the socket's send buffer was full."""

    __slots__ = ("connects", "bad", "unsent")

    def __init__(self) -> None:
        super().__init__()
        self.connects = 0
        self.bad: dict[str, int] = {}
        self.unsent = 0

    def drop(self, reason: str) -> None:
        """Count one datagram that was not a request (``reason`` is one of the codec's)."""
        bad = self.bad
        bad[reason] = bad.get(reason, 0) + 1


class WebSocketStats(_TransportStats):
    """The WebSocket frontend's counters: as HTTP's, plus connections, relayed offers and
    answers, and messages dropped without an answer (by reason: over the rate, binary, an
    answer to an unknown offer...)."""

    __slots__ = (
        "dropped",
        "closed",
        "opened",
        "refused",
        "offers",
        "answers",
        "undelivered",
        "open",
    )

    def __init__(self) -> None:
        super().__init__()
        self.dropped: dict[str, int] = {}
        self.closed: dict[str, int] = {}  # connections closed, by why
        self.opened = 0
        self.refused = 0  # upgrades refused (disabled, at the cap)
        self.offers = 0  # offers relayed to a peer
        self.answers = 0  # answers relayed to the peer that made the offer
        self.undelivered = 0  # offers and answers whose peer had gone
        self.open = 0  # connections open now

    def drop(self, reason: str) -> None:
        """Count one message dropped unanswered (``reason`` is one of the frontend's)."""
        dropped = self.dropped
        dropped[reason] = dropped.get(reason, 0) + 1

    def close(self, reason: str) -> None:
        closed = self.closed
        closed[reason] = closed.get(reason, 0) + 1


def client_prefix(peer_id: bytes) -> bytes:
    """The part of a peer_id that names the client and its version ("-qB4520-", "A2-1-36")."""
    if peer_id[:1] == b"-" and peer_id[7:8] == b"-":
        return peer_id[:8]
    m = _SHADOW_STYLE.match(peer_id)
    return m.group().rstrip(b"-") if m else b""


def client_name(prefix: bytes) -> str:
    """A readable client name for a prefix from ``client_prefix``; "" when unknown."""
    text = prefix.decode("latin-1")
    if len(text) == 8 and text[0] == "-" and text[7] == "-":
        return CLIENT_NAMES.get(text[1:3], "")
    lead = re.match(r"[A-Za-z]+\d?", text)
    if lead is None:
        return ""
    word = lead.group()
    return OTHER_CLIENT_NAMES.get(word) or OTHER_CLIENT_NAMES.get(word.rstrip("0123456789"), "")


def rss_bytes() -> int:
    """The process's resident memory now (Linux), or its peak where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class Sample(NamedTuple):
    """One point of the status page's plots."""

    time: float  # Unix time
    swarms: int
    seeders_ipv4: int
    leechers_ipv4: int
    seeders_ipv6: int
    leechers_ipv6: int
    seeders_rtc: int
    leechers_rtc: int
    announces_per_second: float
    scrapes_per_second: float
    rss: int

    @property
    def seeders(self) -> int:
        return self.seeders_ipv4 + self.seeders_ipv6 + self.seeders_rtc

    @property
    def leechers(self) -> int:
        return self.leechers_ipv4 + self.leechers_ipv6 + self.leechers_rtc

    @property
    def peers(self) -> int:
        return self.seeders + self.leechers

    @property
    def peers_ipv6(self) -> int:
        return self.seeders_ipv6 + self.leechers_ipv6


class Access:
    """Who may read the stats endpoints: source networks, or the bearer of the token."""

    def __init__(self, config: Config) -> None:
        allow = config.stats.allow
        if allow == "auto":
            # A private tracker shows nothing to anyone by default, not even on loopback.
            access = getattr(config, "access", None)
            allow = [] if getattr(access, "mode", "open") == "private" else list(LOOPBACK)
        self.networks: tuple[IPv4Network | IPv6Network, ...] = tuple(allow)
        self.token = config.stats.token.encode()

    def allows(self, addr: IPv4Address | IPv6Address, token: bytes | None) -> bool:
        """From an allowed network, or with the token: the bytes as the client sent them,
        compared in constant time (whatever they are: a header need not be text)."""
        if token and self.token and hmac.compare_digest(token, self.token):
            return True
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)

    def describe(self) -> str:
        who = ", ".join(str(n) for n in self.networks) or "no address"
        return who + (" or with the token" if self.token else "")


class StatsService:
    """Rates, history and reports over a ``Stats`` and a store (a ``johnlocke.service`` part)."""

    name = "stats"

    def __init__(
        self,
        store: Store,
        config: Config,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._clock = clock
        self._wall = wall
        self.stats = Stats(config.stats.client_sample, clock)
        # (monotonic time, announces, scrapes), one a second: the last minute's rates.
        self._ring: deque[tuple[float, int, int]] = deque(maxlen=61)
        self._ring.append((self.stats.started_at, 0, 0))
        self.history: deque[Sample] = deque()
        self._last_sample = (self.stats.started_at, 0, 0)
        self._ticks = 0
        self._task: asyncio.Task[None] | None = None
        self._top: tuple[float, int, list[tuple[bytes, int, int, int]]] | None = None
        self._top_pending: asyncio.Future[list[tuple[bytes, int, int, int]]] | None = None
        self.store_stats = StoreStats(0, 0, 0, 0, 0, 0, 0)
        # Other parts' figures (the Redis store's health, the workers' board): each has
        # ``metrics()`` (prometheus families) and ``report()`` (a dict merged into /stats).
        self.sources: list[Any] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._apply(config)

    def snapshot_written(self, wall_time: float) -> None:
        """The snapshot service wrote a snapshot at ``wall_time`` (for the snapshot age)."""
        self.stats.snapshot_time = wall_time

    def _apply(self, config: Config) -> None:
        self.config = config
        s = config.stats
        self.access = Access(config)
        self.top_n = s.top
        self.interval = s.history_interval
        self.stats.client_sample = s.client_sample
        keep = max(2, 3600 // s.history_interval)
        if self.history.maxlen != keep:
            self.history = deque(self.history, maxlen=keep)

    # --- Service ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            await self._take_sample()
            self._task = asyncio.get_running_loop().create_task(self._tick_forever())

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None

    def reload(self, config: Config) -> None:
        self._apply(config)

    # --- the ticker ------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        next_at = self._clock()
        while True:
            # Scheduled against the clock, not "1 s after the last tick", so it does not drift.
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - self._clock()))
            try:
                await self.tick()
            except Exception:
                log.exception("stats tick failed; will retry")

    async def tick(self) -> None:
        st = self.stats
        self._ring.append((self._clock(), st.announces, st.scrapes))
        self._ticks += 1
        if self._ticks >= self.interval:
            await self._take_sample()

    async def _take_sample(self) -> None:
        self._ticks = 0
        st = self.stats
        now = self._clock()
        announces, scrapes = st.announces, st.scrapes
        t0, a0, s0 = self._last_sample
        dt = now - t0
        self._last_sample = (now, announces, scrapes)
        self.history.append(
            Sample(
                self._wall(),
                *await self.refresh(),
                (announces - a0) / dt if dt > 0 else 0.0,
                (scrapes - s0) / dt if dt > 0 else 0.0,
                rss_bytes(),
            )
        )

    # --- figures ---------------------------------------------------------------------------

    async def refresh(self) -> StoreStats:
        """Read the store-wide counts (cheap) and keep them for the metrics collector."""
        self.store_stats = await self.store.stats()
        return self.store_stats

    def rates(self, window: float) -> tuple[float, float]:
        """(announces, scrapes) per second over about the last ``window`` seconds."""
        now = self._clock()
        st = self.stats
        base = self._ring[0]
        for entry in self._ring:
            if entry[0] >= now - window - 0.5:
                base = entry
                break
        dt = now - base[0]
        if dt <= 0:
            return 0.0, 0.0
        return (st.announces - base[1]) / dt, (st.scrapes - base[2]) / dt

    async def top_swarms(self) -> list[tuple[bytes, int, int, int]]:
        """The top swarms by peers, at most TOP_CACHE_SECONDS old; one pass for all readers."""
        n = self.top_n
        cached = self._top
        if cached is not None and cached[1] == n and self._clock() - cached[0] < TOP_CACHE_SECONDS:
            return cached[2]
        if self._top_pending is None:
            self._top_pending = asyncio.ensure_future(self._rank(n))
        pending = self._top_pending
        return await asyncio.shield(pending)

    async def _rank(self, n: int) -> list[tuple[bytes, int, int, int]]:
        try:
            rows = await self.store.top_swarms(n)
            self._top = (self._clock(), n, rows)
            return rows
        finally:
            self._top_pending = None

    def live_sample(self) -> Sample:
        """The current figures as a plot point (the page draws it after the history)."""
        ss = self.store_stats
        a, s = self.rates(self.interval)  # the same window as the history's points
        return Sample(self._wall(), *ss, a, s, rss_bytes())

    async def report(self, history: bool = False) -> dict[str, Any]:
        """The /stats document (see the README for its fields)."""
        st = self.stats
        ss = await self.refresh()
        top = await self.top_swarms()
        a10, s10 = self.rates(10)
        a60, s60 = self.rates(60)
        announces = st.announces
        snapshot_age = None if st.snapshot_time is None else self._wall() - st.snapshot_time
        sampled = st.clients_sampled
        clients = sorted(st.clients.items(), key=lambda kv: kv[1], reverse=True)[: self.top_n]
        udp = st.udp
        ws = st.websocket
        failures = _added(st.failures, udp.failures, ws.failures)
        doc: dict[str, Any] = {
            "version": __version__,
            "build": compiled.BUILD,
            "time": self._wall(),
            "uptime_seconds": round(self._clock() - st.started_at, 3),
            "rss_bytes": rss_bytes(),
            "snapshot_age_seconds": None if snapshot_age is None else round(snapshot_age, 3),
            "swarms": ss.swarms,
            "peers": ss.peers,
            "seeders": ss.seeders,
            "leechers": ss.leechers,
            "ipv4": {
                "peers": ss.seeders_ipv4 + ss.leechers_ipv4,
                "seeders": ss.seeders_ipv4,
                "leechers": ss.leechers_ipv4,
            },
            "ipv6": {
                "peers": ss.seeders_ipv6 + ss.leechers_ipv6,
                "seeders": ss.seeders_ipv6,
                "leechers": ss.leechers_ipv6,
            },
            "webrtc": {
                "peers": ss.seeders_rtc + ss.leechers_rtc,
                "seeders": ss.seeders_rtc,
                "leechers": ss.leechers_rtc,
            },
            "announces": {
                "total": announces,
                "per_second_10s": round(a10, 3),
                "per_second_60s": round(a60, 3),
                "by_event": _by_event(st.events, udp.events, ws.events),
            },
            "scrapes": {
                "total": st.scrapes,
                "per_second_10s": round(s10, 3),
                "per_second_60s": round(s60, 3),
            },
            "failures": _reasons(failures),
            "clients": {
                "sample_every": st.client_sample,
                "sampled": sampled,
                "top": [
                    {
                        "prefix": prefix.decode("latin-1") if prefix else OTHER,
                        "name": client_name(prefix),
                        "announces": n,
                        "share": round(n / sampled, 4) if sampled else 0.0,
                    }
                    for prefix, n in clients
                ],
            },
            "latency_ms": {
                "announce": _latency(
                    _added_histograms(
                        st.announce_latency, udp.announce_latency, ws.announce_latency
                    )
                ),
                "scrape": _latency(
                    _added_histograms(st.scrape_latency, udp.scrape_latency, ws.scrape_latency)
                ),
            },
            "transports": {
                "http": _transport(st.announce_latency, st.scrape_latency, st.events, st.failures),
                "udp": {
                    **_transport(
                        udp.announce_latency, udp.scrape_latency, udp.events, udp.failures
                    ),
                    "connects": udp.connects,
                    "bad_datagrams": _reasons(udp.bad),
                    "unsent_answers": udp.unsent,
                },
                "websocket": _websocket(ws),
            },
            "top_swarms": [
                {
                    "info_hash": ih.hex(),
                    "peers": c + i,
                    "seeders": c,
                    "leechers": i,
                    "downloaded": d,
                }
                for ih, c, i, d in top
            ],
        }
        for source in self.sources:
            doc.update(source.report())
        if history:
            doc["history"] = {
                "interval_seconds": self.interval,
                "fields": list(Sample._fields),
                "samples": [list(s) for s in self.history],
            }
        return doc


def _by_event(*counts: list[int]) -> dict[str, int]:
    return {name: sum(c[i] for c in counts) for i, name in enumerate(EVENT_NAMES)}


def _added(*dicts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for key, n in d.items():
            out[key] = out.get(key, 0) + n
    return out


def _reasons(counts: dict[str, int]) -> dict[str, Any]:
    return {
        "total": sum(counts.values()),
        "by_reason": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
    }


def _added_histograms(*hs: Histogram) -> Histogram:
    out = Histogram(hs[0].bounds)
    for h in hs:
        out.counts = [a + b for a, b in zip(out.counts, h.counts, strict=True)]
        out.sum += h.sum
    return out


def _transport(
    announce: Histogram, scrape: Histogram, events: list[int], failures: dict[str, int]
) -> dict[str, Any]:
    """One transport's share of the /stats document."""
    return {
        "announces": announce.count,
        "scrapes": scrape.count,
        "by_event": _by_event(events),
        "failures": _reasons(failures),
        "latency_ms": {"announce": _latency(announce), "scrape": _latency(scrape)},
    }


def _websocket(ws: WebSocketStats) -> dict[str, Any]:
    return {
        **_transport(ws.announce_latency, ws.scrape_latency, ws.events, ws.failures),
        "connections": ws.open,
        "connections_opened": ws.opened,
        "upgrades_refused": ws.refused,
        "closed": _reasons(ws.closed),
        "offers_relayed": ws.offers,
        "answers_relayed": ws.answers,
        "undelivered": ws.undelivered,
        "dropped": _reasons(ws.dropped),
    }


def _latency(h: Histogram) -> dict[str, Any]:
    count = h.count

    def ms(q: float) -> float | None:
        v = h.quantile(q)
        return None if v is None else round(v * 1000, 3)

    return {
        "count": count,
        "mean": round(h.sum / count * 1000, 3) if count else None,
        "p50": ms(0.5),
        "p90": ms(0.9),
        "p99": ms(0.99),
    }


class _Collector:
    """Exposes a StatsService's figures to prometheus_client when it collects."""

    def __init__(self, service: StatsService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        svc = self.service
        st = svc.stats
        ss = svc.store_stats  # refreshed by the /metrics handler just before collecting
        yield GaugeMetricFamily("johnlocke_swarms", "Swarms (torrents) with peers.", ss.swarms)
        peers = GaugeMetricFamily(
            "johnlocke_peers", "Peers in the registry.", labels=["family", "role"]
        )
        peers.add_metric(["ipv4", "seeder"], ss.seeders_ipv4)
        peers.add_metric(["ipv4", "leecher"], ss.leechers_ipv4)
        peers.add_metric(["ipv6", "seeder"], ss.seeders_ipv6)
        peers.add_metric(["ipv6", "leecher"], ss.leechers_ipv6)
        peers.add_metric(["webrtc", "seeder"], ss.seeders_rtc)
        peers.add_metric(["webrtc", "leecher"], ss.leechers_rtc)
        yield peers
        udp = st.udp
        ws = st.websocket
        # (transport, announce histogram, scrape histogram, events, failures): HTTP first.
        transports = (
            ("http", st.announce_latency, st.scrape_latency, st.events, st.failures),
            ("udp", udp.announce_latency, udp.scrape_latency, udp.events, udp.failures),
            ("websocket", ws.announce_latency, ws.scrape_latency, ws.events, ws.failures),
        )
        announces = CounterMetricFamily(
            "johnlocke_announces",
            'Announce requests answered, by event ("refused": answered with a failure) and'
            " transport.",
            labels=["event", "transport"],
        )
        scrapes = CounterMetricFamily(
            "johnlocke_scrapes", "Scrape requests answered, by transport.", labels=["transport"]
        )
        failures = CounterMetricFamily(
            "johnlocke_failures",
            "Requests answered with a failure reason, by reason and transport.",
            labels=["reason", "transport"],
        )
        for transport, announce_h, scrape_h, events, reasons in transports:
            for name, n in zip(EVENT_NAMES, events, strict=True):
                announces.add_metric([name, transport], n)
            announces.add_metric(["refused", transport], max(0, announce_h.count - sum(events)))
            scrapes.add_metric([transport], scrape_h.count)
            for reason, n in reasons.items():
                failures.add_metric([reason, transport], n)
        yield announces
        yield scrapes
        yield failures
        yield CounterMetricFamily(
            "johnlocke_udp_connects", "UDP connect requests answered.", value=udp.connects
        )
        bad = CounterMetricFamily(
            "johnlocke_udp_bad_datagrams",
            "UDP datagrams that were not requests (dropped or refused), by reason.",
            labels=["reason"],
        )
        for reason, n in udp.bad.items():
            bad.add_metric([reason], n)
        yield bad
        yield CounterMetricFamily(
            "johnlocke_udp_unsent_answers",
            "UDP answers dropped because the socket's send buffer was full.",
            value=udp.unsent,
        )
        yield GaugeMetricFamily(
            "johnlocke_websocket_connections", "WebSocket (WebTorrent) connections open.", ws.open
        )
        relayed = CounterMetricFamily(
            "johnlocke_websocket_relayed",
            "WebRTC offers and answers relayed between WebSocket peers (kind), and those whose"
            " peer had gone (undelivered).",
            labels=["kind"],
        )
        relayed.add_metric(["offer"], ws.offers)
        relayed.add_metric(["answer"], ws.answers)
        relayed.add_metric(["undelivered"], ws.undelivered)
        yield relayed
        for name, text, counts in (
            ("dropped", "WebSocket messages dropped unanswered, by reason.", ws.dropped),
            ("closed", "WebSocket connections closed, by reason.", ws.closed),
        ):
            family = CounterMetricFamily(f"johnlocke_websocket_{name}", text, labels=["reason"])
            for reason, n in counts.items():
                family.add_metric([reason], n)
            yield family
        clients = CounterMetricFamily(
            "johnlocke_client_announces",
            f"Sampled announces (1 in {st.client_sample}) by client peer_id prefix, top clients.",
            labels=["prefix", "client"],
        )
        top = sorted(st.clients.items(), key=lambda kv: kv[1], reverse=True)[: svc.top_n]
        for prefix, n in top:
            clients.add_metric(
                [prefix.decode("latin-1") if prefix else OTHER, client_name(prefix)], n
            )
        yield clients
        for endpoint in ("announce", "scrape"):
            family = HistogramMetricFamily(
                f"johnlocke_{endpoint}_duration_seconds",
                f"Time to handle one {endpoint} (parse, store, answer), in seconds, by transport.",
                labels=["transport"],
            )
            for transport, announce_h, scrape_h, _events, _reasons in transports:
                h = announce_h if endpoint == "announce" else scrape_h
                family.add_metric([transport], h.buckets(), h.sum)
            yield family
        yield GaugeMetricFamily(
            "johnlocke_start_time_seconds", "When the tracker started (Unix time).", st.started_wall
        )
        if st.snapshot_time is not None:
            yield GaugeMetricFamily(
                "johnlocke_snapshot_age_seconds",
                "Seconds since the last state snapshot was written.",
                svc._wall() - st.snapshot_time,
            )
        info = InfoMetricFamily("johnlocke_build", "The tracker's version, build and strategy.")
        info.add_metric(
            [],
            {
                "version": __version__,
                "build": compiled.BUILD,
                "strategy": svc.config.strategy.name,
            },
        )
        yield info
        for source in svc.sources:
            yield from source.metrics()
