"""End to end: real libtorrent clients share a file through the real tracker daemon.

Every client has DHT, LSD, PEX, UPnP and NAT-PMP off, so the tracker is their only source of
peers: a leecher that finishes proves the tracker told it (or the seeder) where the other one is.
All clients listen on 127.0.0.1 with their own port, so the tracker must tell them apart by
peer_id and port, not by address. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.daemon import Daemon, run_daemon

lt = pytest.importorskip("libtorrent")

from tests.e2e_helpers import seed_folder  # noqa: E402 (needs libtorrent)
from tests.torrent_clients import (  # noqa: E402 (needs libtorrent)
    BUDGET,
    FILE_NAME,
    TIMEOUT,
    TRACKER_CONFIG,
    Client,
    make_torrent,
    print_alerts,
    scrape,
    wait_until,
)


class Swarm:
    """A running tracker, a random file and its v1 .torrent, and the clients made so far."""

    def __init__(
        self,
        daemon: Daemon,
        tmp_path: Path,
        seed_dir: Path,
        payload: bytes,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.daemon = daemon
        self.tls = tls  # the context that trusts the tracker's certificate, for HTTPS
        self.tmp_path = tmp_path
        self.seed_dir = seed_dir
        self.payload = payload
        self.clients: list[Client] = []
        self.deadline = time.monotonic() + BUDGET
        # v1 only: a hybrid torrent would announce two info-hashes (see test_e2e_access.py).
        self.torrent = make_torrent(seed_dir, daemon.announce_url, lt.create_torrent.v1_only)
        self.ti = lt.torrent_info(lt.bdecode(self.torrent))
        self.info_hash: bytes = self.ti.info_hashes().v1.to_bytes()

    def client(self, name: str, *, seed: bool = False, upload_mode: bool = False) -> Client:
        """A new session: ``seed`` shares the original file, otherwise it downloads into an
        empty directory of its own; ``upload_mode`` announces but downloads nothing yet."""
        path = self.seed_dir if seed else self.tmp_path / name
        path.mkdir(exist_ok=True)
        # With HTTPS, libtorrent validates the tracker's certificate (its default) against the
        # test's CA, which the test hands to OpenSSL as SSL_CERT_FILE.
        settings = {"validate_https_trackers": True} if self.tls else None
        c = Client(name, self.ti, path, upload_mode=upload_mode, settings=settings)
        self.clients.append(c)
        return c

    def close_clients(self) -> None:
        for c in self.clients:
            c.close()

    def counts(self) -> tuple[int, int, int]:
        """(complete, incomplete, downloaded) as the tracker's scrape reports them."""
        f = scrape(self.daemon.scrape_url, self.info_hash, self.tls)[b"files"][self.info_hash]
        return f[b"complete"], f[b"incomplete"], f[b"downloaded"]

    def wait_until(self, what: str, cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        wait_until(self.clients, what, cond, timeout, self.deadline)


@contextmanager
def swarm(
    tmp_path: Path, config: str = TRACKER_CONFIG, tls: ssl.SSLContext | None = None
) -> Iterator[Swarm]:
    """A ``Swarm`` with the daemon running (on ``config``, in ``tmp_path/tracker``; over HTTPS
    with ``tls``); on failure, prints every client's alerts and the daemon log (a ``with`` block
    rather than a fixture, so the failure reaches this code)."""
    seed_dir, payload = seed_folder(tmp_path)
    scheme = "https" if tls else "http"
    with run_daemon(config, workdir=tmp_path / "tracker", scheme=scheme) as d:
        s = Swarm(d, tmp_path, seed_dir, payload, tls)
        try:
            yield s
        except BaseException:
            print_alerts(s.clients)
            raise
        finally:
            s.close_clients()  # while the tracker still runs, to answer their `stopped`


def test_two_leechers_download_from_a_seeder_found_through_the_tracker(tmp_path: Path) -> None:
    with swarm(tmp_path) as s:
        assert s.counts() == (0, 0, 0)

        seeder = s.client("seeder", seed=True)
        s.wait_until("the seeder's first tracker reply", lambda: seeder.tracker_replies >= 1)
        assert seeder.finished(), "the seeder should have checked its file and be seeding"
        assert s.counts() == (1, 0, 0)

        # Leechers in upload mode announce (started, left > 0) but download nothing until
        # released, so the tracker's view of two distinct incomplete peers is checked without
        # racing the download.
        leechers = [s.client(f"leecher{i}", upload_mode=True) for i in (1, 2)]
        s.wait_until(
            "both leechers' first tracker reply",
            lambda: all(c.tracker_replies >= 1 for c in leechers),
        )
        assert s.counts() == (1, 2, 0), "two leechers on one IP must count as two peers"
        # The first to announce gets the seeder; the second gets the seeder and the first. No
        # one is sent its own address.
        assert sorted(c.peers_per_reply[0] for c in leechers) == [1, 2]

        for c in leechers:
            c.handle.unset_flags(lt.torrent_flags.upload_mode)
        s.wait_until("both leechers finish", lambda: all(c.finished() for c in leechers))
        for c in leechers:
            assert (c.save_path / FILE_NAME).read_bytes() == s.payload, c.name

        s.wait_until(
            "the tracker counts three seeders and two completed downloads",
            lambda: s.counts() == (3, 0, 2),
        )
        assert not any(c.tracker_errors for c in s.clients), [c.tracker_errors for c in s.clients]

        # Clients that quit send `stopped` and leave the swarm; the download count stays.
        s.close_clients()
        s.wait_until("every peer has left", lambda: s.counts() == (0, 0, 2), timeout=5)


def test_leecher_started_before_the_seeder_gets_the_file(tmp_path: Path) -> None:
    with swarm(tmp_path) as s:
        leecher = s.client("leecher")
        s.wait_until("the leecher's first tracker reply", lambda: leecher.tracker_replies >= 1)
        assert leecher.peers_per_reply[0] == 0
        assert s.counts() == (0, 1, 0)

        seeder = s.client("seeder", seed=True)
        s.wait_until("the seeder's first tracker reply", lambda: seeder.tracker_replies >= 1)
        # The seeder's `started` answer names the waiting leecher, so the seeder can connect to
        # it without waiting for the leecher's next announce.
        assert seeder.peers_per_reply[0] == 1
        s.wait_until("the leecher finishes", leecher.finished)
        assert (leecher.save_path / FILE_NAME).read_bytes() == s.payload
        s.wait_until(
            "the tracker counts two seeders and one completed download",
            lambda: s.counts() == (2, 0, 1),
        )
        assert not any(c.tracker_errors for c in s.clients), [c.tracker_errors for c in s.clients]


def test_a_leecher_downloads_through_an_https_tracker(tmp_path: Path, monkeypatch) -> None:
    """libtorrent announces to https://127.0.0.1:PORT/announce, checks the certificate, and
    finds the seeder through it."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    (tmp_path / "tracker").mkdir()
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "tracker" / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "tracker" / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    config = '[http]\nhost = "127.0.0.1"\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n'
    with swarm(tmp_path, config + TRACKER_CONFIG, tls) as s:
        assert s.daemon.announce_url.startswith("https://127.0.0.1:")
        # Without the CA, libtorrent refuses the certificate: it really checks it.
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
        stranger = s.client("stranger", upload_mode=True)
        s.wait_until("the stranger's tracker error", lambda: bool(stranger.tracker_errors))
        assert "certificate verify failed" in stranger.tracker_errors[0]
        stranger.close()
        s.clients.remove(stranger)

        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        seeder = s.client("seeder", seed=True)
        s.wait_until("the seeder's first tracker reply", lambda: seeder.tracker_replies >= 1)
        leecher = s.client("leecher")
        s.wait_until("the leecher finishes", leecher.finished)
        assert (leecher.save_path / FILE_NAME).read_bytes() == s.payload
        s.wait_until(
            "the tracker counts two seeders and one completed download",
            lambda: s.counts() == (2, 0, 1),
        )
        assert not any(c.tracker_errors for c in s.clients), [c.tracker_errors for c in s.clients]
