"""The HTTP server: the aiohttp application and listeners around the codec.

It finds the client's address, hands the raw query bytes to ``johnlocke.http.codec`` and the
parsed request to ``johnlocke.tracker``, and writes the bencoded answer. Every answer to
``/announce`` and ``/scrape`` is HTTP 200: clients read failures from the bencoded body.

It also serves what the operator reads (``/stats``, ``/metrics``, the status page) to the
addresses ``[stats]`` allows, and writes the access log when it is on.

A passkey may come in the path, as ``/announce/KEY`` or ``/KEY/announce`` (the second lets
clients derive the scrape URL, BEP 48: they replace "announce" in the last path segment), or
as ``?passkey=KEY``; the path wins. Logged paths are masked (``johnlocke.logs.mask``).

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
the bytes and holds a timer; a connection that does not deliver its head within ``[http]
request_timeout`` seconds, or sends more than ``_MAX_HEAD`` bytes without finishing it, is
closed. After that the guard only forwards ``data_received`` (one attribute test, ~50 ns; see
``benchmarks/guard_overhead.py``). Later requests on a keep-alive connection fall under
aiohttp's ``keepalive_timeout``.

At most ``[http] max_connections`` connections are open at once, across all listeners. When a new
one arrives at the cap, the oldest connection still waiting for its first request is closed to
make room (an attacker holding connections open with partial requests loses them to real clients,
which send a request at once); if every connection is busy or served, the new one is closed
(logged at most once a minute). The process's open-file limit is raised to fit the cap. The
guard also caps asyncio's read size per connection (see ``_READ_SIZE``) to keep memory flat.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from ipaddress import ip_address
from socket import AF_INET, AF_INET6, inet_pton
from time import perf_counter
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.exposition import choose_encoder

from johnlocke import status_page
from johnlocke.bittorrent import split_target
from johnlocke.config import Config
from johnlocke.errors import ClientError
from johnlocke.http import codec as protocol
from johnlocke.logs import ACCESS_LOGGER, mask
from johnlocke.stats import INTERNAL_REASON, LATENCY_BOUNDS, StatsService
from johnlocke.tracker import Tracker

log = logging.getLogger("johnlocke.http")

_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
_INTERNAL = protocol.encode_failure("internal tracker error")


def pack_ip(host: str) -> bytes:
    """A textual address to 4 or 16 packed bytes; IPv4-mapped IPv6 becomes IPv4."""
    try:
        return inet_pton(AF_INET, host)
    except OSError:
        packed = inet_pton(AF_INET6, host.partition("%")[0])
        return packed[12:] if packed[:12] == _V4_MAPPED else packed


def _raw_query(request: web.BaseRequest) -> bytes:
    # raw_path is the request target as the client sent it (decoded from bytes with
    # surrogateescape by aiohttp's parser), so this gets the exact bytes back.
    return request.raw_path.partition("?")[2].encode("utf-8", "surrogateescape")


class Frontend:
    def __init__(self, tracker: Tracker, config: Config, service: StatsService) -> None:
        self.tracker = tracker
        self.tracker_id = tracker.tracker_id
        self.trusted = tuple(config.http.trusted_proxies)
        self.service = service
        self.stats = st = service.stats
        # The counters' own lists, one attribute lookup away on the hot path.
        self.events = st.events
        self.announce_latency = st.announce_latency
        self.latency_counts = st.announce_latency.counts

    def client_ip(self, request: web.BaseRequest) -> tuple[bytes, bool]:
        """The peer's packed address, and whether it came from a trusted proxy's header."""
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not peer:
            raise ClientError("cannot determine the client address")
        host = peer[0]
        if self.trusted:
            src = ip_address(host)
            if any(src in net for net in self.trusted):
                forwarded = self._forwarded(request)
                return (pack_ip(host) if forwarded is None else forwarded), True
        return pack_ip(host), False

    def _forwarded(self, request: web.BaseRequest) -> bytes | None:
        """The rightmost X-Forwarded-For hop that is not itself a trusted proxy (or X-Real-IP)."""
        xff = request.headers.get("X-Forwarded-For")
        candidates = [h.strip() for h in xff.split(",")] if xff else []
        real = request.headers.get("X-Real-IP")
        if not candidates and real:
            candidates = [real.strip()]
        for text in reversed(candidates):
            try:
                addr = ip_address(text)
            except ValueError:
                raise ClientError("proxy sent an unreadable X-Forwarded-For") from None
            if not any(addr in net for net in self.trusted):
                return pack_ip(str(addr))
        return None

    def client_text(self, request: web.BaseRequest) -> str:
        """The client's address as text, for logs; "-" if it cannot be told."""
        try:
            ip, _ = self.client_ip(request)
        except (ClientError, ValueError, OSError):
            return "-"
        return str(ip_address(ip))

    async def announce(
        self, request: web.BaseRequest, passkey: bytes | None = None
    ) -> web.Response:
        t0 = perf_counter()  # stats
        try:
            ip, trusted = self.client_ip(request)
            req = protocol.parse_announce(_raw_query(request))
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
            log.exception("announce failed: %s", mask(request.raw_path[:200]))
            body = _INTERNAL
            self.stats.fail(INTERNAL_REASON)  # stats
        dt = perf_counter() - t0  # stats
        self.latency_counts[bisect_left(LATENCY_BOUNDS, dt)] += 1  # stats
        self.announce_latency.sum += dt  # stats
        return web.Response(body=body, content_type="text/plain")

    async def scrape(self, request: web.BaseRequest, passkey: bytes | None = None) -> web.Response:
        t0 = perf_counter()  # stats
        try:
            hashes, query_key = protocol.parse_scrape(_raw_query(request))
            # The sender's address only matters to the full-scrape budget.
            ip = None if hashes else self.client_ip(request)[0]
            rows = await self.tracker.scrape(hashes, query_key if passkey is None else passkey, ip)
            body = protocol.encode_scrape(rows)
        except ClientError as exc:
            body = protocol.encode_failure(exc.reason)
            self.stats.fail(exc.reason)  # stats
        except Exception:
            log.exception("scrape failed: %s", mask(request.raw_path[:200]))
            body = _INTERNAL
            self.stats.fail(INTERNAL_REASON)  # stats
        self.stats.scrape_latency.observe(perf_counter() - t0)  # stats
        return web.Response(body=body, content_type="text/plain")

    async def announce_keyed(self, request: web.Request) -> web.Response:
        return await self.announce(request, _path_key(request))

    async def scrape_keyed(self, request: web.Request) -> web.Response:
        return await self.scrape(request, _path_key(request))

    # --- what the operator reads -----------------------------------------------------------

    def stats_allowed(self, request: web.BaseRequest) -> bool:
        """From an address in ``[stats] allow``, or with the token (bearer header or ?token=)."""
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token: str | None = auth[7:].strip()
        else:
            token = request.query.get("token")
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


def _path_key(request: web.Request) -> bytes | None:
    # The path as the router matched it (normalised, still percent-encoded), read by the rule
    # the UDP frontend applies to BEP 41 URL data too.
    return split_target(request.rel_url.raw_path.encode("utf-8", "surrogateescape"))[1]


def _forbidden() -> web.Response:
    return web.Response(
        status=403,
        text="403 forbidden: the tracker's stats are not open to this address"
        " (see [stats] allow and token in its configuration)\n",
    )


class AccessLogger(AbstractAccessLogger):
    """One line per request on the ``johnlocke.access`` logger, passkeys and tokens masked.

    aiohttp asks ``enabled`` once per connection (the logger's level, set from
    ``[log] access_log``), so this costs nothing while the access log is off.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return  # an aiohttp too old to ask ``enabled`` calls this for every request
        try:
            frontend = request.app[FRONTEND] if isinstance(request, web.Request) else None
            remote = frontend.client_text(request) if frontend else (request.remote or "-")
            target = mask(request.raw_path)
            version = request.version
            agent = request.headers.get("User-Agent", "-")
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
            log.exception("cannot write an access log line")

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


FRONTEND = web.AppKey("frontend", Frontend)


def build_app(
    tracker: Tracker, config: Config, service: StatsService | None = None
) -> web.Application:
    """The tracker's app. Without ``service``, the app makes and runs its own StatsService."""
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
    app.router.add_get("/announce", frontend.announce)
    app.router.add_get("/scrape", frontend.scrape)
    app.router.add_get("/stats", frontend.stats_json)
    app.router.add_get("/metrics", frontend.metrics)
    if config.stats.page:
        app.router.add_get(config.stats.page, frontend.status)
    # After the fixed routes, so /stats and the status page are never taken for a passkey.
    app.router.add_get("/announce/{passkey}", frontend.announce_keyed)
    app.router.add_get("/scrape/{passkey}", frontend.scrape_keyed)
    app.router.add_get("/{passkey}/announce", frontend.announce_keyed)
    app.router.add_get("/{passkey}/scrape", frontend.scrape_keyed)
    return app


def runner_options(config: Config) -> dict[str, Any]:
    """Server settings, shared by ``start`` and the tests' servers."""
    return {
        "access_log": logging.getLogger(ACCESS_LOGGER),
        "access_log_class": AccessLogger,
        "shutdown_timeout": config.http.shutdown_timeout,
        "keepalive_timeout": config.http.keepalive_timeout,
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
_WARN_EVERY = 60.0  # seconds between two "connection limit reached" warnings
# asyncio's selector transport reads up to 256 KiB at a time: a 256 KiB buffer per read, shrunk
# to the few hundred bytes that came. Under glibc's malloc that fragments the heap (once the
# first such buffer is freed, the dynamic mmap threshold rises and every read buffer comes from
# the heap): in benchmarks/soak.py the RSS crept up ~1 MB/min under hostile traffic, and stayed
# flat with 16 KiB reads, at the same answers/s. uvloop reads into its own buffer: unaffected.
_READ_SIZE = 16 * 1024


class _Limits:
    """The connection cap and first-request deadline, shared by all listeners of one runner."""

    def __init__(self, max_connections: int, request_timeout: float) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.open = 0
        # Connections still waiting for their first complete request, oldest first.
        self.waiting: dict[_Guard, None] = {}
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0
        self._refused_logged = 0
        self._warned = -_WARN_EVERY

    def refuse(self) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            log.warning(
                "connection limit reached ([http] max_connections = %d): refused %d connections"
                " since the last warning",
                self.max_connections,
                self.refused - self._refused_logged,
            )
            self._warned = now
            self._refused_logged = self.refused


class _Guard(asyncio.Protocol):
    """One connection: enforces ``_Limits`` and passes every event on to aiohttp's handler."""

    __slots__ = ("limits", "make", "inner", "transport", "timer", "seen", "tail", "counted")

    def __init__(self, limits: _Limits, make: Callable[[], asyncio.Protocol]) -> None:
        self.limits = limits
        self.make = make
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.seen = 0
        self.tail = b""
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self.limits
        if limits.open >= limits.max_connections:
            if limits.waiting:
                limits.evicted += 1
                next(iter(limits.waiting)).drop()
            else:
                limits.refuse()
                transport.close()
                return
        limits.open += 1
        self.counted = True
        if getattr(transport, "max_size", 0) > _READ_SIZE:
            transport.max_size = _READ_SIZE  # type: ignore[attr-defined]
        self.transport = transport  # type: ignore[assignment]
        self.timer = asyncio.get_running_loop().call_later(limits.request_timeout, self._expire)
        limits.waiting[self] = None
        self.inner = self.make()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            self._watch(data)
            if self.transport is None:
                return
        self.inner.data_received(data)  # type: ignore[union-attr]

    def _watch(self, data: bytes) -> None:
        buf = self.tail + data
        if b"\r\n\r\n" in buf or b"\n\n" in buf:
            self._release_timer()
            self.tail = b""
            return
        self.seen += len(data)
        if self.seen > _MAX_HEAD:
            self.drop()
            return
        self.tail = buf[-3:]

    def _expire(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.limits.timed_out += 1
            self.drop()

    def _release_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.limits.waiting.pop(self, None)

    def _release(self) -> None:
        self._release_timer()
        if self.counted:
            self.counted = False
            self.limits.open -= 1

    def drop(self) -> None:
        """Close the connection now (aiohttp's handler hears of it through connection_lost)."""
        self._release()
        transport = self.transport
        self.transport = None
        if transport is not None:
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


class _GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose listeners create ``_Guard`` protocols around aiohttp's handlers.

    Sites get their protocol factory from ``runner.server``; the runner itself keeps using the
    real ``web.Server`` for shutdown, so closing and draining connections work as usual.
    """

    def __init__(self, app: web.Application, limits: _Limits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._for: web.Server | None = None

    @property
    def server(self) -> Any:
        inner = super().server
        if inner is None:
            return None
        if self._for is not inner:
            self._factory = functools.partial(_Guard, self.limits, inner)
            self._for = inner
        return self._factory


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


async def start(app: web.Application, config: Config) -> web.AppRunner:
    """Listen on every configured address; raise OSError if none could be bound."""
    _raise_open_file_limit(config.http.max_connections)
    limits = _Limits(config.http.max_connections, config.http.request_timeout)
    runner = _GuardedRunner(app, limits, **runner_options(config))
    await runner.setup()
    bound = []
    errors = []
    for host in config.http.host:
        site = web.TCPSite(runner, host, config.http.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            errors.append(f"{host}:{config.http.port}: {exc.strerror or exc}")
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
