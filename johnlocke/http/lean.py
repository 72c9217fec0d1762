"""The hot routes without aiohttp's per-request objects: announces and scrapes answered as parsed.

Theory of operation
-------------------
For each request aiohttp's connection handler queues the parsed message, wakes the connection's
task, builds a ``web.Request``, starts a task for the handler, looks up the route, and writes a
``web.Response`` through a header multidict and a stream writer: for a tracker, whose answer is
a few hundred bytes computed in microseconds, that is most of the work of an announce. A
``LeanParser`` stands in for one connection's request parser. aiohttp's ``data_received`` calls
its ``feed_data``, which feeds aiohttp's own parser and, while the connection is idle (nothing
queued for aiohttp or being handled by it, writing not paused), answers each leading GET of an
announce or scrape URL (as ``parse_target`` reads it, so passkeys in the path too) itself: the
frontend's ``announce_body`` / ``scrape_body`` coroutine runs with ``send(None)`` and the answer
goes to the transport in one write, with the headers aiohttp writes for the same
``web.Response``. The first request it does not take (any other path or method, a body, an
upgrade, ``Expect``) and everything after it is returned to aiohttp, which queues and serves it
as usual, after what was answered here. So the bytes a client gets are the same either way
(``tests/test_lean.py`` compares them), in request order.

An answer that has to wait (the Redis store, a full scrape that yields to the loop) gets a task
(``eager.resume``). Until it is written the connection reads nothing (``pause_reading``), and
what was parsed or received behind it is handed to aiohttp's ``data_received`` afterwards, as if
it had just arrived: order holds, and a client cannot pile up requests meanwhile.

aiohttp's connection task (``RequestHandler.start``) is only started when a request is first
handed to aiohttp (``_hand``), parse errors included: a client that only announces, above all
one connection per announce, never costs a task, its first step and its cancellation. The
connection's guard (``johnlocke.http.server._Guard``) times the first request, which aiohttp's
handler would otherwise do with a keep-alive timer of its own.

Keep-alive is aiohttp's: a closing request (``Connection: close``, HTTP/1.0 without keep-alive)
closes the connection after its answer, and every answer moves aiohttp's keep-alive deadline,
which closes the connection when it passes while nothing is in progress (``_keepalive_due``, as
aiohttp's ``_process_keepalive``, which cannot tell idle from busy without the task). The
connection's guard hears of each answer (``answered``), as from ``_Handler.log_access``. With
the access log on, aiohttp's path serves everything (it writes the lines).

This leans on aiohttp internals (the handler's parser, message queue, waiter and keep-alive
fields). ``supported`` checks for them once; without them the server runs aiohttp's path alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD

from johnlocke.bittorrent import ANNOUNCE, SCRAPE, parse_target
from johnlocke.eager import resume

_SERVER = SERVER_SOFTWARE.encode("latin-1")
_NOTHING: tuple[Any, bool, bytes] = ((), False, b"")
_OK11 = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
_OK10 = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
# What aiohttp adds to a web.Response by version (after the clamp of _http1) and keep-alive.
_CLOSE11 = b"Connection: close\r\n\r\n"
_KEEP10 = b"Connection: keep-alive\r\n\r\n"
_END = b"\r\n"

# The handler fields and methods this module reads, sets or calls (aiohttp 3.14 has them all).
_NEEDED = (
    "_parser", "_messages", "_waiter", "_paused", "_request_count", "_manager", "_keepalive",
    "_keepalive_timeout", "_next_keepalive_close_time", "_keepalive_handle",
    "_process_keepalive", "_request_in_progress", "_handler_waiter", "_loop", "force_close",
    "_task_handler", "_tcp_keepalive", "_force_close", "start",
)  # fmt: skip
_supported: bool | None = None


def supported(handler: Any) -> bool:
    """Whether this aiohttp's request handler has what ``LeanParser`` relies on."""
    global _supported
    if _supported is None:
        _supported = all(hasattr(handler, name) for name in _NEEDED)
    return _supported


class _Date:
    """aiohttp's Date header value, as bytes, re-encoded only when the second changes."""

    text = ""
    value = b""


def _date() -> bytes:
    text = rfc822_formatted_time()
    if text is not _Date.text:
        _Date.text = text
        _Date.value = text.encode("latin-1")
    return _Date.value


class LeanParser:
    """One connection's request parser, answering the announces and scrapes it parses."""

    __slots__ = ("parser", "handler", "frontend", "cap", "handed", "waiting", "backlog", "held")

    def __init__(self, parser: Any, handler: Any, frontend: Any) -> None:
        self.parser = parser
        self.handler = handler
        self.frontend = frontend
        # The most requests aiohttp's parser hands out at once (none with older aiohttp).
        self.cap = getattr(handler, "_max_msg_queue_size", 0) or 1 << 62
        # Whether aiohttp has been given a request: until then its task is idle for sure.
        self.handed = False
        self.waiting: asyncio.Task[None] | None = None
        self.backlog: tuple[Any, bool, bytes] | None = None
        self.held = b""

    # What aiohttp calls on its parser besides feed_data.
    def message_consumed(self) -> None:
        self.parser.message_consumed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)

    def feed_data(self, data: bytes) -> tuple[Any, bool, bytes]:
        if self.waiting is not None:
            self.held += data
            return _NOTHING
        backlog = self.backlog
        if backlog is not None:  # released by _finish, with data b""
            self.backlog = None
            messages, upgraded, tail = backlog
        else:
            messages, upgraded, tail = self._parse(data)
            if not messages:
                return messages, upgraded, tail
        h = self.handler
        frontend = self.frontend
        while True:
            if self.handed:
                if h._messages or h._paused:
                    return messages, upgraded, tail
                waiter = h._waiter
                if waiter is None or waiter.done():
                    return messages, upgraded, tail
            elif h._paused:
                self._hand()
                return messages, upgraded, tail
            n = len(messages)
            i = 0
            while i < n:
                msg, payload = messages[i]
                if msg.method != "GET" or payload is not EMPTY_PAYLOAD or msg.upgrade:
                    break
                if h._paused:
                    break  # the client does not read: aiohttp waits for it, answer by answer
                path = msg.path
                endpoint, passkey, query = parse_target(path.encode("utf-8", "surrogateescape"))
                if endpoint == ANNOUNCE:
                    answer = frontend.announce_body
                elif endpoint == SCRAPE:
                    answer = frontend.scrape_body
                else:
                    break
                headers = msg.headers
                if "Expect" in headers:
                    break  # aiohttp's expect handler answers it (100 Continue or 417)
                i += 1
                h._request_count += 1
                h._manager.requests_count += 1
                self.parser.message_consumed()
                coro = answer(passkey, query, h.transport, headers, path)
                try:
                    waiting = coro.send(None)
                except StopIteration as done:
                    if not self._reply(msg, done.value):
                        return _NOTHING
                    continue
                if i < n:
                    self.backlog = (messages[i:], upgraded, tail)
                transport = h.transport
                if transport is not None:
                    transport.pause_reading()
                self.waiting = h._loop.create_task(self._finish(coro, waiting, msg))
                return _NOTHING
            if i < n:
                self._hand()
                return messages[i:], upgraded, tail
            if n < self.cap:
                return _NOTHING
            # aiohttp's parser hands out at most ``cap`` requests per call and keeps the rest
            # until they are consumed, as they are now: ask it for them.
            messages, upgraded, tail = self._parse(b"")
            if not messages:
                return messages, upgraded, tail

    def _parse(self, data: bytes) -> tuple[Any, bool, bytes]:
        try:
            return self.parser.feed_data(data)  # type: ignore[no-any-return]
        except HttpProcessingError:
            self._hand()  # aiohttp answers it (400), in its task
            raise

    def _hand(self) -> None:
        """aiohttp is to serve a request: start its connection task if it has none yet."""
        if not self.handed:
            self.handed = True
            h = self.handler
            if h._task_handler is None:
                h._task_handler = h._loop.create_task(h.start())

    def _reply(self, msg: Any, body: bytes) -> bool:
        """Write the answer to ``msg``; False if the connection closes after it."""
        h = self.handler
        transport = h.transport
        if transport is None:
            return False
        close = msg.should_close
        if msg.version >= HttpVersion11:
            transport.write(
                b"%s%d\r\nDate: %s\r\nServer: %s\r\n%s%s"
                % (_OK11, len(body), _date(), _SERVER, _CLOSE11 if close else _END, body)
            )
        else:
            transport.write(
                b"%s%d\r\nDate: %s\r\nServer: %s\r\n%s%s"
                % (_OK10, len(body), _date(), _SERVER, _END if close else _KEEP10, body)
            )
        h.guard.answered()
        if close:
            h.force_close()  # the transport sends what it holds, then closes
            return False
        loop = h._loop
        close_time = loop.time() + h._keepalive_timeout
        h._next_keepalive_close_time = close_time
        if h._keepalive_handle is None:
            h._keepalive_handle = loop.call_at(close_time, self._keepalive_due)
        return True

    def _keepalive_due(self) -> None:
        """The keep-alive deadline: close the connection if it passed and nothing is going on."""
        h = self.handler
        h._keepalive_handle = None
        if h._force_close or not h._keepalive:
            return
        loop = h._loop
        close_time = h._next_keepalive_close_time
        if loop.time() < close_time or self.waiting is not None:
            # Moved on by later answers, or an answer is waiting: look again then.
            h._keepalive_handle = loop.call_at(
                max(close_time, loop.time() + 0.1), self._keepalive_due
            )
            return
        if self.handed:
            waiter = h._waiter  # aiohttp's own test: its task waits for a request
            if not waiter or waiter.done():
                return
        h.force_close()

    async def _finish(self, coro: Any, waiting: Any, msg: Any) -> None:
        """Finish an answer that had to wait, write it, then hand on what came behind it."""
        h = self.handler
        h._request_in_progress = True  # so that aiohttp's shutdown waits for it
        try:
            body = await resume(coro, waiting)
        except BaseException:
            h.force_close()
            raise
        finally:
            self.waiting = None
            h._request_in_progress = False
            done = h._handler_waiter
            if done is not None and not done.done():
                done.set_result(None)
        if not self._reply(msg, body):
            return
        h.transport.resume_reading()
        h.data_received(b"")  # what was parsed behind it, and what the parser kept
        held = self.held
        if held:
            self.held = b""
            h.data_received(held)
