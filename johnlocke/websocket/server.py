"""The WebSocket (WebTorrent) tracker: browsers as peers, on the HTTP listener.

Theory of operation
-------------------
A WebTorrent client opens ``ws://HOST:PORT/announce`` (or a passkey form of it) and keeps the
socket open for as long as its page runs, sending JSON announces and scrapes over it. aiohttp
parses the upgrade request like any other (routing, passkey, client address, access log line);
``Hub.upgrade`` answers the handshake itself and takes the socket over from aiohttp: from then
on the connection is a ``Connection`` (a plain ``asyncio.Protocol`` reading frames with
``johnlocke.websocket.frames``), and aiohttp's objects for it are gone. That keeps an idle
browser peer at a few KB (see ``frames``), and a WebSocket leaves the HTTP connection cap
(``[http] max_connections``) for its own (``[webtorrent] max_connections``); it still counts
toward ``[http] max_connections_per_ip``.

A browser cannot dial a TCP peer, so it lives in the store's WebRTC family: its "address" is
an 8-byte endpoint id naming the process and connection that hold its socket
(``johnlocke.websocket.relay``). An announce goes through the same ``Tracker.announce`` as HTTP
and UDP (access, client rules, [limits], the swarm's strategy), with the endpoint as the
address: the counts include every peer, the picks only WebRTC peers, and each offer goes to one
pick (``Relay.offer``). The connection an offer reaches remembers who made it, so the answer
that comes back on it is routed to the offerer without asking the store.

Each message is handled to the end before the next one of its connection: with the memory
store nothing awaits, so a message costs no task; a store that suspends (Redis) gets a task for
the rest of that message, and the connection's next messages wait in a short backlog.

One sweep a second (``_sweep_forever``, in slices) keeps the connections honest: a connection
silent for ``ping_interval`` is pinged and closed if it has not answered within
``ping_timeout``; one that sent no announce or scrape for ``idle_timeout``, or none at all within
``[http] request_timeout`` of opening, is closed. A closed connection leaves every swarm it
joined. Each connection has a token bucket (``message_rate``, ``message_burst``): messages over
it are dropped, and a connection that keeps flooding is closed. A peer that does not read what
it is sent (its send buffer over a few messages' worth) is closed too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from time import monotonic, perf_counter
from typing import Any

from aiohttp import web

from johnlocke import eager
from johnlocke.bittorrent import EVENT_STOPPED, AnnounceRequest, Answer
from johnlocke.config import Config
from johnlocke.errors import ClientError
from johnlocke.logs import RareWarning, mask
from johnlocke.stats import INTERNAL_REASON, StatsService
from johnlocke.tracker import Tracker
from johnlocke.websocket import codec, frames
from johnlocke.websocket.codec import (
    Announce,
    encode_announce,
    encode_offer_after,
    offer_head,
    parse,
)
from johnlocke.websocket.frames import encode_text
from johnlocke.websocket.relay import LocalRelay, Relay

log = logging.getLogger("johnlocke.websocket")

_INTERNAL = INTERNAL_REASON
# Offers a connection may hold unanswered (oldest forgotten first), and for how long: clients
# give up on an offer after 50 s.
_MAX_PENDING = 64
_PENDING_SECONDS = 60.0
# Messages a connection may have waiting while one of its messages waits for the store.
_MAX_BACKLOG = 32
# A peer whose unsent data passes this many messages' worth does not read: it is closed.
_SEND_BUFFER_MESSAGES = 4
# Messages dropped over the rate, beyond the burst, before the connection is closed.
_FLOOD_FACTOR = 10
# Connections examined per slice of the sweep (~1 us each): the loop is held about a ms.
_SWEEP_SLICE = 2000
_SWEEP_EVERY = 1.0


class _Upgraded(web.StreamResponse):
    """What aiohttp gets back for a socket taken over: nothing more to write (the access log
    still gets its line, status 101)."""

    def __init__(self) -> None:
        super().__init__(status=101)

    async def prepare(self, request: web.BaseRequest) -> None:  # type: ignore[override]
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class Connection:
    """One browser's socket: frames in, messages to the hub, text frames out.

    An ``asyncio.Protocol`` by its methods (no base class: the compiled build makes it an
    extension type, whose attributes the hot path reads as struct members)."""

    __slots__ = (
        "hub",
        "transport",
        "reader",
        "endpoint",
        "ip",
        "passkey",
        "refused",
        "joined",
        "pending",
        "opened",
        "heard",
        "spoke",
        "pinged",
        "tokens",
        "filled",
        "busy",
        "backlog",
        "closing",
        "out",
    )

    def __init__(
        self, hub: Hub, transport: asyncio.Transport, endpoint: bytes, ip: bytes,
        passkey: bytes | None, refused: str | None,
    ) -> None:  # fmt: skip
        self.hub = hub
        self.transport: asyncio.Transport | None = transport
        self.reader = frames.FrameReader(hub.max_message_size)
        self.endpoint = endpoint
        self.ip = ip
        self.passkey = passkey
        # A reason to refuse every announce with and then close (a bad passkey at the upgrade).
        self.refused = refused
        # info_hash + peer_id of each swarm this connection joined (None: none yet).
        self.joined: list[bytes] | None = None
        # offer_id -> (offerer endpoint, offerer peer_id, info_hash, when): offers sent here.
        self.pending: dict[str, tuple[bytes, bytes, bytes, float]] | None = None
        now = monotonic()
        self.opened = now
        self.heard = now  # any frame
        self.spoke = 0.0  # the last announce or scrape (0: none yet)
        self.pinged = 0.0
        self.tokens = float(hub.message_burst)
        self.filled = now
        self.busy = False
        self.backlog: list[bytes] | None = None
        self.closing = False
        self.out: list[bytes] | None = None  # frames to send at the end of this loop turn

    # --- asyncio.Protocol (events come through the HTTP server's connection guard) --------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass  # made by the hub around an open transport

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = monotonic()
        self.heard = now
        self.pinged = 0.0
        try:
            messages = self.reader.feed(data)
        except frames.FrameError as exc:
            self.hub.stats.drop("broken frame")
            self.close(exc.code, exc.reason, "broken frame")
            return
        for opcode, payload in messages:
            if opcode == frames.OP_TEXT:
                self._message(payload, now)
            elif opcode == frames.OP_PING:
                self._write(frames.encode(frames.OP_PONG, payload))
            elif opcode == frames.OP_CLOSE:
                self.close(frames.CLOSE_NORMAL, "", "closed by the client")
            elif opcode == frames.OP_BINARY:
                self.hub.stats.drop("binary message")
            if self.closing:
                return

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closing:
            self.closing = True
            self.hub.stats.close("lost" if exc is not None else "closed by the client")
        self.hub.forget(self)

    def pause_writing(self) -> None:
        pass  # the send buffer is checked on every write instead

    def resume_writing(self) -> None:
        pass

    # --- messages -------------------------------------------------------------------------

    def _message(self, payload: bytes, now: float) -> None:
        hub = self.hub
        tokens = self.tokens + (now - self.filled) * hub.message_rate
        burst = hub.message_burst
        if tokens > burst:
            tokens = burst
        self.filled = now
        if tokens < 1:
            self.tokens = tokens - 1
            hub.stats.drop("over the message rate")
            if tokens < -_FLOOD_FACTOR * burst:
                self.close(frames.CLOSE_POLICY, "too many messages", "flooding")
            return
        self.tokens = tokens - 1
        text = payload  # UTF-8, checked by the JSON parser (a failure says it is not JSON)
        if self.busy:
            backlog = self.backlog
            if backlog is None:
                backlog = self.backlog = []
            if len(backlog) >= _MAX_BACKLOG:
                hub.stats.drop("backlog full")
                return
            backlog.append(text)
            return
        hub.run(self, text)

    def send(self, text: bytes) -> bool:
        """Queue one text message (UTF-8) for the end of this loop turn, when every message
        for this connection goes out in one write; False if the connection is closing."""
        if self.closing or self.transport is None:
            return False
        out = self.out
        if out is None:
            self.out = [encode_text(text)]
            self.hub.dirty(self)
        else:
            out.append(encode_text(text))
        return True

    def _write(self, frame: bytes) -> bool:
        transport = self.transport
        if transport is None:
            return False
        if transport.get_write_buffer_size() > self.hub.send_buffer_limit:
            self.close(frames.CLOSE_POLICY, "not reading", "not reading")
            return False
        transport.write(frame)
        return True

    def close(self, code: int, reason: str, why: str) -> None:
        """Say goodbye with ``code`` and close; ``why`` is what the stats count."""
        if self.closing:
            return
        self.closing = True
        self.hub.stats.close(why)
        transport = self.transport
        if transport is not None:
            out = self.out
            self.out = None
            transport.write(b"".join(out) + frames.encode_close(code, reason) if out else
                            frames.encode_close(code, reason))  # fmt: skip
            transport.close()


class Hub:
    """Every WebSocket connection of this process, and what their messages do.

    A service (``johnlocke.service``): ``start`` runs the sweep, ``stop`` closes every
    connection (its peers leave their swarms); ``reload`` applies a new ``[webtorrent]``.
    """

    name = "websocket"

    def __init__(
        self, tracker: Tracker, config: Config, service: StatsService, relay: Relay | None = None
    ) -> None:
        self.tracker = tracker
        self.stats = service.stats.websocket
        self.conns: dict[bytes, Connection] = {}
        self.relay: Relay = relay if relay is not None else LocalRelay(self)
        self._serial = 0
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Connections with frames queued (Connection.send), written by one flush per loop turn.
        self._dirty: list[Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # The hub's clock for pending offers: set by each announce that relays offers and by
        # each sweep (so at most a second old for offers that come through the relay).
        self._now = monotonic()
        self._apply(config)

    def _apply(self, config: Config) -> None:
        w = config.webtorrent
        self.config = config
        self.enabled = w.enabled
        self.max_message_size = w.max_message_size
        self.max_offers = config.announce.numwant_max if w.max_offers == "auto" else w.max_offers
        self.max_connections = w.max_connections
        self.max_swarms = w.max_swarms_per_connection
        self.ping_interval = w.ping_interval
        self.ping_timeout = w.ping_timeout
        self.idle_timeout = float(
            config.announce.peer_timeout if w.idle_timeout == "auto" else w.idle_timeout
        )
        self.first_message_timeout = config.http.request_timeout
        self.message_rate = w.message_rate
        self.message_burst = w.message_burst
        self.send_buffer_limit = _SEND_BUFFER_MESSAGES * w.max_message_size

    # --- Service ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.relay.start()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.close_all()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.relay.stop()

    def reload(self, config: Config) -> None:
        self._apply(config)  # new limits; connections already open keep their message size

    def close_all(self) -> None:
        """Close every connection (shutdown): each says "going away" and leaves its swarms."""
        for conn in list(self.conns.values()):
            conn.close(frames.CLOSE_GOING_AWAY, "tracker shutting down", "shutdown")
            self.forget(conn)

    # --- the upgrade -----------------------------------------------------------------------

    async def upgrade(
        self, request: web.BaseRequest, ip: bytes, passkey: bytes | None
    ) -> web.StreamResponse:
        """Answer a WebSocket upgrade of an announce URL and take the socket over.

        ``ip`` is the client's packed address (after trusted proxies), ``passkey`` the one the
        URL carried. Refusals are plain HTTP, which is all a client can read before the
        handshake: 400 for a bad handshake, 503 when disabled or full.
        """
        stats = self.stats
        if not self.enabled:
            stats.refused += 1
            raise web.HTTPServiceUnavailable(text="this tracker does not serve WebSocket peers\n")
        if len(self.conns) >= self.max_connections:
            stats.refused += 1
            _full(self.max_connections)
            raise web.HTTPServiceUnavailable(text="too many WebSocket connections; retry later\n")
        headers = request.headers
        try:
            accept = frames.accept_key(
                headers.get("Sec-WebSocket-Version"), headers.get("Sec-WebSocket-Key")
            )
        except frames.HandshakeError as exc:
            stats.refused += 1
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        refused = None
        try:
            self.tracker.access.check_passkey(passkey)
        except ClientError as exc:
            refused = exc.reason  # told to the client in its first message's answer
        handler = request.protocol
        transport = request.transport
        if transport is None or transport.is_closing():
            raise web.HTTPBadRequest(text="connection closed\n")
        # Bytes the client sent after its upgrade request (normally none: a client waits for
        # the 101) are frames already.
        tail = handler._message_tail
        handler._message_tail = b""
        self._serial = serial = (self._serial + 1) & 0xFFFFFFFF
        endpoint = self.relay.tag + serial.to_bytes(4, "big")
        conn = Connection(self, transport, endpoint, ip, passkey, refused)
        transport.write(frames.handshake_response(accept))
        # aiohttp lets go of the socket: no more reads or writes for its handler, which
        # finishes with this request (logged as 101) and forgets the connection.
        handler.transport = None
        handler.connection_lost(None)
        # Behind the HTTP server's connection guard (the daemon), the guard passes the events
        # on; a bare aiohttp server (tests) has the transport talk to the connection directly.
        guard = getattr(handler, "guard", None)
        if guard is not None:
            guard.upgraded(conn)
        else:
            transport.set_protocol(conn)
        self.conns[endpoint] = conn
        stats.opened += 1
        stats.open = len(self.conns)
        if tail:
            conn.data_received(tail)
        return _Upgraded()

    # --- sending -------------------------------------------------------------------------

    def dirty(self, conn: Connection) -> None:
        """``conn`` has frames queued: write them at the end of this loop turn (a peer that is
        sent an answer and five offers in one turn gets one write, one system call)."""
        if not self._dirty:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self.flush)
        self._dirty.append(conn)

    def flush(self) -> None:
        dirty = self._dirty
        self._dirty = []
        for conn in dirty:
            out = conn.out
            conn.out = None
            if out and not conn.closing:
                conn._write(out[0] if len(out) == 1 else b"".join(out))

    # --- delivery (johnlocke.websocket.relay.Deliver) --------------------------------------

    def deliver(self, target: bytes, text: bytes) -> bool:
        conn = self.conns.get(target)
        return conn is not None and conn.send(text)

    def deliver_offer(
        self, target: bytes, offerer: bytes, offer_id: str, peer_id: bytes, info_hash: bytes,
        text: bytes,
    ) -> bool:  # fmt: skip
        return self._offer_here(target, offer_id, (offerer, peer_id, info_hash, self._now), text)

    def _offer_here(
        self, target: bytes, offer_id: str, made: tuple[bytes, bytes, bytes, float], text: bytes
    ) -> bool:
        """An offer (``text``) for this process's connection ``target``; ``made`` is who made
        it (offerer endpoint, peer_id, info_hash, when), remembered for the answer."""
        conn = self.conns.get(target)
        if conn is None or conn.closing or conn.transport is None:
            return False
        # Connection.send, inlined: this runs for every offer relayed.
        out = conn.out
        if out is None:
            conn.out = [encode_text(text)]
            self.dirty(conn)
        else:
            out.append(encode_text(text))
        pending = conn.pending
        if pending is None:
            pending = conn.pending = {}
        elif len(pending) >= _MAX_PENDING:
            del pending[next(iter(pending))]
        pending[offer_id] = made
        return True

    # --- messages ----------------------------------------------------------------------------

    def run(self, conn: Connection, text: bytes) -> None:
        """Handle one message of ``conn`` to the end (see the theory of operation)."""
        coro = self.handle(conn, text)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        conn.busy = True
        self._spawn(self._finish(conn, coro, waiting))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(
        self, conn: Connection, coro: Coroutine[Any, Any, None], waiting: Any
    ) -> None:
        """The rest of a message that waited for the store, then the messages behind it."""
        try:
            await eager.resume(coro, waiting)
            while conn.backlog and not conn.closing:
                await self.handle(conn, conn.backlog.pop(0))
        finally:
            conn.busy = False

    async def handle(self, conn: Connection, text: bytes) -> None:
        """One message: parse it, apply it, answer it. Never raises."""
        stats = self.stats
        t0 = perf_counter()
        try:
            msg = parse(text, self.max_offers)
        except codec.MessageError as exc:
            stats.fail(exc.reason)
            conn.send(codec.encode_failure(exc.reason, exc.action, exc.info_hash))
            return
        # An announce or a scrape: the idle and first-message deadlines restart (a message
        # that does not parse restarts neither, so junk cannot hold a socket open).
        conn.spoke = conn.heard
        try:
            if type(msg) is codec.Scrape:
                await self._scrape(conn, msg)
                stats.scrape_latency.observe(perf_counter() - t0)
                return
            assert type(msg) is codec.Announce
            if msg.answer is not None:
                self._answer(conn, msg)
                return
            await self._announce(conn, msg)
        except ClientError as exc:
            stats.fail(exc.reason)
            info_hash = msg.info_hash_text if type(msg) is codec.Announce else None
            action = "announce" if info_hash is not None else "scrape"
            conn.send(codec.encode_failure(exc.reason, action, info_hash))
            if conn.refused is not None:
                conn.close(frames.CLOSE_POLICY, exc.reason, "refused")
        except Exception:
            log.exception("WebSocket message failed: %s", mask(text[:200]))
            stats.fail(_INTERNAL)
            info_hash = msg.info_hash_text if type(msg) is codec.Announce else None
            conn.send(
                codec.encode_failure(_INTERNAL, "announce" if info_hash else "scrape", info_hash)
            )
        if type(msg) is codec.Announce:
            stats.announce_latency.observe(perf_counter() - t0)

    async def _announce(self, conn: Connection, msg: codec.Announce) -> None:
        if conn.refused is not None:
            raise ClientError(conn.refused)
        req = msg.request
        req.passkey = conn.passkey
        key = self._may_join(conn, req)
        answer = await self.tracker.announce(req, conn.ip, False, conn.endpoint)
        if conn.closing:
            # Closed while the store answered (Redis): forget() may have taken the swarms
            # already, without this one. The peer leaves it here; nothing is sent or relayed.
            if req.event != EVENT_STOPPED:
                await self.tracker.leave(req.info_hash, req.peer_id, conn.endpoint)
            return
        stale = self._announced(conn, msg, answer, key)
        if stale is not None:
            # Nobody holds these endpoints any more (a socket that just closed, or a process
            # that is gone): they leave the swarm instead of taking offers until they expire.
            self.stats.undelivered += len(stale)
            for target, peer_id in stale:
                await self.tracker.leave(req.info_hash, peer_id, target)

    def _may_join(self, conn: Connection, req: AnnounceRequest) -> bytes:
        """The key of the swarm ``req`` is for in ``conn.joined``; ClientError if joining it
        would pass the cap on swarms per connection."""
        key: bytes = req.info_hash + req.peer_id
        joined = conn.joined
        if req.event != EVENT_STOPPED and (joined is None or key not in joined):
            if joined is not None and len(joined) >= self.max_swarms:
                raise ClientError(
                    f"too many torrents on one connection (at most {self.max_swarms})"
                )
        return key

    def _announced(
        self, conn: Connection, msg: Announce, answer: Answer, key: bytes
    ) -> list[tuple[bytes, bytes]] | None:
        """After the tracker's ``answer`` (``conn`` still open): the swarms joined (``key``,
        from ``_may_join``), the reply, the offers; the peers no offer could reach (see
        ``_relay_offers``)."""
        event = msg.request.event
        self.stats.events[event] += 1
        joined = conn.joined
        if event == EVENT_STOPPED:
            if joined is not None and key in joined:
                joined.remove(key)
        elif joined is None:
            conn.joined = [key]
        elif key not in joined:
            joined.append(key)
        warning = answer.warning.decode() if answer.warning else None
        conn.send(
            encode_announce(
                msg.info_hash_text, answer.interval, answer.min_interval, answer.complete,
                answer.incomplete, warning,
            )
        )  # fmt: skip
        if not msg.offers or not answer.peer_list:
            return None
        return self._relay_offers(conn, msg, answer.peer_list)

    def _relay_offers(
        self, conn: Connection, msg: Announce, peers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]] | None:
        """Each offer of ``msg`` to one of ``peers`` (the strategy's picks); the peers it could
        not reach (None: all were reached)."""
        req = msg.request
        endpoint = conn.endpoint
        relay = self.relay
        tag = relay.tag
        self._now = now = monotonic()
        # What every offer of this announce shares: who made it (one tuple, kept by each
        # recipient for the answer) and the start of the message that relays it.
        made = (endpoint, req.peer_id, req.info_hash, now)
        head = offer_head(msg.info_hash_text, msg.peer_id_text)
        stale = None
        sent = 0
        for (offer_id, offer), (target, peer_id) in zip(msg.offers, peers, strict=False):
            text = encode_offer_after(head, offer_id, offer)
            if target[:4] == tag:  # this process's sockets: no relay in between
                delivered = self._offer_here(target, offer_id, made, text)
            else:
                delivered = relay.offer(target, endpoint, offer_id, made[1], made[2], text)
            if delivered:
                sent += 1
            else:
                if stale is None:
                    stale = []
                stale.append((target, peer_id))
        self.stats.offers += sent
        return stale

    def _answer(self, conn: Connection, msg: codec.Announce) -> None:
        pending = conn.pending
        offer_id = msg.offer_id
        assert offer_id is not None
        made = pending.pop(offer_id, None) if pending is not None else None
        req = msg.request
        if made is None or made[1] != msg.to_peer_id or made[2] != req.info_hash:
            self.stats.drop("answer to an unknown offer")
            return
        text = codec.encode_answer(msg.info_hash_text, msg.peer_id_text, offer_id, msg.answer)  # type: ignore[arg-type]
        if self.relay.answer(made[0], text):
            self.stats.answers += 1
        else:
            self.stats.undelivered += 1

    async def _scrape(self, conn: Connection, msg: codec.Scrape) -> None:
        if conn.refused is not None:
            raise ClientError(conn.refused)
        rows = await self.tracker.scrape(msg.info_hashes, conn.passkey, conn.ip)
        conn.send(codec.encode_scrape(rows))

    # --- closing -------------------------------------------------------------------------------

    def gone(self, target: bytes, peer_id: bytes, info_hash: bytes) -> None:
        """An offer for ``target`` reached no process (``RedisRelay``): it leaves the swarm."""
        self.stats.undelivered += 1
        self.stats.offers -= 1
        self._spawn(self.tracker.leave(info_hash, peer_id, target))

    def forget(self, conn: Connection) -> None:
        """A connection is closed: it leaves the hub and every swarm it joined."""
        if self.conns.pop(conn.endpoint, None) is None:
            return
        self.stats.open = len(self.conns)
        joined = conn.joined
        conn.joined = None
        conn.pending = None
        conn.backlog = None
        if joined:
            eager.run(self._leave_all(conn.endpoint, joined), self._tasks)

    async def _leave_all(self, endpoint: bytes, joined: list[bytes]) -> None:
        while joined:
            key = joined[-1]
            try:
                await self.tracker.leave(key[:20], key[20:], endpoint)
            except Exception:
                log.exception("a closed WebSocket's peer could not leave its swarm")
            joined.pop()

    # --- the sweep -------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_EVERY)
            try:
                await self.sweep()
            except Exception:
                log.exception("WebSocket sweep failed; will retry")

    async def sweep(self) -> None:
        """Ping the quiet, close the dead and the idle, forget stale pending offers."""
        self._now = monotonic()
        conns = list(self.conns.values())
        for i in range(0, len(conns), _SWEEP_SLICE):
            if i:
                await asyncio.sleep(0)
            now = monotonic()
            ping = frames.encode(frames.OP_PING, b"")
            for conn in conns[i : i + _SWEEP_SLICE]:
                if conn.closing:
                    continue
                if conn.pinged:
                    if now - conn.pinged >= self.ping_timeout:
                        conn.close(frames.CLOSE_GOING_AWAY, "no answer to ping", "no pong")
                        continue
                elif now - conn.heard >= self.ping_interval:
                    conn.pinged = now
                    conn._write(ping)
                if conn.spoke:
                    if now - conn.spoke >= self.idle_timeout:
                        conn.close(frames.CLOSE_GOING_AWAY, "idle", "idle")
                        continue
                elif now - conn.opened >= self.first_message_timeout:
                    conn.close(frames.CLOSE_POLICY, "no message", "no first message")
                    continue
                pending = conn.pending
                if pending:
                    cutoff = now - _PENDING_SECONDS
                    while pending:
                        first = next(iter(pending))
                        if pending[first][3] >= cutoff:
                            break
                        del pending[first]


_full = RareWarning(
    log,
    "WebSocket connection limit reached ([webtorrent] max_connections = %d): refused %d"
    " connections since the last warning",
)
