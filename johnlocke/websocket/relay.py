"""Who holds a WebSocket peer's socket, and how a message reaches it.

A browser peer is stored in its swarms (the store's WebRTC family) under an 8-byte *endpoint
id*: 4 bytes naming the process that holds its socket (``tag``) and 4 bytes numbering the
connection there. An offer or an answer for a peer is delivered through a ``Relay``:

- ``LocalRelay`` (one process, the memory store): the endpoint's connection, if this process
  holds it. An endpoint with another tag is a leftover of an earlier process (a snapshot
  written before a restart): nobody holds it, and the sender removes it from the swarm.
- A relay over Redis pub/sub for several workers (``[store] backend = "redis"`` with
  ``--workers N``) publishes on the channel of the endpoint's tag; every worker subscribes to
  its own. Not built yet: it needs the Redis store.

Why an offer carries the offerer's endpoint, and an answer does not look the offerer up: the
answer comes back on the socket the offer went to, so the process that delivered the offer
keeps ``offer_id -> offerer`` for that connection (``Connection.pending``). The answer is then
routed without a store round trip, and only to a peer that really made an offer to this one,
so nobody can push an unsolicited answer at any peer_id they have seen.
"""

from __future__ import annotations

import os
from typing import Protocol


class Deliver(Protocol):
    """The local side a relay hands messages to (``johnlocke.websocket.server.Hub``)."""

    def deliver_offer(
        self, target: bytes, offerer: bytes, offer_id: str, peer_id: bytes, info_hash: bytes,
        text: str,
    ) -> bool: ...  # fmt: skip

    def deliver(self, target: bytes, text: str) -> bool: ...


class Relay(Protocol):
    """Delivery of offers and answers to endpoints, wherever their sockets are."""

    tag: bytes  # this process's 4 bytes of every endpoint id it hands out

    def offer(
        self, target: bytes, offerer: bytes, offer_id: str, peer_id: bytes, info_hash: bytes,
        text: str,
    ) -> bool:  # fmt: skip
        """Send an offer (``text``) to ``target``; False if it surely cannot arrive (the
        endpoint's process is gone, or its connection closed)."""
        ...

    def answer(self, target: bytes, text: str) -> bool:
        """Send an answer (``text``) to ``target``; False as for ``offer``."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class LocalRelay:
    """Every socket is in this process."""

    def __init__(self, local: Deliver, tag: bytes | None = None) -> None:
        self.local = local
        self.tag = tag if tag is not None else os.urandom(4)

    def offer(
        self, target: bytes, offerer: bytes, offer_id: str, peer_id: bytes, info_hash: bytes,
        text: str,
    ) -> bool:  # fmt: skip
        if target[:4] != self.tag:
            return False
        return self.local.deliver_offer(target, offerer, offer_id, peer_id, info_hash, text)

    def answer(self, target: bytes, text: str) -> bool:
        if target[:4] != self.tag:
            return False
        return self.local.deliver(target, text)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
