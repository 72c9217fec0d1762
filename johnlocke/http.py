"""The aiohttp frontend: the only module that imports aiohttp.

It finds the client's address, hands the raw query bytes to ``johnlocke.protocol`` and the
parsed request to ``johnlocke.tracker``, and writes the bencoded answer. Every answer to
``/announce`` and ``/scrape`` is HTTP 200: clients read failures from the bencoded body.

A passkey may come in the path, as ``/announce/KEY`` or ``/KEY/announce`` (the second lets
clients derive the scrape URL, BEP 48: they replace "announce" in the last path segment), or
as ``?passkey=KEY``; the path wins. Paths are masked (``johnlocke.access.redact``) before they
are logged.
"""

from __future__ import annotations

import logging
from ipaddress import ip_address
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any

from aiohttp import web

from johnlocke import protocol
from johnlocke.access import redact
from johnlocke.config import Config
from johnlocke.errors import ClientError
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
    def __init__(self, tracker: Tracker, config: Config) -> None:
        self.tracker = tracker
        self.trusted = tuple(config.http.trusted_proxies)

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

    async def announce(
        self, request: web.BaseRequest, passkey: bytes | None = None
    ) -> web.Response:
        try:
            ip, trusted = self.client_ip(request)
            req = protocol.parse_announce(_raw_query(request))
            if passkey is not None:
                req.passkey = passkey
            body = await self.tracker.announce(req, ip, trusted)
        except ClientError as exc:
            body = protocol.encode_failure(exc.reason)
        except Exception:
            log.exception("announce failed: %s", redact(request.raw_path[:200]))
            body = _INTERNAL
        return web.Response(body=body, content_type="text/plain")

    async def scrape(self, request: web.BaseRequest, passkey: bytes | None = None) -> web.Response:
        try:
            hashes, query_key = protocol.parse_scrape(_raw_query(request))
            # The sender's address only matters to the full-scrape budget.
            ip = None if hashes else self.client_ip(request)[0]
            body = await self.tracker.scrape(hashes, query_key if passkey is None else passkey, ip)
        except ClientError as exc:
            body = protocol.encode_failure(exc.reason)
        except Exception:
            log.exception("scrape failed: %s", redact(request.raw_path[:200]))
            body = _INTERNAL
        return web.Response(body=body, content_type="text/plain")

    async def announce_keyed(self, request: web.Request) -> web.Response:
        return await self.announce(request, _path_key(request))

    async def scrape_keyed(self, request: web.Request) -> web.Response:
        return await self.scrape(request, _path_key(request))


def _path_key(request: web.Request) -> bytes:
    return request.match_info["passkey"].encode("utf-8", "surrogateescape")


def build_app(tracker: Tracker, config: Config) -> web.Application:
    frontend = Frontend(tracker, config)
    app = web.Application()
    app.router.add_get("/announce", frontend.announce)
    app.router.add_get("/scrape", frontend.scrape)
    app.router.add_get("/announce/{passkey}", frontend.announce_keyed)
    app.router.add_get("/scrape/{passkey}", frontend.scrape_keyed)
    app.router.add_get("/{passkey}/announce", frontend.announce_keyed)
    app.router.add_get("/{passkey}/scrape", frontend.scrape_keyed)
    return app


def runner_options(config: Config) -> dict[str, Any]:
    """Server settings, shared by ``start`` and the tests' servers."""
    return {
        "access_log": None,
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
