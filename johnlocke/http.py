"""The aiohttp frontend: the only module that imports aiohttp.

It finds the client's address, hands the raw query bytes to ``johnlocke.protocol`` and the
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
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from ipaddress import ip_address
from socket import AF_INET, AF_INET6, inet_pton
from time import perf_counter
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client.exposition import choose_encoder

from johnlocke import protocol, status_page
from johnlocke.config import Config
from johnlocke.errors import ClientError
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
            body = await self.tracker.announce(req, ip, trusted)
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
            body = await self.tracker.scrape(hashes, query_key if passkey is None else passkey, ip)
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


def _path_key(request: web.Request) -> bytes:
    return request.match_info["passkey"].encode("utf-8", "surrogateescape")


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
    }


async def start(app: web.Application, config: Config) -> web.AppRunner:
    """Listen on every configured address; raise OSError if none could be bound."""
    runner = web.AppRunner(app, **runner_options(config))
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
