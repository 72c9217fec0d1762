"""johnlocke.addresses on its own: who a client is, behind trusted proxies or not."""

from __future__ import annotations

from ipaddress import ip_network
from socket import AF_INET6, inet_pton

import pytest

from johnlocke.addresses import RealIp, address_group, pack_ip
from johnlocke.errors import ClientError

PROXIES = [ip_network("127.0.0.1/32"), ip_network("10.9.0.0/16"), ip_network("fd00::/8")]


def v4(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


def test_without_trusted_proxies_headers_mean_nothing():
    real_ip = RealIp()
    assert real_ip.resolve("198.51.100.1", ["203.0.113.66"]) == (v4("198.51.100.1"), False)
    assert real_ip.resolve("::ffff:198.51.100.1") == (v4("198.51.100.1"), False)


def test_an_untrusted_peer_is_itself_whatever_it_sends():
    real_ip = RealIp(PROXIES)
    assert real_ip.resolve("198.51.100.1", ["203.0.113.66"]) == (v4("198.51.100.1"), False)


def test_every_line_counts_and_the_rightmost_untrusted_hop_wins():
    real_ip = RealIp(PROXIES)
    # What the client wrote, then what each proxy appended, in several lines or one.
    for lines in (
        ["127.0.0.5", "203.0.113.66"],
        ["127.0.0.5, 203.0.113.66"],
        ["127.0.0.5", "203.0.113.66, 10.9.1.1", " 10.9.2.2 "],
        ["203.0.113.66", "", "10.9.1.1,,"],
    ):
        assert real_ip.resolve("127.0.0.1", lines) == (v4("203.0.113.66"), True), lines


def test_only_trusted_hops_or_no_header_leave_the_proxy_itself():
    real_ip = RealIp(PROXIES)
    assert real_ip.resolve("127.0.0.1", []) == (v4("127.0.0.1"), True)
    assert real_ip.resolve("127.0.0.1", ["10.9.0.1, 127.0.0.1"]) == (v4("127.0.0.1"), True)


def test_hops_with_ports_ipv6_and_mapped_addresses():
    real_ip = RealIp(PROXIES)
    six = inet_pton(AF_INET6, "2001:db8::7")
    assert real_ip.resolve("127.0.0.1", ["198.51.100.2:4711"])[0] == v4("198.51.100.2")
    assert real_ip.resolve("127.0.0.1", ["[2001:db8::7]:4711"])[0] == six
    assert real_ip.resolve("127.0.0.1", ["2001:db8::7"])[0] == six
    assert real_ip.resolve("127.0.0.1", ["::ffff:198.51.100.3"])[0] == v4("198.51.100.3")
    assert real_ip.resolve("fd00::1", ["198.51.100.4"]) == (v4("198.51.100.4"), True)
    assert real_ip.resolve("::ffff:127.0.0.1", ["198.51.100.5"]) == (v4("198.51.100.5"), True)


@pytest.mark.parametrize(
    "hop", ["garbage", "1.2.3.4.5", "[::1", "[::1]x", "unknown", "1.2.3.4:x", "1.2.3.4:5:6"]
)
def test_an_unreadable_hop_from_a_trusted_proxy_is_a_client_error(hop):
    with pytest.raises(ClientError, match="proxy sent an unreadable X-Real-IP"):
        RealIp(PROXIES, "X-Real-IP").resolve("127.0.0.1", [hop])


def test_per_address_limits_count_ipv6_by_its_64():
    assert address_group(pack_ip("198.51.100.1")) == v4("198.51.100.1")
    assert address_group(pack_ip("2001:db8:1:2::1")) == address_group(pack_ip("2001:db8:1:2:ff::"))
    assert address_group(pack_ip("2001:db8:1:2::1")) != address_group(pack_ip("2001:db8:1:3::1"))
    assert address_group(pack_ip("::ffff:198.51.100.1")) == v4("198.51.100.1")
