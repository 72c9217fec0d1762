"""End to end over UDP only: real libtorrent clients share a file through ``udp://`` announces.

The torrent names one tracker, ``udp://127.0.0.1:PORT/announce``, and every client has DHT, LSD,
PEX, UPnP and NAT-PMP off, so a leecher that finishes proves the UDP tracker told it where the
seeder is. The counts are read back over HTTP: the same tracker behind both transports.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.daemon import run_daemon

lt = pytest.importorskip("libtorrent")

from tests.e2e_helpers import seed_folder  # noqa: E402 (needs libtorrent)
from tests.torrent_clients import (  # noqa: E402 (needs libtorrent)
    BUDGET,
    FILE_NAME,
    TRACKER_CONFIG,
    Client,
    make_torrent,
    print_alerts,
    scrape,
    wait_until,
)


def test_a_leecher_downloads_through_the_udp_tracker_only(tmp_path: Path) -> None:
    seed_dir, payload = seed_folder(tmp_path)
    with run_daemon(TRACKER_CONFIG + "[log]\naccess_log = true\n") as d:
        torrent = make_torrent(seed_dir, d.udp_url, lt.create_torrent.v1_only)
        ti = lt.torrent_info(lt.bdecode(torrent))
        assert lt.bdecode(torrent)[b"announce"] == d.udp_url.encode()
        assert b"announce-list" not in lt.bdecode(torrent)
        info_hash = ti.info_hashes().v1.to_bytes()

        def counts() -> tuple[int, int, int]:
            f = scrape(d.scrape_url, info_hash)[b"files"][info_hash]
            return f[b"complete"], f[b"incomplete"], f[b"downloaded"]

        (tmp_path / "leecher").mkdir()
        clients = [Client("seeder", ti, seed_dir), Client("leecher", ti, tmp_path / "leecher")]
        seeder, leecher = clients
        deadline = time.monotonic() + BUDGET
        try:
            wait_until(clients, "both clients' first UDP tracker reply",
                       lambda: seeder.tracker_replies >= 1 and leecher.tracker_replies >= 1,
                       deadline=deadline)  # fmt: skip
            wait_until(clients, "the leecher finishes", leecher.finished, deadline=deadline)
            assert (leecher.save_path / FILE_NAME).read_bytes() == payload
            wait_until(clients, "the tracker counts two seeders and one download",
                       lambda: counts() == (2, 0, 1), deadline=deadline)  # fmt: skip
            assert not any(c.tracker_errors for c in clients), [c.tracker_errors for c in clients]
            # A paused torrent announces `stopped` (libtorrent closes its UDP socket before it
            # would send one when the whole session is destroyed).
            for c in clients:
                c.handle.pause()
            wait_until(clients, "every peer has left", lambda: counts() == (0, 0, 1), timeout=5)
        except BaseException:
            print_alerts(clients)
            raise
        finally:
            for c in clients:
                c.close()
        log = d.log_text()
        assert "ERROR" not in log, log
        # Every announce went over UDP: started, completed and stopped, from both clients.
        assert log.count('"UDP announce /announce" ok') >= 5, log
        assert "GET /announce" not in log
