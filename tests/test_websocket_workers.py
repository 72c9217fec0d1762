"""Browser peers on different worker processes reach each other: ``--workers 2`` on a real
redis-server, offers and answers relayed between the workers through Redis pub/sub."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from .daemon import run_daemon
from .redis_server import RedisServer, redis_available
from .test_redis_daemon import get_json, redis_config, wait_until
from .ws_client import WsPeer, text

pytestmark = [
    pytest.mark.skipif(not redis_available(), reason="redis-server is not installed"),
]

IH = b"\x77" * 20
PEERS = 8  # each its own connection, spread over the two workers by SO_REUSEPORT


async def swarm(url: str) -> tuple[int, int]:
    """PEERS sockets join a swarm, then a newcomer offers to all; (offers that arrived,
    answers that came back)."""
    async with aiohttp.ClientSession() as session:
        peers = [WsPeer(await session.ws_connect(url)) for _ in range(PEERS)]
        for p in peers:
            await p.announce(IH)
            assert (await p.recv())["action"] == "announce"
        newcomer = WsPeer(await session.ws_connect(url))
        ids = await newcomer.announce(IH, offers=PEERS)
        assert (await newcomer.recv())["incomplete"] == PEERS + 1
        arrived = 0
        for p in peers:
            offer = await p.recv()
            assert offer["peer_id"] == text(newcomer.peer_id)
            arrived += 1
            await p.answer(IH, offer["peer_id"], offer["offer_id"], f"answer {arrived}")
        answers = set()
        for _ in range(PEERS):
            msg = await newcomer.recv()
            assert msg["offer_id"] in {text(i) for i in ids}
            answers.add(msg["peer_id"])
        assert answers == {text(p.peer_id) for p in peers}
        for p in [*peers, newcomer]:
            await p.close()
        return arrived, len(answers)


def test_offers_and_answers_cross_workers(tmp_path):
    with RedisServer() as server:
        cfg = redis_config(server.url, prefix="ws2:")
        with run_daemon(cfg, args=["--workers", "2"], start_timeout=30) as d:
            d.wait_for_log(r"2 workers listening on port", 30)
            url = f"ws://127.0.0.1:{d.port}/announce"
            # Each worker serves some of the sockets (the chance that SO_REUSEPORT puts all 9
            # on one of two workers is 1 in 256; then try again with new connections).
            for _ in range(3):
                assert asyncio.run(swarm(url)) == (PEERS, PEERS)

                def counted():
                    board = get_json(d.url + "/stats")["workers"]
                    return board if len(board) == 2 else None

                board = wait_until(counted)
                time.sleep(2.5)  # every worker republishes its counters each 2 s
                board = get_json(d.url + "/stats")["workers"]
                if all(w["announces"] > 0 for w in board):
                    break
            assert all(w["announces"] > 0 for w in board), board
            # Every socket closed: no browser peer is left in the swarm, whichever worker held it.
            wait_until(lambda: get_json(d.url + "/stats")["peers"] == 0)
