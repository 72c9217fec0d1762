"""The in-memory swarm store.

Theory of operation
-------------------
The budget is a million peers in ~128 bytes each, so there is no Python object per peer. A swarm
keeps its peers in four ``bytearray`` tables of fixed-size records (see ``johnlocke.store``),
one per (address family, role): IPv4 seeders, IPv4 leechers, IPv6 seeders, IPv6 leechers.
Splitting by role lets a seeder be answered from the leecher table alone (seeders never get
seeders) and splitting by family keeps answers in the requester's family, both without filtering.

Tables stay dense: removing a peer moves the table's last record into the hole, so slot ``s`` of a
table with ``n`` records is valid for every ``s < n`` and a uniform sample is ``k`` random slots.

Finding a peer by peer_id uses a per-swarm open-addressing hash index, an ``array('i')`` whose
entries are ``slot << 2 | table`` (-1 empty, -2 deleted), probed linearly from ``hash(peer_id)``.
It costs 4 bytes per slot (8-16 bytes per peer at the load factors used) where a ``dict`` keyed
by ``bytes`` would cost over 100.

Nothing here awaits except ``sweep``, which yields to the event loop between slices.
"""

from __future__ import annotations

import asyncio
import random
import time
from array import array
from collections.abc import Callable
from struct import Struct

from johnlocke.errors import ClientError
from johnlocke.store import ADDR_LEN, RECORD_LEN

_TAIL = Struct("<II")  # last_seen, key_hash
_U32 = Struct("<I")
_EMPTY = -1
_DELETED = -2
_MIN_INDEX = 8
# Peers examined per sweep slice: ~30 bytes of work each, a few ms per slice.
_SWEEP_SLICE = 20_000

# table number = family << 1 | leecher
_TABLE_ADDR = (ADDR_LEN[0], ADDR_LEN[0], ADDR_LEN[1], ADDR_LEN[1])
_TABLE_REC = (RECORD_LEN[0], RECORD_LEN[0], RECORD_LEN[1], RECORD_LEN[1])


def _new_index(size: int) -> array:
    return array("i", [_EMPTY]) * size


class Swarm:
    """One torrent's peers. Not thread-safe; used from the event loop only."""

    __slots__ = ("tables", "index", "used", "deleted", "downloaded")

    def __init__(self) -> None:
        # b"" stands for an empty table: one shared immutable object instead of four
        # bytearrays per swarm (most swarms never see IPv6, many never see a seeder).
        self.tables: list[bytes | bytearray] = [b"", b"", b"", b""]
        self.index = _new_index(_MIN_INDEX)
        self.used = 0
        self.deleted = 0
        self.downloaded = 0

    def size(self, table: int) -> int:
        return len(self.tables[table]) // _TABLE_REC[table]

    def counts(self) -> tuple[int, int, int]:
        t = self.tables
        return (
            len(t[0]) // 34 + len(t[2]) // 46,
            len(t[1]) // 34 + len(t[3]) // 46,
            self.downloaded,
        )

    # --- index -----------------------------------------------------------------------------

    def _probe(self, peer_id: bytes) -> tuple[int, int]:
        """(index position, entry) for peer_id; entry -1 and a free position when absent."""
        index = self.index
        mask = len(index) - 1
        i = hash(peer_id) & mask
        free = -1
        tables = self.tables
        while True:
            e = index[i]
            if e == _EMPTY:
                return (i if free < 0 else free), -1
            if e == _DELETED:
                if free < 0:
                    free = i
            else:
                t = e & 3
                if tables[t].startswith(peer_id, (e >> 2) * _TABLE_REC[t] + _TABLE_ADDR[t]):
                    return i, e
            i = (i + 1) & mask

    def _reposition(self, peer_id: bytes, old: int, new: int) -> None:
        index = self.index
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
            tb = self.tables[t]
            rec = _TABLE_REC[t]
            off = _TABLE_ADDR[t]
            for s in range(len(tb) // rec):
                start = s * rec + off
                i = hash(bytes(tb[start : start + 20])) & mask
                while index[i] != _EMPTY:
                    i = (i + 1) & mask
                index[i] = s << 2 | t
        self.index = index
        self.deleted = 0

    # --- tables ----------------------------------------------------------------------------

    def _append(self, t: int, record: bytes) -> int:
        tb = self.tables[t]
        if not tb:
            tb = self.tables[t] = bytearray(record)
            return 0
        tb += record  # type: ignore[operator]
        return len(tb) // _TABLE_REC[t] - 1

    def _cut(self, t: int, slot: int) -> None:
        """Remove a record by moving the table's last record into its slot (index fixed up)."""
        tb = self.tables[t]
        rec = _TABLE_REC[t]
        last = len(tb) // rec - 1
        if slot != last:
            start = last * rec
            tb[slot * rec : slot * rec + rec] = tb[start : start + rec]  # type: ignore[index]
            off = start + _TABLE_ADDR[t]
            self._reposition(bytes(tb[off : off + 20]), last << 2 | t, slot << 2 | t)
        if last == 0:
            self.tables[t] = b""
        else:
            del tb[last * rec :]  # type: ignore[union-attr]

    def _forget(self, pos: int, t: int, slot: int) -> None:
        self.index[pos] = _DELETED
        self.used -= 1
        self.deleted += 1
        self._cut(t, slot)
        if self.used * 8 < len(self.index) and len(self.index) > _MIN_INDEX:
            self._resize()

    # --- operations ------------------------------------------------------------------------

    def upsert(
        self, peer_id: bytes, addr: bytes, seeder: bool, key_hash: int, now: int, completed: bool
    ) -> tuple[int, int, bool]:
        """Add or refresh a peer; return (table, slot, counted_a_completion)."""
        family = 0 if len(addr) == 6 else 1
        t = family << 1 | (not seeder)
        record = b"".join((addr, peer_id, _TAIL.pack(now, key_hash)))
        pos, e = self._probe(peer_id)
        if e < 0:
            slot = self._append(t, record)
            if self.index[pos] == _DELETED:
                self.deleted -= 1
            self.index[pos] = slot << 2 | t
            self.used += 1
            if (self.used + self.deleted) * 3 > len(self.index) * 2:
                self._resize()
            # A stranger saying "completed" finished while we did not know it (a restart).
            if completed and seeder:
                self.downloaded += 1
            return t, slot, completed and seeder
        old_t = e & 3
        old_slot = e >> 2
        rec = _TABLE_REC[old_t]
        tb = self.tables[old_t]
        start = old_slot * rec
        alen = _TABLE_ADDR[old_t]
        if tb[start : start + alen] != addr:
            # Same IP (new port) is the same peer; another IP must prove it with the key.
            if alen != len(addr) or tb[start : start + alen - 2] != addr[:-2]:
                (stored_key,) = _U32.unpack_from(tb, start + alen + 24)
                if key_hash == 0 or stored_key != key_hash:
                    raise ClientError("peer_id is in use from another address (send the same key)")
        counted = old_t & 1 == 1 and seeder
        if counted:
            self.downloaded += 1
        if old_t == t:
            tb[start : start + rec] = record  # type: ignore[index]
            return t, old_slot, counted
        self._cut(old_t, old_slot)
        slot = self._append(t, record)
        self.index[pos] = slot << 2 | t
        return t, slot, counted

    def remove(self, peer_id: bytes, addr: bytes, key_hash: int) -> bool:
        pos, e = self._probe(peer_id)
        if e < 0:
            return False
        t = e & 3
        tb = self.tables[t]
        start = (e >> 2) * _TABLE_REC[t]
        alen = _TABLE_ADDR[t]
        if alen != len(addr) or tb[start : start + alen - 2] != addr[:-2]:
            (stored_key,) = _U32.unpack_from(tb, start + alen + 24)
            if key_hash == 0 or stored_key != key_hash:
                raise ClientError("peer_id is in use from another address (send the same key)")
        self._forget(pos, t, e >> 2)
        return True

    def expire(self, t: int, cutoff: int, hi: int, budget: int) -> tuple[int, int]:
        """Drop records of table t last seen before cutoff, scanning slots hi-1 down.

        Scanning downwards keeps swap-removal safe: the record moved into a hole comes from
        the end, which was already examined. Returns (next hi, peers removed).
        """
        tb = self.tables[t]
        rec = _TABLE_REC[t]
        alen = _TABLE_ADDR[t]
        hi = min(hi, len(tb) // rec)
        lo = max(0, hi - budget)
        removed = 0
        unpack = _U32.unpack_from
        for slot in range(hi - 1, lo - 1, -1):
            start = slot * rec
            if unpack(tb, start + alen + 20)[0] < cutoff:
                peer_id = bytes(tb[start + alen : start + alen + 20])
                pos, e = self._probe(peer_id)
                self._forget(pos, t, slot)
                tb = self.tables[t]
                removed += 1
        return lo, removed


class MemoryView:
    """What one announcer sees of its swarm (``johnlocke.store.SwarmView``)."""

    __slots__ = ("swarm", "table", "slot", "complete", "incomplete", "downloaded", "completed")

    def __init__(self, swarm: Swarm, table: int, slot: int, completed: bool) -> None:
        self.swarm = swarm
        self.table = table
        self.slot = slot
        self.complete, self.incomplete, self.downloaded = swarm.counts()
        self.completed = completed

    @property
    def family(self) -> int:
        return self.table >> 1

    @property
    def seeder(self) -> bool:
        return not self.table & 1

    def count(self, seeders: bool) -> int:
        t = (self.table & 2) | (not seeders)
        n = self.swarm.size(t)
        return n - 1 if t == self.table else n

    def sample(self, seeders: bool, k: int, rng: random.Random) -> list[bytes]:
        t = (self.table & 2) | (not seeders)
        tb = self.swarm.tables[t]
        rec = _TABLE_REC[t]
        n = len(tb) // rec
        skip = self.slot if t == self.table else n  # the announcer's own slot, if in this table
        avail = n - 1 if skip < n else n
        if k <= 0 or avail <= 0:
            return []
        if k >= avail:
            return [tb[s * rec : s * rec + rec] for s in range(n) if s != skip]
        # Systematic sampling: k evenly spaced positions from a random start. Each peer is
        # picked with probability k/avail in O(k), with no copy or shuffle of the table.
        step = avail / k
        first = rng.random() * step
        out = []
        for i in range(k):
            s = int(first + i * step)
            if s >= skip:
                s += 1
            s *= rec
            out.append(tb[s : s + rec])
        return out


class MemoryStore:
    """Swarms in this process's memory (``johnlocke.store.Store``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.swarms: dict[bytes, Swarm] = {}
        self._clock = clock
        self._epoch = clock()

    def now(self) -> int:
        return int(self._clock() - self._epoch)

    async def announce(
        self,
        info_hash: bytes,
        peer_id: bytes,
        addr: bytes,
        seeder: bool,
        key_hash: int,
        completed_event: bool,
    ) -> MemoryView:
        swarm = self.swarms.get(info_hash)
        if swarm is None:
            swarm = Swarm()
            t, slot, counted = swarm.upsert(
                peer_id, addr, seeder, key_hash, self.now(), completed_event
            )
            self.swarms[info_hash] = swarm
        else:
            t, slot, counted = swarm.upsert(
                peer_id, addr, seeder, key_hash, self.now(), completed_event
            )
        return MemoryView(swarm, t, slot, counted)

    async def remove(
        self, info_hash: bytes, peer_id: bytes, addr: bytes, key_hash: int
    ) -> tuple[int, int, int]:
        swarm = self.swarms.get(info_hash)
        if swarm is None:
            return 0, 0, 0
        swarm.remove(peer_id, addr, key_hash)
        return swarm.counts()

    async def scrape(self, info_hashes: list[bytes]) -> list[tuple[bytes, int, int, int]]:
        out = []
        get = self.swarms.get
        for ih in info_hashes:
            swarm = get(ih)
            if swarm is None:
                out.append((ih, 0, 0, 0))
            else:
                out.append((ih, *swarm.counts()))
        return out

    async def scrape_all(self) -> list[tuple[bytes, int, int, int]]:
        return [(ih, *swarm.counts()) for ih, swarm in list(self.swarms.items())]

    async def sweep(self, cutoff: int) -> int:
        removed = 0
        work = 0
        for ih in list(self.swarms):
            swarm = self.swarms.get(ih)
            if swarm is None:
                continue
            for t in range(4):
                hi = swarm.size(t)
                while hi > 0:
                    lo, n = swarm.expire(t, cutoff, hi, _SWEEP_SLICE)
                    removed += n
                    work += hi - lo
                    hi = lo
                    if work >= _SWEEP_SLICE:
                        await asyncio.sleep(0)
                        work = 0
            work += 1
            # The swarm may have been refilled while we yielded: look again before dropping it.
            if swarm.used == 0 and self.swarms.get(ih) is swarm:
                del self.swarms[ih]
            if work >= _SWEEP_SLICE:
                await asyncio.sleep(0)
                work = 0
        return removed

    async def stats(self) -> tuple[int, int, int]:
        seeders = leechers = 0
        for swarm in self.swarms.values():
            c, i, _ = swarm.counts()
            seeders += c
            leechers += i
        return len(self.swarms), seeders, leechers

    async def close(self) -> None:
        self.swarms.clear()
