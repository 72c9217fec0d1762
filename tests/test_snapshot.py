"""Snapshots in process: round trips, expiry on load, bad files, full disks, the service's life.

The real daemon's restarts are in ``test_restart.py``; these tests drive ``SnapshotService`` and
the file format directly, with real files (and a real, tiny tmpfs for the full-disk case).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import zlib
from pathlib import Path

import pytest

from johnlocke.errors import ClientError
from johnlocke.snapshot import (
    MAGIC,
    SnapshotError,
    SnapshotReader,
    SnapshotService,
    encode_block,
    encode_header,
    encode_trailer,
    write_snapshot,
)
from johnlocke.store.memory import DUMP_FIELDS, MemoryStore, dumped_records

from .conftest import fill_disk, make_config

V4 = bytes([10, 0, 0, 1]) + (6881).to_bytes(2, "big")


def v4(i: int) -> bytes:
    return bytes([10, (i >> 16) & 255, (i >> 8) & 255, i & 255]) + (6881).to_bytes(2, "big")


def v6(i: int) -> bytes:
    return b"\x20\x01\x0d\xb8" + bytes(8) + i.to_bytes(4, "big") + (51413).to_bytes(2, "big")


def pid(i: int) -> bytes:
    return b"-qB4650-" + i.to_bytes(12, "big")


def ih(i: int) -> bytes:
    return i.to_bytes(20, "big")


class Clock:
    """A hand-driven monotonic clock for the store."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def filled_store(swarms: int = 30, seed: int = 7, clock: Clock | None = None) -> MemoryStore:
    """Swarms with peers in all four tables, keys, completions and a stopped peer."""
    rng = random.Random(seed)
    store = MemoryStore(clock or time.monotonic)
    n = 0
    for s in range(swarms):
        for _ in range(rng.randrange(1, 40)):
            n += 1
            addr = v6(n) if rng.random() < 0.3 else v4(n)
            key = rng.getrandbits(32) if rng.random() < 0.5 else 0
            await store.announce(ih(s), pid(n), addr, False, key, False)
            if rng.random() < 0.3:  # completes: counted in downloaded, becomes a seeder
                await store.announce(ih(s), pid(n), addr, True, key, True)
        await store.announce(ih(s), pid(10**6 + s), V4, False, 0, False)
        await store.remove(ih(s), pid(10**6 + s), V4, 0)
    return store


def columns(store: MemoryStore) -> dict[bytes, tuple]:
    """Everything a swarm holds in its IPv4 and IPv6 tables, comparable across stores."""
    return {
        r.info_hash: (r.downloaded, r.addrs[:4], r.meta[:4])
        for r in store.records()
        if any(r.meta[:4])
    }


def held(store: MemoryStore) -> list[bytes]:
    """The info_hashes of the swarms the store holds."""
    return sorted(r.info_hash for r in store.records())


def record(store: MemoryStore, info_hash: bytes):
    (found,) = [r for r in store.records() if r.info_hash == info_hash]
    return found


def service(tmp_path: Path, store: MemoryStore, **state) -> SnapshotService:
    config = make_config(state={"path": "snap.bin", **state})
    return SnapshotService(config, store, tmp_path)


# --- round trips ----------------------------------------------------------------------------


async def test_round_trip_keeps_every_peer_and_count(tmp_path):
    old = await filled_store()
    await write_snapshot(old, tmp_path / "snap.bin")
    new = MemoryStore()
    svc = service(tmp_path, new)
    svc.load()
    assert columns(new) == columns(old)
    assert sorted(await new.scrape_all()) == sorted(await old.scrape_all())
    assert await new.stats() == await old.stats()
    # The clock continues, so ages are unchanged.
    assert abs(new.now() - old.now()) <= 1


async def test_restored_swarms_work_like_live_ones(tmp_path):
    old = await filled_store(swarms=3)
    await write_snapshot(old, tmp_path / "snap.bin")
    new = MemoryStore()
    service(tmp_path, new).load()
    swarm = record(new, ih(0))
    # Every known peer is found by its peer_id: re-announcing updates it, never duplicates it.
    (before,) = await new.scrape([ih(0)])
    for t in range(4):
        for slot in range(len(swarm.meta[t]) // 28):
            rec = swarm.meta[t][slot * 28 : slot * 28 + 28]
            w = 6 if t < 2 else 18
            addr = swarm.addrs[t][slot * w : slot * w + w]
            key_hash = int.from_bytes(rec[24:], "little")
            view = await new.announce(ih(0), rec[:20], addr, t & 1 == 0, 0, False)
            assert (view.table, view.slot) == (t, slot)
            # The key check survived: the same peer_id from another address of the same family
            # needs its key.
            if key_hash:
                elsewhere = bytes(w - 2) + b"\x00\x01"
                with pytest.raises(ClientError):
                    await new.announce(ih(0), rec[:20], elsewhere, False, 1, False)
    assert await new.scrape([ih(0)]) == [before]
    t = 1 if swarm.meta[1] else 0
    await new.remove(ih(0), swarm.meta[t][:20], swarm.addrs[t][:6], 0)
    (after,) = await new.scrape([ih(0)])
    assert sum(after[1:3]) == sum(before[1:3]) - 1


async def test_empty_store_and_empty_swarms(tmp_path):
    store = MemoryStore()
    await store.announce(ih(1), pid(1), V4, True, 0, True)
    await store.remove(ih(1), pid(1), V4, 0)  # downloaded 1, no peers left
    written = await write_snapshot(store, tmp_path / "snap.bin")
    assert (written.swarms, written.peers) == (0, 0)
    new = MemoryStore()
    service(tmp_path, new).load()
    assert held(new) == []
    assert (tmp_path / "snap.bin").exists()  # a valid empty snapshot is not "corrupt"


async def test_peers_that_expired_while_down_are_dropped(tmp_path):
    clock = Clock()
    old = MemoryStore(clock)
    # Announced at store times 0, 1000, 1500, 2000; snapshot at 2000, so ages 2000, 1000, 500
    # and 0 s. The tracker is then down for 3000 s: with peer_timeout 3960 only the peers aged
    # 500 and 0 (3500 and 3000 s by now) survive.
    for i, at in enumerate((0, 1000, 1500, 2000)):
        clock.t = 1000.0 + at
        await old.announce(ih(1), pid(i), v4(i), i % 2 == 0, 0, False)
        await old.announce(ih(2), pid(i), v6(i), False, 0, False)
        if i == 0:
            await old.announce(ih(3), pid(9), v4(9), True, 0, False)
    assert old.now() == 2000
    wall = 1_700_000_000.0
    await write_snapshot(old, tmp_path / "snap.bin", wall_clock=lambda: wall)
    new = MemoryStore()
    svc = SnapshotService(
        make_config(state={"path": "snap.bin"}, announce={"peer_timeout": 3960}),
        new,
        tmp_path,
        wall_clock=lambda: wall + 3000,
    )
    svc.load()
    assert new.now() == 5000
    assert held(new) == [ih(1), ih(2)]  # swarm 3 had only an expired peer
    for k in (ih(1), ih(2)):
        swarm = record(new, k)
        kept = sorted(m[s : s + 20] for m in swarm.meta for s in range(0, len(m), 28))
        assert kept == [pid(2), pid(3)]
    # The next sweep agrees with the load: nothing more to drop yet.
    assert await new.sweep(new.now() - 3960) == 0


async def test_wall_clock_going_backwards_keeps_everyone(tmp_path):
    old = await filled_store(swarms=5)
    await write_snapshot(old, tmp_path / "snap.bin", wall_clock=lambda: 2e9)
    new = MemoryStore()
    svc = SnapshotService(make_config(state={"path": "snap.bin"}), new, tmp_path, lambda: 1e9)
    svc.load()
    assert columns(new) == columns(old)


async def test_many_swarms_span_several_blocks(tmp_path):
    store = MemoryStore()
    for s in range(4100):  # more than two dump batches of swarms
        await store.announce(ih(s), pid(s), v4(s), False, 0, False)
    big = ih(10**6)
    for i in range(60_000):  # one swarm larger than a batch's peer budget
        await store.announce(big, pid(i), v4(i), i % 2 == 0, 0, False)
    written = await write_snapshot(store, tmp_path / "snap.bin")
    assert (written.swarms, written.peers) == (4101, 64_100)
    with open(tmp_path / "snap.bin", "rb") as f:
        data = f.read()
    assert data.count(b"SWRM") >= 3
    new = MemoryStore()
    service(tmp_path, new).load()
    assert columns(new) == columns(store)


async def test_dump_batches_are_bounded_and_cover_every_swarm_once():
    store = MemoryStore()
    for s in range(50):
        for p in range(s % 7 + 1):
            await store.announce(ih(s), pid(p), v4(p), p % 2 == 0, 0, False)
    await store.announce(ih(99), pid(1), V4, False, 0, False)
    await store.remove(ih(99), pid(1), V4, 0)  # an empty swarm: not dumped
    batches = list(store.dump(max_peers=20, max_swarms=8))
    assert len(batches) > 3
    seen = []
    for batch in batches:
        assert len(batch) % DUMP_FIELDS == 0
        records = list(dumped_records(batch))
        assert len(records) <= 8
        peers = [sum(len(m) // 28 for m in r.meta) for r in records]
        assert sum(peers) - peers[-1] < 20  # the budget is only exceeded by the last swarm
        seen += [r.info_hash for r in records]
    assert sorted(seen) == sorted(ih(s) for s in range(50))


async def test_restore_is_all_or_nothing_and_needs_an_empty_store():
    old = await filled_store(swarms=5)
    records = [r for b in old.dump() for r in dumped_records(b)]

    def failing():
        yield from records[:3]
        raise SnapshotError("broken in the middle")

    new = MemoryStore()
    with pytest.raises(SnapshotError):
        new.restore(failing(), 10, 0)
    assert held(new) == []
    assert tuple(await new.stats()) == (0,) * 7  # nothing counted from the failed try
    new.restore(iter(records), 10, 0)
    assert columns(new) == columns(old)
    assert await new.stats() == await old.stats()
    with pytest.raises(RuntimeError):
        new.restore(iter(records), 10, 0)


def load_crafted(tmp_path: Path, batch: list, caplog) -> MemoryStore:
    """Load a snapshot of one hand-edited ``dump`` batch into a new store."""
    path = tmp_path / "snap.bin"
    block, peers = encode_block(batch)
    path.write_bytes(encode_header(time.time(), 0) + block + encode_trailer(1, peers))
    new = MemoryStore()
    with caplog.at_level(logging.INFO, logger="johnlocke.snapshot"):
        service(tmp_path, new).load()
    return new


async def test_a_duplicated_peer_is_refused(tmp_path, caplog):
    store = MemoryStore()
    await store.announce(ih(1), pid(1), v4(1), False, 0, False)
    await store.announce(ih(1), pid(2), v4(2), True, 0, False)
    batch = next(store.dump())
    batch[3] = batch[3] + batch[5]  # the seeder's record again, among the leechers
    batch[2] = batch[2] + batch[4]
    assert held(load_crafted(tmp_path, batch, caplog)) == []
    assert "a peer_id appears twice" in caplog.text


async def test_dual_stack_peers_round_trip_and_webrtc_peers_are_not_saved(tmp_path):
    store = MemoryStore()
    await store.announce(ih(1), pid(1), v4(1), False, 7, False)
    await store.announce(ih(1), pid(1), v6(1), False, 7, False)
    await store.announce(ih(1), pid(1), v4(1), True, 7, False)  # completes: both records move
    await store.announce(ih(1), pid(2), b"\xee" * 8, False, 0, False)  # WebRTC
    await store.announce(ih(2), pid(3), b"\xee" * 8, True, 0, False)  # WebRTC only
    written = await write_snapshot(store, tmp_path / "snap.bin")
    assert (written.swarms, written.peers) == (1, 2)  # two records of one peer
    new = MemoryStore()
    service(tmp_path, new).load()
    assert held(new) == [ih(1)]
    assert await new.scrape([ih(1)]) == [(ih(1), 1, 0, 1)]  # one peer, counted once
    assert await new.stats() == (1, 1, 0, 1, 0, 0, 0)
    # Still one peer: its IPv6 record needs no key, its IPv4 one does from elsewhere.
    await new.announce(ih(1), pid(1), v6(1), True, 0, False)
    with pytest.raises(ClientError):
        await new.announce(ih(1), pid(1), v4(2), True, 0, False)
    assert await new.scrape([ih(1)]) == [(ih(1), 1, 0, 1)]


async def test_version_1_files_still_load(tmp_path):
    old = await filled_store(swarms=4)
    path = tmp_path / "snap.bin"
    await write_snapshot(old, path)
    data = bytearray(path.read_bytes())
    data[8:12] = (1).to_bytes(4, "little")
    data[28:32] = zlib.crc32(data[:28]).to_bytes(4, "little")
    path.write_bytes(data)
    new = MemoryStore()
    service(tmp_path, new).load()
    assert columns(new) == columns(old)


async def test_a_peer_in_both_roles_is_refused(tmp_path, caplog):
    store = MemoryStore()
    await store.announce(ih(1), pid(1), v4(1), True, 0, False)
    await store.announce(ih(1), pid(2), v6(2), False, 0, False)
    batch = next(store.dump())
    batch[9] = batch[3]  # the IPv4 seeder's record again, among the IPv6 leechers
    batch[8] = v6(1)
    assert held(load_crafted(tmp_path, batch, caplog)) == []
    assert "both a seeder and a leecher" in caplog.text


async def test_a_wildly_old_snapshot_expires_everyone_without_overflow(tmp_path):
    old = await filled_store(swarms=3)
    await write_snapshot(old, tmp_path / "snap.bin", wall_clock=lambda: 0.0)  # "1970"
    new = MemoryStore()
    SnapshotService(make_config(state={"path": "snap.bin"}), new, tmp_path).load()
    assert held(new) == []
    assert new.now() < 10_000  # the clock stayed in range: announces still work
    await new.announce(ih(1), pid(1), V4, False, 0, False)


# --- bad files ------------------------------------------------------------------------------


def load_bad(tmp_path: Path, content: bytes, caplog) -> tuple[MemoryStore, list[str]]:
    path = tmp_path / "snap.bin"
    path.write_bytes(content)
    store = MemoryStore()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="johnlocke.snapshot"):
        service(tmp_path, store).load()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return store, lines


def assert_set_aside(tmp_path: Path, store: MemoryStore, lines: list[str], content: bytes) -> str:
    assert held(store) == []
    assert len(lines) == 1, lines
    assert "starting with no swarms" in lines[0]
    assert not (tmp_path / "snap.bin").exists()
    aside = sorted(tmp_path.glob("snap.bin.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert str(aside[0]) in lines[0]
    aside[0].unlink()
    return lines[0]


@pytest.fixture
async def good(tmp_path) -> bytes:
    store = await filled_store(swarms=40)
    await write_snapshot(store, tmp_path / "good.bin")
    return (tmp_path / "good.bin").read_bytes()


async def test_truncated_anywhere_is_set_aside(tmp_path, good, caplog):
    cuts = sorted({0, 1, 7, 8, 31, 32, 33, 40, 52, len(good) // 2, len(good) - 24, len(good) - 1})
    for cut in cuts:
        store, lines = load_bad(tmp_path, good[:cut], caplog)
        line = assert_set_aside(tmp_path, store, lines, good[:cut])
        assert "truncated" in line or "bad magic" in line, (cut, line)


async def test_flipped_bits_anywhere_are_set_aside(tmp_path, good, caplog):
    rng = random.Random(3)
    offsets = [0, 9, 13, 20, 28, 33, 37, 41, 45, 60, len(good) - 20, len(good) - 2]
    offsets += rng.sample(range(len(good)), 20)
    for off in offsets:
        bad = bytearray(good)
        bad[off] ^= 1 << rng.randrange(8)
        store, lines = load_bad(tmp_path, bytes(bad), caplog)
        assert_set_aside(tmp_path, store, lines, bytes(bad))


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "truncated"),
        (b"hello, this is not a snapshot at all" * 3, "bad magic"),
        (os.urandom(5000), "bad magic"),
        (encode_header(time.time(), 5), "truncated"),  # a header and nothing else
        (MAGIC + (3).to_bytes(4, "little") + bytes(40), "version 3 is newer"),
        (MAGIC + (0).to_bytes(4, "little") + bytes(40), "unknown format version 0"),
    ],
)
def test_unusable_files_are_set_aside_with_a_reason(tmp_path, caplog, content, reason):
    store, lines = load_bad(tmp_path, content, caplog)
    assert reason in assert_set_aside(tmp_path, store, lines, content)


async def test_data_after_the_trailer_is_refused(tmp_path, good, caplog):
    store, lines = load_bad(tmp_path, good + b"\0", caplog)
    assert "after the trailer" in assert_set_aside(tmp_path, store, lines, good + b"\0")


async def test_a_bad_last_block_keeps_nothing(tmp_path, caplog):
    store = await filled_store(swarms=2500)  # several blocks
    await write_snapshot(store, tmp_path / "good.bin")
    data = bytearray((tmp_path / "good.bin").read_bytes())
    data[-30] ^= 0xFF  # inside the last block
    new, lines = load_bad(tmp_path, bytes(data), caplog)
    assert_set_aside(tmp_path, new, lines, bytes(data))


def test_reader_rejects_a_huge_block_claim_without_allocating(tmp_path):
    header = encode_header(time.time(), 0)
    block = b"SWRM" + (1).to_bytes(4, "little") + (2**31).to_bytes(4, "little")
    block += (2**32 - 1).to_bytes(4, "little") + bytes(4)
    path = tmp_path / "x"
    path.write_bytes(header + block)
    with open(path, "rb") as f, pytest.raises(SnapshotError, match="truncated"):
        list(SnapshotReader(f).records())


def test_a_directory_in_the_way_is_moved_aside(tmp_path, caplog):
    (tmp_path / "snap.bin").mkdir()
    store = MemoryStore()
    with caplog.at_level(logging.INFO, logger="johnlocke.snapshot"):
        service(tmp_path, store).load()
    assert "cannot be read" in caplog.text
    assert not (tmp_path / "snap.bin").exists()
    assert len(list(tmp_path.glob("snap.bin.corrupt-*"))) == 1


def test_a_missing_file_is_one_info_line(tmp_path, caplog):
    store = MemoryStore()
    with caplog.at_level(logging.INFO, logger="johnlocke.snapshot"):
        service(tmp_path, store).load()
    assert held(store) == []
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "no snapshot" in caplog.text
    assert list(tmp_path.iterdir()) == []


# --- writing: atomic, and failures that do not stop the tracker ------------------------------


async def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    store = await filled_store(swarms=5)
    path = tmp_path / "snap.bin"
    await write_snapshot(store, path)
    first = path.read_bytes()
    await store.announce(ih(99), pid(99), V4, False, 0, False)
    await write_snapshot(store, path)
    assert path.read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.bin"]
    assert (path.stat().st_mode & 0o777) == 0o600


async def test_unwritable_directory_is_logged_and_retried(tmp_path, caplog):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the snapshot directory should be")
    store = await filled_store(swarms=3)
    svc = SnapshotService(make_config(state={"path": "state/snap.bin"}), store, tmp_path)
    with caplog.at_level(logging.INFO, logger="johnlocke.snapshot"):
        await svc.start()
        assert "will fail" in caplog.text
        assert await svc.snapshot() is None
        assert "snapshot to" in caplog.text and "failed" in caplog.text
        assert "retrying in 300 s" in caplog.text
        blocker.unlink()
        blocker.mkdir()
        written = await svc.snapshot()
        assert written is not None and written.swarms == 3
        assert "work again" in caplog.text
        await svc.stop()
    new = MemoryStore()
    SnapshotService(make_config(state={"path": "state/snap.bin"}), new, tmp_path).load()
    assert columns(new) == columns(store)


async def test_full_disk_keeps_the_previous_snapshot_and_retries(tiny_tmpfs, caplog):
    store = MemoryStore()
    for i in range(20):
        await store.announce(ih(1), pid(i), v4(i), False, 0, False)
    config = make_config(state={"path": "snap.bin", "snapshot_interval": 60})
    svc = SnapshotService(config, store, tiny_tmpfs)
    await svc.start()
    assert await svc.snapshot() is not None
    before = (tiny_tmpfs / "snap.bin").read_bytes()
    filler = fill_disk(tiny_tmpfs)
    for i in range(20, 2000):
        await store.announce(ih(2), pid(i), v4(i), False, 0, False)
    with caplog.at_level(logging.INFO, logger="johnlocke.snapshot"):
        assert await svc.snapshot() is None
        assert "No space left on device" in caplog.text
        assert (tiny_tmpfs / "snap.bin").read_bytes() == before  # the old one is intact
        assert not (tiny_tmpfs / "snap.bin.tmp").exists()  # and the partial one is gone
        # The store keeps working while snapshots fail.
        await store.announce(ih(3), pid(1), V4, False, 0, False)
        filler.unlink()
        assert await svc.snapshot() is not None
        assert "work again" in caplog.text
    await svc.stop()
    new = MemoryStore()
    SnapshotService(config, new, tiny_tmpfs).load()
    assert columns(new) == columns(store)


# --- the service ----------------------------------------------------------------------------


async def test_an_unchanged_store_is_not_written_again(tmp_path):
    store = await filled_store(swarms=3)
    svc = service(tmp_path, store)
    path = tmp_path / "snap.bin"
    ages = []
    svc.on_written = ages.append
    first = await svc.snapshot()
    assert first is not None and not first.skipped
    made = path.stat()
    await store.scrape([ih(0)])  # reading changes nothing
    again = await svc.snapshot()
    assert again is not None and again.skipped and (again.swarms, again.peers) == (3, first.peers)
    assert path.stat().st_ino == made.st_ino and path.stat().st_mtime_ns == made.st_mtime_ns
    assert len(ages) == 2  # the file is current: its age starts again
    await store.announce(ih(0), pid(1), V4, False, 0, False)  # a change: written again
    third = await svc.snapshot()
    assert third is not None and not third.skipped
    assert path.stat().st_ino != made.st_ino
    # Loaded at start and unchanged since: the file is already what the store holds.
    new = MemoryStore()
    svc2 = service(tmp_path, new)
    await svc2.start()
    assert (await svc2.snapshot()).skipped
    path.unlink()  # ... unless it is gone
    assert not (await svc2.snapshot()).skipped
    await svc2.stop()
    assert columns(new) == columns(store)


async def test_service_writes_periodically_and_at_stop(tmp_path):
    store = MemoryStore()
    svc = service(tmp_path, store, snapshot_interval=1)
    await svc.start()
    await store.announce(ih(1), pid(1), V4, False, 0, False)
    path = tmp_path / "snap.bin"
    for _ in range(100):
        if path.exists():
            break
        await asyncio.sleep(0.05)
    assert path.exists()
    await store.announce(ih(2), pid(2), V4, False, 0, False)
    await svc.stop()  # the final snapshot has swarm 2
    new = MemoryStore()
    service(tmp_path, new).load()
    assert held(new) == [ih(1), ih(2)]


async def test_stop_waits_for_a_periodic_snapshot_in_progress(tmp_path):
    store = await filled_store(swarms=2000)
    svc = service(tmp_path, store, snapshot_interval=1)
    await svc.start()
    for _ in range(200):
        if svc._writing is not None:
            break
        await asyncio.sleep(0.01)
    await svc.stop()
    new = MemoryStore()
    service(tmp_path, new).load()
    assert columns(new) == columns(store)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.bin", "snap.bin.lock"]


async def test_reload_applies_the_new_interval(tmp_path):
    store = MemoryStore()
    svc = service(tmp_path, store, snapshot_interval=3600)
    await svc.start()
    await store.announce(ih(1), pid(1), V4, False, 0, False)
    svc.reload(make_config(state={"path": "snap.bin", "snapshot_interval": 1}))
    for _ in range(100):
        if (tmp_path / "snap.bin").exists():
            break
        await asyncio.sleep(0.05)
    assert (tmp_path / "snap.bin").exists()
    await svc.stop()


async def test_disabled_writes_nothing(tmp_path):
    store = MemoryStore()
    svc = SnapshotService(make_config(state={"path": ""}), store, tmp_path)
    await svc.start()
    await store.announce(ih(1), pid(1), V4, False, 0, False)
    await svc.stop()
    assert list(tmp_path.iterdir()) == []


async def test_two_trackers_cannot_share_a_snapshot(tmp_path):
    first = service(tmp_path, MemoryStore())
    await first.start()
    second = service(tmp_path, MemoryStore())
    with pytest.raises(OSError, match="in use by another johnlocke"):
        await second.start()
    await first.stop()
    await second.start()  # free again once the first one stopped
    await second.stop()


async def test_a_leftover_temporary_file_is_removed_at_start(tmp_path, caplog):
    (tmp_path / "snap.bin.tmp").write_bytes(b"half a snapshot")
    svc = service(tmp_path, MemoryStore())
    with caplog.at_level(logging.INFO, logger="johnlocke.snapshot"):
        await svc.start()
    assert not (tmp_path / "snap.bin.tmp").exists()
    assert "interrupted snapshot" in caplog.text
    await svc.stop()


async def test_a_huge_swarm_round_trips_through_dump_and_restore():
    """A swarm big enough that dump copies it through a mapping (breathers, memoryviews)."""
    store = MemoryStore()
    for i in range(60_000):
        await store.announce(ih(1), pid(i), v4(i) if i % 9 else v6(i), i % 10 == 0, 0, False)
    await store.announce(ih(2), pid(1), v4(1), False, 0, False)
    batches = list(store.dump())
    assert [] in batches  # it let the event loop run while preparing the copy
    new = MemoryStore()
    new.restore((r for b in batches for r in dumped_records(b)), 10, 0)
    assert columns(new) == columns(store)
    assert await new.stats() == await store.stats()
