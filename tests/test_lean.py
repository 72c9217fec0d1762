"""The lean path (``johnlocke.http.lean``): announces and scrapes answered as they are parsed.

What a client gets must not depend on which path answered: the same bytes as aiohttp's own
path (Date aside), in request order however requests are pipelined, with aiohttp's keep-alive
rules, and with a client that does not read held back as aiohttp holds it back. All against the
real listener (``start``) over raw sockets.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import bencodepy
import pytest

from johnlocke.http import lean
from johnlocke.http.server import build_app, listening, start
from johnlocke.store.memory import MemoryStore
from johnlocke.tracker import Tracker

from .conftest import SlowStore, esc, make_config

IH = bytes(range(20))
OTHER = bytes(range(20, 40))
WAIT = 5.0


@asynccontextmanager
async def serving(
    tracker: Tracker, config: Any, lean_path: bool = True
) -> AsyncIterator[tuple[int, Any]]:
    """The daemon's listener for ``tracker``, with or without the lean path."""
    runner = await start(build_app(tracker, config), config, lean_path=lean_path)
    try:
        yield listening(runner)[0][1], runner
    finally:
        await runner.cleanup()


def config_for(**http: Any) -> Any:
    return make_config(http={"host": "127.0.0.1", "port": 0, **http})


def query(peer: int, info_hash: bytes = IH, extra: str = "") -> str:
    peer_id = b"-XX0001-" + b"%012d" % peer
    return (
        f"info_hash={esc(info_hash)}&peer_id={esc(peer_id)}&port={6881 + peer}"
        f"&left={peer % 2 * 100}&compact=1{extra}"
    )


def get(target: str, version: str = "1.1", headers: str = "Host: 127.0.0.1\r\n") -> bytes:
    return f"GET {target} HTTP/{version}\r\n{headers}\r\n".encode()


def split(data: bytes, heads: Any = ()) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Whole responses (head, body) at the start of ``data``, and what is left; the answers
    numbered in ``heads`` are to HEAD requests (a length, no body)."""
    out: list[tuple[bytes, bytes]] = []
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return out, data
        found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        length = int(found.group(1)) if found and len(out) not in heads else 0
        if len(rest) < length:
            return out, data
        out.append((head, rest[:length]))
        data = rest[length:]


async def exchange(
    port: int, *writes: bytes, count: int, heads: Any = ()
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """Send ``writes`` on one connection; the first ``count`` responses and whether the server
    closed the connection after them (``heads`` as for ``split``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for data in writes:
            writer.write(data)
        await writer.drain()
        got = b""
        answers: list[tuple[bytes, bytes]] = []
        while len(answers) < count:
            chunk = await asyncio.wait_for(reader.read(65536), WAIT)
            assert chunk, f"closed after {len(answers)} of {count} answers"
            got += chunk
            answers, _ = split(got, heads)
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.3) == b""
        except TimeoutError:
            closed = False
        return answers[:count], closed
    finally:
        writer.close()


def status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def undated(head: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", head)


# Each case: one request, answered identically by both paths (Date aside).
CASES = {
    "keep-alive": get("/announce?" + query(1)),
    "connection close": get("/announce?" + query(2), headers="Host: a\r\nConnection: close\r\n"),
    "http/1.0": get("/announce?" + query(3), version="1.0", headers=""),
    "http/1.0 keep-alive": get(
        "/announce?" + query(4), version="1.0", headers="Connection: keep-alive\r\n"
    ),
    "http/2.0 request line": get("/announce?" + query(5), version="2.0"),
    "http/0.9 request line": get("/announce?" + query(6), version="0.9", headers=""),
    "stopped": get("/announce?" + query(3, extra="&event=stopped")),
    "malformed announce": get("/announce?peer_id=x&port=1"),
    "passkey in the path": get("/abcdef/announce?" + query(7)),
    "absolute-form target": get("http://127.0.0.1/announce?" + query(8)),
    "dot segments": get("/x/../announce?" + query(9)),
    "scrape": get(f"/scrape?info_hash={esc(IH)}"),
    "full scrape": get("/scrape"),
    "malformed scrape": get("/scrape?info_hash=%zz"),
    "HEAD announce": f"HEAD /announce?{query(1)} HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
    "not found": get("/favicon.ico"),
    "expect 100-continue": get(
        "/announce?" + query(10), headers="Host: a\r\nExpect: 100-continue\r\n"
    ),
    "announce with a body": (
        f"GET /announce?{query(11)} HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc".encode()
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_both_paths_answer_the_same_bytes(case):
    # One tracker behind two listeners: the second request repeats the first one's change, so
    # both answers describe the same swarm.
    config = config_for()
    tracker = Tracker(config, MemoryStore())
    request = CASES[case]
    heads = (0,) if request.startswith(b"HEAD") else ()
    async with serving(tracker, config, lean_path=False) as (plain, _):
        async with serving(tracker, config) as (fast, _):
            # A peer already there, so that answers carry one.
            await exchange(fast, get("/announce?" + query(99)), count=1)
            want, want_closed = await exchange(plain, request, count=1, heads=heads)
            got, got_closed = await exchange(fast, request, count=1, heads=heads)
    assert [(undated(h), b) for h, b in got] == [(undated(h), b) for h, b in want]
    assert got_closed == want_closed


async def test_the_hot_routes_take_the_lean_path_and_others_aiohttps():
    config = config_for()
    async with serving(Tracker(config, MemoryStore()), config) as (port, runner):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/announce?" + query(1)))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        await reader.readexactly(int(re.search(rb"Content-Length: (\d+)", head).group(1)))
        (guard,) = runner.limits.open
        parser = guard.inner._parser
        assert isinstance(parser, lean.LeanParser)
        # Answered here: aiohttp's connection task was never needed.
        assert not parser.handed and guard.inner._task_handler is None
        writer.write(get("/favicon.ico"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert status(head) == 404 and parser.handed
        writer.close()


async def test_with_the_access_log_on_aiohttp_answers_everything_and_logs_it(caplog):
    config = make_config(http={"host": "127.0.0.1", "port": 0}, log={"access_log": True})
    async with serving(Tracker(config, MemoryStore()), config) as (port, runner):
        with caplog.at_level("INFO", logger="johnlocke.access"):
            ((head, body),) = (await exchange(port, get("/announce?" + query(1)), count=1))[0]
        assert status(head) == 200 and b"interval" in body
        assert any("GET /announce?" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("store", [MemoryStore, lambda: SlowStore(0.01)], ids=["memory", "slow"])
async def test_pipelined_requests_are_answered_in_order(store):
    config = config_for()
    async with serving(Tracker(config, store()), config) as (port, _):
        first = (
            get("/announce?" + query(1))
            + get("/favicon.ico")
            + get("/announce?" + query(2))
            + get("/announce?info_hash=short")
            + b"HEAD /announce HTTP/1.1\r\nHost: a\r\n\r\n"
            + get(f"/scrape?info_hash={esc(IH)}")
            + get("/announce?" + query(3))
        )
        # Sent while the answers above may still be waiting on the store.
        second = get("/announce?" + query(4)) + get(
            "/announce?" + query(5), headers="Host: a\r\nConnection: close\r\n"
        )
        answers, closed = await exchange(port, first, second, count=9, heads=(4,))
    assert [status(h) for h, _ in answers] == [200, 404, 200, 200, 405, 200, 200, 200, 200]
    bodies = [bencodepy.decode(b) if status(h) == 200 else None for h, b in answers]
    # Each new peer's answer counts the peers before it: the answers left in request order.
    swarm = [b[b"complete"] + b[b"incomplete"] for b in bodies if b and b"complete" in b]
    assert swarm == [1, 2, 3, 4, 5]
    assert b"failure reason" in bodies[3]
    assert bodies[5][b"files"][IH][b"complete"] + bodies[5][b"files"][IH][b"incomplete"] == 2
    assert closed  # after the request that asked for it


async def test_a_waiting_answer_keeps_the_connection_for_the_next_request():
    config = config_for()
    async with serving(Tracker(config, SlowStore(0.01)), config) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for n in range(1, 4):
            writer.write(get("/announce?" + query(n)))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            body = bencodepy.decode(await reader.readexactly(length))
            assert body[b"complete"] + body[b"incomplete"] == n
        writer.close()


async def test_the_keep_alive_deadline_moves_with_each_answer_then_closes():
    config = config_for(keepalive_timeout=0.6)
    async with serving(Tracker(config, MemoryStore()), config) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        for n in range(4):  # 1.2 s of answers, each within the deadline of the one before
            writer.write(get("/announce?" + query(n)))
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            await asyncio.sleep(0.3)
        await reader.read(65536)  # the last body
        quiet = loop.time()
        # Open throughout the answers above (1.2 s, twice the timeout); closed once idle.
        assert await asyncio.wait_for(reader.read(1), WAIT) == b""
        assert loop.time() - quiet <= 2.0
        writer.close()


async def test_each_silent_connection_is_closed_at_its_own_deadline():
    config = config_for(request_timeout=0.8)
    async with serving(Tracker(config, MemoryStore()), config) as (port, runner):
        loop = asyncio.get_running_loop()
        early, early_w = await asyncio.open_connection("127.0.0.1", port)
        opened = loop.time()
        await asyncio.sleep(0.4)
        late, late_w = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(early.read(1), WAIT) == b""
        assert loop.time() - opened >= 0.7
        # The later one has 0.4 s left: still open, and a request now is answered.
        late_w.write(get("/announce?" + query(1)))
        head = await asyncio.wait_for(late.readuntil(b"\r\n\r\n"), WAIT)
        assert status(head) == 200
        assert runner.limits.timed_out == 1
        early_w.close()
        late_w.close()


async def test_a_client_that_does_not_read_is_held_back_and_then_served_in_full():
    config = config_for()
    async with serving(Tracker(config, MemoryStore()), config) as (port, runner):
        count = 20_000
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/announce?" + query(1)) * count)
        (guard,) = runner.limits.open
        transport = guard.transport
        buffered = []
        for _ in range(20):  # while the client reads nothing
            await asyncio.sleep(0.05)
            buffered.append(transport.get_write_buffer_size())
        # What the server holds for it stays near asyncio's high-water mark (64 KiB), instead
        # of growing by each answer the kernel cannot take.
        assert max(buffered) <= 128 * 1024, buffered
        got = b""
        answers: list[tuple[bytes, bytes]] = []
        while len(answers) < count:
            got += await asyncio.wait_for(reader.read(1 << 20), WAIT)
            more, got = split(got)
            answers += more
        assert all(status(h) == 200 for h, _ in answers) and len(answers) == count
        writer.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_served_sockets_have_tcp_nodelay(loop):
    # The lean path does not set TCP_NODELAY itself (aiohttp would, a syscall per connection):
    # the event loop's transports do. Without it, pipelined answers could wait out delayed ACKs.
    async def check() -> int:
        config = config_for()
        async with serving(Tracker(config, MemoryStore()), config) as (port, runner):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get("/announce?" + query(1)) * 2)
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            (guard,) = runner.limits.open
            sock = guard.transport.get_extra_info("socket")
            writer.close()
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    factory = None
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(check())
