"""Memory benchmark: RSS per peer with 100k peers in one swarm and 1M peers in 100,000 swarms.

    python benchmarks/memory.py                 # JohnLocke, opentracker, bittorrent-tracker
    python benchmarks/memory.py --quick         # 10x fewer peers
    python benchmarks/memory.py --servers johnlocke --cases 1m

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402

ALL_SERVERS = ("johnlocke", "opentracker", "bittorrent-tracker")
CASES = {
    # name: (swarms, peers per swarm)
    "100k": (1, 100_000),
    "1m": (100_000, 10),
}
QUICK_CASES = {"100k": (1, 10_000), "1m": (10_000, 10)}
TARGET_BYTES_PER_PEER = 128
TARGET_TOTAL_MIB = 200
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
    phases = [(0, 1, HOST_IPS[0], 1)]
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
    p.add_argument("--cases", default=",".join(CASES), help="100k (1 swarm), 1m (100,000 swarms)")
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
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    a.cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    for s in a.servers:
        if s not in ALL_SERVERS:
            p.error(f"unknown server {s!r}")
    for c in a.cases:
        if c not in CASES:
            p.error(f"unknown case {c!r}")
    return a


def make_server(
    name: str, workdir: Path, swarms: int, install: bool
) -> tuple[bl.Server | None, str]:
    core = bl.TRACKER_CORE if bl.cores_ok() else None
    if name == "johnlocke":
        return bl.johnlocke_server(name, workdir, "asyncio", core), ""
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
                    row = {
                        "server": name,
                        "case": case,
                        "swarms": swarms,
                        "peers": swarms * per_swarm,
                    }
                    results.append(row)
                    srv, why = make_server(name, workdir, swarms, not args.no_install)
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
                        row.update(measure(srv, swarms, per_swarm, args))
                    finally:
                        procs.stop(srv.proc)
                    print(f"    {summary_line(row)}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print("\n" + "=" * 100)
    print("MEMORY (RSS = VmRSS, peak = VmHWM; bytes/peer = (RSS after - RSS before) / peers)")
    print("=" * 100)
    head = (
        f"{'server':<20} {'case':<5} {'swarms':>7} {'peers':>9} {'RSS before':>11} "
        f"{'RSS after':>10} {'peak':>9} {'bytes/peer':>10} {'fill s':>7} {'fill/s':>7}  held"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        print(table_line(r))
    print()
    if any(r.get("bytes_per_peer_partial") for r in results):
        print("* partial fill (time limit): RSS growth divided by the peers it holds\n")
    print("TARGETS (JohnLocke)")
    verdicts = []
    for r in results:
        if r["server"] != "johnlocke" or r.get("bytes_per_peer") is None:
            continue
        ok = r["bytes_per_peer"] <= TARGET_BYTES_PER_PEER and r.get("held_ok")
        verdicts.append(
            {
                "label": f"{r['case']}: bytes per peer",
                "value": r["bytes_per_peer"],
                "target": TARGET_BYTES_PER_PEER,
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
            f"  {v['label']:<28} {v['value']:>8.1f}{unit}  (target <= {v['target']}{unit})  "
            f"{'MET' if v['met'] else 'NOT MET'}"
        )
    if args.quick:
        print("  (quick run: 10x fewer peers than the targets are stated for)")
    bl.RESULTS.mkdir(parents=True, exist_ok=True)
    out = bl.RESULTS / f"memory-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "date": stamp,
                "quick": args.quick,
                "results": results,
                "targets": verdicts,
                "elapsed_s": round(time.monotonic() - t_start, 1),
            },
            indent=1,
        )
    )
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
    lead = f"{r['server']:<20} {r['case']:<5} {r['swarms']:>7} {r['peers']:>9}"
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
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every process this script started has been stopped", flush=True)
        sys.exit(130)
