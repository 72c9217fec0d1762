"""The daemon on a real redis-server: several worker processes on one port, the supervisor's
signals and restarts, two trackers sharing swarms, and Redis going away under a running tracker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import bencodepy
import pytest

from .conftest import esc
from .daemon import run_daemon
from .redis_server import RedisServer, redis_available
from .udp_client import STARTED, UdpClient

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")

IH = b"\x5a" * 20


def redis_config(url: str, prefix: str = "d:", extra: str = "") -> str:
    return f"""
[store]
backend = "redis"
url = "{url}"
prefix = "{prefix}"
timeout = 1.0
{extra}
"""


def announce(base: str, n: int, ih: bytes = IH, left: int = 10, event: str = "") -> dict:
    peer_id = b"-XX0001-" + n.to_bytes(12, "big")
    query = f"info_hash={esc(ih)}&peer_id={esc(peer_id)}&port={1024 + n}&left={left}&compact=1"
    if event:
        query += f"&event={event}"
    with urllib.request.urlopen(f"{base}/announce?{query}", timeout=10) as resp:
        assert resp.status == 200
        return bencodepy.decode(resp.read())


def scrape(base: str, ih: bytes = IH) -> tuple[int, int, int]:
    with urllib.request.urlopen(f"{base}/scrape?info_hash={esc(ih)}", timeout=10) as resp:
        row = bencodepy.decode(resp.read())[b"files"][ih]
    return row[b"complete"], row[b"incomplete"], row[b"downloaded"]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def wait_until(check, timeout: float = 15.0, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(step)


def worker_pids(d) -> dict[int, int]:
    """worker index -> pid of its latest start, from the supervisor's log."""
    pids = {}
    for line in d.log_lines():
        m = re.search(r"worker (\d+) started \(pid (\d+)\)", line)
        if m:
            pids[int(m.group(1))] = int(m.group(2))
    return pids


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
        yield server


def test_workers_with_the_memory_store_are_refused(tmp_path):
    config = tmp_path / "tracker.toml"
    config.write_text('[http]\nhost = "127.0.0.1"\nport = 0\n')
    for args, config_text in (
        (["--workers", "2"], None),
        ([], '[http]\nhost = "127.0.0.1"\nport = 0\n[workers]\ncount = 3\n'),
    ):
        if config_text:
            config.write_text(config_text)
        out = subprocess.run(
            [sys.executable, "-m", "johnlocke", "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 1
        assert 'need [store] backend = "redis"' in out.stderr
        assert "would keep swarms of its own" in out.stderr


def test_two_workers_share_the_port_and_the_swarms(redis_server):
    cfg = redis_config(redis_server.url, prefix="w2:")
    with run_daemon(cfg, args=["--workers", "2"], start_timeout=30) as d:
        d.wait_for_log(r"2 workers listening on port", 30)
        for n in range(40):  # one connection each: SO_REUSEPORT spreads them over the workers
            answer = announce(d.url, n, left=0 if n < 10 else 5)
        assert answer[b"complete"] == 10 and answer[b"incomplete"] == 30
        assert scrape(d.url) == (10, 30, 0)

        def both_published():
            doc = get_json(d.url + "/stats")
            return doc if len(doc["workers"]) == 2 else None

        doc = wait_until(both_published)
        assert doc["swarms"] == 1 and doc["peers"] == 40  # from the store: the whole tracker
        assert doc["store"] == {"backend": "redis", "up": True, "errors": 0}

        def all_counted():
            board = get_json(d.url + "/stats")["workers"]
            return board if sum(w["announces"] for w in board) == 40 else None

        # Each worker publishes its counters every 2 s: once both have, the sum is exact.
        counted = wait_until(all_counted)
        assert all(w["announces"] > 0 for w in counted), counted  # both workers served
        assert len({w["pid"] for w in counted}) == 2
        metrics = urllib.request.urlopen(d.url + "/metrics", timeout=10).read().decode()
        assert "johnlocke_workers 2.0" in metrics
        assert re.search(r'johnlocke_worker_announces_total\{worker="[^"]+/1"\}', metrics)
        assert "johnlocke_store_up 1.0" in metrics

        # SIGHUP reaches every worker.
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for_log(r"\[w1\]: configuration reloaded", 10)
        d.wait_for_log(r"\[w2\]: configuration reloaded", 10)

        # A worker killed outright is logged and started again; the other keeps serving.
        pids = worker_pids(d)
        os.kill(pids[1], signal.SIGKILL)
        d.wait_for_log(rf"worker 1 \(pid {pids[1]}\) was killed by signal 9", 10)
        for n in range(40, 50):
            announce(d.url, n)
        wait_until(lambda: worker_pids(d)[1] != pids[1], 10)
        listening = re.compile(r"\[w1\]: johnlocke \S+ listening on")
        wait_until(lambda: len(listening.findall(d.log_text())) == 2, 20)
        assert scrape(d.url) == (10, 40, 0)
        final = worker_pids(d)
    # SIGTERM (leaving the block) stopped every worker, and the supervisor exited 0.
    assert "stopping 2 workers" in d.log_text()
    for pid in final.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_udp_ids_from_one_worker_are_accepted_by_every_other(redis_server):
    # Each datagram goes to whichever worker the kernel picks for its source port: a client
    # that connected through one worker must be able to announce through any other.
    cfg = redis_config(redis_server.url, prefix="wu:")
    info_hash = os.urandom(20)
    with run_daemon(cfg, args=["--workers", "2"], udp_port=None, start_timeout=30) as d:
        d.wait_for_log(r"2 workers listening on port", 30)
        assert d.udp_port == d.port  # UDP follows the HTTP port the supervisor chose
        with UdpClient("127.0.0.1", d.udp_port) as first:
            cid = first.connect()
        for n in range(30):
            with UdpClient("127.0.0.1", d.udp_port) as c:  # a new source port each time
                c.cid = cid
                got = c.announce(info_hash, b"-UW0001-" + n.to_bytes(12, "big"), event=STARTED)
                assert got.seeders == n + 1  # left = 0: every one a seeder
        assert scrape(d.url, info_hash) == (30, 0, 0)

        def both_served():
            board = get_json(d.url + "/stats")["workers"]
            return board if sum(w["announces"] for w in board) >= 30 else None

        board = wait_until(both_served)
        assert len(board) == 2 and all(w["announces"] > 0 for w in board), board


def test_a_worker_that_cannot_start_stops_the_tracker(redis_server, tmp_path):
    with socket.socket() as busy:  # the port is taken: every worker would fail the same way
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        path = tmp_path / "tracker.toml"
        path.write_text(
            f'[http]\nhost = "127.0.0.1"\nport = {busy.getsockname()[1]}\n'
            + redis_config(redis_server.url)
        )
        out = subprocess.run(
            [sys.executable, "-m", "johnlocke", "--config", str(path), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1
    assert "before it listened: stopping" in out.stderr
    assert "cannot listen on" in out.stderr


def test_two_trackers_with_the_same_redis_and_prefix_serve_the_same_swarms(redis_server):
    cfg = redis_config(redis_server.url, prefix="shared:")
    with run_daemon(cfg) as a, run_daemon(cfg) as b:
        announce(a.url, 1, left=0)
        answer = announce(b.url, 2)
        assert answer[b"complete"] == 1 and len(answer[b"peers"]) == 6
        assert scrape(a.url) == scrape(b.url) == (1, 1, 0)
        other = redis_config(redis_server.url, prefix="other:")
        with run_daemon(other) as c:
            assert scrape(c.url) == (0, 0, 0)


def test_redis_stopped_and_restarted_under_a_running_tracker():
    server = RedisServer().start()
    try:
        with run_daemon(redis_config(server.url)) as d:
            announce(d.url, 1)
            server.stop()
            t0 = time.monotonic()
            answers = [announce(d.url, n) for n in range(2, 12)]
            took = time.monotonic() - t0
            assert all(b"temporarily unavailable" in a[b"failure reason"] for a in answers)
            assert took < 10 * 1.0  # each within [store] timeout
            metrics = urllib.request.urlopen(d.url + "/metrics", timeout=10).read().decode()
            assert "johnlocke_store_up 0.0" in metrics
            errors = float(
                re.search(r"^johnlocke_store_errors_total (\S+)", metrics, re.M).group(1)
            )
            assert errors >= 10
            assert re.search(r'johnlocke_failures_total\{reason="tracker temporarily', metrics)
            doc = get_json(d.url + "/stats")  # still answers, with the last known counts
            assert doc["store"]["up"] is False
            logged = [line for line in d.log_lines() if "unavailable" in line]
            assert len(logged) == 1  # at most once a minute
            server.start()  # same port, empty: the functions are loaded again by themselves
            answer = wait_until(lambda: b"peers" in (a := announce(d.url, 20)) and a)
            assert answer[b"incomplete"] >= 1
            d.wait_for_log(r"swarm store at .* is back", 10)
            assert "Traceback" not in d.log_text()
    finally:
        server.close()


def test_start_with_redis_down_then_recover():
    server = RedisServer()  # a free port, nothing listening yet
    try:
        with run_daemon(redis_config(server.url)) as d:
            d.wait_for_log(r"swarm store at .* unavailable", 5)
            answer = announce(d.url, 1)
            assert b"temporarily unavailable" in answer[b"failure reason"]
            server.start()
            answer = wait_until(lambda: b"peers" in (a := announce(d.url, 2)) and a)
            assert answer[b"incomplete"] == 1
            assert scrape(d.url) == (0, 1, 0)
    finally:
        server.close()


def test_workers_stop_when_the_supervisor_is_killed(redis_server):
    with run_daemon(redis_config(redis_server.url), args=["--workers", "2"]) as d:
        d.wait_for_log(r"2 workers listening on port", 30)
        pids = list(worker_pids(d).values())
        d.kill()  # SIGKILL: the supervisor cannot pass anything on

        def all_gone():
            for pid in pids:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                # A child that exited but was not reaped yet (its parent is gone) is a zombie.
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        state = f.read().rpartition(")")[2].split()[0]
                except FileNotFoundError:
                    continue
                if state != "Z":
                    return False
            return True

        wait_until(all_gone, 15)
