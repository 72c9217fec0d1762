"""HTTPS for the listeners: the TLS context, and the certificate reloaded on SIGHUP.

One ``ssl.SSLContext`` serves every listener (TLS 1.2 and newer only). ``load_cert_chain`` on a
live context applies to the handshakes that start afterwards: each connection already open keeps
the certificate it was set up with, so a renewed certificate drops no connection and no swarm.
A new pair is loaded into a scratch context first, so a missing, unreadable, malformed,
encrypted or mismatched file is refused with the running certificate left as it was; every
refusal names the key (``[http] tls_cert`` or ``tls_key``) and the file.

A TLS listener accepts plain TCP and the connection guard of ``johnlocke.http.server`` runs the
handshake (``_TlsGuard``): a connection is counted against ``[http] max_connections`` and its
address's share from the moment it is accepted, and ``[http] request_timeout`` covers the
handshake and the first request head together (asyncio alone would give a handshake 60 seconds,
uncounted).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from pathlib import Path

from aiohttp import web

from johnlocke.config import Config, ConfigError, HttpConfig

log = logging.getLogger("johnlocke.http")

_CERT = b"-----BEGIN CERTIFICATE-----"
_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"[http] {key}: {path}: cannot read: {exc.strerror or exc}") from None


def _no_passphrase() -> bytes:
    raise ConfigError("encrypted")


def _load(context: ssl.SSLContext, http: HttpConfig) -> None:
    cert, key = http.tls_cert, http.tls_key
    if _CERT not in _read("tls_cert", cert):
        raise ConfigError(f"[http] tls_cert: {cert}: no PEM certificate in it")
    if key:
        if not _KEY.search(_read("tls_key", key)):
            raise ConfigError(f"[http] tls_key: {key}: no PEM private key in it")
    elif not _KEY.search(_read("tls_cert", cert)):
        raise ConfigError(f"[http] tls_cert: {cert}: no private key in it (set tls_key)")
    where = f"[http] tls_key: {key}" if key else f"[http] tls_cert: {cert}"
    try:
        context.load_cert_chain(cert, key or None, password=_no_passphrase)
    except ConfigError:
        raise ConfigError(
            f"{where}: the private key is encrypted, and a daemon cannot ask for its"
            " passphrase: store it unencrypted, readable only by the tracker"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"{where}: the key does not belong to the certificate") from None
        raise ConfigError(
            f"[http] tls_cert: cannot use {cert} with {key or 'its key'}: {exc}"
        ) from None


def make_context(http: HttpConfig) -> ssl.SSLContext:
    """A server context for ``[http] tls_cert``/``tls_key``, or ConfigError naming the key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, http)
    return context


class Certificate:
    """The listeners' TLS context as a service: SIGHUP re-reads the files into it."""

    name = "tls"

    def __init__(self, http: HttpConfig) -> None:
        self.http = http
        self.context = make_context(http)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def reload(self, config: Config) -> None:
        http = config.http
        if not http.tls_cert:
            log.warning("[http] tls_cert is now empty: HTTPS stays on until a restart")
            return
        make_context(http)  # a bad pair raises here, before the live context is touched
        _load(self.context, http)
        self.http = http
        log.info("TLS certificate reloaded from %s", http.tls_cert)


class Site(web.BaseSite):
    """A TLS listener on one address whose handshakes must finish within ``handshake_timeout``."""

    __slots__ = ("_host", "_port", "_handshake_timeout", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        handshake_timeout: float,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._handshake_timeout = handshake_timeout
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"https://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        # Plain TCP: the connection guard runs each handshake itself, inside its caps.
        self._server = await asyncio.get_running_loop().create_server(
            self._runner.tls_server(self._ssl_context, self._handshake_timeout),  # type: ignore[attr-defined]
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )
