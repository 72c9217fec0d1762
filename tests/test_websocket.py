"""The WebSocket tracker over real sockets: the tracker app on a test server, clients speaking
the WebTorrent protocol (``tests/ws_client.py``), the memory store behind it."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from johnlocke.http.server import FRONTEND

from .conftest import SlowStore
from .ws_client import WsPeer, text

IH = bytes(range(20))
IH2 = bytes(range(100, 120))


@pytest.fixture
async def ws_tracker(tracker_client):
    """``await ws_tracker(**sections)`` -> (TrackerClient, connect); ``await connect(path)``
    opens a WsPeer on ``path`` (default /announce)."""
    opened: list[WsPeer] = []

    async def factory(**sections):
        tc = await tracker_client(**sections)

        async def connect(path: str = "/announce", peer_id: bytes | None = None) -> WsPeer:
            ws = await tc.http.session.ws_connect(tc.http.make_url(path), autoping=True)
            peer = WsPeer(ws, peer_id)
            opened.append(peer)
            return peer

        return tc, connect

    yield factory
    for peer in opened:
        await peer.close()


async def until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def test_offer_and_answer_are_relayed_between_two_peers(ws_tracker):
    tc, connect = await ws_tracker()
    seeder = await connect()
    await seeder.announce(IH, left=0, event="completed")
    reply = await seeder.recv()
    assert reply["action"] == "announce"
    assert reply["info_hash"] == text(IH)
    assert (reply["complete"], reply["incomplete"]) == (1, 0)
    assert reply["interval"] == 1800

    leecher = await connect()
    [offer_id] = await leecher.announce(IH, offers=1, event="started")
    reply = await leecher.recv()
    assert (reply["complete"], reply["incomplete"]) == (1, 1)
    assert "offer" not in reply

    offer = await seeder.recv()
    assert offer == {
        "action": "announce",
        "info_hash": text(IH),
        "peer_id": text(leecher.peer_id),
        "offer_id": text(offer_id),
        "offer": {"type": "offer", "sdp": f"v=0 offer {offer_id.hex()}"},
    }
    await seeder.answer(IH, offer["peer_id"], offer["offer_id"], "v=0 answer")
    answer = await leecher.recv()
    assert answer == {
        "action": "announce",
        "info_hash": text(IH),
        "peer_id": text(seeder.peer_id),
        "offer_id": text(offer_id),
        "answer": {"type": "answer", "sdp": "v=0 answer"},
    }
    await seeder.nothing()  # the answerer gets no reply
    ws = tc.tracker  # the counts are the swarm's, over every transport
    rows = await ws.scrape([IH])
    assert rows == [(IH, 1, 1, 1)]  # a seeder arriving with "completed" counts a download


async def test_each_offer_goes_to_a_different_peer_and_never_back(ws_tracker):
    _, connect = await ws_tracker()
    peers = [await connect() for _ in range(4)]
    for p in peers:
        await p.announce(IH)
        await p.recv()
    newcomer = await connect()
    ids = await newcomer.announce(IH, offers=5)
    reply = await newcomer.recv()
    assert reply["incomplete"] == 5
    got = []
    for p in peers:
        msg = await p.recv()
        assert msg["peer_id"] == text(newcomer.peer_id)
        got.append(msg["offer_id"])
        await p.nothing(0.05)
    assert len(set(got)) == 4 and set(got) <= {text(i) for i in ids}
    await newcomer.nothing()


async def test_http_peers_are_counted_but_never_get_offers(ws_tracker):
    tc, connect = await ws_tracker()
    http = await tc.announce(IH, b"-qB4520-000000000001", port=6881, left=0)
    assert http[b"complete"] == 1
    browser = await connect()
    await browser.announce(IH, offers=3)
    reply = await browser.recv()
    assert (reply["complete"], reply["incomplete"]) == (1, 1)
    await browser.nothing()
    # ...and the HTTP peer is never given the browser.
    again = await tc.announce(IH, b"-qB4520-000000000002", port=6882, left=10)
    assert again[b"peers"] == b"\x7f\x00\x00\x01\x1a\xe1"


async def test_stopped_and_closing_leave_every_swarm(ws_tracker):
    tc, connect = await ws_tracker()
    p = await connect()
    await p.announce(IH)
    await p.recv()
    await p.announce(IH2)
    await p.recv()
    assert await tc.tracker.scrape([IH, IH2]) == [(IH, 0, 1, 0), (IH2, 0, 1, 0)]
    await p.announce(IH, event="stopped")
    reply = await p.recv()
    assert reply["incomplete"] == 0
    await p.close()
    for _ in range(100):
        if await tc.tracker.scrape([IH2]) == [(IH2, 0, 0, 0)]:
            break
        await asyncio.sleep(0.02)
    assert await tc.tracker.scrape([IH2]) == [(IH2, 0, 0, 0)]


async def test_scrape_one_or_many(ws_tracker):
    _, connect = await ws_tracker()
    p = await connect()
    await p.announce(IH, left=0)
    await p.recv()
    await p.send({"action": "scrape", "info_hash": text(IH)})
    assert await p.recv() == {
        "action": "scrape",
        "files": {text(IH): {"complete": 1, "incomplete": 0, "downloaded": 0}},
    }
    await p.send({"action": "scrape", "info_hash": [text(IH), text(IH2)]})
    files = (await p.recv())["files"]
    assert files[text(IH2)] == {"complete": 0, "incomplete": 0, "downloaded": 0}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("not json", "message is not valid JSON"),
        ("[1, 2]", "message must be a JSON object"),
        ('{"action": "dance"}', "unknown action (announce or scrape)"),
        ('{"info_hash": "x"}', "missing action (announce or scrape)"),
        ('{"action": "announce", "info_hash": "short"}', "info_hash must be a string of 20"),
    ],
)
async def test_bad_messages_get_a_failure_reason(ws_tracker, message, reason):
    _, connect = await ws_tracker()
    p = await connect()
    await p.send(message)
    reply = await p.recv()
    assert reply["failure reason"].startswith(reason)
    # The connection stays usable.
    await p.announce(IH)
    assert (await p.recv())["incomplete"] == 1


async def test_failure_names_the_info_hash_so_the_client_reads_it(ws_tracker):
    _, connect = await ws_tracker()
    p = await connect()
    await p.send({"action": "announce", "info_hash": text(IH), "peer_id": text(p.peer_id),
                  "event": "dancing"})  # fmt: skip
    reply = await p.recv()
    assert reply == {
        "action": "announce",
        "info_hash": text(IH),
        "failure reason": "unknown event (started, completed, stopped, paused or none)",
    }


async def test_an_answer_to_an_offer_never_made_goes_nowhere(ws_tracker):
    tc, connect = await ws_tracker()
    a = await connect()
    b = await connect()
    await a.announce(IH)
    await a.recv()
    await b.answer(IH, text(a.peer_id), text(os.urandom(20)), "v=0 sneaky")
    await a.nothing()
    await b.nothing()
    assert tc.tracker is not None


async def test_passkey_in_the_url_private_mode(ws_tracker, tmp_path):
    (tmp_path / "keys").write_text("0123456789abcdef alice\n")
    (tmp_path / "allow").write_text(IH.hex() + "\n")
    tc, connect = await ws_tracker(
        access={"mode": "private", "passkeys": str(tmp_path / "keys"),
                "allow_list": str(tmp_path / "allow")},
    )  # fmt: skip
    for path in ("/0123456789abcdef/announce", "/announce/0123456789abcdef",
                 "/announce?passkey=0123456789abcdef"):  # fmt: skip
        p = await connect(path)
        await p.announce(IH)
        assert (await p.recv())["action"] == "announce", path
    stranger = await connect("/announce/nope")
    await stranger.announce(IH)
    reply = await stranger.recv()
    assert "passkey" in reply["failure reason"]
    msg = await stranger.ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def closed(peer: WsPeer, timeout: float = 5.0) -> int | None:
    """Wait for the server to close ``peer``'s socket; the close code it sent."""
    while True:
        msg = await peer.ws.receive(timeout=timeout)
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ):
            return peer.ws.close_code
        assert msg.type == aiohttp.WSMsgType.TEXT, msg


async def test_a_message_over_the_size_limit_closes_with_1009(ws_tracker):
    _, connect = await ws_tracker(webtorrent={"max_message_size": 2048})
    p = await connect()
    await p.send({"action": "scrape", "info_hash": "x" * 3000})
    assert await closed(p) == 1009


async def test_at_most_max_offers_are_relayed(ws_tracker):
    _, connect = await ws_tracker(webtorrent={"max_offers": 2})
    peers = [await connect() for _ in range(4)]
    for p in peers:
        await p.announce(IH)
        await p.recv()
    newcomer = await connect()
    await newcomer.announce(IH, offers=4)
    await newcomer.recv()
    got = 0
    for p in peers:
        try:
            await p.recv(timeout=0.3)
            got += 1
        except TimeoutError:
            pass
    assert got == 2


async def test_swarms_per_connection_are_capped(ws_tracker):
    _, connect = await ws_tracker(webtorrent={"max_swarms_per_connection": 2})
    p = await connect()
    for ih in (IH, IH2):
        await p.announce(ih)
        assert "failure reason" not in await p.recv()
    third = bytes(20)
    await p.announce(third)
    reply = await p.recv()
    assert reply["failure reason"] == "too many torrents on one connection (at most 2)"
    assert reply["info_hash"] == text(third)
    await p.announce(IH)  # a swarm it is in is fine
    assert "failure reason" not in await p.recv()


async def test_messages_over_the_rate_are_dropped_and_a_flood_closes(ws_tracker):
    tc, connect = await ws_tracker(webtorrent={"message_rate": 1.0, "message_burst": 3})
    p = await connect()
    for _ in range(10):
        await p.send({"action": "scrape", "info_hash": text(IH)})
    answered = 0
    with pytest.raises(TimeoutError):
        while True:
            await p.recv(timeout=0.5)
            answered += 1
    assert answered == 3
    ws_stats = tc.http.server.app[FRONTEND].service.stats.websocket
    assert ws_stats.dropped["over the message rate"] == 7
    for _ in range(40):
        await p.send({"action": "scrape", "info_hash": text(IH)})
    assert await closed(p) == 1008


async def test_connection_cap_refuses_upgrades_with_503(ws_tracker):
    tc, connect = await ws_tracker(webtorrent={"max_connections": 2})
    await connect()
    await connect()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await connect()
    assert err.value.status == 503
    # Plain HTTP announces are not affected.
    assert b"interval" in await tc.announce(IH, b"-qB4520-000000000009")


async def test_disabled_refuses_upgrades(ws_tracker):
    _, connect = await ws_tracker(webtorrent={"enabled": False})
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await connect()
    assert err.value.status == 503


async def test_silent_connection_is_pinged_then_an_unanswered_ping_closes(ws_tracker):
    tc, _ = await ws_tracker(
        webtorrent={"ping_interval": 0.2, "ping_timeout": 0.5}, http={"request_timeout": 30}
    )
    # A client that answers pings stays; one that does not is closed.
    url = tc.http.make_url("/announce")
    alive = WsPeer(await tc.http.session.ws_connect(url, autoping=True))
    await alive.announce(IH)
    await alive.recv()
    # aiohttp's client answers pings while something reads the socket.
    reading = asyncio.ensure_future(alive.ws.receive(timeout=10))
    dead = WsPeer(await tc.http.session.ws_connect(url, autoping=False))
    await dead.announce(IH2)
    await dead.recv()
    msg = await dead.ws.receive(timeout=3)
    assert msg.type == aiohttp.WSMsgType.PING
    assert await closed(dead, 4) == 1001
    assert await tc.tracker.scrape([IH2]) == [(IH2, 0, 0, 0)]  # it left the swarm
    assert not reading.done()
    assert await tc.tracker.scrape([IH]) == [(IH, 0, 1, 0)]
    reading.cancel()
    await alive.close()


async def test_no_first_message_or_idle_too_long_closes(ws_tracker):
    tc, connect = await ws_tracker(http={"request_timeout": 0.5}, webtorrent={"idle_timeout": 2.5})
    mute = await connect()
    talker = await connect()
    await talker.announce(IH)
    await talker.recv()
    assert await closed(mute, 3) == 1008
    assert not talker.ws.closed
    assert await closed(talker, 4) == 1001  # nothing more said for idle_timeout


async def test_messages_that_do_not_parse_keep_no_socket_open(ws_tracker):
    tc, connect = await ws_tracker(http={"request_timeout": 0.5}, webtorrent={"idle_timeout": 2.5})
    junk = await connect()
    for _ in range(3):  # never an announce or a scrape: the first-message deadline holds
        await junk.send("not json")
        assert "failure reason" in await junk.recv()
        await asyncio.sleep(0.1)
    assert await closed(junk, 3) == 1008
    talker = await connect()
    await talker.announce(IH)
    await talker.recv()
    for _ in range(4):  # junk after an announce does not restart the idle deadline either
        await asyncio.sleep(0.5)
        await talker.send({"action": "announce"})
        assert "failure reason" in await talker.recv()
    assert await closed(talker, 2) == 1001


async def test_a_socket_closed_while_its_announce_waits_leaves_the_swarm(ws_tracker):
    tc, connect = await ws_tracker(store=SlowStore(0.3))  # the store answers as Redis does
    peer = await connect()
    await peer.announce(IH)
    await peer.ws.close()  # gone before the store has answered its announce
    await asyncio.sleep(0.6)
    assert await tc.tracker.scrape([IH]) == [(IH, 0, 0, 0)]
