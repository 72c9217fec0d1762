"""The WebTorrent tracker messages: JSON text in, parsed announces and scrapes out; answers,
relayed offers and failures out as JSON text. No I/O. Text is handled as its UTF-8 bytes, the
payload of a WebSocket text frame, in and out.

WebTorrent clients (npm ``bittorrent-tracker``'s WebSocket client) send one JSON object per
text message. ``info_hash``, ``peer_id``, ``to_peer_id`` and ``offer_id`` are 20-character
strings whose code points are the bytes (latin-1), so they stay binary-safe; here they become
``bytes`` (``offer_id`` stays the string: it is only ever echoed). What a client sends:

- ``{"action": "announce", info_hash, peer_id, event?, numwant?, uploaded?, downloaded?, left?,
  offers?: [{offer_id, offer}]}``: join or refresh a swarm; each offer (an SDP object, passed on
  as it is) goes to a different peer of the swarm.
- ``{"action": "announce", info_hash, peer_id, to_peer_id, offer_id, answer}``: the answer to
  an offer this peer received, for the peer that made it.
- ``{"action": "scrape", info_hash?: one string or a list}``.

A client ignores any reply that does not name its info_hash, so failures carry ``action`` and
``info_hash`` whenever the message had a readable one. Numbers are whole.

JSON is read and written with orjson when it is installed (a dependency; several times faster
than the standard library, which is the fallback and gives the same messages): parsing the
offers and writing them out again is most of what relaying costs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from johnlocke.bittorrent import (
    EVENT_COMPLETED,
    EVENT_NONE,
    EVENT_PAUSED,
    EVENT_STARTED,
    EVENT_STOPPED,
    AnnounceRequest,
    ScrapeRow,
)
from johnlocke.errors import ClientError

_EVENTS = {
    "started": EVENT_STARTED,
    "completed": EVENT_COMPLETED,
    "stopped": EVENT_STOPPED,
    "paused": EVENT_PAUSED,
    "update": EVENT_NONE,
    "": EVENT_NONE,
}
# A left the client cannot tell (a magnet link before its metadata: JavaScript's NaN, sent as
# null) makes a leecher, never a seeder.
UNKNOWN_LEFT = 1 << 62
_MAX_COUNT = (1 << 63) - 1

_loads: Callable[[bytes], Any]
_dump: Callable[[Any], bytes]
try:
    import orjson

    _loads = orjson.loads
    _dump = orjson.dumps
except ImportError:  # pragma: no cover - orjson is a dependency; this is the fallback
    _loads = json.loads  # bytes in: UTF-8 (or UTF-16/32 with a BOM) is detected
    _encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def _dump(obj: Any) -> bytes:
        return _encode(obj).encode("utf-8", "surrogatepass")


class MessageError(ClientError):
    """A message refused with ``reason``; ``action`` and ``info_hash`` (the 20-character text) are
    what the failure should carry so that the client reads it (None when unreadable)."""

    def __init__(self, reason: str, action: str | None = None, info_hash: str | None = None):
        super().__init__(reason)
        self.action = action
        self.info_hash = info_hash


class Announce:
    """A parsed ``announce``: the tracker's request, plus what is relayed.

    ``offers`` is a list of ``(offer_id, offer)`` (the offer object as parsed: it is written
    out once, inside the message that relays it), at most the limit the parser was given;
    ``answer`` is the answer as JSON bytes, with ``to_peer_id`` and
    ``offer_id``, or None. ``info_hash_text`` and ``peer_id_text`` are the 20-character forms,
    for replies.
    """

    __slots__ = (
        "request",
        "info_hash_text",
        "peer_id_text",
        "offers",
        "answer",
        "to_peer_id",
        "offer_id",
    )

    def __init__(
        self,
        request: AnnounceRequest,
        info_hash_text: str,
        peer_id_text: str,
        offers: list[tuple[str, dict[str, Any]]] | None = None,
        answer: bytes | None = None,
        to_peer_id: bytes | None = None,
        offer_id: str | None = None,
    ) -> None:
        self.request = request
        self.info_hash_text = info_hash_text
        self.peer_id_text = peer_id_text
        self.offers = offers
        self.answer = answer
        self.to_peer_id = to_peer_id
        self.offer_id = offer_id


class Scrape:
    """A parsed ``scrape``: the info_hashes asked (empty: every torrent), with their texts."""

    __slots__ = ("info_hashes", "texts")

    def __init__(self, info_hashes: list[bytes], texts: list[str]) -> None:
        self.info_hashes = info_hashes
        self.texts = texts


def binary(value: Any, name: str, action: str, info_hash: str | None = None) -> bytes:
    """A 20-character latin-1 string as its 20 bytes, or MessageError naming the field."""
    if type(value) is str and len(value) == 20:
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            pass
    raise MessageError(
        f"{name} must be a string of 20 characters (bytes as code points 0-255)",
        action,
        info_hash,
    )


def _count(params: dict[str, Any], name: str, info_hash: str, missing: int = 0) -> int:
    value = params.get(name)
    if value is None:
        return missing
    if type(value) is int:
        if 0 <= value <= _MAX_COUNT:
            return value
    elif type(value) is float and 0 <= value <= _MAX_COUNT:  # JavaScript numbers
        return int(value)
    raise MessageError(f"{name} must be a whole number of bytes", "announce", info_hash)


def parse(text: bytes, max_offers: int) -> Announce | Scrape:
    """One client message (a text frame's UTF-8 bytes). Raises ``MessageError`` naming the
    first problem.

    At most ``max_offers`` offers are kept (the rest are ignored, as a tracker that caps
    numwant would); each must be an object with a 20-character ``offer_id`` and an ``offer``
    object.
    """
    try:
        params = _loads(text)
    except (ValueError, RecursionError):  # orjson's JSONDecodeError is a ValueError
        raise MessageError("message is not valid JSON") from None
    if type(params) is not dict:
        raise MessageError("message must be a JSON object")
    action = params.get("action")
    if action == "announce":
        return _announce(params, max_offers)
    if action == "scrape":
        return _scrape(params)
    if action is None:
        raise MessageError("missing action (announce or scrape)")
    raise MessageError("unknown action (announce or scrape)")


def _announce(params: dict[str, Any], max_offers: int) -> Announce:
    ih_text = params.get("info_hash")
    info_hash = binary(ih_text, "info_hash", "announce")
    peer_id_text = params.get("peer_id")
    peer_id = binary(peer_id_text, "peer_id", "announce", ih_text)
    answer = params.get("answer")
    if answer is not None:
        if type(answer) is not dict:
            raise MessageError("answer must be an object", "announce", ih_text)
        to_peer_id = binary(params.get("to_peer_id"), "to_peer_id", "announce", ih_text)
        offer_id = params.get("offer_id")
        binary(offer_id, "offer_id", "announce", ih_text)
        request = AnnounceRequest(info_hash, peer_id, 1)
        return Announce(request, ih_text, peer_id_text, None, _dump(answer), to_peer_id, offer_id)
    event = params.get("event")
    if event is None:
        code = EVENT_NONE
    else:
        code = _EVENTS.get(event) if type(event) is str else None
        if code is None:
            raise MessageError(
                "unknown event (started, completed, stopped, paused or none)", "announce", ih_text
            )
    offers_in = params.get("offers")
    offers: list[tuple[str, dict[str, Any]]] | None = None
    if offers_in is not None and code != EVENT_STOPPED:
        if type(offers_in) is not list:
            raise MessageError("offers must be a list", "announce", ih_text)
        offers = []
        append = offers.append
        for item in offers_in[:max_offers]:
            # Checked inline (this runs for every offer): an object with a 20-character
            # latin-1 offer_id and an offer object; anything else names the offer.
            if type(item) is dict:
                offer_id = item.get("offer_id")
                offer = item.get("offer")
                if type(offer) is dict and type(offer_id) is str and len(offer_id) == 20:
                    try:
                        offer_id.encode("latin-1")
                    except UnicodeEncodeError:
                        pass
                    else:
                        append((offer_id, offer))
                        continue
            _bad_offer(len(offers), item, ih_text)
    request = AnnounceRequest(
        info_hash,
        peer_id,
        1,  # no port: a browser is reached through the tracker, by its WebSocket
        _count(params, "uploaded", ih_text),
        _count(params, "downloaded", ih_text),
        _count(params, "left", ih_text, UNKNOWN_LEFT),
        code,
        False,  # the tracker hands back (endpoint, peer_id) pairs: who gets each offer
        False,
        len(offers) if offers else 0,
    )
    return Announce(request, ih_text, peer_id_text, offers)


def _bad_offer(i: int, item: Any, info_hash: str) -> None:
    """Raise the MessageError that says what is wrong with ``offers[i]``."""
    if type(item) is not dict:
        raise MessageError(f"offers[{i}] must be an object", "announce", info_hash)
    binary(item.get("offer_id"), f"offers[{i}].offer_id", "announce", info_hash)
    raise MessageError(f"offers[{i}].offer must be an object", "announce", info_hash)


def _scrape(params: dict[str, Any]) -> Scrape:
    asked = params.get("info_hash")
    if asked is None:
        return Scrape([], [])
    if type(asked) is str:
        asked = [asked]
    elif type(asked) is not list:
        raise MessageError("info_hash must be a string or a list of strings", "scrape")
    return Scrape([binary(h, "info_hash", "scrape") for h in asked], asked)


# --- what the tracker sends ------------------------------------------------------------------


def text_of(raw: bytes) -> str:
    """Bytes as the 20-character string clients use."""
    return raw.decode("latin-1")


def encode_announce(
    info_hash_text: str,
    interval: int,
    min_interval: int,
    complete: int,
    incomplete: int,
    warning: str | None = None,
) -> bytes:
    """The reply to an announce (the offers go to other peers, not back)."""
    extra = b',"warning message":' + _dump(warning) if warning else b""
    return (
        b'{"action":"announce","info_hash":%s,"interval":%d,"min interval":%d,"complete":%d,'
        b'"incomplete":%d%s}'
    ) % (_dump(info_hash_text), interval, min_interval, complete, incomplete, extra)


def offer_head(info_hash_text: str, peer_id_text: str) -> bytes:
    """What every offer of one announce starts with (``encode_offer_after`` writes the rest)."""
    return b'{"action":"announce","info_hash":%s,"peer_id":%s,"offer_id":' % (
        _dump(info_hash_text),
        _dump(peer_id_text),
    )


def encode_offer_after(head: bytes, offer_id: str, offer: dict[str, Any]) -> bytes:
    """An offer relayed to a peer: ``head`` (``offer_head``), then its id and the offer."""
    return b"".join((head, _dump(offer_id), b',"offer":', _dump(offer), b"}"))


def encode_answer(info_hash_text: str, peer_id_text: str, offer_id: str, answer: bytes) -> bytes:
    """An answer relayed to the peer that made the offer."""
    return b"".join(
        (
            b'{"action":"announce","info_hash":', _dump(info_hash_text), b',"peer_id":',
            _dump(peer_id_text), b',"offer_id":', _dump(offer_id), b',"answer":', answer, b"}",
        )
    )  # fmt: skip


def encode_scrape(rows: list[ScrapeRow]) -> bytes:
    files = {text_of(ih): {"complete": c, "incomplete": i, "downloaded": d} for ih, c, i, d in rows}
    return _dump({"action": "scrape", "files": files})


def encode_failure(reason: str, action: str | None = None, info_hash: str | None = None) -> bytes:
    doc: dict[str, str] = {}
    if action is not None:
        doc["action"] = action
    if info_hash is not None:
        doc["info_hash"] = info_hash
    doc["failure reason"] = reason
    return _dump(doc)
