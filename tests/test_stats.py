"""The stats counters, figures, access rule and log helpers, without HTTP."""

from __future__ import annotations

import json
import logging
from ipaddress import ip_address
from types import SimpleNamespace

import pytest

from johnlocke.config import validate
from johnlocke.logs import JsonFormatter, mask
from johnlocke.stats import (
    MAX_CLIENTS,
    MAX_REASONS,
    OTHER,
    Access,
    Histogram,
    Stats,
    StatsService,
    client_name,
    client_prefix,
)
from johnlocke.store.memory import MemoryStore

from .store_contract import pid, v4, v6


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# --- counters ---------------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_prometheus_style():
    h = Histogram((0.001, 0.01))
    for v in (0.0005, 0.001, 0.002, 0.5):
        h.observe(v)
    assert h.count == 4
    # A value equal to a bound falls in that bound's bucket ("le").
    assert h.buckets() == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]
    assert h.sum == pytest.approx(0.5035)
    assert h.quantile(0.5) == pytest.approx(0.001)
    assert h.quantile(0.75) == pytest.approx(0.01)  # the top of the bucket holding rank 3
    assert h.quantile(1.0) == 0.01  # beyond the last bound: the last bound
    assert Histogram().quantile(0.5) is None


def test_failure_reasons_are_normalised_and_bounded():
    st = Stats()
    st.fail("info_hash must be 20 bytes, got 19")
    st.fail("info_hash must be 20 bytes, got 3")
    st.fail("port must be between 1 and 65535")
    assert st.failures == {
        "info_hash must be 20 bytes, got N": 2,
        "port must be between 1 and 65535": 1,
    }
    for n in range(3 * MAX_REASONS):
        st.fail(f"bad percent escape in x{n}")  # reasons can carry what a client sent
    assert len(st.failures) == MAX_REASONS + 1
    assert st.failures[OTHER] == 3 * MAX_REASONS - (MAX_REASONS - 2)
    assert sum(st.failures.values()) == 3 + 3 * MAX_REASONS
    st.fail("x" * 10_000)
    assert max(len(r) for r in st.failures) < 200


@pytest.mark.parametrize(
    "peer_id,prefix,name",
    [
        (b"-qB4520-abcdefghijkl", b"-qB4520-", "qBittorrent"),
        (b"-TR3000-abcdefghijkl", b"-TR3000-", "Transmission"),
        (b"-lt0D80-\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c", b"-lt0D80-", "libTorrent"),
        (b"-LT2010-abcdefghijkl", b"-LT2010-", "libtorrent (Rasterbar)"),
        (b"A2-1-36-0-\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6", b"A2-1-36", "aria2"),
        (b"M7-2-2--abcdefghijkl", b"M7-2-2", "BitTorrent (mainline)"),
        (b"-ZZ0001-abcdefghijkl", b"-ZZ0001-", ""),
        (b"\x00\x01\x02" + bytes(17), b"", ""),
    ],
)
def test_clients_are_named_by_peer_id_prefix(peer_id, prefix, name):
    assert client_prefix(peer_id) == prefix
    assert client_name(prefix).startswith(name)


def test_clients_are_bounded():
    st = Stats(client_sample=1)
    for n in range(MAX_CLIENTS + 50):
        st.count_client(b"-%02d%04d-" % (n % 100, n) + bytes(12))
    assert len(st.clients) == MAX_CLIENTS + 1 and st.clients[b""] == 50


# --- access -----------------------------------------------------------------------------------


def test_access_auto_is_loopback_only():
    access = Access(validate({}))
    assert access.allows(ip_address("127.0.0.1"), None)
    assert access.allows(ip_address("::1"), None)
    assert access.allows(ip_address("::ffff:127.0.0.1"), None)
    assert not access.allows(ip_address("192.0.2.1"), None)
    assert not access.allows(ip_address("2001:db8::1"), None)


def test_access_by_network_and_token():
    token = "s3cret-token-0123456789"
    access = Access(validate({"stats": {"allow": ["192.0.2.0/24"], "token": token}}))
    assert access.allows(ip_address("192.0.2.7"), None)
    assert not access.allows(ip_address("127.0.0.1"), None)
    assert access.allows(ip_address("198.51.100.1"), token.encode())
    assert not access.allows(ip_address("198.51.100.1"), token.encode() + b"x")
    assert not access.allows(ip_address("198.51.100.1"), b"")
    assert not access.allows(ip_address("198.51.100.1"), b"\xff\xfe")
    closed = Access(validate({"stats": {"allow": []}}))
    assert not closed.allows(ip_address("127.0.0.1"), None)


def test_access_auto_is_closed_in_private_mode():
    stats = validate({}).stats
    private = Access(SimpleNamespace(stats=stats, access=SimpleNamespace(mode="private")))
    assert not private.allows(ip_address("127.0.0.1"), None)
    listed = Access(SimpleNamespace(stats=stats, access=SimpleNamespace(mode="listed")))
    assert listed.allows(ip_address("127.0.0.1"), None)


@pytest.mark.parametrize(
    "stats,expected",
    [
        ({"allow": "everyone"}, 'must be "auto" or a list of CIDRs'),
        ({"allow": ["10.0.0.0/40"]}, "[stats] allow"),
        ({"token": "short"}, "at least 16 printable characters"),
        ({"page": "/announce"}, "/announce is taken"),
        ({"page": "/scrape/x"}, "/scrape is taken"),
        ({"page": "status"}, 'a path such as "/"'),
        ({"history_interval": 0}, "[stats] history_interval"),
    ],
)
def test_bad_stats_config_is_refused(stats, expected):
    from johnlocke.config import ConfigError

    with pytest.raises(ConfigError) as err:
        validate({"stats": stats})
    assert expected in str(err.value)


# --- the service ------------------------------------------------------------------------------


async def test_rates_history_and_report_follow_the_counters():
    clock = Clock()
    wall = Clock()
    store = MemoryStore(clock=clock)
    svc = StatsService(store, validate({"stats": {"history_interval": 2, "top": 1}}), clock, wall)
    await svc._take_sample()  # what start() does, without the ticker task
    st = svc.stats
    for n in range(10):
        await store.announce(b"\x01" * 20, pid(n), v4(n), n < 4, 0, False)
        st.announce_latency.observe(0.0002)
    await store.announce(b"\x02" * 20, pid(1), v6(1), False, 0, False)
    for _ in range(5):
        st.scrape_latency.observe(0.0001)
    clock.t += 1
    wall.t += 1
    await svc.tick()
    clock.t += 1
    wall.t += 1
    await svc.tick()  # the second tick takes a history sample
    assert svc.rates(10) == (pytest.approx(5.0), pytest.approx(2.5))
    assert len(svc.history) == 2
    first, second = svc.history
    assert (first.peers, second.peers) == (0, 11)
    assert (second.seeders, second.leechers, second.peers_ipv6) == (4, 7, 1)
    assert second.announces_per_second == pytest.approx(5.0)
    report = await svc.report(history=True)
    assert (report["swarms"], report["peers"], report["seeders"], report["leechers"]) == (
        2,
        11,
        4,
        7,
    )
    assert report["ipv6"] == {"peers": 1, "seeders": 0, "leechers": 1}
    assert report["announces"]["total"] == 10 and report["scrapes"]["total"] == 5
    assert report["top_swarms"] == [
        {"info_hash": "01" * 20, "peers": 10, "seeders": 4, "leechers": 6, "downloaded": 0}
    ]
    assert report["history"]["samples"][1][report["history"]["fields"].index("swarms")] == 2
    json.dumps(report)  # it is a JSON document
    # Nothing happens for a minute: the rates fall to zero.
    for _ in range(61):
        clock.t += 1
        await svc.tick()
    assert svc.rates(10) == (0.0, 0.0)


async def test_reload_changes_sampling_and_top():
    svc = StatsService(MemoryStore(), validate({}))
    svc.reload(validate({"stats": {"client_sample": 1, "top": 3, "history_interval": 60}}))
    assert svc.stats.client_sample == 1
    assert svc.top_n == 3 and svc.history.maxlen == 60


# --- logs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target,shown,hidden",
    [
        ("/announce?info_hash=x&passkey=0123456789abcdef0123", "passkey=0123***", "456789abcdef"),
        ("/announce/0123456789abcdef0123?info_hash=x", "/announce/0123***?info_hash=x", "4567"),
        ("/scrape/0123456789abcdef0123", "/scrape/0123***", "456789"),
        ("/stats?token=abcdefghijklmnopqrst", "token=abcd***", "efghij"),
        ("/announce?PASSKEY=short&x=1", "PASSKEY=***&x=1", "short"),
    ],
)
def test_mask_hides_passkeys_and_tokens(target, shown, hidden):
    masked = mask(target)
    assert shown in masked and hidden not in masked


def test_mask_leaves_ordinary_requests_alone():
    target = "/announce?info_hash=%11%22&peer_id=-qB4520-abcdefghijkl&key=ABCD1234&port=1"
    assert mask(target) == target


def test_json_formatter_writes_one_object_with_extra_fields():
    record = logging.LogRecord("johnlocke.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.remote = "127.0.0.1"
    doc = json.loads(JsonFormatter().format(record))
    assert doc["message"] == "hello you" and doc["level"] == "info"
    assert doc["logger"] == "johnlocke.x" and doc["remote"] == "127.0.0.1"
    assert doc["time"].endswith("Z")
