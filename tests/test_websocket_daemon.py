"""The WebSocket tracker in the real daemon: wss:// over the daemon's own TLS, the connection
guard (a WebSocket leaves the HTTP cap), SIGHUP, the access log with passkeys masked, shutdown
saying "going away", and [webtorrent] configuration errors."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request

import aiohttp

from .daemon import run_daemon
from .test_config import run_cli
from .test_tls import TLS, ca, client_context, issue  # noqa: F401  (ca is a fixture)
from .ws_client import WsPeer

IH = b"\x33" * 20


async def announce_once(url: str, ssl_context=None, **fields) -> dict:
    async with aiohttp.ClientSession() as session:
        peer = WsPeer(await session.ws_connect(url, ssl=ssl_context or True))
        await peer.announce(IH, **fields)
        reply = await peer.recv()
        await peer.close()
        return reply


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_wss_over_the_daemons_tls(tmp_path, ca):  # noqa: F811
    issue(ca, tmp_path)
    with run_daemon(TLS, workdir=tmp_path, scheme="https") as d:
        reply = asyncio.run(announce_once(f"wss://127.0.0.1:{d.port}/announce", client_context(ca)))
        assert reply["action"] == "announce" and reply["incomplete"] == 1


def test_websockets_leave_the_http_cap_and_the_access_log_masks_the_passkey(tmp_path):
    (tmp_path / "keys").write_text("0123456789abcdef0123 alice\n")
    (tmp_path / "allow").write_text(IH.hex() + "\n")
    cfg = f"""
[http]
max_connections = 2
max_connections_per_ip = 0
[access]
mode = "private"
passkeys = "{tmp_path / "keys"}"
allow_list = "{tmp_path / "allow"}"
[log]
access_log = true
"""

    async def run(port: int) -> None:
        url = f"ws://127.0.0.1:{port}/0123456789abcdef0123/announce"
        async with aiohttp.ClientSession() as session:
            peers = [WsPeer(await session.ws_connect(url)) for _ in range(4)]
            for p in peers:
                await p.announce(IH)
                assert (await p.recv())["incomplete"] >= 1
            # Four sockets open, two HTTP connections allowed: plain HTTP still gets in.
            status = await asyncio.to_thread(http_status, f"http://127.0.0.1:{port}/stats")
            assert status == 403  # private mode: nobody reads /stats, but it was answered
            for p in peers:
                await p.close()

    with run_daemon(cfg, workdir=tmp_path) as d:
        asyncio.run(run(d.port))
        line = d.wait_for_log(r'"GET /0123\*+/announce HTTP/1\.1" 101')
        assert line
        assert "0123456789abcdef0123" not in d.log_text()


def test_sighup_applies_new_limits(tmp_path):
    base = "[webtorrent]\nmax_swarms_per_connection = 1\n"

    async def two_swarms(port: int) -> dict:
        async with aiohttp.ClientSession() as session:
            p = WsPeer(await session.ws_connect(f"ws://127.0.0.1:{port}/announce"))
            await p.announce(IH)
            await p.recv()
            await p.announce(b"\x44" * 20)
            reply = await p.recv()
            await p.close()
            return reply

    with run_daemon(base, workdir=tmp_path) as d:
        assert "failure reason" in asyncio.run(two_swarms(d.port))
        d.config_path.write_text(d.config_path.read_text().replace("= 1", "= 5"))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded")
        assert "failure reason" not in asyncio.run(two_swarms(d.port))


def test_shutdown_says_going_away(tmp_path):
    async def hold(port: int, d) -> int | None:
        async with aiohttp.ClientSession() as session:
            p = WsPeer(await session.ws_connect(f"ws://127.0.0.1:{port}/announce"))
            await p.announce(IH)
            await p.recv()
            d.proc.send_signal(signal.SIGTERM)
            msg = await p.ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE, msg
            return msg.data

    with run_daemon("", workdir=tmp_path) as d:
        assert asyncio.run(hold(d.port, d)) == 1001
        assert d.proc.wait(10) == 0
        d.stopped = True


def test_stats_count_websocket_announces(tmp_path):
    with run_daemon("", workdir=tmp_path) as d:
        asyncio.run(announce_once(f"ws://127.0.0.1:{d.port}/announce", event="started"))
        with urllib.request.urlopen(d.url + "/stats", timeout=10) as r:
            doc = json.loads(r.read())
        ws = doc["transports"]["websocket"]
        assert ws["announces"] == 1 and ws["by_event"]["started"] == 1
        assert ws["connections_opened"] == 1
        assert doc["announces"]["by_event"]["started"] == 1
        with urllib.request.urlopen(d.url + "/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'johnlocke_announces_total{event="started",transport="websocket"} 1.0' in metrics


def test_webtorrent_config_errors_name_the_key(tmp_path):
    for text_, expected in (
        ("[webtorrent]\nmax_offers = 0\n", '[webtorrent] max_offers: must be "auto"'),
        ("[webtorrent]\nidle_timeout = -1\n", '[webtorrent] idle_timeout: must be "auto"'),
        ("[webtorrent]\nmax_message_size = 10\n", "[webtorrent] max_message_size:"),
        ("[webtorrent]\nping_intervall = 3\n", "[webtorrent] ping_intervall: unknown key"),
    ):
        cfg = tmp_path / "tracker.toml"
        cfg.write_text(text_)
        result = run_cli("--config", str(cfg), "--check-config")
        assert result.returncode == 1 and expected in result.stderr, result.stderr
