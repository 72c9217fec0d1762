"""Memory benchmark: RSS per peer in three shapes, and RSS after a flood of swarms expired.

    python benchmarks/memory.py                 # JohnLocke, opentracker, bittorrent-tracker
    python benchmarks/memory.py --quick         # 10x fewer peers
    python benchmarks/memory.py --servers johnlocke --cases 1m,1m-swarms,expiry

Cases: ``100k`` (100,000 peers in one swarm), ``1m`` (1M peers in 100,000 swarms of 10),
``1m-swarms`` (1M peers in 1M swarms of one: a public tracker's long tail, where per-swarm cost
is everything), and ``expiry`` (JohnLocke only: ``--flood-rounds`` floods of 200,000 one-peer
swarms, each left to expire before the next: RSS at the start, full, and after each expiry).

Each (server, case) gets a fresh server process pinned to core 1. Peers are announced over HTTP
(event=started, libtorrent-style, distinct binary peer_ids) from 127.0.0.x through many
keep-alive connections (a new connection per request for opentracker, which closes every
connection), then a scrape of a sample of swarms checks that the server really holds them.
Reported: RSS before and after (VmRSS), peak (VmHWM), and (after - before) / peers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402

ALL_SERVERS = ("johnlocke", "opentracker", "bittorrent-tracker")
CASES = {
    # name: (swarms, peers per swarm)
    "100k": (1, 100_000),
    "1m": (100_000, 10),
    "1m-swarms": (1_000_000, 1),
    "expiry": (200_000, 1),  # per flood round
}
QUICK_CASES = {
    "100k": (1, 10_000),
    "1m": (10_000, 10),
    "1m-swarms": (100_000, 1),
    "expiry": (20_000, 1),
}
# Bytes per peer of RSS growth, per case (issues 10 and 12).
TARGET_BYTES_PER_PEER = {"100k": 128, "1m": 100, "1m-swarms": 200}
TARGET_TOTAL_MIB = 200
# After a flood expired, RSS should be back near where it started: within this much of it.
TARGET_EXPIRY_MIB = 15
FLOOD_TIMEOUT = 90  # peer_timeout of the expiry case: well above what one flood takes to send
PEERS_PER_IP = 50_000  # for trackers that key peers by ip:port, ports 10000..59999 per IP


class FillPaths:
    """Started announces for peers ``j_lo <= j < j_hi`` of every swarm, built on demand.

    The order is peer-major (peer j of every swarm, then peer j + 1): requests in flight at the
    same time hit different swarms. bittorrent-tracker needs that: its get-or-create of a swarm
    spans two event-loop ticks, so concurrent first announces to one new swarm each create it and
    all but one are lost.
    """

    def __init__(self, swarms: int, per_swarm: int, j_lo: int, j_hi: int, numwant: int) -> None:
        self.swarms = swarms
        self.numwant = numwant
        self.lo = j_lo
        self.width = j_hi - j_lo
        self.seeders = int(per_swarm * 0.25)

    def __len__(self) -> int:
        return self.swarms * self.width

    def __getitem__(self, i: int) -> str:
        j, s = divmod(i, self.swarms)
        j += self.lo
        h = info_hash(s)
        pid = b"-LT2110-" + hashlib.blake2b(b"%d/%d" % (s, j), digest_size=12).digest()
        left = 0 if j < self.seeders else (1 + (j * 7919) % 40000) * bl.PIECE
        peer = bl.Peer(pid, 10000 + j % PEERS_PER_IP, f"{hash((s, j)) & 0xFFFFFFFF:08X}", left)
        return peer.query(bl.lt_quote(h), "started", self.numwant)


def fill_phases(per_swarm: int, by_addr: bool) -> list[tuple[int, int, str, int]]:
    """(j_lo, j_hi, source IP, pipeline depth): the first peer of every swarm alone (so each
    swarm exists before it gets concurrent announces), then the rest, 50,000 peers per source
    IP for trackers that key peers by ip:port."""
    phases = [(0, 1, HOST_IPS[0], 16 if per_swarm == 1 else 1)]
    j = 1
    while j < per_swarm:
        if by_addr:
            g = j // PEERS_PER_IP
            hi = min(per_swarm, (g + 1) * PEERS_PER_IP)
            phases.append((j, hi, HOST_IPS[g], 16))
        else:
            hi = per_swarm
            phases.append((j, hi, HOST_IPS[0], 16))
        j = hi
    return phases


HOST_IPS = [f"127.0.0.{i}" for i in range(1, 21)]


def info_hash(s: int) -> bytes:
    return hashlib.blake2b(b"swarm %d" % s, digest_size=20).digest()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="RSS per peer of JohnLocke and reference trackers.")
    p.add_argument("--quick", action="store_true", help="10x fewer peers (a smoke test)")
    p.add_argument("--servers", default=",".join(ALL_SERVERS), help=", ".join(ALL_SERVERS))
    p.add_argument("--cases", default=",".join(CASES), help=", ".join(CASES))
    p.add_argument("--flood-rounds", type=int, default=4, help="floods in the expiry case")
    p.add_argument("--numwant", type=int, default=50, help="numwant of the fill announces")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--fill-timeout", type=float, default=420.0, help="seconds per fill at most")
    p.add_argument(
        "--bt-single-swarm-timeout",
        type=float,
        default=120.0,
        help="seconds at most for bittorrent-tracker's single-swarm fill (it is O(n^2))",
    )
    p.add_argument("--no-install", action="store_true")
    a = p.parse_args()
    a.servers = bl.pick(p, a.servers, ALL_SERVERS, "server")
    a.cases = bl.pick(p, a.cases, list(CASES), "case")
    return a


def make_server(
    name: str, workdir: Path, swarms: int, install: bool, extra_toml: str = ""
) -> tuple[bl.Server | None, str]:
    core = bl.TRACKER_CORE if bl.cores_ok() else None
    if name == "johnlocke":
        return bl.johnlocke_server(name, workdir, "asyncio", core, extra_toml), ""
    if name == "opentracker":
        if bl.ensure_command("opentracker", "opentracker", install) is None:
            return None, "opentracker is not installed and could not be (apt-get)"
        return bl.opentracker_server(workdir, [info_hash(s) for s in range(swarms)], core), ""
    npm_dir, note = bl.ensure_bittorrent_tracker(install)
    if npm_dir is None:
        return None, note
    # Its swarms are LRU caches of 1000 peers by default: make room for the whole case.
    return bl.bittorrent_tracker_server(npm_dir, workdir, note, 200_000, core), ""


def measure(srv: bl.Server, swarms: int, per_swarm: int, args: argparse.Namespace) -> dict:
    out: dict = {"swarms": swarms, "peers": swarms * per_swarm}
    # Open a few connections and touch the scrape path first, so "before" is a warm process.
    warm = [f"/scrape?info_hash={bl.lt_quote(info_hash(10**9 + i))}" for i in range(200)]
    bl.run_async(
        bl.fetch_all(
            srv.port,
            warm,
            lambda i, st, b: None,
            connections=args.connections,
            keepalive=srv.keepalive,
            timeout=60,
        )
    )
    time.sleep(0.5)
    out["rss_before_kib"] = srv.rss_kib()
    # opentracker and bittorrent-tracker key peers by ip:port: spread big swarms over 127.0.0.x.
    by_addr = srv.kind in ("opentracker", "bittorrent-tracker")
    errors: list[str] = []
    answered = 0
    t0 = time.perf_counter()
    limit = args.fill_timeout
    if srv.kind == "bittorrent-tracker" and per_swarm > 20_000:
        # Each of its announces copies the swarm's peer list (O(swarm)): filling one swarm of
        # 100k takes ~20 min. Stop early and report what it holds by then.
        limit = min(limit, args.bt_single_swarm_timeout)
    deadline = t0 + limit

    def on_answer(i: int, status: int, body: bytes) -> None:
        # A cheap check per answer: every fill answer must be a bencoded non-failure.
        if status != 200 or body[:1] != b"d" or b"failure reason" in body:
            errors.append(f"HTTP {status}: {body[:80]!r}")

    for j_lo, j_hi, source_ip, depth in fill_phases(per_swarm, by_addr):
        paths = FillPaths(swarms, per_swarm, j_lo, j_hi, args.numwant)
        try:
            st = bl.run_async(
                bl.fetch_all(
                    srv.port,
                    paths,
                    on_answer,
                    connections=args.connections,
                    depth=depth,
                    keepalive=srv.keepalive,
                    source_ip=source_ip,
                    timeout=max(1.0, deadline - time.perf_counter()),
                )
            )
            answered += st.answered
            if st.timed_out:
                out["fill_error"] = (
                    f"fill stopped at the {limit:.0f} s limit after {answered} "
                    f"of {swarms * per_swarm} announces"
                )
                break
        except Exception as exc:
            out["fill_error"] = f"fill failed: {exc!r}"
            break
    out["fill_seconds"] = round(time.perf_counter() - t0, 1)
    out["fill_answered"] = answered
    out["fill_bad"] = len(errors)
    out["fill_first_error"] = errors[0] if errors else None
    if srv.proc is not None and srv.proc.poll() is not None:
        out["fill_error"] = f"server exited with {srv.proc.returncode}"
        return out
    time.sleep(1.0)
    out["rss_after_kib"] = srv.rss_kib()
    out["hwm_kib"] = srv.hwm_kib()
    # Does it hold them? Scrape a sample of swarms and compare the counts.
    rng = random.Random(5)
    sample = sorted(rng.sample(range(swarms), min(swarms, 500)))
    seeders = int(per_swarm * 0.25)
    expect = (seeders, per_swarm - seeders)
    wrong: list[str] = []
    key_errors = 0
    held = 0

    def on_scrape(i: int, status: int, body: bytes) -> None:
        nonlocal key_errors, held
        err, counts = (
            bl.check_scrape(body, info_hash(sample[i]))
            if status == 200
            else (f"HTTP {status}", None)
        )
        if counts is None:
            wrong.append(str(err))
            return
        if err:
            key_errors += 1
        held += (counts[0] or 0) + (counts[1] or 0)
        if counts != expect:
            wrong.append(f"swarm {sample[i]}: {counts}, want {expect}")

    scrapes = [f"/scrape?info_hash={bl.lt_quote(info_hash(s))}" for s in sample]
    bl.run_async(
        bl.fetch_all(
            srv.port, scrapes, on_scrape, connections=8, keepalive=srv.keepalive, timeout=120
        )
    )
    out["check_swarms"] = len(sample)
    out["check_wrong"] = len(wrong)
    out["check_first_wrong"] = wrong[0] if wrong else None
    out["check_peers_held_in_sample"] = held
    out["check_peers_expected_in_sample"] = len(sample) * per_swarm
    out["check_scrape_key_errors"] = key_errors
    out["held_ok"] = not wrong and "fill_error" not in out and not errors
    if out["rss_before_kib"] is not None and out["rss_after_kib"] is not None:
        grown = (out["rss_after_kib"] - out["rss_before_kib"]) * 1024
        # A partial fill (time limit) is divided by the peers it holds (counted by the scrape
        # when it covered every swarm, else the announces answered), and says so.
        peers = out["peers"]
        if "fill_error" in out:
            peers = held if len(sample) == swarms else answered
        out["bytes_per_peer"] = grown / max(1, peers)
        out["bytes_per_peer_partial"] = "fill_error" in out
    return out


def fill(srv: bl.Server, paths: FillPaths, source_ip: str, depth: int, timeout: float) -> int:
    """Send every announce of ``paths``; return how many were good answers."""
    bad: list[int] = []

    def on_answer(i: int, status: int, body: bytes) -> None:
        if status != 200 or body[:1] != b"d" or b"failure reason" in body:
            bad.append(i)

    st = bl.run_async(
        bl.fetch_all(
            srv.port,
            paths,
            on_answer,
            connections=64,
            depth=depth,
            keepalive=srv.keepalive,
            source_ip=source_ip,
            timeout=timeout,
        )
    )
    return st.answered - len(bad)


def held_peers(srv: bl.Server) -> tuple[int, int]:
    """(swarms, peers) the daemon reports in /stats."""
    with urllib.request.urlopen(f"http://{bl.HOST}:{srv.port}/stats", timeout=30) as r:
        doc = json.loads(r.read())
    return doc["swarms"], doc["peers"]


def measure_expiry(srv: bl.Server, swarms: int, rounds: int) -> dict:
    """Floods of one-peer swarms, each expired before the next: RSS per round."""
    time.sleep(1.0)
    out: dict = {"swarms": swarms, "peers": swarms, "rss_start_kib": srv.rss_kib(), "rounds": []}
    for r in range(rounds):
        t0 = time.perf_counter()
        good = fill(srv, FloodPaths(swarms, r), HOST_IPS[0], 16, 300)
        fill_s = time.perf_counter() - t0
        full = srv.rss_kib()
        held = held_peers(srv)
        deadline = time.monotonic() + FLOOD_TIMEOUT + 120
        while time.monotonic() < deadline and held_peers(srv) != (0, 0):
            time.sleep(1.0)
        time.sleep(3.0)  # the sweep after the last removal gives memory back
        left = held_peers(srv)
        row = {
            "round": r,
            "answered": good,
            "fill_s": round(fill_s, 1),
            "held_when_full": held,
            "rss_full_kib": full,
            "rss_after_kib": srv.rss_kib(),
            "left": left,
        }
        out["rounds"].append(row)
        print(
            f"    flood {r + 1}: {good} swarms in {fill_s:.0f} s, RSS full "
            f"{bl.fmt_bytes_kib(full)} MiB, after expiry {bl.fmt_bytes_kib(row['rss_after_kib'])} "
            f"MiB (left: {left[0]} swarms, {left[1]} peers)",
            flush=True,
        )
        if fill_s > FLOOD_TIMEOUT * 0.8:
            out["fill_error"] = f"a flood took {fill_s:.0f} s, near peer_timeout {FLOOD_TIMEOUT} s"
    last = out["rounds"][-1]
    out["held_ok"] = "fill_error" not in out and all(
        x["answered"] == swarms and x["held_when_full"] == (swarms, swarms) and x["left"] == (0, 0)
        for x in out["rounds"]
    )
    out["rss_after_kib"] = last["rss_after_kib"]
    out["hwm_kib"] = srv.hwm_kib()
    out["back_mib"] = (last["rss_after_kib"] - out["rss_start_kib"]) / 1024
    return out


class FloodPaths:
    """Started announces of one peer each in ``swarms`` new swarms, distinct per round."""

    def __init__(self, swarms: int, rnd: int) -> None:
        self.swarms = swarms
        self.offset = (rnd + 1) * 10_000_000

    def __len__(self) -> int:
        return self.swarms

    def __getitem__(self, i: int) -> str:
        s = self.offset + i
        pid = b"-LT2110-" + hashlib.blake2b(b"flood %d" % s, digest_size=12).digest()
        peer = bl.Peer(pid, 10000 + s % 50000, f"{s & 0xFFFFFFFF:08X}", 1000)
        return peer.query(bl.lt_quote(info_hash(s)), "started", 50)


def main() -> int:
    args = parse_args()
    t_start = time.monotonic()
    bl.pin_self(bl.LOAD_CORE if bl.cores_ok() else None)
    cases = QUICK_CASES if args.quick else CASES
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = bl.CACHE / f"memory-{stamp}"
    results: list[dict] = []
    print(
        f"JohnLocke memory benchmark {stamp}: servers on core {bl.TRACKER_CORE}, "
        f"client on core {bl.LOAD_CORE}; numwant={args.numwant}"
    )
    try:
        with bl.Processes() as procs:
            for case in args.cases:
                swarms, per_swarm = cases[case]
                for name in args.servers:
                    if case == "expiry" and name != "johnlocke":
                        continue  # a JohnLocke regression check, not a comparison
                    row = {
                        "server": name,
                        "case": case,
                        "swarms": swarms,
                        "peers": swarms * per_swarm,
                    }
                    results.append(row)
                    extra = ""
                    if case == "expiry":
                        # Peers expire FLOOD_TIMEOUT s after they announced; sweeps every 2 s.
                        extra = (
                            f"[announce]\ninterval = {FLOOD_TIMEOUT - 1}\nmin_interval = 1\n"
                            f"peer_timeout = {FLOOD_TIMEOUT}\nsweep_interval = 2\n"
                        )
                    srv, why = make_server(name, workdir / case, swarms, not args.no_install, extra)
                    if srv is None:
                        row["skipped"] = why
                        print(f"  {name:<20} {case}: SKIPPED ({why})")
                        continue
                    err = srv.start(procs)
                    if err:
                        row["skipped"] = f"could not start: {err}"
                        print(f"  {name:<20} {case}: SKIPPED (could not start)\n{err}")
                        continue
                    print(
                        f"  {name:<20} {case}: filling {swarms} swarm(s) x {per_swarm} peers "
                        f"(pid {srv.pid}) ...",
                        flush=True,
                    )
                    try:
                        if case == "expiry":
                            row.update(measure_expiry(srv, swarms, args.flood_rounds))
                        else:
                            row.update(measure(srv, swarms, per_swarm, args))
                    finally:
                        procs.stop(srv.proc)
                    if case != "expiry":
                        print(f"    {summary_line(row)}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    bl.banner("MEMORY (RSS = VmRSS, peak = VmHWM; bytes/peer = (RSS after - RSS before) / peers)")
    head = (
        f"{'server':<20} {'case':<9} {'swarms':>8} {'peers':>9} {'RSS before':>11} "
        f"{'RSS after':>10} {'peak':>9} {'bytes/peer':>10} {'fill s':>7} {'fill/s':>7}  held"
    )
    bl.table_head(head)
    for r in results:
        if r["case"] != "expiry":
            print(table_line(r))
    print()
    for r in results:
        if r["case"] == "expiry" and r.get("rounds"):
            print(
                f"EXPIRY: {len(r['rounds'])} floods of {r['swarms']} one-peer swarms, each left "
                f"to expire (peer_timeout {FLOOD_TIMEOUT} s); RSS in MiB"
            )
            rounds = ", ".join(
                f"{bl.fmt_bytes_kib(x['rss_full_kib'])} / {bl.fmt_bytes_kib(x['rss_after_kib'])}"
                for x in r["rounds"]
            )
            print(f"  start {bl.fmt_bytes_kib(r['rss_start_kib'])}; full / after expiry: {rounds}")
            if not r.get("held_ok"):
                print(f"  NOT all held and expired: {r.get('fill_error') or r['rounds']}")
            print()
    if any(r.get("bytes_per_peer_partial") for r in results):
        print("* partial fill (time limit): RSS growth divided by the peers it holds\n")
    print("TARGETS (JohnLocke)")
    verdicts = []
    for r in results:
        if r["server"] == "johnlocke" and r["case"] == "expiry" and "back_mib" in r:
            verdicts.append(
                {
                    "label": "expiry: RSS above start",
                    "value": r["back_mib"],
                    "target": TARGET_EXPIRY_MIB,
                    "met": bool(r["back_mib"] <= TARGET_EXPIRY_MIB and r.get("held_ok")),
                }
            )
            continue
        if r["server"] != "johnlocke" or r.get("bytes_per_peer") is None:
            continue
        target = TARGET_BYTES_PER_PEER[r["case"]]
        ok = r["bytes_per_peer"] <= target and r.get("held_ok")
        verdicts.append(
            {
                "label": f"{r['case']}: bytes per peer",
                "value": r["bytes_per_peer"],
                "target": target,
                "met": bool(ok),
            }
        )
        if r["case"] == "1m":
            total = max(r["rss_after_kib"], r["hwm_kib"] or 0) / 1024
            verdicts.append(
                {
                    "label": "1m: process RSS (peak)",
                    "value": total,
                    "target": TARGET_TOTAL_MIB,
                    "met": total < TARGET_TOTAL_MIB,
                }
            )
    for v in verdicts:
        unit = " MiB" if "RSS" in v["label"] else " B"
        print(
            f"  {v['label']:<32} {v['value']:>8.1f}{unit}  (target <= {v['target']}{unit})  "
            f"{'MET' if v['met'] else 'NOT MET'}"
        )
    if args.quick:
        print("  (quick run: 10x fewer peers than the targets are stated for)")
    doc = {
        "date": stamp,
        "quick": args.quick,
        "results": results,
        "targets": verdicts,
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    out = bl.write_results("memory", stamp, doc)
    print(f"\nJSON: {out}   (elapsed {time.monotonic() - t_start:.0f} s)")
    return 0


def summary_line(r: dict) -> str:
    if r.get("fill_error") and r.get("rss_after_kib") is None:
        return f"FAILED: {r['fill_error']}"
    bpp = r.get("bytes_per_peer")
    return (
        f"RSS {bl.fmt_bytes_kib(r.get('rss_before_kib'))} -> "
        f"{bl.fmt_bytes_kib(r.get('rss_after_kib'))} MiB, "
        f"{'-' if bpp is None else f'{bpp:.0f}'} B/peer, fill {r.get('fill_seconds')} s, "
        f"held: {held_text(r)}"
    )


def held_text(r: dict) -> str:
    held = (
        f"{r.get('check_peers_held_in_sample')}/{r.get('check_peers_expected_in_sample')} "
        f"in {r.get('check_swarms')} scraped swarm(s)"
    )
    if r.get("fill_error"):
        return f"PARTIAL ({r['fill_error']}); held {held}"
    if r.get("fill_bad"):
        return f"NO ({r['fill_bad']} bad fill answers: {r['fill_first_error']}); held {held}"
    if r.get("check_wrong"):
        text = f"NO: {r['check_wrong']} swarms wrong ({r['check_first_wrong']}); {held}"
    else:
        text = f"OK: {held}"
    if r.get("check_scrape_key_errors"):
        text += f"; scrape answers carry a mangled info_hash key ({r['check_scrape_key_errors']})"
    return text


def table_line(r: dict) -> str:
    lead = f"{r['server']:<20} {r['case']:<9} {r['swarms']:>8} {r['peers']:>9}"
    if r.get("skipped"):
        return f"{lead}  skipped: {r['skipped'].splitlines()[0]}"
    bpp = r.get("bytes_per_peer")
    partial = "*" if r.get("bytes_per_peer_partial") else ""
    rate = r["fill_answered"] / r["fill_seconds"] if r.get("fill_seconds") else None
    per_peer = "-" if bpp is None else f"{bpp:.1f}{partial}"
    return (
        f"{lead} {bl.fmt_bytes_kib(r.get('rss_before_kib')):>7} MiB "
        f"{bl.fmt_bytes_kib(r.get('rss_after_kib')):>6} MiB "
        f"{bl.fmt_bytes_kib(r.get('hwm_kib')):>5} MiB {per_peer:>10} "
        f"{r.get('fill_seconds', '-'):>7} {'-' if rate is None else f'{rate:.0f}':>7}  "
        f"{held_text(r)}"
    )


if __name__ == "__main__":
    bl.run_main(main)
