"""Who a client is: its address, from the connection or, behind a trusted proxy, from a header.

Transport-neutral (no aiohttp): a frontend passes the connection's source address and the
values of the one forwarding header it was told to believe (``RealIp.header``); UDP, which has
no headers, passes none. Addresses are packed bytes (4 for IPv4, 16 for IPv6; IPv4-mapped IPv6
becomes IPv4), as everywhere in the tracker.

A forwarding header may arrive as several lines, and a proxy that appends (HAProxy's ``option
forwardfor``) adds its own line after whatever the client sent. Several lines of one field are
one comma-separated list (RFC 9110, section 5.3), so every line counts, in order. The list is
read from the right, where the closest proxy wrote: each hop that is itself a trusted proxy is
skipped, and the first one that is not is the client. What lies to its left was written by the
client or by proxies we do not know, and is never believed. Only one header is read: a proxy that
sets ``X-Real-IP`` but passes the client's own ``X-Forwarded-For`` through (nginx does both by
default) must not let the client choose its address through the other one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from socket import AF_INET, AF_INET6, inet_pton

from johnlocke.errors import ClientError

_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
DEFAULT_HEADER = "X-Forwarded-For"


def pack_ip(host: str) -> bytes:
    """A textual address to 4 or 16 packed bytes; IPv4-mapped IPv6 becomes IPv4."""
    try:
        return inet_pton(AF_INET, host)
    except OSError:
        packed = inet_pton(AF_INET6, host.partition("%")[0])
        return packed[12:] if packed[:12] == _V4_MAPPED else packed


def address_group(packed: bytes) -> bytes:
    """What per-address limits count by: an IPv4 address, or an IPv6 address's /64 (one
    subscriber usually has a whole /64)."""
    return packed[:8]


def _hop(text: str) -> IPv4Address | IPv6Address | None:
    """One hop of a forwarding header: an address, possibly with a port (some proxies add it:
    ``192.0.2.1:4711``, ``[2001:db8::1]:4711``); None if it is neither."""
    host, port = text, ""
    if text.startswith("["):
        host, close, port = text[1:].partition("]")
        if not close or (port and port[:1] != ":"):
            return None
        port = port[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if port and not port.isdigit():
        return None
    try:
        addr = ip_address(host)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class RealIp:
    """The client's address: the connection's source, or the forwarded one from a trusted proxy.

    ``trusted`` are the proxies' networks (``[http] trusted_proxies``); ``header`` names the one
    forwarding header believed from them (``[http] real_ip_header``).
    """

    __slots__ = ("trusted", "header")

    def __init__(
        self, trusted: Sequence[IPv4Network | IPv6Network] = (), header: str = DEFAULT_HEADER
    ) -> None:
        self.trusted = tuple(trusted)
        self.header = header

    def is_trusted(self, host: str) -> bool:
        """Whether a textual address is one of the trusted proxies."""
        if not self.trusted:
            return False
        addr = ip_address(host.partition("%")[0])
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.trusted)

    def resolve(self, peer: str, forwarded: Iterable[str] = ()) -> tuple[bytes, bool]:
        """The client's packed address, and whether it came through a trusted proxy.

        ``peer`` is the connection's source address as text; ``forwarded`` the values of every
        line of ``header`` in the order received (ignored unless ``peer`` is trusted). Raises
        ClientError if a trusted proxy sent a hop that is not an address.
        """
        if not self.trusted or not self.is_trusted(peer):
            return pack_ip(peer), False
        hops = ",".join(forwarded).split(",")
        for text in reversed(hops):
            text = text.strip()
            if not text:
                continue
            addr = _hop(text)
            if addr is None:
                raise ClientError(f"proxy sent an unreadable {self.header}")
            if not any(addr in net for net in self.trusted):
                return addr.packed, True
        # Nothing but trusted proxies (or no header at all): the closest one is the client.
        return pack_ip(peer), True
