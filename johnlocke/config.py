"""The configuration: one TOML file, validated strictly.

Every model is frozen and forbids unknown keys, so a misspelled key stops start-up instead of
being silently ignored. ``load`` turns every failure into a ``ConfigError`` with one line per
problem, each naming the file (or the command-line flag the value came from, see
``johnlocke.flags``), the key and what was expected; the CLI prints them all and exits without a
traceback.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(Exception):
    """A configuration that cannot be used; the message is meant for the operator as is."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# "auto" for [http] max_connections_per_ip: this share of max_connections.
AUTO_PER_IP_SHARE = 8
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class HttpConfig(_Section):
    host: list[str] = Field(default_factory=lambda: ["0.0.0.0", "::"])
    port: int = Field(default=6969, ge=0, le=65535)
    trusted_proxies: list[IPv4Network | IPv6Network] = Field(default_factory=list)
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    keepalive_timeout: float = Field(default=15.0, ge=0)
    shutdown_timeout: float = Field(default=5.0, ge=0)
    # A new connection must deliver its first complete request head within this many seconds.
    request_timeout: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=4096, ge=1)
    # HTTPS: PEM files, relative to the config file; "" for plain HTTP. An empty tls_key means
    # the key is in the tls_cert file.
    tls_cert: str = ""
    tls_key: str = ""
    # Most connections one address (an IPv6 /64) may hold; "auto" is an eighth of the cap.
    max_connections_per_ip: Literal["auto"] | int = "auto"
    # The one forwarding header believed from trusted_proxies.
    real_ip_header: str = "X-Forwarded-For"

    @property
    def connections_per_ip(self) -> int:
        """The per-address connection limit in effect (0: none)."""
        if self.max_connections_per_ip == "auto":
            return max(1, self.max_connections // AUTO_PER_IP_SHARE)
        return self.max_connections_per_ip

    @field_validator("max_connections_per_ip", mode="before")
    @classmethod
    def _auto_or_count(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and value >= 0):
            return value
        raise ValueError('must be "auto" (an eighth of max_connections) or a number (0: no limit)')

    @field_validator("real_ip_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.fullmatch(value):
            raise ValueError('must be a header name, such as "X-Forwarded-For" or "X-Real-IP"')
        return value

    @field_validator("host", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("host")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one address to listen on")
        for host in value:
            if host != "localhost":
                ip_address(host)  # ValueError names the bad address
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [ip_network(v, strict=False) if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _tls(self) -> HttpConfig:
        if self.tls_key and not self.tls_cert:
            raise ValueError("tls_key needs tls_cert (the certificate chain it goes with)")
        return self


class UdpConfig(_Section):
    """The UDP tracker (BEP 15): the same tracker as over HTTP, on its own socket(s)."""

    enabled: bool = True
    # None: the same addresses as [http] host; port None: the same number as [http] port.
    host: list[str] | None = None
    port: int | None = Field(default=None, ge=0, le=65535)
    # A connection id is accepted for between half of this and this many seconds.
    connection_id_lifetime: int = Field(default=120, ge=2, le=86400)
    # SO_RCVBUF in bytes (0: the system's default); the kernel may cap it (net.core.rmem_max).
    receive_buffer: int = Field(default=4 * 1024 * 1024, ge=0, le=1 << 30)
    # "": a random secret per process. Processes sharing a port must share a secret.
    secret: str = ""

    @field_validator("host", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return HttpConfig._one_or_many(value)

    @field_validator("host")
    @classmethod
    def _addresses(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else HttpConfig._addresses(value)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if value and (len(value) < 16 or not value.isprintable()):
            raise ValueError("must be empty (a random secret) or at least 16 printable characters")
        return value


class AnnounceConfig(_Section):
    interval: int = Field(default=1800, ge=1)
    min_interval: int = Field(default=900, ge=0)
    numwant_default: int = Field(default=50, ge=0)
    numwant_max: int = Field(default=200, ge=0)
    peer_timeout: int = Field(default=3960, ge=1)
    sweep_interval: int = Field(default=60, ge=1)
    allow_ip_param: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> AnnounceConfig:
        if self.min_interval > self.interval:
            raise ValueError("min_interval must not exceed interval")
        if self.numwant_default > self.numwant_max:
            raise ValueError("numwant_default must not exceed numwant_max")
        if self.peer_timeout <= self.interval:
            raise ValueError(
                "peer_timeout must exceed interval, or every peer expires between announces"
            )
        return self


class ScrapeConfig(_Section):
    full_scrape: bool = False
    full_scrape_interval: int = Field(default=600, ge=0)
    max_hashes: int = Field(default=100, ge=1)


# peer_id prefixes are matched on bytes; ASCII keeps what the operator typed equal to the bytes.
_PREFIX_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


class AccessConfig(_Section):
    mode: Literal["open", "listed", "private"] = "open"
    torrents_dir: str = ""
    allow_list: str = ""
    deny_list: str = ""
    passkeys: str = ""
    rescan_interval: int = Field(default=60, ge=0)
    client_allow: list[str] = Field(default_factory=list)
    client_deny: list[str] = Field(default_factory=list)

    @field_validator("client_allow", "client_deny")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if not prefix or len(prefix) > 20 or not set(prefix) <= _PREFIX_CHARS:
                raise ValueError(
                    f"{prefix!r} is not a peer_id prefix (1 to 20 printable ASCII characters,"
                    ' such as "-qB" or "-TR")'
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AccessConfig:
        if self.mode != "open" and not (self.torrents_dir or self.allow_list):
            raise ValueError(
                f'mode "{self.mode}" tracks only listed torrents: set torrents_dir or allow_list'
            )
        if self.mode == "private" and not self.passkeys:
            raise ValueError('mode "private" needs a passkeys file')
        return self


class LimitsConfig(_Section):
    enforce_min_interval: bool = False
    max_peers_per_ip: int = Field(default=0, ge=0, le=250)
    max_new_swarms_per_ip: int = Field(default=0, ge=0)


class StrategyRule(_Section):
    """Use another strategy for some swarms: by info_hash, or by swarm size (first match wins)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    info_hashes: list[str] = Field(default_factory=list)
    min_peers: int | None = Field(default=None, ge=0)
    max_peers: int | None = Field(default=None, ge=0)

    @field_validator("info_hashes")
    @classmethod
    def _hex(cls, value: list[str]) -> list[str]:
        for h in value:
            if len(h) != 40 or any(c not in "0123456789abcdefABCDEF" for c in h):
                raise ValueError(f"{h!r} is not a 40-character hex info_hash")
        return [h.lower() for h in value]

    @model_validator(mode="after")
    def _has_condition(self) -> StrategyRule:
        if not self.info_hashes and self.min_peers is None and self.max_peers is None:
            raise ValueError("a rule needs info_hashes, min_peers or max_peers")
        return self


class StrategyConfig(_Section):
    name: str = "random"
    options: dict[str, Any] = Field(default_factory=dict)
    # Folders searched for NAME.py strategy files; relative to the config file's folder.
    paths: list[Path] = Field(default_factory=list)
    rules: list[StrategyRule] = Field(default_factory=list)


# Paths the stats page must not take: the tracker's own endpoints (and their passkey forms).
_RESERVED_PATHS = ("/announce", "/scrape", "/stats", "/metrics")


class StatsConfig(_Section):
    allow: Literal["auto"] | list[IPv4Network | IPv6Network] = "auto"
    token: str = ""
    page: str = "/"
    top: int = Field(default=10, ge=0, le=1000)
    client_sample: int = Field(default=8, ge=1)
    history_interval: int = Field(default=10, ge=1, le=60)

    @field_validator("allow", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "auto":
            raise ValueError('must be "auto" or a list of CIDRs such as ["10.0.0.0/8"]')
        if isinstance(value, list):
            return [ip_network(v, strict=False) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        if value and (len(value) < 16 or not value.isprintable() or " " in value):
            raise ValueError("must be empty or at least 16 printable characters without spaces")
        return value

    @field_validator("page")
    @classmethod
    def _page(cls, value: str) -> str:
        if value == "":
            return value
        if not value.startswith("/") or any(c in value for c in "?#{} \t"):
            raise ValueError('must be a path such as "/" or "/status", or "" for no page')
        for reserved in _RESERVED_PATHS:
            if value == reserved or value.startswith(reserved + "/"):
                raise ValueError(f"{reserved} is taken by the tracker itself")
        return value


class StateConfig(_Section):
    # "" disables snapshots; a relative path is relative to the configuration file's directory.
    path: str = "johnlocke.snapshot"
    snapshot_interval: int = Field(default=300, ge=1)

    @field_validator("path")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if value.endswith(("/", "\\")) or value in (".", ".."):
            raise ValueError('must name a file, not a directory (or be "" to disable snapshots)')
        if "\0" in value:
            raise ValueError("must not contain a NUL character")
        return value


class StoreConfig(_Section):
    """Where swarms live: this process's memory, or Redis (shared by every process)."""

    backend: Literal["memory", "redis"] = "memory"
    url: str = "redis://127.0.0.1:6379/0"
    cluster: bool = False
    prefix: str = "jl:"
    timeout: float = Field(default=2.0, gt=0, le=60)
    pool: int = Field(default=200, ge=1, le=5000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "must be a redis://, rediss:// (TLS) or unix:// URL, such as"
                ' "redis://127.0.0.1:6379/0"'
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not 0 < len(value) <= 64 or not value.isprintable() or set(value) & set("{} "):
            raise ValueError("must be 1 to 64 printable characters without spaces, { or }")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StoreConfig:
        if self.cluster and self.url.startswith("unix://"):
            raise ValueError("cluster = true needs a redis:// or rediss:// URL")
        return self


class WorkersConfig(_Section):
    # Tracker processes sharing the listening ports (SO_REUSEPORT); more than 1 needs Redis.
    count: int = Field(default=1, ge=1, le=256)


class WebTorrentConfig(_Section):
    """Browser peers (WebTorrent): a WebSocket upgrade of /announce on the HTTP listener."""

    enabled: bool = True
    # Bytes of one message (a few offers' SDP are some KB each).
    max_message_size: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    # Offers relayed per announce; "auto" is [announce] numwant_max (more are ignored).
    max_offers: Literal["auto"] | int = "auto"
    # Most WebSocket connections open at once (apart from [http] max_connections).
    max_connections: int = Field(default=10000, ge=1)
    # Most torrents one connection may announce (a browser tab shares one socket for all).
    max_swarms_per_connection: int = Field(default=256, ge=1)
    # Seconds of silence before the tracker pings; a ping unanswered for ping_timeout closes.
    ping_interval: float = Field(default=30.0, gt=0)
    ping_timeout: float = Field(default=30.0, gt=0)
    # Seconds without an announce or scrape before a connection is closed ("auto": the
    # [announce] peer_timeout, after which its peers would be forgotten anyway).
    idle_timeout: Literal["auto"] | float = "auto"
    # Messages per second one connection may send on average, and in a burst; more are dropped.
    message_rate: float = Field(default=20.0, gt=0)
    message_burst: int = Field(default=100, ge=1)

    @field_validator("max_offers", mode="before")
    @classmethod
    def _auto_offers(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        raise ValueError('must be "auto" ([announce] numwant_max) or a number of at least 1')

    @field_validator("idle_timeout", mode="before")
    @classmethod
    def _auto_idle(cls, value: Any) -> Any:
        if value == "auto" or (type(value) in (int, float) and value > 0):
            return value
        raise ValueError('must be "auto" ([announce] peer_timeout) or a number of seconds')


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    access_log: bool = False


class Config(_Section):
    http: HttpConfig = Field(default_factory=HttpConfig)
    udp: UdpConfig = Field(default_factory=UdpConfig)
    announce: AnnounceConfig = Field(default_factory=AnnounceConfig)
    scrape: ScrapeConfig = Field(default_factory=ScrapeConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    webtorrent: WebTorrentConfig = Field(default_factory=WebTorrentConfig)


def workers_refused(config: Config, count: int) -> str | None:
    """Why ``count`` worker processes cannot run with this configuration (None: they can)."""
    if count > 1 and config.store.backend == "memory":
        return (
            f'{count} workers need [store] backend = "redis": with the memory store every'
            " process would keep swarms of its own, and peers announcing to different workers"
            " would never see each other"
        )
    return None


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the operator wrote it: ``[announce] interval``."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2:
        return f"[{parts[0]}] {'.'.join(parts[1:])}"
    if parts:
        return f"[{parts[0]}]"
    return "top level"


def _message(err: Any) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown key (check the spelling against tracker.toml)"
    if err["type"] == "value_error":
        return msg.removeprefix("Value error, ")
    if "input" in err and err["type"] != "missing":
        return f"{msg} (got {err['input']!r})"
    return msg


def _involved(section: str, message: str) -> list[str]:
    """The keys of a section that a cross-key error message names, in the section's order."""
    model = Config.model_fields[section].annotation if section in Config.model_fields else None
    fields = getattr(model, "model_fields", {})
    return [k for k in fields if re.search(rf"\b{re.escape(k)}\b", message)]


def _problem(
    err: Any, data: dict[str, Any], source: str, flags: Mapping[tuple[str, str], str]
) -> str:
    """One error as the operator should read it: where the value came from, the key, why."""
    loc, msg = tuple(err["loc"]), _message(err)
    section = str(loc[0]) if loc else ""
    if len(loc) >= 2 and (section, str(loc[1])) in flags:
        return f"{flags[section, str(loc[1])]}: {_where(loc)}: {msg}"
    if len(loc) == 1 and err["type"] == "value_error":
        # A rule across keys of one section: name every source that set one of them.
        keys = _involved(section, msg)
        flagged = [k for k in keys if (section, k) in flags]
        if flagged:
            first = flagged[0]
            given = data.get(section, {})
            others = [
                f"{k} = {_toml(given[k])} from "
                + (flags[section, k] if (section, k) in flags else f"{source} [{section}] {k}")
                for k in keys
                if k != first and isinstance(given, dict) and k in given
            ]
            also = f" ({'; '.join(others)})" if others else ""
            return f"{flags[section, first]}: [{section}] {first}: {msg}{also}"
    return f"{source}: {_where(loc)}: {msg}"


def validate(
    data: dict[str, Any],
    source: str = "<config>",
    flags: Mapping[tuple[str, str], str] | None = None,
) -> Config:
    """The Config for parsed TOML ``data`` from ``source``, or ConfigError listing every problem.

    ``flags`` names the command-line flag that set a ``(section, key)`` (its value is already in
    ``data``), so that a problem with that value names the flag rather than the file.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(err, data, source, flags or {}) for err in exc.errors()]
        raise ConfigError("\n".join(dict.fromkeys(problems))) from None


def read(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """The parsed TOML of a configuration file, or ConfigError naming the file (as ``name``)."""
    path = Path(path)
    name = str(path) if name is None else name
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file (pass --config PATH)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None


def with_base(config: Config, base: Path) -> Config:
    """``config`` with the paths read outside ``[access]`` and ``[state]`` made absolute.

    Strategy folders and the TLS files are relative to the config file, not to wherever the
    daemon starts (``[access]`` and ``[state]`` resolve theirs against the same folder later).
    """
    if config.strategy.paths:
        paths = [p if p.is_absolute() else base / p for p in config.strategy.paths]
        config = config.model_copy(
            update={"strategy": config.strategy.model_copy(update={"paths": paths})}
        )
    tls = {
        key: str(base / Path(value).expanduser())
        for key in ("tls_cert", "tls_key")
        if (value := getattr(config.http, key))
    }
    if tls:
        config = config.model_copy(update={"http": config.http.model_copy(update=tls)})
    return config


def load(path: str | Path) -> Config:
    path = Path(path)
    return with_base(validate(read(path), str(path)), path.resolve().parent)


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def dump(config: Config, notes: Mapping[tuple[str, str], str] | None = None) -> str:
    """The effective configuration as TOML (every key, defaults included); ``notes`` become a
    comment after their ``(section, key)`` (where a value came from)."""
    notes = notes or {}
    lines = []
    for section, values in config.model_dump(mode="json").items():
        tables: list[str] = []
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                for item in value:  # an array of tables, such as [[strategy.rules]]
                    tables.append(f"[[{section}.{key}]]")
                    tables.extend(f"{k} = {_toml(v)}" for k, v in item.items() if v is not None)
                    tables.append("")
            elif value is not None:
                note = notes.get((section, key))
                lines.append(f"{key} = {_toml(value)}" + (f"  # {note}" if note else ""))
        lines.append("")
        lines.extend(tables)
    return "\n".join(lines)
