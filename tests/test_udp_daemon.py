"""The UDP tracker in the real daemon, on 127.0.0.1 and ::1: the protocol, bad datagrams,
connection ids, one tracker behind both transports, private mode, stats, logs and reloads."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.parse
import urllib.request

import bencodepy
import pytest

from johnlocke.access import BAD_PASSKEY, NO_PASSKEY, UNREGISTERED

from .access_files import Torrent, write_lines
from .daemon import Daemon, run_daemon
from .test_access_daemon import PRIVATE as ACCESS_PRIVATE
from .udp_client import (
    COMPLETED,
    MAGIC,
    STARTED,
    STOPPED,
    UdpClient,
    UdpError,
    announce_datagram,
    compact,
    url_option,
)

BOTH = '[http]\nhost = ["127.0.0.1", "::1"]\nport = 0\n'
KEY = "5f1c0a9e3b7d4c2a8e6f1b0d9c7a5e3f"


def pid(n: int) -> bytes:
    return b"-JL0001-" + n.to_bytes(12, "big")


def ih(n: int) -> bytes:
    return bytes([n]) * 20


def http_get(d: Daemon, path: str) -> dict:
    with urllib.request.urlopen(d.url + path, timeout=5) as resp:
        assert resp.status == 200
        return bencodepy.decode(resp.read())


def http_announce(d: Daemon, info_hash: bytes, peer_id: bytes, port: int, **params: str) -> dict:
    query = {"info_hash": info_hash, "peer_id": peer_id, "port": str(port), "left": "0"}
    query.update(params)
    return http_get(d, "/announce?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote))


def http_scrape(d: Daemon, info_hash: bytes) -> tuple[int, int, int]:
    q = urllib.parse.quote(info_hash)
    f = http_get(d, f"/scrape?info_hash={q}")[b"files"][info_hash]
    return f[b"complete"], f[b"incomplete"], f[b"downloaded"]


def stats(d: Daemon) -> dict:
    with urllib.request.urlopen(d.url + "/stats", timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def both():
    """One daemon for the protocol tests, with UDP on 127.0.0.1 and ::1."""
    with run_daemon(BOTH) as d:
        assert set(d.udp_ports) == {"127.0.0.1", "::1"}, d.log_lines()
        yield d


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_connect_announce_and_scrape(both, host):
    info_hash = os.urandom(20)
    with UdpClient(host, both.udp_ports[host]) as a, UdpClient(host, both.udp_ports[host]) as b:
        a.connect()
        b.connect()
        first = a.announce(info_hash, pid(1), event=STARTED, left=0, port=7001, key=1)
        assert (first.interval, first.seeders, first.leechers, first.peers) == (1800, 1, 0, [])
        second = b.announce(info_hash, pid(2), event=STARTED, left=100, port=7002, numwant=10)
        assert (second.seeders, second.leechers) == (1, 1)
        # Peers of the sender's family, as they are stored: 6 bytes over IPv4, 18 over IPv6.
        assert second.peers == [compact(host, 7001)]
        assert a.scrape(info_hash, os.urandom(20), info_hash) == [(1, 0, 1), (0, 0, 0), (1, 0, 1)]
        b.announce(info_hash, pid(2), event=COMPLETED, left=0, port=7002)
        assert a.scrape(info_hash) == [(2, 1, 0)]
        b.announce(info_hash, pid(2), event=STOPPED, left=0, port=7002, numwant=0)
        assert a.scrape(info_hash) == [(1, 1, 0)]


def test_a_refused_announce_gets_the_reason_and_changes_nothing(both):
    info_hash = os.urandom(20)
    with UdpClient("127.0.0.1", both.udp_port) as c:
        c.connect()
        for fields, reason in (
            ({"port": 0}, "port must be between 1 and 65535"),
            ({"event": 9}, "unknown event"),
            ({"left": -1}, "left must not be negative"),
            ({"options": b"\x02\x20/ann"}, "truncated BEP 41 option"),
        ):
            with pytest.raises(UdpError, match=reason):
                c.announce(info_hash, pid(3), **fields)
        assert c.scrape(info_hash) == [(0, 0, 0)]
        with pytest.raises(UdpError, match="scrape needs at least one info_hash"):
            c.scrape()


def test_bad_datagrams_are_dropped_or_refused_counted_and_change_nothing(both):
    info_hash = os.urandom(20)
    before = stats(both)["transports"]["udp"]["bad_datagrams"]["by_reason"]
    with UdpClient("127.0.0.1", both.udp_port) as c:
        for junk in (b"", b"x" * 15, bytes(16), os.urandom(3000)):
            c.send(junk)
            assert c.recv(0.3) is None  # not a request: no answer at all
        # An announce with a forged connection id: "connect again", no announce.
        forged = announce_datagram(bytes(8), 5, info_hash, pid(4), event=STARTED)
        assert c.exchange(forged)[8:] == b"connection id expired"
        # A truncated one with a forged id: nothing longer than it is ever sent back.
        c.send(forged[:20])
        assert c.recv(0.3) is None
        c.connect()
        assert c.exchange(c.cid + bytes([0, 0, 0, 7, 0, 0, 0, 9]))[8:].startswith(b"unknown action")
        assert c.scrape(info_hash) == [(0, 0, 0)]
    after = stats(both)["transports"]["udp"]["bad_datagrams"]["by_reason"]

    def grew(reason: str) -> int:
        return after.get(reason, 0) - before.get(reason, 0)

    assert (grew("too short"), grew("too long"), grew("bad protocol id")) == (2, 1, 1)
    assert (grew("bad connection id"), grew("unknown action")) == (2, 1)


def test_an_id_is_bound_to_the_address_not_the_socket(both):
    # libtorrent keeps one connection id per tracker for the whole process: every socket it
    # sends from must be able to use it. Another address cannot.
    info_hash = os.urandom(20)
    with (
        UdpClient("127.0.0.1", both.udp_port) as a,
        UdpClient("127.0.0.1", both.udp_port) as b,
        UdpClient("127.0.0.1", both.udp_port, source="127.0.0.2") as other,
    ):
        a.connect()
        b.cid = other.cid = a.cid
        b.announce(info_hash, pid(10), event=STARTED)
        with pytest.raises(UdpError, match="connection id expired"):
            other.announce(info_hash, pid(11), event=STARTED)
        assert a.scrape(info_hash) == [(1, 0, 0)]


def test_peers_are_shared_across_transports(both):
    info_hash = os.urandom(20)
    with UdpClient("127.0.0.1", both.udp_port) as c:
        c.connect()
        c.announce(info_hash, pid(5), event=STARTED, left=0, port=7005, key=0x1234)
        # An HTTP leecher gets the seeder that announced over UDP ...
        got = http_announce(both, info_hash, pid(6), 7006, left="10", numwant="5")
        assert got[b"peers"] == compact("127.0.0.1", 7005)
        assert (got[b"complete"], got[b"incomplete"]) == (1, 1)
        # ... and the UDP seeder gets the HTTP leecher; both see the same counts.
        again = c.announce(info_hash, pid(5), left=0, port=7005, key=0x1234)
        assert again.peers == [compact("127.0.0.1", 7006)]
        assert http_scrape(both, info_hash) == (1, 1, 0) and c.scrape(info_hash) == [(1, 0, 1)]
        # The UDP key is the one libtorrent sends over HTTP ("%08X"): the same peer may switch.
        http_announce(both, info_hash, pid(5), 7005, key="00001234", event="stopped")
        assert c.scrape(info_hash) == [(0, 0, 1)]


def test_stats_and_metrics_show_udp_beside_http(both):
    info_hash = os.urandom(20)
    s0 = stats(both)["transports"]["udp"]
    with UdpClient("127.0.0.1", both.udp_port) as c:
        c.connect()
        c.announce(info_hash, pid(7), event=STARTED)
        with pytest.raises(UdpError):
            c.announce(info_hash, pid(7), port=0)
        c.scrape(info_hash)
    s1 = stats(both)
    udp = s1["transports"]["udp"]
    assert udp["connects"] == s0["connects"] + 1
    assert udp["announces"] == s0["announces"] + 2 and udp["scrapes"] == s0["scrapes"] + 1
    assert udp["by_event"]["started"] == s0["by_event"]["started"] + 1
    assert udp["failures"]["by_reason"]["port must be between 1 and 65535"] >= 1
    assert udp["latency_ms"]["announce"]["count"] == udp["announces"]
    assert s1["announces"]["total"] == udp["announces"] + s1["transports"]["http"]["announces"]
    with urllib.request.urlopen(both.url + "/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'johnlocke_announces_total{event="started",transport="udp"} ' in metrics
    assert 'johnlocke_scrapes_total{transport="udp"}' in metrics
    assert 'johnlocke_announce_duration_seconds_count{transport="udp"}' in metrics
    assert "# TYPE johnlocke_udp_bad_datagrams_total counter" in metrics
    assert f"johnlocke_udp_connects_total {float(udp['connects'])}" in metrics


def test_an_expired_connection_id_is_refused_until_the_client_connects_again():
    # A lifetime of 2 s: ids are accepted for 1 to 2 s.
    with run_daemon("[udp]\nconnection_id_lifetime = 2\n") as d:
        info_hash = os.urandom(20)
        with UdpClient("127.0.0.1", d.udp_port) as c:
            c.connect()
            c.announce(info_hash, pid(8), event=STARTED)
            time.sleep(2.1)
            with pytest.raises(UdpError, match="connection id expired"):
                c.announce(info_hash, pid(9), event=STARTED)
            c.connect()
            assert c.scrape(info_hash) == [(1, 0, 0)]  # the refused announce added nobody


def test_ids_survive_a_restart_only_with_a_configured_secret(tmp_path):
    for config, survives in (
        ('[udp]\nsecret = "a secret shared by every process"\n', True),
        ("", False),
    ):
        workdir = tmp_path / str(survives)
        with run_daemon(config, workdir=workdir) as d:
            port = d.port
            c = UdpClient("127.0.0.1", d.udp_port)
            c.connect()
        # The client keeps its socket (its address), so it can keep its id.
        with run_daemon(config, workdir=workdir, port=port) as d2:
            c.sock.connect(("127.0.0.1", d2.udp_port))
            try:
                c.scrape(ih(1))
                ok = True
            except UdpError:
                ok = False
            c.close()
        assert ok is survives


def test_the_ip_field_counts_only_where_ip_is_believed():
    for allow, expected in (("false", "127.0.0.1"), ("true", "10.9.8.7")):
        with run_daemon(f"[announce]\nallow_ip_param = {allow}\n") as d:
            info_hash = os.urandom(20)
            with UdpClient("127.0.0.1", d.udp_port) as c:
                c.connect()
                c.announce(info_hash, pid(1), event=STARTED, ip=bytes([10, 9, 8, 7]), port=7000)
                got = http_announce(d, info_hash, pid(2), 7001, left="5")
                assert got[b"peers"] == compact(expected, 7000)


def free_tcp_and_udp_port() -> int:
    import socket

    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            try:
                udp.bind(("127.0.0.1", tcp.getsockname()[1]))
            except OSError:
                continue
            return tcp.getsockname()[1]
    raise AssertionError("no port free for both TCP and UDP")


def test_udp_takes_the_http_port_number_unless_told_otherwise():
    port = free_tcp_and_udp_port()
    with run_daemon("", port=port, udp_port=None) as d:
        assert d.port == d.udp_port == port
        assert f"listening on 127.0.0.1:{port} and udp://127.0.0.1:{port} " in d.log_text()


def test_udp_can_be_turned_off():
    with run_daemon("[udp]\nenabled = false\n") as d:
        assert d.udp_ports == {} and "udp://" not in d.log_text()


def test_a_udp_port_in_use_stops_start_up_with_a_message():
    import socket

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(Exception, match="cannot listen on UDP 127.0.0.1:"):
            with run_daemon(f"[udp]\nport = {taken.getsockname()[1]}\n", start_timeout=5):
                pass
    finally:
        taken.close()


# --- private mode, logs and reloads ------------------------------------------------------------


PRIVATE = ACCESS_PRIVATE + "\n[log]\naccess_log = true\n"


def test_private_mode_takes_the_passkey_from_the_bep41_url(tmp_path):
    t = Torrent("holiday")
    t.write(tmp_path / "torrents")
    write_lines(tmp_path / "passkeys.txt", f"{KEY} alice")
    with run_daemon(PRIVATE, workdir=tmp_path) as d:
        with UdpClient("127.0.0.1", d.udp_port) as c:
            c.connect()
            port = 7000
            for url in (
                f"/{KEY}/announce",
                f"/announce/{KEY}",
                f"/announce?passkey={KEY}",
            ):
                port += 1
                got = c.announce(t.info_hash, pid(port), event=STARTED, port=port,
                                 options=url_option(url.encode()))  # fmt: skip
                assert got.seeders == port - 7000, url
            for options, reason in (
                (b"", NO_PASSKEY),
                (url_option(b"/announce"), NO_PASSKEY),
                (url_option(b"/0000000000000000/announce"), BAD_PASSKEY),
            ):
                with pytest.raises(UdpError) as info:
                    c.announce(t.info_hash, pid(1), event=STARTED, options=options)
                assert str(info.value) == reason
            with pytest.raises(UdpError) as info:
                c.announce(ih(9), pid(1), options=url_option(f"/{KEY}/announce".encode()))
            assert str(info.value) == UNREGISTERED
            # BEP 15 scrapes carry no URL: without a passkey they are refused.
            with pytest.raises(UdpError) as info:
                c.scrape(t.info_hash)
            assert str(info.value) == NO_PASSKEY
        log = d.log_text()
        lines = [line for line in log.splitlines() if '"UDP announce' in line]
        assert len(lines) == 7, log  # 3 answered, 4 refused
        assert f'"UDP announce /{KEY[:4]}***/announce" ok ' in log
        assert "/announce?passkey=" + KEY[:4] + "***" in log
        assert KEY not in log  # never in full, in any line


def test_sighup_reaches_udp_clients():
    base = "[announce]\ninterval = 600\nmin_interval = 60\n"
    with run_daemon(base) as d:
        info_hash = os.urandom(20)
        with UdpClient("127.0.0.1", d.udp_port) as c:
            c.connect()
            assert c.announce(info_hash, pid(1)).interval == 600
            text = d.config_path.read_text().replace("interval = 600", "interval = 700")
            d.config_path.write_text(text)
            d.proc.send_signal(signal.SIGHUP)
            d.wait_for_log("configuration reloaded", timeout=10)
            assert c.announce(info_hash, pid(1)).interval == 700


def test_magic_is_checked_on_connect_only(both):
    with UdpClient("127.0.0.1", both.udp_port) as c:
        assert len(c.exchange(MAGIC + bytes([0, 0, 0, 0, 1, 2, 3, 4]) + b"trailing")) == 16


def test_limits_apply_over_udp_as_over_http():
    with run_daemon("[limits]\nmax_peers_per_ip = 1\n") as d:
        info_hash = os.urandom(20)
        with UdpClient("127.0.0.1", d.udp_port) as c:
            c.connect()
            c.announce(info_hash, pid(1), event=STARTED, port=7001)
            with pytest.raises(UdpError) as info:
                c.announce(info_hash, pid(2), event=STARTED, port=7002)
        # The refusal HTTP gives, with the same reason; the refused peers changed nothing.
        http = http_announce(d, info_hash, pid(3), 7003, event="started")
        assert str(info.value) == http[b"failure reason"].decode()
        assert "too many peers from your address" in str(info.value)
        assert http_scrape(d, info_hash) == (1, 0, 0)
