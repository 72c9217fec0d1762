"""Announce and scrape through a real aiohttp server, as clients see them."""

from __future__ import annotations

import asyncio
import json
import socket

import bencodepy
import pytest
from multidict import CIMultiDict

from .conftest import esc
from .test_protocol import client_requests

IH = bytes.fromhex("a4f0c23ed651c152a13fe5425c823f2cfdf693d1")
IH2 = b"\x02" * 20
LOCAL = bytes([127, 0, 0, 1])


def pid(n: int) -> bytes:
    return b"-JL0001-" + n.to_bytes(12, "big")


def compact(peers: bytes) -> list[tuple[bytes, int]]:
    return [
        (peers[i : i + 4], int.from_bytes(peers[i + 4 : i + 6], "big"))
        for i in range(0, len(peers), 6)
    ]


def ports(reply: dict) -> set[int]:
    return {port for _, port in compact(reply[b"peers"])}


async def test_announce_answer_has_every_field(tracker_client):
    c = await tracker_client(announce={"interval": 120, "min_interval": 60, "peer_timeout": 300})
    r = await c.announce(IH, pid(1), port=1001, event="started")
    assert r[b"interval"] == 120 and r[b"min interval"] == 60
    assert (r[b"complete"], r[b"incomplete"], r[b"downloaded"]) == (0, 1, 0)
    assert r[b"peers"] == b"" and r[b"peers6"] == b""
    assert r[b"external ip"] == LOCAL
    assert len(r[b"tracker id"]) > 0
    # A client that echoes the tracker id back is not sent it again.
    r2 = await c.announce(IH, pid(1), port=1001, trackerid=r[b"tracker id"].decode())
    assert b"tracker id" not in r2


async def test_peers_find_each_other_but_never_themselves(tracker_client):
    c = await tracker_client()
    await c.announce(IH, pid(1), port=1001, event="started")
    r = await c.announce(IH, pid(2), port=1002, event="started")
    assert compact(r[b"peers"]) == [(LOCAL, 1001)]
    r = await c.announce(IH, pid(1), port=1001)
    assert compact(r[b"peers"]) == [(LOCAL, 1002)]


async def test_seeders_get_only_leechers(tracker_client):
    c = await tracker_client()
    for n in range(1, 6):
        await c.announce(IH, pid(n), port=1000 + n, left=0)
    for n in range(6, 9):
        await c.announce(IH, pid(n), port=1000 + n, left=5)
    r = await c.announce(IH, pid(1), port=1001, left=0)
    assert ports(r) == {1006, 1007, 1008}
    r = await c.announce(IH, pid(6), port=1006, left=5)
    assert ports(r) == {1001, 1002, 1003, 1004, 1005, 1007, 1008}
    assert (r[b"complete"], r[b"incomplete"]) == (5, 3)


async def test_numwant_default_cap_and_zero(tracker_client):
    c = await tracker_client(announce={"numwant_default": 5, "numwant_max": 8})
    for n in range(20):
        await c.announce(IH, pid(n), port=2000 + n)
    assert len(compact((await c.announce(IH, pid(0), port=2000))[b"peers"])) == 5
    assert len(compact((await c.announce(IH, pid(0), port=2000, numwant=7))[b"peers"])) == 7
    assert len(compact((await c.announce(IH, pid(0), port=2000, numwant=500))[b"peers"])) == 8
    r = await c.announce(IH, pid(0), port=2000, numwant=0)
    assert r[b"peers"] == b"" and r[b"incomplete"] == 20


async def test_non_compact_answers_with_and_without_peer_id(tracker_client):
    c = await tracker_client()
    await c.announce(IH, pid(1), port=1001)
    r = await c.announce(IH, pid(2), port=1002, compact=0)
    assert r[b"peers"] == [{b"ip": b"127.0.0.1", b"port": 1001, b"peer id": pid(1)}]
    r = await c.announce(IH, pid(2), port=1002, compact=0, no_peer_id=1)
    assert r[b"peers"] == [{b"ip": b"127.0.0.1", b"port": 1001}]


async def test_stopped_removes_the_peer(tracker_client):
    c = await tracker_client()
    await c.announce(IH, pid(1), port=1001)
    await c.announce(IH, pid(2), port=1002)
    r = await c.announce(IH, pid(1), port=1001, event="stopped", numwant=0)
    assert (r[b"complete"], r[b"incomplete"]) == (0, 1)
    assert r[b"peers"] == b""
    r = await c.announce(IH, pid(2), port=1002)
    assert r[b"peers"] == b""


async def test_downloads_count_once_per_completing_peer(tracker_client):
    c = await tracker_client()
    # libtorrent: started -> completed (left=0) -> regular announces.
    await c.announce(IH, pid(1), left=10, event="started")
    await c.announce(IH, pid(1), left=0, event="completed")
    await c.announce(IH, pid(1), left=0)
    # rtorrent: left reaches 0 first, "completed" arrives later.
    await c.announce(IH, pid(2), left=10, event="started")
    await c.announce(IH, pid(2), left=0)
    await c.announce(IH, pid(2), left=0, event="completed")
    # aria2/ctorrent: never send "completed".
    await c.announce(IH, pid(3), left=10, event="started")
    await c.announce(IH, pid(3), left=0)
    # A seeder that starts seeded is not a download.
    await c.announce(IH, pid(4), left=0, event="started")
    (files,) = (await c.scrape(IH))[b"files"].values()
    assert files == {b"complete": 4, b"incomplete": 0, b"downloaded": 3}


async def test_peer_id_from_another_address_needs_the_key(tracker_client):
    c = await tracker_client(announce={"allow_ip_param": True})
    await c.announce(IH, pid(1), port=1001, key="AAAA", ip="10.0.0.1")
    r = await c.announce(IH, pid(1), port=1001, key="BBBB", ip="10.0.0.2")
    assert b"another address" in r[b"failure reason"]
    r = await c.announce(IH, pid(1), port=1001, ip="10.0.0.2")
    assert b"another address" in r[b"failure reason"]
    r = await c.announce(IH, pid(2), port=1002)
    assert compact(r[b"peers"]) == [(bytes([10, 0, 0, 1]), 1001)]
    await c.announce(IH, pid(1), port=1001, key="AAAA", ip="10.0.0.2")
    r = await c.announce(IH, pid(2), port=1002)
    assert compact(r[b"peers"]) == [(bytes([10, 0, 0, 2]), 1001)]


async def test_ip_parameter_is_ignored_unless_allowed(tracker_client):
    c = await tracker_client()
    await c.announce(IH, pid(1), port=1001, ip="10.9.9.9")
    r = await c.announce(IH, pid(2), port=1002)
    assert compact(r[b"peers"]) == [(LOCAL, 1001)]


async def test_ipv6_peers_go_to_peers6(tracker_client):
    c = await tracker_client(announce={"allow_ip_param": True})
    await c.announce(IH, pid(1), port=1001, ip="2001:db8::1")
    await c.announce(IH, pid(2), port=1002, ip="2001:db8::2")
    await c.announce(IH, pid(3), port=1003)  # IPv4
    r = await c.announce(IH, pid(2), port=1002, ip="2001:db8::2")
    assert r[b"peers"] == b""
    assert r[b"peers6"] == socket.inet_pton(socket.AF_INET6, "2001:db8::1") + (1001).to_bytes(
        2, "big"
    )
    assert r[b"external ip"] == socket.inet_pton(socket.AF_INET6, "2001:db8::2")
    assert r[b"incomplete"] == 3
    r = await c.announce(IH, pid(3), port=1003)
    assert r[b"peers6"] == b"" and compact(r[b"peers"]) == []


async def test_forwarded_address_only_from_trusted_proxies(tracker_client):
    untrusted = await tracker_client()
    r = await untrusted.announce(IH, pid(1), headers={"X-Forwarded-For": "10.1.1.1"})
    assert r[b"external ip"] == LOCAL
    c = await tracker_client(http={"trusted_proxies": ["127.0.0.0/8"]})
    r = await c.announce(IH, pid(1), headers={"X-Forwarded-For": "10.1.1.1, 127.0.0.5"})
    assert r[b"external ip"] == bytes([10, 1, 1, 1])
    # Behind a trusted proxy, ip= is believed too.
    r = await c.announce(IH, pid(3), ip="10.3.3.3")
    assert r[b"external ip"] == bytes([10, 3, 3, 3])
    r = await c.announce(IH, pid(4), headers={"X-Forwarded-For": "garbage"})
    assert b"X-Forwarded-For" in r[b"failure reason"]


BAD = [
    ("info_hash=abc&peer_id=-JL0001-000000000000&port=1", "info_hash must be 20 bytes"),
    (f"info_hash={esc(IH)}&peer_id=x&port=1", "peer_id must be 20 bytes"),
    (f"info_hash={esc(IH)}&peer_id=-JL0001-000000000000&port=99999", "port"),
    (f"info_hash={esc(IH)}&peer_id=-JL0001-000000000000&port=1&left=-1", "left"),
    (f"info_hash={esc(IH)}&peer_id=-JL0001-000000000000&port=1&event=done", "unknown event"),
    (f"info_hash=%ZZ{esc(IH)[3:]}&peer_id=-JL0001-000000000000&port=1", "percent escape"),
    (f"info_hash={esc(IH)}&peer_id=-JL0001-000000000000&port=1&x=" + "y" * 9000, "too long"),
]


@pytest.mark.parametrize("query,reason", BAD)
async def test_bad_announce_is_a_bencoded_failure_and_changes_nothing(
    tracker_client, query, reason
):
    c = await tracker_client()
    body = await c.get("/announce?" + query)
    assert reason in body[b"failure reason"].decode()
    assert await c.tracker.store.stats() == (0, 0, 0, 0, 0, 0, 0)


async def test_unknown_paths_are_404(tracker_client):
    c = await tracker_client()
    assert (await c.http.get("/favicon.ico")).status == 404
    assert (await c.http.get("/announce.php")).status == 404


async def test_internal_errors_are_generic_and_logged(tracker_client, caplog):
    c = await tracker_client()

    def explode(*args):
        raise RuntimeError("strategy bug")

    c.tracker.strategies.default.strategy.select = explode
    r = await c.announce(IH, pid(1))
    assert r == {b"failure reason": b"internal tracker error"}
    assert "strategy bug" in caplog.text


# --- scrape -----------------------------------------------------------------------------------


async def test_scrape_one_many_and_unknown(tracker_client):
    c = await tracker_client()
    await c.announce(IH, pid(1), left=0)
    await c.announce(IH, pid(2), left=5)
    r = await c.scrape(IH, IH2)
    assert r[b"files"] == {
        IH: {b"complete": 1, b"incomplete": 1, b"downloaded": 0},
        IH2: {b"complete": 0, b"incomplete": 0, b"downloaded": 0},
    }
    r = await c.scrape(IH, IH)
    assert list(r[b"files"]) == [IH]


async def test_full_scrape_only_when_enabled(tracker_client):
    c = await tracker_client()
    await c.announce(IH, pid(1))
    r = await c.get("/scrape")
    assert b"full scrape is disabled" in r[b"failure reason"]
    c = await tracker_client(scrape={"full_scrape": True})
    await c.announce(IH, pid(1))
    await c.announce(IH2, pid(1), left=0)
    r = await c.get("/scrape")
    assert set(r[b"files"]) == {IH, IH2}


async def test_scrape_rejects_bad_hashes_and_too_many(tracker_client):
    c = await tracker_client(scrape={"max_hashes": 2})
    r = await c.get("/scrape?info_hash=short")
    assert b"info_hash must be 20 bytes" in r[b"failure reason"]
    r = await c.scrape(IH, IH2, b"\x03" * 20)
    assert b"too many info_hash" in r[b"failure reason"]


# --- verbatim requests from real clients ------------------------------------------------------


async def raw_exchange(host: str, port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


async def test_verbatim_client_requests_get_valid_answers(tracker_client):
    """Replay what real clients sent, byte for byte (HTTP/1.0 without Host included)."""
    c = await tracker_client()
    host, port = c.http.server.host, c.http.server.port
    rows = client_requests()
    for row in rows:
        headers = [(k, v) for k, v in row["headers"] if k.lower() != "connection"]
        head = row["request_line"] + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        if row["request_line"].endswith("HTTP/1.1"):
            head += "Connection: close\r\n"
        data = await raw_exchange(host, port, (head + "\r\n").encode("latin-1"))
        status, _, rest = data.partition(b"\r\n")
        assert status.split()[1] == b"200", (row["client"], status)
        body = bencodepy.decode(rest.partition(b"\r\n\r\n")[2])
        assert b"failure reason" not in body, (row["client"], body)
        if row["kind"] == "announce":
            assert b"interval" in body and b"peers" in body
        else:
            assert len(body[b"files"]) == 1
    # Every client's torrent left a swarm behind or was stopped cleanly; nothing blew up.
    assert json.dumps(await c.tracker.store.stats())


# --- behind a proxy (issue 10, defect 2) -----------------------------------------------------


async def test_every_forwarded_line_counts_and_the_rightmost_untrusted_hop_wins(tracker_client):
    c = await tracker_client(http={"trusted_proxies": ["127.0.0.1/32", "10.9.0.0/16"]})
    # HAProxy's "option forwardfor" appends its own line after whatever the client sent.
    appended = CIMultiDict(
        [("X-Forwarded-For", "203.0.113.66"), ("X-Forwarded-For", "198.51.100.7")]
    )
    r = await c.announce(IH, pid(1), headers=appended)
    assert r[b"external ip"] == bytes([198, 51, 100, 7])
    # A chain through two trusted proxies, over several lines: the last untrusted hop.
    chain = CIMultiDict(
        [("X-Forwarded-For", "203.0.113.66, 198.51.100.8"), ("X-Forwarded-For", "10.9.1.1")]
    )
    r = await c.announce(IH, pid(2), headers=chain)
    assert r[b"external ip"] == bytes([198, 51, 100, 8])


async def test_only_the_configured_real_ip_header_is_believed(tracker_client):
    # Behind an nginx that sets only X-Real-IP, the client's own X-Forwarded-For passes through.
    c = await tracker_client(
        http={"trusted_proxies": ["127.0.0.1/32"], "real_ip_header": "X-Real-IP"}
    )
    both = {"X-Forwarded-For": "127.0.0.5", "X-Real-IP": "198.51.100.9"}
    r = await c.announce(IH, pid(1), headers=both)
    assert r[b"external ip"] == bytes([198, 51, 100, 9])
    assert (await c.http.get("/stats", headers=both)).status == 403
    # By default X-Forwarded-For is the header, and X-Real-IP is ignored.
    c = await tracker_client(http={"trusted_proxies": ["127.0.0.1/32"]})
    r = await c.announce(IH, pid(2), headers={"X-Real-IP": "198.51.100.9"})
    assert r[b"external ip"] == LOCAL


# --- HEAD and HTTP versions (issue 10, defect 9) ---------------------------------------------


async def test_head_changes_nothing(tracker_client):
    c = await tracker_client()
    query = f"info_hash={esc(IH)}&peer_id={esc(pid(1))}&port=6881&left=5"
    for path in (f"/announce?{query}", f"/scrape?info_hash={esc(IH)}"):
        resp = await c.http.head(path)
        assert resp.status == 405 and resp.headers["Allow"] == "GET"
    assert await c.tracker.store.stats() == (0, 0, 0, 0, 0, 0, 0)
    assert (await c.announce(IH, pid(2)))[b"incomplete"] == 1  # GET still works
