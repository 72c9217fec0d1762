"""End to end with real libtorrent clients: a private tracker with passkeys, and a hybrid
BitTorrent v2 torrent seeded to a v1-only and a v2-only client from one swarm.

About "v1-only" clients: a v1 torrent made from the same data (``create_torrent.v1_only``) is
not the hybrid torrent seen by an old client: its info dict lacks the v2 keys, so its SHA-1
differs from the hybrid's v1 info_hash and it is simply another torrent. A client that knows
only the v1 hash of the hybrid is a magnet link ``xt=urn:btih:<v1>`` (and one that knows only
the v2 hash is ``xt=urn:btmh:1220<sha256>``): until it has fetched the metadata from a peer it
announces that one hash only, exactly as a v1-only (or v2-only) client does.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from johnlocke.access import BAD_PASSKEY

from .daemon import run_daemon

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

KEY = "5f1c0a9e3b7d4c2a8e6f1b0d9c7a5e3f"


def test_private_tracker_with_passkeys(tmp_path: Path) -> None:
    seed_dir, payload = seed_folder(tmp_path)
    # The info_hash does not depend on the tracker URL: the folder's copy can be made before
    # the daemon's port is known.
    (tmp_path / "torrents").mkdir()
    folder_copy = make_torrent(seed_dir, "http://127.0.0.1:1/announce", lt.create_torrent.v1_only)
    (tmp_path / "torrents" / "payload.torrent").write_bytes(folder_copy)
    (tmp_path / "passkeys.txt").write_text(f"{KEY} family\n")
    config = TRACKER_CONFIG + (
        '[access]\nmode = "private"\ntorrents_dir = "torrents"\npasskeys = "passkeys.txt"\n'
    )
    clients: list[Client] = []
    deadline = time.monotonic() + BUDGET
    with run_daemon(config, workdir=tmp_path) as d:
        try:
            # libtorrent refuses a tracker on localhost whose path is not /announce (SSRF
            # mitigation), so the passkey goes in the query here.
            url = f"{d.announce_url}?passkey={KEY}"
            ti = lt.torrent_info(lt.bdecode(make_torrent(seed_dir, url, lt.create_torrent.v1_only)))
            intruder_ti = lt.torrent_info(
                lt.bdecode(
                    make_torrent(
                        seed_dir, f"{d.announce_url}?passkey=guess", lt.create_torrent.v1_only
                    )
                )
            )
            info_hash = ti.info_hashes().v1.to_bytes()
            assert lt.torrent_info(lt.bdecode(folder_copy)).info_hashes().v1.to_bytes() == (
                info_hash
            )

            seeder = Client("seeder", ti, seed_dir)
            leecher_dir = tmp_path / "leecher"
            leecher = Client("leecher", ti, leecher_dir)
            intruder = Client("intruder", intruder_ti, tmp_path / "intruder")
            clients += [seeder, leecher, intruder]
            wait_until(clients, "the leecher finishes", leecher.finished, deadline=deadline)
            assert (leecher_dir / FILE_NAME).read_bytes() == payload
            wait_until(
                clients,
                "the intruder's refusal",
                lambda: intruder.tracker_errors,
                deadline=deadline,
            )
            assert BAD_PASSKEY in intruder.tracker_errors[0], intruder.tracker_errors
            assert intruder.tracker_replies == 0 and intruder.status().progress == 0
            assert not seeder.tracker_errors and not leecher.tracker_errors
            # The intruder was never added: two seeders, one download.
            wait_until(
                clients,
                "the tracker counts the download",
                lambda: (
                    scrape(d.scrape_url, info_hash, passkey=KEY)[b"files"][info_hash]
                    == {b"complete": 2, b"incomplete": 0, b"downloaded": 1}
                ),
                deadline=deadline,
            )
            assert KEY not in d.log_text()
        except BaseException:
            print_alerts(clients)
            raise
        finally:
            for c in clients:
                c.close()


def test_hybrid_torrent_v1_and_v2_clients_share_one_swarm(tmp_path: Path) -> None:
    seed_dir, payload = seed_folder(tmp_path)
    hybrid = make_torrent(seed_dir, "http://127.0.0.1:1/announce")  # libtorrent's default
    (tmp_path / "torrents").mkdir()
    (tmp_path / "torrents" / "hybrid.torrent").write_bytes(hybrid)
    # Open mode: the folder only pairs the hybrid's two hashes. A full scrape shows the swarms.
    config = TRACKER_CONFIG + (
        '[access]\ntorrents_dir = "torrents"\n[scrape]\nfull_scrape = true\n'
        "full_scrape_interval = 0\n"
    )
    clients: list[Client] = []
    deadline = time.monotonic() + BUDGET
    with run_daemon(config, workdir=tmp_path) as d:
        try:
            ti = lt.torrent_info(lt.bdecode(make_torrent(seed_dir, d.announce_url)))
            hashes = ti.info_hashes()
            assert hashes.has_v1() and hashes.has_v2()
            v1 = hashes.v1.to_bytes()
            v2 = hashes.v2.to_bytes()[:20]
            v1_magnet = f"magnet:?xt=urn:btih:{v1.hex()}&tr={d.announce_url}"
            v2_magnet = f"magnet:?xt=urn:btmh:1220{hashes.v2.to_bytes().hex()}&tr={d.announce_url}"

            def counts(info_hash: bytes) -> tuple[int, int, int]:
                f = scrape(d.scrape_url, info_hash)[b"files"][info_hash]
                return f[b"complete"], f[b"incomplete"], f[b"downloaded"]

            # A v2-only and a v1-only client first: one swarm, but neither is named to the
            # other (they could not talk: each greets with its own hash).
            v2_client = Client("v2-client", None, tmp_path / "v2", magnet=v2_magnet)
            clients.append(v2_client)
            wait_until(clients, "the v2 client's reply", lambda: v2_client.tracker_replies)
            v1_client = Client("v1-client", None, tmp_path / "v1", magnet=v1_magnet)
            clients.append(v1_client)
            wait_until(clients, "the v1 client's reply", lambda: v1_client.tracker_replies)
            assert v1_client.peers_per_reply[0] == v2_client.peers_per_reply[0] == 0
            assert counts(v1) == counts(v2) == (0, 2, 0)

            # libtorrent 2 seeding the hybrid announces both hashes with one peer_id: one peer,
            # named to each client in the answer to the hash it used.
            seeder = Client("seeder", ti, seed_dir, share_metadata=True)
            clients.append(seeder)
            wait_until(
                clients,
                "both clients finish",
                lambda: v1_client.finished() and v2_client.finished(),
                deadline=deadline,
            )
            for c in (v1_client, v2_client):
                assert (c.save_path / FILE_NAME).read_bytes() == payload, c.name
            wait_until(
                clients,
                "the tracker counts two downloads in one swarm",
                lambda: counts(v1) == counts(v2) == (3, 0, 2),
                deadline=deadline,
            )
            # One swarm, kept under the v1 hash; scrape answered under the hash asked.
            assert list(scrape(d.scrape_url)[b"files"]) == [v1]
            assert not any(c.tracker_errors for c in clients)
        except BaseException:
            print_alerts(clients)
            raise
        finally:
            for c in clients:
                c.close()
