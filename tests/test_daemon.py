"""The real daemon process: start-up, clean shutdown on signals, requests in flight."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request

import bencodepy
import pytest

from .daemon import run_daemon

IH = "%11" * 20
PID = "-JL0001-abcdefghijkl"


def announce(url: str, port: int = 6881) -> dict:
    with urllib.request.urlopen(f"{url}/announce?info_hash={IH}&peer_id={PID}&port={port}") as r:
        assert r.status == 200
        return bencodepy.decode(r.read())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_right_after_start_stops_cleanly(sig):
    for _ in range(5):
        with run_daemon("") as d:
            assert d.stop(sig=sig) == 0
            assert "stopped" in d.log_text()


def test_shutdown_closes_listeners_and_keeps_answering_until_then():
    with run_daemon("") as d:
        assert announce(d.url)[b"complete"] == 1  # no left= means left=0
        # An idle keep-alive connection must not hold the shutdown up.
        idle = socket.create_connection(("127.0.0.1", d.port))
        idle.sendall(b"GET /scrape?info_hash=" + IH.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in idle.recv(4096)
        assert d.stop() == 0
        idle.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", d.port), timeout=2).close()


def test_sighup_reloads_a_good_config_and_keeps_the_old_one_on_a_bad_one():
    base = '[http]\nhost = "127.0.0.1"\nport = 0\n'
    with run_daemon(base + "[announce]\ninterval = 600\nmin_interval = 60\n") as d:
        assert announce(d.url)[b"interval"] == 600
        port_line = f'[http]\nhost = "127.0.0.1"\nport = {d.port}\n'
        d.config_path.write_text(port_line + "[announce]\ninterval = 700\nmin_interval = 60\n")
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded", timeout=10)
        assert announce(d.url)[b"interval"] == 700
        d.config_path.write_text(port_line + "[announce]\nintervall = 5\n")
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for_log("reload refused", timeout=10)
        assert "[announce] intervall: unknown key" in d.log_text()
        assert announce(d.url)[b"interval"] == 700
        d.config_path.write_text(port_line + '[strategy]\nname = "nosuch"\n')
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for_log("reload of tracker failed", timeout=10)
        assert announce(d.url)[b"interval"] == 700


def test_sighup_swaps_the_strategy_and_keeps_every_swarm():
    with run_daemon("") as d:
        port_line = f'[http]\nhost = "127.0.0.1"\nport = {d.port}\n'
        for port in (7001, 7002, 7003):
            pid = f"-JL0001-{port:012d}"
            url = f"{d.url}/announce?info_hash={IH}&peer_id={pid}&port={port}&left=10"
            urllib.request.urlopen(url).close()
        before = announce(d.url, port=7004)
        assert before[b"interval"] == 1800 and len(before[b"peers"]) == 3 * 6
        d.config_path.write_text(
            port_line + '[strategy]\nname = "small-group"\noptions = { interval = 45 }\n'
        )
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded", timeout=10)
        after = announce(d.url, port=7004)
        assert after[b"interval"] == 45  # the new strategy answers...
        assert sorted(after[b"peers"][i : i + 6] for i in range(0, 18, 6)) == sorted(
            before[b"peers"][i : i + 6] for i in range(0, 18, 6)
        )  # ...from the same swarm
        assert (after[b"complete"], after[b"incomplete"]) == (1, 3)


def load_swarms(port: int, count: int, batch: int = 200) -> None:
    """``count`` one-peer swarms, announced pipelined on one connection, a batch at a time."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        reader = s.makefile("rb")
        for first in range(0, count, batch):
            s.sendall(
                b"".join(
                    b"GET /announce?info_hash=%s&peer_id=-JL0001-abcdefghijkl&port=6881&left=1"
                    b" HTTP/1.1\r\nHost: x\r\n\r\n"
                    % "".join(f"%{b:02x}" for b in n.to_bytes(20, "big")).encode()
                    for n in range(first, min(first + batch, count))
                )
            )
            for _ in range(first, min(first + batch, count)):
                assert reader.readline().startswith(b"HTTP/1.1 200")
                length = 0
                while (line := reader.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                assert b"failure" not in reader.read(length)


def test_sigterm_with_unread_answers_exits_within_shutdown_timeout():
    timeout = 2.0
    config = (
        f"[http]\nshutdown_timeout = {timeout}\n"
        "[scrape]\nfull_scrape = true\nfull_scrape_interval = 0\n"
    )
    with run_daemon(config) as d:
        load_swarms(d.port, 3000)  # a full scrape is ~200 KB
        stuck = []
        for _ in range(5):  # clients that ask for 20 MB of answers each and never read them
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", d.port))
            s.sendall(b"GET /scrape HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
            stuck.append(s)
        time.sleep(1.0)  # until every connection is blocked writing
        t0 = time.monotonic()
        assert d.stop(timeout=4 * timeout) == 0
        took = time.monotonic() - t0
        for s in stuck:
            s.close()
    assert took < timeout + 1.0, f"SIGTERM took {took:.1f} s with shutdown_timeout = {timeout}"
    assert "stopped" in d.log_text()
