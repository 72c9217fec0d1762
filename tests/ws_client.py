"""A WebTorrent-style client for the tests: JSON messages over a real WebSocket.

It speaks as npm ``bittorrent-tracker``'s WebSocket client does: 20-character latin-1
``info_hash``/``peer_id``/``offer_id``, offers as ``{type, sdp}`` objects.
"""

from __future__ import annotations

import json
import os
from typing import Any

import aiohttp


def text(raw: bytes) -> str:
    return raw.decode("latin-1")


class WsPeer:
    """One socket (a browser page): announces, scrapes, and the messages it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, peer_id: bytes | None = None) -> None:
        self.ws = ws
        self.peer_id = (
            peer_id if peer_id is not None else b"-WW0300-" + os.urandom(6).hex().encode()[:12]
        )

    async def send(self, doc: dict[str, Any] | str) -> None:
        await self.ws.send_str(doc if isinstance(doc, str) else json.dumps(doc))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text message, got {msg!r}"
        return json.loads(msg.data)

    async def nothing(self, wait: float = 0.3) -> None:
        """Assert that nothing arrives within ``wait`` seconds."""
        try:
            msg = await self.ws.receive(timeout=wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message: {msg!r}")

    async def announce(
        self, info_hash: bytes, offers: int = 0, *, offer_ids: list[bytes] | None = None,
        **fields: Any,
    ) -> list[bytes]:  # fmt: skip
        """Send an announce with ``offers`` offers; return their offer ids."""
        ids = offer_ids or [os.urandom(20) for _ in range(offers)]
        doc: dict[str, Any] = {
            "action": "announce",
            "info_hash": text(info_hash),
            "peer_id": text(self.peer_id),
            "numwant": len(ids),
            "uploaded": 0,
            "downloaded": 0,
            "left": 100,
        }
        doc.update(fields)
        if ids:
            doc["offers"] = [
                {"offer_id": text(i), "offer": {"type": "offer", "sdp": f"v=0 offer {i.hex()}"}}
                for i in ids
            ]
        await self.send(doc)
        return ids

    async def answer(self, info_hash: bytes, to_peer_id: str, offer_id: str, sdp: str) -> None:
        await self.send(
            {
                "action": "announce",
                "info_hash": text(info_hash),
                "peer_id": text(self.peer_id),
                "to_peer_id": to_peer_id,
                "offer_id": offer_id,
                "answer": {"type": "answer", "sdp": sdp},
            }
        )

    async def close(self) -> None:
        await self.ws.close()
