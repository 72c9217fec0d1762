"""The in-memory swarm store.

Theory of operation
-------------------
The budget is a million peers in well under 200 bytes each, whether they crowd into a few big
swarms or spread over a million swarms of one, and no event-loop stall over 20 ms. So there is
no Python object per peer, and none per small swarm either.

Records. A peer holds one record per address family it announced from (see ``johnlocke.store``):
its address (6, 18 or 8 bytes, exactly the wire format) and 28 bytes of ``meta``: peer_id (20),
last_seen (u32, store clock) and key (u32: 30 bits of the ``key`` hash and, in the top two bits,
the info-hashes of a hybrid torrent the peer announced under). A swarm keeps its records in six
tables, one per (family, role), numbered ``family << 1 | leecher``: a seeder is answered from
the leecher table alone, and answers stay in the requester's family, both without filtering.
Tables are dense (removing a record moves the table's last one into the hole, or closes the
gap), so a sample is a choice of slots and a run of neighbouring records is one slice of the
answer. ``complete``/``incomplete`` count distinct peers: a swarm counts the records beyond a
peer's first, per role (``xs``, ``xl``), and subtracts them.

Three tiers, by size. Most swarms on a public tracker have one or two peers, and there a Python
object per swarm (~100 bytes each, several per swarm) would cost more than the peers:

- A *packed* swarm is one immutable ``bytes``: a 16-byte header (records per table (6 x u8),
  ``xs``, ``xl`` (u8 each), ``downloaded`` (u64)), then every record's meta in table order, then
  every record's address in table order. A change builds the next ``bytes`` (a few hundred
  bytes copied in C); finding a peer_id is one ``bytes.find`` over the meta. ``bytes`` is not
  tracked by the cyclic garbage collector, so small swarms cost a full collection nothing.
- A swarm of at most one record (most of them) is not even an object: its packed form, padded
  to ``_SLOT`` bytes after its info_hash, lives in a slot of a ``Buckets`` table: ``bytearray``
  buckets of ~16 slots, picked by ``hash(info_hash)``, searched with ``bytes.find``, refreshed
  in place. A one-peer swarm costs ~90 bytes in all (a dict entry, its key and a packed
  ``bytes`` would cost ~190).
- Swarms of 2 to ``_SMALL`` records are packed ``bytes`` values of ``MemoryStore.swarms``; a
  bigger one is a ``Swarm``: two ``bytearray`` columns per table (addresses, meta) that grow in
  place, and a peer_id index. It goes back to packed at half of ``_SMALL``.

The index of a ``Swarm`` is open addressing in ``array('i')`` segments, entries
``slot << 3 | table`` (-1 empty, -2 deleted), probed linearly from ``hash(peer_id)``: 4 bytes a
slot where a ``dict`` keyed by ``bytes`` would cost over 100 per peer. Growth is bounded by
linear hashing (``_Segments``, shared with ``IpCounts`` and ``Buckets``): segments of
``_SEG_TARGET`` records on average, a growing table splits one segment at a time and a full
segment rebuilds only itself, so growing to a million peers never rehashes more than a few
thousand entries at once (a single array was rebuilt whole at each doubling: 0.5 s at 700k
peers); shrinking merges them back one at a time.

Per-IP limits (``max_per_ip``) count records per IP in a swarm: a packed swarm counts by
scanning its addresses; a ``Swarm`` asked once keeps an ``IpCounts``, another open-addressing
table of 64-bit entries ``hash(ip)[56 bits] << 8 | count`` (an IPv6 address counts by its
/64, a WebRTC record by its endpoint id). Two IPs would share a count only if 56 bits of their
(per-process salted) hashes agree, and then they would only look busier, never less busy.

The store keeps running totals of the records in each table (``MemoryStore.totals``): every
change to a table counts there, so ``stats()`` is O(1). Every change also sets a dirty flag that
``MemoryStore.changes`` turns into a number, so a snapshot of an unchanged store is skipped. A
swarm is dropped only by the sweep, once it is empty (or by ``drop``/``close``).

Memory given back. When swarms expire, their bytes go back to the allocator. Packed swarms are
pymalloc blocks, and pymalloc returns a 1 MiB arena to the system only once every block in it is
free, so a flood of swarms that later expire would leave arenas pinned by the few long-lived
objects allocated among them (measured on the daemon: object counts and traced memory back to
the start after a flood expired, RSS not: 50 -> 115 -> 124 -> 137 -> 156 MB over four floods).
Keeping one-peer swarms in buckets (over 512 bytes each, so from the C allocator) and small
swarms as one block each keeps pymalloc mostly out of it; the sweep shrinks the dict when it is
mostly empty (a ``dict`` never gives back its table) and, once 20,000 records went since the
last time, hands free heap pages back with ``malloc_trim`` (in a worker thread: it walks the
heap).

Nothing here awaits except ``sweep``, ``scrape_all`` and ``top_swarms``, which yield to the
event loop after a few ms of work (the sweep reads the clock after each bounded step); while one
of them (or a snapshot's ``dump``) is between slices, the buckets and the dict stay where they
are (no split, merge or shrink), so iteration is stable.

Snapshots (``johnlocke.snapshot``) take the IPv4 and IPv6 tables as they are: ``dump`` hands
out copies of a batch of swarms at a time, and ``restore`` takes them back, drops records that
expired meanwhile and rebuilds each swarm. WebRTC records are not dumped: their sockets died
with the process. The store's clock, ``now()``, can be set on restore so that it continues the
clock of the store that wrote the snapshot: ``last_seen`` values stay valid as they are.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import heapq
import mmap
import random
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from struct import Struct
from typing import NamedTuple

from johnlocke.errors import ClientError
from johnlocke.store import (
    ADDR_LEN,
    FAMILY_BY_LEN,
    TABLES,
    Candidate,
    Pick,
    StoreStats,
    SwarmNotFound,
)

_META = Struct("<20sII")  # peer_id, last_seen, key_hash
_SEEN_KEY = Struct("<II")
_U32 = Struct("<I")
_U64 = Struct("<Q")
META_LEN = 28
_SEEN = 20  # offsets inside a meta record
_KEY = 24
_KEY_MASK = (1 << 30) - 1
_PROTO_SHIFT = 30
# For each proto, a bytes.translate table from a key's top byte to 1 if the peer announced under
# that hash, else 0: a run of peers is filtered with one slice and one translate.
_SPEAKS = [bytes(1 if b >> 6 & proto else 0 for b in range(256)) for proto in range(4)]
_BIG_ENDIAN = sys.byteorder == "big"

_W = (ADDR_LEN[0], ADDR_LEN[0], ADDR_LEN[1], ADDR_LEN[1], ADDR_LEN[2], ADDR_LEN[2])  # per table
_IP_LEN = (4, 16, 8)  # per family: the part of the address the key rule and per-IP limits see
# The family of an address, by its length (-1: no family).
_FAMILY = FAMILY_BY_LEN

# --- packed swarms --------------------------------------------------------------------------
_HDR = 16  # counts (6 x u8), xs, xl, downloaded (u64)
_XS = 6  # header offsets
_DL = 8
_EMPTY_SWARM = bytes(_HDR)
# Swarms up to this many records are packed; a Swarm goes back to packed at half of it.
_SMALL = 32
# A bucket slot: info_hash, then a packed swarm of at most one record, zero-padded.
_MAX_ONE = _HDR + META_LEN + max(ADDR_LEN)
_SLOT = 20 + _MAX_ONE
_PAD = [bytes(n) for n in range(_MAX_ONE + 1)]
_BUCKET_LOAD = 16  # slots per bucket on average (a bucket is then ~1.3 KB)

# --- Swarm index ----------------------------------------------------------------------------
_EMPTY = -1
_DELETED = -2
_MIN_INDEX = 32
_SEG_TARGET = 1024  # records per index segment on average

# --- slices of work -------------------------------------------------------------------------
_SLICE = 0.003  # seconds a sweep holds the event loop at most between yields (give or take a step)
_SWEEP_STEP = 64  # slots per expire() call: ~1 ms if every one of them expires
# Peers per run when sampling: long enough that slicing is cheap, short enough that peers
# handed out together vary from answer to answer.
_RUN = 8
# Swarms ranked or scraped per slice of top_swarms and scrape_all: a few ms per slice.
_TOP_SLICE = 20_000
# Once sweeps have forgotten this many records since the last time, heap pages go back to the
# system (malloc_trim: a few ms).
_TRIM_AFTER = 20_000


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (gives free heap pages back to the system), if this is glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _malloc_trim() if sys.platform.startswith("linux") else None

# Copying a huge swarm's columns (a snapshot) costs more in page faults on the fresh copy than in
# copying (28 MB: ~20 ms, 3 ms of it the copy). So ``dump`` maps the copy's memory first and
# faults it in a piece at a time, yielding between pieces, then copies the swarm in one go.
_BIG_COPY = 1 << 20  # a Swarm's IPv4/IPv6 columns of at least this many bytes in all
_FAULT_PIECE = 1 << 20  # bytes of a copy's memory faulted in per breather
_PAGE = mmap.PAGESIZE


def _reserve(sizes: list[int]) -> list[mmap.mmap | None]:
    """Anonymous mappings for copies of columns of these sizes (with room to grow by 1/8), or
    None for columns too small to bother."""
    return [mmap.mmap(-1, n + n // 8 + _PAGE) if n >= _FAULT_PIECE else None for n in sizes]


def _copy_into(dest: mmap.mmap | None, col: bytes | bytearray) -> bytes | memoryview:
    if dest is None or len(col) > len(dest):
        return bytes(col)
    dest[: len(col)] = col
    return memoryview(dest)[: len(col)]


class SwarmRecord(NamedTuple):
    """One swarm's columns as immutable copies: what ``restore`` takes and ``records`` gives
    (``dumped_records`` reads a ``dump`` batch as these).

    Table ``t`` holds ``len(meta[t]) // 28`` records; ``addrs[t]`` is their addresses (6 bytes
    each for tables 0 and 1, 18 for 2 and 3, 8 for 4 and 5) and ``meta[t]`` their 28-byte
    records: peer_id, last_seen (u32 little-endian, store clock), key (u32 little-endian: 30
    bits of key hash, 2 bits of proto). ``addrs`` and ``meta`` have four tables (IPv4 and IPv6,
    as in a snapshot) or all six.
    """

    info_hash: bytes
    downloaded: int
    addrs: tuple[bytes, ...]
    meta: tuple[bytes, ...]


DUMP_FIELDS = 10  # items per swarm in a ``MemoryStore.dump`` batch


def dumped_records(batch: list[bytes | int]) -> Iterator[SwarmRecord]:
    """A ``MemoryStore.dump`` batch as ``SwarmRecord``s."""
    for i in range(0, len(batch), DUMP_FIELDS):
        f = batch[i : i + DUMP_FIELDS]
        yield SwarmRecord(f[0], f[1], (f[2], f[4], f[6], f[8]), (f[3], f[5], f[7], f[9]))  # type: ignore[arg-type]


def _seen_column(meta: bytes | bytearray) -> array:
    """Every record's last_seen, read in C: records are 7 u32 words and last_seen is word 5."""
    words = array("I")
    words.frombytes(meta)
    if _BIG_ENDIAN:
        words.byteswap()
    return words[_SEEN // 4 :: META_LEN // 4]


def _new_index(size: int) -> array:
    return array("i", [_EMPTY]) * size


def _index_size(live: int) -> int:
    size = _MIN_INDEX
    while size * 2 < live * 3 + 3:
        size *= 2
    return size


def _ip_key(family: int, addr: bytes | bytearray) -> bytes:
    """What per-IP limits count an address by: its IP, an IPv6 address's /64, a WebRTC id."""
    if family == 0:
        return bytes(addr[:4])
    if family == 1:
        return bytes(addr[:8])  # an IPv6 subscriber has a whole /64
    return b"\0" + bytes(addr[:8])  # never equal to an IPv4 or IPv6 key


_IP_HASH = 0xFFFF_FFFF_FFFF_FF00  # the hash bits an IpCounts entry keeps; the low byte counts


class _Segments:
    """Linear hashing over open-addressing segments: the peer_id index of a ``Swarm`` and
    ``IpCounts``. An entry's segment is ``hash & lmask``, or ``hash & (2 * lmask + 1)`` for
    segments below ``split``; growing splits the segment at ``split`` in two, shrinking merges the
    last one back into its buddy, so no change rehashes more than a segment or two."""

    __slots__ = ()
    segs: list[array]
    fill: list[int]  # used and deleted entries, per segment
    lmask: int
    split: int

    def _live(self, seg: array) -> list[int]:
        raise NotImplementedError

    def _hash_of(self, e: int) -> int:
        raise NotImplementedError

    def _rebuild(self, b: int, entries: list[int]) -> None:
        raise NotImplementedError

    def _split_one(self) -> None:
        b = self.split
        high = self.lmask + 1  # the new segment's number, and the bit that decides
        stay: list[int] = []
        move: list[int] = []
        for e in self._live(self.segs[b]):
            (move if self._hash_of(e) & high else stay).append(e)
        self.segs.append(self.segs[b])
        self.fill.append(0)
        self._rebuild(b, stay)
        self._rebuild(b + high, move)
        self.split += 1
        if self.split == high:
            self.lmask = self.lmask << 1 | 1
            self.split = 0

    def _merge_one(self) -> None:
        if self.split == 0:
            self.lmask >>= 1
            self.split = self.lmask + 1
        self.split -= 1
        last = self.segs.pop()
        self.fill.pop()
        self._rebuild(self.split, self._live(self.segs[self.split]) + self._live(last))


class IpCounts(_Segments):
    """Records per IP in one ``Swarm`` (see the theory of operation).

    Entries ``hash[56 bits] << 8 | count`` in ``array('Q')`` segments, linear hashing over the
    low hash bits as for the peer_id index, so that no change rehashes more than one segment.
    A count that falls to zero stays as a tombstone until its segment is rebuilt."""

    __slots__ = ("segs", "fill", "lmask", "split", "live")

    def __init__(self) -> None:
        self.segs = [array("Q", bytes(8 * _MIN_INDEX))]
        self.fill = [0]  # entries in each segment, tombstones included
        self.lmask = 0
        self.split = 0
        self.live = 0  # entries with a count

    @classmethod
    def of(cls, swarm: Swarm) -> IpCounts:
        counts = cls()
        for t in range(TABLES):
            addrs = swarm.addrs[t]
            w = _W[t]
            for off in range(0, len(addrs), w):
                counts.add(_ip_key(t >> 1, addrs[off : off + w]))
        return counts

    def _find(self, key: bytes) -> tuple[int, int, int]:
        """(segment, position, entry hash) of key's entry, or of the free slot for it."""
        k = (hash(key) & _IP_HASH) or 0x100
        h = k >> 8
        b = h & self.lmask
        if b < self.split:
            b = h & (self.lmask << 1 | 1)
        seg = self.segs[b]
        mask = len(seg) - 1
        i = (h >> 24) & mask
        while True:
            e = seg[i]
            if e == 0 or e & _IP_HASH == k:
                return b, i, k
            i = (i + 1) & mask

    def get(self, key: bytes) -> int:
        b, i, _ = self._find(key)
        return self.segs[b][i] & 0xFF

    def add(self, key: bytes) -> None:
        b, i, k = self._find(key)
        seg = self.segs[b]
        e = seg[i]
        if e == 0:
            seg[i] = k | 1
            self.live += 1
            self.fill[b] += 1
            if self.fill[b] * 3 > len(seg) * 2:
                self._rebuild(b, self._live(seg))
            if self.live > len(self.segs) * _SEG_TARGET:
                self._split_one()
        elif e & 0xFF < 255:
            seg[i] = e + 1
            if not e & 0xFF:
                self.live += 1

    def sub(self, key: bytes) -> None:
        b, i, _ = self._find(key)
        seg = self.segs[b]
        e = seg[i]
        if e & 0xFF:
            seg[i] = e - 1
            if e & 0xFF == 1:
                self.live -= 1
                if len(self.segs) > 1 and self.live * 4 < len(self.segs) * _SEG_TARGET:
                    self._merge_one()

    def _rebuild(self, b: int, entries: list[int]) -> None:
        seg = array("Q", bytes(8 * _index_size(len(entries))))
        mask = len(seg) - 1
        for e in entries:
            i = (e >> 32) & mask
            while seg[i]:
                i = (i + 1) & mask
            seg[i] = e
        self.segs[b] = seg
        self.fill[b] = len(entries)

    def _live(self, seg: array) -> list[int]:
        return [e for e in seg if e & 0xFF]

    def _hash_of(self, e: int) -> int:
        return e >> 8

    def size(self) -> int:
        """Bytes held by the table."""
        return sum(len(seg) for seg in self.segs) * 8


# --- choosing slots -------------------------------------------------------------------------


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


# --- packed swarms --------------------------------------------------------------------------
# A packed swarm P: P[0:6] records per table, P[6] xs, P[7] xl, P[8:16] downloaded; then the
# meta of every record (table 0's first), then the address of every record, in the same order.
# Records are found by their index r in table order; ``n`` below is always P[:6].


def packed_records(p: bytes) -> int:
    return p[0] + p[1] + p[2] + p[3] + p[4] + p[5]


def packed_counts(p: bytes) -> tuple[int, int, int]:
    """(complete, incomplete, downloaded) of a packed swarm: distinct peers per role."""
    return (
        p[0] + p[2] + p[4] - p[6],
        p[1] + p[3] + p[5] - p[7],
        _U64.unpack_from(p, _DL)[0],
    )


def _locate(n: bytes, r: int) -> tuple[int, int]:
    """(table, slot) of record r."""
    t = 0
    c = n[0]
    while r >= c:
        t += 1
        c += n[t]
    return t, r - c + n[t]


def _first(n: bytes, t: int) -> int:
    """The record index of table t's slot 0."""
    r = 0
    for u in range(t):
        r += n[u]
    return r


def _addr_base(n: bytes, a: int, t: int) -> int:
    """Where table t's addresses start, given ``a``, where table 0's do."""
    for u in range(t):
        a += n[u] * _W[u]
    return a


def _cut(p: bytes, totals: list[int], r: int) -> tuple[bytes, int, bytes, bytes]:
    """Remove record r: (new swarm, its table, its meta, its address)."""
    n = p[:6]
    a0 = _HDR + META_LEN * packed_records(p)
    t, s = _locate(n, r)
    w = _W[t]
    m = _HDR + META_LEN * r
    a = _addr_base(n, a0, t) + s * w
    head = bytearray(p[:_HDR])
    head[t] -= 1
    totals[t] -= 1
    meta = p[m : m + META_LEN]
    addr = p[a : a + w]
    return b"".join((head, p[_HDR:m], p[m + META_LEN : a], p[a + w :])), t, meta, addr


def _add(p: bytes, totals: list[int], t: int, meta: bytes, addr: bytes) -> tuple[bytes, int]:
    """Append a record to table t: (new swarm, its slot)."""
    n = p[:6]
    a0 = _HDR + META_LEN * packed_records(p)
    end_t = _first(n, t + 1)
    m = _HDR + META_LEN * end_t
    a = _addr_base(n, a0, t + 1)
    head = bytearray(p[:_HDR])
    head[t] += 1
    totals[t] += 1
    return b"".join((head, p[_HDR:m], meta, p[m:a], addr, p[a:])), n[t]


def _find_all(p: bytes, peer_id: bytes) -> list[int]:
    """The record indexes of every record of peer_id (at most one per family)."""
    out = []
    end = _HDR + META_LEN * packed_records(p)
    i = p.find(peer_id, _HDR, end)
    while i >= 0:
        if (i - _HDR) % META_LEN == 0:
            out.append((i - _HDR) // META_LEN)
        i = p.find(peer_id, i + 1, end)
    return out


def _with_extras(p: bytes, role: int, delta: int) -> bytes:
    """The swarm with ``delta`` added to the extra-record count of ``role`` (0 seeders)."""
    head = bytearray(p[:_HDR])
    head[_XS + role] += delta
    return bytes(head) + p[_HDR:]


def _with_download(p: bytes) -> bytes:
    head = bytearray(p[:_HDR])
    _U64.pack_into(head, _DL, _U64.unpack_from(p, _DL)[0] + 1)
    return bytes(head) + p[_HDR:]


def _ip_count(p: bytes, f: int, addr: bytes) -> int:
    """How many records of family f share addr's IP (an IPv6 address: its /64)."""
    n = p[:6]
    w = _W[f << 1]
    start = _addr_base(n, _HDR + META_LEN * packed_records(p), f << 1)
    end = start + (n[f << 1] + n[f << 1 | 1]) * w
    ip = addr[:8] if f == 1 else addr[: _IP_LEN[f]]
    count = 0
    i = p.find(ip, start, end)
    while i >= 0:
        if (i - start) % w == 0:
            count += 1
        i = p.find(ip, i + 1, end)
    return count


def _check_key(stored_key: int, key_hash: int) -> None:
    if key_hash == 0 or stored_key & _KEY_MASK != key_hash:
        raise ClientError("peer_id is in use from another address (send the same key)")


def _set_role(
    p: bytes, totals: list[int], rs: list[int], leecher: int
) -> tuple[bytes, dict[int, int]]:
    """Move records ``rs`` (one peer's) to the tables of role ``leecher``; the extra-record
    counts follow. Returns the swarm and each moved record's new slot, by family."""
    saved = []
    for r in sorted(rs, reverse=True):  # later indexes first: cutting shifts those after
        p, t, meta, addr = _cut(p, totals, r)
        saved.append((t, meta, addr))
    slots = {}
    for t, meta, addr in saved:
        p, slot = _add(p, totals, (t & 6) | leecher, meta, addr)
        slots[t >> 1] = slot
    if len(rs) > 1:
        head = bytearray(p[:_HDR])
        head[_XS + (leecher ^ 1)] -= len(rs) - 1
        head[_XS + leecher] += len(rs) - 1
        p = bytes(head) + p[_HDR:]
    return p, slots


def packed_refresh(
    p: bytes, peer_id: bytes, addr: bytes, t: int, key_hash: int, now: int, hold: int
) -> tuple[bytes, int, list[bytes], list[bytes], tuple[int, int, int]] | None:
    """The common announce on a packed swarm, in one step: a known peer, same family, same role,
    same address, no hybrid ``proto``. Returns (new swarm, slot, the view's addrs and meta
    tables, counts), the swarm itself unchanged when ``hold`` holds it; None when the announce
    is not that case (``packed_upsert`` then handles it)."""
    n0 = p[0]
    n1 = p[1]
    n2 = p[2]
    n3 = p[3]
    end = _HDR + META_LEN * (n0 + n1 + n2 + n3 + p[4] + p[5])
    ts = t & 6  # the family's seeder table; its leecher table follows
    if ts == 0:
        r0 = 0
        a0 = end
    elif ts == 2:
        r0 = n0 + n1
        a0 = end + _W[0] * r0
    else:
        r0 = n0 + n1 + n2 + n3
        a0 = end + _W[0] * (n0 + n1) + _W[2] * (n2 + n3)
    ns = p[ts]
    nl = p[ts + 1]
    ms = _HDR + META_LEN * r0
    ml = ms + META_LEN * ns
    me = ml + META_LEN * nl
    i = p.find(peer_id, ms, me)
    while i >= 0 and (i - ms) % META_LEN:
        i = p.find(peer_id, i + 1, me)
    if i < 0 or (i >= ml) != (t & 1):
        return None  # not in this family, or changing role
    w = _W[t]
    s = (i - ms) // META_LEN if i < ml else (i - ml) // META_LEN
    al = a0 + w * ns
    a = (a0 if i < ml else al) + s * w
    if p[a : a + w] != addr:
        return None
    if hold and now - _U32.unpack_from(p, i + _SEEN)[0] < hold:
        p2 = p
    else:
        p2 = b"".join((p[: i + _SEEN], _SEEN_KEY.pack(now, key_hash), p[i + META_LEN :]))
    addrs = [b"", b"", b"", b"", b"", b""]
    meta = [b"", b"", b"", b"", b"", b""]
    addrs[ts] = p2[a0:al]
    addrs[ts + 1] = p2[al : al + w * nl]
    meta[ts] = p2[ms:ml]
    meta[ts + 1] = p2[ml:me]
    counts = (n0 + n2 + p[4] - p[6], n1 + n3 + p[5] - p[7], _U64.unpack_from(p, _DL)[0])
    return p2, s, addrs, meta, counts


def packed_upsert(
    p: bytes,
    totals: list[int],
    peer_id: bytes,
    addr: bytes,
    f: int,
    seeder: bool,
    key_hash: int,
    now: int,
    completed: bool,
    hold: int,
    max_per_ip: int,
    proto: int,
) -> tuple[bytes, int, int, bool, bool]:
    """``Swarm.upsert`` for a packed swarm: (new swarm, table, slot, counted, updated)."""
    n = p[:6]
    end = _HDR + META_LEN * (n[0] + n[1] + n[2] + n[3] + n[4] + n[5])
    t = f << 1 | (not seeder)
    mine = -1
    other = -1  # a record of this peer in another family
    i = p.find(peer_id, _HDR, end)
    while i >= 0:
        if (i - _HDR) % META_LEN == 0:
            r = (i - _HDR) // META_LEN
            old_t, old_s = _locate(n, r)
            if old_t >> 1 == f:
                mine = r
                break
            other = r
        i = p.find(peer_id, i + 1, end)
    if mine >= 0:
        w = _W[t]
        m = _HDR + META_LEN * mine
        a = _addr_base(n, end, old_t) + old_s * w
        old_key = _U32.unpack_from(p, m + _KEY)[0]
        if p[a : a + w] != addr and p[a : a + _IP_LEN[f]] != addr[: _IP_LEN[f]]:
            _check_key(old_key, key_hash)
        if hold and now - _U32.unpack_from(p, m + _SEEN)[0] < hold:
            return p, old_t, old_s, False, False
        if proto:
            key_hash |= (old_key >> _PROTO_SHIFT | proto) << _PROTO_SHIFT
        seen_key = _SEEN_KEY.pack(now, key_hash)
        if old_t == t:
            if p[a : a + w] == addr:
                return (
                    b"".join((p[: m + _SEEN], seen_key, p[m + META_LEN :])),
                    t,
                    old_s,
                    False,
                    True,
                )
            return (
                b"".join((p[: m + _SEEN], seen_key, p[m + META_LEN : a], addr, p[a + w :])),
                t,
                old_s,
                False,
                True,
            )
        # The role changed: every record of the peer moves (this one with its new values).
        p = b"".join((p[: m + _SEEN], seen_key, p[m + META_LEN : a], addr, p[a + w :]))
        counted = bool(old_t & 1) and seeder
        if counted:
            p = _with_download(p)
        p, slots = _set_role(p, totals, _find_all(p, peer_id), t & 1)
        return p, t, slots[f], counted, True
    if max_per_ip and _ip_count(p, f, addr) >= max_per_ip:
        raise ClientError(
            f"too many peers from your address in this torrent (at most {max_per_ip})"
        )
    meta = _META.pack(peer_id, now, key_hash | proto << _PROTO_SHIFT)
    if other < 0:
        # A stranger saying "completed" finished while we did not know it (a restart).
        counted = completed and seeder
        p, slot = _add(p, totals, t, meta, addr)
        if counted:
            p = _with_download(p)
        return p, t, slot, counted, True
    # A new family for a known peer: its role is the peer's, as this announce says.
    old_t, _ = _locate(n, other)
    counted = bool(old_t & 1) and seeder
    if (old_t & 1) != (t & 1):
        p, _ = _set_role(p, totals, _find_all(p, peer_id), t & 1)
    p, slot = _add(p, totals, t, meta, addr)
    p = _with_extras(p, t & 1, 1)
    if counted:
        p = _with_download(p)
    return p, t, slot, counted, True


def _forget_record(p: bytes, totals: list[int], r: int) -> bytes:
    """Remove record r; the peer's other records (if any) keep it counted."""
    m = _HDR + META_LEN * r
    peer_id = p[m : m + 20]
    p, t, _, _ = _cut(p, totals, r)
    if (p[_XS] or p[_XS + 1]) and _find_all(p, peer_id):  # only where a peer has two records
        p = _with_extras(p, t & 1, -1)
    return p


def packed_remove(
    p: bytes, totals: list[int], peer_id: bytes, addr: bytes, f: int, key: int
) -> bytes:
    """``Swarm.remove`` for a packed swarm: the swarm without the peer's family-f record."""
    n = p[:6]
    end = _HDR + META_LEN * packed_records(p)
    for r in _find_all(p, peer_id):
        t, s = _locate(n, r)
        if t >> 1 != f:
            continue
        w = _W[t]
        a = _addr_base(n, end, t) + s * w
        if p[a : a + _IP_LEN[f]] != addr[: _IP_LEN[f]]:
            _check_key(_U32.unpack_from(p, _HDR + META_LEN * r + _KEY)[0], key)
        return _forget_record(p, totals, r)
    return p


def packed_expire(p: bytes, totals: list[int], cutoff: int) -> tuple[bytes, int]:
    """The swarm without records last seen before cutoff, and how many went."""
    seen = _seen_column(p[_HDR : _HDR + META_LEN * packed_records(p)])
    if not seen or min(seen) >= cutoff:
        return p, 0
    # One pass: the records kept, table by table, in one new swarm.
    addrs, meta = packed_columns(p)
    r = 0
    gone = 0
    for t in range(TABLES):
        w = _W[t]
        col_a = addrs[t]
        col_m = meta[t]
        n = len(col_m) // META_LEN
        keep = [s for s in range(n) if seen[r + s] >= cutoff]
        r += n
        if len(keep) < n:
            totals[t] -= n - len(keep)
            gone += n - len(keep)
            meta[t] = b"".join([col_m[s * META_LEN : (s + 1) * META_LEN] for s in keep])
            addrs[t] = b"".join([col_a[s * w : (s + 1) * w] for s in keep])
    xs, xl = _extras(meta) if p[_XS] or p[_XS + 1] else (0, 0)
    return pack(_U64.unpack_from(p, _DL)[0], addrs, meta, xs, xl), gone


def packed_columns(p: bytes, tables: int = TABLES) -> tuple[list[bytes], list[bytes]]:
    """(addrs, meta) of a packed swarm's first ``tables`` tables, as bytes per table."""
    n = p[:6]
    m = _HDR
    a = _HDR + META_LEN * packed_records(p)
    addrs = []
    metas = []
    for t in range(tables):
        k = n[t]
        metas.append(p[m : m + k * META_LEN])
        addrs.append(p[a : a + k * _W[t]])
        m += k * META_LEN
        a += k * _W[t]
    return addrs, metas


def pack(
    downloaded: int,
    addrs: Iterable[bytes | bytearray],
    meta: Iterable[bytes | bytearray],
    xs: int,
    xl: int,
) -> bytes:
    """A packed swarm from per-table columns (at most ``_SMALL`` + 1 records)."""
    meta = [bytes(m) for m in meta]
    addrs = [bytes(a) for a in addrs]
    counts = [len(m) // META_LEN for m in meta] + [0] * (TABLES - len(meta))
    head = bytes(counts) + bytes((xs, xl)) + _U64.pack(downloaded)
    return b"".join([head, *meta, *addrs])


def _extras(meta: list[bytes]) -> tuple[int, int]:
    """(xs, xl): records beyond each peer's first, per role, over per-table meta columns.

    Raises ``ValueError`` if a peer_id appears twice in one family or in both roles."""
    families = [f for f in range(len(meta) // 2) if meta[2 * f] or meta[2 * f + 1]]
    if len(families) == 1:  # the usual case: a peer_id may then appear once in the swarm
        f = families[0]
        col = meta[2 * f] + meta[2 * f + 1]
        n = len(col) // META_LEN
        if n > 1 and len({col[o : o + 20] for o in range(0, len(col), META_LEN)}) != n:
            raise ValueError("a peer_id appears twice in one family of a swarm")
        return 0, 0
    seeders: list[set[bytes]] = []
    leechers: list[set[bytes]] = []
    for f in range(len(meta) // 2):
        s_col = meta[2 * f]
        l_col = meta[2 * f + 1]
        s_ids = {s_col[o : o + 20] for o in range(0, len(s_col), META_LEN)}
        l_ids = {l_col[o : o + 20] for o in range(0, len(l_col), META_LEN)}
        if len(s_ids) + len(l_ids) != (len(s_col) + len(l_col)) // META_LEN or not s_ids.isdisjoint(
            l_ids
        ):
            raise ValueError("a peer_id appears twice in one family of a swarm")
        if s_ids:
            seeders.append(s_ids)
        if l_ids:
            leechers.append(l_ids)
    if len(seeders) + len(leechers) <= 1:
        return 0, 0  # one family, or one role in one family: no peer can have two records
    all_s = set().union(*seeders)
    all_l = set().union(*leechers)
    if not all_s.isdisjoint(all_l):
        raise ValueError("a peer_id is both a seeder and a leecher in one swarm")
    return sum(map(len, seeders)) - len(all_s), sum(map(len, leechers)) - len(all_l)


# --- big swarms -----------------------------------------------------------------------------


class Swarm(_Segments):
    """One torrent's records in per-table columns with a peer_id index (more than ``_SMALL``
    records, see the theory of operation). Used from the event loop only."""

    __slots__ = (
        "addrs",
        "meta",
        "segs",
        "fill",
        "lmask",
        "split",
        "used",
        "xs",
        "xl",
        "seeds",
        "leeches",
        "downloaded",
        "totals",
        "ipc",
    )

    def __init__(self, totals: list[int]) -> None:
        # The store's per-table record counts, kept up to date by _append and _cut.
        self.totals = totals
        # b"" stands for an empty column (one shared immutable object).
        self.addrs: list[bytes | bytearray] = [b""] * TABLES
        self.meta: list[bytes | bytearray] = [b""] * TABLES
        # The index: segment b = hash & lmask, or hash & (2 * lmask + 1) below ``split``
        # (linear hashing); ``fill`` counts each segment's used and deleted entries.
        self.segs: list[array] = [_new_index(_MIN_INDEX)]
        self.fill = [0]
        self.lmask = 0
        self.split = 0
        self.used = 0
        self.xs = 0  # records beyond each peer's first, among seeders and leechers
        self.xl = 0
        self.seeds = 0  # records in the seeder tables, and in the leecher tables
        self.leeches = 0
        self.downloaded = 0
        self.ipc: IpCounts | None = None  # built on first use by max_per_ip

    def size(self, table: int) -> int:
        return len(self.meta[table]) // META_LEN

    def counts(self) -> tuple[int, int, int]:
        return self.seeds - self.xs, self.leeches - self.xl, self.downloaded

    def peers(self) -> int:
        return self.used - self.xs - self.xl

    # --- index -----------------------------------------------------------------------------

    def _seg(self, h: int) -> int:
        b = h & self.lmask
        if b < self.split:
            b = h & (self.lmask << 1 | 1)
        return b

    def _probe(self, peer_id: bytes, f: int) -> tuple[int, int, int, int]:
        """(segment, position, entry, other) for peer_id's family-f record.

        entry is -1 when there is none; position is then a free one to insert at, and other
        an entry of the peer's in another family (or -1). When entry is found, other is not
        looked for."""
        h = hash(peer_id)
        b = h & self.lmask
        if b < self.split:
            b = h & (self.lmask << 1 | 1)
        seg = self.segs[b]
        mask = len(seg) - 1
        i = (h >> 32) & mask
        free = -1
        other = -1
        meta = self.meta
        while True:
            e = seg[i]
            if e == _EMPTY:
                return b, (i if free < 0 else free), -1, other
            if e == _DELETED:
                if free < 0:
                    free = i
            elif meta[e & 7].startswith(peer_id, (e >> 3) * META_LEN):
                if (e & 7) >> 1 == f:
                    return b, i, e, other
                other = e
            i = (i + 1) & mask

    def _entries(self, peer_id: bytes) -> list[int]:
        """Every index entry of peer_id (one per family it has a record in)."""
        h = hash(peer_id)
        seg = self.segs[self._seg(h)]
        mask = len(seg) - 1
        i = (h >> 32) & mask
        out = []
        meta = self.meta
        while True:
            e = seg[i]
            if e == _EMPTY:
                return out
            if e >= 0 and meta[e & 7].startswith(peer_id, (e >> 3) * META_LEN):
                out.append(e)
            i = (i + 1) & mask

    def _reentry(self, peer_id: bytes, old: int, new: int) -> None:
        """Replace index entry ``old`` (a record of peer_id) by ``new`` (_DELETED to delete)."""
        h = hash(peer_id)
        seg = self.segs[self._seg(h)]
        mask = len(seg) - 1
        i = (h >> 32) & mask
        while seg[i] != old:
            i = (i + 1) & mask
        seg[i] = new

    def _peer_id(self, e: int) -> bytes:
        off = (e >> 3) * META_LEN
        return bytes(self.meta[e & 7][off : off + 20])

    def _live(self, seg: array) -> list[int]:
        return [e for e in seg if e >= 0]

    def _hash_of(self, e: int) -> int:
        return hash(self._peer_id(e))

    def _rebuild(self, b: int, entries: list[int]) -> None:
        """Make segment b anew from ``entries``, sized for them."""
        seg = _new_index(_index_size(len(entries)))
        mask = len(seg) - 1
        for e in entries:
            i = (hash(self._peer_id(e)) >> 32) & mask
            while seg[i] != _EMPTY:
                i = (i + 1) & mask
            seg[i] = e
        self.segs[b] = seg
        self.fill[b] = len(entries)

    def _index(self, b: int, pos: int, e: int) -> None:
        """Store entry e at free position pos of segment b; grow what needs growing."""
        seg = self.segs[b]
        if seg[pos] == _EMPTY:
            self.fill[b] += 1
        seg[pos] = e
        if self.fill[b] * 3 > len(seg) * 2:
            self._rebuild(b, self._live(seg))
        if self.used > len(self.segs) * _SEG_TARGET:
            self._split_one()

    def _shrink_index(self) -> None:
        """After a removal: merge segments, or shrink the only one, as the swarm shrinks."""
        segs = self.segs
        if len(segs) > 1:
            if self.used * 4 < len(segs) * _SEG_TARGET:
                self._merge_one()
        elif self.used * 8 < len(segs[0]) and len(segs[0]) > _MIN_INDEX:
            self._rebuild(0, self._live(segs[0]))

    def ip_room(self, f: int, addr: bytes, cap: int) -> None:
        """Raise ClientError if addr's IP already has ``cap`` records in this swarm."""
        if self.ipc is None:
            self.ipc = IpCounts.of(self)
        if self.ipc.get(_ip_key(f, addr)) >= cap:
            raise ClientError(f"too many peers from your address in this torrent (at most {cap})")

    @classmethod
    def build(
        cls,
        totals: list[int],
        downloaded: int,
        addrs: Iterable[bytes | bytearray],
        meta: Iterable[bytes | bytearray],
        xs: int,
        xl: int,
    ) -> Swarm:
        """A swarm from per-table columns (checked by the caller), counted into ``totals``."""
        swarm = cls(totals)
        swarm.downloaded = downloaded
        swarm.xs = xs
        swarm.xl = xl
        entries: list[int] = []
        for t, (a, m) in enumerate(zip(addrs, meta, strict=False)):
            n = len(m) // META_LEN
            if n:
                swarm.addrs[t] = bytearray(a)
                swarm.meta[t] = bytearray(m)
                totals[t] += n
                if t & 1:
                    swarm.leeches += n
                else:
                    swarm.seeds += n
                entries += [s << 3 | t for s in range(n)]
        swarm.used = len(entries)
        # As many segments as the records call for, each sized for its share.
        segments = 1
        while swarm.used > segments * _SEG_TARGET:
            segments *= 2
        swarm.lmask = segments - 1
        parts: list[list[int]] = [[] for _ in range(segments)]
        for e in entries:
            parts[hash(swarm._peer_id(e)) & swarm.lmask].append(e)
        swarm.segs = [_new_index(_MIN_INDEX)] * segments
        swarm.fill = [0] * segments
        for b in range(segments):
            swarm._rebuild(b, parts[b])
        return swarm

    def packed(self) -> bytes:
        return pack(self.downloaded, self.addrs, self.meta, self.xs, self.xl)

    def forget_counts(self) -> None:
        """Count this swarm's records off the store's totals (it is being dropped)."""
        totals = self.totals
        for t in range(TABLES):
            totals[t] -= self.size(t)
        # A sweep holding this swarm across a yield must not count its records off again.
        self.totals = [0] * TABLES

    # --- tables ----------------------------------------------------------------------------

    def _append(self, t: int, addr: bytes, meta: bytes) -> int:
        self.totals[t] += 1
        if t & 1:
            self.leeches += 1
        else:
            self.seeds += 1
        col = self.meta[t]
        if not col:
            self.addrs[t] = bytearray(addr)
            self.meta[t] = bytearray(meta)
            return 0
        col += meta  # type: ignore[operator]
        self.addrs[t] += addr  # type: ignore[operator]
        return len(col) // META_LEN - 1

    def _cut(self, t: int, slot: int) -> None:
        """Remove a record by moving the table's last one into its slot (index fixed up)."""
        self.totals[t] -= 1
        if t & 1:
            self.leeches -= 1
        else:
            self.seeds -= 1
        meta = self.meta[t]
        addrs = self.addrs[t]
        w = _W[t]
        last = len(meta) // META_LEN - 1
        if last == 0:
            self.meta[t] = self.addrs[t] = b""
            return
        if slot != last:
            m = last * META_LEN
            meta[slot * META_LEN : slot * META_LEN + META_LEN] = meta[m:]  # type: ignore[index]
            addrs[slot * w : slot * w + w] = addrs[last * w :]  # type: ignore[index]
            self._reentry(bytes(meta[m : m + 20]), last << 3 | t, slot << 3 | t)
        del meta[last * META_LEN :]  # type: ignore[union-attr]
        del addrs[last * w :]  # type: ignore[union-attr]

    def _move(self, e: int, t: int) -> int:
        """Move record e to table t (a role change); return its new entry."""
        old_t = e & 7
        s = e >> 3
        w = _W[old_t]
        off = s * META_LEN
        meta = bytes(self.meta[old_t][off : off + META_LEN])
        addr = bytes(self.addrs[old_t][s * w : s * w + w])
        peer_id = meta[:20]
        self._reentry(peer_id, e, _DELETED)  # so _cut's fix-up cannot meet it
        self._cut(old_t, s)
        new = self._append(t, addr, meta) << 3 | t
        b, pos, _, _ = self._probe(peer_id, -1)
        self._index(b, pos, new)
        return new

    def _set_role(self, entries: list[int], leecher: int) -> dict[int, int]:
        """Move one peer's records to the tables of role ``leecher``; new entries by family."""
        out = {}
        for e in entries:
            if e & 1 != leecher:
                e = self._move(e, (e & 6) | leecher)
            out[(e & 7) >> 1] = e
        if len(entries) > 1:
            if leecher:
                self.xs -= len(entries) - 1
                self.xl += len(entries) - 1
            else:
                self.xl -= len(entries) - 1
                self.xs += len(entries) - 1
        return out

    def _forget(self, b: int, pos: int, t: int, slot: int) -> None:
        """Remove the record at index position (b, pos), table t, slot (no index shrinking)."""
        meta = self.meta[t]
        peer_id = bytes(meta[slot * META_LEN : slot * META_LEN + 20])
        if self.ipc is not None:
            w = _W[t]
            self.ipc.sub(_ip_key(t >> 1, self.addrs[t][slot * w : slot * w + w]))
        self.used -= 1
        self.segs[b][pos] = _DELETED
        self._cut(t, slot)
        # The peer stays if it has a record in another family (only possible with extras).
        if (self.xs or self.xl) and self._entries(peer_id):
            if t & 1:
                self.xl -= 1
            else:
                self.xs -= 1

    def _check_owner(self, t: int, slot: int, addr: bytes, key_hash: int) -> None:
        """A peer_id seen from another IP must prove itself with the key it first sent."""
        w = _W[t]
        ip = _IP_LEN[t >> 1]
        if self.addrs[t][slot * w : slot * w + ip] == addr[:ip]:
            return
        _check_key(_U32.unpack_from(self.meta[t], slot * META_LEN + _KEY)[0], key_hash)

    # --- operations ------------------------------------------------------------------------

    def upsert(
        self,
        peer_id: bytes,
        addr: bytes,
        f: int,
        seeder: bool,
        key_hash: int,
        now: int,
        completed: bool,
        hold: int = 0,
        max_per_ip: int = 0,
        proto: int = 0,
    ) -> tuple[int, int, bool, bool]:
        """Add or refresh the peer's family-f record; return (table, slot, counted, updated).

        ``key_hash`` must fit in 30 bits (``MemoryStore`` folds it)."""
        t = f << 1 | (not seeder)
        # The probe's first slot usually holds the record (the index is at most 2/3 full):
        # checked here, without the call.
        h = hash(peer_id)
        b = h & self.lmask
        if b < self.split:
            b = h & (self.lmask << 1 | 1)
        seg = self.segs[b]
        pos = (h >> 32) & (len(seg) - 1)
        e = seg[pos]
        if e >= 0 and e & 6 == t & 6 and self.meta[e & 7].startswith(peer_id, (e >> 3) * META_LEN):
            other = -1
        else:
            b, pos, e, other = self._probe(peer_id, f)
        if e < 0:
            if max_per_ip:
                self.ip_room(f, addr, max_per_ip)
            if other >= 0 and other & 1 != t & 1:  # a known peer changing role
                self._set_role(self._entries(peer_id), t & 1)
                b, pos, _, _ = self._probe(peer_id, f)
            meta = _META.pack(peer_id, now, key_hash | proto << _PROTO_SHIFT)
            slot = self._append(t, addr, meta)
            if self.ipc is not None:
                self.ipc.add(_ip_key(f, addr))
            self.used += 1
            self._index(b, pos, slot << 3 | t)
            if other < 0:
                # A stranger saying "completed" finished while we did not know it (a restart).
                counted = completed and seeder
            else:
                counted = bool(other & 1) and seeder
                if t & 1:
                    self.xl += 1
                else:
                    self.xs += 1
            if counted:
                self.downloaded += 1
            return t, slot, counted, True
        old_t = e & 7
        old_slot = e >> 3
        w = _W[old_t]
        old_addr = self.addrs[old_t][old_slot * w : old_slot * w + w]
        moved = old_addr != addr
        if moved:
            self._check_owner(old_t, old_slot, addr, key_hash)
        if hold and now - _U32.unpack_from(self.meta[old_t], old_slot * META_LEN + _SEEN)[0] < hold:
            return old_t, old_slot, False, False
        if proto:
            (old_key,) = _U32.unpack_from(self.meta[old_t], old_slot * META_LEN + _KEY)
            key_hash |= (old_key >> _PROTO_SHIFT | proto) << _PROTO_SHIFT
        m = old_slot * META_LEN
        self.meta[old_t][m + _SEEN : m + META_LEN] = _SEEN_KEY.pack(now, key_hash)  # type: ignore[index]
        if moved:
            self.addrs[old_t][old_slot * w : old_slot * w + w] = addr  # type: ignore[index]
            if self.ipc is not None and old_addr[: _IP_LEN[f]] != addr[: _IP_LEN[f]]:
                self.ipc.sub(_ip_key(f, old_addr))
                self.ipc.add(_ip_key(f, addr))
        if old_t == t:
            return t, old_slot, False, True
        counted = old_t & 1 == 1 and seeder
        if counted:
            self.downloaded += 1
        e = self._set_role(self._entries(peer_id), t & 1)[f]
        return t, e >> 3, counted, True

    def remove(self, peer_id: bytes, addr: bytes, f: int, key_hash: int) -> bool:
        b, pos, e, _ = self._probe(peer_id, f)
        if e < 0:
            return False
        self._check_owner(e & 7, e >> 3, addr, key_hash)
        self._forget(b, pos, e & 7, e >> 3)
        self._shrink_index()
        return True

    def expire(self, t: int, cutoff: int, hi: int, budget: int) -> int:
        """Drop records of table t last seen before cutoff among slots [hi - budget, hi).

        Scanning downwards keeps swap-removal safe: the record moved into a hole comes from the
        end, which was already examined. Returns how many records were removed.
        """
        meta = self.meta[t]
        hi = min(hi, len(meta) // META_LEN)
        removed = 0
        unpack = _U32.unpack_from
        for slot in range(hi - 1, max(0, hi - budget) - 1, -1):
            off = slot * META_LEN
            if unpack(meta, off + _SEEN)[0] < cutoff:
                b, pos, _, _ = self._probe(bytes(meta[off : off + 20]), t >> 1)
                self._forget(b, pos, t, slot)
                self._shrink_index()
                meta = self.meta[t]
                removed += 1
        return removed


# --- views ----------------------------------------------------------------------------------


class MemoryView:
    """What one announcer sees of its swarm (``johnlocke.store.SwarmView``).

    ``addrs`` and ``meta`` are the swarm's columns by table: a ``Swarm``'s own, or slices of a
    packed swarm's for the announcer's family (the other tables are then empty)."""

    __slots__ = (
        "addrs",
        "meta",
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
        addrs: list[bytes | bytearray],
        meta: list[bytes | bytearray],
        info_hash: bytes,
        peer_id: bytes,
        addr: bytes,
        table: int,
        slot: int,
        completed: bool,
        now: int,
        complete: int,
        incomplete: int,
        downloaded: int,
    ) -> None:
        self.addrs = addrs
        self.meta = meta
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.addr = addr
        self.table = table
        self.slot = slot
        self.complete = complete
        self.incomplete = incomplete
        self.downloaded = downloaded
        self.completed = completed
        self.now = now

    @property
    def swarm(self) -> MemoryView:
        """The tables this view reads (``swarm.meta[table]``), as ``johnlocke.testing`` looks."""
        return self

    @property
    def family(self) -> int:
        return self.table >> 1

    @property
    def seeder(self) -> bool:
        return not self.table & 1

    def count(self, seeders: bool) -> int:
        t = (self.table & 6) | (not seeders)
        n = len(self.meta[t]) // META_LEN
        return n - 1 if t == self.table else n

    def sample(self, seeders: bool, k: int, rng: random.Random) -> list[Pick]:
        t = (self.table & 6) | (not seeders)
        n = len(self.meta[t]) // META_LEN
        return runs(t, n, self.slot if t == self.table else n, k, rng)

    def window(self, seeders: bool, start: int, k: int) -> list[Pick]:
        t = (self.table & 6) | (not seeders)
        n = len(self.meta[t]) // META_LEN
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
            w = _W[t]
            addrs = self.addrs[t]
            meta = self.meta[t]
            for s in range(first, first + count):
                peer_id, seen, _ = _META.unpack_from(meta, s * META_LEN)
                out.append(
                    Candidate((t, s, 1), bytes(addrs[s * w : s * w + w]), peer_id, seeder, seen)
                )
        return out

    def _speaks(self, t: int, s: int) -> bool:
        """Whether peer s of table t announced under this view's hash of a hybrid torrent."""
        key = _U32.unpack_from(self.meta[t], s * META_LEN + _KEY)[0]
        return bool(key >> _PROTO_SHIFT & self.proto)

    def last_seen(self, picks: list[Pick]) -> list[int]:
        out: list[int] = []
        unpack = _U32.unpack_from
        for t, first, count in picks:
            if count == 1:
                out.append(unpack(self.meta[t], first * META_LEN + _SEEN)[0])
                continue
            out += _seen_column(self.meta[t][first * META_LEN : (first + count) * META_LEN])
        return out

    def compact(self, picks: list[Pick]) -> bytes:
        addrs = self.addrs
        w = _W[self.table]  # picks are all of the announcer's family
        if not self.proto:
            return b"".join([addrs[t][f * w : (f + c) * w] for t, f, c in picks])
        table = _SPEAKS[self.proto]
        metas = self.meta
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
            w = _W[t]
            addrs = self.addrs[t]
            meta = self.meta[t]
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
        addrs: list[bytes | bytearray],
        meta: list[bytes | bytearray],
        info_hash: bytes,
        peer_id: bytes,
        addr: bytes,
        table: int,
        slot: int,
        completed: bool,
        now: int,
        complete: int,
        incomplete: int,
        downloaded: int,
        updated: bool,
        created: bool,
        proto: int,
    ) -> None:
        super().__init__(
            addrs, meta, info_hash, peer_id, addr, table, slot, completed, now,
            complete, incomplete, downloaded,
        )  # fmt: skip
        self.updated = updated
        self.created = created
        self.proto = proto


def _packed_tables(p: bytes, f: int) -> tuple[list[bytes], list[bytes]]:
    """(addrs, meta) by table for a view of family f of a packed swarm (other tables empty)."""
    n = p[:6]
    ts = f << 1
    ms = _HDR + META_LEN * _first(n, ts)
    ml = ms + META_LEN * n[ts]
    me = ml + META_LEN * n[ts + 1]
    w = _W[ts]
    a_s = _addr_base(n, _HDR + META_LEN * packed_records(p), ts)
    al = a_s + w * n[ts]
    ae = al + w * n[ts + 1]
    addrs = [b""] * TABLES
    meta = [b""] * TABLES
    addrs[ts] = p[a_s:al]
    addrs[ts + 1] = p[al:ae]
    meta[ts] = p[ms:ml]
    meta[ts + 1] = p[ml:me]
    return addrs, meta


class Buckets(_Segments):
    """The swarms of at most one record: ``_SLOT``-byte slots (info_hash, then the packed swarm,
    zero-padded) in buckets, a ``bytearray`` each (b"" when empty), found by ``bytes.find``."""

    __slots__ = ("segs", "fill", "lmask", "split", "count")

    def __init__(self) -> None:
        self.segs: list[bytes | bytearray] = [b""]  # type: ignore[assignment]
        self.fill = [0]  # slots per bucket
        self.lmask = 0
        self.split = 0
        self.count = 0  # swarms in all buckets

    def _live(self, seg: bytes | bytearray) -> list[bytes | bytearray]:  # type: ignore[override]
        return [seg[o : o + _SLOT] for o in range(0, len(seg), _SLOT)]

    def _hash_of(self, slot: bytes | bytearray) -> int:  # type: ignore[override]
        return hash(bytes(slot[:20]))

    def _rebuild(self, b: int, slots: list[bytes | bytearray]) -> None:  # type: ignore[override]
        self.segs[b] = bytearray(b"".join(slots)) if slots else b""
        self.fill[b] = len(slots)

    def find(self, info_hash: bytes) -> tuple[int, int]:
        """(bucket, offset of info_hash's slot in it, or -1)."""
        h = hash(info_hash)
        b = h & self.lmask
        if b < self.split:
            b = h & (self.lmask << 1 | 1)
        bucket = self.segs[b]
        o = bucket.find(info_hash)
        while o >= 0 and o % _SLOT:
            o = bucket.find(info_hash, o + 1)
        return b, o

    def get(self, b: int, o: int) -> bytes:
        """The packed swarm in slot o of bucket b."""
        return _slot_swarm(self.segs[b], o)

    def put(self, b: int, o: int, info_hash: bytes, p: bytes) -> None:
        """Store packed swarm p (at most one record) in slot o of bucket b (o < 0: a new slot)."""
        bucket = self.segs[b]
        if o >= 0:
            bucket[o + 20 : o + _SLOT] = p + _PAD[_MAX_ONE - len(p)]  # type: ignore[index]
            return
        if bucket:
            bucket += info_hash + p + _PAD[_MAX_ONE - len(p)]  # type: ignore[operator]
        else:
            self.segs[b] = bytearray(info_hash + p + _PAD[_MAX_ONE - len(p)])
        self.count += 1

    def delete(self, b: int, o: int) -> None:
        bucket = self.segs[b]
        if len(bucket) == _SLOT:
            self.segs[b] = b""
        else:
            del bucket[o : o + _SLOT]  # type: ignore[union-attr]
        self.count -= 1

    def balance(self) -> bool:
        """One split or merge if the load calls for it; False if there was none to do."""
        if self.count > len(self.segs) * _BUCKET_LOAD:
            self._split_one()
        elif len(self.segs) > 1 and self.count * 4 < len(self.segs) * _BUCKET_LOAD:
            self._merge_one()
        else:
            return False
        return True


def _slot_swarm(bucket: bytes | bytearray, o: int) -> bytes:
    """The packed swarm in the bucket slot at offset o (as bytes)."""
    t = bucket.find(1, o + 20, o + 26)  # the table of its record, if it has one
    end = o + 20 + _HDR + (0 if t < 0 else META_LEN + _W[t - o - 20])
    return bytes(bucket[o + 20 : end])


# --- the store ------------------------------------------------------------------------------


class MemoryStore:
    """Swarms in this process's memory (``johnlocke.store.Store``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # Swarms of 2 to _SMALL records (packed bytes) and bigger ones (Swarm).
        self.swarms: dict[bytes, bytes | Swarm] = {}
        self.tiny = Buckets()  # swarms of at most one record
        self.totals = [0] * TABLES  # records per table, over every swarm
        # Set by every change of a peer or swarm (``changes`` makes a number of it).
        self._dirty = False
        self._generation = 0
        self._frozen = 0  # iterations between slices: no split, merge or dict shrink meanwhile
        self._dict_peak = 0  # the most swarms the dict held since it was last rebuilt
        self._freed = 0  # records swept since the last malloc_trim
        self._clock = clock
        self._epoch = clock()

    def now(self) -> int:
        return int(self._clock() - self._epoch)

    @property
    def changes(self) -> int:
        """A number that differs from any earlier reading exactly when the store changed since
        (a snapshot of an unchanged store is skipped). A flag on the hot path, not a count."""
        if self._dirty:
            self._dirty = False
            self._generation += 1
        return self._generation

    # --- tiers -----------------------------------------------------------------------------

    def _tiny_put(self, b: int, o: int, info_hash: bytes, p: bytes) -> None:
        self.tiny.put(b, o, info_hash, p)
        if o < 0 and not self._frozen:
            self.tiny.balance()

    def _tiny_del(self, b: int, o: int) -> None:
        self.tiny.delete(b, o)
        if not self._frozen:
            self.tiny.balance()

    def _settle(self, info_hash: bytes, p: bytes, b: int, o: int, in_dict: bool) -> bytes | Swarm:
        """Keep packed swarm p in the tier its size calls for; b/o/in_dict say where it was
        (o >= 0: in bucket b). Returns what now holds it."""
        n = packed_records(p)
        if n <= 1:
            if in_dict:
                del self.swarms[info_hash]
                b, o = self.tiny.find(info_hash)
            self._tiny_put(b, o, info_hash, p)
            return p
        if o >= 0:
            self._tiny_del(b, o)
        if n <= _SMALL:
            self.swarms[info_hash] = p
            if not in_dict and len(self.swarms) > self._dict_peak:
                self._dict_peak = len(self.swarms)
            return p
        addrs, meta = packed_columns(p)
        for t in range(TABLES):  # Swarm.build counts them in again
            self.totals[t] -= len(meta[t]) // META_LEN
        swarm = Swarm.build(
            self.totals, _U64.unpack_from(p, _DL)[0], addrs, meta, p[_XS], p[_XS + 1]
        )
        self.swarms[info_hash] = swarm
        return swarm

    def _unbig(self, info_hash: bytes, swarm: Swarm) -> None:
        """A Swarm that shrank to half of _SMALL records goes back to packed (or a bucket)."""
        p = swarm.packed()
        # A sweep holding the Swarm across a yield must not count its records off again.
        swarm.totals = [0] * TABLES
        self.swarms[info_hash] = p
        if swarm.used <= 1:
            self._settle(info_hash, p, 0, -1, True)

    # --- inspection --------------------------------------------------------------------------

    def _walk(self) -> Iterator[tuple[bytes, bytes | Swarm]]:
        """Every swarm once, as (info_hash, packed bytes or Swarm) as it is when reached.

        The caller may yield to the event loop between items if it raises ``_frozen`` for the
        walk (no split, merge or dict rebuild meanwhile). A swarm moves between the dict and the
        buckets as it grows and shrinks: one that was in the dict when the walk began is only
        visited there, so none comes twice (one that moved meanwhile may be missed)."""
        keys = list(self.swarms)
        start: set[bytes] = set()  # filled as the dict is walked, not in one go up front
        add = start.add
        for ih in keys:
            add(ih)
            swarm = self.swarms.get(ih)
            if swarm is not None:
                yield ih, swarm
        for b in range(len(self.tiny.segs)):
            bucket = bytes(self.tiny.segs[b])  # each bucket as it is at one moment
            for o in range(0, len(bucket), _SLOT):
                ih = bucket[o : o + 20]
                if ih not in start:
                    yield ih, _slot_swarm(bucket, o)

    def records(self) -> Iterator[SwarmRecord]:
        """Every swarm's columns (all six tables), for tests and tools; do not yield meanwhile."""
        for ih, s in self._walk():
            if isinstance(s, Swarm):
                yield SwarmRecord(
                    ih, s.downloaded, tuple(map(bytes, s.addrs)), tuple(map(bytes, s.meta))
                )
            else:
                addrs, meta = packed_columns(s)
                yield SwarmRecord(ih, _U64.unpack_from(s, _DL)[0], tuple(addrs), tuple(meta))

    def swarm_count(self) -> int:
        return len(self.swarms) + self.tiny.count

    def _lookup(self, info_hash: bytes) -> bytes | Swarm | None:
        swarm = self.swarms.get(info_hash)
        if swarm is None:
            b, o = self.tiny.find(info_hash)
            if o >= 0:
                return self.tiny.get(b, o)
        return swarm

    # --- snapshots ---------------------------------------------------------------------------

    def dump(self, max_peers: int = 50_000, max_swarms: int = 2_000) -> Iterator[list[bytes | int]]:
        """The swarms that have IPv4 or IPv6 records, as batches of copies, for a snapshot.

        A batch is a flat list of ``DUMP_FIELDS`` items per swarm: info_hash, downloaded, then the
        ``addrs`` and ``meta`` columns of tables 0 to 3 (copies: ``bytes``, or for a huge swarm
        ``memoryview``s of a private mapping; WebRTC records are not dumped); ``dumped_records``
        reads one as ``SwarmRecord``s. Flat on purpose: bytes and ints are not tracked by the
        garbage collector, so a snapshot in progress (whose batches live while a thread writes
        them) adds no long-lived containers that would trigger a full collection.

        A batch holds at most ``max_swarms`` swarms and, unless one swarm alone is larger, about
        ``max_peers`` records, and is closed after a few milliseconds' work: producing one holds the
        event loop no longer than that. The caller may yield between batches; each swarm is copied
        whole, as it is at that moment. Swarms created after the first batch are left for the next
        snapshot. An empty batch is a breather (the memory for a huge swarm's copy is being
        prepared): the caller should let the event loop run, and ask for the next.
        """
        self._frozen += 1
        try:
            batch: list[bytes | int] = []
            swarms = peers = 0
            clock = time.perf_counter
            due = clock() + _SLICE
            for ih, swarm in self._walk():
                if isinstance(swarm, Swarm):
                    a = swarm.addrs
                    m = swarm.meta
                    sizes = [len(a[0]), len(m[0]), len(a[1]), len(m[1])]
                    sizes += [len(a[2]), len(m[2]), len(a[3]), len(m[3])]
                    dests: list[mmap.mmap | None] = [None] * 8
                    if sum(sizes) >= _BIG_COPY:
                        dests = _reserve(sizes)
                        for dest in dests:
                            for off in range(0, len(dest) if dest else 0, _FAULT_PIECE):
                                end = min(len(dest), off + _FAULT_PIECE)  # type: ignore[arg-type]
                                dest[off:end:_PAGE] = bytes(len(range(off, end, _PAGE)))  # type: ignore[index]
                                yield []  # a breather: the caller lets the loop run
                        if self.swarms.get(ih) is not swarm:
                            continue  # it changed tier (or went) meanwhile: missed this time
                        a = swarm.addrs
                        m = swarm.meta
                    cols = [
                        _copy_into(dests[0], a[0]),
                        _copy_into(dests[1], m[0]),
                        _copy_into(dests[2], a[1]),
                        _copy_into(dests[3], m[1]),
                        _copy_into(dests[4], a[2]),
                        _copy_into(dests[5], m[2]),
                        _copy_into(dests[6], a[3]),
                        _copy_into(dests[7], m[3]),
                    ]
                    downloaded = swarm.downloaded
                else:
                    addrs, meta = packed_columns(swarm, 4)
                    cols = [
                        addrs[0],
                        meta[0],
                        addrs[1],
                        meta[1],
                        addrs[2],
                        meta[2],
                        addrs[3],
                        meta[3],
                    ]
                    downloaded = _U64.unpack_from(swarm, _DL)[0]
                held = (len(cols[1]) + len(cols[3]) + len(cols[5]) + len(cols[7])) // META_LEN
                if not held:
                    continue
                batch.append(ih)
                batch.append(downloaded)
                batch += cols
                swarms += 1
                peers += held
                if swarms >= max_swarms or peers >= max_peers or clock() >= due:
                    yield batch
                    batch = []
                    swarms = peers = 0
                    due = clock() + _SLICE
            if batch:
                yield batch
        finally:
            self._frozen -= 1

    def restore(self, records: Iterable[SwarmRecord], now: int, cutoff: int) -> tuple[int, int]:
        """Fill an empty store from ``dump``'s records; return (swarms, records) installed.

        The clock is set to continue at ``now`` (``last_seen`` values are in the writer's clock).
        Records last seen before ``cutoff`` are dropped, and so are swarms left without any (as
        the next sweep would). All or nothing: if ``records`` raises, or a record does not fit
        together (``ValueError``: columns of the wrong length, a peer_id twice in one family or
        in both roles, the same swarm twice), the store stays empty.
        """
        if self.swarm_count():
            raise RuntimeError("restore needs an empty store")
        try:
            swarms, peers = self._install(records, cutoff)
        except BaseException:
            self.swarms = {}
            self.tiny = Buckets()
            self.totals[:] = [0] * TABLES
            raise
        self._epoch = self._clock() - now
        self._dict_peak = len(self.swarms)
        self._dirty = True
        return swarms, peers

    def _install(self, records: Iterable[SwarmRecord], cutoff: int) -> tuple[int, int]:
        """``restore``'s work: each swarm packed as it is read (holding every record's columns
        until the end would leave the heap fragmented around the swarms)."""
        swarms = peers = 0
        totals = self.totals
        empty = (b"",) * TABLES
        for rec in records:
            ih = rec.info_hash
            if len(ih) != 20:
                raise ValueError("info_hash must be 20 bytes")
            if not 0 <= rec.downloaded < 1 << 64:
                raise ValueError("downloaded out of range")
            # bytes() of a bytes object is that object; a dump's memoryview becomes bytes.
            addrs = [bytes(a) for a in [*rec.addrs, *empty][:TABLES]]
            meta = [bytes(m) for m in [*rec.meta, *empty][:TABLES]]
            counts = [0] * TABLES
            used = 0
            for t in range(TABLES):
                m = meta[t]
                a = addrs[t]
                if not m and not a:
                    continue
                n, rest = divmod(len(m), META_LEN)
                w = _W[t]
                if rest or len(a) != n * w:
                    raise ValueError(
                        f"table {t}: {len(m)} bytes of records for {len(a)} of addresses"
                    )
                seen = _seen_column(m)
                if min(seen) < cutoff:
                    keep = [s for s in range(n) if seen[s] >= cutoff]
                    meta[t] = b"".join([m[s * META_LEN : (s + 1) * META_LEN] for s in keep])
                    addrs[t] = b"".join([a[s * w : (s + 1) * w] for s in keep])
                    n = len(keep)
                counts[t] = n
                used += n
            if not used:
                continue
            xs, xl = _extras(meta)
            b, o = self.tiny.find(ih)
            if o >= 0 or ih in self.swarms:
                raise ValueError("the same swarm twice")
            if used > _SMALL:
                self.swarms[ih] = Swarm.build(totals, rec.downloaded, addrs, meta, xs, xl)
            else:
                for t in range(TABLES):
                    totals[t] += counts[t]
                head = bytes(counts) + bytes((xs, xl)) + _U64.pack(rec.downloaded)
                p = b"".join([head, *meta, *addrs])
                if used == 1:
                    self._tiny_put(b, o, ih, p)
                else:
                    self.swarms[ih] = p
            swarms += 1
            peers += used
        return swarms, peers

    # --- operations ----------------------------------------------------------------------------

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
        return self._announce(
            info_hash, peer_id, addr, seeder, key_hash, completed_event, hold, max_per_ip,
            create, proto,
        )  # fmt: skip

    def _announce(
        self,
        info_hash: bytes,
        peer_id: bytes,
        addr: bytes,
        seeder: bool,
        key_hash: int,
        completed_event: bool,
        hold: int,
        max_per_ip: int,
        create: bool,
        proto: int,
    ) -> MemoryView:
        # Not a coroutine: the compiled build calls the Swarm's methods as C functions here.
        now = int(self._clock() - self._epoch)
        if key_hash > 0x3FFF_FFFF:  # _KEY_MASK, as a constant: this runs on every announce
            key_hash = ((key_hash ^ key_hash >> 30) & _KEY_MASK) or 1  # 2 bits are proto's
        try:
            f = _FAMILY[len(addr)]
        except KeyError:
            raise ValueError(f"an address is 6, 18 or 8 bytes, not {len(addr)}") from None
        swarm = self.swarms.get(info_hash)
        if swarm.__class__ is Swarm:
            big: Swarm = swarm  # type: ignore[assignment]
            t, slot, counted, updated = big.upsert(
                peer_id, addr, f, seeder, key_hash, now, completed_event, hold, max_per_ip, proto
            )
            if updated:
                self._dirty = True
                if not proto:
                    return MemoryView(
                        big.addrs, big.meta, info_hash, peer_id, addr, t, slot, counted, now,
                        big.seeds - big.xs, big.leeches - big.xl, big.downloaded,
                    )  # fmt: skip
            return OptionView(
                big.addrs, big.meta, info_hash, peer_id, addr, t, slot, counted, now,
                *big.counts(), updated, False, proto,
            )  # fmt: skip
        t = f << 1 | (not seeder)
        b = o = -1
        created = False
        if swarm is not None:
            p: bytes = swarm  # type: ignore[assignment]
            if not proto:
                fast = packed_refresh(p, peer_id, addr, t, key_hash, now, hold)
                if fast is not None:
                    p2, slot, addrs, meta, counts = fast
                    if p2 is p:  # held
                        return OptionView(
                            addrs, meta, info_hash, peer_id, addr, t, slot, False, now, *counts,
                            False, False, 0,
                        )  # fmt: skip
                    self.swarms[info_hash] = p2
                    self._dirty = True
                    return MemoryView(
                        addrs, meta, info_hash, peer_id, addr, t, slot, False, now, *counts
                    )
        else:
            b, o = self.tiny.find(info_hash)
            if o >= 0:
                bucket = self.tiny.segs[b]
                q = o + 20  # the swarm's packed form; its record (if any) at q + _HDR
                if (
                    bucket[q + t] == 1  # a record in table t: the same family and role
                    and bucket.startswith(peer_id, q + _HDR)
                    and bucket[q + _HDR + META_LEN : q + _HDR + META_LEN + len(addr)] == addr
                    and not proto
                ):
                    # The peer alone in its swarm, as before: refreshed in place.
                    held = hold and now - _U32.unpack_from(bucket, q + _HDR + _SEEN)[0] < hold
                    if not held:
                        bucket[q + _HDR + _SEEN : q + _HDR + META_LEN] = _SEEN_KEY.pack(
                            now, key_hash
                        )
                        self._dirty = True
                    addrs = [b"", b"", b"", b"", b"", b""]
                    meta = [b"", b"", b"", b"", b"", b""]
                    addrs[t] = addr
                    meta[t] = bytes(bucket[q + _HDR : q + _HDR + META_LEN])
                    dl = _U64.unpack_from(bucket, q + _DL)[0]
                    counts = (0, 1, dl) if t & 1 else (1, 0, dl)
                    if held:
                        return OptionView(
                            addrs, meta, info_hash, peer_id, addr, t, 0, False, now, *counts,
                            False, False, 0,
                        )  # fmt: skip
                    return MemoryView(
                        addrs, meta, info_hash, peer_id, addr, t, 0, False, now, *counts
                    )
                p = self.tiny.get(b, o)
            elif not create:
                raise SwarmNotFound(info_hash)
            else:
                p = _EMPTY_SWARM
                created = True
        p2, t, slot, counted, updated = packed_upsert(
            p, self.totals, peer_id, addr, f, seeder, key_hash, now, completed_event,
            hold, max_per_ip, proto,
        )  # fmt: skip
        if not updated:
            addrs, meta = _packed_tables(p, f)
            return OptionView(
                addrs, meta, info_hash, peer_id, addr, t, slot, False, now,
                *packed_counts(p), False, False, proto,
            )  # fmt: skip
        self._dirty = True
        held_by = self._settle(info_hash, p2, b, o, swarm is not None)
        if held_by.__class__ is Swarm:
            addrs, meta = held_by.addrs, held_by.meta  # type: ignore[union-attr]
        else:
            addrs, meta = _packed_tables(p2, f)
        if proto or created:
            return OptionView(
                addrs, meta, info_hash, peer_id, addr, t, slot, counted, now,
                *packed_counts(p2), True, created, proto,
            )  # fmt: skip
        return MemoryView(
            addrs, meta, info_hash, peer_id, addr, t, slot, counted, now, *packed_counts(p2)
        )

    async def remove(
        self, info_hash: bytes, peer_id: bytes, addr: bytes, key_hash: int
    ) -> tuple[int, int, int]:
        if key_hash > _KEY_MASK:
            key_hash = ((key_hash ^ key_hash >> 30) & _KEY_MASK) or 1
        try:
            f = _FAMILY[len(addr)]
        except KeyError:
            raise ValueError(f"an address is 6, 18 or 8 bytes, not {len(addr)}") from None
        swarm = self.swarms.get(info_hash)
        if isinstance(swarm, Swarm):
            if swarm.remove(peer_id, addr, f, key_hash):
                self._dirty = True
                if swarm.used <= _SMALL // 2:
                    self._unbig(info_hash, swarm)
            return swarm.counts()
        b = o = -1
        if swarm is None:
            b, o = self.tiny.find(info_hash)
            if o < 0:
                return 0, 0, 0
            p = self.tiny.get(b, o)
        else:
            p = swarm
        p2 = packed_remove(p, self.totals, peer_id, addr, f, key_hash)
        if p2 is not p:
            self._dirty = True
            self._settle(info_hash, p2, b, o, swarm is not None)
        return packed_counts(p2)

    async def scrape(self, info_hashes: list[bytes]) -> list[tuple[bytes, int, int, int]]:
        out = []
        for ih in info_hashes:
            swarm = self._lookup(ih)
            if swarm is None:
                out.append((ih, 0, 0, 0))
            elif isinstance(swarm, Swarm):
                out.append((ih, *swarm.counts()))
            else:
                out.append((ih, *packed_counts(swarm)))
        return out

    async def scrape_all(self) -> list[tuple[bytes, int, int, int]]:
        out = []
        self._frozen += 1
        try:
            for i, (ih, swarm) in enumerate(self._rows()):
                out.append((ih, *swarm))
                if i % _TOP_SLICE == _TOP_SLICE - 1:
                    await asyncio.sleep(0)
        finally:
            self._frozen -= 1
        return out

    def _rows(self) -> Iterator[tuple[bytes, tuple[int, int, int]]]:
        """(info_hash, counts) of every swarm (a ``_walk``)."""
        for ih, swarm in self._walk():
            yield ih, swarm.counts() if isinstance(swarm, Swarm) else packed_counts(swarm)

    async def drop(self, info_hash: bytes) -> bool:
        swarm = self.swarms.pop(info_hash, None)
        if swarm is None:
            b, o = self.tiny.find(info_hash)
            if o < 0:
                return False
            p = self.tiny.get(b, o)
            self._tiny_del(b, o)
        elif isinstance(swarm, Swarm):
            swarm.forget_counts()
            self._dirty = True
            return True
        else:
            p = swarm
        _, meta = packed_columns(p)
        for t in range(TABLES):
            self.totals[t] -= len(meta[t]) // META_LEN
        self._dirty = True
        return True

    async def sweep(self, cutoff: int) -> int:
        # Sliced by time: after every bounded step (a Swarm's _SWEEP_STEP slots, a packed
        # swarm, a bucket) the clock is read, and the loop gets control once _SLICE has passed.
        removed = 0
        totals = self.totals
        clock = time.perf_counter
        due = clock() + _SLICE
        self._frozen += 1
        try:
            for ih in list(self.swarms):
                swarm = self.swarms.get(ih)
                if swarm is None:
                    continue
                if isinstance(swarm, Swarm):
                    for t in range(TABLES):
                        hi = swarm.size(t)
                        while hi > 0:
                            step = min(hi, _SWEEP_STEP)
                            removed += swarm.expire(t, cutoff, hi, step)
                            hi -= step
                            if clock() >= due:
                                await asyncio.sleep(0)
                                due = clock() + _SLICE
                    # The swarm may have been dropped or refilled while we yielded.
                    if self.swarms.get(ih) is swarm:
                        if swarm.used == 0:
                            del self.swarms[ih]
                        elif swarm.used <= _SMALL // 2:
                            self._unbig(ih, swarm)
                else:
                    p, gone = packed_expire(swarm, totals, cutoff)
                    if gone:
                        removed += gone
                        self._dirty = True
                        if not packed_records(p):
                            del self.swarms[ih]
                        else:
                            self._settle(ih, p, -1, -1, True)
                    elif not packed_records(p):
                        del self.swarms[ih]  # emptied by a stop: now it goes, with its count
                        self._dirty = True
                if clock() >= due:
                    await asyncio.sleep(0)
                    due = clock() + _SLICE
            for b in range(len(self.tiny.segs)):
                removed += self._sweep_bucket(b, cutoff)
                if clock() >= due:
                    await asyncio.sleep(0)
                    due = clock() + _SLICE
        finally:
            self._frozen -= 1
        await self._give_back(removed)
        return removed

    def _sweep_bucket(self, b: int, cutoff: int) -> int:
        """Expire bucket b's swarms (each of at most one record); drop those left empty.
        Returns how many records went."""
        bucket = self.tiny.segs[b]
        keep = []
        gone = 0
        dropped = 0
        totals = self.totals
        unpack = _U32.unpack_from
        for o in range(0, len(bucket), _SLOT):
            t = bucket.find(1, o + 20, o + 26)
            if t >= 0:
                if unpack(bucket, o + 20 + _HDR + _SEEN)[0] >= cutoff:
                    keep.append(bucket[o : o + _SLOT])
                    continue
                totals[t - o - 20] -= 1
                gone += 1
            dropped += 1
        if dropped:
            self.tiny.segs[b] = bytearray(b"".join(keep)) if keep else b""
            self.tiny.fill[b] = len(keep)
            self.tiny.count -= dropped
            self._dirty = True
        return gone

    async def _give_back(self, removed: int) -> None:
        """After a sweep: merge buckets down to the load again, shrink the dict if it is mostly
        empty, and hand freed heap pages back to the system (see the theory of operation)."""
        merged = 0
        while not self._frozen and self.tiny.balance():
            merged += 1
            if merged % 5000 == 0:
                await asyncio.sleep(0)
        if self._frozen:
            return
        live = len(self.swarms)
        if self._dict_peak > 4 * live + 1000 and live < 200_000:
            # A dict never shrinks its table when entries go; a copy is sized for what is left
            # (~50 ns a swarm).
            self.swarms = dict(self.swarms)
            self._dict_peak = live
        self._freed += removed
        if self._freed >= _TRIM_AFTER and _TRIM is not None:
            self._freed = 0
            # In a worker thread: it walks the whole heap (~15 ms with many free chunks), and
            # ctypes lets the event loop run meanwhile.
            await asyncio.to_thread(_TRIM, 0)

    async def stats(self) -> StoreStats:
        return StoreStats(self.swarm_count(), *self.totals)

    async def top_swarms(self, n: int) -> list[tuple[bytes, int, int, int]]:
        if n <= 0:
            return []
        best: list[tuple[int, bytes]] = []
        chunk: list[tuple[int, bytes]] = []
        self._frozen += 1
        try:
            for ih, (c, i, _) in self._rows():
                chunk.append((c + i, ih))
                if len(chunk) >= _TOP_SLICE:
                    best = heapq.nlargest(n, best + chunk)
                    chunk = []
                    await asyncio.sleep(0)
        finally:
            self._frozen -= 1
        best = heapq.nlargest(n, best + chunk)
        # Counted again now: a swarm may have changed (or gone) while we yielded.
        rows = [
            row for row in await self.scrape([ih for _, ih in best]) if row[1] or row[2] or row[3]
        ]
        rows.sort(key=lambda r: r[1] + r[2], reverse=True)
        return rows

    async def close(self) -> None:
        self.swarms.clear()
        self.tiny = Buckets()
        self.totals[:] = [0] * TABLES
        self._dirty = True
