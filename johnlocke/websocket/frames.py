"""RFC 6455 frames as a server reads and writes them: bytes in, messages out, no I/O.

aiohttp parses the HTTP upgrade request (routing, passkey, client address, access log); once
the handshake is answered, the WebSocket frames of each connection are read here, with
aiohttp's C unmasking (``websocket_mask``). aiohttp's own ``WebSocketResponse`` keeps about
14 KB of Python objects per connection (the parsed request and its headers, the response, a
reader queue, a writer, the handler's task and frames) for as long as the socket is open; a
browser peer holds its socket for hours, so a tracker with 10,000 of them would spend 140 MB
on that. A ``FrameReader`` is one small object.

What is accepted: masked client frames (RFC 6455 5.1), no extension (permessage-deflate is never
offered in the handshake, so RSV bits must be zero), text and binary messages possibly split
into continuation frames, and ping/pong/close control frames of at most 125 bytes. A message
longer than ``max_size`` is refused as soon as its length is known (close code 1009), before
its payload is buffered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from struct import Struct

from aiohttp._websocket.helpers import websocket_mask

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_BAD_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_U16 = Struct("!H")
_U64 = Struct("!Q")
_HEAD2 = Struct("!BB")
_HEAD4 = Struct("!BBH")
_HEAD10 = Struct("!BBQ")
_DATA_OPS = (OP_TEXT, OP_BINARY)
# Text frame heads, ready-made for the short and bound for the others (one per message sent).
_TEXT_HEADS = tuple(_HEAD2.pack(0x81, n) for n in range(126))
_pack_head4 = _HEAD4.pack
_pack_head10 = _HEAD10.pack


class FrameError(Exception):
    """The peer broke the protocol: close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class HandshakeError(ValueError):
    """An upgrade request that is not a valid WebSocket handshake (answered with HTTP 400)."""


def accept_key(version: str | None, key: str | None) -> bytes:
    """The ``Sec-WebSocket-Accept`` value for a client's handshake headers (RFC 6455 4.2)."""
    if version != "13":
        raise HandshakeError(f"unsupported Sec-WebSocket-Version {version!r} (13 is spoken)")
    try:
        if key is None or len(base64.b64decode(key, validate=True)) != 16:
            raise HandshakeError("Sec-WebSocket-Key must be 16 bytes in base64")
    except binascii.Error:
        raise HandshakeError("Sec-WebSocket-Key must be 16 bytes in base64") from None
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _WS_GUID).digest())


def handshake_response(accept: bytes) -> bytes:
    """The server's 101 answer; no sub-protocol and no extension is ever chosen."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def encode(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame (servers never mask)."""
    n = len(payload)
    if n < 126:
        return _HEAD2.pack(0x80 | opcode, n) + payload
    if n < 65536:
        return _HEAD4.pack(0x80 | opcode, 126, n) + payload
    return _HEAD10.pack(0x80 | opcode, 127, n) + payload


def encode_text(text: bytes) -> bytes:
    """A text frame of UTF-8 ``text`` (every message the tracker sends)."""
    n = len(text)
    if n < 126:
        return _TEXT_HEADS[n] + text
    if n < 65536:
        return _pack_head4(0x81, 126, n) + text
    return _pack_head10(0x81, 127, n) + text


def encode_close(code: int, reason: str = "") -> bytes:
    return encode(OP_CLOSE, _U16.pack(code) + reason.encode()[:123])


class FrameReader:
    """One connection's incoming frames, reassembled into messages.

    ``feed(data)`` returns the complete ``(opcode, payload)`` pairs found so far: text and binary
    messages (continuations joined) and control frames, in order, and keeps what is incomplete.
    It raises ``FrameError`` for anything RFC 6455 forbids; the connection is then unusable.
    """

    __slots__ = ("max_size", "buf", "parts", "part_op", "part_len")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.buf = b""
        self.parts: list[bytes] | None = None  # a fragmented message so far
        self.part_op = 0
        self.part_len = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buf + data if self.buf else data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension agreed)")
            if not b1 & 0x80:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = _U16.unpack_from(buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = _U64.unpack_from(buf, pos + 2)[0]
                head = 10
            if opcode >= 8:
                if not fin or n > 125:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "control frames must be short and whole")
                if opcode > OP_PONG:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            elif opcode in _DATA_OPS:
                if self.parts is not None:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "a new message inside a fragmented one")
                if n > self.max_size:
                    raise FrameError(CLOSE_TOO_BIG, f"message over {self.max_size} bytes")
            elif opcode == OP_CONTINUATION:
                if self.parts is None:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
                if self.part_len + n > self.max_size:
                    raise FrameError(CLOSE_TOO_BIG, f"message over {self.max_size} bytes")
            else:
                raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            start = pos + head + 4
            if end - start < n:
                break
            payload = bytearray(buf[start : start + n])
            if n:
                websocket_mask(buf[pos + head : start], payload)
            pos = start + n
            if opcode >= 8:
                out.append((opcode, bytes(payload)))
            elif fin and opcode:
                out.append((opcode, bytes(payload)))
            elif opcode:  # the first fragment of a message
                self.parts = [bytes(payload)]
                self.part_op = opcode
                self.part_len = n
            else:
                parts = self.parts
                assert parts is not None
                parts.append(bytes(payload))
                self.part_len += n
                if fin:
                    out.append((self.part_op, b"".join(parts)))
                    self.parts = None
                    self.part_len = 0
        # What is kept is one incomplete frame whose length was checked above, so at most its
        # head (14 bytes) and max_size bytes (125 for a control frame) are ever buffered.
        self.buf = buf[pos:] if pos < end else b""
        return out
