"""The real daemon keeps its swarms across restarts: SIGTERM, kill -9, bad files, a full disk."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote_from_bytes

import bencodepy

from .conftest import fill_disk
from .daemon import run_daemon

A = bytes.fromhex("aa" * 20)
B = bytes.fromhex("bb" * 20)


def peer_id(n: int) -> bytes:
    return b"-TR3000-" + n.to_bytes(12, "big")


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        return bencodepy.decode(r.read())


def announce(d, info_hash: bytes, n: int, port: int, **params) -> dict:
    query = f"info_hash={quote_from_bytes(info_hash)}&peer_id={quote_from_bytes(peer_id(n))}"
    query += f"&port={port}&compact=1"
    params.setdefault("left", 100)
    for k, v in params.items():
        query += f"&{k}={v}"
    answer = get(f"{d.announce_url}?{query}")
    assert b"failure reason" not in answer, answer
    return answer


def scrape(d, *hashes: bytes) -> dict[bytes, tuple[int, int, int]]:
    query = "&".join(f"info_hash={quote_from_bytes(h)}" for h in hashes)
    files = get(f"{d.scrape_url}?{query}")[b"files"]
    return {h: (f[b"complete"], f[b"incomplete"], f[b"downloaded"]) for h, f in files.items()}


def ports(compact: bytes, width: int = 6) -> set[int]:
    return {
        int.from_bytes(compact[i + width - 2 : i + width], "big")
        for i in range(0, len(compact), width)
    }


def everyone(d, info_hash: bytes, family: str = "v4") -> set[int]:
    """The ports of every peer in a swarm, as a fresh leecher is told (it then stops again)."""
    extra = {"ip": "2001:db8::ffff"} if family == "v6" else {}
    answer = announce(d, info_hash, 999_999, 1, numwant=200, **extra)
    announce(d, info_hash, 999_999, 1, event="stopped", **extra)
    return ports(answer[b"peers6"], 18) if family == "v6" else ports(answer[b"peers"])


CONFIG = """
[announce]
allow_ip_param = true
[state]
snapshot_interval = 3600
"""


def test_sigterm_then_restart_keeps_peers_and_counts(tmp_path):
    with run_daemon(CONFIG, workdir=tmp_path) as d:
        for n in range(1, 4):
            announce(d, A, n, 7000 + n)  # leechers
        announce(d, A, 4, 7004, left=0)  # a seeder
        announce(d, A, 5, 7005)
        announce(d, A, 5, 7005, left=0, event="completed")  # finishes: downloaded 1
        announce(d, A, 6, 7006)
        announce(d, A, 6, 7006, event="stopped")  # gone
        announce(d, A, 7, 7007, ip="2001:db8::7")  # an IPv6 leecher
        announce(d, B, 8, 7008, left=0)
        before = scrape(d, A, B)
        assert before == {A: (2, 4, 1), B: (1, 0, 0)}
        port = d.port
        assert d.stop() == 0
        assert re.search(r"final snapshot: 2 swarms, 7 peers", d.log_text())
    assert (tmp_path / "johnlocke.snapshot").exists()
    with run_daemon(CONFIG, workdir=tmp_path, port=port) as d:
        d.wait_for_log(r"restored 2 swarms, 7 peers from .*johnlocke\.snapshot")
        assert scrape(d, A, B) == before
        assert everyone(d, A) == {7001, 7002, 7003, 7004, 7005}
        assert everyone(d, A, "v6") == {7007}
        assert everyone(d, B) == {7008}
        # A restored peer is the same peer: re-announcing does not add a second one.
        announce(d, A, 1, 7001)
        assert scrape(d, A)[A] == (2, 4, 1)
        # And the restored leecher finishing still counts once.
        announce(d, A, 2, 7002, left=0, event="completed")
        assert scrape(d, A)[A] == (3, 3, 2)


def test_kill_9_loses_at_most_one_interval(tmp_path):
    interval = 1
    config = f"[state]\nsnapshot_interval = {interval}\n"
    announced: list[tuple[float, int]] = []
    with run_daemon(config, workdir=tmp_path) as d:
        # Long enough for several snapshots, and enough announces on a busy machine too.
        deadline = time.monotonic() + 3.5
        n = 0
        while time.monotonic() < deadline or n < 100:
            n += 1
            announce(d, A, n, 10_000 + n)
            announced.append((time.monotonic(), 10_000 + n))
            time.sleep(0.03)
        assert "snapshot: 1 swarms" in d.log_text()
        killed_at = time.monotonic()
        assert d.kill() == -9
        port = d.port
    with run_daemon(config, workdir=tmp_path, port=port) as d:
        d.wait_for_log("restored 1 swarms")
        kept = everyone(d, A)
    # Every peer announced more than one interval (plus time to write) before the kill survived.
    must = {p for t, p in announced if t < killed_at - interval - 0.5}
    assert len(must) > 20
    assert must <= kept
    assert kept <= {p for _, p in announced}


def test_corrupt_snapshot_is_set_aside_and_the_daemon_serves(tmp_path):
    snap = tmp_path / "johnlocke.snapshot"
    snap.write_bytes(b"JLSNAP\r\n" + os.urandom(300))
    with run_daemon(CONFIG, workdir=tmp_path) as d:
        errors = [line for line in d.log_lines() if " ERROR " in line]
        assert len(errors) == 1 and "is unusable" in errors[0], d.log_text()
        assert "starting with no swarms" in errors[0]
        assert scrape(d, A)[A] == (0, 0, 0)
        announce(d, A, 1, 7001)
        port = d.port
    aside = list(tmp_path.glob("johnlocke.snapshot.corrupt-*"))
    assert len(aside) == 1
    # The final snapshot replaced the bad one; the next start loads it.
    with run_daemon(CONFIG, workdir=tmp_path, port=port) as d:
        d.wait_for_log("restored 1 swarms, 1 peers")
        assert scrape(d, A)[A] == (0, 1, 0)


def test_future_version_is_set_aside_not_a_crash_loop(tmp_path):
    snap = tmp_path / "johnlocke.snapshot"
    snap.write_bytes(b"JLSNAP\r\n" + (7).to_bytes(4, "little") + bytes(100))
    with run_daemon(CONFIG, workdir=tmp_path) as d:
        assert "format version 7 is newer than this johnlocke reads (2)" in d.log_text()
        announce(d, A, 1, 7001)
        port = d.port
    with run_daemon(CONFIG, workdir=tmp_path, port=port) as d:
        d.wait_for_log("restored 1 swarms, 1 peers")
    assert len(list(tmp_path.glob("johnlocke.snapshot.corrupt-*"))) == 1


def test_unwritable_snapshot_path_is_logged_and_the_tracker_keeps_serving(tmp_path):
    (tmp_path / "state").write_text("a file, not a directory")
    config = '[state]\npath = "state/johnlocke.snapshot"\nsnapshot_interval = 1\n'
    with run_daemon(config, workdir=tmp_path) as d:
        d.wait_for_log("snapshot to .* failed: Not a directory; the previous snapshot is kept")
        announce(d, A, 1, 7001)
        d.wait_for_log("retrying in 1 s")
        assert scrape(d, A)[A] == (0, 1, 0)
        (tmp_path / "state").unlink()
        (tmp_path / "state").mkdir()
        d.wait_for_log("snapshots to .* work again", timeout=10)
        port = d.port
    with run_daemon(config, workdir=tmp_path, port=port) as d:
        d.wait_for_log("restored 1 swarms, 1 peers")


def test_full_disk_is_logged_retried_and_survived(tmp_path, tiny_tmpfs: Path):
    config = f'[state]\npath = "{tiny_tmpfs}/johnlocke.snapshot"\nsnapshot_interval = 1\n'
    work = tmp_path / "work"
    with run_daemon(config, workdir=work) as d:
        announce(d, A, 1, 7001)
        d.wait_for_log("snapshot: 1 swarms, 1 peers")
        good = (tiny_tmpfs / "johnlocke.snapshot").read_bytes()
        filler = fill_disk(tiny_tmpfs)
        for n in range(2, 30):
            announce(d, A, n, 7000 + n)
        d.wait_for_log("failed: No space left on device")
        assert (tiny_tmpfs / "johnlocke.snapshot").read_bytes() == good
        assert scrape(d, A)[A] == (0, 29, 0)  # still serving
        filler.unlink()
        d.wait_for_log("work again", timeout=10)
        port = d.port
    with run_daemon(config, workdir=work, port=port) as d:
        d.wait_for_log("restored 1 swarms, 29 peers")
        assert scrape(d, A)[A] == (0, 29, 0)


def test_a_second_daemon_on_the_same_snapshot_path_refuses_to_start(tmp_path):
    with run_daemon(CONFIG, workdir=tmp_path) as d:
        other = tmp_path / "other"
        other.mkdir()
        config = other / "tracker.toml"
        snapshot = tmp_path / "johnlocke.snapshot"
        config.write_text(f'[http]\nhost = "127.0.0.1"\nport = 0\n[state]\npath = "{snapshot}"\n')
        result = subprocess.run(
            [sys.executable, "-m", "johnlocke", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert f"is in use by another johnlocke (pid {d.proc.pid})" in result.stderr
        assert "Traceback" not in result.stderr
        announce(d, A, 1, 7001)  # the first one is untouched
