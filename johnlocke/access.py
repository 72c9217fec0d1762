"""Who may use the tracker: the mode, the torrents folder, allow/deny lists, passkeys, client
rules, and the per-address budgets of the abuse limits. No aiohttp here.

Theory of operation
-------------------
Everything the announce path consults lives in one ``Rules`` object of plain frozensets, dicts
and tuples, so every check is a set or dict lookup (``str.startswith`` with a short tuple for
client prefixes). ``Rules`` is never changed in place: a reload or rescan builds a new one and
swaps it in with one assignment, so a request sees either the old rules or the new ones, never
a mix. ``Access.active`` is False when there is nothing to check (open mode, no lists, no client
rules, no hybrid torrents): the tracker then skips ``admit`` after one attribute test.

Reading files is the slow part (a folder may hold thousands of .torrent files, a list millions
of lines), so ``_load`` runs in a worker thread (``asyncio.to_thread``) and only returns new
objects; the event loop swaps them in. Each source (a .torrent file, a list, the passkeys file)
is remembered with its ``(mtime_ns, size, inode)`` stamp, and a periodic rescan re-reads only
what changed. A source that disappears or cannot be read at runtime keeps its last good
contents (and the error is logged once): an unmounted folder must not untrack everything. At
start-up and on SIGHUP a missing source is a configuration error instead.

Hybrid torrents (BEP 52) have two info-hashes: SHA-1 of the info dict (v1 clients) and SHA-256
of it truncated to 20 bytes (v2 clients). ``Rules.alias`` maps the v2 one to the v1 one, and the
tracker applies it before touching the store, so both kinds of client are one swarm: counted
once (libtorrent 2 announces both hashes with one peer_id), scraped alike under either hash.
Which hash an announce used still matters for the peers it gets (``proto``, see
``johnlocke.store``): clients greet a peer with the hash of the answer that named it.

When a torrent stops being tracked (its file is removed, it leaves the allow list or joins the
deny list, the mode changes), its swarm is dropped from the store at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

import bencodepy
from bencodepy.decoder import BencodeDecoder

from johnlocke.config import AccessConfig, Config, ConfigError
from johnlocke.errors import ClientError
from johnlocke.logs import hide
from johnlocke.service import cancel_task
from johnlocke.store import Store

log = logging.getLogger("johnlocke.admission")

OPEN = 0
LISTED = 1
PRIVATE = 2
_MODES = {"open": OPEN, "listed": LISTED, "private": PRIVATE}

# Bigger .torrent files exist only for v2 torrents with huge piece layers; anything past this is
# not a torrent someone shares with their family, and would cost memory to parse.
MAX_TORRENT_FILE = 64 * 1024 * 1024
# Passkeys go into URLs: only unreserved URL characters, so every client sends them verbatim.
_PASSKEY = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_SHORT_PASSKEY = 16
# Bad lines of one file logged individually; the rest are counted.
_MAX_LINE_ERRORS = 10

NO_PASSKEY = (
    "this is a private tracker: the announce URL has no passkey"
    " (use the personal announce URL you were given)"
)
BAD_PASSKEY = (
    "this is a private tracker: unknown passkey (use the personal announce URL you were given)"
)
UNREGISTERED = "unregistered torrent: this tracker only tracks the torrents it was given"
DENIED = "this torrent is banned on this tracker"


def mask(key: bytes | str) -> str:
    """A passkey as it may appear in a log (see ``johnlocke.logs.hide``)."""
    return hide(key.decode("utf-8", "replace") if isinstance(key, bytes) else key)


def client_label(peer_id: bytes) -> str:
    """The client-identifying start of a peer_id, printable (``-qB4650-``, ``M7-2-3--``)."""
    return "".join(chr(b) if 0x21 <= b < 0x7F else "?" for b in peer_id[:8])


# --- parsing ---------------------------------------------------------------------------------


class TorrentError(ValueError):
    """A .torrent file that cannot be tracked; the message says why."""


_DECODER = BencodeDecoder()  # bytes keys and values: the info dict is hashed, not read as text


def torrent_hashes(data: bytes) -> tuple[bytes | None, bytes | None]:
    """(v1 info_hash, v2 info_hash truncated to 20 bytes) of a .torrent file; one may be None.

    The hashes are over the info dict's bytes exactly as they are in the file (clients hash
    those, not a re-encoding). bencode.py's own decoder walks the top-level dict to find them.
    """
    try:
        if data[:1] != b"d":
            raise TorrentError("not a bencoded dictionary")
        info_raw = info = None
        f = 1
        while data[f : f + 1] != b"e":
            key, f = _DECODER.decode_string(data, f)
            start = f
            value, f = _DECODER.decode_func[data[f : f + 1]](data, f, depth=1)
            if key == b"info":
                info_raw, info = data[start:f], value
        if f + 1 != len(data):
            raise TorrentError("data after the end of the torrent")
    except TorrentError:
        raise
    except (
        IndexError,
        KeyError,
        TypeError,
        ValueError,
        RecursionError,
        bencodepy.BencodeDecodeError,
    ):
        raise TorrentError("not valid bencode") from None
    if not isinstance(info, dict) or info_raw is None:
        raise TorrentError("no info dictionary")
    if not isinstance(info.get(b"piece length"), int) or info[b"piece length"] <= 0:
        raise TorrentError("info has no valid piece length")
    v1 = v2 = None
    pieces = info.get(b"pieces")
    if pieces is not None:
        if not isinstance(pieces, bytes) or len(pieces) % 20:
            raise TorrentError("info pieces is not a list of SHA-1 hashes")
        v1 = hashlib.sha1(info_raw).digest()
    meta_version = info.get(b"meta version")
    if meta_version == 2:
        if not isinstance(info.get(b"file tree"), dict):
            raise TorrentError("v2 info has no file tree")
        v2 = hashlib.sha256(info_raw).digest()[:20]
    elif meta_version is not None:
        raise TorrentError(f"unsupported meta version {meta_version!r}")
    if v1 is None and v2 is None:
        raise TorrentError("info has neither v1 pieces nor a v2 file tree")
    return v1, v2


def parse_info_hash(text: str) -> bytes:
    """An info_hash as people write it: 40 hex digits, 32 base32 characters (magnet links), or
    a full 64-hex v2 hash (truncated to the 20 bytes the tracker protocol carries)."""
    try:
        if len(text) == 40:
            return bytes.fromhex(text)
        if len(text) == 32:
            return base64.b32decode(text.upper())
        if len(text) == 64:
            return bytes.fromhex(text)[:20]
    except (ValueError, binascii.Error):
        pass
    raise ValueError("not an info_hash (40 hex digits, 32 base32 characters or 64 hex digits)")


def _lines(text: str) -> Iterable[tuple[int, str]]:
    """(line number, content) without comments and blank lines."""
    for n, line in enumerate(text.splitlines(), 1):
        line = line.partition("#")[0].strip()
        if line:
            yield n, line


class _Problems:
    """Collects one file's bad lines; logs the first few and counts the rest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def __call__(self, line: int, why: str) -> None:
        self.count += 1
        if self.count <= _MAX_LINE_ERRORS:
            log.warning("%s line %d: %s; line skipped", self.path, line, why)

    def done(self) -> None:
        if self.count > _MAX_LINE_ERRORS:
            log.warning("%s: %d more bad lines skipped", self.path, self.count - _MAX_LINE_ERRORS)


def parse_hash_list(text: str, path: Path) -> frozenset[bytes]:
    bad = _Problems(path)
    out = set()
    for n, line in _lines(text):
        try:
            out.add(parse_info_hash(line.split()[0]))
        except ValueError as exc:
            bad(n, str(exc))
    bad.done()
    return frozenset(out)


def parse_passkeys(text: str, path: Path) -> dict[bytes, str]:
    """``KEY [label]`` per line. Bad or repeated keys are logged (masked) and skipped."""
    bad = _Problems(path)
    out: dict[bytes, str] = {}
    short = 0
    for n, line in _lines(text):
        key, _, label = line.partition(" ")
        key, _, rest = key.partition("\t")
        label = (rest + " " + label).strip()
        if not _PASSKEY.fullmatch(key):
            bad(n, f"passkey {mask(key)} is not 1-128 letters, digits or ._~-")
            continue
        raw = key.encode("ascii")
        if raw in out:
            bad(n, f"passkey {mask(key)} repeats an earlier line")
            continue
        short += len(key) < _SHORT_PASSKEY
        out[raw] = label
    bad.done()
    if short:
        log.warning(
            "%s: %d passkeys are shorter than %d characters and easy to guess"
            " (make them with: python3 -c 'import secrets; print(secrets.token_hex(16))')",
            path,
            short,
            _SHORT_PASSKEY,
        )
    return out


# --- the rules -------------------------------------------------------------------------------


class Rules:
    """What ``admit`` checks; built whole and never changed once published."""

    __slots__ = (
        "mode",
        "allowed",
        "denied",
        "alias",
        "hybrid",
        "passkeys",
        "allow",
        "deny",
        "active",
    )

    def __init__(
        self,
        mode: int = OPEN,
        allowed: frozenset[bytes] = frozenset(),
        denied: frozenset[bytes] = frozenset(),
        alias: dict[bytes, bytes] | None = None,
        passkeys: dict[bytes, str] | None = None,
        allow: tuple[bytes, ...] = (),
        deny: tuple[bytes, ...] = (),
    ) -> None:
        self.mode = mode
        self.allowed = allowed  # every listed info_hash, v1 and v2 alike
        self.denied = denied
        self.alias = alias or {}  # v2 info_hash -> v1 info_hash of hybrid torrents
        self.hybrid = frozenset(self.alias.values())  # their v1 info_hashes
        self.passkeys = passkeys or {}  # passkey -> label
        self.allow = allow  # peer_id prefixes; empty: every client
        self.deny = deny
        self.active = bool(mode or denied or self.alias or allow or deny)

    def admitted(self, info_hash: bytes) -> bool:
        """Whether announces for this (canonical or alias) info_hash are accepted."""
        if info_hash in self.denied:
            return False
        return self.mode == OPEN or info_hash in self.allowed


class _Source:
    """One file's (or the folder's) last good contents, its stamp and its current error."""

    __slots__ = ("path", "stamp", "value", "error")

    def __init__(
        self, path: Path, stamp: tuple[int, int, int] | None, value: object, error: str = ""
    ) -> None:
        self.path = path
        self.stamp = stamp
        self.value = value
        self.error = error


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_mtime_ns, st.st_size, st.st_ino


class _Loaded:
    """What one load produced: every source, and the torrents folder's files."""

    __slots__ = ("sources", "torrents")

    def __init__(
        self,
        sources: dict[str, _Source],
        torrents: dict[str, tuple[tuple[int, int, int], bytes | None, bytes | None]],
    ) -> None:
        self.sources = sources  # "allow_list" / "deny_list" / "passkeys" -> _Source
        self.torrents = torrents  # path -> (stamp, v1, v2); broken files have (stamp, None, None)


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _read_list(key: str, path: Path, old: _Source | None, strict: bool, force: bool) -> _Source:
    """Re-read a list file if it changed (or ``force``); keep the old contents if it broke."""
    try:
        st = path.stat()
        stamp = _stamp(st)
        if not force and old is not None and old.stamp == stamp and not old.error:
            return old
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        message = f"{path}: cannot read: {why}"
        if strict:
            raise ConfigError(f"[access] {key}: {message}") from None
        if old is None:
            old = _Source(path, None, frozenset() if key != "passkeys" else {})
        elif old.error == message:
            return old  # still broken: nothing new, nothing to log
        log.error("%s (keeping what it listed before)", message)
        return _Source(path, old.stamp, old.value, message)
    if old is not None and old.error:
        log.info("%s is readable again", path)
    if key == "passkeys":
        return _Source(path, stamp, parse_passkeys(text, path))
    return _Source(path, stamp, parse_hash_list(text, path))


def _scan_folder(
    root: Path,
    old: dict[str, tuple[tuple[int, int, int], bytes | None, bytes | None]],
    strict: bool,
    error: str,
) -> tuple[dict[str, tuple[tuple[int, int, int], bytes | None, bytes | None]], str]:
    """Every *.torrent under ``root`` (recursively; dot-files are skipped, as editors and sync
    tools write partial files there), parsing only new or changed ones."""
    if not root.is_dir():
        message = f"{root}: no such directory" if not root.exists() else f"{root}: not a directory"
        if strict:
            raise ConfigError(f"[access] torrents_dir: {message}")
        if message != error:
            log.error("torrents_dir %s (keeping the torrents found before)", message)
        return old, message
    if error:
        log.info("torrents_dir %s is readable again", root)
    found: dict[str, tuple[tuple[int, int, int], bytes | None, bytes | None]] = {}
    walk_errors: list[OSError] = []
    for folder, dirs, files in os.walk(root, onerror=walk_errors.append):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or not name.lower().endswith(".torrent"):
                continue
            path = os.path.join(folder, name)
            try:
                stamp = _stamp(os.stat(path))
            except OSError:
                continue  # removed while we looked
            prev = old.get(path)
            if prev is not None and prev[0] == stamp:
                found[path] = prev
                continue
            found[path] = (stamp, *_parse_torrent_file(path, stamp[1]))
    # A subfolder we cannot read is logged; the readable part is tracked.
    for exc in walk_errors:
        log.warning("torrents_dir: cannot read %s: %s", exc.filename, exc.strerror)
    return found, ""


def _parse_torrent_file(path: str, size: int) -> tuple[bytes | None, bytes | None]:
    try:
        if size > MAX_TORRENT_FILE:
            raise TorrentError(f"larger than {MAX_TORRENT_FILE // (1024 * 1024)} MiB")
        with open(path, "rb") as fh:
            data = fh.read(MAX_TORRENT_FILE + 1)
        return torrent_hashes(data)
    except TorrentError as exc:
        log.warning("skipping torrent file %s: %s", path, exc)
    except OSError as exc:
        log.warning("skipping torrent file %s: cannot read: %s", path, exc.strerror or exc)
    return None, None


def _load(config: Config, base: Path, old: _Loaded | None, strict: bool, force: bool) -> _Loaded:
    """Read every configured source (in a worker thread); only changed ones unless ``force``."""
    a = config.access
    old_sources = old.sources if old is not None else {}
    sources: dict[str, _Source] = {}
    for key in ("allow_list", "deny_list", "passkeys"):
        value = getattr(a, key)
        if value:
            path = _resolve(base, value)
            prev = old_sources.get(key)
            if prev is not None and prev.path != path:
                prev = None
            sources[key] = _read_list(key, path, prev, strict, force)
    torrents: dict[str, tuple[tuple[int, int, int], bytes | None, bytes | None]] = {}
    if a.torrents_dir:
        root = _resolve(base, a.torrents_dir)
        prev = old_sources.get("torrents_dir")
        if prev is not None and prev.path != root:
            prev = None
        torrents, error = _scan_folder(
            root,
            old.torrents if (old is not None and prev is not None) else {},
            strict,
            prev.error if prev is not None else "",
        )
        sources["torrents_dir"] = _Source(root, None, None, error)
    return _Loaded(sources, torrents)


def _rules(config: Config, loaded: _Loaded) -> tuple[Rules, int, int]:
    """The Rules for a config and what was loaded; also (torrents, hybrids) for the log."""
    a = config.access
    allowed: set[bytes] = set()
    alias: dict[bytes, bytes] = {}
    torrents = hybrids = 0
    for _, v1, v2 in loaded.torrents.values():
        if v1 is None and v2 is None:
            continue
        torrents += 1
        if v1 is not None:
            allowed.add(v1)
        if v2 is not None:
            allowed.add(v2)
            if v1 is not None:
                alias[v2] = v1
                hybrids += 1

    def value(key: str, empty: object) -> object:
        src = loaded.sources.get(key)
        return empty if src is None else src.value

    allowed |= value("allow_list", frozenset())  # type: ignore[arg-type]
    # Denying either hash of a hybrid torrent denies the torrent.
    denied = set(value("deny_list", frozenset()))  # type: ignore[call-overload]
    if denied and alias:
        for v2, v1 in alias.items():
            if v1 in denied or v2 in denied:
                denied.update((v1, v2))
    rules = Rules(
        _MODES[a.mode],
        frozenset(allowed),
        frozenset(denied),
        alias,
        value("passkeys", {}) if a.mode == "private" else {},  # type: ignore[arg-type]
        tuple(p.encode("ascii") for p in a.client_allow),
        tuple(p.encode("ascii") for p in a.client_deny),
    )
    return rules, torrents, hybrids


def _refresh(
    config: Config,
    base: Path,
    old_loaded: _Loaded | None,
    old: Rules,
    strict: bool,
    started: bool,
) -> tuple[_Loaded, Rules, set[bytes], int, int] | None:
    """Load (``strict``: everything, else what changed) and build the new rules and the hashes
    that stopped being tracked; None when a periodic rescan found nothing new. In a thread."""
    loaded = _load(config, base, old_loaded, strict, strict)
    if started and not strict and old_loaded is not None:
        same_sources = all(
            loaded.sources[k] is old_loaded.sources.get(k)
            for k in loaded.sources
            if k != "torrents_dir"
        )
        folder, old_folder = (
            loaded.sources.get("torrents_dir"),
            old_loaded.sources.get("torrents_dir"),
        )
        same_folder = (folder is None and old_folder is None) or (
            folder is not None
            and old_folder is not None
            and folder.error == old_folder.error
            and loaded.torrents == old_loaded.torrents
        )
        if same_sources and same_folder:
            return None
    rules, torrents, hybrids = _rules(config, loaded)
    gone = set(rules.denied - old.denied)
    if rules.mode and old.mode:
        gone |= old.allowed - rules.allowed
    return loaded, rules, gone, torrents, hybrids


# --- the service -----------------------------------------------------------------------------


class Access:
    """The access rules as a service: loads them at start, on SIGHUP and every
    ``rescan_interval`` seconds, and answers the tracker's ``admit`` questions."""

    name = "access"

    def __init__(
        self, config: Config, store: Store, base_dir: str | os.PathLike[str] = "."
    ) -> None:
        self.config = config
        self.store = store
        self.base = Path(base_dir)
        # Until start() has read the files, a listed or private tracker admits nothing.
        self.rules = Rules(_MODES[config.access.mode])
        self.active = self.rules.active
        self._loaded: _Loaded | None = None
        self._lock = asyncio.Lock()
        self._started = False  # the first load always builds the rules
        self._task: asyncio.Task[None] | None = None
        self._summary = ""

    # --- the hot path ------------------------------------------------------------------------

    def admit(self, info_hash: bytes, peer_id: bytes, passkey: bytes | None) -> tuple[bytes, int]:
        """Check one announce, or raise ClientError. Return the info_hash its swarm is kept
        under and, for a hybrid torrent, which of its hashes was used (1: v1, 2: v2; else 0).
        Only called when ``active``."""
        r = self.rules
        if r.mode == PRIVATE and passkey not in r.passkeys:
            raise ClientError(NO_PASSKEY if not passkey else BAD_PASSKEY)
        if r.deny and peer_id.startswith(r.deny):
            raise ClientError(
                f"your BitTorrent client ({client_label(peer_id)}) is banned on this tracker"
            )
        if r.allow and not peer_id.startswith(r.allow):
            raise ClientError(
                f"your BitTorrent client ({client_label(peer_id)}) is not one this tracker accepts"
            )
        if info_hash in r.denied:
            raise ClientError(DENIED)
        if r.mode and info_hash not in r.allowed:
            raise ClientError(UNREGISTERED)
        v1 = r.alias.get(info_hash)
        if v1 is not None:
            return v1, 2
        return info_hash, 1 if info_hash in r.hybrid else 0

    def check_passkey(self, passkey: bytes | None) -> None:
        r = self.rules
        if r.mode == PRIVATE and passkey not in r.passkeys:
            raise ClientError(NO_PASSKEY if not passkey else BAD_PASSKEY)

    def scrape_keys(self, info_hashes: list[bytes]) -> list[tuple[bytes, bytes]]:
        """(asked, stored under) for each asked info_hash that may be scraped; others are left
        out of the answer. The passkey was checked already."""
        r = self.rules
        alias = r.alias
        return [(h, alias.get(h, h)) for h in info_hashes if r.admitted(h)]

    def filter_rows(
        self, rows: list[tuple[bytes, int, int, int]]
    ) -> list[tuple[bytes, int, int, int]]:
        """A full scrape's rows without the swarms that are not (or no longer) tracked."""
        r = self.rules
        return [row for row in rows if r.admitted(row[0])]

    # --- loading -----------------------------------------------------------------------------

    async def refresh(self, config: Config | None = None, *, strict: bool = False) -> None:
        """Re-read what changed (everything with ``strict``, which raises ConfigError for a
        missing source instead of keeping the old contents) and apply ``config``."""
        async with self._lock:
            config = config or self.config
            old = self.rules
            # Reading, parsing and building the new sets (maybe millions of hashes) all happen
            # off the event loop; only the swap and the drops happen on it.
            done = await asyncio.to_thread(
                _refresh, config, self.base, self._loaded, old, strict, self._started
            )
            self._started = True
            if done is None:
                return  # nothing changed
            loaded, rules, gone, torrents, hybrids = done
            # Published together: from here on every request sees the new rules.
            self.config, self._loaded, self.rules, self.active = config, loaded, rules, rules.active
            await self._drop_untracked(old, rules, gone)
            self._log_summary(rules, torrents, hybrids)

    async def _drop_untracked(self, old: Rules, new: Rules, gone: set[bytes]) -> None:
        if new.mode and not old.mode:  # open -> listed: every swarm not listed goes
            rows = await self.store.scrape_all()
            gone |= {row[0] for row in rows if row[0] not in new.allowed}
        dropped = 0
        for i, info_hash in enumerate(gone, 1):
            if not new.admitted(info_hash):
                dropped += await self.store.drop(info_hash)
            if not i % 10_000:
                await asyncio.sleep(0)  # an emptied list of millions must not hold the loop
        if dropped:
            log.info("dropped %d swarms of torrents no longer tracked", dropped)

    def _log_summary(self, rules: Rules, torrents: int, hybrids: int) -> None:
        a = self.config.access
        if a == AccessConfig():
            return  # open, nothing to read: the start-up line says "mode open"
        parts = [f"mode {a.mode}"]
        if a.torrents_dir:
            parts.append(f"{torrents} torrents ({hybrids} hybrid v1+v2) in {a.torrents_dir}")
        if a.allow_list:
            parts.append(f"allow list {a.allow_list}")
        if a.deny_list:
            parts.append(f"{len(rules.denied)} denied")
        if rules.mode == PRIVATE:
            parts.append(f"{len(rules.passkeys)} passkeys")
        if rules.allow or rules.deny:
            parts.append(f"client rules: {len(rules.allow)} allowed, {len(rules.deny)} banned")
        summary = "access: " + ", ".join(parts)
        if summary != self._summary:
            log.info("%s", summary)
            self._summary = summary

    async def _rescan_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.access.rescan_interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("access rescan failed; will retry")

    def _schedule(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.config.access.rescan_interval:
            self._task = asyncio.get_running_loop().create_task(self._rescan_forever())

    # --- Service -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh(self.config, strict=True)
        self._schedule()

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None

    async def reload(self, config: Config) -> None:
        """SIGHUP: re-read every list and the passkeys, rescan the folder, apply the new
        [access]; a source that is missing now refuses the reload and keeps the old rules."""
        interval = self.config.access.rescan_interval
        await self.refresh(config, strict=True)
        if config.access.rescan_interval != interval or self._task is None:
            self._schedule()


def load_check(config: Config, base_dir: str | os.PathLike[str]) -> str:
    """For ``--check-config``: read every source as start-up would; a summary line, or
    ConfigError for what would stop start-up."""
    loaded = _load(config, Path(base_dir), None, True, True)
    rules, torrents, hybrids = _rules(config, loaded)
    parts = [f"mode {config.access.mode}"]
    if config.access.torrents_dir:
        parts.append(f"{torrents} torrents ({hybrids} hybrid)")
    if config.access.allow_list or config.access.torrents_dir:
        parts.append(f"{len(rules.allowed)} allowed info_hashes")
    if config.access.deny_list:
        parts.append(f"{len(rules.denied)} denied")
    if rules.mode == PRIVATE:
        parts.append(f"{len(rules.passkeys)} passkeys")
    return ", ".join(parts)


# --- per-address budgets ---------------------------------------------------------------------


class AddressBudgets:
    """New swarms per address per minute, and full scrapes per address per period.

    Both dicts hold only addresses seen recently (the minute's window is cleared when it ends;
    full-scrape entries are pruned by the tracker's sweeper), so their size follows the rate of
    swarm creations and full scrapes, never the number of peers. An IPv6 address counts by its
    /64, which one subscriber usually has whole.
    """

    def __init__(self) -> None:
        self.minute = -1
        self.created: dict[bytes, int] = {}
        self.full_scrapes: dict[bytes, int] = {}

    def may_create(self, ip: bytes, now: int, cap: int) -> bool:
        minute = now // 60
        if minute != self.minute:
            self.minute = minute
            self.created.clear()
        return self.created.get(ip[:8], 0) < cap

    def created_one(self, ip: bytes) -> None:
        ip = ip[:8]  # an IPv6 address counts by its /64 (an IPv4 one is 4 bytes long)
        self.created[ip] = self.created.get(ip, 0) + 1

    def full_scrape_wait(self, ip: bytes, now: int, period: int) -> int:
        """Seconds ``ip`` must still wait for a full scrape (0: go, and the clock restarts)."""
        ip = ip[:8]
        last = self.full_scrapes.get(ip)
        if last is not None and now - last < period:
            return period - (now - last)
        self.full_scrapes[ip] = now
        return 0

    def prune(self, now: int, period: int) -> None:
        if now // 60 != self.minute:
            self.created.clear()
        if self.full_scrapes:
            self.full_scrapes = {ip: t for ip, t in self.full_scrapes.items() if now - t < period}
