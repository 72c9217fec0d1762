"""UDP benchmark: JohnLocke's UDP tracker beside its HTTP one and two reference UDP trackers.

    python benchmarks/udp.py             # full run: 3 rounds x 7 s per measurement
    python benchmarks/udp.py --quick     # 1 round x 3 s
    python benchmarks/udp.py --rounds 5 --duration 10 --servers johnlocke,opentracker

In one run, each pinned to core 1 with the load on core 0: JohnLocke over UDP (and, from the
same daemon, over HTTP with keep-alive and with a connection per request, measured with wrk as
``run.py`` does), Debian's opentracker over UDP and webtorrent's bittorrent-tracker over UDP
(``Server({udp: true, http: false})``). Optionally JohnLocke on uvloop (``johnlocke-uvloop``).

The UDP load comes from ``udp_load.c``, compiled here with gcc (Python cannot send fast enough
from one core): ``--sockets`` clients, each connecting once and reusing its connection id,
``--inflight`` announces in flight in all, every answer checked (action, transaction id, whole
peers, at least 40 of the 50 asked). Same swarm model as ``run.py``: 1,000 swarms of 100 peers,
a quarter of them seeders, numwant=50. Each tracker is first filled with one ``started``
announce per peer over UDP, and every swarm is then scraped (over UDP; for JohnLocke over HTTP
too, the other transport) and must hold 25 seeders and 75 leechers.

Reported per measurement: answers/s (median of the rounds), p50/p99 latency, the server's CPU
and its CPU per answer, the load generator's CPU, and the CPU other processes used meanwhile
(the machine is shared: figures with a high 'other' are noisy). Then the targets of issue 11,
as ratios within this run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402
import run as http_bench  # noqa: E402 (the HTTP scenarios: wrk, its checks)

LOADGEN_SOURCE = bl.HERE / "udp_load.c"
# The load generator's record: info_hash, peer_id, port, left, key.
RECORD = struct.Struct(">20s20sHQI")
MIN_PEERS = http_bench.MIN_PEERS
ALL_SERVERS = (
    "johnlocke",
    "johnlocke-pure",
    "johnlocke-uvloop",
    "opentracker",
    "bittorrent-tracker",
)
DEFAULT_SERVERS = ("johnlocke", "johnlocke-pure", "opentracker", "bittorrent-tracker")
NOISY_OTHER_PCT = http_bench.NOISY_OTHER_PCT
# Scenarios: UDP for every server; JohnLocke's HTTP ones from run.py on the same daemon.
UDP = "announce-udp"
# JohnLocke's UDP again with --light-inflight announces in flight: with a fixed number in flight,
# latency is about in-flight / rate, so this shows the time to answer one without the queue.
UDP_LIGHT = "announce-udp-light"
HTTP_SCENARIOS = {"announce-http-ka": True, "announce-http-close": False}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="JohnLocke UDP vs its HTTP and reference trackers.")
    bl.add_run_args(p)
    p.add_argument("--inflight", type=int, default=128, help="UDP announces in flight (128)")
    p.add_argument(
        "--light-inflight",
        type=int,
        default=16,
        help="also measure JohnLocke's UDP latency with this many in flight (16; 0: no)",
    )
    p.add_argument("--sockets", type=int, default=16, help="UDP clients (source ports) (16)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections for HTTP (64)")
    p.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated subset of: {', '.join(ALL_SERVERS)}",
    )
    p.add_argument("--no-http", action="store_true", help="skip JohnLocke's HTTP scenarios")
    a = bl.finish_run_args(p, p.parse_args(), ALL_SERVERS)
    a.threads = 1  # for run.run_wrk
    return a


# --- the load generator -------------------------------------------------------------------


def build_loadgen() -> Path:
    """Compile udp_load.c into the cache (again only when the source changed)."""
    out = bl.CACHE / "udp_load"
    if out.exists() and out.stat().st_mtime >= LOADGEN_SOURCE.stat().st_mtime:
        return out
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("no C compiler: apt-get install gcc")
    bl.CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([gcc, "-O2", "-o", str(out), str(LOADGEN_SOURCE)], check=True)
    return out


def write_records(path: Path, wl: bl.Workload, order: list[tuple[int, int]]) -> None:
    with open(path, "wb") as f:
        for s, j in order:
            peer = wl.swarm_peers[s][j]
            f.write(
                RECORD.pack(
                    wl.info_hashes[s], peer.peer_id, peer.port, peer.left, int(peer.key, 16)
                )
            )


def run_loadgen(
    binary: Path,
    port: int,
    records: Path,
    mode: str,
    seconds: float,
    args: argparse.Namespace,
    load_core: int | None,
    srv_pid: int | None = None,
    our_pids: list[int] | None = None,
    min_peers: int = MIN_PEERS,
    inflight: int | None = None,
) -> dict:
    """One run of the load generator; its JSON result plus the CPU figures around it."""
    inflight = inflight or args.inflight
    argv = [
        str(binary),
        bl.HOST,
        str(port),
        str(records),
        mode,
        f"{seconds:g}",
        str(inflight),
        str(min(args.sockets, inflight)),
        str(min_peers),
    ]
    meter = bl.CpuMeter(srv_pid, our_pids or [])
    proc = subprocess.run(
        bl.pinned(argv, load_core), capture_output=True, text=True, timeout=seconds + 120
    )
    cpu = meter.stop()
    line = next((x for x in proc.stdout.splitlines() if x.startswith("JSON ")), None)
    if line is None:
        why = (proc.stderr or proc.stdout).strip()[-300:]
        return {"ok": False, "error": why or f"no output (exit code {proc.returncode})"}
    r = json.loads(line[5:])
    secs = r["duration_us"] / 1e6
    r.update(cpu)
    # The names run.py's summary reads (wrk's): UDP has no status codes or sockets to break.
    r.update(
        ok=True,
        rps=r["answers"] / secs if secs else 0.0,
        requests=r["sent"],
        non200=0,
        sock_errors=r["lost"],
        err_timeout=r["lost"],
        wrk_cpu_pct=cpu["load_cpu_pct"],
        first_bad=r["first_bad"] or r["first_error"],
        hwm_kib=bl.proc_status_kib(srv_pid, "VmHWM") if srv_pid else None,
    )
    return r


# --- a small blocking UDP client for readiness and checks ----------------------------------


class UdpClient:
    def __init__(self, port: int, timeout: float = 1.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.sock.connect((bl.HOST, port))
        self.cid = b""
        self.txid = 0

    def close(self) -> None:
        self.sock.close()

    def ask(self, payload_after_txid: bytes, action: int, cid: bytes | None = None) -> bytes:
        self.txid += 1
        head = (cid if cid is not None else self.cid) + struct.pack(">II", action, self.txid)
        for _ in range(5):
            self.sock.send(head + payload_after_txid)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            if len(data) >= 8 and struct.unpack_from(">I", data, 4)[0] == self.txid:
                return data
        raise TimeoutError("no answer")

    def connect(self) -> None:
        data = self.ask(b"", 0, (0x41727101980).to_bytes(8, "big"))
        if struct.unpack_from(">I", data)[0] != 0 or len(data) < 16:
            raise ValueError(f"bad connect answer {data[:40]!r}")
        self.cid = data[8:16]

    def scrape(self, hashes: list[bytes]) -> list[tuple[int, int, int]]:
        data = self.ask(b"".join(hashes), 2)
        if struct.unpack_from(">I", data)[0] != 2 or len(data) != 8 + 12 * len(hashes):
            raise ValueError(f"bad scrape answer {data[:60]!r}")
        return [struct.unpack_from(">III", data, 8 + 12 * i) for i in range(len(hashes))]


def wait_udp(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        client = UdpClient(port, 0.2)
        try:
            client.connect()
            return True
        except (OSError, ValueError):
            time.sleep(0.1)
        finally:
            client.close()
    return False


def udp_scrape_check(port: int, wl: bl.Workload) -> str | None:
    """None if every swarm holds the expected seeders and leechers (asked over UDP)."""
    expect = (wl.seeders_per_swarm, wl.peers_per_swarm - wl.seeders_per_swarm)
    client = UdpClient(port)
    try:
        client.connect()
        hashes = wl.info_hashes
        for i in range(0, len(hashes), 70):
            rows = client.scrape(hashes[i : i + 70])
            for k, (seeders, _completed, leechers) in enumerate(rows):
                if (seeders, leechers) != expect:
                    return f"swarm {i + k}: {seeders} seeders, {leechers} leechers, want {expect}"
    except (OSError, ValueError) as exc:
        return f"scrape failed: {exc}"
    finally:
        client.close()
    return None


def http_scrape_check(port: int, wl: bl.Workload) -> str | None:
    """The same over HTTP: peers that announced over UDP must be counted there too."""
    expect = (wl.seeders_per_swarm, wl.peers_per_swarm - wl.seeders_per_swarm)
    errors: list[str] = []

    def on_answer(i: int, status: int, body: bytes) -> None:
        err, _ = bl.check_scrape(body, wl.info_hashes[i], expect)
        if status != 200 or err:
            errors.append(f"swarm {i}: HTTP {status}: {err}")

    paths = [f"/scrape?info_hash={q}" for q in wl.hash_q]
    bl.run_async(bl.fetch_all(port, paths, on_answer, timeout=120))
    return errors[0] if errors else None


# --- servers ------------------------------------------------------------------------------


class Target:
    """A tracker under test: its process, UDP port, and HTTP server (JohnLocke only)."""

    def __init__(self, name: str, server: bl.Server, udp_port: int, http: bool) -> None:
        self.name = name
        self.server = server
        self.udp_port = udp_port
        self.http = http

    @property
    def pid(self) -> int:
        return self.server.pid


def build_targets(
    args: argparse.Namespace, wl: bl.Workload, workdir: Path, core: int | None
) -> tuple[list[Target], dict[str, str]]:
    targets, skipped = [], {}
    install = not args.no_install
    for name in args.servers:
        udp_port = bl.free_port(socket.SOCK_DGRAM)
        if name in ("johnlocke", "johnlocke-pure", "johnlocke-uvloop"):
            loop = "uvloop" if name.endswith("uvloop") else "asyncio"
            if loop == "uvloop":
                try:
                    import uvloop  # noqa: F401
                except ImportError:
                    skipped[name] = "uvloop is not installed"
                    continue
            srv = bl.johnlocke_server(
                name, workdir, loop, core, udp_port=udp_port, pure=name == "johnlocke-pure"
            )
            targets.append(Target(name, srv, udp_port, http=name == "johnlocke"))
        elif name == "opentracker":
            if bl.ensure_command("opentracker", "opentracker", install) is None:
                skipped[name] = "opentracker is not installed and could not be (apt-get)"
                continue
            srv = bl.opentracker_server(workdir, wl.info_hashes, core, udp_port=udp_port)
            targets.append(Target(name, srv, udp_port, http=False))
        elif name == "bittorrent-tracker":
            npm_dir, note = bl.ensure_bittorrent_tracker(install)
            if npm_dir is None:
                skipped[name] = note
                continue
            srv = bl.bittorrent_tracker_server(npm_dir, workdir, note, 1000, core, udp=True)
            targets.append(Target(name, srv, srv.port, http=False))
    return targets, skipped


def start(target: Target, procs: bl.Processes) -> str | None:
    srv = target.server
    if target.name.startswith("johnlocke") or target.name == "opentracker":
        err = srv.start(procs)  # waits for the HTTP (TCP) listener
        if err:
            return err
    else:
        srv.log_path = srv.workdir / f"{srv.name}.log"
        srv.proc = procs.start(srv.argv, srv.log_path, cwd=srv.workdir, env=srv.env)
    if not wait_udp(target.udp_port, srv.proc):  # type: ignore[arg-type]
        procs.stop(srv.proc)  # type: ignore[arg-type]
        return f"no UDP answer on {bl.HOST}:{target.udp_port}; log:\n{bl.tail(srv.log_path)}"
    return None


# --- report -------------------------------------------------------------------------------


def summarise(rounds: list[dict]) -> dict:
    """run.py's summary of the rounds, with the CPU per answer and UDP's error and lost counts."""
    summary = http_bench.summarise(rounds)
    if summary.get("rps") is None:
        return summary
    good = [r for r in rounds if r.get("ok")]
    rps, cpu = summary["rps"], summary["server_cpu_pct"]
    summary["cpu_us_per_answer"] = cpu / 100 / rps * 1e6 if cpu and rps else None
    summary["load_cpu_pct"] = summary["wrk_cpu_pct"]
    summary["errors"] = sum(r.get("errors", 0) for r in good)
    summary["lost"] = sum(r.get("lost", 0) for r in good)
    return summary


def print_table(results: dict[tuple[str, str], dict]) -> None:
    head = (
        f"{'server':<20} {'scenario':<20} {'answers/s':>9} {'rounds':>20} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'srv cpu':>7} {'us/answer':>9} {'load cpu':>8} {'other':>6} "
        f"{'bad':>4} {'err':>4} {'lost':>5}"
    )
    bl.table_head(head)
    for (name, scenario), r in results.items():
        s = r["summary"]
        if s.get("rps") is None:
            print(f"{name:<20} {scenario:<20} {'-':>9}  failed: {s.get('error')}")
            continue
        rounds = "/".join(str(x) for x in s["rps_rounds"])
        per = "-" if s["cpu_us_per_answer"] is None else f"{s['cpu_us_per_answer']:.1f}"
        print(
            f"{name:<20} {scenario:<20} {s['rps']:>9.0f} {rounds:>20} {s['p50_ms']:>7.2f} "
            f"{s['p99_ms']:>7.2f} {s['server_cpu_pct'] or 0:>6.0f}% {per:>9} "
            f"{s['load_cpu_pct'] or 0:>7.0f}% {s['other_cpu_pct']:>5.0f}% "
            f"{s['non200'] + s['bad']:>4} {s['errors']:>4} {s['lost']:>5}"
            + (f"  ({s['first_bad'][:50]})" if s["first_bad"] else "")
        )


def ratios(results: dict[tuple[str, str], dict]) -> list[dict]:
    def rps(name: str, scenario: str) -> tuple[float | None, float]:
        r = results.get((name, scenario))
        if r is None or r["summary"].get("rps") is None or r["invalid"]:
            return None, 0.0
        return r["summary"]["rps"], r["summary"]["other_cpu_pct"]

    rows = []
    jl, jl_other = rps("johnlocke", UDP)
    for label, (name, scenario), target in (
        (
            "JohnLocke UDP / JohnLocke HTTP new connection each",
            ("johnlocke", "announce-http-close"),
            4.0,
        ),
        ("JohnLocke UDP / JohnLocke HTTP keep-alive", ("johnlocke", "announce-http-ka"), 1.5),
        ("JohnLocke UDP / bittorrent-tracker UDP", ("bittorrent-tracker", UDP), 3.0),
        ("JohnLocke UDP / opentracker UDP", ("opentracker", UDP), 0.2),
        ("JohnLocke UDP compiled / pure-Python build", ("johnlocke-pure", UDP), 1.5),
        ("(uvloop) JohnLocke UDP uvloop / opentracker UDP", ("opentracker", UDP), None),
    ):
        num, num_other = (
            rps("johnlocke-uvloop", UDP) if label.startswith("(uvloop)") else (jl, jl_other)
        )
        den, den_other = rps(name, scenario)
        value = num / den if num and den else None
        rows.append(
            {
                "label": label,
                "value": value,
                "target": target,
                "unit": "x",
                "op": ">=",
                "met": None if value is None or target is None else value >= target,
                "noisy": max(num_other, den_other) > NOISY_OTHER_PCT,
            }
        )
    r = results.get(("johnlocke", UDP))
    p99 = None if r is None or r["summary"].get("rps") is None else r["summary"]["p99_ms"]
    rows.append(
        {
            "label": f"JohnLocke UDP p99 at {r['inflight'] if r else '?'} in flight",
            "value": p99,
            "target": 5.0,
            "unit": " ms",
            "op": "<=",
            "met": None if p99 is None else p99 <= 5.0,
            "noisy": jl_other > NOISY_OTHER_PCT,
        }
    )
    light = results.get(("johnlocke", UDP_LIGHT))
    if light is not None and light["summary"].get("rps") is not None:
        rows.append(
            {
                "label": f"(info) JohnLocke UDP p99 at {light['inflight']} in flight",
                "value": light["summary"]["p99_ms"],
                "target": None,
                "unit": " ms",
                "op": "<=",
                "met": None,
                "noisy": light["summary"]["other_cpu_pct"] > NOISY_OTHER_PCT,
            }
        )
    bad = None if r is None or r["summary"].get("rps") is None else r["summary"]["bad"]
    rows.append(
        {
            "label": "JohnLocke UDP malformed or error answers",
            "value": None if bad is None else bad + r["summary"]["errors"],
            "target": 0,
            "unit": "",
            "op": "==",
            "met": None if bad is None else bad + r["summary"]["errors"] == 0,
            "noisy": False,
        }
    )
    return rows


# --- main ---------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    t_start = time.monotonic()
    tracker_core, load_core, pinning = bl.cores("the load generators and this script")
    bl.pin_self(load_core)
    loadgen = build_loadgen()
    if not args.no_http and "johnlocke" in args.servers:
        if bl.ensure_command("wrk", "wrk", not args.no_install) is None:
            print("wrk is not installed (apt-get install wrk); use --no-http to skip HTTP")
            return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = bl.CACHE / f"udp-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"JohnLocke UDP benchmark {stamp}: {pinning}")
    print(
        f"load: {args.swarms} swarms x {args.peers} peers (25% seeders), numwant={args.numwant}, "
        f"UDP: {args.sockets} clients, {args.inflight} announces in flight; HTTP: wrk "
        f"{args.connections} connections; {args.rounds} round(s) x {args.duration:g} s"
    )
    wl = bl.Workload(args.swarms, args.peers)
    fill_file, run_file = workdir / "fill.bin", workdir / "run.bin"
    write_records(fill_file, wl, [(s, j) for j in range(args.peers) for s in range(args.swarms)])
    order = [(s, j) for s in range(args.swarms) for j in range(args.peers)]
    random.Random(2).shuffle(order)
    write_records(run_file, wl, order)
    http_paths = workdir / "announce_paths.txt"
    http_paths.write_text("\n".join(wl.reannounce_paths(args.numwant)) + "\n")

    if args.wait_quiet:
        bl.wait_quiet(args.wait_quiet)
    other, top, busy_note = bl.busy_before(2.0)
    targets, skipped = build_targets(args, wl, workdir, tracker_core)
    results: dict[tuple[str, str], dict] = {}
    checks: dict[str, dict] = {}
    try:
        with bl.Processes() as procs:
            running = []
            for t in targets:
                err = start(t, procs)
                if err:
                    skipped[t.name] = f"could not start: {err}"
                    continue
                running.append(t)
                print(f"  started {t.name:<20} pid {t.pid:<7} UDP {t.udp_port}  ({t.server.note})")
            targets = running
            for name, why in skipped.items():
                print(f"  SKIPPED {name}: {why}")
            print(f"\nwarm-up: {args.swarms * args.peers} started announces per tracker, over UDP")
            for t in targets:
                fill = run_loadgen(
                    loadgen, t.udp_port, fill_file, "fill", 300, args, load_core, min_peers=0
                )
                err = None
                if not fill.get("ok"):
                    err = fill.get("error")
                elif fill["answers"] != fill["records"] or fill["errors"] or fill["bad"]:
                    err = (
                        f"{fill['answers']}/{fill['records']} answered, {fill['errors']} errors,"
                        f" {fill['bad']} bad ({fill['first_error'] or fill['first_bad']})"
                    )
                err = err or udp_scrape_check(t.udp_port, wl)
                if not err and t.http:
                    err = http_scrape_check(t.server.port, wl)
                checks[t.name] = {"fill": fill, "fill_error": err}
                print(
                    f"  {t.name:<20} {fill.get('answers')}/{fill.get('records')} answered in "
                    f"{fill.get('duration_us', 0) / 1e6:.1f} s; swarms checked: {err or 'OK'}"
                )
                # Discarded short runs warm caches (and node's JIT).
                run_loadgen(loadgen, t.udp_port, run_file, "run", 2, args, load_core)
                if t.http and not args.no_http:
                    http_bench.run_wrk(
                        t.server,
                        http_paths,
                        "announce",
                        True,
                        2,
                        args,
                        load_core,
                        workdir / "wrk.log",
                        [],
                    )

            plan = []
            for t in targets:
                plan.append((t, UDP))
                if t.name == "johnlocke" and args.light_inflight:
                    plan.append((t, UDP_LIGHT))
                if t.http and not args.no_http:
                    plan.extend((t, sc) for sc in HTTP_SCENARIOS)
            per: dict[tuple[str, str], list[dict]] = {(t.name, sc): [] for t, sc in plan}
            pids = [t.pid for t in targets]
            for rnd in range(args.rounds):
                shift = rnd % len(plan) if plan else 0
                for t, sc in plan[shift:] + plan[:shift]:
                    if sc in (UDP, UDP_LIGHT):
                        r = run_loadgen(
                            loadgen,
                            t.udp_port,
                            run_file,
                            "run",
                            args.duration,
                            args,
                            load_core,
                            t.pid,
                            pids,
                            inflight=args.light_inflight if sc == UDP_LIGHT else None,
                        )
                    else:
                        r = http_bench.run_wrk(
                            t.server,
                            http_paths,
                            "announce",
                            HTTP_SCENARIOS[sc],
                            args.duration,
                            args,
                            load_core,
                            workdir / "wrk.log",
                            pids,
                        )
                    if not r.get("ok"):
                        print(f"  round {rnd + 1} {t.name:<20} {sc:<20} failed: {r.get('error')}")
                    else:
                        print(
                            f"  round {rnd + 1} {t.name:<20} {sc:<20} {r['rps']:>8.0f}/s  "
                            f"p99 {r['lat_p99_us'] / 1000:6.2f} ms  "
                            f"srv cpu {r.get('server_cpu_pct') or 0:.0f}%  "
                            f"other cpu {r.get('other_cpu_pct') or 0:.0f}%"
                        )
                    per[(t.name, sc)].append(r)
                    time.sleep(0.5)
            for key, rounds in per.items():
                results[key] = {
                    "rounds": rounds,
                    "summary": summarise(rounds),
                    "inflight": args.light_inflight if key[1] == UDP_LIGHT else args.inflight,
                }
            for t in targets:
                checks[t.name]["hwm_kib"] = t.server.hwm_kib()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for (name, _sc), r in results.items():
        r["invalid"] = [checks[name]["fill_error"]] if checks[name].get("fill_error") else []

    bl.banner(f"RESULTS (median of {args.rounds} round(s) of {args.duration:g} s)")
    print_table(results)
    for name, c in checks.items():
        if c.get("fill_error"):
            print(f"INVALID {name}: {c['fill_error']}")
    worst = max((r["summary"].get("other_cpu_pct") or 0 for r in results.values()), default=0)
    if worst > 10:
        print(
            f"note: other processes used up to {worst:.0f}% of a core during some measurements "
            "('other'): those figures are noisy."
        )
    print("\nRATIOS (within this run)")
    rows = ratios(results)
    http_bench.print_ratios(rows)
    doc = {
        "date": stamp,
        "johnlocke_commit": http_bench.git_describe(),
        "cores": os.cpu_count(),
        "pinning": pinning,
        "other_load_before": {"share_of_a_core": round(other, 3), "top": top, "note": busy_note},
        "args": vars(args),
        "skipped": skipped,
        "checks": checks,
        "results": {f"{k[0]} {k[1]}": v for k, v in results.items()},
        "ratios": rows,
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    out = bl.write_results("udp", stamp, doc)
    print(f"\nJSON: {out}   (elapsed {doc['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    bl.run_main(main)
