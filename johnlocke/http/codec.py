"""The HTTP tracker codec: raw query bytes in, bencoded bytes out. No I/O, no aiohttp.

Theory of operation
-------------------
Clients percent-encode binary info_hashes and peer_ids in wildly different ways (upper or lower
case escapes, escaped unreserved characters, raw bytes such as ``Q`` or ``:`` left unescaped), so
the query is split and decoded here from the raw bytes of the request target: never through a
text decoding, which would corrupt binary values. Every parse error raises ``ClientError`` with a
reason that names the parameter, before anything touches a swarm.

Responses are built by hand with one ``b"".join`` (or ``%`` formatting) per answer: the keys are
fixed and already in bencode's sorted order, so a general encoder would only add work on the hot
path.
"""

from __future__ import annotations

import re
from binascii import a2b_qp
from socket import AF_INET, AF_INET6, inet_ntop
from urllib.parse import unquote_to_bytes

from johnlocke.bittorrent import (
    EVENT_COMPLETED,
    EVENT_NONE,
    EVENT_PAUSED,
    EVENT_STARTED,
    EVENT_STOPPED,
    AnnounceRequest,
    Answer,
    ScrapeRow,
)
from johnlocke.errors import ClientError

# Real announces are 250-450 bytes; a multi-hash scrape is ~75 bytes per hash. Anything much
# longer is a mistake or an attack, and refusing it early bounds the parsing work.
MAX_QUERY_LENGTH = 8192
# Enough for a 64-bit counter; longer digit strings cost int() time for no legitimate use.
_MAX_DIGITS = 20
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")

_EVENTS = {
    b"": EVENT_NONE,
    b"empty": EVENT_NONE,
    b"started": EVENT_STARTED,
    b"completed": EVENT_COMPLETED,
    b"stopped": EVENT_STOPPED,
    b"paused": EVENT_PAUSED,
}


_PERCENT_TO_EQUALS = bytes.maketrans(b"%", b"=")


def _unescape(name: bytes, value: bytes) -> bytes:
    """Percent-decode one value to bytes; a malformed escape is a ClientError naming ``name``."""
    if b"%" not in value:
        return value
    if b"=" not in value and b"\n" not in value:
        # Fast path (~20x urllib's): quoted-printable decoding is percent-decoding with "="
        # for "%", done in C. Each valid escape shortens the value by exactly 2 bytes and any
        # malformed one by less, so the length tells whether every escape was well-formed.
        out = a2b_qp(value.translate(_PERCENT_TO_EQUALS))
        if len(out) == len(value) - 2 * value.count(b"%"):
            return out
    elif not _BAD_ESCAPE.search(value):
        return unquote_to_bytes(value)
    raise ClientError(f"bad percent escape in {name.decode('latin-1')}")


def split_query(query: bytes) -> list[tuple[bytes, bytes]]:
    """Split a raw query string into (name, value) byte pairs, percent-decoding both.

    Empty pieces (``a=1&&b=2``) are skipped; a piece without ``=`` has an empty value.
    """
    if len(query) > MAX_QUERY_LENGTH:
        raise ClientError(f"query string too long (over {MAX_QUERY_LENGTH} bytes)")
    pairs = []
    for piece in query.split(b"&"):
        if not piece:
            continue
        name, _, value = piece.partition(b"=")
        if b"%" in name:
            name = _unescape(b"parameter name", name)
        pairs.append((name, _unescape(name, value)))
    return pairs


def _uint(name: str, value: bytes) -> int:
    # bytes.isdigit() is ASCII-only, so "+5", " 5", "5_0" and non-ASCII digits are all refused.
    if value.isdigit():
        if len(value) > _MAX_DIGITS:
            raise ClientError(f"{name} is too large")
        return int(value)
    if value[:1] == b"-" and value[1:].isdigit():
        raise ClientError(f"{name} must not be negative")
    raise ClientError(f"{name} is not a whole number")


def _query_dict(query: bytes) -> dict[bytes, bytes]:
    """Raw query to {name: still-escaped value}; the last of repeated names wins."""
    if len(query) > MAX_QUERY_LENGTH:
        raise ClientError(f"query string too long (over {MAX_QUERY_LENGTH} bytes)")
    params = {}
    for piece in query.split(b"&"):
        name, _, value = piece.partition(b"=")
        if b"%" in name:
            name = _unescape(b"parameter name", name)
        params[name] = value
    return params


# The parameters an announce uses; everything else a client sends (supportcrypto, corrupt,
# redundant...) is skipped by one set lookup. A split and a lookup per parameter beat one regex
# scan, in both builds (measured: 2.6 us against 3.6 us for a libtorrent query, pure Python).
_ANNOUNCE_PARAMS = frozenset(
    b"info_hash peer_id port left uploaded downloaded numwant event compact"
    b" no_peer_id key trackerid ip ipv4 ipv6 passkey".split()
)


def _count(name: bytes, value: bytes | None) -> int:
    if value is None:
        return 0
    if value.isdigit() and len(value) <= _MAX_DIGITS:
        return int(value)
    return _uint(name.decode(), _unescape(name, value))


def _text(name: bytes, value: bytes | None) -> bytes | None:
    if value is None or b"%" not in value:
        return value
    return _unescape(name, value)


def parse_announce(query: bytes) -> AnnounceRequest:
    """Parse the raw query of an announce. Raises ClientError naming the first bad parameter.

    Values are decoded only when used: this runs on every announce. Parameter names are matched
    as sent; a client that percent-encodes names too is served by the slower general path.
    """
    if len(query) > MAX_QUERY_LENGTH:
        raise ClientError(f"query string too long (over {MAX_QUERY_LENGTH} bytes)")
    params = {}
    for piece in query.split(b"&"):
        name, _, value = piece.partition(b"=")
        if name in _ANNOUNCE_PARAMS:
            params[name] = value
    if b"info_hash" not in params and b"%" in query:
        params = _query_dict(query)
    get = params.get
    info_hash = get(b"info_hash")
    if info_hash is None:
        raise ClientError("missing info_hash")
    info_hash = _unescape(b"info_hash", info_hash)
    if len(info_hash) != 20:
        raise ClientError(f"info_hash must be 20 bytes, got {len(info_hash)}")
    peer_id = get(b"peer_id")
    if peer_id is None:
        raise ClientError("missing peer_id")
    peer_id = _unescape(b"peer_id", peer_id)
    if len(peer_id) != 20:
        raise ClientError(f"peer_id must be 20 bytes, got {len(peer_id)}")
    port = get(b"port")
    if port is None:
        raise ClientError("missing port")
    port = _count(b"port", port)
    if not 0 < port < 65536:
        raise ClientError("port must be between 1 and 65535")
    numwant = get(b"numwant")
    if numwant is not None:
        numwant = _count(b"numwant", numwant)
    event = get(b"event")
    if event is None:
        event = EVENT_NONE
    else:
        try:
            event = _EVENTS[_text(b"event", event)]
        except KeyError:
            raise ClientError(
                "unknown event (expected started, completed, stopped, paused or empty)"
            ) from None
    return AnnounceRequest(
        info_hash,
        peer_id,
        port,
        _count(b"uploaded", get(b"uploaded")),
        _count(b"downloaded", get(b"downloaded")),
        _count(b"left", get(b"left")),
        event,
        get(b"compact") != b"0",
        get(b"no_peer_id", b"0") != b"0",
        numwant,
        _text(b"key", get(b"key")),
        _text(b"trackerid", get(b"trackerid")),
        _text(b"ip", get(b"ip") or get(b"ipv4") or get(b"ipv6")),
        _text(b"passkey", get(b"passkey")),
    )


# --- the request target -------------------------------------------------------------------


def parse_scrape(query: bytes) -> tuple[list[bytes], bytes | None]:
    """Parse a scrape query: the list of info_hashes asked for (may be empty) and any passkey."""
    hashes: list[bytes] = []
    passkey = None
    for name, value in split_query(query):
        if name == b"info_hash":
            if len(value) != 20:
                raise ClientError(f"info_hash must be 20 bytes, got {len(value)}")
            hashes.append(value)
        elif name == b"passkey":
            passkey = value
    return hashes, passkey


# --- encoding -------------------------------------------------------------------------------


def bstr(value: bytes) -> bytes:
    """A bencoded byte string (compact peer strings are built with this)."""
    return b"%d:%s" % (len(value), value)


def encode_failure(reason: str) -> bytes:
    return b"d14:failure reason%se" % bstr(reason.encode("utf-8"))


_ANNOUNCE = (
    b"d8:completei%de10:downloadedi%de11:external ip%d:%s10:incompletei%de"
    b"8:intervali%de12:min intervali%de5:peers%s6:peers6%s%se"
)
_COMPACT_V4 = (
    b"d8:completei%de10:downloadedi%de11:external ip%d:%s10:incompletei%de"
    b"8:intervali%de12:min intervali%de5:peers%d:%s6:peers60:%se"
)
_COMPACT_V6 = (
    b"d8:completei%de10:downloadedi%de11:external ip%d:%s10:incompletei%de"
    b"8:intervali%de12:min intervali%de5:peers0:6:peers6%d:%s%se"
)


def announce_extra(tracker_id: bytes | None = None, warning: bytes | None = None) -> bytes:
    """The optional keys that sort after ``peers6``, bencoded, for ``encode_*announce``."""
    out = b""
    if tracker_id is not None:
        out += b"10:tracker id" + bstr(tracker_id)
    if warning is not None:
        out += b"15:warning message" + bstr(warning)
    return out


def encode_announce(
    interval: int,
    min_interval: int,
    complete: int,
    incomplete: int,
    downloaded: int,
    peers: bytes,
    peers6: bytes,
    external_ip: bytes,
    extra: bytes = b"",
) -> bytes:
    """An announce answer. ``peers``/``peers6`` are bencoded values (a compact string, or a list
    of dicts); ``extra`` comes from ``announce_extra``."""
    return _ANNOUNCE % (
        complete, downloaded, len(external_ip), external_ip, incomplete, interval,
        min_interval, peers, peers6, extra,
    )  # fmt: skip


def encode_compact_announce(
    interval: int,
    min_interval: int,
    complete: int,
    incomplete: int,
    downloaded: int,
    peers: bytes,
    v6: bool,
    external_ip: bytes,
    extra: bytes = b"",
) -> bytes:
    """The common answer in one formatting step: ``peers`` are concatenated compact addresses,
    sent as ``peers6`` if ``v6``. Same output as ``encode_announce`` with bencoded strings."""
    return (_COMPACT_V6 if v6 else _COMPACT_V4) % (
        complete, downloaded, len(external_ip), external_ip, incomplete, interval,
        min_interval, len(peers), peers, extra,
    )  # fmt: skip


EMPTY_STRING = b"0:"


def encode_answer(answer: Answer, tracker_id: bytes | None, no_peer_id: bool = False) -> bytes:
    """The bencoded answer to an announce; ``tracker_id`` is sent unless it is None (a client
    that echoed one back needs none)."""
    if answer.warning is not None:
        extra = announce_extra(tracker_id, answer.warning)
    elif tracker_id is not None:
        extra = b"10:tracker id%d:%s" % (len(tracker_id), tracker_id)
    else:
        extra = b""
    ip = answer.ip
    if answer.peer_list is None:
        peers = answer.peers
        return (_COMPACT_V6 if answer.v6 else _COMPACT_V4) % (
            answer.complete, answer.downloaded, len(ip), ip, answer.incomplete, answer.interval,
            answer.min_interval, len(peers), peers, extra,
        )  # fmt: skip
    return _ANNOUNCE % (
        answer.complete, answer.downloaded, len(ip), ip, answer.incomplete, answer.interval,
        answer.min_interval, dict_peers_value([_dict_peer(a, p) for a, p in answer.peer_list],
        no_peer_id), EMPTY_STRING, extra,
    )  # fmt: skip


def _dict_peer(addr: bytes, peer_id: bytes) -> tuple[str, int, bytes]:
    """(ip text, port, peer_id) for non-compact answers."""
    family = AF_INET if len(addr) == 6 else AF_INET6
    return inet_ntop(family, addr[:-2]), int.from_bytes(addr[-2:], "big"), peer_id


def dict_peers_value(peers: list[tuple[str, int, bytes]], no_peer_id: bool) -> bytes:
    """A bencoded list of peer dicts (BEP 3, non-compact): (ip text, port, peer_id) triples."""
    parts = [b"l"]
    for ip, port, peer_id in peers:
        ipb = ip.encode("ascii")
        if no_peer_id:
            parts.append(b"d2:ip%d:%s4:porti%dee" % (len(ipb), ipb, port))
        else:
            parts.append(b"d2:ip%d:%s7:peer id20:%s4:porti%dee" % (len(ipb), ipb, peer_id, port))
    parts.append(b"e")
    return b"".join(parts)


def encode_scrape(files: list[ScrapeRow]) -> bytes:
    """A scrape answer from (info_hash, complete, incomplete, downloaded); keys must be unique.

    Bencode wants dict keys sorted, so the entries are sorted here.
    """
    parts = [b"d5:filesd"]
    for info_hash, complete, incomplete, downloaded in sorted(files):
        parts.append(
            b"20:%sd8:completei%de10:downloadedi%de10:incompletei%dee"
            % (info_hash, complete, downloaded, incomplete)
        )
    parts.append(b"ee")
    return b"".join(parts)
