"""Who holds a WebSocket peer's socket, and how a message reaches it.

A browser peer is stored in its swarms (the store's WebRTC family) under an 8-byte *endpoint
id*: 4 bytes naming the process that holds its socket (``tag``) and 4 bytes numbering the
connection there. An offer or an answer for a peer is delivered through a ``Relay``:

- ``LocalRelay`` (one process, the memory store): the endpoint's connection, if this process
  holds it. An endpoint with another tag is a leftover of an earlier process (a snapshot
  written before a restart): nobody holds it, and the sender removes it from the swarm.
- ``RedisRelay`` (``[store] backend = "redis"``, so also with ``--workers N`` and with several
  trackers on one Redis): every process takes a tag from one Redis counter (unique among all
  that share the prefix) and subscribes to its own channel, ``<prefix>ws:<tag>``; a message for
  another tag is published there. Redis says how many subscribers got it: none means that
  process is gone (killed, say), and the endpoint is removed from the swarm (``gone``).
  Publishes made in one turn of the event loop go out as one pipeline.

Why an offer carries the offerer's endpoint, and an answer does not look the offerer up: the
answer comes back on the socket the offer went to, so the process that delivered the offer
keeps ``offer_id -> offerer`` for that connection (``Connection.pending``). The answer is then
routed without a store round trip, and only to a peer that really made an offer to this one,
so nobody can push an unsolicited answer at any peer_id they have seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("johnlocke.websocket")


class Deliver(Protocol):
    """The local side a relay hands messages to (``johnlocke.websocket.server.Hub``)."""

    def deliver_offer(
        self, target: bytes, offerer: bytes, offer_id: str, peer_id: bytes, info_hash: bytes,
        text: bytes,
    ) -> bool: ...  # fmt: skip

    def deliver(self, target: bytes, text: bytes) -> bool: ...


class Relay(Protocol):
    """Delivery of offers and answers to endpoints, wherever their sockets are."""

    tag: bytes  # this process's 4 bytes of every endpoint id it hands out

    def offer(
        self, target: bytes, offerer: bytes, offer_id: str, peer_id: bytes, info_hash: bytes,
        text: bytes,
    ) -> bool:  # fmt: skip
        """Send an offer (``text``) to ``target``; False if it surely cannot arrive (the
        endpoint's process is gone, or its connection closed)."""
        ...

    def answer(self, target: bytes, text: bytes) -> bool:
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
        text: bytes,
    ) -> bool:  # fmt: skip
        if target[:4] != self.tag:
            return False
        return self.local.deliver_offer(target, offerer, offer_id, peer_id, info_hash, text)

    def answer(self, target: bytes, text: bytes) -> bool:
        if target[:4] != self.tag:
            return False
        return self.local.deliver(target, text)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


_OFFER = b"O"
_ANSWER = b"A"
_RETRY = 1.0  # seconds between attempts to subscribe while Redis is away


class RedisRelay:
    """Offers and answers between processes, over Redis pub/sub (see the module docstring).

    ``gone(target, peer_id, info_hash)`` is called for an offer no process received.
    """

    def __init__(
        self,
        local: Deliver,
        url: str,
        prefix: str,
        gone: Callable[[bytes, bytes, bytes], None],
        timeout: float = 2.0,
    ) -> None:
        self.local = local
        self.url = url
        self.prefix = prefix.encode()
        self.gone = gone
        self.timeout = timeout
        # A random tag until Redis hands out one (a process whose Redis is away at start still
        # serves its own sockets).
        self.tag = os.urandom(4)
        self.client: Any = None
        # Publishes waiting for this turn's pipeline (non-empty: its flush is scheduled).
        self._out: list[tuple[bytes, bytes, tuple[bytes, bytes, bytes] | None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.subscribed = asyncio.Event()

    def _channel(self, tag: bytes) -> bytes:
        return self.prefix + b"ws:" + tag.hex().encode()

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.from_url(self.url, socket_connect_timeout=self.timeout)
        with contextlib.suppress(Exception):
            n = await asyncio.wait_for(self.client.incr(self.prefix + b"ws:tags"), self.timeout)
            self.tag = (n & 0xFFFFFFFF).to_bytes(4, "big")
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        for task in list(self._flushes):
            with contextlib.suppress(Exception):
                await task
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
            self.client = None

    # --- sending ---------------------------------------------------------------------------

    def offer(
        self, target: bytes, offerer: bytes, offer_id: str, peer_id: bytes, info_hash: bytes,
        text: bytes,
    ) -> bool:  # fmt: skip
        tag = target[:4]
        if tag == self.tag:
            return self.local.deliver_offer(target, offerer, offer_id, peer_id, info_hash, text)
        payload = b"".join(
            (_OFFER, target, offerer, peer_id, info_hash, offer_id.encode("latin-1"), text)
        )
        self._send(self._channel(tag), payload, (target, peer_id, info_hash))
        return True

    def answer(self, target: bytes, text: bytes) -> bool:
        tag = target[:4]
        if tag == self.tag:
            return self.local.deliver(target, text)
        self._send(self._channel(tag), _ANSWER + target + text, None)
        return True

    def _send(
        self, channel: bytes, payload: bytes, peer: tuple[bytes, bytes, bytes] | None
    ) -> None:
        if not self._out:
            task = asyncio.get_running_loop().create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        self._out.append((channel, payload, peer))

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let this turn's other publishes join the pipeline
        out, self._out = self._out, []
        if self.client is None:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, payload, _ in out:
                    pipe.publish(channel, payload)
                received = await asyncio.wait_for(pipe.execute(), self.timeout)
        except Exception as exc:
            log.warning("cannot relay %d WebSocket messages through Redis: %s", len(out), exc)
            return
        for (_, _, peer), n in zip(out, received, strict=True):
            if not n and peer is not None:
                self.gone(*peer)

    # --- receiving ------------------------------------------------------------------------

    async def _listen(self) -> None:
        channel = self._channel(self.tag)
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message.get("type") == "message":
                        self._deliver(message["data"])
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:
                self.subscribed.clear()
                log.warning("WebSocket relay: Redis subscription lost (%s); retrying", exc)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(_RETRY)

    def _deliver(self, data: bytes) -> None:
        kind = data[:1]
        target = data[1:9]
        try:
            if kind == _OFFER:
                offerer = data[9:17]
                peer_id = data[17:37]
                info_hash = data[37:57]
                offer_id = data[57:77].decode("latin-1")
                self.local.deliver_offer(target, offerer, offer_id, peer_id, info_hash, data[77:])
            elif kind == _ANSWER:
                self.local.deliver(target, data[9:])
        except Exception:
            log.exception("WebSocket relay: a relayed message could not be delivered")
