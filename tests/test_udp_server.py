"""The UDP server in-process, on real sockets: a store that makes the handler wait, shutdown
with handlers in flight, several processes' worth of servers sharing one port, and failures
inside the tracker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct

import pytest

from johnlocke.stats import INTERNAL_REASON, Stats
from johnlocke.store.memory import MemoryStore
from johnlocke.tracker import Tracker
from johnlocke.udp import server as udp_server
from johnlocke.udp.server import UdpServer, make_secret

from .conftest import SlowStore, make_config
from .udp_client import MAGIC, STARTED, announce_datagram

PID = b"-JL0001-abcdefghijkl"


class BrokenStore(MemoryStore):
    async def announce(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("the disk is on fire")


class Client:
    """A UDP client socket driven by the test's own event loop."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect((host, port))
        self.loop = asyncio.get_running_loop()
        self.cid = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    async def recv(self, timeout: float = 2.0) -> bytes:
        return await asyncio.wait_for(self.loop.sock_recv(self.sock, 4096), timeout)

    async def connect(self) -> bytes:
        self.send(MAGIC + struct.pack(">II", 0, 1))
        self.cid = (await self.recv())[8:16]
        return self.cid

    def announce(self, txid: int, info_hash: bytes, peer_id: bytes = PID, port: int = 6881) -> None:
        self.send(announce_datagram(self.cid, txid, info_hash, peer_id, event=STARTED, port=port))


def server(store: MemoryStore, *, secret: bytes | None = None, reuse_port: bool = False,
           port: int = 0, host: str = "127.0.0.1") -> UdpServer:  # fmt: skip
    config = make_config(udp={"host": [host], "port": port})
    return UdpServer(Tracker(config, store), config, Stats(), secret, reuse_port)


@contextlib.asynccontextmanager
async def running(store: MemoryStore):
    """A started server on ``store`` and a connected client (both closed afterwards)."""
    srv = server(store)
    await srv.start()
    c = Client(srv.addresses[0][1])
    try:
        await c.connect()
        yield srv, c
    finally:
        c.close()
        await srv.stop()


async def test_a_store_that_waits_does_not_hold_other_datagrams_up():
    async with running(SlowStore(0.3)) as (_srv, c):
        c.announce(7, b"a" * 20)
        # While the announce waits on the store, a connect is answered at once.
        c.send(MAGIC + struct.pack(">II", 0, 8))
        first = await c.recv()
        assert struct.unpack_from(">II", first) == (0, 8)
        second = await c.recv()
        assert struct.unpack_from(">IIIII", second) == (1, 7, 1800, 0, 1)


async def test_shutdown_lets_handlers_in_flight_answer():
    async with running(SlowStore(0.2)) as (srv, c):
        c.announce(9, b"b" * 20)
        await asyncio.sleep(0.05)  # read, now waiting on the store
        await srv.stop(timeout=5)
        answer = await c.recv()
        assert struct.unpack_from(">II", answer) == (1, 9)
        assert srv.sockets == []


async def test_a_failure_inside_the_tracker_is_logged_and_answered_generically(caplog):
    async with running(BrokenStore()) as (srv, c):
        with caplog.at_level(logging.ERROR, logger="johnlocke.udp"):
            c.announce(3, b"c" * 20)
            answer = await c.recv()
        assert answer == struct.pack(">II", 3, 3) + b"internal tracker error"
        assert "the disk is on fire" in caplog.text
        assert srv.stats.udp.failures == {INTERNAL_REASON: 1}


async def test_servers_sharing_a_port_and_a_secret_accept_each_others_ids():
    # What a parent starting several worker processes does: one secret, SO_REUSEPORT.
    secret = make_secret(make_config())
    store = MemoryStore()
    first = server(store, secret=secret, reuse_port=True)
    await first.start()
    port = first.addresses[0][1]
    second = server(store, secret=secret, reuse_port=True, port=port)
    await second.start()
    clients = [Client(port) for _ in range(24)]
    try:
        cid = await clients[0].connect()
        for i, c in enumerate(clients):
            c.cid = cid  # one id for every socket of the address, as libtorrent does
            c.announce(100 + i, os.urandom(20), port=7000 + i)
        answers = [await c.recv() for c in clients]
        assert [struct.unpack_from(">I", a)[0] for a in answers] == [1] * len(clients)
        # The kernel spread the sockets over both servers, and neither refused an id.
        served = [srv.stats.udp.announce_latency.count for srv in (first, second)]
        assert sum(served) == len(clients) and min(served) > 0, served
        assert not first.stats.udp.bad and not second.stats.udp.bad
    finally:
        for c in clients:
            c.close()
        await first.stop()
        await second.stop()


def test_a_random_secret_per_process_unless_configured():
    assert make_secret(make_config()) != make_secret(make_config())
    shared = make_config(udp={"secret": "sixteen chars at least"})
    assert make_secret(shared) == make_secret(shared) and len(make_secret(shared)) == 32


async def test_localhost_listens_on_both_loopbacks():
    srv = server(MemoryStore(), host="localhost")
    await srv.start()
    try:
        assert {host for host, _ in srv.addresses} == {"127.0.0.1", "::1"}
        for host, port in srv.addresses:
            c = Client(port, host)
            try:
                assert len(await c.connect()) == 8
            finally:
                c.close()
    finally:
        await srv.stop()


async def test_a_port_taken_by_another_socket_is_an_error():
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        srv = server(MemoryStore(), port=taken.getsockname()[1])
        with pytest.raises(OSError, match="cannot listen on UDP 127.0.0.1:"):
            await srv.start()
    finally:
        taken.close()


async def test_a_handler_that_outlives_the_shutdown_timeout_is_cancelled():
    store = SlowStore(30)
    async with running(store) as (srv, c):
        c.announce(11, b"d" * 20)
        await asyncio.sleep(0.05)
        t0 = asyncio.get_running_loop().time()
        await srv.stop(timeout=0.2)
        assert asyncio.get_running_loop().time() - t0 < 5
        assert not store.swarms  # cancelled while it waited: nothing was stored
        with pytest.raises(TimeoutError):
            await c.recv(timeout=0.2)


async def test_an_access_log_failure_is_reported_once_not_per_datagram(caplog, monkeypatch):
    def broken(peer_id: bytes) -> bytes:
        raise RuntimeError("the log is broken")

    monkeypatch.setattr(udp_server, "client_prefix", broken)
    monkeypatch.setattr(udp_server.UdpFrontend, "_log_failed", False)
    async with running(MemoryStore()) as (_srv, c):
        with (
            caplog.at_level(logging.INFO, logger="johnlocke.access"),
            caplog.at_level(logging.DEBUG, logger="johnlocke.udp"),
        ):
            for txid in (21, 22, 23):
                c.announce(txid, b"e" * 20)
                assert struct.unpack_from(">II", await c.recv()) == (1, txid)  # still answered
    failures = [r for r in caplog.records if "cannot write an access log line" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
