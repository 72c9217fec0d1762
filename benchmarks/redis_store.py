"""Redis store benchmark: memory store vs Redis with 1 and 2 workers, Redis memory per peer, a
worker killed under load, and Redis stopped under load, in one run.

    python benchmarks/redis_store.py              # everything (about 10 minutes)
    python benchmarks/redis_store.py --quick      # smaller and shorter (a smoke run)
    python benchmarks/redis_store.py --parts throughput,memory

Throughput: the trackers run pinned to core 1 (both workers of ``--workers 2`` on that one
core), wrk and redis-server on core 0; 1,000 swarms of 100 peers (25% seeders), numwant=50,
64 keep-alive connections, the same re-announces for every tracker, rounds alternating between
them. CPU per announce is the tracker's processes (the supervisor and its workers) plus, for
Redis, redis-server, from /proc, divided by the answers wrk counted.

Memory: redis-server's ``used_memory`` (INFO memory) before and after filling it through the
store (the same Functions a tracker calls) with 1M peers in 100,000 swarms, and 1M peers in 1M
swarms (``--quick``: 100k peers).

Kill: ``--workers 2`` under a load of peers that start and then complete (each retried by the
client until it gets an answer); one worker is killed with SIGKILL in the middle. Afterwards
every swarm's ``downloaded`` must equal the peers that completed in it: none lost, none twice.

Faults: one worker, a steady announce load, redis-server killed for 3 s and started again on
the same port: how fast announces get "temporarily unavailable", how long until they succeed
again, and that nothing else (no 5xx, no hang) happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as bl  # noqa: E402

from johnlocke.store.redis import RedisStore  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

PARTS = ("throughput", "memory", "kill", "faults")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bl.add_run_args(p, duration=6.0)
    p.add_argument("--parts", default=",".join(PARTS), help=", ".join(PARTS))
    p.add_argument("--connections", type=int, default=64)
    a = bl.finish_run_args(p, p.parse_args(), duration=6.0)
    a.parts = bl.pick(p, a.parts, PARTS, "part")
    return a


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children that are alive now (the workers)."""
    total = bl.cpu_seconds(pid) or 0.0
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return total + sum(bl.cpu_seconds(int(k)) or 0.0 for k in kids)


def tracker(name: str, workdir: Path, toml: str, workers: int, core: int | None) -> bl.Server:
    port = bl.free_port()
    config = workdir / f"{name}.toml"
    config.write_text(f'[http]\nhost = "{bl.HOST}"\nport = {port}\n{toml}')
    argv = [sys.executable, "-m", "johnlocke", "--config", str(config)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return bl.Server(name, "johnlocke", bl.pinned(argv, core), port, workdir, env=bl.python_env())


def wrk(srv: bl.Server, paths: Path, duration: float, conns: int, redis_pid: int | None) -> dict:
    argv = [
        "wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "--timeout", "2s", "--latency",
        "-s", str(bl.HERE / "wrk_walk.lua"), "-H", f"User-Agent: {bl.USER_AGENT}",
        f"http://{bl.HOST}:{srv.port}", "--", str(paths), "announce", str(6 * 40), "1",
    ]  # fmt: skip
    t0 = time.perf_counter()
    busy0 = bl.machine_busy_seconds()
    cpu0 = tree_cpu(srv.pid)
    r0 = bl.cpu_seconds(redis_pid) if redis_pid else 0.0
    out = subprocess.run(
        bl.pinned(argv, bl.LOAD_CORE), capture_output=True, text=True, timeout=duration + 60
    )
    wall = time.perf_counter() - t0
    cpu = tree_cpu(srv.pid) - cpu0
    rcpu = (bl.cpu_seconds(redis_pid) - r0) if redis_pid else 0.0
    busy = bl.machine_busy_seconds() - busy0
    res = next(
        (json.loads(line[5:]) for line in out.stdout.splitlines() if line.startswith("JSON ")),
        None,
    )
    if res is None:
        return {"ok": False, "error": (out.stderr or out.stdout)[-300:]}
    n = res["requests"]
    secs = res["duration_us"] / 1e6
    return {
        "ok": res["non200"] == 0 and res["bad"] == 0,
        "rps": n / secs,
        "p99_ms": res["lat_p99_us"] / 1000,
        "bad": res["non200"] + res["bad"],
        "first_bad": res.get("first_bad", ""),
        "tracker_us": 1e6 * cpu / n,
        "redis_us": 1e6 * rcpu / n,
        "machine_busy_pct": 100 * busy / wall,
    }


def fill(srv: bl.Server, started: list[str]) -> str | None:
    errors: list[str] = []

    def on(i: int, status: int, body: bytes) -> None:
        err = f"HTTP {status}" if status != 200 else bl.check_announce(body, min_peers=0)
        if err:
            errors.append(err)

    stats = bl.run_async(bl.fetch_all(srv.port, started, on, timeout=600))
    if errors or stats.answered != len(started):
        return f"{len(errors)} bad answers, first: {errors[:1]}"
    return None


def part_throughput(args: argparse.Namespace, workdir: Path) -> dict:
    wl = bl.Workload(args.swarms, args.peers)
    paths = workdir / "announce_paths.txt"
    paths.write_text("\n".join(wl.reannounce_paths(args.numwant)) + "\n")
    started = wl.started_paths(args.numwant)
    out: dict = {}
    with bl.Processes() as procs:
        redis = RedisServer(workdir=workdir / "redis-tp")
        (workdir / "redis-tp").mkdir(exist_ok=True)
        redis.start()
        procs.procs.append(redis.proc)  # type: ignore[arg-type]
        subprocess.run(["taskset", "-pc", str(bl.LOAD_CORE), str(redis.proc.pid)], check=False,
                       capture_output=True)  # fmt: skip
        rtoml = f'[store]\nbackend = "redis"\nurl = "{redis.url}"\nprefix = "tp:"\n'
        servers = [
            tracker("memory", workdir, '[state]\npath = ""\n', 1, bl.TRACKER_CORE),
            tracker("redis-1w", workdir, rtoml, 1, bl.TRACKER_CORE),
            tracker("redis-2w", workdir, rtoml, 2, bl.TRACKER_CORE),
        ]
        for srv in servers:
            err = srv.start(procs, timeout=60)
            if err:
                raise SystemExit(f"{srv.name} did not start: {err}")
        for srv in servers[:2]:  # the two Redis trackers share one Redis: fill it once
            t0 = time.perf_counter()
            err = fill(srv, started)
            bl.log(f"  filled {srv.name}: {len(started)} peers in {time.perf_counter() - t0:.1f} s"
                   f"{' ERROR ' + err if err else ''}")  # fmt: skip
        for srv in servers:  # warm-up
            wrk(srv, paths, 2, args.connections, None)
        rounds: dict[str, list[dict]] = {s.name: [] for s in servers}
        for rnd in range(args.rounds):
            order = servers[rnd % 3 :] + servers[: rnd % 3]
            for srv in order:
                r = wrk(srv, paths, args.duration, args.connections, redis.proc.pid)
                rounds[srv.name].append(r)
                bl.log(
                    f"  round {rnd + 1} {srv.name:<9} {r.get('rps', 0):>7.0f}/s  tracker"
                    f" {r.get('tracker_us', 0):5.1f} us  redis {r.get('redis_us', 0):5.1f} us"
                    f"  p99 {r.get('p99_ms', 0):5.1f} ms  machine busy"
                    f" {r.get('machine_busy_pct', 0):.0f}%  {'OK' if r['ok'] else r}"
                )
        info = redis.info("commandstats")
        out["fcall"] = info.get("cmdstat_fcall", "")
        for name, rs in rounds.items():
            good = [r for r in rs if r["ok"]]
            if not good:
                out[name] = {"error": rs[0] if rs else "not run"}
                continue
            out[name] = {
                k: round(statistics.median(r[k] for r in good), 2)
                for k in ("rps", "tracker_us", "redis_us", "p99_ms", "machine_busy_pct")
            }
            out[name]["rps_rounds"] = [round(r["rps"]) for r in good]
            out[name]["cpu_us"] = round(out[name]["tracker_us"] + out[name]["redis_us"], 1)
        redis.close()
    m, r1, r2 = out.get("memory", {}), out.get("redis-1w", {}), out.get("redis-2w", {})
    if "rps" in m and "rps" in r1 and "rps" in r2:
        out["ratios"] = {
            "redis_1w_throughput_vs_memory": round(r1["rps"] / m["rps"], 2),
            "redis_1w_cpu_per_announce_vs_memory": round(r1["cpu_us"] / m["cpu_us"], 2),
            "redis_2w_throughput_vs_1w_one_core": round(r2["rps"] / r1["rps"], 3),
        }
    return out


async def _fill_store(store: RedisStore, swarms: int, per_swarm: int, batch: int = 4000) -> None:
    rng = random.Random(5)
    jobs = []
    for s in range(swarms):
        ih = s.to_bytes(4, "big") + rng.randbytes(16)
        for j in range(per_swarm):
            addr = rng.randbytes(4) + (1024 + j % 60000).to_bytes(2, "big")
            pid = b"-LT2110-" + rng.randbytes(12)
            jobs.append((ih, pid, addr, j < max(1, per_swarm // 4)))
            if len(jobs) >= batch:
                await asyncio.gather(*[store.announce(*a, 0, False) for a in jobs])
                jobs = []
    if jobs:
        await asyncio.gather(*[store.announce(*a, 0, False) for a in jobs])


def part_memory(args: argparse.Namespace, workdir: Path) -> dict:
    peers = 100_000 if args.quick else 1_000_000
    cases = {"100k swarms of 10": (peers // 10, 10), "1M swarms of 1": (peers, 1)}
    if args.quick:
        cases = {"10k swarms of 10": (peers // 10, 10), "100k swarms of 1": (peers, 1)}
    cases["1 swarm of 100k"] = (1, 100_000 if not args.quick else 10_000)
    out = {}
    for name, (swarms, per) in cases.items():
        d = workdir / f"redis-mem-{swarms}"
        d.mkdir(exist_ok=True)
        with RedisServer(workdir=d) as redis:
            base = int(redis.info()["used_memory"])
            store = RedisStore(redis.url, prefix="jl:", pool=1, timeout=60)
            t0 = time.perf_counter()
            bl.run_async(_fill_store_and_close(store, swarms, per))
            secs = time.perf_counter() - t0
            used = int(redis.info()["used_memory"])
            keys = int(redis.cli("DBSIZE").strip())
            total = swarms * per
            out[name] = {
                "peers": total,
                "bytes_per_peer": round((used - base) / total, 1),
                "used_memory_mb": round(used / 2**20, 1),
                "keys": keys,
                "fill_per_second": round(total / secs),
            }
            bl.log(f"  {name}: {out[name]}")
    return out


async def _fill_store_and_close(store: RedisStore, swarms: int, per: int) -> None:
    try:
        await _fill_store(store, swarms, per)
    finally:
        await store.close()


def part_kill(args: argparse.Namespace, workdir: Path) -> dict:
    swarms, per = (20, 50) if args.quick else (50, 100)
    rng = random.Random(11)
    hashes = [rng.randbytes(20) for _ in range(swarms)]
    peers = [bl.Peer(b"-LT2110-" + rng.randbytes(12), 10000 + j, f"{j:08X}", 100 * bl.PIECE)
             for j in range(per)]  # fmt: skip
    started = [p.query(bl.lt_quote(h), "started", 10) for p in peers for h in hashes]
    done = []
    for p in peers:
        for h in hashes:
            p2 = bl.Peer(p.peer_id, p.port, p.key, 0)
            done.append(p2.query(bl.lt_quote(h), "completed", 10))
    out: dict = {}
    with bl.Processes() as procs:
        d = workdir / "redis-kill"
        d.mkdir(exist_ok=True)
        redis = RedisServer(workdir=d).start()
        procs.procs.append(redis.proc)  # type: ignore[arg-type]
        rtoml = f'[store]\nbackend = "redis"\nurl = "{redis.url}"\nprefix = "k:"\n'
        srv = tracker("kill-2w", workdir, rtoml, 2, None)
        if srv.start(procs, timeout=60):
            raise SystemExit("kill-2w did not start")
        time.sleep(1.0)
        assert fill(srv, started) is None
        log_text = srv.log_path.read_text()
        pids = [int(x.split("(pid ")[1].split(")")[0]) for x in log_text.splitlines()
                if "started (pid" in x]  # fmt: skip
        failures: list[str] = []

        def on(i: int, status: int, body: bytes) -> None:
            if status != 200 or b"failure reason" in body:
                failures.append(body[:80].decode("latin-1"))

        async def load_and_kill() -> bl.FetchStats:
            task = asyncio.ensure_future(bl.fetch_all(srv.port, done, on, timeout=300))
            await asyncio.sleep(0.3)
            os.kill(pids[0], signal.SIGKILL)
            out["killed_pid"] = pids[0]
            return await task

        t0 = time.perf_counter()
        stats = bl.run_async(load_and_kill())
        out["completions_sent"] = len(done)
        out["answered"] = stats.answered
        out["client_reconnects"] = stats.reconnects
        out["failures"] = len(failures)
        out["seconds"] = round(time.perf_counter() - t0, 2)
        store = RedisStore(redis.url, prefix="k:")
        rows = bl.run_async(_scrape_and_close(store, hashes))
        out["downloaded_total"] = sum(r[3] for r in rows)
        out["swarms_exact"] = sum(1 for r in rows if r[1:] == (per, 0, per))
        out["swarms"] = swarms
        out["lost"] = max(0, len(done) - out["downloaded_total"])
        out["duplicated"] = max(0, out["downloaded_total"] - len(done))
        time.sleep(2.5)
        out["restarted"] = "worker 1 (pid" in srv.log_path.read_text() and "restarting" in (
            srv.log_path.read_text()
        )
        redis.close()
    bl.log(f"  {out}")
    return out


async def _scrape_and_close(store: RedisStore, hashes: list[bytes]) -> list:
    try:
        return await store.scrape(hashes)
    finally:
        await store.close()


def part_faults(args: argparse.Namespace, workdir: Path) -> dict:
    """One worker, a steady announce load from one client; Redis stopped for 3 s and started
    again, then hung (SIGSTOP) for 3 s, then full (maxmemory) for 3 s."""
    import urllib.request

    d = workdir / "redis-faults"
    d.mkdir(exist_ok=True)
    out: dict = {}
    with bl.Processes() as procs:
        redis = RedisServer(workdir=d).start()
        rtoml = f'[store]\nbackend = "redis"\nurl = "{redis.url}"\nprefix = "f:"\ntimeout = 1.0\n'
        srv = tracker("faults", workdir, rtoml, 1, None)
        if srv.start(procs, timeout=60):
            raise SystemExit("faults tracker did not start")
        wl = bl.Workload(10, 50)
        paths = wl.started_paths(20)
        faults = {
            "stopped": (redis.stop, redis.start),
            "hung": (redis.pause, redis.resume),
            "full": (
                lambda: redis.cli("CONFIG", "SET", "maxmemory", "1"),
                lambda: redis.cli("CONFIG", "SET", "maxmemory", "0"),
            ),
        }
        i = 0
        for name, (begin, end) in faults.items():
            log: list[tuple[float, float, str]] = []  # (start, seconds, outcome)
            t0 = time.perf_counter()
            t_begin = t_end = None
            while time.perf_counter() - t0 < 7:
                now = time.perf_counter() - t0
                if t_begin is None and now > 1:
                    begin()
                    t_begin = time.perf_counter() - t0
                if t_begin is not None and t_end is None and now > t_begin + 3:
                    end()
                    t_end = time.perf_counter() - t0
                a = time.perf_counter()
                try:
                    with urllib.request.urlopen(
                        f"http://{bl.HOST}:{srv.port}{paths[i % len(paths)]}", timeout=10
                    ) as resp:
                        body = resp.read()
                        outcome = (
                            "unavailable" if b"temporarily unavailable" in body
                            else "ok" if b"failure reason" not in body else "other failure"
                        )  # fmt: skip
                        if resp.status != 200:
                            outcome = f"HTTP {resp.status}"
                except Exception as exc:
                    outcome = f"error {type(exc).__name__}"
                log.append((a - t0, time.perf_counter() - a, outcome))
                i += 1
                time.sleep(0.01)
            during = [x for x in log if t_begin <= x[0] < t_end]
            after = [x for x in log if x[0] >= t_end]
            first_ok = next((x[0] for x in after if x[2] == "ok"), None)
            out[name] = {
                "announces": len(log),
                "outcomes": {k: sum(1 for x in log if x[2] == k) for k in {x[2] for x in log}},
                "fault_seconds": round(t_end - t_begin, 2),
                "slowest_answer_during_ms": round(1000 * max(x[1] for x in during), 1),
                "median_answer_during_ms": round(1000 * statistics.median(x[1] for x in during), 1),
                "first_ok_after_ms": None if first_ok is None else round(1000 * (first_ok - t_end)),
            }
            bl.log(f"  {name}: {out[name]}")
        text = srv.log_path.read_text()
        out["log_lines_about_the_store"] = sum(
            1 for line in text.splitlines() if "swarm store" in line
        )
        out["tracebacks"] = text.count("Traceback")
        redis.close()
    return out


def main() -> int:
    args = parse_args()
    if (
        bl.ensure_command("wrk", "wrk", not args.no_install) is None
        or bl.ensure_command("redis-server", "redis-server", not args.no_install) is None
    ):
        print("needs wrk and redis-server (apt-get install wrk redis-server)")
        return 2
    bl.pin_self(bl.LOAD_CORE)
    if args.wait_quiet:
        bl.wait_quiet(args.wait_quiet)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = bl.CACHE / f"redis-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    other, top = bl.other_load(2.0)
    print(f"Redis store benchmark {stamp}; other processes used {other:.0%} of a core before the"
          f" run{' (figures will be noisy)' if other > 0.1 else ''}")  # fmt: skip
    results: dict = {"other_load_before": round(other, 2)}
    try:
        for part in args.parts:
            print(f"\n== {part}")
            results[part] = globals()[f"part_{part}"](args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n== results")
    print(json.dumps(results, indent=2))
    print(f"figures written to {bl.write_results('redis', stamp, results)}")
    return 0


if __name__ == "__main__":
    bl.run_main(main)
