"""Hostile datagrams, property-based: the UDP codec and the datagram handler.

Properties:
- On any bytes, the codec's readers return a request that satisfies the protocol's invariants or
  raise ``Drop`` / ``ClientError``; nothing else ever escapes.
- Every answer the encoders build reads back (with ``struct``, by hand) as the values given.
- The handler (``UdpFrontend.datagram_received`` on a real tracker and memory store), fed
  valid, near-valid and garbage datagrams from proven and unproven senders, never fails
  internally, answers at most once and with the request's transaction id, never sends an
  unproven sender more bytes than it sent, and changes no swarm when it refuses or drops.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from johnlocke.bittorrent import Answer
from johnlocke.errors import ClientError
from johnlocke.stats import INTERNAL_REASON, Stats
from johnlocke.store.memory import MemoryStore
from johnlocke.tracker import Tracker
from johnlocke.udp import codec
from johnlocke.udp.server import UdpFrontend

from .conftest import make_config
from .test_fuzz import check_announce
from .udp_client import MAGIC, announce_datagram, scrape_datagram

FAST = settings(max_examples=400, deadline=None)
SECRET = b"f" * 32
LIFETIME = 120


def read_or_refuse(fn, *args):
    try:
        return fn(*args)
    except codec.Drop as drop:
        assert drop.reason in ("too short", "too long", "bad protocol id")
    except ClientError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        assert len(codec.encode_error(1, exc.reason)) <= 8 + codec.MAX_ERROR_MESSAGE
    return None


# --- datagrams ----------------------------------------------------------------------------

OPTIONS = st.one_of(
    st.just(b""),
    st.just(b"\x02\x09/announce"),
    st.binary(max_size=40),
    st.lists(
        st.tuples(st.integers(0, 4), st.binary(max_size=20)).map(
            lambda kv: bytes([kv[0]]) + (bytes([len(kv[1])]) + kv[1] if kv[0] > 1 else b"")
        ),
        max_size=5,
    ).map(b"".join),
)


@st.composite
def announce(draw, cid: bytes | None = None) -> bytes:
    return announce_datagram(
        cid if cid is not None else draw(st.binary(min_size=8, max_size=8)),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.sampled_from([b"A" * 20, b"B" * 20, b"C" * 20])),
        draw(st.sampled_from([b"-FZ0001-" + bytes([i]) * 12 for i in range(4)])),
        downloaded=draw(st.integers(-(2**63), 2**63 - 1)),
        left=draw(st.sampled_from([0, 1, 1000, -1])),
        uploaded=draw(st.integers(0, 2**63 - 1)),
        event=draw(st.sampled_from([0, 1, 2, 3, 4, 2**32 - 1])),
        ip=draw(st.sampled_from([bytes(4), bytes([10, 0, 0, 1])])),
        key=draw(st.sampled_from([0, 1, 2])),
        numwant=draw(st.integers(-(2**31), 2**31 - 1)),
        port=draw(st.integers(0, 65535)),
        options=draw(OPTIONS),
    )


@st.composite
def mutated(draw, base: st.SearchStrategy[bytes]) -> bytes:
    """A datagram cut short, with bytes flipped, or with bytes added."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["cut", "flip", "append"]))
        if kind == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        else:
            data += draw(st.binary(max_size=30))
    return bytes(data)


# --- the codec ----------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=2200))
def test_the_readers_on_any_bytes(data):
    header = read_or_refuse(codec.read_header, data)
    if header is not None:
        assert 0 <= header[0] < 2**32 and 0 <= header[1] < 2**32
    req = read_or_refuse(codec.parse_announce, data)
    if req is not None:
        check_announce(req)
    hashes = read_or_refuse(codec.parse_scrape, data)
    if hashes is not None:
        assert 1 <= len(hashes) <= codec.MAX_SCRAPE_HASHES
        assert all(len(h) == 20 for h in hashes)
    read_or_refuse(codec.url_data, data, 0)


@FAST
@given(mutated(announce()), st.booleans())
def test_parse_announce_on_near_valid_datagrams(data, v6):
    req = read_or_refuse(codec.parse_announce, data, v6)
    if req is not None:
        check_announce(req)
        assert req.event in (0, 1, 2, 3) and req.compact
        # The IP field reaches the tracker only from IPv4 senders, and then as an address.
        assert req.ip is None or (not v6 and socket.inet_aton(req.ip.decode()) != bytes(4))
        assert req.key is None or (len(req.key) == 8 and int(req.key, 16) > 0)


@FAST
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 2**31),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.booleans(),
    st.integers(0, 40),
)
def test_announce_answers_read_back(txid, interval, complete, incomplete, v6, n):
    size = 18 if v6 else 6
    peers = bytes(range(256))[: size * n] if size * n <= 256 else bytes(size * n)
    out = codec.encode_announce(txid, Answer(interval, 1, complete, incomplete, 0, peers, v6, b""))
    assert struct.unpack_from(">IIIII", out) == (1, txid, interval, incomplete, complete)
    assert out[20:] == peers


@FAST
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.binary(min_size=20, max_size=20), min_size=1, max_size=74),
    st.data(),
)
def test_scrape_answers_read_back_in_order(txid, asked, data):
    known = data.draw(st.sets(st.sampled_from(asked)))
    rows = [(h, *data.draw(st.tuples(*[st.integers(0, 2**32 - 1)] * 3))) for h in known]
    counts = {h: (c, d, i) for h, c, i, d in rows}
    out = codec.encode_scrape(txid, asked, rows)
    assert len(out) == 8 + 12 * len(asked)
    for k, h in enumerate(asked):
        assert struct.unpack_from(">III", out, 8 + 12 * k) == counts.get(h, (0, 0, 0))


@FAST
@given(st.integers(0, 2**32 - 1), st.text(max_size=300))
def test_error_answers_read_back(txid, message):
    out = codec.encode_error(txid, message)
    assert struct.unpack_from(">II", out) == (3, txid)
    assert out[8:] == message.encode("utf-8")[: codec.MAX_ERROR_MESSAGE]


# --- the datagram handler -----------------------------------------------------------------


class Handler:
    """A ``UdpFrontend`` on a real tracker and memory store; answers are captured."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.tracker = Tracker(make_config(announce={"allow_ip_param": True}), self.store)
        self.stats = Stats()
        self.sent: list[tuple[bytes, object]] = []
        self.frontend = UdpFrontend(
            self.tracker,
            self.stats,
            SECRET,
            LIFETIME,
            socket.AF_INET,
            lambda body, addr: self.sent.append((body, addr)),
        )

    def cid(self, addr: tuple[str, int]) -> bytes:
        window = codec.time_window(time.time(), LIFETIME)
        return codec.connection_id(SECRET, socket.inet_aton(addr[0]), window)

    def state(self) -> dict:
        """Every swarm's records (the store's own read-out, as the HTTP fuzzing uses)."""
        return {r.info_hash: (r.downloaded, r.addrs, r.meta) for r in self.store.records()}


HANDLER = Handler()
SENDERS = [("127.0.0.1", 40000), ("127.0.0.2", 40001), ("10.1.2.3", 6881)]


@st.composite
def traffic(draw) -> tuple[bytes, tuple[str, int], bool]:
    """(datagram, sender, whether it carries the sender's own valid connection id)."""
    addr = draw(st.sampled_from(SENDERS))
    proven = draw(st.booleans())
    cid = HANDLER.cid(addr) if proven else draw(st.binary(min_size=8, max_size=8))
    kind = draw(st.sampled_from(["announce", "near", "scrape", "connect", "garbage"]))
    if kind == "announce":
        data = draw(announce(cid))
    elif kind == "near":
        data = cid + draw(mutated(announce(cid)))[8:]
    elif kind == "scrape":
        hashes = draw(st.lists(st.sampled_from([b"A" * 20, b"Z" * 20]), max_size=80))
        data = scrape_datagram(cid, draw(st.integers(0, 2**32 - 1)), *hashes)
        if draw(st.booleans()):
            data = draw(mutated(st.just(data)))
    elif kind == "connect":
        data = draw(mutated(st.just(MAGIC + struct.pack(">II", 0, 7))))
    else:
        data = draw(st.binary(max_size=200))
    return data, addr, proven and data[:8] == cid


@settings(max_examples=1500, deadline=None)
@given(traffic())
def test_the_handler_under_random_traffic(item):
    data, addr, proven = item
    h = HANDLER
    before = h.state()
    h.sent.clear()
    h.frontend.datagram_received(data, addr)
    assert INTERNAL_REASON not in h.stats.udp.failures  # no handler path failed
    assert len(h.sent) <= 1
    body = h.sent[0][0] if h.sent else None
    if body is not None:
        assert h.sent[0][1] == addr and body[4:8] == data[12:16]
        action = struct.unpack_from(">I", body)[0]
        assert action in (0, 1, 2, 3)
        if action == 0:
            assert len(body) == 16 and body[8:] == h.cid(addr)
        elif action == 1:
            assert proven and (len(body) - 20) % 6 == 0
        elif action == 2:
            assert proven and (len(body) - 8) % 12 == 0
        if not proven:
            assert len(body) <= len(data)  # no amplification
    if body is None or struct.unpack_from(">I", body)[0] in (0, 2, 3):
        assert h.state() == before  # dropped, connected, scraped or refused: nothing changed


def test_the_handler_counts_after_all_that():
    # The traffic above reached every path: announces applied, refusals, drops.
    udp = HANDLER.stats.udp
    assert sum(udp.events) and udp.failures and udp.bad and udp.connects
    # The store's running totals agree with the records it holds after it.
    per_table = [0] * 6
    for record in HANDLER.store.records():
        for t, meta in enumerate(record.meta):
            per_table[t] += len(meta) // 28
    stats = asyncio.run(HANDLER.store.stats())
    assert list(stats[1:]) == per_table
