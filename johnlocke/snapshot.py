"""Snapshots: the swarm registry survives restarts, crashes and bad files.

Theory of operation
-------------------
``SnapshotService`` is a ``johnlocke.service.Service``. ``start`` (before the tracker listens)
loads the snapshot file into the empty memory store; a background task then writes a new one
every ``[state] snapshot_interval`` seconds, and ``stop`` (after the listeners are closed and the
requests in flight answered) writes a final one, so a SIGTERM/SIGINT loses nothing. A crash
(``kill -9``, power loss) loses what happened since the last snapshot: at most one interval.

What is saved is exactly what a swarm is in the memory store: per swarm its ``downloaded`` count and
its four IPv4/IPv6 tables (IPv4/IPv6 x seeders/leechers), each as the store's two columns, compact
addresses and 28-byte records (peer_id, last_seen, key). Writing copies those columns nearly as they
are, so a million peers fit in ~35 MB before compression. A dual-stack peer has a record in each
family's tables (the same peer_id, the same role). WebRTC records are not saved: their "address"
names a WebSocket connection of this process, gone after a restart. The format is versioned and
described below and in ``docs/snapshot-format.md``. Passkeys and access lists live in their own
files and are not part of a snapshot.

Time. ``last_seen`` is in the store's clock (``MemoryStore.now()``, whole seconds). A snapshot
records the store clock and the wall-clock time of the same moment. On load the new store's
clock is set to continue the old one: ``old clock + seconds the tracker was down`` (by the wall
clock, never negative). Every ``last_seen`` then stays valid as it is, and the peers that would
have expired while the tracker was down (last seen more than ``[announce] peer_timeout`` before
the continued clock) are dropped. Swarms left without peers are dropped too, and swarms with no
peers are not written at all: the running tracker forgets a swarm (and its ``downloaded`` count)
once its last peer is gone, and a restart must not bring back what a sweep would forget.

Bounded cost. The event loop only copies the columns of a batch of swarms (``MemoryStore.dump``:
bytes copies into one flat list, a few milliseconds per batch, and no per-swarm objects that
would wake the garbage collector's full pass, ~0.1 s on a big store); encoding, compression
(zlib, level 1), writing and fsync run in a worker thread (``asyncio.to_thread``), one batch at a
time, while the loop keeps answering. Every swarm is copied whole at one moment, so each one is
consistent; the snapshot as a whole spans the seconds it takes to write, which only matters
while traffic flows (the final snapshot is taken after the listeners closed). Loading happens
before the tracker listens: reading, checking and decompressing, then rebuilding every swarm's
peer_id index.

Atomic. The snapshot is written to ``<path>.tmp`` in the same directory, fsynced, renamed over
``<path>`` and the directory fsynced: ``<path>`` is always either the previous complete snapshot
or the new complete one. A full disk or an unwritable path fails one snapshot: it is logged, the
temporary file removed, the previous snapshot kept, and the next interval tries again; the
tracker keeps serving.

Never a crash loop. A snapshot that cannot be used (truncated, corrupt, from a newer version, not
a snapshot at all) is reported in one log line and moved aside to ``<path>.corrupt-<time>``, and
the tracker starts with no swarms. Loading is all or nothing: nothing from a bad file is kept.
``<path>.lock`` (an advisory ``flock``) keeps two trackers from sharing one snapshot path.

File format, version 2 (all integers little-endian; version 1 is the same layout, written
before a peer_id could appear in both families, and is still read)::

    header   (32 bytes)
      magic       8 bytes   b"JLSNAP\\r\\n"
      version     u32       2
      flags       u32       0 (a reader refuses flags it does not know)
      wall_time   f64       Unix time at which store_now was read
      store_now   u32       the store's clock at that moment (seconds)
      crc32       u32       of the 28 bytes above
    blocks   (any number, each a batch of swarms)
      tag         4 bytes   b"SWRM"
      swarms      u32       swarms in this block
      raw_len     u32       length of the payload once decompressed
      stored_len  u32       length of the zlib stream that follows
      crc32       u32       of the 16 bytes above followed by the stored bytes
      stored      stored_len bytes: zlib stream of the payload
    trailer  (24 bytes)
      tag         4 bytes   b"END\\0"
      swarms      u64       swarms in the whole file
      peers       u64       peers in the whole file
      crc32       u32       of the 20 bytes above
    (nothing may follow the trailer)

    payload: one record per swarm, back to back
      info_hash   20 bytes
      downloaded  u64
      n0 n1 n2 n3 u32 x 4   peers in table 0 (IPv4 seeders), 1 (IPv4 leechers),
                            2 (IPv6 seeders), 3 (IPv6 leechers)
      then for t = 0..3:
        addrs     n_t x 6 bytes (t < 2) or n_t x 18 bytes (t >= 2):
                  IP (4 or 16 bytes) and port (2 bytes, big-endian), the BEP 23/7 form
        records   n_t x 28 bytes: peer_id (20), last_seen (u32, store clock),
                  key (u32): low 30 bits the CRC-32 of the key the peer announced with,
                  folded to 30 bits (0: no key); top 2 bits the info-hashes of a hybrid
                  torrent it announced under (bit 30: v1, bit 31: v2)
      a peer_id appears at most once per family (tables 0+1, tables 2+3), and in the same role
      (seeder tables 0 and 2, or leecher tables 1 and 3) where it appears in both
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import math
import os
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from struct import Struct
from typing import BinaryIO, Protocol

from johnlocke.config import Config
from johnlocke.service import cancel_task
from johnlocke.store import ADDR_LEN
from johnlocke.store.memory import DUMP_FIELDS, META_LEN, SwarmRecord

log = logging.getLogger("johnlocke.snapshot")

MAGIC = b"JLSNAP\r\n"
VERSION = 2
# Versions this reader takes: 1 has the same layout, without dual-stack peers.
READABLE = (1, 2)
_HEADER = Struct("<8sIIdI")  # magic, version, flags, wall_time, store_now (+ crc32)
_BLOCK = Struct("<4sIII")  # tag, swarms, raw_len, stored_len (+ crc32)
_TRAILER = Struct("<4sQQ")  # tag, swarms, peers (+ crc32)
_SWARM = Struct("<20sQIIII")  # info_hash, downloaded, n0..n3
_U32 = Struct("<I")
_BLOCK_TAG = b"SWRM"
_END_TAG = b"END\0"
_WIDTH = (ADDR_LEN[0], ADDR_LEN[0], ADDR_LEN[1], ADDR_LEN[1])
_U64_MAX = 2**64 - 1
# No block the writer produces comes near this (a batch is ~50k peers, or one swarm); a larger
# claim is corruption, refused before anything is allocated for it.
_MAX_BLOCK = 1 << 30
_ZLIB_LEVEL = 1  # ~3x faster than the default level, for most of its saving on this data
_PIECE = 1 << 20  # bytes of payload compressed at a time


class SnapshotError(Exception):
    """A snapshot file that cannot be used; the message says why, for the operator."""


class Snapshottable(Protocol):
    """What a store needs to offer for snapshots (``MemoryStore`` does).

    ``changes`` grows with every change to the store (any amount): a snapshot of a store whose
    ``changes`` is what it was at the last snapshot written is skipped."""

    changes: int

    def now(self) -> int: ...

    def dump(self) -> Iterator[list[bytes | int]]: ...

    def restore(self, records: Iterator[SwarmRecord], now: int, cutoff: int) -> tuple[int, int]: ...


@dataclass(frozen=True)
class Written:
    swarms: int
    peers: int
    size: int
    seconds: float
    skipped: bool = False  # nothing had changed: the file on disk was kept as it was


# --- encoding -------------------------------------------------------------------------------


def encode_header(wall_time: float, store_now: int) -> bytes:
    head = _HEADER.pack(MAGIC, VERSION, 0, wall_time, store_now)
    return head + _U32.pack(zlib.crc32(head))


def encode_block(batch: list[bytes | int]) -> tuple[bytes, int]:
    """One block (header and zlib stream) for a ``MemoryStore.dump`` batch; and its peer count."""
    parts, peers = encode_block_parts(batch)
    return b"".join(parts), peers


def encode_block_parts(batch: list[bytes | int]) -> tuple[list[bytes], int]:
    """``encode_block`` as pieces to write one after the other, and the peer count.

    Runs in the writer thread: the payload is compressed a piece of about ``_PIECE`` bytes at a
    time (zlib lets the event loop run while it works) and never joined whole, since joining a
    huge swarm's columns (tens of MB) would hold the interpreter lock for tens of ms."""
    z = zlib.compressobj(_ZLIB_LEVEL)
    stored: list[bytes] = []
    pending: list[bytes | int] = []
    pending_len = 0
    raw_len = 0
    peers = 0
    pack = _SWARM.pack
    for i in range(0, len(batch), DUMP_FIELDS):
        cols = batch[i + 2 : i + DUMP_FIELDS]
        n0 = len(cols[1]) // META_LEN  # type: ignore[arg-type]
        n1 = len(cols[3]) // META_LEN  # type: ignore[arg-type]
        n2 = len(cols[5]) // META_LEN  # type: ignore[arg-type]
        n3 = len(cols[7]) // META_LEN  # type: ignore[arg-type]
        peers += n0 + n1 + n2 + n3
        head = pack(batch[i], min(batch[i + 1], _U64_MAX), n0, n1, n2, n3)  # type: ignore[call-overload]
        size = _SWARM.size + sum(len(c) for c in cols)  # type: ignore[arg-type]
        raw_len += size
        pending.append(head)
        if size < _PIECE:
            pending += cols
            pending_len += size
            if pending_len < _PIECE:
                continue
            cols = []
        stored.append(z.compress(b"".join(pending)))  # type: ignore[arg-type]
        pending = []
        pending_len = 0
        for col in cols:  # a big swarm: its columns one by one
            stored.append(z.compress(col))  # type: ignore[arg-type]
    if pending:
        stored.append(z.compress(b"".join(pending)))  # type: ignore[arg-type]
    stored.append(z.flush())
    head = _BLOCK.pack(_BLOCK_TAG, len(batch) // DUMP_FIELDS, raw_len, sum(map(len, stored)))
    crc = zlib.crc32(head)
    for chunk in stored:
        crc = zlib.crc32(chunk, crc)
    return [head + _U32.pack(crc), *stored], peers


def encode_trailer(swarms: int, peers: int) -> bytes:
    tail = _TRAILER.pack(_END_TAG, swarms, peers)
    return tail + _U32.pack(zlib.crc32(tail))


# --- decoding -------------------------------------------------------------------------------


class SnapshotReader:
    """Reads one snapshot file: the header on construction, then ``records()``.

    Every problem raises ``SnapshotError``. ``records()`` checks the trailer (and that nothing
    follows it) after the last block, so a consumer that builds its state from the records and
    installs it only once they are exhausted never keeps anything from a bad file.
    """

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.size = os.fstat(f.fileno()).st_size
        self.swarms = 0
        self.peers = 0
        head = self._read(_HEADER.size + 4, "header")
        if not head.startswith(MAGIC):
            raise SnapshotError("not a johnlocke snapshot (bad magic)")
        magic, version, flags, wall_time, store_now = _HEADER.unpack_from(head)
        if version not in READABLE:
            if version > VERSION:
                raise SnapshotError(
                    f"format version {version} is newer than this johnlocke reads ({VERSION})"
                )
            raise SnapshotError(f"unknown format version {version}")
        if _U32.unpack_from(head, _HEADER.size)[0] != zlib.crc32(head[: _HEADER.size]):
            raise SnapshotError("header checksum mismatch")
        if flags:
            raise SnapshotError(f"unknown flags {flags:#x}")
        if not math.isfinite(wall_time):
            raise SnapshotError("bad wall-clock time in the header")
        self.wall_time: float = wall_time
        self.store_now: int = store_now

    def _read(self, n: int, what: str) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise SnapshotError(f"truncated (the file ends inside the {what})")
        return data

    def records(self) -> Iterator[SwarmRecord]:
        swarms = peers = 0
        while True:
            tag = self._read(4, "next block")
            if tag == _END_TAG:
                break
            if tag != _BLOCK_TAG:
                raise SnapshotError(f"unknown block {tag!r} at byte {self.f.tell() - 4}")
            rest = self._read(_BLOCK.size - 4 + 4, "block header")
            head = tag + rest[:-4]
            _, count, raw_len, stored_len = _BLOCK.unpack(head)
            if stored_len > self.size - self.f.tell():
                raise SnapshotError("truncated (the file ends inside a block)")
            if raw_len > _MAX_BLOCK:
                raise SnapshotError(f"implausible block size {raw_len}")
            stored = self._read(stored_len, "block")
            if _U32.unpack_from(rest, len(rest) - 4)[0] != zlib.crc32(stored, zlib.crc32(head)):
                raise SnapshotError(f"block checksum mismatch at byte {self.f.tell() - stored_len}")
            try:
                d = zlib.decompressobj()
                raw = d.decompress(stored, raw_len + 1)
            except zlib.error as exc:
                raise SnapshotError(f"block does not decompress: {exc}") from None
            if len(raw) != raw_len or not d.eof:
                raise SnapshotError("block length mismatch")
            for rec in _decode_payload(raw, count):
                peers += sum(len(m) for m in rec.meta) // META_LEN
                yield rec
            swarms += count
        tail = tag + self._read(_TRAILER.size - 4 + 4, "trailer")
        _, t_swarms, t_peers = _TRAILER.unpack_from(tail)
        if _U32.unpack_from(tail, _TRAILER.size)[0] != zlib.crc32(tail[: _TRAILER.size]):
            raise SnapshotError("trailer checksum mismatch")
        if (t_swarms, t_peers) != (swarms, peers):
            raise SnapshotError(
                f"trailer counts {t_swarms} swarms/{t_peers} peers, blocks hold {swarms}/{peers}"
            )
        if self.f.read(1):
            raise SnapshotError("data after the trailer")
        self.swarms = swarms
        self.peers = peers


def _decode_payload(raw: bytes, count: int) -> list[SwarmRecord]:
    out = []
    pos = 0
    end = len(raw)
    for _ in range(count):
        if pos + _SWARM.size > end:
            raise SnapshotError("block payload ends inside a swarm")
        info_hash, downloaded, *counts = _SWARM.unpack_from(raw, pos)
        pos += _SWARM.size
        addrs = []
        meta = []
        for t in range(4):
            a_end = pos + counts[t] * _WIDTH[t]
            m_end = a_end + counts[t] * META_LEN
            if m_end > end:
                raise SnapshotError("block payload ends inside a swarm")
            addrs.append(raw[pos:a_end])
            meta.append(raw[a_end:m_end])
            pos = m_end
        out.append(SwarmRecord(info_hash, downloaded, tuple(addrs), tuple(meta)))  # type: ignore[arg-type]
    if pos != end:
        raise SnapshotError("block payload holds more than its swarms")
    return out


# --- writing --------------------------------------------------------------------------------


def _create(tmp: Path) -> BinaryIO:
    # 0o600: a snapshot lists every peer's IP address.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb")


def _write_block(f: BinaryIO, batch: list[bytes | int]) -> int:
    parts, peers = encode_block_parts(batch)
    f.writelines(parts)
    return peers


def _finish(f: BinaryIO, tmp: Path, path: Path, trailer: bytes) -> int:
    f.write(trailer)
    f.flush()
    os.fsync(f.fileno())
    size = f.tell()
    f.close()
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return size


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (not every filesystem can, which is fine)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _discard(f: BinaryIO, tmp: Path) -> None:
    with contextlib.suppress(OSError):
        f.close()  # may fail again on a full disk: the data is being thrown away anyway
    with contextlib.suppress(OSError):
        tmp.unlink()


async def write_snapshot(
    store: Snapshottable, path: Path, wall_clock: Callable[[], float] = time.time
) -> Written:
    """Write the store to ``path`` atomically (see the module docstring); raise OSError on failure.

    Must not be cancelled while it runs (a worker thread may be writing): callers shield it.
    """
    started = time.monotonic()
    tmp = path.with_name(path.name + ".tmp")
    header = encode_header(wall_clock(), store.now())
    f = await asyncio.to_thread(_create, tmp)
    try:
        await asyncio.to_thread(f.write, header)
        swarms = peers = 0
        for batch in store.dump():  # each next() copies one batch on the loop
            if not batch:  # a breather while the store prepares a huge swarm's copy
                await asyncio.sleep(0)
                continue
            peers += await asyncio.to_thread(_write_block, f, batch)
            swarms += len(batch) // DUMP_FIELDS
        size = await asyncio.to_thread(_finish, f, tmp, path, encode_trailer(swarms, peers))
    except BaseException:
        await asyncio.to_thread(_discard, f, tmp)
        raise
    return Written(swarms, peers, size, time.monotonic() - started)


# --- the service ----------------------------------------------------------------------------


def resolve_path(config: Config, base_dir: Path) -> Path | None:
    """``[state] path`` as a file path (relative to ``base_dir``), or None if snapshots are off."""
    if not config.state.path:
        return None
    return base_dir / Path(config.state.path).expanduser()


class SnapshotService:
    """Loads the snapshot at start, writes one every interval and a final one at stop."""

    name = "snapshot"

    def __init__(
        self,
        config: Config,
        store: Snapshottable,
        base_dir: Path,
        wall_clock: Callable[[], float] = time.time,
        on_written: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.wall_clock = wall_clock
        # Told the wall-clock time of every snapshot written (the stats report its age).
        self.on_written = on_written
        self.path = resolve_path(config, base_dir)
        self.config = config
        self._interval = config.state.snapshot_interval
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[Written | None] | None = None
        self._wake = asyncio.Event()
        self._lock_fd: int | None = None
        self._failing = False
        self.last: Written | None = None  # the last snapshot written
        # store.changes when the file on disk was made (written, or loaded): None if unknown.
        self._saved_changes: int | None = None

    # --- Service -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.path is None:
            log.info("snapshots are off ([state] path is empty): swarms live in memory only")
            return
        self._lock()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.unlink()
            log.info("removed %s, left over from an interrupted snapshot", tmp)
        except OSError:
            pass  # none there; or the directory is unusable, which the next lines report
        self.load()
        # What exists now (modules, configuration, the restored swarms) lives as long as the
        # process: out of the cyclic collector's sight, a full collection does not walk it.
        gc.freeze()
        if not (self.path.parent.is_dir() and os.access(self.path.parent, os.W_OK)):
            log.warning(
                "snapshots to %s will fail: %s is not a writable directory",
                self.path,
                self.path.parent,
            )
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.path is None:
            return
        await cancel_task(self._task)
        self._task = None
        if self._writing is not None:  # a periodic snapshot still running in its thread
            await asyncio.wait([self._writing])
            self._writing = None
        await self.snapshot(final=True)
        self._unlock()

    def reload(self, config: Config) -> None:
        if config.state.path != self.config.state.path:
            log.warning("[state] path changes take effect only after a restart")
        self._interval = config.state.snapshot_interval
        self.config = config
        self._wake.set()

    # --- loading -------------------------------------------------------------------------

    def load(self) -> None:
        """Fill the (empty) store from the snapshot file; on any problem set it aside."""
        assert self.path is not None
        path = self.path
        started = time.monotonic()
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            log.info("no snapshot at %s yet: starting with no swarms", path)
            return
        except OSError as exc:
            self._set_aside(f"cannot be read ({exc.strerror or exc})")
            return
        # The load builds ~3 objects per swarm and no garbage cycles: the cyclic collector's
        # passes over the growing heap would only add ~30% to the load time.
        collecting = gc.isenabled()
        gc.disable()
        with f:
            try:
                reader = SnapshotReader(f)
                peer_timeout = self.config.announce.peer_timeout
                # Beyond peer_timeout every peer is gone anyway; the cap keeps the continued
                # clock in range whatever the wall clock did meanwhile.
                down = min(max(0.0, self.wall_clock() - reader.wall_time), peer_timeout + 1.0)
                now = reader.store_now + int(down)
                cutoff = now - peer_timeout
                swarms, peers = self.store.restore(reader.records(), now, cutoff)
            except SnapshotError as exc:
                self._set_aside(str(exc))
                return
            except Exception as exc:  # a bug or an odd OS error: still never a crash loop
                log.debug("snapshot load failed", exc_info=True)
                self._set_aside(f"unreadable ({type(exc).__name__}: {exc})")
                return
            finally:
                if collecting:
                    gc.enable()
        self._saved_changes = self.store.changes  # the file holds this store (what did not expire)
        taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reader.wall_time))
        log.info(
            "restored %d swarms, %d peers from %s (taken %s, down %d s; %d peers expired"
            " meanwhile) in %.2f s",
            swarms,
            peers,
            path,
            taken,
            down,
            reader.peers - peers,
            time.monotonic() - started,
        )

    def _set_aside(self, reason: str) -> None:
        assert self.path is not None
        self._saved_changes = None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            os.rename(self.path, aside)
            where = f"moved it to {aside}"
        except OSError as exc:
            where = (
                f"could not move it aside ({exc.strerror or exc}); the next snapshot replaces it"
            )
        log.error(
            "snapshot %s is unusable: %s; %s; starting with no swarms", self.path, reason, where
        )

    # --- writing -------------------------------------------------------------------------

    async def snapshot(self, final: bool = False) -> Written | None:
        """Write one snapshot now; log the outcome. None if it failed (the old one is kept).

        Skipped (``Written.skipped``) when the store has not changed since the file on disk was
        written or loaded: that file is current, and counts as just written for its age."""
        assert self.path is not None
        changes = self.store.changes
        if changes == self._saved_changes and self.path.exists():
            log.debug(
                "%s skipped: nothing changed since the last one",
                "final snapshot" if final else "snapshot",
            )
            if self.on_written is not None:
                self.on_written(self.wall_clock())
            last = self.last or Written(0, 0, self.path.stat().st_size, 0.0)
            return Written(last.swarms, last.peers, last.size, 0.0, skipped=True)
        try:
            written = await write_snapshot(self.store, self.path, self.wall_clock)
        except OSError as exc:
            then = "" if final else f", retrying in {self._interval} s"
            log.error(
                "%s to %s failed: %s; the previous snapshot is kept%s",
                "final snapshot" if final else "snapshot",
                self.path,
                exc.strerror or exc,
                then,
            )
            self._failing = True
            return None
        if self._failing:
            log.info("snapshots to %s work again", self.path)
            self._failing = False
        self._saved_changes = changes  # what changed while it was written is not in it for sure
        self.last = written
        if self.on_written is not None:
            self.on_written(self.wall_clock())
        log.info(
            "%s: %d swarms, %d peers to %s (%d bytes, %.2f s)",
            "final snapshot" if final else "snapshot",
            written.swarms,
            written.peers,
            self.path,
            written.size,
            written.seconds,
        )
        return written

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            wait = last + self._interval - loop.time()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue  # woken by a reload: recompute with the new interval
            last = loop.time()
            self._writing = asyncio.ensure_future(self._guarded())
            try:
                # Shielded: stop() cancels this task but lets a snapshot in progress finish.
                await asyncio.shield(self._writing)
            finally:
                if self._writing.done():
                    self._writing = None

    async def _guarded(self) -> Written | None:
        try:
            return await self.snapshot()
        except Exception:
            log.exception("snapshot failed unexpectedly; retrying in %d s", self._interval)
            return None

    # --- one tracker per snapshot path -----------------------------------------------------

    def _lock(self) -> None:
        assert self.path is not None
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks, no protection
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("cannot create %s (%s): running without the lock", lock_path, exc.strerror)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OSError(
                    f"[state] path {self.path} is in use by another johnlocke (pid {owner});"
                    " give each tracker its own snapshot path"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock; the file may stay
            self._lock_fd = None
