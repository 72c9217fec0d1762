"""Real libtorrent clients for end-to-end tests, shared by every test module that uses them.

Every client has DHT, LSD, PEX, UPnP and NAT-PMP off, so the tracker is its only source of peers:
a leecher that finishes proves the tracker told it (or the seeder) where the other one is. All
clients listen on 127.0.0.1 with their own port, so the tracker must tell them apart by peer_id
and port, not by address. Everything stays on 127.0.0.1.

Import this module only after ``pytest.importorskip("libtorrent")``.
"""

from __future__ import annotations

import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import bencodepy
import libtorrent as lt

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

SESSION_SETTINGS = {
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
    """One libtorrent session with one torrent; keeps every alert as text for failure reports.

    The torrent is ``ti`` (the client has the metadata), or a ``magnet`` URI: the client then
    announces only the hash the magnet names until it has fetched the metadata from a peer.
    Metadata exchange needs the ut_metadata extension at both ends: magnet clients and clients
    made with ``share_metadata`` get it (it is the only plugin a session gets).
    """

    def __init__(
        self,
        name: str,
        ti: lt.torrent_info | None,
        save_path: Path,
        *,
        upload_mode: bool = False,
        magnet: str | None = None,
        share_metadata: bool = False,
        settings: dict[str, object] | None = None,
    ) -> None:
        self.name = name
        self.save_path = save_path
        self.alerts: list[str] = []
        self.peers_per_reply: list[int] = []  # peers in each tracker answer, in order
        self.tracker_errors: list[str] = []
        self.closed = False
        self.session = lt.session(
            dict(
                SESSION_SETTINGS, peer_fingerprint=f"-JL{name[0].upper()}001-", **(settings or {})
            ),
            0,
        )
        if magnet is not None or share_metadata:
            self.session.add_extension("ut_metadata")
        if magnet is not None:
            atp = lt.parse_magnet_uri(magnet)
        else:
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


def make_torrent(
    seed_dir: Path, announce_url: str, flags: int = 0, piece_size: int = PIECE_SIZE
) -> bytes:
    """A .torrent for ``seed_dir/FILE_NAME`` (libtorrent's default flags make a hybrid v1+v2
    torrent; ``lt.create_torrent.v1_only`` a v1 one)."""
    if hasattr(lt, "list_files"):  # libtorrent 2.1
        files = lt.list_files(str(seed_dir / FILE_NAME))
    else:  # libtorrent 2.0
        files = lt.file_storage()
        lt.add_files(files, str(seed_dir / FILE_NAME))
    ct = lt.create_torrent(files, piece_size, flags=flags)
    ct.add_tracker(announce_url)
    lt.set_piece_hashes(ct, str(seed_dir))
    return bencodepy.encode(ct.generate())


def scrape(
    scrape_url: str,
    info_hash: bytes | None = None,
    context: ssl.SSLContext | None = None,
    **params: str,
) -> dict:
    """The bencoded scrape answer for one info_hash (or a full scrape); failures are errors."""
    query = {} if info_hash is None else {"info_hash": info_hash}
    query.update(params)
    # quote, not quote_plus: the tracker reads "+" as itself, as BitTorrent clients mean it.
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    url = f"{scrape_url}?{encoded}" if query else scrape_url
    with urllib.request.urlopen(url, timeout=5, context=context) as resp:
        body = bencodepy.decode(resp.read())
    assert b"failure reason" not in body, body
    return body


def wait_until(
    clients: Sequence[Client],
    what: str,
    cond: Callable[[], bool],
    timeout: float = TIMEOUT,
    deadline: float | None = None,
) -> None:
    """Poll ``cond`` (draining every client's alerts) until it holds or ``timeout`` passes."""
    end = time.monotonic() + timeout
    if deadline is not None:
        end = min(end, deadline)
    while True:
        for c in clients:
            c.poll()
        if cond():
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.05)


def print_alerts(clients: Sequence[Client]) -> None:
    """Every client's alerts (pytest shows them with a failure)."""
    for c in clients:
        c.poll()
        print(f"--- {c.name} alerts ---", *c.alerts, sep="\n")
