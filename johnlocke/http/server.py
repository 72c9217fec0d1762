"""The HTTP server: the aiohttp application and listeners around the codec.

It finds the client's address (``johnlocke.addresses.RealIp``), hands the raw request target to
``johnlocke.http.codec`` and the parsed request to ``johnlocke.tracker``, and writes the bencoded
answer. Every answer to ``/announce`` and ``/scrape`` is HTTP 200: clients read failures from
the bencoded body. ``HEAD`` is not served there (405): it would change the swarm. The answer is
made by ``Frontend.announce_body`` / ``scrape_body``; the daemon's connections call them as
they parse each request (``johnlocke.http.lean``), and aiohttp's handlers below serve the rest
(and everything, with the access log on) through the same two.

It also serves what the operator reads (``/stats``, ``/metrics``, the status page) to the
addresses ``[stats]`` allows, and writes the access log when it is on.

A passkey may come in the path, as ``/announce/KEY`` or ``/KEY/announce`` (the second lets clients
derive the scrape URL, BEP 48: they replace "announce" in the last path segment), or as
``?passkey=KEY``; the path wins. What a path means is decided by ``bittorrent.parse_target`` (dot
segments, ``//`` and absolute-form targets resolved), not by aiohttp's router, and logged targets
are masked from the same reading (``johnlocke.logs.mask``).

Statements that exist only to count for ``/stats`` end with ``# stats``:
``benchmarks/stats_overhead.py`` removes them to measure what counting costs. Keep each one a
whole statement (an ``if`` with its body counts as one).

Connection limits: theory of operation
--------------------------------------
Slow or idle clients must not exhaust the server. aiohttp bounds the size of a request head
(request line, header count and length) and closes keep-alive connections that stay idle, or
stuck in the middle of a request, for ``keepalive_timeout`` after an answer; but it has no cap on
connections, and in older releases no deadline for a new connection's first request.
``_Guard`` adds both, per connection and outside the request path. It is the protocol the
listeners create: it owns no HTTP logic and passes every event on to aiohttp's handler. Until
the first complete request head has arrived (a blank line seen in the bytes received) it counts
the bytes and waits in ``_Limits.waiting`` (oldest first, under one timer for all, due at the
oldest one's deadline); a connection that does not deliver its head within ``[http]
request_timeout`` seconds, or sends more than ``_MAX_HEAD`` bytes without finishing it, is
closed. After that the guard only forwards ``data_received`` (one attribute test, ~50 ns; see
``benchmarks/guard_overhead.py``). Later requests on a keep-alive connection fall under
aiohttp's ``keepalive_timeout``.

A guard also knows whether its connection is busy or idle: aiohttp's handler (``_Handler``)
tells it when an answer has been written, and the next bytes received make it busy again. At most
``[http] max_connections`` connections are open at once, across all listeners. When a new one
arrives at the cap, room is made as nginx does with its reusable connections: the oldest
connection still waiting for its first request is closed (an attacker holding connections open
with partial requests loses them to real clients, which send a request at once), else the one
that has been idle, served and waiting for its next request, the longest. A connection in the
middle of a request or of writing its answer is never chosen; if every one is, the newcomer is
closed (logged at most once a minute). What one client can keep busy is bounded by
``[http] max_connections_per_ip`` (an IPv6 address counts by its /64; trusted proxies are not
counted): a connection over it is closed at once. The process's open-file limit is raised to
fit the cap. The guard also caps asyncio's read size per connection (see ``_READ_SIZE``) to
keep memory flat.

On shutdown aiohttp gives each request in flight ``shutdown_timeout`` to finish and then as long
again to be cancelled, and cannot end one whose client never reads its answer: the runner aborts
every connection still open when ``shutdown_timeout`` has passed, one deadline for all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from time import perf_counter
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.tcp_helpers import tcp_keepalive
from prometheus_client.exposition import choose_encoder

from johnlocke import eager, status_page
from johnlocke.addresses import RealIp, address_group, pack_ip
from johnlocke.bittorrent import ANNOUNCE, SCRAPE, parse_target
from johnlocke.config import Config
from johnlocke.errors import ClientError
from johnlocke.http import codec as protocol
from johnlocke.http import lean, tls
from johnlocke.logs import ACCESS_LOGGER, RareWarning, mask, mask_request
from johnlocke.stats import INTERNAL_REASON, LATENCY_BOUNDS, StatsService
from johnlocke.tracker import Tracker
from johnlocke.websocket.server import Hub

log = logging.getLogger("johnlocke.http")

_INTERNAL = protocol.encode_failure("internal tracker error")
_ANNOUNCE = ANNOUNCE
_SCRAPE = SCRAPE


def _target(request: web.BaseRequest) -> bytes:
    # raw_path is the request target as the client sent it (decoded from bytes with
    # surrogateescape by aiohttp's parser), so this gets the exact bytes back.
    return request.raw_path.encode("utf-8", "surrogateescape")


class Frontend:
    def __init__(self, tracker: Tracker, config: Config, service: StatsService) -> None:
        self.tracker = tracker
        self.tracker_id = tracker.tracker_id
        self.real_ip = RealIp(config.http.trusted_proxies, config.http.real_ip_header)
        self.trusted = self.real_ip.trusted
        self.service = service
        self.stats = st = service.stats
        # The counters' own lists, one attribute lookup away on the hot path.
        self.events = st.events
        self.announce_latency = st.announce_latency
        self.latency_counts = st.announce_latency.counts
        # The WebSocket (WebTorrent) hub, set by build_app; upgrades of /announce go to it.
        self.hub: Hub | None = None

    def client_ip(self, request: web.BaseRequest) -> tuple[bytes, bool]:
        """The peer's packed address, and whether it came from a trusted proxy's header."""
        return self.peer_ip(request.transport, request.headers)

    def peer_ip(self, transport: Any, headers: Any) -> tuple[bytes, bool]:
        """``client_ip`` from a connection's transport and a request's headers."""
        peer = transport.get_extra_info("peername") if transport is not None else None
        if not peer:
            raise ClientError("cannot determine the client address")
        if self.trusted:
            real_ip = self.real_ip
            return real_ip.resolve(peer[0], headers.getall(real_ip.header, ()))
        return pack_ip(peer[0]), False

    async def announce(self, request: web.BaseRequest) -> web.StreamResponse:
        endpoint, passkey, query = parse_target(_target(request))
        if endpoint != _ANNOUNCE:
            return await self.route(request)
        # The parser's own flag (Connection: upgrade with an Upgrade header), one attribute
        # read; aiohttp's WebSocketResponse reads it the same way.
        if request._message.upgrade and self.hub is not None:
            return await self.websocket(request, passkey, query)
        return await _respond(self.announce_body, passkey, query, request)

    async def announce_body(
        self, passkey: bytes | None, query: bytes, transport: Any, headers: Any, target: str
    ) -> bytes:
        """The bencoded answer to an announce (a failure included): what both the aiohttp
        handler and the lean path (``johnlocke.http.lean``) send."""
        t0 = perf_counter()  # stats
        try:
            ip, trusted = self.peer_ip(transport, headers)
            req = protocol.parse_announce(query)
            if passkey is not None:
                req.passkey = passkey
            answer = await self.tracker.announce(req, ip, trusted)
            body = protocol.encode_answer(
                answer, None if req.trackerid else self.tracker_id, req.no_peer_id
            )
            self.events[req.event] += 1  # stats
            # Sampled by peer, not every n-th request, so regular traffic cannot skew it; the
            # store has already hashed this peer_id object, and bytes cache their hash.
            if not hash(req.peer_id) % self.stats.client_sample:  # stats
                self.stats.count_client(req.peer_id)
        except ClientError as exc:
            body = protocol.encode_failure(exc.reason)
            self.stats.fail(exc.reason)  # stats
        except Exception:
            log.exception("announce failed: %s", mask(target[:200]))
            body = _INTERNAL
            self.stats.fail(INTERNAL_REASON)  # stats
        dt = perf_counter() - t0  # stats
        self.latency_counts[bisect_left(LATENCY_BOUNDS, dt)] += 1  # stats
        self.announce_latency.sum += dt  # stats
        return body

    async def websocket(
        self, request: web.BaseRequest, passkey: bytes | None, query: bytes
    ) -> web.StreamResponse:
        """A WebSocket upgrade of an announce URL: a WebTorrent client (johnlocke.websocket)."""
        assert self.hub is not None
        try:
            ip, _ = self.client_ip(request)
        except ClientError as exc:
            raise web.HTTPBadRequest(text=exc.reason + "\n") from None
        if passkey is None:
            passkey = _query_value(query, b"passkey")
        return await self.hub.upgrade(request, ip, passkey)

    async def scrape(self, request: web.BaseRequest) -> web.StreamResponse:
        endpoint, passkey, query = parse_target(_target(request))
        if endpoint != _SCRAPE:
            return await self.route(request)
        return await _respond(self.scrape_body, passkey, query, request)

    async def scrape_body(
        self, passkey: bytes | None, query: bytes, transport: Any, headers: Any, target: str
    ) -> bytes:
        """The bencoded answer to a scrape (a failure included), as ``announce_body``."""
        t0 = perf_counter()  # stats
        try:
            hashes, query_key = protocol.parse_scrape(query)
            # The sender's address only matters to the full-scrape budget.
            ip = None if hashes else self.peer_ip(transport, headers)[0]
            rows = await self.tracker.scrape(hashes, query_key if passkey is None else passkey, ip)
            body = protocol.encode_scrape(rows)
        except ClientError as exc:
            body = protocol.encode_failure(exc.reason)
            self.stats.fail(exc.reason)  # stats
        except Exception:
            log.exception("scrape failed: %s", mask(target[:200]))
            body = _INTERNAL
            self.stats.fail(INTERNAL_REASON)  # stats
        self.stats.scrape_latency.observe(perf_counter() - t0)  # stats
        return body

    async def route(self, request: web.BaseRequest) -> web.StreamResponse:
        """Any path: a tracker endpoint if the codec reads one (a passkey in the path, ``..``,
        ``//``, an absolute-form target), else 404.

        The codec, not aiohttp's router, says what a path means: it is the code that finds the
        passkey, and the one the access log masks by. ``announce`` and ``scrape`` are routed
        to directly for their plain paths, the hot path, and read the target again.
        """
        endpoint = parse_target(_target(request))[0]
        if endpoint == _ANNOUNCE:
            return await self.announce(request)
        if endpoint == _SCRAPE:
            return await self.scrape(request)
        raise web.HTTPNotFound()

    # --- what the operator reads -----------------------------------------------------------

    def stats_allowed(self, request: web.BaseRequest) -> bool:
        """From an address in ``[stats] allow``, or with the token (bearer header or ?token=)."""
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            # Header values keep the bytes that are not UTF-8 as surrogates: this gets them back.
            token: bytes | None = auth[7:].strip().encode("utf-8", "surrogateescape")
        else:
            token = _query_token(_target(request).partition(b"?")[2])
        try:
            ip, _ = self.client_ip(request)
        except ClientError:
            return False
        return self.service.access.allows(ip_address(ip), token)

    async def stats_json(self, request: web.Request) -> web.StreamResponse:
        if not self.stats_allowed(request):
            return _forbidden()
        report = await self.service.report(history=request.query.get("history", "0") != "0")
        return web.json_response(report, headers=_NO_STORE)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        if not self.stats_allowed(request):
            return _forbidden()
        await self.service.refresh()
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(
            body=encoder(self.service.registry),
            headers={"Content-Type": content_type, **_NO_STORE},
        )

    async def status(self, request: web.Request) -> web.StreamResponse:
        if not self.stats_allowed(request):
            return _forbidden()
        svc = self.service
        report = await svc.report()
        token = request.query.get("token")
        html = status_page.render(
            report,
            list(svc.history),
            svc.live_sample(),
            refresh=max(5, svc.interval),
            token=token if token and svc.access.token else None,
        )
        return web.Response(text=html, content_type="text/html", headers=_NO_STORE)


_NO_STORE = {"Cache-Control": "no-store"}


async def _respond(
    body_of: Callable[..., Awaitable[bytes]],
    passkey: bytes | None,
    query: bytes,
    request: web.BaseRequest,
) -> web.Response:
    """aiohttp's answer to an announce or scrape, made by ``announce_body`` / ``scrape_body``."""
    body = await body_of(passkey, query, request.transport, request.headers, request.raw_path)
    return web.Response(body=body, content_type="text/plain")


def _query_token(query: bytes) -> bytes | None:
    """The ``token`` of a query, as bytes; None if there is none or the query is unreadable."""
    return _query_value(query, b"token")


def _query_value(query: bytes, key: bytes) -> bytes | None:
    """The last value of ``key`` in a query, as bytes; None if none or the query is unreadable."""
    try:
        pairs = protocol.split_query(query)
    except ClientError:
        return None
    return next((value for name, value in reversed(pairs) if name == key), None)


def _forbidden() -> web.Response:
    return web.Response(
        status=403,
        text="403 forbidden: the tracker's stats are not open to this address"
        " (see [stats] allow and token in its configuration)\n",
    )


class AccessLogger(AbstractAccessLogger):
    """One line per request on the ``johnlocke.access`` logger, passkeys and tokens masked.

    aiohttp asks ``enabled`` once per connection (the logger's level, set from
    ``[log] access_log``), so this costs nothing while the access log is off. Requests that
    aiohttp's parser refused get no line: malformed HTTP is logged by aiohttp at debug level
    (``_ServerLog``), so that garbage cannot flood the log whatever the settings. ``runner_options``
    makes a subclass that knows the server's ``RealIp``.
    """

    real_ip = RealIp()
    _failed = False

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return  # an aiohttp too old to ask ``enabled`` calls this for every request
        try:
            if not _was_routed(request):
                return
            remote = self._remote(request)
            target, (agent,) = mask_request(
                request.raw_path, (request.headers.get("User-Agent", "-"),)
            )
            version = request.version
            self.logger.info(
                '%s "%s %s HTTP/%d.%d" %d %d %.3fms "%s"',
                remote,
                request.method,
                target,
                version.major,
                version.minor,
                response.status,
                response.body_length,
                time * 1000,
                agent,
                extra={
                    "remote": remote,
                    "method": request.method,
                    "path": target,
                    "status": response.status,
                    "bytes": response.body_length,
                    "duration_ms": round(time * 1000, 3),
                    "user_agent": agent,
                },
            )
        except Exception:
            # Never raise into aiohttp, and never let a request make this flood the log.
            if AccessLogger._failed:
                log.debug("cannot write an access log line", exc_info=True)
            else:
                AccessLogger._failed = True
                log.exception("cannot write an access log line (further failures: debug level)")

    def _remote(self, request: web.BaseRequest) -> str:
        peer = request.remote
        if not peer:
            return "-"
        real_ip = self.real_ip
        try:
            ip, _ = real_ip.resolve(peer, request.headers.getall(real_ip.header, ()))
        except (ClientError, ValueError, OSError):
            return peer
        return str(ip_address(ip))

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def _was_routed(request: web.BaseRequest) -> bool:
    """False for the stand-in request aiohttp answers a request it could not parse with."""
    try:
        return isinstance(request, web.Request) and request.match_info is not None
    except AssertionError:  # aiohttp asserts that there is one
        return False


FRONTEND = web.AppKey("frontend", Frontend)


def build_app(
    tracker: Tracker, config: Config, service: StatsService | None = None, hub: Hub | None = None
) -> web.Application:
    """The tracker's app. Without ``service`` (or ``hub``), the app makes and runs its own
    StatsService (WebSocket hub)."""
    app = web.Application()
    if service is None:
        own = service = StatsService(tracker.store, config)

        async def start_stats(_app: web.Application) -> None:
            await own.start()

        async def stop_stats(_app: web.Application) -> None:
            await own.stop()

        app.on_startup.append(start_stats)
        app.on_cleanup.append(stop_stats)
    frontend = Frontend(tracker, config, service)
    app[FRONTEND] = frontend
    if hub is None:
        own_hub = hub = Hub(tracker, config, service)

        async def start_hub(_app: web.Application) -> None:
            await own_hub.start()

        async def stop_hub(_app: web.Application) -> None:
            await own_hub.stop()

        app.on_startup.append(start_hub)
        app.on_cleanup.append(stop_hub)
    frontend.hub = hub

    async def close_websockets(_app: web.Application) -> None:
        hub.close_all()  # first thing on shutdown: browsers are told, their peers leave

    app.on_shutdown.append(close_websockets)
    # HEAD is not served where a GET changes the swarm: 405, and nothing changes.
    app.router.add_get("/announce", frontend.announce, allow_head=False)
    app.router.add_get("/scrape", frontend.scrape, allow_head=False)
    app.router.add_get("/stats", frontend.stats_json)
    app.router.add_get("/metrics", frontend.metrics)
    if config.stats.page:
        app.router.add_get(config.stats.page, frontend.status)
    # Last, so /stats and the status page are never taken for a passkey: the codec decides
    # whether any other path is a tracker endpoint (with a passkey in it) or a 404.
    app.router.add_get("/{path:.*}", frontend.route, allow_head=False)
    return app


def runner_options(config: Config) -> dict[str, Any]:
    """Server settings, shared by ``start`` and the tests' servers."""
    real_ip = RealIp(config.http.trusted_proxies, config.http.real_ip_header)
    return {
        "access_log": logging.getLogger(ACCESS_LOGGER),
        "access_log_class": type("AccessLogger", (AccessLogger,), {"real_ip": real_ip}),
        "shutdown_timeout": config.http.shutdown_timeout,
        "keepalive_timeout": config.http.keepalive_timeout,
        # No SO_KEEPALIVE (a syscall per connection): the kernel's probes start after two hours
        # idle, and [http] keepalive_timeout / request_timeout close idle connections long before.
        "tcp_keepalive": False,
        # Room for an over-long query to reach the parser, which answers it with a bencoded
        # failure; only a request line beyond this gets aiohttp's plain 400.
        "max_line_size": protocol.MAX_QUERY_LENGTH * 2,
        # Clients send a handful of short headers; these bound what one connection can make the
        # parser hold (aiohttp's defaults allow 128 fields of 8 KB).
        "max_headers": _MAX_HEADERS,
        "max_field_size": _MAX_FIELD,
        # A request body is never read; drain one for at most this long before closing.
        "lingering_time": 2.0,
        "logger": _server_log,
    }


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, with malformed HTTP requests logged at debug level.

    aiohttp logs every request its parser refuses (answered with a 4xx) as an error with a
    traceback: anyone could fill the log with garbage. Real errors keep their level.
    """

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError) and 400 <= (exc_info.code or 0) < 500:
            self.debug("%s: %s", msg % args if args else msg, exc_info, **kwargs)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


_server_log = _ServerLog(logging.getLogger("aiohttp.server"), {})


_MAX_HEADERS = 32
_MAX_FIELD = 4096
# The most bytes a new connection may send before its first request head is complete.
_MAX_HEAD = protocol.MAX_QUERY_LENGTH * 2 + 16 * 1024
# At the cap, a connection that has not sent its first request for this long goes before idle
# ones; a younger one goes only if none is idle (it has had no time to send).
_GRACE = 1.0
# asyncio's selector transport reads up to 256 KiB at a time: a 256 KiB buffer per read, shrunk
# to the few hundred bytes that came. Under glibc's malloc that fragments the heap (once the
# first such buffer is freed, the dynamic mmap threshold rises and every read buffer comes from
# the heap): in benchmarks/soak.py the RSS crept up ~1 MB/min under hostile traffic, and stayed
# flat with 16 KiB reads, at the same answers/s. uvloop reads into its own buffer: unaffected.
_READ_SIZE = 16 * 1024


# A connection's state, as its guard sees it. _BUSY is 0, so the hot path tests it alone.
_BUSY = 0  # reading a request, or handling it, or writing the answer
_NEW = 1  # no complete request head yet: the first-request deadline runs
_IDLE = 2  # served, and waiting for its next request


class _Limits:
    """The connection caps and first-request deadline, shared by all listeners of one runner."""

    def __init__(
        self,
        max_connections: int,
        request_timeout: float,
        per_ip: int = 0,
        real_ip: RealIp | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.per_ip = per_ip
        # Behind a reverse proxy every client has the proxy's address: proxies are not limited.
        self.real_ip = real_ip or RealIp()
        self.open: dict[_Guard, None] = {}
        # Connections still waiting for their first complete request, oldest first.
        self.waiting: dict[_Guard, None] = {}
        # Connections served and waiting for their next request, longest idle first.
        self.idle: dict[_Guard, None] = {}
        # Connections taken over as WebSockets: outside the cap (johnlocke.websocket has its own).
        self.upgraded: dict[_Guard, None] = {}
        # TLS handshakes waiting for the client (``_TlsGuard``), kept until done.
        self.handshakes: set[asyncio.Task[None]] = set()
        # One timer for all first-request deadlines, due at the oldest waiting connection's.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.per_address: dict[bytes, int] = {}
        self.evicted = 0
        self.reclaimed = 0
        self.timed_out = 0
        self.refuse = RareWarning(
            log,
            "connection limit reached ([http] max_connections = %d): refused %d connections"
            " since the last warning",
        )
        self.refuse_address = RareWarning(
            log,
            "connections from one address over [http] max_connections_per_ip = %d (the last"
            " from %s): refused %d connections since the last warning",
        )

    def make_room(self) -> bool:
        """Close one connection for a newcomer, if one may go; whether one went.

        First the oldest that never sent a request, unless it is younger than ``_GRACE`` (it
        has had no time to: a new client's request follows its connection at once); then the
        one idle the longest; then the young one after all. A busy connection stays.
        """
        waiting = self.waiting
        if waiting:
            oldest = next(iter(waiting))
            if not self.idle or oldest.age() >= _GRACE:
                self.evicted += 1
                oldest.drop()
                return True
        if self.idle:
            self.reclaimed += 1
            next(iter(self.idle)).drop()
            return True
        return False

    def wait(self, guard: _Guard) -> None:
        """``guard``'s connection waits for its first request from now (``waiting``)."""
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        guard.since = now = loop.time()
        self.waiting[guard] = None
        if self.deadline is None:
            self.deadline = loop.call_at(now + self.request_timeout, self._expire)

    def _expire(self) -> None:
        """Close the connections whose first request is overdue; wait for the next deadline."""
        self.deadline = None
        loop = self.loop
        assert loop is not None
        cutoff = loop.time() - self.request_timeout
        waiting = self.waiting
        while waiting:
            oldest = next(iter(waiting))  # oldest first: the rest are younger
            if oldest.since > cutoff:
                self.deadline = loop.call_at(oldest.since + self.request_timeout, self._expire)
                return
            self.timed_out += 1
            oldest.drop()  # leaves waiting

    @property
    def refused(self) -> int:
        return self.refuse.count + self.refuse_address.count

    def abort_all(self) -> None:
        """Close every connection now, answers unsent or not (the shutdown deadline)."""
        if self.open:
            log.warning(
                "[http] shutdown_timeout reached: closing %d connections still busy", len(self.open)
            )
        for guard in list(self.open):
            guard.drop(abort=True)


class _Guard(asyncio.Protocol):
    """One connection: enforces ``_Limits`` and passes every event on to aiohttp's handler."""

    __slots__ = (
        "limits", "make", "inner", "transport", "since", "seen", "tail", "state", "group",
        "websocket",
    )  # fmt: skip

    def __init__(self, limits: _Limits, make: Callable[[], asyncio.Protocol]) -> None:
        self.limits = limits
        self.make = make
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.since = 0.0  # when it began to wait for its first request
        self.seen = 0
        self.tail = b""
        self.state = _BUSY
        self.group: bytes | None = None
        self.websocket = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self.limits
        if limits.per_ip:
            peer = transport.get_extra_info("peername")
            if peer and not limits.real_ip.is_trusted(peer[0]):
                group = address_group(pack_ip(peer[0]))
                count = limits.per_address.get(group, 0)
                if count >= limits.per_ip:
                    limits.refuse_address(limits.per_ip, peer[0])
                    transport.close()
                    return
                limits.per_address[group] = count + 1
                self.group = group
        if len(limits.open) >= limits.max_connections and not limits.make_room():
            self._ungroup()
            limits.refuse(limits.max_connections)
            transport.close()
            return
        limits.open[self] = None
        if getattr(transport, "max_size", 0) > _READ_SIZE:
            transport.max_size = _READ_SIZE  # type: ignore[attr-defined]
        self.transport = transport  # type: ignore[assignment]
        self.state = _NEW
        limits.wait(self)
        self._serve(transport)

    def _serve(self, transport: asyncio.BaseTransport) -> None:
        """Hand the connection, counted and timed, to aiohttp's handler."""
        self.inner = inner = self.make()
        if isinstance(inner, _Handler):
            inner.guard = self
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.state:
            if self.state == _IDLE:
                # A new request begins: the connection is busy until it has been answered.
                self.state = _BUSY
                del self.limits.idle[self]
            else:
                self._watch(data)
                if self.transport is None:
                    return
        self.inner.data_received(data)  # type: ignore[union-attr]

    def answered(self) -> None:
        """aiohttp has written an answer: the connection waits for its next request."""
        if self.transport is None or self.websocket:
            return
        if self.state:
            if self.state == _IDLE:
                # A pipelined request answered: idle since now, not since the one before.
                del self.limits.idle[self]
            else:
                self._unwait()  # answered before its head was complete: an error
        self.state = _IDLE
        self.limits.idle[self] = None

    def upgraded(self, inner: asyncio.Protocol) -> None:
        """The connection is a WebSocket now (``johnlocke.websocket``): ``inner`` gets its events
        from here on; it leaves the HTTP cap and is never closed to make room."""
        limits = self.limits
        self._unwait()
        if self.state == _IDLE:
            del limits.idle[self]
        self.state = _BUSY
        if limits.open.pop(self, 0) is None:
            limits.upgraded[self] = None
        self.websocket = True
        self.inner = inner

    def _watch(self, data: bytes) -> None:
        # A whole head in one read, nearly always: no copy.
        buf = self.tail + data if self.tail else data
        if b"\r\n\r\n" in buf or b"\n\n" in buf:
            self._unwait()
            self.tail = b""
            return
        self.seen += len(data)
        if self.seen > _MAX_HEAD:
            self.drop()
            return
        self.tail = buf[-3:]

    def age(self) -> float:
        """Seconds since the connection was made (while its first request is awaited)."""
        if self not in self.limits.waiting:
            return float("inf")
        loop = self.limits.loop
        assert loop is not None
        return loop.time() - self.since

    def _unwait(self) -> None:
        """The first request is in (or the connection gone): no deadline any more."""
        self.limits.waiting.pop(self, None)
        self.state = _BUSY

    def _ungroup(self) -> None:
        group = self.group
        if group is not None:
            self.group = None
            per_address = self.limits.per_address
            count = per_address[group] - 1
            if count:
                per_address[group] = count
            else:
                del per_address[group]

    def _release(self) -> None:
        if self.state == _IDLE:
            del self.limits.idle[self]
        self._unwait()
        limits = self.limits
        if limits.open.pop(self, 0) is None or limits.upgraded.pop(self, 0) is None:
            self._ungroup()

    def drop(self, abort: bool = False) -> None:
        """Close the connection now (aiohttp's handler hears of it through connection_lost).

        A close still sends what the transport holds; ``abort`` discards it."""
        self._release()
        transport = self.transport
        self.transport = None
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self.transport = None
        inner = self.inner
        if inner is not None:
            self.inner = None
            inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class _TlsGuard(_Guard):
    """A TLS connection, counted from the moment it is accepted.

    The listener accepts plain TCP and the guard runs the handshake itself (``start_tls``), so a
    handshake holds one of the connections ``_Limits`` allows, from its address's share, and its
    first-request deadline covers handshake and request head together: connections that never
    finish a handshake are evicted, timed out and refused like any that never send a request.
    The guard is the TLS layer's protocol, so it sees the decrypted bytes; what arrives between
    the end of the handshake and aiohttp's handler taking over is kept for the handler.
    """

    __slots__ = ("context", "handshake_timeout", "early")

    def __init__(
        self,
        limits: _Limits,
        make: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        handshake_timeout: float,
    ) -> None:
        super().__init__(limits, make)
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.early: list[bytes] | None = []

    def _serve(self, transport: asyncio.BaseTransport) -> None:
        # Run at once, inside connection_made, up to start_tls's wait for the handshake: the TLS
        # layer is the socket's protocol before a byte can be read (a task would start it a loop
        # turn later, and uvloop would hand the client's hello to this protocol meanwhile).
        eager.run(self._handshake(transport), self.limits.handshakes)

    async def _handshake(self, raw: asyncio.BaseTransport) -> None:
        try:
            secure = await asyncio.get_running_loop().start_tls(
                raw,  # type: ignore[arg-type]
                self,
                self.context,
                server_side=True,
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except Exception as exc:  # a failed handshake, or the guard closed it meanwhile
            log.debug("TLS handshake failed: %r", exc)
            self.drop()
            return
        self._secured(secure)

    def _secured(self, secure: asyncio.BaseTransport | None) -> None:
        if self.transport is None or secure is None:  # closed after the handshake was done
            if secure is not None:
                secure.close()
            return
        self.transport = secure  # type: ignore[assignment]
        super()._serve(secure)
        early, self.early = self.early, None
        for data in early or ():
            if self.inner is None:
                break
            self.inner.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self.early is None:
            _Guard.data_received(self, data)
            return
        # Decrypted before aiohttp's handler exists: watched, and kept for it.
        if self.state == _NEW:
            self._watch(data)
            if self.transport is None:
                return
        self.early.append(data)


class _Handler(web.RequestHandler):
    """aiohttp's connection handler, telling its guard when an answer has been written.

    ``log_access`` is what aiohttp calls once it has written each answer (whether or not the
    access log is on), so this is where a connection becomes idle.
    """

    __slots__ = ("guard",)
    guard: _Guard

    def __init__(self, manager: web.Server, *, frontend: Frontend | None, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        # The hot routes skip aiohttp's request objects (johnlocke.http.lean), unless the
        # access log is on: aiohttp writes its lines.
        if frontend is not None and not self._logging_enabled and lean.supported(self):
            self._parser = lean.LeanParser(self._parser, self, frontend)  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(self._parser, lean.LeanParser):
            web.RequestHandler.connection_made(self, transport)
            return
        # aiohttp's, less its connection task (the lean parser starts it once it hands
        # aiohttp a request), its first-request timer (the guard times that) and its
        # TCP_NODELAY: a syscall per connection, and asyncio's and uvloop's transports have set
        # it already (tests/test_lean.py checks).
        self.transport = transport  # type: ignore[assignment]
        if self._tcp_keepalive:
            tcp_keepalive(transport)  # type: ignore[arg-type]
        self._manager.connection_made(self, transport)  # type: ignore[union-attr]

    def log_access(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float | None
    ) -> None:
        web.RequestHandler.log_access(self, request, response, time)
        self.guard.answered()


def _http1(make: Any) -> Any:
    """A request factory that reads a request line's HTTP version as one this server speaks.

    aiohttp answers with the version of the request line, and its parser lets 0.9 and 2.0 by:
    "GET / HTTP/2.0" would get an "HTTP/2.0 200 OK" over HTTP/1. A server answers with the
    highest version it speaks that is not above the client's (RFC 9112, 2.3): 1.1 for 2.0, and
    1.0 (the least it speaks) for 0.9, which had no status line at all.
    """

    def factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
        version = message.version
        # aiohttp's C parser hands out its HttpVersion10/11 objects: one identity test.
        if version is not HttpVersion11 and version is not HttpVersion10:
            if version > HttpVersion11:
                message = message._replace(version=HttpVersion11)
            elif version < HttpVersion10:
                message = message._replace(version=HttpVersion10)
        return make(message, payload, protocol, writer, task)

    return factory


class _GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose listeners create ``_Guard`` protocols around aiohttp's handlers.

    Sites get their protocol factory from ``runner.server``; the runner itself keeps using the
    real ``web.Server`` for shutdown, so closing and draining connections work as usual, within
    one deadline (``cleanup``).
    """

    def __init__(
        self,
        app: web.Application,
        limits: _Limits,
        shutdown_timeout: float,
        lean_path: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, shutdown_timeout=shutdown_timeout, **kwargs)
        self.limits = limits
        self.lean_path = lean_path
        self.shutdown_timeout = shutdown_timeout
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._make: Callable[[], asyncio.Protocol] | None = None
        self._for: web.Server | None = None

    @property
    def server(self) -> Any:
        inner = super().server
        if inner is None:
            return None
        if self._for is not inner:
            inner.request_factory = _http1(inner.request_factory)
            # What web.Server() does to make a connection's handler, with our subclass.
            frontend = self._app.get(FRONTEND) if self.lean_path else None
            make = functools.partial(
                _Handler, inner, frontend=frontend, loop=inner._loop, **inner._kwargs
            )
            self._factory = functools.partial(_Guard, self.limits, make)
            self._make = make
            self._for = inner
        return self._factory

    def tls_server(self, context: ssl.SSLContext, handshake_timeout: float) -> Any:
        """The protocol factory of a TLS listener (``johnlocke.http.tls.Site``), which accepts
        plain TCP: each ``_TlsGuard`` runs its own handshake."""
        if self.server is None:
            return None
        return functools.partial(_TlsGuard, self.limits, self._make, context, handshake_timeout)

    async def cleanup(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.call_later(self.shutdown_timeout, self.limits.abort_all)
        try:
            await super().cleanup()
        finally:
            deadline.cancel()


def _raise_open_file_limit(connections: int) -> None:
    """Let the process hold ``connections`` sockets plus a margin, if the hard limit allows."""
    try:
        import resource
    except ImportError:
        return
    want = connections + 64  # listeners, the snapshot, logs, the event loop's own descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError):
        new = soft
    if new < want:
        log.warning(
            "the open-file limit (%d) is below [http] max_connections (%d) plus a margin:"
            " raise it (ulimit -n, LimitNOFILE=) or lower max_connections",
            new,
            connections,
        )


def make_runner(
    app: web.Application, config: Config, lean_path: bool = True, **options: Any
) -> web.AppRunner:
    """The daemon's runner for ``app``: guarded connections (``_Guard``), the lean path unless
    ``lean_path`` is False (aiohttp's handlers answer everything: what the tests compare it with),
    the settings of ``runner_options``; ``options`` override those (the tests' server adds its
    own)."""
    http = config.http
    limits = _Limits(
        http.max_connections,
        http.request_timeout,
        http.connections_per_ip,
        RealIp(http.trusted_proxies, http.real_ip_header),
    )
    return _GuardedRunner(app, limits, lean_path=lean_path, **{**runner_options(config), **options})


async def start(
    app: web.Application,
    config: Config,
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
    port: int | None = None,
    lean_path: bool = True,
) -> web.AppRunner:
    """Listen on every configured address (over TLS with ``ssl_context``, see
    ``johnlocke.http.tls``); raise OSError if none could be bound.

    ``reuse_port``: share the port with the other worker processes (SO_REUSEPORT); ``port``
    overrides ``[http] port`` (the supervisor's choice when the configuration says 0);
    ``lean_path`` as for ``make_runner``."""
    w = config.webtorrent
    _raise_open_file_limit(config.http.max_connections + (w.max_connections if w.enabled else 0))
    runner = make_runner(app, config, lean_path)
    await runner.setup()
    bound = []
    errors = []
    port = config.http.port if port is None else port
    for host in config.http.host:
        site: web.BaseSite
        if ssl_context is None:
            site = web.TCPSite(
                runner, host, port, reuse_address=True, reuse_port=reuse_port or None
            )
        else:
            site = tls.Site(
                runner, host, port, ssl_context, config.http.request_timeout, reuse_port
            )
        try:
            await site.start()
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc.strerror or exc}")
            continue
        bound.append(site)
    if not bound:
        await runner.cleanup()
        raise OSError("cannot listen on " + "; ".join(errors))
    for err in errors:
        log.warning("not listening on %s", err)
    return runner


def listening(runner: web.AppRunner) -> list[tuple[str, int]]:
    """The (host, port) pairs actually bound (useful with port = 0)."""
    return [(addr[0], addr[1]) for addr in runner.addresses]
