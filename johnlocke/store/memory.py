"""The in-memory swarm store.

Theory of operation
-------------------
The budget is a million peers in ~128 bytes each, so there is no Python object per peer. A swarm
keeps its peers in four tables, one per (address family, role): IPv4 seeders, IPv4 leechers,
IPv6 seeders, IPv6 leechers. Splitting by role answers a seeder from the leecher table alone
(seeders never get seeders); splitting by family keeps answers in the requester's family; both
without filtering.

Each table is two ``bytearray`` columns indexed by slot: ``addrs`` holds compact addresses (6
or 18 bytes, exactly the wire format, so a run of neighbouring peers is one slice of the
answer) and ``meta`` holds 28 bytes per peer: peer_id(20), last_seen(u32), key(u32). The key
field keeps 30 bits of the ``key`` hash and, in its top two bits, the info-hashes of a hybrid
torrent the peer announced under (see ``proto`` in ``johnlocke.store``).
Tables stay dense: removing a peer moves the table's last peer into the hole, so every slot
below the table's length is a live peer and a sample is a choice of slots.

Finding a peer by peer_id uses a per-swarm open-addressing hash index, an ``array('i')`` whose
entries are ``slot << 2 | table`` (-1 empty, -2 deleted), probed linearly from ``hash(peer_id)``:
4 bytes per index slot where a ``dict`` keyed by ``bytes`` would cost over 100 per peer. Most
swarms are small, and there the index would cost more than the peers (an array object per
swarm): a swarm of up to ``_SMALL`` peers has none and finds a peer_id with ``bytes.find`` over
its meta columns (a few hundred bytes, scanned in C). The index is built when a swarm grows past
``_SMALL`` and dropped when it shrinks to half of that.

Per-IP limits (``max_per_ip``) need to know how many peers an IP has in a swarm. A dict per
(swarm, IP) would cost ~100 bytes per peer, so a swarm that is asked about it once keeps an
``IpCounts`` from then on: another open-addressing table, of 64-bit entries
``hash(ip)[56 bits] << 8 | count`` (12 to 32 bytes per distinct IP; an IPv6 address counts by
its /64, which one subscriber usually has whole). Two IPs would share a count only if 56 bits
of their (per-process salted) hashes agree, and then they would only look busier, never less
busy, so the cap holds.

The store keeps running totals of the peers in each table (``MemoryStore.totals``, shared by
its swarms): every change to a table goes through ``Swarm._append`` or ``Swarm._cut``, which
count, so store-wide stats cost O(1) however many swarms there are. A swarm is dropped only once
it is empty (or, in ``close``, together with the totals).

Nothing here awaits except ``sweep`` and ``top_swarms``, which yield to the event loop between
slices.

Snapshots (``johnlocke.snapshot``) take the columns as they are: ``dump`` hands out copies of a
batch of swarms at a time, and ``restore`` takes them back, drops peers that expired meanwhile
and rebuilds each swarm's index. The store's clock, ``now()``, can be set on restore so that it
continues the clock of the store that wrote the snapshot: ``last_seen`` values stay valid as they
are, with no per-peer rewriting.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from struct import Struct
from typing import NamedTuple

from johnlocke.errors import ClientError
from johnlocke.store import ADDR_LEN, Candidate, Pick, StoreStats, SwarmNotFound

_META = Struct("<20sII")  # peer_id, last_seen, key_hash
_U32 = Struct("<I")
META_LEN = 28
_SEEN = 20  # offsets inside a meta record
_KEY = 24
_KEY_MASK = (1 << 30) - 1
_PROTO_SHIFT = 30
# For each proto, a bytes.translate table from a key's top byte to 1 if the peer announced under
# that hash, else 0: a run of peers is filtered with one slice and one translate.
_SPEAKS = [bytes(1 if b >> 6 & proto else 0 for b in range(256)) for proto in range(4)]
_EMPTY = -1
_DELETED = -2
_MIN_INDEX = 32
# Swarms up to this size have no index (see the theory of operation); it is dropped again at
# half this size, so a swarm at the boundary does not build and drop it on every announce.
_SMALL = 16
# Work per sweep slice, in peers examined (~0.2 us each; a removal counts _REMOVAL_COST more):
# a slice holds the event loop for a few ms.
_SWEEP_SLICE = 20_000
_SWEEP_STEP = 1_000  # slots per expire() call
_REMOVAL_COST = 12  # a removal costs about as much as examining this many peers
# Peers per run when sampling: long enough that slicing is cheap, short enough that peers
# handed out together vary from answer to answer.
_RUN = 8

# Swarms ranked per slice of top_swarms: ~0.2 us each, a few ms per slice.
_TOP_SLICE = 20_000
_BIG_ENDIAN = sys.byteorder == "big"
_WIDTH = (ADDR_LEN[0], ADDR_LEN[0], ADDR_LEN[1], ADDR_LEN[1])  # address width per table


class SwarmRecord(NamedTuple):
    """One swarm's columns as immutable copies: what ``restore`` takes (``dumped_records``
    reads a ``dump`` batch as these).

    Table ``t`` holds ``len(meta[t]) // 28`` peers; ``addrs[t]`` is their compact addresses
    (6 bytes each for tables 0 and 1, 18 for 2 and 3) and ``meta[t]`` their 28-byte records:
    peer_id, last_seen (u32 little-endian, store clock), key (u32 little-endian: 30 bits of
    key hash, 2 bits of proto).
    """

    info_hash: bytes
    downloaded: int
    addrs: tuple[bytes, bytes, bytes, bytes]
    meta: tuple[bytes, bytes, bytes, bytes]


DUMP_FIELDS = 10  # items per swarm in a ``MemoryStore.dump`` batch


def dumped_records(batch: list[bytes | int]) -> Iterator[SwarmRecord]:
    """A ``MemoryStore.dump`` batch as ``SwarmRecord``s."""
    for i in range(0, len(batch), DUMP_FIELDS):
        f = batch[i : i + DUMP_FIELDS]
        yield SwarmRecord(f[0], f[1], (f[2], f[4], f[6], f[8]), (f[3], f[5], f[7], f[9]))  # type: ignore[arg-type]


def _seen_column(meta: bytes) -> array:
    """Every record's last_seen, read in C: records are 7 u32 words and last_seen is word 5."""
    words = array("I")
    words.frombytes(meta)
    if _BIG_ENDIAN:
        words.byteswap()
    return words[_SEEN // 4 :: META_LEN // 4]


def _new_index(size: int) -> array:
    return array("i", [_EMPTY]) * size


_IP_KEY = 0xFFFF_FFFF_FFFF_FF00  # the hash bits an IpCounts entry keeps; the low byte counts


class IpCounts:
    """Peers per IP in one swarm (see the theory of operation). Zero counts stay as tombstones
    until the table is rebuilt, which drops them."""

    __slots__ = ("table", "filled")

    def __init__(self, live: int = 0) -> None:
        size = 16
        while size < live * 2:
            size *= 2
        self.table = array("Q", bytes(8 * size))
        self.filled = 0

    @classmethod
    def of(cls, swarm: Swarm) -> IpCounts:
        counts = cls(swarm.used)
        for t in range(4):
            addrs = swarm.addrs[t]
            w = _WIDTH[t]
            for off in range(0, len(addrs), w):
                counts.add(bytes(addrs[off : off + w - 2]))
        return counts

    def _find(self, ip: bytes) -> tuple[int, int]:
        """(position, key) of ip's entry, or of the empty slot where it would go."""
        table = self.table
        mask = len(table) - 1
        if len(ip) == 16:
            ip = ip[:8]  # an IPv6 subscriber has a whole /64: count them by it
        key = (hash(ip) & _IP_KEY) or 0x100
        i = (key >> 8) & mask
        while True:
            e = table[i]
            if e == 0 or e & _IP_KEY == key:
                return i, key
            i = (i + 1) & mask

    def get(self, ip: bytes) -> int:
        i, _ = self._find(ip)
        return self.table[i] & 0xFF

    def add(self, ip: bytes) -> None:
        i, key = self._find(ip)
        e = self.table[i]
        if e == 0:
            self.table[i] = key | 1
            self.filled += 1
            if self.filled * 3 > len(self.table) * 2:
                self.compact()
        elif e & 0xFF < 255:
            self.table[i] = e + 1

    def sub(self, ip: bytes) -> None:
        i, _ = self._find(ip)
        e = self.table[i]
        if e & 0xFF:
            self.table[i] = e - 1

    def compact(self) -> None:
        """Rebuild the table without tombstones, sized for the IPs it holds."""
        live = [e for e in self.table if e & 0xFF]
        fresh = IpCounts(len(live))
        table = fresh.table
        mask = len(table) - 1
        for e in live:
            i = (e >> 8) & mask
            while table[i]:
                i = (i + 1) & mask
            table[i] = e
        self.table = table
        self.filled = len(live)


def runs(t: int, n: int, skip: int, k: int, rng: random.Random) -> list[Pick]:
    """Choose ``min(k, n - 1 or n)`` of table ``t``'s slots ``0..n-1``, never ``skip``, as picks.

    ``skip >= n`` means nothing is skipped. Each slot is chosen with the same probability. The
    choice is ``r = ceil(k / 8)`` runs of consecutive virtual positions, evenly spaced and all
    rotated by one random offset; virtual positions leave out ``skip``. This runs on every
    announce, hence one fused loop.
    """
    avail = n - 1 if skip < n else n
    if k >= avail:
        if avail <= 0:
            return []
        if skip >= n:
            return [(t, 0, n)]
        out = [(t, 0, skip)] if skip else []
        if skip < avail:
            out.append((t, skip + 1, avail - skip))
        return out
    if k <= 0:
        return []
    r = (k + _RUN - 1) // _RUN
    if avail < k + r:
        r = 1  # too dense for separate runs: one window
    base, extra = divmod(k, r)
    step = avail / r
    rot = int(rng.random() * avail)
    out = []
    for j in range(r):
        v = int(j * step) + rot
        if v >= avail:
            v -= avail
        end = v + (base + 1 if j < extra else base)
        if end > avail:  # wraps around: two spans
            _place(out, t, v, avail, skip)
            _place(out, t, 0, end - avail, skip)
        elif end <= skip:
            out.append((t, v, end - v))
        elif v >= skip:
            out.append((t, v + 1, end - v))
        else:
            out.append((t, v, skip - v))
            out.append((t, skip + 1, end - skip))
    return out


def _place(out: list[Pick], t: int, v: int, end: int, skip: int) -> None:
    """Append virtual positions [v, end) of table t as slot runs, stepping over ``skip``."""
    if end <= skip:
        out.append((t, v, end - v))
    elif v >= skip:
        out.append((t, v + 1, end - v))
    else:
        out.append((t, v, skip - v))
        out.append((t, skip + 1, end - skip))


def window(t: int, n: int, skip: int, start: int, k: int) -> list[Pick]:
    """``min(k, available)`` consecutive slots from virtual position ``start`` (wrapping)."""
    avail = n - 1 if skip < n else n
    if k > avail:
        k = avail
    if k <= 0:
        return []
    v = start % avail
    end = v + k
    out: list[Pick] = []
    if end <= avail:
        _place(out, t, v, end, skip)
    else:
        _place(out, t, v, avail, skip)
        _place(out, t, 0, end - avail, skip)
    return out


class Swarm:
    """One torrent's peers. Used from the event loop only."""

    __slots__ = ("addrs", "meta", "index", "used", "deleted", "downloaded", "totals", "ipc")

    def __init__(self, totals: list[int]) -> None:
        # The store's per-table peer counts, kept up to date by _append and _cut.
        self.totals = totals
        # b"" stands for an empty column: one shared immutable object instead of eight
        # bytearrays per swarm (most swarms never see IPv6, many never see a seeder).
        self.addrs: list[bytes | bytearray] = [b"", b"", b"", b""]
        self.meta: list[bytes | bytearray] = [b"", b"", b"", b""]
        self.index: array | None = None  # built past _SMALL peers
        self.used = 0
        self.deleted = 0
        self.downloaded = 0
        self.ipc: IpCounts | None = None  # built on first use by max_per_ip

    def size(self, table: int) -> int:
        return len(self.meta[table]) // META_LEN

    def counts(self) -> tuple[int, int, int]:
        m = self.meta
        return (
            (len(m[0]) + len(m[2])) // META_LEN,
            (len(m[1]) + len(m[3])) // META_LEN,
            self.downloaded,
        )

    # --- index -----------------------------------------------------------------------------

    def _probe(self, peer_id: bytes) -> tuple[int, int]:
        """(index position, entry) for peer_id; entry -1 and a free position when absent.

        Without an index the position is -1 and the meta columns are searched instead."""
        index = self.index
        if index is None:
            meta = self.meta
            for t in range(4):
                col = meta[t]
                i = col.find(peer_id)
                while i >= 0:
                    if i % META_LEN == 0:  # a match inside another field does not count
                        return -1, (i // META_LEN) << 2 | t
                    i = col.find(peer_id, i + 1)
            return -1, -1
        mask = len(index) - 1
        i = hash(peer_id) & mask
        free = -1
        meta = self.meta
        while True:
            e = index[i]
            if e == _EMPTY:
                return (i if free < 0 else free), -1
            if e == _DELETED:
                if free < 0:
                    free = i
            elif meta[e & 3].startswith(peer_id, (e >> 2) * META_LEN):
                return i, e
            i = (i + 1) & mask

    def _reposition(self, peer_id: bytes, old: int, new: int) -> None:
        index = self.index
        if index is None:
            return
        mask = len(index) - 1
        i = hash(peer_id) & mask
        while index[i] != old:
            i = (i + 1) & mask
        index[i] = new

    def _resize(self) -> None:
        size = _MIN_INDEX
        while size * 2 < self.used * 3 + 3:
            size *= 2
        index = _new_index(size)
        mask = size - 1
        for t in range(4):
            meta = self.meta[t]
            for s in range(len(meta) // META_LEN):
                off = s * META_LEN
                i = hash(bytes(meta[off : off + 20])) & mask
                while index[i] != _EMPTY:
                    i = (i + 1) & mask
                index[i] = s << 2 | t
        self.index = index
        self.deleted = 0
        if self.ipc is not None:
            self.ipc.compact()  # a shrinking swarm gives the memory back

    def ip_room(self, ip: bytes, cap: int) -> None:
        """Raise ClientError if ``ip`` already has ``cap`` peers in this swarm."""
        if self.ipc is None:
            self.ipc = IpCounts.of(self)
        if self.ipc.get(ip) >= cap:
            raise ClientError(f"too many peers from your address in this torrent (at most {cap})")

    @classmethod
    def restore(
        cls,
        downloaded: int,
        addrs: tuple[bytes, ...],
        meta: tuple[bytes, ...],
        cutoff: int,
    ) -> Swarm | None:
        """A swarm from dumped columns, without the peers last seen before ``cutoff``.

        ``None`` if no peer is left. Raises ``ValueError`` if the columns do not fit together or
        a peer_id appears twice (the index could not tell the two apart).
        """
        # Counted into the store's totals only once the whole snapshot loaded (all or nothing).
        swarm = cls([0, 0, 0, 0])
        swarm.downloaded = downloaded
        used = 0
        ids: list[list[bytes]] = [[], [], [], []]
        for t in range(4):
            m = meta[t]
            a = addrs[t]
            n, rest = divmod(len(m), META_LEN)
            w = _WIDTH[t]
            if rest or len(a) != n * w:
                raise ValueError(f"table {t}: {len(m)} bytes of records for {len(a)} of addresses")
            if not n:
                continue
            seen = _seen_column(m)
            if min(seen) < cutoff:
                keep = [s for s in range(n) if seen[s] >= cutoff]
                if not keep:
                    continue
                m = b"".join([m[s * META_LEN : (s + 1) * META_LEN] for s in keep])
                a = b"".join([a[s * w : (s + 1) * w] for s in keep])
                n = len(keep)
            swarm.meta[t] = bytearray(m)
            swarm.addrs[t] = bytearray(a)
            swarm.totals[t] = n
            ids[t] = [m[o : o + 20] for o in range(0, n * META_LEN, META_LEN)]
            used += n
        if not used:
            return None
        swarm.used = used
        # The index, as _resize builds it, from the peer_ids already sliced out above; a probe
        # that meets the same peer_id finds a duplicate for the price of the collisions alone.
        size = _MIN_INDEX
        while size * 2 < used * 3 + 3:
            size *= 2
        index = _new_index(size)
        mask = size - 1
        for t in range(4):
            for slot, peer_id in enumerate(ids[t]):
                i = hash(peer_id) & mask
                while (e := index[i]) != _EMPTY:
                    if ids[e & 3][e >> 2] == peer_id:
                        raise ValueError("a peer_id appears twice in one swarm")
                    i = (i + 1) & mask
                index[i] = slot << 2 | t
        swarm.index = index if used > _SMALL else None  # built anyway: it finds duplicates
        return swarm

    # --- tables ----------------------------------------------------------------------------

    def _append(self, t: int, addr: bytes, meta: bytes) -> int:
        self.totals[t] += 1
        col = self.meta[t]
        if not col:
            self.addrs[t] = bytearray(addr)
            self.meta[t] = bytearray(meta)
            return 0
        col += meta  # type: ignore[operator]
        self.addrs[t] += addr  # type: ignore[operator]
        return len(col) // META_LEN - 1

    def _cut(self, t: int, slot: int) -> None:
        """Remove a peer by moving the table's last peer into its slot (index fixed up)."""
        self.totals[t] -= 1
        meta = self.meta[t]
        addrs = self.addrs[t]
        w = _WIDTH[t]
        last = len(meta) // META_LEN - 1
        if last == 0:
            self.meta[t] = self.addrs[t] = b""
            return
        if slot != last:
            m = last * META_LEN
            meta[slot * META_LEN : slot * META_LEN + META_LEN] = meta[m:]  # type: ignore[index]
            addrs[slot * w : slot * w + w] = addrs[last * w :]  # type: ignore[index]
            self._reposition(bytes(meta[m : m + 20]), last << 2 | t, slot << 2 | t)
        del meta[last * META_LEN :]  # type: ignore[union-attr]
        del addrs[last * w :]  # type: ignore[union-attr]

    def _forget(self, pos: int, t: int, slot: int, shrink: bool = True) -> None:
        if self.ipc is not None:
            w = _WIDTH[t]
            self.ipc.sub(bytes(self.addrs[t][slot * w : slot * w + w - 2]))
        self.used -= 1
        index = self.index
        if index is None:
            self._cut(t, slot)
            return
        index[pos] = _DELETED
        self.deleted += 1
        self._cut(t, slot)
        if self.used <= _SMALL // 2:
            self.index = None
            self.deleted = 0
        elif shrink and self.used * 8 < len(index) and len(index) > _MIN_INDEX:
            # Not during a sweep: a rebuild is O(peers) in one go, too long for a sweep slice
            # on a huge swarm; the next ordinary removal shrinks the index instead.
            self._resize()

    def _check_owner(self, t: int, slot: int, addr: bytes, key_hash: int) -> None:
        """A peer_id seen from another IP must prove itself with the key it first sent."""
        w = _WIDTH[t]
        stored = self.addrs[t]
        if w == len(addr) and stored[slot * w : slot * w + w - 2] == addr[:-2]:
            return
        (stored_key,) = _U32.unpack_from(self.meta[t], slot * META_LEN + _KEY)
        if key_hash == 0 or stored_key & _KEY_MASK != key_hash:
            raise ClientError("peer_id is in use from another address (send the same key)")

    # --- operations ------------------------------------------------------------------------

    def upsert(
        self,
        peer_id: bytes,
        addr: bytes,
        seeder: bool,
        key_hash: int,
        now: int,
        completed: bool,
        hold: int = 0,
        max_per_ip: int = 0,
        proto: int = 0,
    ) -> tuple[int, int, bool, bool]:
        """Add or refresh a peer; return (table, slot, counted_a_completion, updated).

        ``key_hash`` must fit in 30 bits (``MemoryStore`` folds it)."""
        t = (len(addr) != 6) << 1 | (not seeder)
        pos, e = self._probe(peer_id)
        if e < 0:
            if max_per_ip:
                self.ip_room(addr[:-2], max_per_ip)
            key = key_hash | proto << _PROTO_SHIFT
            slot = self._append(t, addr, _META.pack(peer_id, now, key))
            if self.ipc is not None:
                self.ipc.add(addr[:-2])
            self.used += 1
            index = self.index
            if index is None:
                if self.used > _SMALL:
                    self._resize()
            else:
                if index[pos] == _DELETED:
                    self.deleted -= 1
                index[pos] = slot << 2 | t
                if (self.used + self.deleted) * 3 > len(index) * 2:
                    self._resize()
            # A stranger saying "completed" finished while we did not know it (a restart).
            counted = completed and seeder
            if counted:
                self.downloaded += 1
            return t, slot, counted, True
        old_t = e & 3
        old_slot = e >> 2
        w = _WIDTH[old_t]
        old_addr = self.addrs[old_t][old_slot * w : old_slot * w + w]
        if old_addr != addr:
            self._check_owner(old_t, old_slot, addr, key_hash)
        if hold and now - _U32.unpack_from(self.meta[old_t], old_slot * META_LEN + _SEEN)[0] < hold:
            return old_t, old_slot, False, False
        if self.ipc is not None and old_addr[:-2] != addr[:-2]:
            self.ipc.sub(bytes(old_addr[:-2]))
            self.ipc.add(addr[:-2])
        if proto:
            (old_key,) = _U32.unpack_from(self.meta[old_t], old_slot * META_LEN + _KEY)
            key_hash |= (old_key >> _PROTO_SHIFT | proto) << _PROTO_SHIFT
        meta = _META.pack(peer_id, now, key_hash)
        counted = old_t & 1 == 1 and seeder
        if counted:
            self.downloaded += 1
        if old_t == t:
            m = old_slot * META_LEN
            self.meta[t][m : m + META_LEN] = meta  # type: ignore[index]
            self.addrs[t][old_slot * w : old_slot * w + w] = addr  # type: ignore[index]
            return t, old_slot, counted, True
        self._cut(old_t, old_slot)
        slot = self._append(t, addr, meta)
        if self.index is not None:
            self.index[pos] = slot << 2 | t
        return t, slot, counted, True

    def remove(self, peer_id: bytes, addr: bytes, key_hash: int) -> bool:
        pos, e = self._probe(peer_id)
        if e < 0:
            return False
        self._check_owner(e & 3, e >> 2, addr, key_hash)
        self._forget(pos, e & 3, e >> 2)
        return True

    def expire(self, t: int, cutoff: int, hi: int, budget: int) -> int:
        """Drop peers of table t last seen before cutoff among slots [hi - budget, hi).

        Scanning downwards keeps swap-removal safe: the peer moved into a hole comes from the
        end, which was already examined. Returns how many peers were removed.
        """
        meta = self.meta[t]
        hi = min(hi, len(meta) // META_LEN)
        removed = 0
        unpack = _U32.unpack_from
        for slot in range(hi - 1, max(0, hi - budget) - 1, -1):
            off = slot * META_LEN
            if unpack(meta, off + _SEEN)[0] < cutoff:
                pos, _ = self._probe(bytes(meta[off : off + 20]))
                self._forget(pos, t, slot, shrink=False)
                meta = self.meta[t]
                removed += 1
        return removed


class MemoryView:
    """What one announcer sees of its swarm (``johnlocke.store.SwarmView``)."""

    __slots__ = (
        "swarm",
        "table",
        "slot",
        "info_hash",
        "peer_id",
        "addr",
        "complete",
        "incomplete",
        "downloaded",
        "completed",
        "now",
    )
    # What a plain announce did; ``OptionView`` holds other values (class attributes cost the
    # plain announce nothing).
    updated = True
    created = False
    proto = 0  # hand out only peers that announced under this hash of a hybrid (0: any)

    def __init__(
        self,
        swarm: Swarm,
        info_hash: bytes,
        peer_id: bytes,
        addr: bytes,
        table: int,
        slot: int,
        completed: bool,
        now: int,
    ) -> None:
        self.swarm = swarm
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.addr = addr
        self.table = table
        self.slot = slot
        self.complete, self.incomplete, self.downloaded = swarm.counts()
        self.completed = completed
        self.now = now

    @property
    def family(self) -> int:
        return self.table >> 1

    @property
    def seeder(self) -> bool:
        return not self.table & 1

    def count(self, seeders: bool) -> int:
        t = (self.table & 2) | (not seeders)
        n = len(self.swarm.meta[t]) // META_LEN
        return n - 1 if t == self.table else n

    def sample(self, seeders: bool, k: int, rng: random.Random) -> list[Pick]:
        t = (self.table & 2) | (not seeders)
        n = len(self.swarm.meta[t]) // META_LEN
        return runs(t, n, self.slot if t == self.table else n, k, rng)

    def window(self, seeders: bool, start: int, k: int) -> list[Pick]:
        t = (self.table & 2) | (not seeders)
        n = len(self.swarm.meta[t]) // META_LEN
        return window(t, n, self.slot if t == self.table else n, start, k)

    def candidates(self, seeders: bool, limit: int, rng: random.Random) -> list[Candidate]:
        found = self.describe(self.sample(seeders, limit, rng))
        if self.proto:  # a hybrid's v1 or v2 announce sees only peers that used that hash
            return [c for c in found if self._speaks(c.pick[0], c.pick[1])]
        return found

    def describe(self, picks: list[Pick]) -> list[Candidate]:
        out = []
        for t, first, count in picks:
            seeder = not t & 1
            w = _WIDTH[t]
            addrs = self.swarm.addrs[t]
            meta = self.swarm.meta[t]
            for s in range(first, first + count):
                peer_id, seen, _ = _META.unpack_from(meta, s * META_LEN)
                out.append(
                    Candidate((t, s, 1), bytes(addrs[s * w : s * w + w]), peer_id, seeder, seen)
                )
        return out

    def _speaks(self, t: int, s: int) -> bool:
        """Whether peer s of table t announced under this view's hash of a hybrid torrent."""
        key = _U32.unpack_from(self.swarm.meta[t], s * META_LEN + _KEY)[0]
        return bool(key >> _PROTO_SHIFT & self.proto)

    def last_seen(self, picks: list[Pick]) -> list[int]:
        out: list[int] = []
        unpack = _U32.unpack_from
        for t, first, count in picks:
            if count == 1:
                out.append(unpack(self.swarm.meta[t], first * META_LEN + _SEEN)[0])
                continue
            # A meta record is 7 little-endian u32 words; last_seen is word 5 (peer_id is 0-4).
            words = array("I")
            words.frombytes(self.swarm.meta[t][first * META_LEN : (first + count) * META_LEN])
            if _BIG_ENDIAN:
                words.byteswap()
            out += words[5::7]
        return out

    def compact(self, picks: list[Pick]) -> bytes:
        addrs = self.swarm.addrs
        w = _WIDTH[self.table]  # picks are all of the announcer's family
        if not self.proto:
            return b"".join([addrs[t][f * w : (f + c) * w] for t, f, c in picks])
        table = _SPEAKS[self.proto]
        metas = self.swarm.meta
        out = []
        for t, f, c in picks:
            col = addrs[t]
            top = metas[t][f * META_LEN + _KEY + 3 : (f + c) * META_LEN : META_LEN]
            flags = top.translate(table)
            # One slice per stretch of peers that qualify (usually the whole run).
            i = flags.find(1)
            while i >= 0:
                j = flags.find(0, i)
                if j < 0:
                    j = c
                out.append(col[(f + i) * w : (f + j) * w])
                i = flags.find(1, j)
        return b"".join(out)

    def peer_list(self, picks: list[Pick]) -> list[tuple[bytes, bytes]]:
        out = []
        proto = self.proto
        for t, first, count in picks:
            w = _WIDTH[t]
            addrs = self.swarm.addrs[t]
            meta = self.swarm.meta[t]
            for s in range(first, first + count):
                if proto and not self._speaks(t, s):
                    continue
                m = s * META_LEN
                out.append((bytes(addrs[s * w : s * w + w]), bytes(meta[m : m + 20])))
        return out


class OptionView(MemoryView):
    """A view from an announce with options (limits, hybrid ``proto``) or that made the swarm."""

    __slots__ = ("updated", "created", "proto")

    def __init__(
        self,
        swarm: Swarm,
        info_hash: bytes,
        peer_id: bytes,
        addr: bytes,
        table: int,
        slot: int,
        completed: bool,
        now: int,
        updated: bool,
        created: bool,
        proto: int,
    ) -> None:
        super().__init__(swarm, info_hash, peer_id, addr, table, slot, completed, now)
        self.updated = updated
        self.created = created
        self.proto = proto


class MemoryStore:
    """Swarms in this process's memory (``johnlocke.store.Store``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.swarms: dict[bytes, Swarm] = {}
        self.totals = [0, 0, 0, 0]  # peers per table, over every swarm
        self._clock = clock
        self._epoch = clock()

    def now(self) -> int:
        return int(self._clock() - self._epoch)

    # --- snapshots ---------------------------------------------------------------------------

    def dump(self, max_peers: int = 50_000, max_swarms: int = 2_000) -> Iterator[list[bytes | int]]:
        """The swarms that have peers, as batches of copies, for a snapshot.

        A batch is a flat list of ``DUMP_FIELDS`` items per swarm: info_hash, downloaded, then
        the ``addrs`` and ``meta`` columns of tables 0 to 3 (bytes copies); ``dumped_records``
        reads one as ``SwarmRecord``s. Flat on purpose: bytes and ints are not tracked by the
        garbage collector, so a snapshot in progress (whose batches live while a thread writes
        them) adds no long-lived containers that would trigger a full collection, which on a
        big store holds the event loop for ~0.1 s.

        A batch holds at most ``max_swarms`` swarms and, unless one swarm alone is larger, about
        ``max_peers`` peers, so producing one holds the event loop for a few milliseconds. The
        caller may yield between batches; each swarm is copied whole, as it is at that moment.
        Swarms created after the first batch are left for the next snapshot.
        """
        keys = list(self.swarms)
        get = self.swarms.get
        i = 0
        while i < len(keys):
            batch: list[bytes | int] = []
            add = batch.append
            swarms = peers = 0
            while i < len(keys) and swarms < max_swarms and peers < max_peers:
                ih = keys[i]
                i += 1
                swarm = get(ih)
                if swarm is None or not swarm.used:
                    continue
                a = swarm.addrs
                m = swarm.meta
                add(ih)
                add(swarm.downloaded)
                add(bytes(a[0]))
                add(bytes(m[0]))
                add(bytes(a[1]))
                add(bytes(m[1]))
                add(bytes(a[2]))
                add(bytes(m[2]))
                add(bytes(a[3]))
                add(bytes(m[3]))
                swarms += 1
                peers += swarm.used
            if batch:
                yield batch

    def restore(self, records: Iterable[SwarmRecord], now: int, cutoff: int) -> tuple[int, int]:
        """Fill an empty store from ``dump``'s records; return (swarms, peers) installed.

        The clock is set to continue at ``now`` (``last_seen`` values are in the writer's clock).
        Peers last seen before ``cutoff`` are dropped, and so are swarms left without peers (as
        the next sweep would). All or nothing: if ``records`` raises, the store stays empty.
        """
        if self.swarms:
            raise RuntimeError("restore needs an empty store")
        built: dict[bytes, Swarm] = {}
        peers = 0
        for rec in records:
            if len(rec.info_hash) != 20:
                raise ValueError("info_hash must be 20 bytes")
            if rec.info_hash in built:
                raise ValueError("the same swarm twice")
            swarm = Swarm.restore(rec.downloaded, rec.addrs, rec.meta, cutoff)
            if swarm is not None:
                built[rec.info_hash] = swarm
                peers += swarm.used
        self._epoch = self._clock() - now
        totals = self.totals
        for swarm in built.values():
            for t in range(4):
                totals[t] += swarm.totals[t]
            swarm.totals = totals
        self.swarms.update(built)
        return len(built), peers

    async def announce(
        self,
        info_hash: bytes,
        peer_id: bytes,
        addr: bytes,
        seeder: bool,
        key_hash: int,
        completed_event: bool,
        *,
        hold: int = 0,
        max_per_ip: int = 0,
        create: bool = True,
        proto: int = 0,
    ) -> MemoryView:
        now = int(self._clock() - self._epoch)
        if key_hash > 0x3FFF_FFFF:  # _KEY_MASK, as a constant: this runs on every announce
            key_hash = ((key_hash ^ key_hash >> 30) & _KEY_MASK) or 1  # 2 bits are proto's
        swarm = self.swarms.get(info_hash)
        if swarm is None:
            if not create:
                raise SwarmNotFound(info_hash)
            swarm = Swarm(self.totals)
            t, slot, counted, _ = swarm.upsert(
                peer_id, addr, seeder, key_hash, now, completed_event, 0, 0, proto
            )
            self.swarms[info_hash] = swarm  # only once the upsert succeeded
            return OptionView(
                swarm, info_hash, peer_id, addr, t, slot, counted, now, True, True, proto
            )
        t, slot, counted, updated = swarm.upsert(
            peer_id, addr, seeder, key_hash, now, completed_event, hold, max_per_ip, proto
        )
        if updated and not proto:
            return MemoryView(swarm, info_hash, peer_id, addr, t, slot, counted, now)
        return OptionView(
            swarm, info_hash, peer_id, addr, t, slot, counted, now, updated, False, proto
        )

    async def remove(
        self, info_hash: bytes, peer_id: bytes, addr: bytes, key_hash: int
    ) -> tuple[int, int, int]:
        swarm = self.swarms.get(info_hash)
        if swarm is None:
            return 0, 0, 0
        if key_hash > _KEY_MASK:
            key_hash = ((key_hash ^ key_hash >> 30) & _KEY_MASK) or 1
        swarm.remove(peer_id, addr, key_hash)
        return swarm.counts()

    async def scrape(self, info_hashes: list[bytes]) -> list[tuple[bytes, int, int, int]]:
        get = self.swarms.get
        out = []
        for ih in info_hashes:
            swarm = get(ih)
            out.append((ih, 0, 0, 0) if swarm is None else (ih, *swarm.counts()))
        return out

    async def scrape_all(self) -> list[tuple[bytes, int, int, int]]:
        return [(ih, *swarm.counts()) for ih, swarm in list(self.swarms.items())]

    async def drop(self, info_hash: bytes) -> bool:
        swarm = self.swarms.pop(info_hash, None)
        if swarm is None:
            return False
        totals = self.totals
        for t in range(4):
            totals[t] -= swarm.size(t)
        # A sweep holding this swarm across a yield must not count its peers off again.
        swarm.totals = [0, 0, 0, 0]
        return True

    async def sweep(self, cutoff: int) -> int:
        # Work is counted in peers examined, a removal weighing _REMOVAL_COST more (it probes
        # the index and moves a record); each expire() call looks at no more than _SWEEP_STEP
        # slots, so the loop is never held for much longer than one slice's worth.
        removed = 0
        work = 0
        for ih in list(self.swarms):
            swarm = self.swarms.get(ih)
            if swarm is None:
                continue
            for t in range(4):
                hi = swarm.size(t)
                while hi > 0:
                    step = min(hi, _SWEEP_STEP)
                    gone = swarm.expire(t, cutoff, hi, step)
                    removed += gone
                    hi -= step
                    work += step + gone * _REMOVAL_COST
                    if work >= _SWEEP_SLICE:
                        await asyncio.sleep(0)
                        work = 0
            work += 2
            # The swarm may have been refilled while we yielded: look again before dropping it.
            if swarm.used == 0 and self.swarms.get(ih) is swarm:
                del self.swarms[ih]
            if work >= _SWEEP_SLICE:
                await asyncio.sleep(0)
                work = 0
        return removed

    async def stats(self) -> StoreStats:
        return StoreStats(len(self.swarms), *self.totals)

    async def top_swarms(self, n: int) -> list[tuple[bytes, int, int, int]]:
        if n <= 0:
            return []
        items = list(self.swarms.items())
        best: list[tuple[int, bytes]] = []
        for start in range(0, len(items), _TOP_SLICE):
            chunk = [(sw.used, ih) for ih, sw in items[start : start + _TOP_SLICE]]
            best = heapq.nlargest(n, best + chunk)
            if start + _TOP_SLICE < len(items):
                await asyncio.sleep(0)
        # Counted again now: a swarm may have changed (or gone) while we yielded.
        rows = []
        for _, ih in best:
            swarm = self.swarms.get(ih)
            if swarm is not None:
                rows.append((ih, *swarm.counts()))
        rows.sort(key=lambda r: r[1] + r[2], reverse=True)
        return rows

    async def close(self) -> None:
        self.swarms.clear()
        self.totals[:] = [0, 0, 0, 0]
