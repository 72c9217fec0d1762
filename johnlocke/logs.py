"""Logging set-up: human-readable text or JSON lines on stderr, and masking of secrets.

Everything logs through the standard ``logging`` module under the ``johnlocke`` logger. The
access log is the ``johnlocke.access`` logger: ``[log] access_log`` sets its level, and the
HTTP server asks whether it is enabled once per connection, so when it is off a request costs
nothing at all for it.

Passkeys (and the stats token) never reach the log in full: request targets are masked where
they are logged (``mask``), and a filter on the handler masks whatever slips into any other
record's message or traceback (``redact``; aiohttp, for one, logs the request line of a request
it cannot parse).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from johnlocke.config import Config, LogConfig

ACCESS_LOGGER = "johnlocke.access"

# The attributes every LogRecord has; anything else was passed with extra= and goes in JSON.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Secrets that can be part of a request target: /announce/<passkey>, /scrape/<passkey>,
# /<passkey>/announce, /<passkey>/scrape, ?passkey= and the stats ?token=.
_SECRET_IN_PATH = re.compile(r"^(/(?:announce|scrape)/)([^/?#]+)")
_SECRET_FIRST = re.compile(r"^/([^/?#]+)(/(?:announce|scrape))(?=[/?#]|$)")
_SECRET_IN_QUERY = re.compile(r"([?&;](?:passkey|token)=)([^&;#]*)", re.IGNORECASE)
# The same anywhere in a text (a traceback, aiohttp's report of a request line).
_SECRET_ANYWHERE = re.compile(
    r"((?:passkey|token)=)([^&;#\s\"']*)"
    r"|(/(?:announce|scrape)/)([^/?#\s\"']+)"
    r"|(/)([^/?#\s\"']+)(/(?:announce|scrape))(?=[/?#\s\"']|$)",
    re.IGNORECASE,
)


def hide(secret: str) -> str:
    """A passkey or token as it may be logged."""
    # A long key keeps its first 4 characters, enough to tell users apart in a log and far
    # too few to use; a short one shows nothing.
    return (secret[:4] if len(secret) >= 16 else "") + "***"


def mask(target: str) -> str:
    """A request target (path and query) with any passkey or token masked."""
    if "/announce/" in target or "/scrape/" in target:
        target = _SECRET_IN_PATH.sub(lambda m: m.group(1) + hide(m.group(2)), target)
    if "/announce" in target or "/scrape" in target:
        target = _SECRET_FIRST.sub(lambda m: "/" + hide(m.group(1)) + m.group(2), target)
    low = target.lower()
    if "passkey=" in low or "token=" in low:
        target = _SECRET_IN_QUERY.sub(lambda m: m.group(1) + hide(m.group(2)), target)
    return target


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
