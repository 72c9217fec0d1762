"""WebTorrent: JohnLocke's WebSocket tracker side by side with npm bittorrent-tracker's, in one run.

    python benchmarks/websocket.py            # 3 rounds
    python benchmarks/websocket.py --quick    # 1 round, shorter
    python benchmarks/websocket.py --uvloop   # also JohnLocke on uvloop (announces only)
    python benchmarks/websocket.py --throughput-only   # announces only, no idle sockets

Two questions, each tracker pinned to core 1 and the load generator (node, ``ws_load.mjs``, the
``ws`` package bittorrent-tracker itself uses) to core 0, the trackers measured alternately,
round by round:

1. Announces with offers: ``--conns`` sockets in ``--swarms`` swarms, each sending announces
   with 5 offers (a browser's), the next one when the answer arrives; every offer is relayed
   to another socket of the generator. Reported as announces per second and per CPU second of
   the tracker (from /proc; on a shared machine the steadier of the two), and the ratio, with
   the share of its core the tracker and the generator used (a generator near 100 % would be
   the bottleneck, not the tracker).
2. Idle peers: 10,000 sockets, each having announced once into one of 1,000 swarms, held open.
   The tracker's RSS growth per socket, and the ratio. Meanwhile (JohnLocke) a steady trickle
   of HTTP announces over keep-alive connections, and of UDP announces, gives their latency
   (p50, p99), against the same trickles with no WebSocket open, in the same round.

Figures go to benchmarks/results/websocket.json as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402

HERE = Path(__file__).resolve().parent
JOHNLOCKE_TOML = """
[webtorrent]
max_connections = 20000
message_rate = 1000000.0
message_burst = 1000000
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="WebSocket trackers side by side.")
    p.add_argument("--quick", action="store_true", help="1 round, 5 s of announces, 5,000 idle")
    p.add_argument("--rounds", type=int, help="rounds (default 3)")
    p.add_argument("--seconds", type=float, help="seconds of announces per measurement (8)")
    p.add_argument("--conns", type=int, default=200, help="sockets sending announces (200)")
    p.add_argument("--swarms", type=int, default=20, help="their swarms (20)")
    p.add_argument("--idle", type=int, help="idle sockets held (10000)")
    p.add_argument(
        "--throughput-only", action="store_true", help="announces only (no idle sockets)"
    )
    p.add_argument(
        "--uvloop", action="store_true", help='also JohnLocke with [http] event_loop = "uvloop"'
    )
    p.add_argument("--no-install", action="store_true", help="do not npm/apt install anything")
    bl.add_wait_quiet(p)
    args = p.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seconds = args.seconds or (5.0 if args.quick else 8.0)
    args.idle = args.idle or (5000 if args.quick else 10000)
    return args


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def start_tracker(kind: str, npm_dir: Path, workdir: Path, procs: bl.Processes) -> bl.Server:
    if kind.startswith("johnlocke"):
        loop = "uvloop" if kind == "johnlocke-uvloop" else "asyncio"
        # Every generated socket comes from 127.0.0.1: no per-address connection cap.
        srv = bl.johnlocke_server(
            kind,
            workdir,
            event_loop=loop,
            extra_toml=JOHNLOCKE_TOML,
            http_toml="max_connections_per_ip = 0\n",
            snapshot=False,
        )
        # UDP on, on the HTTP port's number (the default), for its latency probe.
        config = workdir / f"{kind}.toml"
        text = config.read_text().replace("enabled = false", "enabled = true", 1)
        config.write_text(text)
    else:
        port = bl.free_port()
        argv = bl.pinned(
            ["node", str(npm_dir / "bittorrent_tracker_ws.mjs"), "--port", str(port)],
            bl.TRACKER_CORE,
        )
        srv = bl.Server("bittorrent-tracker", kind, argv, port, workdir)
    why = srv.start(procs)
    if why:
        raise SystemExit(f"{kind} did not start: {why}")
    time.sleep(0.5)
    return srv


def load(npm_dir: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        bl.pinned(["node", str(npm_dir / "ws_load.mjs"), *argv], bl.LOAD_CORE),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def throughput(srv: bl.Server, npm_dir: Path, args: argparse.Namespace) -> dict:
    url = f"ws://{bl.HOST}:{srv.port}/announce"
    proc = load(npm_dir, "throughput", "--url", url, "--conns", str(args.conns), "--swarms",
                str(args.swarms), "--offers", "5", "--seconds", str(args.seconds))  # fmt: skip
    assert proc.stdout is not None
    cpu0 = cpu1 = gen0 = gen1 = None
    result = None
    for line in proc.stdout:
        doc = json.loads(line)
        if doc.get("window") == "start":
            cpu0 = bl.cpu_seconds(srv.pid)
            gen0 = bl.cpu_seconds(proc.pid)
        elif doc.get("window") == "end":
            cpu1 = bl.cpu_seconds(srv.pid)
            gen1 = bl.cpu_seconds(proc.pid)
        else:
            result = doc
    proc.wait(60)
    if result is None or None in (cpu0, cpu1, gen0, gen1):
        raise SystemExit(f"the load generator failed: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
    cpu = max(cpu1 - cpu0, 1e-9)  # type: ignore[operator]
    return {
        "per_second": result["rate"],
        "per_cpu_second": result["announces"] / cpu,
        "cpu_share": cpu / result["seconds"],
        # The generator's share of its core: near 1.0, it (not the tracker) sets the pace.
        "load_cpu_share": (gen1 - gen0) / result["seconds"],  # type: ignore[operator]
        "offers_per_announce": result["offers_received"] / max(1, result["announces"]),
        "failures": result["failures"],
    }


async def http_probe(port: int, seconds: float, rate: float = 400.0, conns: int = 4) -> dict:
    """HTTP announces at a steady ``rate`` over ``conns`` keep-alive connections: latencies."""
    latencies: list[float] = []
    peers = [b"-qB4520-" + n.to_bytes(12, "big") for n in range(200)]
    ih = bytes(range(20))

    async def worker(k: int) -> None:
        reader, writer = await asyncio.open_connection(bl.HOST, port)
        gap = conns / rate
        end = time.perf_counter() + seconds
        n = k
        next_at = time.perf_counter()
        while time.perf_counter() < end:
            pid = peers[n % len(peers)]
            n += conns
            q = (f"info_hash={bl.lt_quote(ih)}&peer_id={bl.lt_quote(pid)}&port={6881 + n % 1000}"
                 "&uploaded=0&downloaded=0&left=100&numwant=50&compact=1")  # fmt: skip
            t0 = time.perf_counter()
            writer.write(f"GET /announce?{q} HTTP/1.1\r\nHost: {bl.HOST}\r\n\r\n".encode())
            status, _body, _close = await bl._read_response(reader)
            latencies.append(time.perf_counter() - t0)
            assert status == 200
            next_at += gap
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        writer.close()

    await asyncio.gather(*(worker(k) for k in range(conns)))
    latencies.sort()
    return {
        "count": len(latencies),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


def udp_probe(port: int, seconds: float, rate: float = 400.0) -> dict:
    """BEP 15 announces at a steady ``rate`` (one connect first): their round-trip times."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    sock.connect((bl.HOST, port))
    sock.send(struct.pack(">QII", 0x41727101980, 0, 1))
    _action, _tid, cid = struct.unpack(">IIQ", sock.recv(16))
    ih = bytes(range(20, 40))
    latencies = []
    end = time.perf_counter() + seconds
    next_at = time.perf_counter()
    n = 0
    while time.perf_counter() < end:
        n += 1
        pid = b"-TR3000-" + (n % 200).to_bytes(12, "big")
        packet = struct.pack(
            ">QII20s20sQQQIIIiH", cid, 1, n, ih, pid, 0, 100, 0, 0, 0, 0, 50, 6881 + n % 200
        )
        t0 = time.perf_counter()
        sock.send(packet)
        reply = sock.recv(2048)
        latencies.append(time.perf_counter() - t0)
        assert struct.unpack(">I", reply[:4])[0] == 1, reply
        next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.perf_counter()))
    sock.close()
    latencies.sort()
    return {
        "count": len(latencies),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


def idle(srv: bl.Server, npm_dir: Path, args: argparse.Namespace, probe: bool) -> dict:
    out: dict = {}
    if probe:
        out["http_alone"] = asyncio.run(http_probe(srv.port, 5))
        out["udp_alone"] = udp_probe(srv.port, 3)
    time.sleep(1)
    base = srv.rss_kib() or 0
    url = f"ws://{bl.HOST}:{srv.port}/announce"
    proc = load(npm_dir, "idle", "--url", url, "--conns", str(args.idle), "--swarms", "1000")
    assert proc.stdout is not None and proc.stdin is not None
    ready_now, _, _ = select.select([proc.stdout], [], [], 300)
    ready = json.loads(proc.stdout.readline() or "{}") if ready_now else {}
    if ready.get("ready") != args.idle:
        proc.kill()
        raise SystemExit(f"idle sockets not opened: {ready} {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
    time.sleep(3)
    held = srv.rss_kib() or 0
    if probe:
        out["http_with_sockets"] = asyncio.run(http_probe(srv.port, 5))
        out["udp_with_sockets"] = udp_probe(srv.port, 3)
    proc.stdin.close()
    done = json.loads(proc.stdout.readline() or "{}")
    proc.wait(30)
    out.update(
        rss_base_mib=base / 1024,
        rss_held_mib=held / 1024,
        growth_mib=(held - base) / 1024,
        bytes_per_socket=(held - base) * 1024 / args.idle,
        lost=done.get("lost"),
    )
    return out


def main() -> int:
    args = parse_args()
    raise_fd_limit()
    npm_dir, note = bl.ensure_bittorrent_tracker(install=not args.no_install)
    if npm_dir is None:
        raise SystemExit(f"bittorrent-tracker unavailable: {note}")
    for name in ("ws_load.mjs", "bittorrent_tracker_ws.mjs"):
        (npm_dir / name).write_bytes((HERE / name).read_bytes())
    workdir = bl.CACHE / "websocket"
    kinds = ["johnlocke", "bittorrent-tracker"]
    if args.uvloop:
        kinds.insert(1, "johnlocke-uvloop")
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    if args.wait_quiet:
        bl.wait_quiet(args.wait_quiet)
    bl.log(f"{note}; {args.rounds} rounds; other load: {bl.other_load(1.0)[0]:.2f} cores busy")
    with bl.Processes() as procs:
        for r in range(args.rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            for kind in order:
                srv = start_tracker(kind, npm_dir, workdir, procs)
                t = throughput(srv, npm_dir, args)
                procs.stop(srv.proc)  # type: ignore[arg-type]
                line = (
                    f"round {r + 1} {kind}: {t['per_second']:,.0f}/s,"
                    f" {t['per_cpu_second']:,.0f}/CPU s (tracker {t['cpu_share']:.0%} of its core,"
                    f" generator {t['load_cpu_share']:.0%} of its)"
                )
                if args.throughput_only or kind == "johnlocke-uvloop":
                    runs[kind].append({"throughput": t})
                    bl.log(line)
                    continue
                srv = start_tracker(kind, npm_dir, workdir, procs)
                i = idle(srv, npm_dir, args, probe=kind == "johnlocke")
                procs.stop(srv.proc)  # type: ignore[arg-type]
                runs[kind].append({"throughput": t, "idle": i})
                line += f", idle {i['bytes_per_socket']:,.0f} B/socket"
                if "http_with_sockets" in i:
                    line += f", HTTP p99 {i['http_with_sockets']['p99_ms']:.2f} ms"
                    line += f", UDP p99 {i['udp_with_sockets']['p99_ms']:.2f} ms"
                bl.log(line)

    def med(kind: str, path: tuple[str, ...]) -> float:
        vals = []
        for run in runs[kind]:
            v = run
            for p in path:
                v = v[p]
            vals.append(v)
        return statistics.median(vals)

    jl, bt = "johnlocke", "bittorrent-tracker"
    rate = (med(jl, ("throughput", "per_second")), med(bt, ("throughput", "per_second")))
    cpu = (med(jl, ("throughput", "per_cpu_second")), med(bt, ("throughput", "per_cpu_second")))

    def round_ratios(ours: str) -> str:
        pairs = zip(runs[ours], runs[bt], strict=True)
        per = [a["throughput"]["per_second"] / b["throughput"]["per_second"] for a, b in pairs]
        return ", ".join(f"{x:.2f}x" for x in per)

    uv = "johnlocke-uvloop"
    if uv in runs:
        uv_rate = med(uv, ("throughput", "per_second"))
        uv_cpu = med(uv, ("throughput", "per_cpu_second"))
        print(f"\nwith event_loop = uvloop: {uv_rate:,.0f}/s = {uv_rate / rate[1]:.2f}x,"
              f" {uv_cpu:,.0f}/CPU s = {uv_cpu / cpu[1]:.2f}x;"
              f" per round: {round_ratios(uv)}")  # fmt: skip
    bl.RESULTS.mkdir(parents=True, exist_ok=True)
    (bl.RESULTS / "websocket.json").write_text(
        json.dumps({"args": vars(args), "runs": runs}, indent=1)
    )
    if args.throughput_only:
        print(f"\nannounces with 5 offers /s: {rate[0]:,.0f} vs {rate[1]:,.0f}")
        print(f"ratio {rate[0] / rate[1]:.2f}x, per CPU s {cpu[0] / cpu[1]:.2f}x")
        print(f"per-round throughput ratios: {round_ratios(jl)}")
        return 0
    mem = (med(jl, ("idle", "bytes_per_socket")), med(bt, ("idle", "bytes_per_socket")))
    growth = max(run["idle"]["growth_mib"] for run in runs[jl])
    p99 = max(run["idle"]["http_with_sockets"]["p99_ms"] for run in runs[jl])
    p99_alone = max(run["idle"]["http_alone"]["p99_ms"] for run in runs[jl])
    udp99 = max(run["idle"]["udp_with_sockets"]["p99_ms"] for run in runs[jl])
    udp99_alone = max(run["idle"]["udp_alone"]["p99_ms"] for run in runs[jl])
    print()
    print(f"| figure (median of {args.rounds}) | JohnLocke | bittorrent-tracker | ratio |")
    print("|---|---:|---:|---:|")
    for name, (ours, theirs), unit in (
        ("announces with 5 offers /s", rate, ""),
        ("announces with 5 offers /CPU s", cpu, ""),
        (f"memory per idle socket ({args.idle:,})", mem, " B"),
    ):
        print(f"| {name} | {ours:,.0f}{unit} | {theirs:,.0f}{unit} | {ours / theirs:.2f}x |")
    print(f"\nper-round throughput ratios: {round_ratios(jl)}")
    print(f"JohnLocke RSS growth at {args.idle:,} sockets (worst round): {growth:.1f} MiB")
    print(f"HTTP announce p99 with them open (worst round): {p99:.2f} ms (alone: {p99_alone:.2f})")
    print(
        f"UDP announce p99 with them open (worst round): {udp99:.2f} ms (alone: {udp99_alone:.2f})"
    )
    print()
    print("| target | measured | status |")
    print("|---|---:|---|")
    targets = (
        (
            ">= 2x bittorrent-tracker's announces/s",
            f"{rate[0] / rate[1]:.2f}x (per CPU s {cpu[0] / cpu[1]:.2f}x)",
            rate[0] / rate[1] >= 2,
        ),
        ("<= 0.5x its memory per idle socket", f"{mem[0] / mem[1]:.2f}x", mem[0] / mem[1] <= 0.5),
        (f"{args.idle:,} sockets, RSS growth <= 100 MiB", f"{growth:.1f} MiB", growth <= 100),
        ("HTTP p99 <= 10 ms meanwhile", f"{p99:.2f} ms", p99 <= 10),
        ("UDP p99 <= 10 ms meanwhile", f"{udp99:.2f} ms", udp99 <= 10),
    )
    for name, value, ok in targets:
        print(f"| {name} | {value} | {'met' if ok else '**not met**'} |")
    return 0


if __name__ == "__main__":
    bl.run_main(main)
