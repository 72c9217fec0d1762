"""/stats, /metrics and the status page through a real aiohttp server, after real announces."""

from __future__ import annotations

import asyncio
import re

from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from johnlocke import __version__, compiled

from .conftest import esc

IH1 = bytes.fromhex("a4f0c23ed651c152a13fe5425c823f2cfdf693d1")
IH2 = b"\x02" * 20
IH3 = b"\x03" * 20
TOKEN = "0123456789abcdef-token"


def peer(prefix: bytes, n: int) -> bytes:
    return prefix + n.to_bytes(20 - len(prefix), "big")


async def load(c) -> None:
    """A small, known load: 3 swarms, 9 peers (one IPv6), scrapes and refused requests."""
    for n in range(4):  # IH1: 1 seeder + 3 leechers, qBittorrent
        await c.announce(
            IH1, peer(b"-qB4520-", n), port=6000 + n, left=0 if n == 0 else 5, event="started"
        )
    for n in range(3):  # IH2: 2 seeders + 1 leecher, Transmission
        await c.announce(
            IH2, peer(b"-TR3000-", n), port=7000 + n, left=0 if n < 2 else 5, event="started"
        )
    await c.announce(IH2, peer(b"-TR3000-", 2), port=7002, left=0, event="completed")
    await c.announce(IH3, peer(b"-lt0D80-", 1), port=8000, left=5, event="started")
    await c.announce(IH3, peer(b"-lt0D80-", 2), port=8001, left=5, ip="2001:db8::7")
    await c.scrape(IH1)
    await c.scrape(IH1, IH2)
    await c.get("/announce?info_hash=%11&peer_id=x&port=1")  # info_hash too short
    await c.get("/announce?info_hash=%11%11&peer_id=x&port=1")
    await c.get("/announce?" + f"info_hash={esc(IH1)}&peer_id={esc(peer(b'-qB4520-', 9))}&port=0")


async def test_stats_tell_the_true_numbers(tracker_client):
    c = await tracker_client(stats={"client_sample": 1}, announce={"allow_ip_param": True})
    await load(c)
    resp = await c.http.get("/stats")
    assert resp.status == 200 and resp.content_type == "application/json"
    s = await resp.json()
    assert (s["swarms"], s["peers"], s["seeders"], s["leechers"]) == (3, 9, 4, 5)
    assert s["ipv4"] == {"peers": 8, "seeders": 4, "leechers": 4}
    assert s["ipv6"] == {"peers": 1, "seeders": 0, "leechers": 1}
    assert s["announces"]["total"] == 13
    # Refused requests (3) never got as far as their event.
    assert s["announces"]["by_event"] == {
        "none": 1,
        "started": 8,
        "completed": 1,
        "stopped": 0,
        "paused": 0,
    }
    assert s["announces"]["per_second_10s"] > 0
    assert s["scrapes"]["total"] == 2
    assert s["failures"] == {
        "total": 3,
        "by_reason": {
            "info_hash must be 20 bytes, got N": 2,
            "port must be between 1 and 65535": 1,
        },
    }
    clients = {row["prefix"]: row for row in s["clients"]["top"]}
    assert clients["-qB4520-"]["name"] == "qBittorrent"
    assert clients["-qB4520-"]["announces"] == 4  # the refused one (port=0) is not counted
    assert clients["-TR3000-"]["announces"] == 4 and clients["-lt0D80-"]["announces"] == 2
    assert s["top_swarms"][0] == {
        "info_hash": IH1.hex(),
        "peers": 4,
        "seeders": 1,
        "leechers": 3,
        "downloaded": 0,
    }
    assert [row["info_hash"] for row in s["top_swarms"]] == [IH1.hex(), IH2.hex(), IH3.hex()]
    assert s["top_swarms"][1]["downloaded"] == 1
    assert s["latency_ms"]["announce"]["count"] == 13
    assert 0 < s["latency_ms"]["announce"]["p50"] < 1000
    assert s["uptime_seconds"] > 0 and s["rss_bytes"] > 10_000_000
    assert s["build"] == compiled.BUILD  # "compiled" or "pure": which code answered
    assert s["snapshot_age_seconds"] is None
    assert "history" not in s
    with_history = await (await c.http.get("/stats?history=1")).json()
    assert with_history["history"]["samples"]


async def test_clients_are_sampled_one_peer_in_n(tracker_client):
    c = await tracker_client(stats={"client_sample": 4})
    for n in range(400):
        await c.announce(IH1, peer(b"-qB4520-" if n % 2 else b"-TR3000-", n))
    for n in range(0, 400, 2):  # a sampled peer is counted at every announce
        await c.announce(IH1, peer(b"-TR3000-", n))
    s = await (await c.http.get("/stats")).json()
    assert s["clients"]["sample_every"] == 4
    assert 50 < s["clients"]["sampled"] < 250  # about 100 peers' announces: 1 in 4 of 400
    top = {row["prefix"]: row for row in s["clients"]["top"]}
    assert set(top) == {"-qB4520-", "-TR3000-"}
    # Transmission peers announced twice as often: about two thirds of the sampled announces.
    assert top["-TR3000-"]["announces"] % 2 == 0  # each sampled Transmission peer, twice
    assert top["-TR3000-"]["announces"] + top["-qB4520-"]["announces"] == s["clients"]["sampled"]
    assert 0.5 < top["-TR3000-"]["share"] < 0.85


async def test_announces_by_event(tracker_client):
    c = await tracker_client()
    await c.announce(IH1, peer(b"-qB4520-", 1), event="started")
    await c.announce(IH1, peer(b"-qB4520-", 1))
    await c.announce(IH1, peer(b"-qB4520-", 1), left=0, event="completed")
    await c.announce(IH1, peer(b"-qB4520-", 1), event="stopped")
    await c.get("/announce?info_hash=x")
    s = await (await c.http.get("/stats")).json()
    assert s["announces"]["by_event"] == {
        "none": 1,
        "started": 1,
        "completed": 1,
        "stopped": 1,
        "paused": 0,
    }
    assert s["announces"]["total"] == 5 and s["peers"] == 0


async def test_metrics_are_prometheus_text_with_the_same_numbers(tracker_client):
    c = await tracker_client(stats={"client_sample": 1}, announce={"allow_ip_param": True})
    await load(c)
    resp = await c.http.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    families = list(text_string_to_metric_families(await resp.text()))
    assert {"johnlocke_announces", "johnlocke_peers"} <= {f.name for f in families}
    kinds = {f.name: f.type for f in families}
    assert kinds["johnlocke_announces"] == "counter" and kinds["johnlocke_peers"] == "gauge"
    assert kinds["johnlocke_announce_duration_seconds"] == "histogram"
    samples = [s for f in families for s in f.samples]

    def value(name: str, **labels: str) -> float:
        for sample in samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        raise AssertionError(f"no {name} {labels}")

    assert value("johnlocke_swarms") == 3
    assert value("johnlocke_peers", family="ipv4", role="seeder") == 4
    assert value("johnlocke_peers", family="ipv4", role="leecher") == 4
    assert value("johnlocke_peers", family="ipv6", role="leecher") == 1
    assert value("johnlocke_announces_total", event="started") == 8
    assert value("johnlocke_announces_total", event="completed") == 1
    assert value("johnlocke_announces_total", event="refused") == 3
    assert value("johnlocke_scrapes_total") == 2
    assert value("johnlocke_failures_total", reason="info_hash must be 20 bytes, got N") == 2
    assert value("johnlocke_client_announces_total", prefix="-TR3000-", client="Transmission") == 4
    assert value("johnlocke_announce_duration_seconds_count") == 13
    assert value("johnlocke_announce_duration_seconds_bucket", le="+Inf") == 13
    assert value("johnlocke_scrape_duration_seconds_count") == 2
    assert value("johnlocke_build_info", version=__version__, build=compiled.BUILD) == 1
    assert value("process_resident_memory_bytes") > 0
    # Prometheus asking for OpenMetrics gets it.
    resp = await c.http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.text()).endswith("# EOF\n")


async def test_stats_are_closed_to_other_addresses_unless_the_token_is_shown(tracker_client):
    c = await tracker_client(stats={"allow": ["192.0.2.0/24"], "token": TOKEN})
    await c.announce(IH1, peer(b"-qB4520-", 1))
    for path in ("/stats", "/metrics", "/"):
        resp = await c.http.get(path)
        assert resp.status == 403, path
        assert "[stats] allow" in await resp.text()
        assert (await c.http.get(path, headers={"Authorization": "Bearer " + TOKEN})).status == 200
        assert (await c.http.get(path, headers={"Authorization": "Bearer wrong"})).status == 403
        assert (await c.http.get(f"{path}?token={TOKEN}")).status == 200
        assert (await c.http.get(f"{path}?token=x{TOKEN}")).status == 403
    # The tracker itself stays open.
    assert (await c.announce(IH1, peer(b"-qB4520-", 2)))[b"incomplete"] == 2


async def test_behind_a_proxy_the_forwarded_address_decides(tracker_client):
    # Behind a reverse proxy on loopback, every request arrives from 127.0.0.1: the default
    # "loopback only" must judge the client the proxy forwards, not the proxy.
    c = await tracker_client(http={"trusted_proxies": ["127.0.0.0/8"]})
    outside = {"X-Forwarded-For": "203.0.113.9"}
    assert (await c.http.get("/stats", headers=outside)).status == 403
    assert (await c.http.get("/stats", headers={"X-Forwarded-For": "127.0.0.1"})).status == 200


async def test_stats_are_open_on_loopback_by_default(tracker_client):
    # (In [access] mode = "private" the default is closed: see tests/test_stats.py.)
    c = await tracker_client()
    for path in ("/stats", "/metrics", "/"):
        assert (await c.http.get(path)).status == 200


async def test_status_page_path_is_configurable_and_can_be_off(tracker_client):
    c = await tracker_client(stats={"page": "/status"})
    assert (await c.http.get("/")).status == 404
    resp = await c.http.get("/status")
    assert resp.status == 200 and resp.content_type == "text/html"
    c = await tracker_client(stats={"page": ""})
    assert (await c.http.get("/")).status == 404
    assert (await c.http.get("/status")).status == 404
    assert (await c.http.get("/stats")).status == 200


async def test_status_page_shows_numbers_and_plots_and_escapes_what_clients_sent(tracker_client):
    c = await tracker_client(stats={"client_sample": 1})
    for n in range(5):
        await c.announce(IH1, peer(b"-qB4520-", n), left=0 if n < 2 else 5)
    await c.get("/scrape?<script>alert(1)</script>=%zz")  # a reason carrying client input
    html = await (await c.http.get("/")).text()
    assert re.search(r'id="peers">5<', html) and re.search(r'id="seeders">2<', html)
    for series in ("peers", "seeders", "leechers", "announces", "scrapes", "rss"):
        assert f'data-series="{series}"' in html
    assert re.search(r'data-series="peers" data-points="\d+" data-last="5"', html)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # Self-contained: nothing is loaded from elsewhere.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert '<meta http-equiv="refresh"' in html


async def test_a_client_cannot_pass_for_loopback_through_a_proxy_that_appends(tracker_client):
    # HAProxy appends its own X-Forwarded-For line: the client's own line must not decide.
    c = await tracker_client(http={"trusted_proxies": ["127.0.0.1/32"]})
    forged = CIMultiDict([("X-Forwarded-For", "127.0.0.5"), ("X-Forwarded-For", "203.0.113.66")])
    for path in ("/stats", "/metrics", "/"):
        assert (await c.http.get(path, headers=forged)).status == 403


async def test_a_token_that_is_not_text_is_refused_not_an_error(tracker_client, caplog):
    c = await tracker_client(stats={"allow": [], "token": TOKEN})
    port = c.http.server.port
    for path in ("/stats", "/metrics", "/"):
        for auth in (b"Bearer \xff\xfe", b"Bearer " + TOKEN.encode()[:-1] + b"\xe9"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % (path.encode(), auth)
            )
            status = (await reader.readline()).split()[1]
            writer.close()
            assert status == b"403", (path, auth)
        bad = f"{path}?token=%ff%fe"
        assert (await c.http.get(bad)).status == 403
    assert (await c.http.get("/stats", headers={"Authorization": "Bearer " + TOKEN})).status == 200
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text
