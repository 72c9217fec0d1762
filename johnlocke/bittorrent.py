"""What every transport shares: the parsed announce, its events, and the answer to encode.

Each frontend (``johnlocke.http``, and the UDP and WebSocket ones beside it) turns its own bytes
into an ``AnnounceRequest``, hands it to ``johnlocke.tracker``, and encodes the ``Answer`` it
gets back in its own format. Nothing here does I/O or knows a wire format; info_hash, peer_id,
key and addresses are ``bytes`` throughout.
"""

from __future__ import annotations

from ipaddress import ip_address
from urllib.parse import unquote_to_bytes

from johnlocke.errors import ClientError

# Announce events as the tracker numbers them. Transports map their own numbers onto these
# (UDP's differ: 0 none, 1 completed, 2 started, 3 stopped).
EVENT_NONE = 0
EVENT_STARTED = 1
EVENT_COMPLETED = 2
EVENT_STOPPED = 3
EVENT_PAUSED = 4


class AnnounceRequest:
    """One parsed announce: a plain slotted class, built on every request (no validation model).

    ``ip`` is the address the client claims, as text (HTTP's ``ip=``; a transport that carries
    it packed writes it out), believed only where the tracker allows it; ``passkey`` comes from
    the URL.
    """

    __slots__ = (
        "info_hash",
        "peer_id",
        "port",
        "uploaded",
        "downloaded",
        "left",
        "event",
        "compact",
        "no_peer_id",
        "numwant",
        "key",
        "trackerid",
        "ip",
        "passkey",
    )

    def __init__(
        self,
        info_hash: bytes,
        peer_id: bytes,
        port: int,
        uploaded: int = 0,
        downloaded: int = 0,
        left: int = 0,
        event: int = EVENT_NONE,
        compact: bool = True,
        no_peer_id: bool = False,
        numwant: int | None = None,
        key: bytes | None = None,
        trackerid: bytes | None = None,
        ip: bytes | None = None,
        passkey: bytes | None = None,
    ) -> None:
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.port = port
        self.uploaded = uploaded
        self.downloaded = downloaded
        self.left = left
        self.event = event
        self.compact = compact
        self.no_peer_id = no_peer_id
        self.numwant = numwant
        self.key = key
        self.trackerid = trackerid
        self.ip = ip
        self.passkey = passkey


class Answer:
    """What the tracker answers one announce with, for the frontend to encode.

    ``peers`` is the chosen peers' compact addresses concatenated (6 bytes each for IPv4, 18 for
    IPv6: the announcer's family, ``v6``), or, when the request asked for ``compact=0``,
    ``peer_list`` holds ``(compact address, peer_id)`` pairs instead and ``peers`` is empty.
    ``ip`` is the packed address the peer was registered under (BEP 24 "external ip").
    ``warning`` is a text for the client (HTTP's "warning message"), or None.
    """

    __slots__ = (
        "interval",
        "min_interval",
        "complete",
        "incomplete",
        "downloaded",
        "peers",
        "peer_list",
        "v6",
        "ip",
        "warning",
    )

    def __init__(
        self,
        interval: int,
        min_interval: int,
        complete: int,
        incomplete: int,
        downloaded: int,
        peers: bytes,
        v6: bool,
        ip: bytes,
        warning: bytes | None = None,
        peer_list: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.interval = interval
        self.min_interval = min_interval
        self.complete = complete
        self.incomplete = incomplete
        self.downloaded = downloaded
        self.peers = peers
        self.v6 = v6
        self.ip = ip
        self.warning = warning
        self.peer_list = peer_list


ScrapeRow = tuple[bytes, int, int, int]
"""``(info_hash, complete, incomplete, downloaded)``."""


def parse_ip(text: bytes) -> bytes:
    """A textual IPv4/IPv6 address to its packed form (4 or 16 bytes); v4-mapped IPv6 becomes 4."""
    try:
        addr = ip_address(text.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        raise ClientError("ip is not a valid IP address") from None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.packed


_ENDPOINTS = (b"announce", b"scrape")


def _segment(raw: bytes) -> bytes:
    return unquote_to_bytes(raw) if b"%" in raw else raw


def split_target(target: bytes) -> tuple[bytes, bytes | None, bytes]:
    """A tracker URL's path and query (``/KEY/announce?a=1``) -> (endpoint, passkey, query).

    The rule every frontend follows (HTTP's routes, UDP's BEP 41 URL data): ``endpoint`` is
    ``b"announce"`` or ``b"scrape"`` for ``/announce``, ``/announce/KEY`` and ``/KEY/announce``
    (the last lets clients derive the scrape URL, BEP 48: they replace "announce" in the last
    segment), and ``b""`` for any other path. ``passkey`` is the other segment of a two-segment
    path, percent-decoded, or None; ``query`` is left as sent (a ``passkey=`` in it counts only
    when the path has none).
    """
    path, _, query = target.partition(b"?")
    parts = path.partition(b"#")[0].split(b"/")
    if parts[0] or not 2 <= len(parts) <= 3:
        return b"", None, query
    first = _segment(parts[1])
    if len(parts) == 2:
        return (first if first in _ENDPOINTS else b""), None, query
    second = _segment(parts[2])
    if first in _ENDPOINTS and second:
        return first, second, query
    if second in _ENDPOINTS and first:
        return second, first, query
    return b"", None, query


def target_passkey(target: bytes) -> bytes | None:
    """The passkey a tracker URL carries: in its path (which wins), or as ``?passkey=``."""
    _, key, query = split_target(target)
    if key is not None or b"passkey=" not in query:
        return key
    for piece in query.split(b"&"):
        name, _, value = piece.partition(b"=")
        if name == b"passkey":
            key = _segment(value)  # the last one wins, as in an HTTP query
    return key
