"""Keep-alive flood: do new clients still get in while idle keep-alive connections fill the cap?

    python benchmarks/keepalive_flood.py               # the default cap (4096), 5000 attackers
    python benchmarks/keepalive_flood.py --cap 200 --attackers 250 --addresses 10

The real daemon (``[http]`` defaults but ``max_connections = --cap``; snapshots off) listens on
127.0.0.1. Attackers connect from ``--addresses`` loopback addresses (127.0.0.10, .11, ...; all
of 127.0.0.0/8 is this machine), each sends one scrape and asks again every ``--every`` seconds
(below ``keepalive_timeout``), reconnecting ``--reconnect`` seconds after losing its connection.
Once every attacker has been served, ``--probes`` new connections from 127.0.0.1 make one
announce each, one after the other. Printed: probes answered, attacker connections lost, and the
daemon's RSS before the attack and at its peak during it (VmRSS). Run it on an older checkout
(``python OTHER/benchmarks/keepalive_flood.py``) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    CACHE,
    HOST,
    RESULTS,
    Processes,
    cores_ok,
    cpu_seconds,
    johnlocke_server,
    log,
    pin_self,
    proc_status_kib,
    run_main,
)

SCRAPE = b"GET /scrape?info_hash=%s HTTP/1.1\r\nHost: t\r\n\r\n" % (b"%33" * 20)
PROBE = (
    b"GET /announce?info_hash=" + b"%44" * 20 + b"&peer_id=-PR0001-%012d&port=6881&left=1"
    b" HTTP/1.1\r\nHost: t\r\n\r\n"
)


async def answer(reader: asyncio.StreamReader, timeout: float) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head[:40])
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return await asyncio.wait_for(reader.readexactly(length), timeout)


class Attack:
    def __init__(self, args: argparse.Namespace, port: int) -> None:
        self.args = args
        self.port = port
        self.stop = asyncio.Event()
        self.served: set[int] = set()
        self.lost = 0
        self.connects = asyncio.Semaphore(64)  # within the listen backlog

    async def attacker(self, n: int) -> None:
        source = f"127.0.0.{10 + n % self.args.addresses}"
        rng = random.Random(n)
        while not self.stop.is_set():
            try:
                async with self.connects:
                    reader, writer = await asyncio.open_connection(
                        HOST, self.port, local_addr=(source, 0)
                    )
            except OSError:
                self.lost += 1
                await asyncio.sleep(self.args.reconnect)
                continue
            try:
                await asyncio.sleep(rng.random() * 0.5)
                while not self.stop.is_set():
                    writer.write(SCRAPE)
                    await answer(reader, 30)
                    self.served.add(n)
                    try:
                        await asyncio.wait_for(self.stop.wait(), self.args.every)
                    except TimeoutError:
                        pass
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                self.lost += 1
            finally:
                writer.close()
            if not self.stop.is_set():
                await asyncio.sleep(self.args.reconnect)

    async def probe(self, n: int) -> bool:
        try:
            reader, writer = await asyncio.open_connection(HOST, self.port)
        except OSError:
            return False
        try:
            writer.write(PROBE.replace(b"%012d", b"%012d" % n))
            return b"failure" not in await answer(reader, 5)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            return False
        finally:
            writer.close()


async def run(args: argparse.Namespace, port: int, pid: int) -> dict:
    attack = Attack(args, port)
    rss_before = proc_status_kib(pid, "VmRSS")
    cpu0 = cpu_seconds(pid)
    tasks = [asyncio.create_task(attack.attacker(n)) for n in range(args.attackers)]
    peak = rss_before or 0
    t0 = time.monotonic()
    # Until every attacker has been served once (or a minute): the cap is then full of them.
    while len(attack.served) < args.attackers and time.monotonic() - t0 < 60:
        await asyncio.sleep(0.5)
        peak = max(peak, proc_status_kib(pid, "VmRSS") or 0)
    filled = time.monotonic() - t0
    log(f"  {len(attack.served)} attackers served once in {filled:.1f} s; probing")
    answered = 0
    for n in range(args.probes):
        answered += await attack.probe(n)
        peak = max(peak, proc_status_kib(pid, "VmRSS") or 0)
    # Hold the flood for a few more rounds of re-requests, sampling memory.
    end = time.monotonic() + args.hold
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        peak = max(peak, proc_status_kib(pid, "VmRSS") or 0)
    attack.stop.set()
    await asyncio.gather(*tasks)
    cpu1 = cpu_seconds(pid)
    return {
        "cap": args.cap,
        "attackers": args.attackers,
        "addresses": args.addresses,
        "probes": args.probes,
        "probes_answered": answered,
        "attackers_served_once": len(attack.served),
        "attacker_connections_lost": attack.lost,
        "rss_before_mib": round((rss_before or 0) / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "daemon_cpu_s": round((cpu1 or 0) - (cpu0 or 0), 1),
        "seconds": round(time.monotonic() - t0, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cap", type=int, default=4096, help="[http] max_connections")
    p.add_argument("--attackers", type=int, default=5000)
    p.add_argument("--addresses", type=int, default=16, help="loopback source addresses")
    p.add_argument(
        "--every", type=float, default=10.0, help="seconds between an attacker's requests"
    )
    p.add_argument("--reconnect", type=float, default=1.0, help="seconds before reconnecting")
    p.add_argument("--probes", type=int, default=80)
    p.add_argument("--hold", type=float, default=20.0, help="seconds of flood after the probes")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.attackers + args.probes + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    if cores_ok():
        pin_self(0)
    with Processes() as procs:
        server = johnlocke_server(
            "flood",
            CACHE / "keepalive-flood",
            http_toml=f"max_connections = {args.cap}\n",
            snapshot=False,
        )
        why = server.start(procs)
        if why:
            log(f"daemon: {why}")
            return 1
        log(f"daemon pid {server.pid} on {HOST}:{server.port}, max_connections = {args.cap}")
        result = asyncio.run(run(args, server.port, server.pid))
        procs.stop(server.proc)  # type: ignore[arg-type]
    for key, value in result.items():
        log(f"  {key:28s} {value}")
    log(
        f"RESULT probes answered {result['probes_answered']}/{result['probes']}; RSS"
        f" {result['rss_before_mib']} -> {result['rss_peak_mib']} MiB under"
        f" {result['attackers']} keep-alive attackers (cap {result['cap']})"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "keepalive_flood.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
