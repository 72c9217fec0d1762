"""End to end: real libtorrent clients share a file through the real tracker daemon.

Every client has DHT, LSD, PEX, UPnP and NAT-PMP off, so the tracker is their only source of
peers: a leecher that finishes proves the tracker told it (or the seeder) where the other one is.
All clients listen on 127.0.0.1 with their own port, so the tracker must tell them apart by
peer_id and port, not by address. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import os
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bencodepy
import pytest

from tests.daemon import Daemon, run_daemon

lt = pytest.importorskip("libtorrent")

# Short intervals so announces that libtorrent schedules itself come quickly. The daemon requires
# min_interval <= interval < peer_timeout.
TRACKER_CONFIG = """
[announce]
interval = 2
min_interval = 1
peer_timeout = 60
"""

FILE_NAME = "payload.bin"
FILE_SIZE = 1536 * 1024 + 777  # 1.5 MiB and a short last piece
PIECE_SIZE = 32 * 1024
# Each test takes 1-2 s; these bound a failing one: any one wait, and all waits together.
TIMEOUT = 10.0
BUDGET = 40.0

_SETTINGS = {
    "listen_interfaces": "127.0.0.1:0",
    "outgoing_interfaces": "127.0.0.1",
    # The tracker is the only source of peers (ut_pex is left out by creating the session
    # without the default plugins).
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    # Every client shares 127.0.0.1.
    "allow_multiple_connections_per_ip": True,
    # Accept the test tracker's short intervals (libtorrent's default floor is 300 s).
    "min_announce_interval": 1,
    "alert_mask": (
        lt.alert_category.error
        | lt.alert_category.status
        | lt.alert_category.tracker
        | lt.alert_category.connect
        | lt.alert_category.peer
    ),
}


class Client:
    """One libtorrent session with one torrent; keeps every alert as text for failure reports."""

    def __init__(
        self,
        name: str,
        ti: lt.torrent_info,
        save_path: Path,
        *,
        upload_mode: bool = False,
    ) -> None:
        self.name = name
        self.save_path = save_path
        self.alerts: list[str] = []
        self.peers_per_reply: list[int] = []  # peers in each tracker answer, in order
        self.tracker_errors: list[str] = []
        self.closed = False
        self.session = lt.session(dict(_SETTINGS, peer_fingerprint=f"-JL{name[0].upper()}001-"), 0)
        atp = lt.add_torrent_params()
        atp.ti = ti
        atp.save_path = str(save_path)
        # add_torrent_params starts paused and auto-managed: clear both or it never starts.
        flags = atp.flags & ~lt.torrent_flags.paused & ~lt.torrent_flags.auto_managed
        flags |= lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
        flags |= lt.torrent_flags.disable_pex
        if upload_mode:
            flags |= lt.torrent_flags.upload_mode
        atp.flags = flags
        self.handle = self.session.add_torrent(atp)

    @property
    def tracker_replies(self) -> int:
        return len(self.peers_per_reply)

    def poll(self) -> None:
        if self.closed:
            return
        for a in self.session.pop_alerts():
            self.alerts.append(f"{time.monotonic():.3f} {self.name}: {a.what()}: {a.message()}")
            if isinstance(a, lt.tracker_reply_alert):
                self.peers_per_reply.append(a.num_peers)
            elif isinstance(a, lt.tracker_error_alert):
                self.tracker_errors.append(a.message())

    def status(self) -> lt.torrent_status:
        return self.handle.status()

    def finished(self) -> bool:
        s = self.status()
        return s.is_seeding and s.progress >= 1.0

    def close(self) -> None:
        """End the session; libtorrent sends `stopped` before this returns (or gives up)."""
        if self.closed:
            return
        self.poll()
        self.closed = True
        del self.handle
        del self.session


def scrape(daemon: Daemon, info_hash: bytes) -> dict[bytes, int]:
    url = f"{daemon.scrape_url}?info_hash={urllib.parse.quote_from_bytes(info_hash)}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = bencodepy.decode(resp.read())
    assert b"failure reason" not in body, body
    return body[b"files"][info_hash]


class Swarm:
    """A running tracker, a random file and its v1 .torrent, and the clients made so far."""

    def __init__(self, daemon: Daemon, tmp_path: Path, seed_dir: Path, payload: bytes) -> None:
        self.daemon = daemon
        self.tmp_path = tmp_path
        self.seed_dir = seed_dir
        self.payload = payload
        self.clients: list[Client] = []
        self.deadline = time.monotonic() + BUDGET
        if hasattr(lt, "list_files"):  # libtorrent 2.1
            files = lt.list_files(str(seed_dir / FILE_NAME))
        else:  # libtorrent 2.0
            files = lt.file_storage()
            lt.add_files(files, str(seed_dir / FILE_NAME))
        # v1 only: a hybrid torrent would announce two info-hashes (two swarms on the tracker).
        ct = lt.create_torrent(files, PIECE_SIZE, flags=lt.create_torrent.v1_only)
        ct.add_tracker(daemon.announce_url)
        lt.set_piece_hashes(ct, str(seed_dir))
        self.torrent = bencodepy.encode(ct.generate())
        self.ti = lt.torrent_info(lt.bdecode(self.torrent))
        self.info_hash: bytes = self.ti.info_hashes().v1.to_bytes()

    def client(self, name: str, *, seed: bool = False, upload_mode: bool = False) -> Client:
        """A new session: ``seed`` shares the original file, otherwise it downloads into an
        empty directory of its own; ``upload_mode`` announces but downloads nothing yet."""
        path = self.seed_dir if seed else self.tmp_path / name
        path.mkdir(exist_ok=True)
        c = Client(name, self.ti, path, upload_mode=upload_mode)
        self.clients.append(c)
        return c

    def close_clients(self) -> None:
        for c in self.clients:
            c.close()

    def counts(self) -> tuple[int, int, int]:
        """(complete, incomplete, downloaded) as the tracker's scrape reports them."""
        f = scrape(self.daemon, self.info_hash)
        return f[b"complete"], f[b"incomplete"], f[b"downloaded"]

    def wait_until(self, what: str, cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Poll ``cond`` (draining every client's alerts) until it holds or ``timeout`` passes."""
        deadline = min(time.monotonic() + timeout, self.deadline)
        while True:
            for c in self.clients:
                c.poll()
            if cond():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {what}")
            time.sleep(0.05)


@contextmanager
def swarm(tmp_path: Path) -> Iterator[Swarm]:
    """A ``Swarm`` with the daemon running; on failure, prints every client's alerts and the
    daemon log (a ``with`` block rather than a fixture, so the failure reaches this code)."""
    payload = os.urandom(FILE_SIZE)
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    (seed_dir / FILE_NAME).write_bytes(payload)
    with run_daemon(TRACKER_CONFIG) as d:
        s = Swarm(d, tmp_path, seed_dir, payload)
        try:
            yield s
        except BaseException:
            for c in s.clients:
                c.poll()
                print(f"--- {c.name} alerts ---", *c.alerts, sep="\n")
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
