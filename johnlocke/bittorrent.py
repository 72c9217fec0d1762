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


# --- tracker URLs --------------------------------------------------------------------------
# The one rule that finds the endpoint and the passkey in a tracker URL's path: HTTP's request
# target, UDP's BEP 41 URL data and the WebSocket's upgrade request all use it, and so does the
# log masking (``johnlocke.logs``), so whatever form a key arrived in is found and hidden alike.

ANNOUNCE = b"announce"
SCRAPE = b"scrape"
_ENDPOINTS = (ANNOUNCE, SCRAPE)


def parse_target(target: bytes) -> tuple[bytes | None, bytes | None, bytes]:
    """A request target (or BEP 41 URL data) to ``(endpoint, passkey, query)``.

    ``endpoint`` is ``ANNOUNCE``, ``SCRAPE`` or None (not a tracker URL); ``passkey`` is the
    percent-decoded key from the path (``/announce/KEY``, ``/KEY/announce`` and the same for
    scrape), or None; ``query`` is the raw query. The path is read as ``target_path`` reads it.
    """
    path, _, query = target.partition(b"?")
    if path == b"/announce" or path == b"/scrape":  # nearly every request: nothing to resolve
        return path[1:], None, query
    endpoint, key_at, segments = target_path(path)
    if key_at < 0:
        return endpoint, None, query
    return endpoint, _unescape_segment(segments[key_at]), query


def target_path(path: bytes) -> tuple[bytes | None, int, list[bytes]]:
    """A request path as the tracker reads it: ``(endpoint, key_at, segments)``.

    ``segments`` are the path's segments as sent (escapes kept) once resolved: an absolute-form
    target (``http://host:port/path``) is reduced to its path, empty segments (``//``) and ``.``
    are dropped and ``..`` removes the segment before it (RFC 3986, 5.2.4), after
    percent-decoding for the test (``%2e%2e``). ``key_at`` is the index of the passkey's segment,
    -1 if there is none. Everything that looks for or hides a passkey goes through here.
    """
    path = path.partition(b"#")[0]
    if path[:1] != b"/":
        scheme, sep, rest = path.partition(b"://")
        path = b"/" + rest.partition(b"/")[2] if sep and scheme.isalpha() else b""
    segments: list[bytes] = []
    for raw in path.split(b"/"):
        seg = _unescape_segment(raw) if b"%" in raw else raw
        if seg == b"..":
            if segments:
                segments.pop()
        elif seg and seg != b".":
            segments.append(raw)
    names = [_unescape_segment(s) if b"%" in s else s for s in segments[:2]]
    if len(segments) == 1 and names[0] in _ENDPOINTS:
        return names[0], -1, segments
    if len(segments) == 2:
        if names[0] in _ENDPOINTS:
            return names[0], 1, segments
        if names[1] in _ENDPOINTS:
            return names[1], 0, segments
    return None, -1, segments


def _unescape_segment(raw: bytes) -> bytes:
    # A malformed escape is left as it is: a path is not a query, and a bad key fails anyway.
    return unquote_to_bytes(raw) if b"%" in raw else raw


def target_passkey(target: bytes) -> bytes | None:
    """The passkey a tracker URL carries: in its path (which wins), or as ``?passkey=``."""
    _, key, query = parse_target(target)
    if key is not None or b"passkey=" not in query:
        return key
    for piece in query.split(b"&"):
        name, _, value = piece.partition(b"=")
        if name == b"passkey":
            key = _unescape_segment(value)  # the last one wins, as in an HTTP query
    return key
