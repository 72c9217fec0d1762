"""The UDP codec (BEP 15, BEP 41): datagram bytes in, requests out; answers to bytes. No sockets.

Datagrams are built with ``tests/udp_client.py``, which lays them out by hand.
"""

from __future__ import annotations

import hashlib
import json
import struct

import pytest

from johnlocke.bittorrent import (
    EVENT_COMPLETED,
    EVENT_NONE,
    EVENT_STARTED,
    EVENT_STOPPED,
    Answer,
)
from johnlocke.errors import ClientError
from johnlocke.udp import codec

from .test_protocol import FIXTURES
from .udp_client import MAGIC, announce_datagram, scrape_datagram, url_option

CID = bytes.fromhex("0123456789abcdef")
IH = bytes(range(20))
PID = b"-TR3000-abcdefghijkl"
SECRET = b"s" * 32
IP4 = bytes([127, 0, 0, 1])
IP6 = bytes(15) + b"\x01"


def datagram(**fields: object) -> bytes:
    return announce_datagram(CID, 77, IH, PID, **fields)  # type: ignore[arg-type]


# --- triage -----------------------------------------------------------------------------------


def test_a_connect_is_its_action_and_transaction_id():
    assert codec.read_header(MAGIC + struct.pack(">II", 0, 0xDEADBEEF)) == (0, 0xDEADBEEF)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "too short"),
        (MAGIC + b"\0\0\0\0\0\0\0", "too short"),  # 15 bytes: no whole transaction id
        (b"\0" * 8 + struct.pack(">II", 0, 1), "bad protocol id"),
        (b"\x00\x00\x04\x17\x27\x10\x19\x81" + struct.pack(">II", 0, 1), "bad protocol id"),
        (datagram() + b"\0" * (codec.MAX_DATAGRAM - 97), "too long"),
    ],
)
def test_what_cannot_be_a_request_is_dropped_with_a_reason(data, reason):
    with pytest.raises(codec.Drop) as info:
        codec.read_header(data)
    assert info.value.reason == reason


def test_other_actions_are_read_for_the_caller_to_check_the_connection_id():
    assert codec.read_header(datagram()) == (1, 77)
    assert codec.read_header(CID + struct.pack(">II", 2, 5) + IH) == (2, 5)
    assert codec.read_header(CID + struct.pack(">II", 9, 5)) == (9, 5)


# --- announce fields --------------------------------------------------------------------------


def test_every_announce_field_is_read():
    req = codec.parse_announce(
        datagram(downloaded=5, left=6, uploaded=7, event=2, key=0xABCD12, numwant=30, port=51413)
    )
    assert req.info_hash == IH and req.peer_id == PID
    assert (req.downloaded, req.left, req.uploaded) == (5, 6, 7)
    assert req.event == EVENT_STARTED
    assert req.key == b"00ABCD12"  # as libtorrent writes its key over HTTP
    assert req.numwant == 30 and req.port == 51413
    assert req.compact is True and req.ip is None and req.passkey is None


@pytest.mark.parametrize(
    "udp,event",
    [(0, EVENT_NONE), (1, EVENT_COMPLETED), (2, EVENT_STARTED), (3, EVENT_STOPPED)],
)
def test_udp_event_numbers_map_to_the_trackers(udp, event):
    assert codec.parse_announce(datagram(event=udp)).event == event
    assert codec.UDP_EVENTS[event] == udp


@pytest.mark.parametrize("numwant,expected", [(-1, None), (-7, None), (0, 0), (50, 50), (500, 500)])
def test_num_want_minus_one_means_the_default(numwant, expected):
    assert codec.parse_announce(datagram(numwant=numwant)).numwant == expected


def test_a_zero_key_is_no_key():
    assert codec.parse_announce(datagram(key=0)).key is None


def test_the_ip_field_is_passed_on_as_text_from_ipv4_senders_only():
    assert codec.parse_announce(datagram(ip=bytes([10, 1, 2, 3]))).ip == b"10.1.2.3"
    assert codec.parse_announce(datagram(ip=b"\0\0\0\0")).ip is None
    # An IPv6 client reads 18-byte peers: its answer must stay in its own family.
    assert codec.parse_announce(datagram(ip=bytes([10, 1, 2, 3])), v6=True).ip is None


@pytest.mark.parametrize(
    "fields,reason",
    [
        ({"event": 4}, "unknown event (expected 0 none, 1 completed, 2 started, 3 stopped)"),
        ({"event": 0xFFFFFFFF}, "unknown event"),
        ({"port": 0}, "port must be between 1 and 65535"),
        ({"downloaded": -1}, "downloaded must not be negative"),
        ({"left": -(2**63)}, "left must not be negative"),
        ({"uploaded": -5}, "uploaded must not be negative"),
    ],
)
def test_bad_announce_fields_are_refused_with_the_http_reason(fields, reason):
    with pytest.raises(ClientError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        codec.parse_announce(datagram(**fields))


@pytest.mark.parametrize("size", [16, 20, 97])
def test_a_short_announce_is_refused(size):
    with pytest.raises(ClientError, match=f"announce must be at least 98 bytes, got {size}"):
        codec.parse_announce(datagram()[:size])


# --- BEP 41 options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options,url",
    [
        (b"", b""),
        (b"\x02\x09/announce", b"/announce"),  # libtorrent, qBittorrent
        (b"\x00\x00", b""),  # aria2: EndOfOptions (and a stray zero)
        (b"\x01\x01\x02\x09/announce", b"/announce"),  # NOPs first
        (b"\x02\x04/abc\x02\x09/announce", b"/abc/announce"),  # URLData is concatenated
        (b"\x02\x09/announce\x00\x02\x03xyz", b"/announce"),  # nothing after EndOfOptions
        (b"\x07\x03abc\x02\x09/announce", b"/announce"),  # an unknown option is skipped
        (b"\x02\x00", b""),
    ],
)
def test_url_data_is_read_from_the_options(options, url):
    assert codec.url_data(datagram(options=options)) == url


@pytest.mark.parametrize(
    "options",
    [b"\x02", b"\x02\x09/annou", b"\x01\x02\x05ab", b"\x07", b"\x07\x09ab"],
)
def test_truncated_options_are_refused(options):
    with pytest.raises(ClientError, match="truncated BEP 41 option"):
        codec.parse_announce(datagram(options=options))


@pytest.mark.parametrize(
    "url,passkey",
    [
        (b"/announce", None),
        (b"/0123456789abcdef/announce", b"0123456789abcdef"),
        (b"/announce/0123456789abcdef", b"0123456789abcdef"),
        (b"/announce?passkey=0123456789abcdef", b"0123456789abcdef"),
        (b"/announce?x=1&passkey=abc&y=2", b"abc"),
        (b"/ab%63/announce", b"abc"),  # percent-encoded, as in an HTTP path
        (b"/pathkey/announce?passkey=querykey", b"pathkey"),  # the path wins
        (b"/tracker/x/y/announce", None),  # not a tracker path: no passkey
        (b"/scrape/abc", b"abc"),  # the scrape URL a client derived still names the key
    ],
)
def test_the_passkey_comes_from_the_url_data_by_the_http_rules(url, passkey):
    assert codec.parse_announce(datagram(options=url_option(url))).passkey == passkey


def test_url_data_longer_than_one_option_is_joined():
    url = b"/announce?passkey=" + b"k" * 300
    assert codec.parse_announce(datagram(options=url_option(url))).passkey == b"k" * 300


# --- scrape -----------------------------------------------------------------------------------


def scrape(*hashes: bytes) -> bytes:
    return scrape_datagram(CID, 9, *hashes)


def test_a_scrape_lists_its_hashes_in_order_with_repeats():
    hashes = [bytes([i]) * 20 for i in (3, 1, 3, 2)]
    assert codec.parse_scrape(scrape(*hashes)) == hashes


def test_a_scrape_may_ask_for_74_hashes():
    hashes = [i.to_bytes(20, "big") for i in range(74)]
    assert codec.parse_scrape(scrape(*hashes)) == hashes


@pytest.mark.parametrize(
    "data,reason",
    [
        (scrape(), "scrape needs at least one info_hash"),
        (scrape(IH)[:-1], "scrape must be 16 bytes and 20 per info_hash"),
        (scrape(IH) + b"x", "scrape must be 16 bytes and 20 per info_hash"),
        (scrape(*[IH] * 75), r"too many info_hash in one scrape \(at most 74\)"),
    ],
)
def test_bad_scrapes_are_refused(data, reason):
    with pytest.raises(ClientError, match=reason):
        codec.parse_scrape(data)


# --- answers ----------------------------------------------------------------------------------


def test_the_connect_answer_is_16_bytes():
    assert codec.encode_connect(5, CID) == struct.pack(">II", 0, 5) + CID


@pytest.mark.parametrize("size,v6", [(6, False), (18, True)])
def test_the_announce_answer_carries_the_compact_peers_as_stored(size, v6):
    peers = bytes(range(size)) * 3
    answer = Answer(1800, 900, 7, 9, 4, peers, v6, IP4)
    out = codec.encode_announce(42, answer)
    assert struct.unpack_from(">IIIII", out) == (1, 42, 1800, 9, 7)  # leechers before seeders
    assert out[20:] == peers


def test_the_scrape_answer_follows_the_order_asked_with_zeros_for_missing_rows():
    a, b, c = b"a" * 20, b"b" * 20, b"c" * 20
    rows = [(b, 1, 2, 3), (a, 4, 5, 6)]  # (hash, complete, incomplete, downloaded), deduplicated
    out = codec.encode_scrape(9, [a, c, b, a], rows)
    assert struct.unpack_from(">II", out) == (2, 9)
    body = [struct.unpack_from(">III", out, 8 + 12 * i) for i in range(4)]
    assert body == [(4, 6, 5), (0, 0, 0), (1, 3, 2), (4, 6, 5)]  # seeders, completed, leechers


def test_an_error_carries_the_reason_as_text():
    out = codec.encode_error(3, "unregistered torrent")
    assert out == struct.pack(">II", 3, 3) + b"unregistered torrent"
    assert len(codec.encode_error(3, "x" * 1000)) == 8 + codec.MAX_ERROR_MESSAGE


@pytest.mark.parametrize(
    "action,size,answered",
    [
        (1, 98, True),  # an announce: told to connect again
        (1, 109, True),
        (2, 36, True),  # the shortest scrape: the refusal still fits
        (1, 16, False),  # too short to be one: the refusal would be longer than the request
        (2, 28, False),
        (0, 16, False),
        (3, 100, False),  # an error packet from elsewhere is never answered
        (7, 100, False),
    ],
)
def test_an_unproven_sender_gets_nothing_longer_than_it_sent(action, size, answered):
    out = codec.refuse_unproven(action, 1, size)
    assert (out is not None) is answered
    if out is not None:
        assert len(out) <= size
        assert out == codec.encode_error(1, "connection id expired")
        # Its bytes 8-12 (a request's action) are text: two trackers cannot ping-pong.
        assert struct.unpack_from(">I", out, 8)[0] > 2


# --- connection ids ---------------------------------------------------------------------------


def test_connection_ids_are_8_bytes_and_depend_on_every_input():
    base = codec.connection_id(SECRET, IP4, 100)
    assert len(base) == 8
    assert codec.connection_id(SECRET, IP4, 100) == base  # no state: the same again
    others = {
        codec.connection_id(b"t" * 32, IP4, 100),
        codec.connection_id(SECRET, bytes([127, 0, 0, 2]), 100),
        codec.connection_id(SECRET, IP6, 100),
        codec.connection_id(SECRET, IP4, 101),
    }
    assert base not in others and len(others) == 4


def test_an_id_is_the_keyed_blake2s_of_the_address_and_the_window():
    # What any other process (or implementation) given the secret must compute to agree.
    for secret, ip in ((SECRET, IP4), (b"short key 16 b..", IP6)):
        expected = hashlib.blake2s(ip + (12345).to_bytes(8, "big"), key=secret, digest_size=8)
        assert codec.connection_id(secret, ip, 12345) == expected.digest()


def test_an_id_is_accepted_in_its_window_and_the_next_only():
    cid = codec.connection_id(SECRET, IP4, 100)
    assert codec.connection_id_ok(cid, SECRET, IP4, 100)
    assert codec.connection_id_ok(cid, SECRET, IP4, 101)
    assert not codec.connection_id_ok(cid, SECRET, IP4, 102)
    assert not codec.connection_id_ok(cid, SECRET, IP4, 99)


@pytest.mark.parametrize(
    "forged",
    [
        lambda cid: bytes(8),
        lambda cid: bytes([cid[0] ^ 1]) + cid[1:],
        lambda cid: codec.connection_id(b"other secret....", IP4, 100),  # another tracker's
        lambda cid: codec.connection_id(SECRET, bytes([10, 0, 0, 1]), 100),  # another address's
        lambda cid: codec.connection_id(SECRET, IP6, 100),
    ],
)
def test_forged_ids_are_refused(forged):
    cid = codec.connection_id(SECRET, IP4, 100)
    assert not codec.connection_id_ok(forged(cid), SECRET, IP4, 100)


def test_an_id_lives_between_half_the_lifetime_and_the_lifetime():
    lifetime = 120
    start = 60 * 1000  # the start of a window (windows are lifetime / 2 = 60 s)
    for minted in (start, start + 59.9):
        cid = codec.connection_id(SECRET, IP4, codec.time_window(minted, lifetime))
        for t, ok in ((start + 60, True), (start + 119.9, True), (start + 120, False)):
            w = codec.time_window(t, lifetime)
            assert codec.connection_id_ok(cid, SECRET, IP4, w) is ok, (minted, t)


# --- real clients -----------------------------------------------------------------------------


def client_datagrams() -> list[dict]:
    path = FIXTURES / "udp_announces.jsonl"
    if not path.exists():
        pytest.skip(f"client fixtures not found at {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_real_client_announce_parses_to_what_it_says():
    seen = set()
    for d in client_datagrams():
        raw = bytes.fromhex(d["raw"])
        assert len(raw) == d["len"]
        assert codec.read_header(raw)[0] == codec.ANNOUNCE
        req = codec.parse_announce(raw)
        where = f"{d['client']} {d['event']}"
        assert req.peer_id.startswith(d["peer_id_prefix"].encode()), where
        assert (req.downloaded, req.left, req.uploaded) == (
            d["downloaded"],
            d["left"],
            d["uploaded"],
        ), where
        assert (
            req.event
            == {
                "none": EVENT_NONE,
                "started": EVENT_STARTED,
                "completed": EVENT_COMPLETED,
                "stopped": EVENT_STOPPED,
            }[d["event"]]
        ), where
        assert req.port == d["port"], where
        assert req.numwant == (None if d["numwant"] == -1 else d["numwant"]), where
        assert req.key == b"%08X" % d["key"], where
        assert req.ip is None and d["ip_field"] == 0, where
        # BEP 41: libtorrent and qBittorrent send "/announce", aria2 an EndOfOptions.
        url = codec.url_data(raw)
        assert url == (b"/announce" if d["options"].startswith("02") else b""), where
        assert req.passkey is None, where
        seen.add(d["client"].split()[0])
    assert {"aria2", "libtorrent", "qbittorrent-nox", "rtorrent", "transmission-daemon"} <= seen
