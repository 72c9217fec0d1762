"""BEP 7 dual-stack peers against the real daemon, listening on 127.0.0.1 and ::1.

A client with both stacks announces once per local address with one peer_id (and, often, one
key). The tracker keeps one address per family for it, counts it once, and hands each family
its own address.
"""

from __future__ import annotations

import socket
import urllib.request
from urllib.parse import quote_from_bytes

import bencodepy
import pytest

from .daemon import run_daemon

IH = bytes.fromhex("d7" * 20)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1 on this machine")


def pid(n: int) -> bytes:
    return b"-qB4650-" + n.to_bytes(12, "big")


def announce(base: str, n: int, port: int, **params) -> dict:
    query = f"info_hash={quote_from_bytes(IH)}&peer_id={quote_from_bytes(pid(n))}"
    query += f"&port={port}&compact=1&numwant=50"
    params.setdefault("left", 1000)
    for k, v in params.items():
        query += f"&{k}={v}"
    with urllib.request.urlopen(f"{base}/announce?{query}", timeout=10) as r:
        assert r.status == 200
        answer = bencodepy.decode(r.read())
    assert b"failure reason" not in answer, answer
    return answer


def ports(blob: bytes, width: int) -> list[int]:
    return sorted(int.from_bytes(blob[i + width - 2 : i + width], "big")
                  for i in range(0, len(blob), width))  # fmt: skip


@pytest.mark.parametrize("key", ["ABCD1234", None])
def test_a_dual_stack_peer_is_one_peer_with_an_address_in_each_family(key):
    extra = {"key": key} if key else {}
    with run_daemon('[http]\nhost = ["127.0.0.1", "::1"]\nport = 0\n') as d:
        port6 = int(d.wait_for_log(r"\[::1\]:(\d+)").group(1))
        v4 = d.url
        v6 = f"http://[::1]:{port6}"
        # P seeds; it announces over IPv4, then over IPv6 with the same peer_id (and key).
        announce(v4, 1, 6001, left=0, **extra)
        answer = announce(v6, 1, 6001, left=0, **extra)
        assert (answer[b"complete"], answer[b"incomplete"]) == (1, 0)
        # IPv4 leechers get P's IPv4 address, IPv6 leechers its IPv6 one; P counts once.
        answer = announce(v4, 2, 6002)
        assert ports(answer[b"peers"], 6) == [6001]
        assert answer[b"peers"][:4] == bytes([127, 0, 0, 1])
        assert (answer[b"complete"], answer[b"incomplete"]) == (1, 1)
        answer = announce(v6, 3, 6003)
        assert ports(answer[b"peers6"], 18) == [6001]
        assert answer[b"peers6"][:16] == socket.inet_pton(socket.AF_INET6, "::1")
        assert (answer[b"complete"], answer[b"incomplete"]) == (1, 2)
        # Announcing over IPv4 again hides P from neither family.
        announce(v4, 1, 6001, left=0, **extra)
        assert 6001 in ports(announce(v6, 3, 6003)[b"peers6"], 18)
        assert 6001 in ports(announce(v4, 2, 6002)[b"peers"], 6)
        # The scrape agrees: one seeder, two leechers.
        query = f"info_hash={quote_from_bytes(IH)}"
        with urllib.request.urlopen(f"{v4}/scrape?{query}", timeout=10) as r:
            files = bencodepy.decode(r.read())[b"files"]
        assert (files[IH][b"complete"], files[IH][b"incomplete"]) == (1, 2)
        # Stopping over IPv6 leaves P's IPv4 address, still counted.
        answer = announce(v6, 1, 6001, left=0, event="stopped", **extra)
        assert (answer[b"complete"], answer[b"incomplete"]) == (1, 2)
        assert ports(announce(v6, 3, 6003)[b"peers6"], 18) == []
        assert ports(announce(v4, 2, 6002)[b"peers"], 6) == [6001]
