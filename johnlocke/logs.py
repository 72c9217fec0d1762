"""Logging set-up: human-readable text or JSON lines on stderr, and masking of secrets.

Everything logs through the standard ``logging`` module under the ``johnlocke`` logger. The
access log is the ``johnlocke.access`` logger: ``[log] access_log`` sets its level, and the
HTTP server asks whether it is enabled once per connection, so when it is off a request costs
nothing at all for it.

Passkeys (and the stats token) never reach the log in full. This module is the one place that
knows how: a request target is masked from what the parser finds in it (``mask``, built on
``johnlocke.bittorrent.target_path``, the code that finds the passkey for the tracker), so a key
is hidden in whatever form it arrived; header values logged with it are masked too
(``mask_request``); and a filter on the handler masks whatever slips into any other record's
message or traceback (``redact``, by patterns, as those are free text; aiohttp, for one, logs the
request line of a request it cannot parse).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from johnlocke.bittorrent import target_path
from johnlocke.config import Config, LogConfig

ACCESS_LOGGER = "johnlocke.access"

# The attributes every LogRecord has; anything else was passed with extra= and goes in JSON.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Secrets that can be part of a text (a traceback, aiohttp's report of a request line, a header
# value): ?passkey=, the stats ?token=, /announce/<passkey>, /<passkey>/announce and scrape's.
_SECRET_ANYWHERE = re.compile(
    r"((?:passkey|token)=)([^&;#\s\"']*)"
    r"|(/(?:announce|scrape)/)([^/?#\s\"']+)"
    r"|(/)([^/?#\s\"']+)(/(?:announce|scrape))(?=[/?#\s\"']|$)",
    re.IGNORECASE,
)
_SECRET_PARAMS = (b"passkey", b"token")
# A secret found in a request is also hidden wherever else it appears in the same log line
# (a header value), if it is this long: shorter ones would hide ordinary words.
_MIN_ECHOED_SECRET = 8


def hide(secret: str) -> str:
    """A passkey or token as it may be logged."""
    # A long key keeps its first 4 characters, enough to tell users apart in a log and far
    # too few to use; a short one shows nothing.
    return (secret[:4] if len(secret) >= 16 else "") + "***"


def _hidden(raw: bytes) -> bytes:
    """``hide`` for a secret as it came in a URL (maybe percent-encoded), kept URL-safe."""
    shown = hide(unquote_to_bytes(raw).decode("utf-8", "replace"))
    return quote(shown[:-3], safe="").encode("ascii") + b"***"


def _mask_query(query: bytes, found: list[bytes]) -> bytes:
    pieces = re.split(rb"([&;])", query)
    for i in range(0, len(pieces), 2):
        name, eq, value = pieces[i].partition(b"=")
        if b"%" in name:
            name = unquote_to_bytes(name)
        if eq and value and name.lower() in _SECRET_PARAMS:
            found.append(value)
            pieces[i] = pieces[i][: -len(value)] + _hidden(value)
    return b"".join(pieces)


def _mask_target(target: bytes | str) -> tuple[str, list[bytes]]:
    raw = target.encode("utf-8", "surrogateescape") if isinstance(target, str) else target
    path, sep, query = raw.partition(b"?")
    found: list[bytes] = []
    if path != b"/announce" and path != b"/scrape":
        # The path as the tracker reads it (bittorrent.target_path, which also finds the passkey):
        # a key hidden behind "..", "//" or an absolute-form target is where the parser sees it,
        # and segments the parser drops are not logged at all.
        _, key_at, segments = target_path(path)
        if key_at >= 0:
            found.append(segments[key_at])
            segments[key_at] = _hidden(segments[key_at])
        path = b"/" + b"/".join(segments)
    if sep:
        path += b"?" + _mask_query(query, found)
    return path.decode("utf-8", "backslashreplace"), found


def _printable(text: str) -> str:
    """Text from a request (undecodable bytes kept as surrogates) with those bytes as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def mask(target: bytes | str) -> str:
    """A request target (path and query; or BEP 41 URL data) as it may be logged.

    The path is logged as the tracker reads it (``johnlocke.bittorrent.target_path``) with its
    passkey hidden; in the query, every ``passkey`` and ``token`` value is hidden, whatever the
    escapes in its name. Bytes that are not UTF-8 are shown as ``\\xNN``.
    """
    return _mask_target(target)[0]


def mask_request(target: bytes | str, values: Iterable[str]) -> tuple[str, list[str]]:
    """``mask(target)``, and the header ``values`` to log with it with every secret hidden: any
    that the target carried (in any form), and any a tracker URL in the value would carry."""
    line, found = _mask_target(target)
    secrets = set()
    for raw in found:
        for form in (raw, unquote_to_bytes(raw)):
            if len(form) >= _MIN_ECHOED_SECRET:
                secrets.add(form.decode("utf-8", "surrogateescape"))
    out = []
    for value in values:
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, hide(secret))
        out.append(_printable(redact(value)))
    return line, out


def redact(text: str) -> str:
    """Any text with every passkey or token of a tracker URL in it masked."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(1) + hide(m.group(2))
        if m.group(3):
            return m.group(3) + hide(m.group(4))
        return m.group(5) + hide(m.group(6)) + m.group(7)

    return _SECRET_ANYWHERE.sub(sub, text)


class RedactSecrets(logging.Filter):
    """A handler filter: masks passkeys and tokens in every record's message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACCESS_LOGGER:
            return True  # built from masked parts already
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact(text), None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        t = record.created
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
            + f".{int(t % 1 * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


_handler: logging.Handler | None = None


def setup(config: LogConfig, verbose: bool = False) -> None:
    """(Re)configure logging; called at start and on every reload."""
    global _handler
    root = logging.getLogger()
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.addFilter(RedactSecrets())
        root.addHandler(_handler)
    _handler.setFormatter(
        JsonFormatter() if config.format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    root.setLevel("DEBUG" if verbose else config.level.upper())
    # Access lines are INFO records; they are written when access_log is on, whatever the level.
    logging.getLogger(ACCESS_LOGGER).setLevel(
        logging.INFO if config.access_log else logging.CRITICAL
    )


class LogService:
    """Applies ``[log]`` on SIGHUP (a ``johnlocke.service`` part)."""

    name = "log"

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def reload(self, config: Config) -> None:
        setup(config.log, self.verbose)


RARE_EVERY = 60.0  # seconds between two lines of one RareWarning


class RareWarning:
    """A warning logged at most once a minute (a full server refusing connections: every
    refusal would be a line), saying how often it happened since the line before."""

    def __init__(self, logger: logging.Logger, text: str) -> None:
        self.logger = logger
        self.text = text  # its last %d is the count
        self.count = 0
        self._logged = 0
        self._at = -RARE_EVERY

    def __call__(self, *args: object) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._at >= RARE_EVERY:
            self.logger.warning(self.text, *args, self.count - self._logged)
            self._at = now
            self._logged = self.count
