"""Parsing and encoding: raw query bytes in, bencoded bytes out (no server involved)."""

from __future__ import annotations

import json
from pathlib import Path

import bencodepy
import pytest

from johnlocke.bittorrent import (
    EVENT_COMPLETED,
    EVENT_NONE,
    EVENT_PAUSED,
    EVENT_STARTED,
    EVENT_STOPPED,
    parse_ip,
    parse_target,
)
from johnlocke.errors import ClientError
from johnlocke.http import codec as protocol
from johnlocke.http.codec import parse_announce, parse_scrape

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "clients"
if not FIXTURES.is_dir():  # CI lays shared/ beside the clone
    FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "clients"

IH = bytes(range(20))
IH_Q = "".join(f"%{b:02x}" for b in IH)
PID = b"-TR3000-abcdefghijkl"
BASE = f"info_hash={IH_Q}&peer_id=-TR3000-abcdefghijkl&port=6881"


def q(extra: str = "", base: str = BASE) -> bytes:
    return (base + extra).encode("latin-1")


def client_requests() -> list[dict]:
    path = FIXTURES / "all_requests.jsonl"
    if not path.exists():
        pytest.skip(f"client fixtures not found at {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- announce: good input ---------------------------------------------------------------------


def test_minimal_announce_has_defaults():
    req = parse_announce(q())
    assert req.info_hash == IH
    assert req.peer_id == PID
    assert req.port == 6881
    assert (req.uploaded, req.downloaded, req.left) == (0, 0, 0)
    assert req.event == EVENT_NONE
    assert req.compact is True
    assert req.no_peer_id is False
    assert req.numwant is None
    assert req.key is None and req.trackerid is None and req.ip is None


@pytest.mark.parametrize(
    "escape",
    [
        "".join(f"%{b:02x}" for b in IH),  # lower-case escapes (Transmission, libtorrent)
        "".join(f"%{b:02X}" for b in IH),  # upper-case escapes (aria2)
    ],
)
def test_escape_case_does_not_matter(escape):
    assert (
        parse_announce(q(base=f"info_hash={escape}&peer_id={PID.decode()}&port=1")).info_hash == IH
    )


def test_over_escaped_and_raw_characters_decode_to_the_same_bytes():
    # ctorrent escapes "-" and "."; libtorrent leaves unreserved bytes such as "Q" raw.
    over = "".join(f"%{b:02X}" for b in PID)
    req = parse_announce(q(base=f"info_hash={IH_Q}&peer_id={over}&port=1"))
    assert req.peer_id == PID
    mixed = "%a4%f0%c2%3e%d6Q%c1R%a1%3f%e5B%5c%82%3f%2c%fd%f6%93%d1"
    req = parse_announce(f"info_hash={mixed}&peer_id={over}&port=1".encode())
    assert req.info_hash == bytes.fromhex("a4f0c23ed651c152a13fe5425c823f2cfdf693d1")


def test_escaped_ampersand_and_percent_stay_inside_the_value():
    raw = b"ab&cd%ef=gh" + bytes(9)
    enc = "".join(f"%{b:02x}" for b in raw)
    assert parse_announce(q(base=f"info_hash={enc}&peer_id={PID.decode()}&port=1")).info_hash == raw


@pytest.mark.parametrize(
    "value,event",
    [
        ("started", EVENT_STARTED),
        ("completed", EVENT_COMPLETED),
        ("stopped", EVENT_STOPPED),
        ("paused", EVENT_PAUSED),
        ("empty", EVENT_NONE),
        ("", EVENT_NONE),
    ],
)
def test_events(value, event):
    assert parse_announce(q(f"&event={value}")).event == event


def test_all_fields():
    req = parse_announce(
        q(
            "&uploaded=10&downloaded=20&left=30&event=started&compact=0&no_peer_id=1"
            "&numwant=80&key=C8A8CF6D&trackerid=xyz&ip=10.1.2.3&supportcrypto=1&corrupt=0"
        )
    )
    assert (req.uploaded, req.downloaded, req.left) == (10, 20, 30)
    assert req.compact is False and req.no_peer_id is True
    assert req.numwant == 80
    assert req.key == b"C8A8CF6D"
    assert req.trackerid == b"xyz"
    assert req.ip == b"10.1.2.3"


def test_64_bit_counters_are_accepted():
    assert parse_announce(q("&uploaded=18446744073709551615")).uploaded == 2**64 - 1


def test_unknown_parameters_are_ignored():
    assert parse_announce(q("&requirecrypto=1&foo&&bar=")).port == 6881


# --- announce: bad input ----------------------------------------------------------------------

PID_Q = "peer_id=-TR3000-abcdefghijkl"

BAD_ANNOUNCES = [
    (f"{PID_Q}&port=1", "missing info_hash"),
    (f"info_hash=abc&{PID_Q}&port=1", "info_hash must be 20 bytes, got 3"),
    (f"info_hash={IH_Q}%00&{PID_Q}&port=1", "info_hash must be 20 bytes, got 21"),
    (f"info_hash={IH_Q}&port=1", "missing peer_id"),
    (f"info_hash={IH_Q}&peer_id=short&port=1", "peer_id must be 20 bytes, got 5"),
    (f"info_hash={IH_Q}&{PID_Q}", "missing port"),
    (f"info_hash={IH_Q}&{PID_Q}&port=0", "port must be between 1 and 65535"),
    (f"info_hash={IH_Q}&{PID_Q}&port=65536", "port must be between 1 and 65535"),
    (f"info_hash={IH_Q}&{PID_Q}&port=http", "port is not a whole number"),
    (f"info_hash={IH_Q}&{PID_Q}&port=-1", "port must not be negative"),
    (f"{BASE}&uploaded=-5", "uploaded must not be negative"),
    (f"{BASE}&downloaded=1.5", "downloaded is not a whole number"),
    (f"{BASE}&left=+5", "left is not a whole number"),
    (f"{BASE}&left=1_000", "left is not a whole number"),
    (f"{BASE}&left=", "left is not a whole number"),
    (f"{BASE}&left=" + "9" * 40, "left is too large"),
    (f"{BASE}&numwant=-1", "numwant must not be negative"),
    (f"{BASE}&numwant=lots", "numwant is not a whole number"),
    (f"{BASE}&event=finished", "unknown event"),
    (f"info_hash=%zz{IH_Q[3:]}&{PID_Q}&port=1", "bad percent escape in info_hash"),
    (f"info_hash={IH_Q}%4&{PID_Q}&port=1", "bad percent escape in info_hash"),
    (f"{BASE}&key=%", "bad percent escape in key"),
    (BASE + "&x=" + "a" * protocol.MAX_QUERY_LENGTH, "query string too long"),
]


@pytest.mark.parametrize("query,reason", BAD_ANNOUNCES)
def test_bad_announce_names_the_problem(query, reason):
    with pytest.raises(ClientError) as err:
        parse_announce(query.encode("latin-1"))
    assert reason in err.value.reason


# --- real clients -----------------------------------------------------------------------------


def test_every_real_client_announce_parses():
    seen = set()
    for row in client_requests():
        if row["kind"] != "announce":
            continue
        target = row["request_line"].split(" ")[1]
        query = target.partition("?")[2].encode("latin-1")
        req = parse_announce(query)
        assert len(req.info_hash) == 20 and len(req.peer_id) == 20, row["client"]
        assert 0 < req.port < 65536
        expected_event = {"(none)": EVENT_NONE, "started": EVENT_STARTED}.get(row["event"])
        if row["event"] in ("completed", "stopped"):
            expected_event = EVENT_COMPLETED if row["event"] == "completed" else EVENT_STOPPED
        assert req.event == expected_event, (row["client"], row["event"])
        seen.add(row["client"])
        # Clients' peer_ids carry their name in a known prefix (Azureus or aria2 style).
        prefix = {
            "transmission": b"-TR",
            "qbittorrent": b"-qB",
            "aria2": b"A2-",
            "ctorrent": b"-CD",
            "rtorrent": b"-lt",
        }.get(row["client"])
        if prefix:
            assert req.peer_id.startswith(prefix), row["client"]
    assert {"aria2", "ctorrent", "rtorrent", "transmission", "qbittorrent"} <= seen


def test_every_real_client_scrape_parses():
    scrapes = [r for r in client_requests() if r["kind"] == "scrape"]
    assert scrapes
    for row in scrapes:
        target = row["request_line"].split(" ")[1]
        hashes, passkey = parse_scrape(target.partition("?")[2].encode("latin-1"))
        assert len(hashes) == 1 and len(hashes[0]) == 20
        assert passkey is None


# --- scrape -----------------------------------------------------------------------------------


def test_scrape_many_and_none():
    other = bytes(range(20, 40))
    oq = "".join(f"%{b:02X}" for b in other)
    assert parse_scrape(f"info_hash={IH_Q}&info_hash={oq}".encode()) == ([IH, other], None)
    assert parse_scrape(b"") == ([], None)


@pytest.mark.parametrize(
    "query,reason",
    [
        ("info_hash=abc", "info_hash must be 20 bytes, got 3"),
        (f"info_hash={IH_Q}&info_hash=%g1", "bad percent escape in info_hash"),
    ],
)
def test_bad_scrape(query, reason):
    with pytest.raises(ClientError) as err:
        parse_scrape(query.encode())
    assert reason in err.value.reason


# --- ip ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,packed",
    [
        (b"10.0.0.1", bytes([10, 0, 0, 1])),
        (b"::1", bytes(15) + b"\x01"),
        (b"::ffff:10.0.0.1", bytes([10, 0, 0, 1])),
    ],
)
def test_parse_ip(text, packed):
    assert parse_ip(text) == packed


@pytest.mark.parametrize("text", [b"example.com", b"10.0.0.256", b"", b"\xff"])
def test_parse_ip_rejects(text):
    with pytest.raises(ClientError, match="ip is not a valid IP address"):
        parse_ip(text)


# --- encoding ---------------------------------------------------------------------------------


def test_announce_encoding_decodes_with_a_real_bencode_library():
    peers = [bytes([127, 0, 0, 1, 0x1A, 0xE1]), bytes([10, 0, 0, 2, 0, 80])]
    extra = protocol.announce_extra(b"abc", b"be nice")
    body = protocol.encode_announce(
        1800, 900, 3, 4, 5, protocol.bstr(b"".join(peers)), protocol.EMPTY_STRING,
        bytes([127, 0, 0, 1]), extra,
    )  # fmt: skip
    d = bencodepy.decode(body)
    assert d == {
        b"complete": 3,
        b"incomplete": 4,
        b"downloaded": 5,
        b"interval": 1800,
        b"min interval": 900,
        b"peers": b"".join(peers),
        b"peers6": b"",
        b"external ip": bytes([127, 0, 0, 1]),
        b"tracker id": b"abc",
        b"warning message": b"be nice",
    }
    # bencode requires sorted keys: re-encoding with a strict encoder gives the same bytes.
    assert bencodepy.encode(d) == body
    # The one-step compact encoder says exactly the same thing.
    fast = protocol.encode_compact_announce(
        1800, 900, 3, 4, 5, b"".join(peers), False, bytes([127, 0, 0, 1]), extra
    )
    assert fast == body


def test_compact_ipv6_answer_puts_peers_in_peers6():
    peer = bytes(15) + b"\x01" + b"\x1a\xe1"
    body = protocol.encode_compact_announce(60, 30, 1, 0, 0, peer, True, bytes(16))
    d = bencodepy.decode(body)
    assert d[b"peers"] == b"" and d[b"peers6"] == peer and d[b"external ip"] == bytes(16)
    assert bencodepy.encode(d) == body


def test_dict_peers_encoding():
    value = protocol.dict_peers_value([("10.0.0.1", 6881, PID), ("::1", 80, PID)], False)
    assert bencodepy.decode(b"d1:x" + value + b"e")[b"x"] == [
        {b"ip": b"10.0.0.1", b"port": 6881, b"peer id": PID},
        {b"ip": b"::1", b"port": 80, b"peer id": PID},
    ]
    value = protocol.dict_peers_value([("10.0.0.1", 6881, PID)], True)
    assert bencodepy.decode(b"d1:x" + value + b"e")[b"x"] == [{b"ip": b"10.0.0.1", b"port": 6881}]


def test_scrape_encoding_sorts_binary_keys():
    files = [(b"\xff" * 20, 1, 2, 3), (b"\x00" * 20, 4, 5, 6)]
    body = protocol.encode_scrape(files)
    d = bencodepy.decode(body)
    assert d[b"files"][b"\x00" * 20] == {b"complete": 4, b"incomplete": 5, b"downloaded": 6}
    assert bencodepy.encode(d) == body


def test_failure_encoding_carries_utf8_reason():
    assert bencodepy.decode(protocol.encode_failure("nope – ü")) == {
        b"failure reason": "nope – ü".encode()
    }


# --- request targets (and BEP 41 URL data) ---------------------------------------------------

KEY = b"5f1c0a9e3b7d4c2a8e6f1b0d9c7a5e3f"


@pytest.mark.parametrize(
    "target,expected",
    [
        (b"/announce?a=1", (b"announce", None, b"a=1")),
        (b"/scrape", (b"scrape", None, b"")),
        (b"/announce/" + KEY + b"?a=1", (b"announce", KEY, b"a=1")),
        (b"/" + KEY + b"/scrape?a=1", (b"scrape", KEY, b"a=1")),
        (b"http://tracker.example:6969/" + KEY + b"/announce?a", (b"announce", KEY, b"a")),
        (b"HTTP://tracker.example/announce", (b"announce", None, b"")),
        (b"//" + KEY + b"/announce?a", (b"announce", KEY, b"a")),
        (b"/../" + KEY + b"/announce", (b"announce", KEY, b"")),
        (b"/" + KEY + b"/../announce?a", (b"announce", None, b"a")),
        (b"/announce/../" + KEY + b"/announce", (b"announce", KEY, b"")),
        (b"/./announce/%2e%2E/scrape/" + KEY + b"/", (b"scrape", KEY, b"")),
        (b"/%61nnounce/ab%2Fc", (b"announce", b"ab/c", b"")),
        (b"/announce/announce", (b"announce", b"announce", b"")),
        (b"/announce.php", (None, None, b"")),
        (b"/" + KEY + b"/announce/x", (None, None, b"")),
        (b"/stats?token=x", (None, None, b"token=x")),
        (b"*", (None, None, b"")),
        (b"", (None, None, b"")),
    ],
)
def test_parse_target_reads_every_path_form(target, expected):
    assert parse_target(target) == expected
