"""Connection limits and timeouts, tested with raw sockets against the real listener (``start``).

Slow or silent clients are closed; a full server makes room by closing the oldest connection that
has not sent a request yet; real clients keep being answered throughout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import bencodepy

from johnlocke.http.server import build_app, listening, start
from johnlocke.store.memory import MemoryStore
from johnlocke.tracker import Tracker

from .conftest import esc, make_config

IH = bytes(range(20))
REQUEST = (
    f"GET /announce?info_hash={esc(IH)}&peer_id=-XX0001-abcdefghijkl&port=6881&left=100"
    " HTTP/1.1\r\n"
    "Host: 127.0.0.1\r\n\r\n"
).encode()
CLOSED_WITHIN = 5.0  # generous: the limits under test are well below a second


@asynccontextmanager
async def server(**http) -> AsyncIterator[int]:
    config = make_config(http={"host": "127.0.0.1", "port": 0, **http})
    tracker = Tracker(config, MemoryStore())
    runner = await start(build_app(tracker, config), config)
    try:
        yield listening(runner)[0][1]
    finally:
        await runner.cleanup()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection (EOF or reset) within CLOSED_WITHIN."""
    try:
        while await asyncio.wait_for(reader.read(65536), CLOSED_WITHIN):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


async def still_open(reader: asyncio.StreamReader, wait: float = 0.3) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1), wait)
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False
    return data != b""


SCRAPE = f"GET /scrape?info_hash={esc(IH)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def ask(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes = REQUEST
) -> dict:
    """One request (an announce unless told) on an open connection; the decoded answer."""
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSED_WITHIN)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return bencodepy.decode(await reader.readexactly(length))


async def test_a_silent_connection_is_closed_after_request_timeout():
    async with server(request_timeout=0.3, keepalive_timeout=60) as port:
        reader, writer = await connect(port)
        assert await closed(reader)
        writer.close()


async def test_a_slowloris_is_closed_even_while_it_keeps_sending():
    async with server(request_timeout=0.5, keepalive_timeout=60) as port:
        reader, writer = await connect(port)
        for byte in REQUEST[:-4]:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.02)
            if reader.at_eof():
                break
        assert await closed(reader)
        writer.close()


async def test_a_prompt_client_is_served_and_kept_alive():
    async with server(request_timeout=0.3, keepalive_timeout=60) as port:
        reader, writer = await connect(port)
        assert (await ask(reader, writer))[b"incomplete"] == 1
        await asyncio.sleep(0.6)  # past request_timeout: only the first request had a deadline
        assert (await ask(reader, writer))[b"incomplete"] == 1
        writer.close()


async def test_a_request_split_across_packets_is_fine():
    async with server(request_timeout=2) as port:
        reader, writer = await connect(port)
        for i in range(0, len(REQUEST), 7):
            writer.write(REQUEST[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSED_WITHIN)
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()


async def test_an_idle_keep_alive_connection_and_a_slow_second_request_are_closed():
    async with server(request_timeout=60, keepalive_timeout=0.5) as port:
        reader, writer = await connect(port)
        await ask(reader, writer)
        assert await closed(reader)  # idle after its answer
        reader, writer = await connect(port)
        await ask(reader, writer)
        writer.write(REQUEST[:30])  # starts a second request and never finishes it
        assert await closed(reader)
        writer.close()


async def test_an_endless_request_head_is_cut_off():
    async with server(request_timeout=60) as port:
        reader, writer = await connect(port)
        writer.write(b"GET /announce?x=1 HTTP/1.1\r\n")
        try:
            for _ in range(200):
                writer.write(b"X-Filler: " + b"a" * 500 + b"\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        assert await closed(reader)
        writer.close()


async def test_at_the_cap_the_oldest_silent_connection_makes_room():
    async with server(
        max_connections=4, max_connections_per_ip=0, request_timeout=60, keepalive_timeout=60
    ) as port:
        silent = [await connect(port) for _ in range(4)]
        await asyncio.sleep(0.05)
        reader, writer = await connect(port)
        assert (await ask(reader, writer))[b"incomplete"] == 1
        assert await closed(silent[0][0])  # the oldest went
        assert all([await still_open(r) for r, _ in silent[1:]])
        for _, w in silent:
            w.close()
        writer.close()


async def test_at_the_cap_with_every_connection_busy_a_newcomer_is_refused(caplog):
    async with server(
        max_connections=3, max_connections_per_ip=0, request_timeout=60, keepalive_timeout=60
    ) as port:
        busy = [await connect(port) for _ in range(3)]
        for r, w in busy:
            await ask(r, w)
            w.write(REQUEST[:40])  # in the middle of its next request
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.WARNING, logger="johnlocke.http"):
            reader, writer = await connect(port)
            assert await closed(reader)
        assert "connection limit reached ([http] max_connections = 3)" in caplog.text
        # The busy connections were left alone, and room comes back when one leaves.
        writer = busy[1][1]
        writer.write(REQUEST[40:])
        head = await asyncio.wait_for(busy[1][0].readuntil(b"\r\n\r\n"), CLOSED_WITHIN)
        assert head.startswith(b"HTTP/1.1 200")
        busy[0][1].close()
        await asyncio.sleep(0.1)
        reader, writer = await connect(port)
        assert (await ask(reader, writer))[b"incomplete"] == 1
        for _, w in busy[1:]:
            w.close()
        writer.close()


async def test_many_slow_clients_do_not_lock_out_real_ones():
    async with server(
        max_connections=20, max_connections_per_ip=0, request_timeout=60, keepalive_timeout=60
    ) as port:
        attackers = []
        for _ in range(60):
            r, w = await connect(port)
            w.write(REQUEST[:20])
            attackers.append((r, w))
        for _ in range(10):
            reader, writer = await connect(port)
            assert (await ask(reader, writer))[b"incomplete"] == 1
            writer.close()
        open_ = [await still_open(r, 0.01) for r, _ in attackers]
        assert sum(open_) <= 20
        for _, w in attackers:
            w.close()


async def test_oversized_headers_get_a_client_error_not_a_server_error(caplog):
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    async with server() as port:
        for extra in (
            b"".join(b"X-H%d: v\r\n" % i for i in range(40)),  # too many headers
            b"X-Long: " + b"a" * 5000 + b"\r\n",  # one header too long
        ):
            reader, writer = await connect(port)
            writer.write(REQUEST[:-2] + extra + b"\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n"), CLOSED_WITHIN)
            assert head[:9] in (b"HTTP/1.0 ", b"HTTP/1.1 ") and head[9:10] == b"4", head
            writer.close()
    # Refused at debug level, without a traceback: garbage must not flood the log.
    assert [r.levelno for r in caplog.records if r.name == "aiohttp.server"] == [logging.DEBUG] * 2
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_request_longer_than_one_read_is_answered():
    # Reads are 16 KiB at a time; a request line just under aiohttp's limit needs two.
    async with server() as port:
        reader, writer = await connect(port)
        query = f"info_hash={esc(IH)}&peer_id=-XX0001-abcdefghijkl&port=6881&pad=" + "a" * 16000
        writer.write(f"GET /announce?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSED_WITHIN)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        answer = bencodepy.decode(await reader.readexactly(length))
        assert b"query string too long" in answer[b"failure reason"]
        writer.close()


# --- keep-alive connections at the cap (issue 10, defect 1) ---------------------------------


async def connect_from(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from another loopback address (all of 127.0.0.0/8 is this machine)."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def keep_alive_attacker(port: int, source: str, every: float, stop: asyncio.Event) -> int:
    """Holds one keep-alive connection, re-requesting every ``every`` s; reconnects when closed.

    Returns how many times it lost its connection."""
    lost = 0
    while not stop.is_set():
        try:
            reader, writer = await connect_from(port, source)
        except OSError:
            lost += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while not stop.is_set():
                await ask(reader, writer, SCRAPE)
                try:
                    await asyncio.wait_for(stop.wait(), every)
                except TimeoutError:
                    pass
        except (OSError, asyncio.IncompleteReadError, AssertionError, TimeoutError):
            lost += 1
        finally:
            writer.close()
    return lost


async def test_idle_keep_alive_connections_make_room_for_new_clients():
    # 250 connections (25 from each of 10 addresses) against a cap of 200, each served and
    # asking again every 3 s, well within keepalive_timeout: new clients must still get in.
    async with server(max_connections=200, request_timeout=60, keepalive_timeout=60) as port:
        stop = asyncio.Event()
        attackers = [
            asyncio.create_task(keep_alive_attacker(port, f"127.0.0.{10 + i % 10}", 3.0, stop))
            for i in range(250)
        ]
        await asyncio.sleep(2.0)  # every attacker has connected and been served once
        answered = 0
        for _ in range(80):
            try:
                reader, writer = await connect(port)
                answered += (await ask(reader, writer))[b"incomplete"] == 1
                writer.close()
            except (OSError, asyncio.IncompleteReadError):
                pass
        stop.set()
        await asyncio.gather(*attackers)
        assert answered == 80


async def test_a_request_line_saying_http_2_gets_an_http_1_1_answer():
    # aiohttp's parser lets HTTP/2.0 and HTTP/0.9 request lines by; the answer is HTTP/1.x.
    async with server() as port:
        for sent, expected in (
            (b"HTTP/2.0", b"HTTP/1.1"),
            (b"HTTP/0.9", b"HTTP/1.0"),
            (b"HTTP/1.0", b"HTTP/1.0"),
            (b"HTTP/1.1", b"HTTP/1.1"),
        ):
            reader, writer = await connect(port)
            writer.write(REQUEST.replace(b"HTTP/1.1", sent))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSED_WITHIN)
            assert head.startswith(expected + b" 200 OK"), (sent, head)
            writer.close()


async def test_silent_connections_go_first_then_the_longest_idle_and_never_a_busy_one():
    # (A connection younger than a second goes after the idle ones: it has had no time to send,
    # and new clients must not lose theirs to a crowd of reconnecting ones.)
    async with server(
        max_connections=4, max_connections_per_ip=0, request_timeout=60, keepalive_timeout=60
    ) as port:
        a = await connect(port)
        await ask(*a)  # idle the longest
        b = await connect(port)
        await ask(*b)
        b[1].write(REQUEST[:40])  # busy: in the middle of its next request
        c = await connect(port)
        await ask(*c)
        silent = await connect(port)  # never sent a request...
        await asyncio.sleep(1.2)  # ...although it had the time (a second) to
        n1 = await connect(port)
        await ask(*n1)
        assert await closed(silent[0])
        n2 = await connect(port)
        await ask(*n2)
        assert await closed(a[0])  # not b, although b was served before c
        assert await still_open(b[0]) and await still_open(c[0])
        await ask(*c)  # c is served again: now the idle one that waited least
        n3 = await connect(port)
        await ask(*n3)
        assert await closed(n1[0])
        assert await still_open(c[0]) and await still_open(n2[0])
        b[1].write(REQUEST[40:])  # b finishes its request and is answered
        head = await asyncio.wait_for(b[0].readuntil(b"\r\n\r\n"), CLOSED_WITHIN)
        assert head.startswith(b"HTTP/1.1 200")
        for _, w in (a, b, c, silent, n1, n2, n3):
            w.close()


async def test_one_address_holds_at_most_its_share_of_the_cap(caplog):
    # max_connections_per_ip = "auto": an eighth of the cap, 5 of 40.
    async with server(max_connections=40, request_timeout=60, keepalive_timeout=60) as port:
        with caplog.at_level(logging.WARNING, logger="johnlocke.http"):
            mine = [await connect_from(port, "127.0.0.2") for _ in range(8)]
            await asyncio.sleep(0.1)
            assert [await still_open(r, 0.05) for r, _ in mine] == [True] * 5 + [False] * 3
        assert "over [http] max_connections_per_ip = 5 (the last from 127.0.0.2)" in caplog.text
        for r, w in mine[:5]:
            assert b"files" in await ask(r, w, SCRAPE)
        reader, writer = await connect(port)  # another address is not affected
        assert (await ask(reader, writer))[b"incomplete"] == 1
        mine[0][1].close()  # and the address has room again once one of its connections left
        await asyncio.sleep(0.1)
        again = await connect_from(port, "127.0.0.2")
        assert b"files" in await ask(*again, SCRAPE)
        for _, w in (*mine, (reader, writer), again):
            w.close()


async def test_trusted_proxies_are_not_held_to_the_per_address_limit():
    async with server(
        max_connections=40, max_connections_per_ip=2, trusted_proxies=["127.0.0.1/32"]
    ) as port:
        via_proxy = [await connect(port) for _ in range(6)]
        for r, w in via_proxy:
            assert (await ask(r, w))[b"incomplete"] == 1
        direct = [await connect_from(port, "127.0.0.3") for _ in range(3)]
        await asyncio.sleep(0.1)
        assert [await still_open(r, 0.05) for r, _ in direct] == [True, True, False]
        for _, w in (*via_proxy, *direct):
            w.close()
