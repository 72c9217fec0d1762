"""Hostile input for the WebSocket tracker, property-based.

Properties:
- ``codec.parse`` on any text either returns an announce or scrape whose fields hold the
  protocol's invariants, or raises ``MessageError``; nothing else ever escapes, and every
  failure it leads to is valid JSON.
- ``FrameReader`` reassembles any sequence of client frames, however the bytes are split, into
  exactly the messages sent; on arbitrary bytes it returns frames or raises ``FrameError``.
- The hub's message handler (a real tracker and memory store behind it), fed near-valid and
  garbage messages, never raises, answers only with JSON text frames, and a message answered
  with a failure changes no swarm.
"""

from __future__ import annotations

import itertools
import json
import os
import struct

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from johnlocke.stats import StatsService
from johnlocke.store.memory import MemoryStore
from johnlocke.tracker import Tracker
from johnlocke.websocket import codec, frames
from johnlocke.websocket.server import Connection, Hub

from .conftest import make_config

FAST = settings(max_examples=300, deadline=None)

HASHES = [bytes([i]) * 20 for i in range(3)]
LATIN = st.text(alphabet=st.characters(max_codepoint=255), min_size=20, max_size=20)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
    st.text(max_size=25),
)  # fmt: skip
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_VALUES = st.one_of(
    JSON,
    LATIN,
    st.sampled_from([h.decode("latin-1") for h in HASHES]),
    st.sampled_from(["started", "completed", "stopped", "paused", "", "update", "bogus"]),
    st.integers(-5, 10**20),
)
OFFER = st.fixed_dictionaries(
    {
        "offer_id": st.one_of(LATIN, JSON),
        "offer": st.one_of(st.just({"type": "offer", "sdp": "x"}), JSON),
    }
)


@st.composite
def near_valid(draw) -> str:
    """A WebTorrent message with some fields missing, mistyped or mangled."""
    doc = {
        "action": draw(st.sampled_from(["announce", "announce", "scrape", "other", None])),
        "info_hash": draw(st.sampled_from([h.decode("latin-1") for h in HASHES])),
        "peer_id": draw(LATIN),
    }
    for name in ("event", "left", "uploaded", "downloaded", "numwant", "to_peer_id", "offer_id"):
        if draw(st.booleans()):
            doc[name] = draw(FIELD_VALUES)
    if draw(st.booleans()):
        doc["offers"] = draw(st.one_of(st.lists(OFFER, max_size=6), JSON))
    if draw(st.integers(0, 4)) == 0:
        doc["answer"] = draw(st.one_of(st.just({"type": "answer", "sdp": "y"}), JSON))
    for name in list(doc):
        if draw(st.integers(0, 6)) == 0:
            doc[name] = draw(FIELD_VALUES)
    text = json.dumps(doc)
    if draw(st.integers(0, 10)) == 0:
        cut = draw(st.integers(0, len(text)))
        text = text[:cut]
    return text


MESSAGES = st.one_of(near_valid(), st.text(max_size=200), JSON.map(json.dumps))


@FAST
@given(MESSAGES, st.integers(0, 10))
def test_parse_returns_a_valid_message_or_a_message_error(text, max_offers):
    try:
        msg = codec.parse(text.encode("utf-8", "surrogatepass"), max_offers)
    except codec.MessageError as exc:
        doc = json.loads(codec.encode_failure(exc.reason, exc.action, exc.info_hash))
        assert doc["failure reason"] == exc.reason
        if exc.info_hash is not None:
            assert len(exc.info_hash) == 20
        return
    if isinstance(msg, codec.Scrape):
        assert all(len(h) == 20 for h in msg.info_hashes)
        return
    req = msg.request
    assert len(req.info_hash) == 20 and len(req.peer_id) == 20
    if msg.answer is not None:  # a relayed answer: no announce, no offers
        assert isinstance(json.loads(msg.answer), dict) and len(msg.to_peer_id) == 20
        assert msg.offers is None
        return
    assert min(req.uploaded, req.downloaded, req.left) >= 0
    assert req.numwant == len(msg.offers or ())
    assert len(msg.offers or ()) <= max_offers
    for offer_id, offer in msg.offers or ():
        assert len(offer_id) == 20 and isinstance(offer, dict)


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@FAST
@given(LATIN, LATIN, LATIN, st.dictionaries(st.text(max_size=8), JSON, max_size=4))
def test_a_relayed_offer_is_the_json_of_its_fields(info_hash, peer_id, offer_id, offer):
    # The offer message is written in pieces (a head shared by the offers of one announce,
    # then each offer): it must read back as the one object a client expects. The offer is
    # one as the parser hands it over (no infinity, no integer beyond 64 bits).
    try:
        offer = codec._loads(json.dumps(offer).encode())
    except ValueError:
        assume(False)
    head = codec.offer_head(info_hash, peer_id)
    doc = json.loads(codec.encode_offer_after(head, offer_id, offer).decode("utf-8"))
    assert doc == {
        "action": "announce",
        "info_hash": info_hash,
        "peer_id": peer_id,
        "offer_id": offer_id,
        "offer": offer,
    }


@FAST
@given(
    st.lists(st.tuples(st.binary(max_size=300), st.integers(1, 3)), min_size=1, max_size=6),
    st.lists(st.integers(1, 200), min_size=1, max_size=30),
)
def test_frames_reassemble_however_the_bytes_are_split(messages, cuts):
    wire = b""
    for payload, parts in messages:
        size = -(-len(payload) // parts) or 1
        chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for i, chunk in enumerate(chunks):
            wire += client_frame(frames.OP_TEXT if i == 0 else 0, chunk, i == len(chunks) - 1)
        wire += client_frame(frames.OP_PING, b"p")
    reader = frames.FrameReader(1000)
    got = []
    pos = 0
    for cut in itertools.cycle(cuts):
        if pos >= len(wire):
            break
        got += reader.feed(wire[pos : pos + cut])
        pos += cut
    expected = []
    for payload, _ in messages:
        expected += [(frames.OP_TEXT, payload), (frames.OP_PING, b"p")]
    assert got == expected


@FAST
@given(st.binary(max_size=400))
def test_frames_on_garbage_return_frames_or_raise_frame_error(data):
    reader = frames.FrameReader(256)
    try:
        for opcode, payload in reader.feed(data):
            assert opcode in (1, 2, 8, 9, 10) and len(payload) <= 256
    except frames.FrameError as exc:
        assert 1002 <= exc.code <= 1009


class _Transport:
    """Where a Connection writes: kept for the test to read."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed


def _texts(written: list[bytes]) -> list[str]:
    """Decode the server's unmasked frames."""
    out = []
    for frame in written:
        opcode = frame[0] & 0x0F
        n = frame[1] & 0x7F
        head = 2 if n < 126 else 4 if n == 126 else 10
        if opcode == frames.OP_TEXT:
            out.append(frame[head:].decode())
        else:
            assert opcode == frames.OP_CLOSE
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(MESSAGES, min_size=1, max_size=8))
def test_the_handler_answers_json_and_failures_change_nothing(messages):
    import asyncio

    async def run() -> None:
        config = make_config(webtorrent={"message_burst": 1000})
        store = MemoryStore()
        tracker = Tracker(config, store)
        hub = Hub(tracker, config, StatsService(store, config))
        conns = []
        for i in range(2):
            transport = _Transport()
            conn = Connection(
                hub, transport, hub.relay.tag + bytes([0, 0, 0, i]), b"\x7f\0\0\1", None, None
            )
            hub.conns[conn.endpoint] = conn
            conns.append((conn, transport))
        for n, text in enumerate(messages):
            conn, transport = conns[n % 2]
            before = await store.scrape(HASHES)
            sent = len(transport.written)
            await hub.handle(conn, text.encode("utf-8", "surrogatepass"))
            hub.flush()
            replies = _texts(transport.written[sent:])
            for reply in replies:
                doc = json.loads(reply)
                assert isinstance(doc, dict)
                if "failure reason" in doc:
                    assert doc["failure reason"] != "internal tracker error"
                    assert await store.scrape(HASHES) == before
        for conn, _ in conns:
            hub.forget(conn)
        # Both sockets closed: every peer they announced has left.
        assert [row[:3] for row in await store.scrape(HASHES)] == [(h, 0, 0) for h in HASHES]

    asyncio.run(run())
