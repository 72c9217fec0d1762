"""The UDP server: the sockets around ``johnlocke.udp.codec``, on the tracker HTTP uses.

One datagram is one request: it is triaged and its connection id checked (``codec``), parsed,
handed to ``Tracker.announce`` or ``Tracker.scrape`` exactly as an HTTP request is, and the
answer is encoded in one step and sent with one ``sendto``. The handler never raises: a datagram
that is not a request is counted by reason (``Stats.udp.bad``) and dropped, a refused request
gets an error packet with the same reason HTTP would send, and anything unexpected is logged and
answered with a generic error.

Each socket is read by the server itself (``loop.add_reader``), up to ``_BATCH`` datagrams per
wake-up, and answered with the socket's own ``sendto``: asyncio's datagram transport wakes the
loop once per datagram and allocates a 256 KiB buffer for each; behind it the same handler cost
twice the CPU per announce (78-85 against 38-41 us, measured in turns with the benchmark's load
generator). An answer that does not fit in the socket's send buffer is dropped and counted (the
client asks again), never queued.

The tracker's methods are coroutines. A datagram is handled by running its coroutine at once,
inside ``datagram_received``: with a store that answers without waiting (the memory store) it
finishes there, with no task and no extra turn of the event loop. One that does wait (a store
doing I/O) is finished by a task (``johnlocke.eager``), so the server works with either.

Statements that exist only to count for ``/stats`` end with ``# stats``, as in the HTTP server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from bisect import bisect_left
from collections.abc import Callable, Coroutine
from hashlib import blake2b
from time import perf_counter
from typing import Any
from urllib.parse import quote_from_bytes

from johnlocke import eager
from johnlocke.config import Config
from johnlocke.errors import ClientError
from johnlocke.logs import ACCESS_LOGGER, mask
from johnlocke.stats import INTERNAL_REASON, LATENCY_BOUNDS, Stats, client_prefix
from johnlocke.tracker import Tracker
from johnlocke.udp import codec

log = logging.getLogger("johnlocke.udp")
access_log = logging.getLogger(ACCESS_LOGGER)

_UNKNOWN_ACTION = "unknown action (expected 0 connect, 1 announce or 2 scrape)"
# Datagrams read per wake-up before the event loop gets a turn (HTTP shares it).
_BATCH = 64
# One byte more than any request may be: a longer datagram arrives cut, and is refused as
# too long.
_READ_SIZE = codec.MAX_DATAGRAM + 1
# Characters kept as they are when URL data is logged; anything else is percent-encoded, so a
# client cannot write control characters or quotes into the access log.
_LOG_SAFE = "/?&=;:@!$'()*+,-._~%"


def hosts(config: Config) -> list[str]:
    """The addresses UDP listens on: ``[udp] host``, or else those of ``[http] host``."""
    return list(config.udp.host if config.udp.host is not None else config.http.host)


def port(config: Config) -> int:
    """The UDP port: ``[udp] port``, or else the same number as ``[http] port``."""
    return config.udp.port if config.udp.port is not None else config.http.port


def make_secret(config: Config) -> bytes:
    """The connection-id key: derived from ``[udp] secret``, or random for this process.

    A parent that starts several processes on one port calls this once and hands the result to
    each of them (``UdpServer(secret=...)``), so they all accept each other's ids.
    """
    if config.udp.secret:
        return blake2b(config.udp.secret.encode("utf-8"), digest_size=32).digest()
    return os.urandom(32)


class UdpFrontend:
    """One socket's requests: every datagram in, at most one datagram out through ``sendto``
    (the socket's own, or anything that takes ``(bytes, address)``)."""

    _log_failed = False

    def __init__(
        self,
        tracker: Tracker,
        stats: Stats,
        secret: bytes,
        lifetime: int,
        family: int,
        sendto: Callable[[bytes, Any], object],
    ) -> None:
        self.tracker = tracker
        self.stats = stats
        self.udp = stats.udp
        self.secret = secret
        self.lifetime = lifetime
        self.family = family
        self.v6 = family == socket.AF_INET6
        self.sendto = sendto
        self.pending: set[asyncio.Task[None]] = set()
        # The counters' own lists, one attribute lookup away on the hot path.
        self.events = self.udp.events
        self.latency = self.udp.announce_latency
        self.latency_counts = self.udp.announce_latency.counts

    def read_ready(self, recvfrom: Callable[[int], tuple[bytes, Any]]) -> None:
        """The socket is readable: handle what is waiting, up to ``_BATCH`` datagrams."""
        for _ in range(_BATCH):
            try:
                data, addr = recvfrom(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error for an earlier answer (a client that went away).
                log.debug("UDP receive error: %s", exc)
                return
            self.datagram_received(data, addr)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Handle one datagram from ``addr``; never raises."""
        try:
            self._datagram(data, addr)
        except Exception:
            log.exception("UDP datagram from %s failed", addr[0] if addr else "?")
            self.udp.fail(INTERNAL_REASON)  # stats

    # --- requests --------------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: Any) -> None:
        try:
            action, transaction_id = codec.read_header(data)
        except codec.Drop as drop:
            self.udp.drop(drop.reason)  # stats
            return
        host = addr[0]
        ip = socket.inet_pton(self.family, host.partition("%")[0] if self.v6 else host)
        window = codec.time_window(time.time(), self.lifetime)
        if action == codec.CONNECT:
            self.udp.connects += 1  # stats
            cid = codec.connection_id(self.secret, ip, window)
            self._send(codec.encode_connect(transaction_id, cid), addr)
            return
        if not codec.connection_id_ok(data[:8], self.secret, ip, window):
            self.udp.drop("bad connection id")  # stats
            refusal = codec.refuse_unproven(action, transaction_id, len(data))
            if refusal is not None:
                self._send(refusal, addr)
            return
        if action == codec.ANNOUNCE:
            self._run(self._announce(data, addr, ip, transaction_id))
        elif action == codec.SCRAPE:
            self._run(self._scrape(data, addr, transaction_id))
        else:
            self.udp.drop("unknown action")  # stats
            self._send(codec.encode_error(transaction_id, _UNKNOWN_ACTION), addr)

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a handler now; if it has to wait, a task finishes it."""
        eager.run(coro, self.pending)

    async def _announce(self, data: bytes, addr: Any, ip: bytes, transaction_id: int) -> None:
        t0 = perf_counter()  # stats
        req = None
        try:
            req = codec.parse_announce(data, self.v6)
            answer = await self.tracker.announce(req, ip)
            body = codec.encode_announce(transaction_id, answer)
            self.events[req.event] += 1  # stats
            if not hash(req.peer_id) % self.stats.client_sample:  # stats
                self.stats.count_client(req.peer_id)
        except Exception as exc:
            body = self._refusal(transaction_id, exc, "announce", addr)
        dt = perf_counter() - t0  # stats
        self.latency_counts[bisect_left(LATENCY_BOUNDS, dt)] += 1  # stats
        self.latency.sum += dt  # stats
        self._send(body, addr)
        if access_log.isEnabledFor(logging.INFO):
            self._log(addr, "announce", data, req.peer_id if req else None, body, dt)

    async def _scrape(self, data: bytes, addr: Any, transaction_id: int) -> None:
        t0 = perf_counter()  # stats
        try:
            hashes = codec.parse_scrape(data)
            # BEP 15 scrapes carry no URL, so no passkey: in private mode the tracker refuses
            # them. A UDP scrape is never a full scrape (no hash is refused above).
            rows = await self.tracker.scrape(hashes)
            body = codec.encode_scrape(transaction_id, hashes, rows)
        except Exception as exc:
            body = self._refusal(transaction_id, exc, "scrape", addr)
        dt = perf_counter() - t0  # stats
        self.udp.scrape_latency.observe(dt)  # stats
        self._send(body, addr)
        if access_log.isEnabledFor(logging.INFO):
            self._log(addr, "scrape", data, None, body, dt)

    def _refusal(self, transaction_id: int, exc: Exception, action: str, addr: Any) -> bytes:
        """The error packet for a request that raised: a ``ClientError`` tells the client its
        reason; anything else is a bug, logged, and the client gets a generic error."""
        if isinstance(exc, ClientError):
            reason = exc.reason
        else:
            log.error("UDP %s from %s failed", action, addr[0], exc_info=exc)
            reason = INTERNAL_REASON
        self.udp.fail(reason)  # stats
        return codec.encode_error(transaction_id, reason)

    def _send(self, body: bytes, addr: Any) -> None:
        try:
            self.sendto(body, addr)
        except OSError as exc:
            # The send buffer is full (BlockingIOError), or the socket is closing: the answer
            # is dropped rather than queued, and the client asks again.
            self.udp.unsent += 1  # stats
            if not isinstance(exc, BlockingIOError):
                log.debug("UDP answer to %s not sent: %s", addr[0], exc)

    def _log(
        self,
        addr: Any,
        action: str,
        data: bytes,
        peer_id: bytes | None,
        body: bytes,
        seconds: float,
    ) -> None:
        """One access-log line, as HTTP writes them: the URL data stands for the request
        target (passkeys masked), the client's peer_id prefix for its user agent."""
        try:
            target = "-"
            if action == "announce" and len(data) > codec.ANNOUNCE_SIZE:
                try:
                    url = codec.url_data(data)
                except ClientError:
                    url = b""
                if url:
                    target = mask(quote_from_bytes(url, safe=_LOG_SAFE))
            status = "error" if body[3] == codec.ERROR else "ok"
            client = (client_prefix(peer_id).decode("latin-1") if peer_id else "") or "-"
            remote = addr[0]
            ms = round(seconds * 1000, 3)
            access_log.info(
                '%s "UDP %s %s" %s %d %.3fms "%s"',
                remote,
                action,
                target,
                status,
                len(body),
                seconds * 1000,
                client,
                extra={
                    "remote": remote,
                    "method": "UDP",
                    "action": action,
                    "path": target,
                    "status": status,
                    "bytes": len(body),
                    "duration_ms": ms,
                    "client": client,
                },
            )
        except Exception:
            # As over HTTP: a failure that every datagram would repeat must not flood the log.
            if UdpFrontend._log_failed:
                log.debug("cannot write an access log line", exc_info=True)
            else:
                UdpFrontend._log_failed = True
                log.exception("cannot write an access log line (further failures: debug level)")


class UdpServer:
    """Every UDP socket of ``[udp]``, each with its ``UdpFrontend``, on one tracker.

    ``secret`` is the connection-id key (default: ``make_secret(config)``); ``reuse_port`` sets
    SO_REUSEPORT, so several processes given the same secret can share the port.
    """

    def __init__(
        self,
        tracker: Tracker,
        config: Config,
        stats: Stats,
        secret: bytes | None = None,
        reuse_port: bool = False,
        http_port: int | None = None,
    ) -> None:
        """``http_port`` is the HTTP port really used when it is not ``[http] port`` (the
        supervisor's choice for its workers): with no ``[udp] port`` (or 0), UDP takes that
        number."""
        self.tracker = tracker
        self.config = config
        self.stats = stats
        self.secret = secret if secret is not None else make_secret(config)
        self.reuse_port = reuse_port
        self.http_port = http_port
        self.sockets: list[socket.socket] = []
        self.frontends: list[UdpFrontend] = []
        self.addresses: list[tuple[str, int]] = []

    async def start(self) -> None:
        """Bind every configured address; raise OSError if none could be bound."""
        loop = asyncio.get_running_loop()
        cfg = self.config.udp
        number = port(self.config)
        if not self.config.udp.port and self.http_port is not None:
            number = self.http_port  # following [http] port, or 0: the supervisor's choice
        errors = []
        granted = cfg.receive_buffer
        for host in hosts(self.config):
            for address in ("127.0.0.1", "::1") if host == "localhost" else (host,):
                try:
                    sock, got = _socket(address, number, self.reuse_port, cfg.receive_buffer)
                except OSError as exc:
                    errors.append(f"{address}:{number}: {exc.strerror or exc}")
                    continue
                granted = min(granted, got)
                frontend = UdpFrontend(
                    self.tracker,
                    self.stats,
                    self.secret,
                    cfg.connection_id_lifetime,
                    sock.family,
                    sock.sendto,
                )
                loop.add_reader(sock.fileno(), frontend.read_ready, sock.recvfrom)
                self.sockets.append(sock)
                self.frontends.append(frontend)
                self.addresses.append(sock.getsockname()[:2])
        if not self.sockets:
            raise OSError("cannot listen on UDP " + "; ".join(errors))
        for err in errors:
            log.warning("not listening on UDP %s", err)
        if granted < cfg.receive_buffer:
            log.info(
                "[udp] receive_buffer: the kernel gave %d KiB of the %d KiB asked"
                " (net.core.rmem_max caps it)",
                granted // 1024,
                cfg.receive_buffer // 1024,
            )

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop reading, let handlers still waiting on the tracker answer (for up to
        ``timeout`` seconds), then close the sockets."""
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            loop.remove_reader(sock.fileno())
        pending = [t for f in self.frontends for t in f.pending]
        if pending:
            _done, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def _socket(
    host: str, number: int, reuse_port: bool, receive_buffer: int
) -> tuple[socket.socket, int]:
    """A bound, non-blocking UDP socket, and the receive buffer the kernel granted."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # IPv4 has its own socket (as over HTTP): no v4-mapped senders on this one.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        got = receive_buffer
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            # Linux reports twice what it grants (the doubling covers its bookkeeping).
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        sock.bind((host, number))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, got
