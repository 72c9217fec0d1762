"""Snapshot benchmark: event-loop lag while 1M peers are written, and the time to load them.

    python benchmarks/snapshot.py                       # 1M peers in 100k swarms
    python benchmarks/snapshot.py --peers 200000 --swarms 20000
    python benchmarks/snapshot.py --loop uvloop --dir /var/tmp

In-process: a ``MemoryStore`` is filled with ``--peers`` peers spread over ``--swarms`` swarms
(a quarter seeders, one in ten IPv6, real-looking peer_ids, half with a key), then
``johnlocke.snapshot.write_snapshot`` writes it to ``--dir`` while a monitor task sleeps 1 ms at a
time and records how late each wake-up is: the worst lateness is the longest the snapshot held
the event loop (an idle baseline shows the scheduling noise). Then a fresh store loads the file
the way the daemon does at start (``SnapshotService.load``), timed, and is checked against the
original. Targets: worst lag <= 50 ms, load <= a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's johnlocke

from johnlocke.config import validate  # noqa: E402
from johnlocke.snapshot import SnapshotService, write_snapshot  # noqa: E402
from johnlocke.store.memory import MemoryStore  # noqa: E402

TARGET_LAG_MS = 50.0
CLIENTS = [b"-qB4650-", b"-TR4060-", b"-lt20A0-", b"-DE13F0-", b"-UT360S-", b"M7-4-0--"]


async def fill(store: MemoryStore, peers: int, swarms: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    per, extra = divmod(peers, swarms)
    n = 0
    for s in range(swarms):
        info_hash = rng.randbytes(20)
        for _ in range(per + (s < extra)):
            n += 1
            peer_id = rng.choice(CLIENTS) + rng.randbytes(12)
            port = rng.randrange(1024, 65536).to_bytes(2, "big")
            addr = (rng.randbytes(16) if n % 10 == 0 else rng.randbytes(4)) + port
            key = rng.getrandbits(32) if n % 2 else 0
            await store.announce(info_hash, peer_id, addr, n % 4 == 0, key, False)


async def monitor(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - t - 0.001)


async def lag_during(coro_factory) -> tuple[object, list[float]]:
    stop = asyncio.Event()
    lags: list[float] = []
    mon = asyncio.ensure_future(monitor(stop, lags))
    await asyncio.sleep(0.05)
    lags.clear()
    result = await coro_factory()
    stop.set()
    await mon
    return result, lags


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * p))] if values else 0.0


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def main(args: argparse.Namespace) -> int:
    gc.freeze()  # the benchmark's own objects are not what is measured
    store = MemoryStore()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    await fill(store, args.peers, args.swarms)
    fill_s = time.perf_counter() - t0
    st = await store.stats()
    swarms, seeders, leechers = st.swarms, st.seeders, st.leechers
    print(
        f"store: {swarms} swarms, {seeders + leechers} peers ({seeders} seeders),"
        f" filled in {fill_s:.1f} s, {rss_mb() - rss0:.0f} MB RSS"
    )

    _, idle = await lag_during(lambda: asyncio.sleep(1.0))
    print(
        f"idle loop:      worst lag {max(idle) * 1000:6.2f} ms, p99 {pct(idle, 0.99) * 1000:.2f} ms"
    )

    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="jl-snapbench-"))
    path = workdir / "bench.snapshot"
    results = []
    for _ in range(args.rounds):
        written, lags = await lag_during(lambda: write_snapshot(store, path))
        results.append((written, lags))
        print(
            f"write:          worst lag {max(lags) * 1000:6.2f} ms, p99"
            f" {pct(lags, 0.99) * 1000:.2f} ms, median {statistics.median(lags) * 1000:.2f} ms;"
            f" {written.seconds:.2f} s, {written.size / 1e6:.1f} MB"
            f" ({written.size / max(1, written.peers):.1f} bytes/peer)"
        )
    worst = max(max(lags) for _, lags in results) * 1000

    config = validate({"state": {"path": str(path)}}, "<bench>")
    loaded = MemoryStore()
    gc.collect()
    rss1 = rss_mb()
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    c0 = time.process_time()
    SnapshotService(config, loaded, workdir).load()
    load_s = time.perf_counter() - t0
    load_cpu = time.process_time() - c0
    got_stats = await loaded.stats()
    got = (got_stats.swarms, got_stats.seeders, got_stats.leechers)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak0
    print(
        f"load:           {load_s:.2f} s ({load_cpu:.2f} s CPU) for {got[0]} swarms,"
        f" {got[1] + got[2]} peers;"
        f" store {rss_mb() - rss1:.0f} MB RSS (process peak grew {peak:.0f} MB)"
    )
    original = {r.info_hash: r for r in store.records()}
    same = got == (swarms, seeders, leechers) and all(
        r == original.get(r.info_hash) for r in loaded.records()
    )
    print(f"loaded store identical to the original: {same}")
    ok = worst <= TARGET_LAG_MS and same
    print(
        f"RESULT worst write lag {worst:.1f} ms (target <= {TARGET_LAG_MS:.0f});"
        f" load {load_s:.2f} s; {'PASS' if ok else 'FAIL'}"
    )
    if not args.dir:
        for p in workdir.iterdir():
            p.unlink()
        workdir.rmdir()
    else:
        os.unlink(path)
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--peers", type=int, default=1_000_000)
    p.add_argument("--swarms", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=2, help="snapshots written (default 2)")
    p.add_argument("--dir", help="where to write (default: a temporary directory)")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = p.parse_args()
    if args.loop == "uvloop":
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        sys.exit(runner.run(main(args)))
