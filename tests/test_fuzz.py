"""Hostile input, property-based: parsers, encoders, and the HTTP app under random traffic.

Properties:
- ``parse_announce``/``parse_scrape`` on any bytes either return a request that satisfies the
  protocol's invariants or raise ``ClientError``; nothing else ever escapes.
- Every answer the encoders build is canonical bencode (decodes, re-encodes to the same bytes)
  and carries the values it was given.
- The HTTP app, driven by random valid, near-valid and garbage requests, never answers 5xx,
  always answers /announce and /scrape with decodable bencode, and a refused announce changes no
  swarm.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from ipaddress import IPv4Address, IPv6Address
from urllib.parse import quote_from_bytes

import bencodepy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from johnlocke.bittorrent import AnnounceRequest
from johnlocke.errors import ClientError
from johnlocke.http import codec as protocol
from johnlocke.http.server import build_app, listening, start
from johnlocke.store.memory import MemoryStore
from johnlocke.tracker import Tracker

from .conftest import make_config

FAST = settings(max_examples=300, deadline=None)


# --- strategies -----------------------------------------------------------------------------

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@st.composite
def escaped(draw, raw: bytes | None = None) -> bytes:
    """``raw`` percent-encoded the many ways clients do it (upper/lower case, some bytes raw)."""
    if raw is None:
        raw = draw(st.binary(max_size=24))
    upper = draw(st.booleans())
    keep_raw = draw(st.booleans())
    out = []
    for b in raw:
        if keep_raw and b in _UNRESERVED:
            out.append(bytes([b]))
        else:
            out.append((b"%%%02X" if upper else b"%%%02x") % b)
    return b"".join(out)


BAD_ESCAPES = st.sampled_from([b"%", b"%G0", b"%1", b"%%", b"%zz", b"abc%", b"%%41", b"%4"])
NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30).map(lambda n: str(n).encode()),
    st.sampled_from(
        [b"", b"+5", b" 5", b"5_0", b"0x10", b"1e3", "٣".encode(), b"99999999999999999999999"]
    ),
)
ANY_VALUE = st.one_of(
    escaped(),
    BAD_ESCAPES,
    NUMBERS,
    st.binary(max_size=30),
    st.text(max_size=20).map(lambda t: t.encode("utf-8")),
    st.integers(0, 30).flatmap(lambda n: escaped(bytes(n))),  # wrong-length hashes
)
NAMES = st.sampled_from(
    [
        b"info_hash",
        b"peer_id",
        b"port",
        b"left",
        b"uploaded",
        b"downloaded",
        b"numwant",
        b"event",
        b"compact",
        b"no_peer_id",
        b"key",
        b"trackerid",
        b"ip",
        b"ipv4",
        b"ipv6",
        b"passkey",
        b"info%5Fhash",
        b"%",
        b"",
        b"x",
    ]
)


@st.composite
def near_valid_announce(draw) -> bytes:
    """A valid announce query with a few parameters broken, dropped, repeated or added."""
    params = {
        b"info_hash": draw(escaped(draw(st.binary(min_size=20, max_size=20)))),
        b"peer_id": draw(escaped(draw(st.binary(min_size=20, max_size=20)))),
        b"port": str(draw(st.integers(1, 65535))).encode(),
        b"uploaded": str(draw(st.integers(0, 2**40))).encode(),
        b"downloaded": str(draw(st.integers(0, 2**40))).encode(),
        b"left": str(draw(st.integers(0, 2**40))).encode(),
        b"event": draw(st.sampled_from([b"started", b"completed", b"stopped", b"paused", b""])),
        b"compact": draw(st.sampled_from([b"0", b"1"])),
        b"numwant": str(draw(st.integers(0, 500))).encode(),
        b"key": draw(escaped()),
    }
    pairs = list(params.items())
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(pairs) - 1))
        action = draw(st.sampled_from(["break", "drop", "repeat", "add"]))
        if action == "break":
            pairs[i] = (pairs[i][0], draw(ANY_VALUE))
        elif action == "drop":
            pairs.pop(i)
            if not pairs:
                break
        elif action == "repeat":
            pairs.append((pairs[i][0], draw(ANY_VALUE)))
        else:
            pairs.insert(i, (draw(NAMES), draw(ANY_VALUE)))
    pairs = draw(st.permutations(pairs))
    sep = draw(st.sampled_from([b"&", b"&&"]))
    return sep.join(name + b"=" + value for name, value in pairs)


def check_announce(req: AnnounceRequest) -> None:
    assert isinstance(req.info_hash, bytes) and len(req.info_hash) == 20
    assert isinstance(req.peer_id, bytes) and len(req.peer_id) == 20
    assert 0 < req.port < 65536
    for n in (req.uploaded, req.downloaded, req.left):
        assert isinstance(n, int) and 0 <= n < 10**20
    assert req.numwant is None or 0 <= req.numwant < 10**20
    assert req.event in (0, 1, 2, 3, 4)
    for value in (req.key, req.trackerid, req.ip, req.passkey):
        assert value is None or isinstance(value, bytes)


def parse_or_refuse(fn, query: bytes):
    try:
        return fn(query)
    except ClientError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        assert bencodepy.decode(protocol.encode_failure(exc.reason))[b"failure reason"]
        return None


# --- parsers --------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=600))
def test_parse_announce_on_any_bytes(query):
    req = parse_or_refuse(protocol.parse_announce, query)
    if req is not None:
        check_announce(req)


@FAST
@given(near_valid_announce())
def test_parse_announce_on_near_valid_queries(query):
    req = parse_or_refuse(protocol.parse_announce, query)
    if req is not None:
        check_announce(req)


@FAST
@given(st.binary(max_size=600))
def test_parse_scrape_on_any_bytes(query):
    got = parse_or_refuse(protocol.parse_scrape, query)
    if got is not None:
        hashes, passkey = got
        assert all(isinstance(h, bytes) and len(h) == 20 for h in hashes)
        assert passkey is None or isinstance(passkey, bytes)


@FAST
@given(
    st.lists(st.tuples(st.sampled_from([b"info_hash", b"passkey", b"x"]), ANY_VALUE), max_size=8)
)
def test_parse_scrape_on_near_valid_queries(pairs):
    query = b"&".join(name + b"=" + value for name, value in pairs)
    got = parse_or_refuse(protocol.parse_scrape, query)
    if got is not None:
        assert all(len(h) == 20 for h in got[0])


@settings(max_examples=20, deadline=None)
@given(
    st.integers(protocol.MAX_QUERY_LENGTH - 5, protocol.MAX_QUERY_LENGTH * 3), st.binary(max_size=8)
)
def test_oversized_queries_are_refused_cheaply(length, filler):
    query = (b"info_hash=" + (filler or b"a") * length)[: length + 10]
    for fn in (protocol.parse_announce, protocol.parse_scrape):
        parse_or_refuse(fn, query)
    if len(query) > protocol.MAX_QUERY_LENGTH:
        with pytest.raises(ClientError, match="too long"):
            protocol.parse_announce(query)


# --- encoders -------------------------------------------------------------------------------

COUNT = st.integers(0, 2**63)


def canonical(body: bytes) -> dict:
    decoded = bencodepy.decode(body)
    assert bencodepy.encode(decoded) == body  # sorted keys, no leading zeros: canonical
    return decoded


@FAST
@given(
    st.integers(1, 10**6),
    st.integers(0, 10**6),
    COUNT,
    COUNT,
    COUNT,
    st.binary(max_size=600).map(lambda b: b[: len(b) - len(b) % 6]),
    st.binary(max_size=600).map(lambda b: b[: len(b) - len(b) % 18]),
    st.sampled_from([4, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.none() | st.binary(max_size=40),
    st.none() | st.binary(max_size=200),
)
def test_announce_answers_decode(
    interval, min_interval, complete, incomplete, downloaded, peers, peers6, ip, tid, warning
):
    extra = protocol.announce_extra(tid, warning)
    body = protocol.encode_announce(
        interval, min_interval, complete, incomplete, downloaded,
        protocol.bstr(peers), protocol.bstr(peers6), ip, extra,
    )  # fmt: skip
    d = canonical(body)
    for v6, blob in ((False, peers), (True, peers6)):
        fast = canonical(
            protocol.encode_compact_announce(
                interval, min_interval, complete, incomplete, downloaded, blob, v6, ip, extra
            )
        )
        assert fast[b"peers6" if v6 else b"peers"] == blob
        assert fast[b"peers" if v6 else b"peers6"] == b""
    assert (d[b"interval"], d[b"min interval"]) == (interval, min_interval)
    assert (d[b"complete"], d[b"incomplete"], d[b"downloaded"]) == (
        complete,
        incomplete,
        downloaded,
    )
    assert (d[b"peers"], d[b"peers6"], d[b"external ip"]) == (peers, peers6, ip)
    assert d.get(b"tracker id") == tid and d.get(b"warning message") == warning


@FAST
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.integers(0, 2**32 - 1).map(lambda n: str(IPv4Address(n))),
                st.integers(0, 2**128 - 1).map(lambda n: str(IPv6Address(n))),
            ),
            st.integers(1, 65535),
            st.binary(min_size=20, max_size=20),
        ),
        max_size=30,
    ),
    st.booleans(),
)
def test_dict_peer_lists_decode(peers, no_peer_id):
    body = protocol.encode_announce(
        1, 1, 0, 0, 0, protocol.dict_peers_value(peers, no_peer_id), b"0:", bytes(4)
    )
    got = canonical(body)[b"peers"]
    assert [(p[b"ip"].decode(), p[b"port"]) for p in got] == [(ip, port) for ip, port, _ in peers]
    assert [p.get(b"peer id") for p in got] == [None if no_peer_id else pid for *_, pid in peers]


@FAST
@given(
    st.dictionaries(
        st.binary(min_size=20, max_size=20), st.tuples(COUNT, COUNT, COUNT), max_size=30
    )
)
def test_scrape_answers_decode(files):
    body = protocol.encode_scrape([(h, *counts) for h, counts in files.items()])
    got = canonical(body)[b"files"]
    assert {
        h: (f[b"complete"], f[b"incomplete"], f[b"downloaded"]) for h, f in got.items()
    } == files


@FAST
@given(st.text(max_size=300))
def test_failure_answers_decode(reason):
    assert canonical(protocol.encode_failure(reason)) == {b"failure reason": reason.encode()}


# --- the HTTP app under random traffic ------------------------------------------------------


class LiveTracker:
    """The tracker app on a real listener, on its own event loop in a thread."""

    def __init__(self) -> None:
        self.config = make_config(
            http={"host": "127.0.0.1", "port": 0},
            announce={"allow_ip_param": True},
            scrape={"full_scrape": True},
        )
        self.store = MemoryStore()
        self.tracker = Tracker(self.config, self.store)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = self.call(start(build_app(self.tracker, self.config), self.config))
        self.port = listening(self.runner)[0][1]

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def state(self) -> dict:
        """Every swarm's columns, read on the loop's thread (nothing runs concurrently)."""

        async def read():
            return {r.info_hash: (r.downloaded, r.addrs, r.meta) for r in self.store.records()}

        return self.call(read())

    def close(self) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live():
    tracker = LiveTracker()
    yield tracker
    tracker.close()


SWARMS = [bytes([i]) * 20 for i in range(1, 4)]
PEERS = [b"-FZ0001-" + bytes([i]) * 12 for i in range(1, 6)]


def valid_announce_query(draw) -> bytes:
    parts = [
        b"info_hash=" + quote_from_bytes(draw(st.sampled_from(SWARMS))).encode(),
        b"peer_id=" + quote_from_bytes(draw(st.sampled_from(PEERS))).encode(),
        b"port=%d" % draw(st.integers(1, 65535)),
        b"left=%d" % draw(st.sampled_from([0, 1, 1000])),
    ]
    event = draw(st.sampled_from([None, b"started", b"completed", b"stopped"]))
    if event:
        parts.append(b"event=" + event)
    if draw(st.booleans()):
        parts.append(b"key=" + draw(st.sampled_from([b"k1", b"k2"])))
    if draw(st.booleans()):
        parts.append(b"ip=" + draw(st.sampled_from([b"10.0.0.1", b"10.0.0.2", b"2001:db8::1"])))
    if draw(st.booleans()):
        parts.append(b"compact=0")
    return b"&".join(parts)


def escape_target(query: bytes) -> str:
    """Bytes that are not legal in a request target are escaped; the rest goes as it is."""
    return "".join(chr(b) if 0x21 <= b < 0x7F and b not in b"#" else f"%{b:02X}" for b in query)


@settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
class HttpTraffic(RuleBasedStateMachine):
    """Random announces (valid, near-valid, garbage) and scrapes against one live tracker."""

    live: LiveTracker

    def __init__(self) -> None:
        super().__init__()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.live.port, timeout=10)
        self.statuses: list[int] = []

    def get(self, target: str) -> tuple[int, bytes]:
        try:
            self.conn.request("GET", target)
            resp = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            # The server may close after refusing a request line; reconnect and retry once.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.live.port, timeout=10)
            self.conn.request("GET", target)
            resp = self.conn.getresponse()
        body = resp.read()
        self.statuses.append(resp.status)
        if resp.will_close:
            self.conn.close()
        return resp.status, body

    def announce(self, query: bytes) -> dict | None:
        before = self.live.state()
        status, body = self.get("/announce?" + escape_target(query))
        if status != 200:
            assert status < 500 and status != 200
            return None
        answer = bencodepy.decode(body)
        if b"failure reason" in answer:
            assert self.live.state() == before, answer  # refused: no swarm changed
        return answer

    @rule(data=st.data())
    def valid_announce(self, data):
        answer = self.announce(valid_announce_query(data.draw))
        assert answer is not None
        if b"failure reason" in answer:
            # The only refusal a well-formed announce can get here: another IP without the key.
            assert b"peer_id is in use" in answer[b"failure reason"]
        else:
            assert answer[b"complete"] + answer[b"incomplete"] >= 0

    @rule(query=near_valid_announce())
    def near_valid(self, query):
        self.announce(query)

    @rule(query=st.binary(max_size=300))
    def garbage(self, query):
        self.announce(query)

    @rule(hashes=st.lists(st.sampled_from(SWARMS) | st.binary(max_size=22), max_size=4))
    def scrape(self, hashes):
        query = "&".join("info_hash=" + quote_from_bytes(h) for h in hashes)
        status, body = self.get("/scrape?" + query)
        assert status == 200
        answer = bencodepy.decode(body)
        if b"failure reason" not in answer and hashes:  # none: a full scrape (enabled here)
            assert set(answer[b"files"]) == set(hashes)

    @rule(raw=st.binary(min_size=1, max_size=200))
    def raw_garbage_request(self, raw):
        with socket.create_connection(("127.0.0.1", self.live.port), timeout=10) as s:
            s.sendall(raw + b"\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            head = b""
            try:
                while b"\r\n" not in head:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    head += chunk
            except (ConnectionResetError, TimeoutError):
                pass
        if head:
            status = int(head.split(b" ", 2)[1])
            self.statuses.append(status)

    @invariant()
    def never_a_server_error(self):
        assert all(s < 500 for s in self.statuses), self.statuses

    def teardown(self) -> None:
        self.conn.close()


def test_http_app_under_random_traffic(live):
    HttpTraffic.live = live
    HttpTraffic.TestCase().runTest()
    # Counts and the peers in the store agree after all that.
    records = list(live.store.records())
    per_table = [sum(len(r.meta[t]) // 28 for r in records) for t in range(6)]
    assert tuple(live.call(live.store.stats())) == (len(records), *per_table)
