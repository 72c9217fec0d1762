"""A BEP 15 client for the tests, on a real socket.

Datagrams are built and read here by hand, with ``struct``, not with ``johnlocke.udp.codec``, so
that the tracker and its tests cannot share a mistake about the wire format.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

MAGIC = (0x41727101980).to_bytes(8, "big")
# UDP's own event numbers (BEP 15).
NONE, COMPLETED, STARTED, STOPPED = 0, 1, 2, 3


def announce_datagram(
    cid: bytes,
    txid: int,
    info_hash: bytes,
    peer_id: bytes,
    *,
    downloaded: int = 0,
    left: int = 0,
    uploaded: int = 0,
    event: int = NONE,
    ip: bytes = b"\0\0\0\0",
    key: int = 0,
    numwant: int = -1,
    port: int = 6881,
    options: bytes = b"",
) -> bytes:
    """An announce (action 1) as BEP 15 lays it out, with BEP 41 ``options`` after it."""
    return (
        cid
        + struct.pack(">II", 1, txid)
        + info_hash
        + peer_id
        + struct.pack(">qqqI", downloaded, left, uploaded, event)
        + ip
        + struct.pack(">IiH", key, numwant, port)
        + options
    )


def scrape_datagram(cid: bytes, txid: int, *hashes: bytes) -> bytes:
    """A scrape (action 2): the header, then 20 bytes per info_hash."""
    return cid + struct.pack(">II", 2, txid) + b"".join(hashes)


def url_option(url: bytes) -> bytes:
    """BEP 41 URLData options carrying ``url`` (split into 255-byte pieces)."""
    return b"".join(
        b"\x02" + bytes([len(url[i : i + 255])]) + url[i : i + 255] for i in range(0, len(url), 255)
    )


@dataclass
class Announced:
    interval: int
    leechers: int
    seeders: int
    peers: list[bytes] = field(default_factory=list)  # compact addresses (6 or 18 bytes)


class UdpError(Exception):
    """The tracker answered with an error packet (action 3); the message is ``args[0]``."""


class UdpClient:
    """One client socket talking to the tracker at ``host``:``port``."""

    def __init__(self, host: str, port: int, timeout: float = 2.0, source: str = "") -> None:
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.peer_size = 18 if self.family == socket.AF_INET6 else 6
        self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.cid = b""
        self.txid = 1000

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def next_txid(self) -> int:
        self.txid += 1
        return self.txid

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next datagram, or None if none comes within ``timeout`` (default: the socket's)."""
        old = self.sock.gettimeout()
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return None
        finally:
            self.sock.settimeout(old)

    def exchange(self, data: bytes) -> bytes:
        """Send ``data`` and return the answer (which must echo its transaction id)."""
        self.send(data)
        answer = self.recv()
        if answer is None:
            raise TimeoutError("no answer from the tracker")
        assert answer[4:8] == data[12:16], "the answer's transaction id is not the request's"
        return answer

    def connect(self) -> bytes:
        answer = self.exchange(MAGIC + struct.pack(">II", 0, self.next_txid()))
        assert len(answer) == 16 and answer[:4] == b"\0\0\0\0", answer
        self.cid = answer[8:16]
        return self.cid

    def _read(self, answer: bytes, action: int) -> bytes:
        kind = struct.unpack_from(">I", answer)[0]
        if kind == 3:
            raise UdpError(answer[8:].decode("utf-8"))
        assert kind == action, answer[:40]
        return answer[8:]

    def announce(self, info_hash: bytes, peer_id: bytes, **fields: object) -> Announced:
        """An announce on this client's connection id; ``fields`` as for ``announce_datagram``.
        Raises ``UdpError`` with the tracker's message if it refuses."""
        data = announce_datagram(self.cid, self.next_txid(), info_hash, peer_id, **fields)  # type: ignore[arg-type]
        body = self._read(self.exchange(data), 1)
        interval, leechers, seeders = struct.unpack_from(">III", body)
        peers = body[12:]
        assert len(peers) % self.peer_size == 0, len(peers)
        return Announced(
            interval,
            leechers,
            seeders,
            [peers[i : i + self.peer_size] for i in range(0, len(peers), self.peer_size)],
        )

    def scrape(self, *hashes: bytes) -> list[tuple[int, int, int]]:
        """(seeders, completed, leechers) per hash, in the order asked."""
        body = self._read(self.exchange(scrape_datagram(self.cid, self.next_txid(), *hashes)), 2)
        assert len(body) == 12 * len(hashes), len(body)
        return [struct.unpack_from(">III", body, 12 * i) for i in range(len(hashes))]


def compact(host: str, port: int) -> bytes:
    """A peer's compact address as trackers send it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.inet_pton(family, host) + port.to_bytes(2, "big")
