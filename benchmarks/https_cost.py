"""What HTTPS costs: the same JohnLocke daemon over plain HTTP and over TLS, in one run.

    python benchmarks/https_cost.py             # 3 rounds x 5 s per server and scenario
    python benchmarks/https_cost.py --quick     # 1 round x 3 s

Daemons identical but for ``[http] tls_cert``/``tls_key``: plain HTTP; HTTPS with an ECDSA P-256
certificate; HTTPS with an RSA 2048 certificate (the two kinds public CAs issue); and plain HTTP
and ECDSA HTTPS again on ``event_loop = "uvloop"`` (whose TLS layer is compiled, where asyncio's
is Python). The certificates come from a throw-away CA made by ``trustme``. Each daemon is pinned
to core 1 and filled with the same swarms (``--swarms`` x ``--peers``, 25 % seeders, over
keep-alive connections), then ``wrk`` (core 0) replays libtorrent-style re-announces
(numwant=50, every answer checked) in two scenarios: a new connection per request
(``Connection: close``: a full TCP and TLS handshake per announce, as a client that does not
keep the connection between announces pays), and 64 keep-alive connections. The daemons are
measured alternately, round by round in rotated order, and the median is reported, with the
ratio HTTPS / HTTP on the same event loop, both in answers per second and in answers per CPU
second of the daemon (from /proc; on a shared machine the steadier of the two). Figures also go
to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402
import run as throughput  # noqa: E402

SCENARIOS = {
    "announce-close": (False, "announce, new connection per request"),
    "announce-ka": (True, "announce, 64 keep-alive connections"),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="JohnLocke over HTTPS vs plain HTTP, in one run.")
    bl.add_run_args(p, swarms=200, duration=5.0)
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    return bl.finish_run_args(p, p.parse_args(), duration=5.0)


def make_servers(workdir: Path, core: int | None) -> tuple[list[bl.Server], ssl.SSLContext]:
    import trustme

    servers = []
    client = ssl.create_default_context()
    for name, key_type, loop in (
        ("http", None, "asyncio"),
        ("https-ecdsa", trustme.KeyType.ECDSA, "asyncio"),
        ("https-rsa", trustme.KeyType.RSA, "asyncio"),
        ("http-uvloop", None, "uvloop"),
        ("https-ecdsa-uvloop", trustme.KeyType.ECDSA, "uvloop"),
    ):
        port = bl.free_port()
        tls = ""
        if key_type is not None:
            ca = trustme.CA(key_type=key_type)
            ca.configure_trust(client)
            leaf = ca.issue_cert(bl.HOST)
            leaf.cert_chain_pems[0].write_to_path(str(workdir / f"{name}.crt"))
            leaf.private_key_pem.write_to_path(str(workdir / f"{name}.key"))
            tls = f'tls_cert = "{name}.crt"\ntls_key = "{name}.key"\n'
        config = workdir / f"{name}.toml"
        config.write_text(
            "# Written by benchmarks/https_cost.py\n"
            f'[http]\nhost = "{bl.HOST}"\nport = {port}\nevent_loop = "{loop}"\n{tls}'
            '[state]\npath = ""\n'
        )
        argv = bl.pinned([sys.executable, "-m", "johnlocke", "--config", str(config)], core)
        servers.append(bl.Server(name, "johnlocke", argv, port, workdir, env=bl.python_env()))
    return servers, client


def fill(srv: bl.Server, started: list[str], client: ssl.SSLContext) -> None:
    bad: list[str] = []

    def check(_i: int, status: int, body: bytes) -> None:
        if status != 200 or b"failure reason" in body:
            bad.append(f"{status} {body[:80]!r}")

    tls = client if srv.name.startswith("https") else None
    st = bl.run_async(bl.fetch_all(srv.port, started, check, tls=tls))
    if bad or st.answered != len(started):
        raise SystemExit(f"{srv.name}: filling failed ({st.answered} answered): {bad[:3]}")


def per_cpu(rounds: list[dict]) -> float | None:
    """The median over rounds of answers per CPU second of the daemon."""
    rates = [
        r["rps"] / (r["server_cpu_pct"] / 100)
        for r in rounds
        if r.get("ok") and r.get("server_cpu_pct")
    ]
    return statistics.median(rates) if rates else None


def main() -> int:
    args = parse_args()
    if bl.ensure_command("wrk", "wrk", not args.no_install) is None:
        print("wrk is not installed and could not be installed (apt-get install wrk)")
        return 1
    cores = bl.cores_ok()
    tracker_core, load_core = (bl.TRACKER_CORE, bl.LOAD_CORE) if cores else (None, None)
    bl.pin_self(load_core)
    if args.wait_quiet:
        bl.wait_quiet(args.wait_quiet)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = bl.CACHE / f"https-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    wl = bl.Workload(args.swarms, args.peers)
    paths_file = workdir / "announce.txt"
    paths_file.write_text("\n".join(wl.reannounce_paths(args.numwant)) + "\n")
    started = wl.started_paths(args.numwant)
    log_path = workdir / "wrk.log"
    results: dict[str, dict[str, list[dict]]] = {sc: {} for sc in SCENARIOS}
    with bl.Processes() as procs:
        servers, client = make_servers(workdir, tracker_core)
        for srv in servers:
            why = srv.start(procs)
            if why:
                print(f"{srv.name} did not start: {why}")
                return 1
            fill(srv, started, client)
            scheme = "https" if srv.name.startswith("https") else "http"
            throughput.run_wrk(
                srv, paths_file, "announce", True, 2, args, load_core, log_path, [], scheme=scheme
            )
        pids = [s.pid for s in servers]
        for sc, (keepalive, _) in SCENARIOS.items():
            for rnd in range(args.rounds):
                order = servers[rnd % len(servers) :] + servers[: rnd % len(servers)]
                for srv in order:
                    scheme = "https" if srv.name.startswith("https") else "http"
                    r = throughput.run_wrk(
                        srv, paths_file, "announce", keepalive, args.duration, args, load_core,
                        log_path, pids, scheme=scheme,
                    )  # fmt: skip
                    results[sc].setdefault(srv.name, []).append(r)
                    if not r.get("ok"):
                        print(f"  {sc} {srv.name}: wrk failed: {r.get('error')}")
                        continue
                    print(
                        f"  {sc:<15} round {rnd + 1} {srv.name:<19} {r['rps']:>9,.0f}/s"
                        f"  server cpu {r.get('server_cpu_pct')}%  wrk cpu {r['wrk_cpu_pct']}%"
                        f"  other {r['other_cpu_pct']}%",
                        flush=True,
                    )
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(
        f"{args.swarms} swarms x {args.peers} peers, numwant {args.numwant},"
        f" {args.connections} connections, {args.rounds} x {args.duration:g} s per server,"
        " median of rounds" + ("" if cores else " (fewer than 2 cores: nothing pinned)")
    )
    print(
        f"{'scenario':<15} {'server':<19} {'answers/s':>10} {'rounds':>24} {'p99 ms':>7}"
        f" {'bad':>4} {'sockerr':>7} {'srv cpu':>7} {'wrk cpu':>7} {'vs http':>8}"
        f" {'per cpu-s':>10} {'vs http':>8}"
    )
    doc: dict = {"args": vars(args), "git": throughput.git_describe(), "scenarios": {}}
    for sc in SCENARIOS:
        summaries = {name: throughput.summarise(rounds) for name, rounds in results[sc].items()}
        doc["scenarios"][sc] = summaries
        for name, s in summaries.items():
            if s.get("rps") is None:
                print(f"{sc:<15} {name:<19} failed: {s.get('error')}")
                continue
            plain_name = "http-uvloop" if name.endswith("uvloop") else "http"
            plain = summaries.get(plain_name, {})
            rel = s["rps"] / plain["rps"] if plain.get("rps") else None
            s["vs_http"] = rel
            # Answers per CPU second of the daemon: what the machine's other load skews least.
            s["per_cpu_s"] = per_cpu(results[sc][name])
            base = per_cpu(results[sc].get(plain_name, []))
            cpu_rel = s["per_cpu_s"] / base if s["per_cpu_s"] and base else None
            s["per_cpu_s_vs_http"] = cpu_rel
            rounds = "/".join(str(x) for x in s["rps_rounds"])
            print(
                f"{sc:<15} {name:<19} {s['rps']:>10,.0f} {rounds:>24} {s['p99_ms']:>7.1f}"
                f" {s['bad'] + s['non200']:>4} {s['sock_errors']:>7}"
                f" {throughput.fmt(s['server_cpu_pct'], '.0f'):>6}%"
                f" {throughput.fmt(s['wrk_cpu_pct'], '.0f'):>6}%"
                f" {throughput.fmt(rel, '.2f'):>7}x"
                f" {throughput.fmt(s['per_cpu_s'], ',.0f'):>10}"
                f" {throughput.fmt(cpu_rel, '.2f'):>7}x"
            )
            if (s.get("wrk_cpu_pct") or 0) >= 90:
                print(f"  note: wrk used {s['wrk_cpu_pct']:.0f}% of its core: it may be the limit")
        spread = [
            (max(s["rps_rounds"]) - min(s["rps_rounds"])) / statistics.median(s["rps_rounds"])
            for s in summaries.values()
            if s.get("rps_rounds") and len(s["rps_rounds"]) > 1
        ]
        if spread:
            print(f"  spread between rounds: up to {100 * max(spread):.0f} % of the median")
    out = bl.write_results("https", stamp, doc)
    print(f"\nfigures written to {out}")
    return 0


if __name__ == "__main__":
    bl.run_main(main)
