"""The UDP tracker codec (BEP 15, BEP 41): datagram bytes in, requests out; answers to bytes.
No I/O, no clock: the caller passes the time window.

Theory of operation
-------------------
A client first sends a *connect* (the protocol's magic number and a transaction id) and gets a
connection id back, which it puts at the front of its announces and scrapes for the next
minute or so. Holding a valid id proves that the sender receives what is sent to its address,
so a spoofed source cannot announce, move or stop a peer.

The tracker keeps no state per client for this: a connection id is a keyed hash (blake2s, 8
bytes) of the sender's address and a time window of half the configured lifetime, and the ids of
the current and the previous window are accepted: an id lives between half the lifetime and the
whole of it. Processes that share the key (``[udp] secret``) agree on every id.

The id is bound to the address, not to the source port, as opentracker's are: libtorrent keeps
one id per tracker for the whole process, whatever socket it sends from (several listen sockets,
several sessions), so an id bound to a port would be refused to most of them. Proving the
address is what matters: an address that receives the id is not spoofed.

Nothing larger than what arrived is ever sent to an address that has not proven itself (no
amplification): the connect answer is 16 bytes, like the connect request, and the refusal of an
announce or scrape with a bad connection id (``refuse_unproven``) is shorter than either. No
answer from this module can itself pass for a request (its bytes 8-12, the action of a
request, hold text or a random id), so two trackers can never be made to answer each other in a
loop.

``read_header`` triages a datagram: what cannot be a request at all (too short to carry a
transaction id, over ``MAX_DATAGRAM``, a connect without the magic number) raises ``Drop``
with a reason to count, and is never answered. Any other request but a connect must then carry
a valid connection id (``connection_id_ok``; else ``refuse_unproven``). A refusal of a request
from a proven sender raises ``ClientError``, whose reason is sent in an error packet (action 3),
as HTTP sends a ``failure reason``.

The functions work on ``bytes`` with ``struct`` and plain locals (no generators or closures):
the fast-path build compiles this module as it is.
"""

from __future__ import annotations

import struct
from hashlib import blake2s
from hmac import compare_digest
from socket import AF_INET, inet_ntop
from typing import Any

from johnlocke.bittorrent import (
    EVENT_COMPLETED,
    EVENT_NONE,
    EVENT_STARTED,
    EVENT_STOPPED,
    AnnounceRequest,
    Answer,
    ScrapeRow,
    target_passkey,
)
from johnlocke.errors import ClientError

PROTOCOL_ID = 0x41727101980
MAGIC = PROTOCOL_ID.to_bytes(8, "big")
CONNECT = 0
ANNOUNCE = 1
SCRAPE = 2
ERROR = 3

HEADER_SIZE = 16  # connection id (or magic), action, transaction id
ANNOUNCE_SIZE = 98  # the fixed part; BEP 41 options may follow
# BEP 15: "up to about 74 torrents can be scraped at once".
MAX_SCRAPE_HASHES = 74
# Real announces are 98-150 bytes and a full scrape 1,496; anything longer is not a request.
MAX_DATAGRAM = 2048
MAX_ERROR_MESSAGE = 200

# UDP numbers events differently from the tracker (and HTTP): 0 none, 1 completed, 2 started,
# 3 stopped.
EVENTS = (EVENT_NONE, EVENT_COMPLETED, EVENT_STARTED, EVENT_STOPPED)
UDP_EVENTS = {tracker: udp for udp, tracker in enumerate(EVENTS)}

EXPIRED = "connection id expired"

_HEADER = struct.Struct(">II")  # action, transaction id (bytes 8-16 of a request)
_CONNECTED = struct.Struct(">II8s")
_ANNOUNCE = struct.Struct(">8sII20s20sqqqI4sIiH")
_ANSWER = struct.Struct(">IIIII")
_SCRAPED = struct.Struct(">III")
_ZERO_IP = b"\0\0\0\0"
_NO_ROW = (0, 0, 0)


class Drop(Exception):
    """A datagram that is not a request: it is counted by ``reason`` and never answered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- connection ids -------------------------------------------------------------------------


def time_window(now: float, lifetime: int) -> int:
    """The time window ``now`` (Unix time) falls in; a window lasts half of ``lifetime``."""
    return int(now // (lifetime // 2))


# The hash keyed with each secret, its key block already absorbed: an id then costs one copy
# and one compression. blake2s rather than blake2b: for inputs this short its 64-byte blocks
# make it about a third faster (a connection id is computed for every request).
_KEYED: dict[bytes, Any] = {}


def connection_id(secret: bytes, ip: bytes, window: int) -> bytes:
    """The 8-byte connection id of a sender's address (``ip``, packed) in a time window;
    ``secret`` is 1 to 32 bytes."""
    keyed = _KEYED.get(secret)
    if keyed is None:
        if len(_KEYED) >= 16:
            _KEYED.clear()
        keyed = _KEYED[secret] = blake2s(key=secret, digest_size=8)
    h = keyed.copy()
    h.update(ip + window.to_bytes(8, "big"))
    return h.digest()


def connection_id_ok(cid: bytes, secret: bytes, ip: bytes, window: int) -> bool:
    """Whether ``cid`` was minted for this address in this window or the one before."""
    if compare_digest(cid, connection_id(secret, ip, window)):
        return True
    return compare_digest(cid, connection_id(secret, ip, window - 1))


# --- requests -------------------------------------------------------------------------------


def read_header(data: bytes) -> tuple[int, int]:
    """``(action, transaction_id)`` of a datagram, or ``Drop`` if it cannot be a request."""
    size = len(data)
    if size < HEADER_SIZE:
        raise Drop("too short")
    if size > MAX_DATAGRAM:
        raise Drop("too long")
    action, transaction_id = _HEADER.unpack_from(data, 8)
    if action == CONNECT and data[:8] != MAGIC:
        raise Drop("bad protocol id")
    return action, transaction_id


def url_data(data: bytes, offset: int = ANNOUNCE_SIZE) -> bytes:
    """The BEP 41 URL data (path and query) of an announce: every URLData option concatenated.

    Options follow the fixed part: EndOfOptions (0) ends them, NOP (1) is one byte, every other
    type is followed by a length byte and that many bytes (URLData is type 2; unknown types are
    skipped). A datagram that ends inside an option is refused.
    """
    end = len(data)
    i = offset
    url = b""
    while i < end:
        kind = data[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end:
            raise ClientError("truncated BEP 41 option (no length byte)")
        start = i + 2
        i = start + data[i + 1]
        if i > end:
            raise ClientError("truncated BEP 41 option (shorter than its length)")
        if kind == 2:
            url += data[start:i]
    return url


def parse_announce(data: bytes, v6: bool = False) -> AnnounceRequest:
    """An announce datagram (action 1) as a request; ``v6`` if it arrived over IPv6.

    The IP address field is handed on (as text, for the tracker to believe where it believes
    HTTP's ``ip=``) only from IPv4 senders: an IPv6 client reads 18-byte peers, so its answer
    must stay in its own family. ``num_want`` -1 (or any negative) means the default; ``key``
    is written as libtorrent writes it over HTTP (8 upper-case hex digits), so a peer that
    switches transports keeps its key. The passkey comes from the BEP 41 URL data, by the
    rules of an HTTP URL.
    """
    if len(data) < ANNOUNCE_SIZE:
        raise ClientError(f"announce must be at least {ANNOUNCE_SIZE} bytes, got {len(data)}")
    (
        _cid,
        _action,
        _transaction_id,
        info_hash,
        peer_id,
        downloaded,
        left,
        uploaded,
        event,
        ip,
        key,
        numwant,
        port,
    ) = _ANNOUNCE.unpack_from(data)
    if event > 3:
        raise ClientError("unknown event (expected 0 none, 1 completed, 2 started, 3 stopped)")
    if port == 0:
        raise ClientError("port must be between 1 and 65535")
    if downloaded < 0:
        raise ClientError("downloaded must not be negative")
    if left < 0:
        raise ClientError("left must not be negative")
    if uploaded < 0:
        raise ClientError("uploaded must not be negative")
    passkey = None
    if len(data) > ANNOUNCE_SIZE:
        url = url_data(data)
        if url and url != b"/announce":  # what most clients send: no passkey to look for
            passkey = target_passkey(url)
    return AnnounceRequest(
        info_hash,
        peer_id,
        port,
        uploaded,
        downloaded,
        left,
        EVENTS[event],
        True,
        False,
        None if numwant < 0 else numwant,
        b"%08X" % key if key else None,
        None,
        None if v6 or ip == _ZERO_IP else inet_ntop(AF_INET, ip).encode(),
        passkey,
    )


def parse_scrape(data: bytes) -> list[bytes]:
    """The info_hashes of a scrape datagram (action 2), in the order asked (repeats kept)."""
    size = len(data) - HEADER_SIZE
    if size <= 0:
        raise ClientError("scrape needs at least one info_hash")
    if size % 20:
        raise ClientError("scrape must be 16 bytes and 20 per info_hash")
    if size > 20 * MAX_SCRAPE_HASHES:
        raise ClientError(f"too many info_hash in one scrape (at most {MAX_SCRAPE_HASHES})")
    return [data[i : i + 20] for i in range(HEADER_SIZE, len(data), 20)]


# --- answers --------------------------------------------------------------------------------


def encode_connect(transaction_id: int, cid: bytes) -> bytes:
    return _CONNECTED.pack(CONNECT, transaction_id, cid)


def encode_announce(transaction_id: int, answer: Answer) -> bytes:
    """The announce answer: interval, leechers, seeders, then the compact peers as stored (6
    bytes each to IPv4 senders, 18 to IPv6 ones)."""
    return (
        _ANSWER.pack(ANNOUNCE, transaction_id, answer.interval, answer.incomplete, answer.complete)
        + answer.peers
    )


def encode_scrape(transaction_id: int, asked: list[bytes], rows: list[ScrapeRow]) -> bytes:
    """Seeders, completed, leechers for every hash ``asked``, in its order (a scrape answer has
    no keys, so each position must be there: hashes without a row get zeros)."""
    counts = {}
    for info_hash, complete, incomplete, downloaded in rows:
        counts[info_hash] = (complete, downloaded, incomplete)
    parts = [_HEADER.pack(SCRAPE, transaction_id)]
    for info_hash in asked:
        parts.append(_SCRAPED.pack(*counts.get(info_hash, _NO_ROW)))
    return b"".join(parts)


def encode_error(transaction_id: int, message: str) -> bytes:
    return _HEADER.pack(ERROR, transaction_id) + message.encode("utf-8")[:MAX_ERROR_MESSAGE]


def refuse_unproven(action: int, transaction_id: int, size: int) -> bytes | None:
    """The answer to a ``size``-byte request whose connection id is not valid: an error that
    tells the client to connect again, for what can be an announce or a scrape and only when
    it is no longer than the request; None (drop it) otherwise."""
    if action == ANNOUNCE or action == SCRAPE:
        answer = encode_error(transaction_id, EXPIRED)
        if len(answer) <= size:
            return answer
    return None
