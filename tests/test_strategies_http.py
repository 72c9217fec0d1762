"""Each built-in strategy, and the example plugin, shaping real answers through HTTP."""

from __future__ import annotations

import shutil
import urllib.request
from collections import Counter
from pathlib import Path

import bencodepy

from johnlocke.store.memory import MemoryStore

from .daemon import run_daemon
from .test_http import IH, compact, pid

ROOT = Path(__file__).resolve().parents[1]


def ip(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


async def fill(c, seeders: int, leechers: int, first: int = 1, ips=None) -> None:
    for n in range(first, first + seeders + leechers):
        left = 0 if n < first + seeders else 100
        await c.announce(IH, pid(n), port=n, left=left, ip=(ips or ip)(n))


def port_set(reply) -> set[int]:
    return {port for _, port in compact(reply[b"peers"])}


def strategy(name: str, **options) -> dict:
    return {"strategy": {"name": name, "options": options}, "announce": {"allow_ip_param": True}}


async def test_opposite_role_gives_leechers_every_seeder_first(tracker_client):
    c = await tracker_client(**strategy("opposite-role"))
    await fill(c, seeders=3, leechers=20)  # seeders are ports 1-3
    for n in range(4, 24):
        r = await c.announce(IH, pid(n), port=n, left=100, ip=ip(n), numwant=5)
        got = port_set(r)
        assert {1, 2, 3} <= got and len(got) == 5 and n not in got
    r = await c.announce(IH, pid(1), port=1, left=0, ip=ip(1), numwant=50)
    assert port_set(r) == set(range(4, 24))  # a seeder gets leechers only


async def test_locality_prefers_the_same_network(tracker_client):
    c = await tracker_client(**strategy("locality", prefix_v4=24))

    # Ports 1-10 live in 10.1.1.0/24, ports 11-40 in 10.9.9.0/24.
    def where(n):
        return f"10.1.1.{n}" if n <= 10 else f"10.9.9.{n}"

    await fill(c, seeders=0, leechers=40, ips=where)
    r = await c.announce(IH, pid(99), port=99, left=5, ip="10.1.1.99", numwant=8)
    got = port_set(r)
    assert len(got) == 8 and got <= set(range(1, 11))
    r = await c.announce(IH, pid(99), port=99, left=5, ip="10.1.1.99", numwant=15)
    got = port_set(r)
    assert set(range(1, 11)) <= got and len(got) == 15  # all local ones, then others


async def test_locality_groups_join_networks(tracker_client):
    c = await tracker_client(**strategy("locality", groups=["10.1.0.0/16", "10.2.0.0/16"]))

    def where(n):
        return f"10.1.{n}.1" if n <= 5 else f"10.2.{n}.1" if n <= 10 else f"10.3.{n}.1"

    await fill(c, seeders=0, leechers=30, ips=where)
    r = await c.announce(IH, pid(99), port=99, left=5, ip="10.2.200.7", numwant=5)
    assert port_set(r) <= set(range(6, 11)) and len(port_set(r)) == 5


async def test_small_group_everyone_gets_everyone_with_a_short_interval(tracker_client):
    c = await tracker_client(**strategy("small-group", max_peers=6, interval=45))
    await fill(c, seeders=3, leechers=2)
    r = await c.announce(IH, pid(1), port=1, left=0, ip=ip(1))
    assert port_set(r) == {2, 3, 4, 5}  # a seeder here gets the other seeders too
    assert r[b"interval"] == 45 and r[b"min interval"] <= 45
    await fill(c, seeders=0, leechers=3, first=6)  # now 8 peers: no longer a small group
    r = await c.announce(IH, pid(1), port=1, left=0, ip=ip(1))
    assert r[b"interval"] == 1800
    assert port_set(r) == {4, 5, 6, 7, 8}  # back to random: leechers only for a seeder


async def test_recent_sends_the_latest_announcers_first(tracker_client):
    now = [1000.0]
    c = await tracker_client(store=MemoryStore(clock=lambda: now[0]), **strategy("recent"))
    for n in range(1, 21):
        await c.announce(IH, pid(n), port=n, left=100, ip=ip(n))
        now[0] += 10
    r = await c.announce(IH, pid(50), port=50, left=100, ip=ip(50), numwant=4)
    assert port_set(r) == {17, 18, 19, 20}
    await c.announce(IH, pid(3), port=3, left=100, ip=ip(3))  # 3 comes back to life
    r = await c.announce(IH, pid(50), port=50, left=100, ip=ip(50), numwant=2)
    assert port_set(r) == {3, 20}


async def test_spread_shares_seeders_out_evenly(tracker_client):
    c = await tracker_client(**strategy("spread", seed_share=0.25))
    await fill(c, seeders=4, leechers=0)
    handed = Counter()
    for n in range(10, 50):  # 40 leechers ask for 4 peers: 1 seeder each
        r = await c.announce(IH, pid(n), port=n, left=100, ip=ip(n), numwant=4)
        handed.update(p for p in port_set(r) if p <= 4)
    assert sorted(handed) == [1, 2, 3, 4]
    # Round-robin: no seeder is handed out more than once more than another (random clumps).
    # The first leechers get extra seeders while there are too few leechers to fill numwant.
    assert max(handed.values()) - min(handed.values()) <= 1


def test_example_plugin_loads_from_config_as_the_readme_says(tmp_path):
    (tmp_path / "strategies").mkdir()
    shutil.copy(ROOT / "strategies" / "example_half_seeders.py", tmp_path / "strategies")
    config = (
        '[strategy]\nname = "example_half_seeders"\npaths = ["strategies"]\n'
        "options = { seed_share = 0.3 }\n"
    )
    with run_daemon(config, workdir=tmp_path) as d:

        def announce(n, left, numwant=50):
            q = (
                f"info_hash={'%11' * 20}&peer_id=-JL0001-{n:012d}&port={n}&left={left}"
                f"&numwant={numwant}"
            )
            with urllib.request.urlopen(f"{d.url}/announce?{q}") as resp:
                return bencodepy.decode(resp.read())

        for n in range(1, 11):
            announce(n, 0)  # seeders: ports 1-10
        for n in range(11, 31):
            announce(n, 100)  # leechers: ports 11-30
        r = announce(99, 100, numwant=10)
        got = port_set(r)
        assert len(got) == 10
        assert len([p for p in got if p <= 10]) == 3  # 30% seeders, as configured
