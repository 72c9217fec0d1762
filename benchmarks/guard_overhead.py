"""What the connection guard (``[http] max_connections``/``request_timeout``) costs per request.

    python benchmarks/guard_overhead.py                 # 3 rounds x 5 s per mode
    python benchmarks/guard_overhead.py --seconds 10 --connections 32

1. Per data chunk: the guard forwards ``data_received`` to aiohttp's handler after one
   attribute test; timed against calling the handler directly (a no-op stand-in), in ns.
   Per request, on a keep-alive connection: the idle -> busy -> idle bookkeeping (the first
   chunk of a request, then ``answered()`` once aiohttp has written the answer), and the check
   of the request line's HTTP version in the request factory, each against the bare call.
2. End to end: the tracker app served by a child process, once through
   ``johnlocke.http.server.start`` (guarded; the lean path, ``johnlocke.http.lean``, turned off
   so that both serve through aiohttp's handlers) and once through a plain
   ``AppRunner``/``TCPSite`` (no guard), alternating; this process drives keep-alive announces
   over raw sockets from ``--connections`` clients and counts answers/s. With two or more cores
   the server is pinned to core 1 and the client to core 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path
from urllib.parse import quote_from_bytes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER = """
import asyncio, sys
from aiohttp import web
from johnlocke.config import validate
from johnlocke.http.server import build_app, runner_options, start
from johnlocke.store.memory import MemoryStore
from johnlocke.tracker import Tracker

async def main(mode):
    config = validate({"http": {"host": "127.0.0.1", "port": 0}}, "<bench>")
    tracker = Tracker(config, MemoryStore())
    app = build_app(tracker, config)
    if mode == "guarded":
        runner = await start(app, config, lean_path=False)
    else:
        runner = web.AppRunner(app, **runner_options(config))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
    print("PORT", runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


class _Inner:
    """A no-op stand-in for aiohttp's handler."""

    def connection_made(self, transport):
        pass

    def data_received(self, data):
        pass


class _Transport:
    def close(self):
        pass


def _served_guard(idle: bool):
    """A guard whose connection has had its first request: busy with it, or answered (idle)."""
    from johnlocke.http.server import _Guard, _Limits

    async def build():
        guard = _Guard(_Limits(10, 60.0), _Inner)
        guard.connection_made(_Transport())
        guard.data_received(b"GET / HTTP/1.1\r\n\r\n")  # the first request is complete
        if idle:
            guard.answered()
        return guard

    return asyncio.run(build())


def per_chunk_ns() -> tuple[float, float]:
    guard = _served_guard(idle=False)
    inner = guard.inner
    data = b"x" * 400
    n = 2_000_000
    through = min(timeit.repeat(lambda: guard.data_received(data), number=n, repeat=5)) / n
    direct = min(timeit.repeat(lambda: inner.data_received(data), number=n, repeat=5)) / n
    return through * 1e9, direct * 1e9


def per_request_ns() -> tuple[float, float, float, float]:
    """(idle -> busy -> idle through the guard, the bare chunk; version check, bare factory)."""
    from aiohttp.http import HttpVersion11

    from johnlocke.http.server import _http1

    guard = _served_guard(idle=True)
    inner = guard.inner
    data = b"x" * 400

    def cycle():
        guard.data_received(data)
        guard.answered()

    n = 1_000_000
    through = min(timeit.repeat(cycle, number=n, repeat=5)) / n
    direct = min(timeit.repeat(lambda: inner.data_received(data), number=n, repeat=5)) / n

    class Message(tuple):
        version = HttpVersion11

    def make(message, payload, protocol, writer, task):
        return message

    message = Message()
    checked = _http1(make)
    version = min(timeit.repeat(lambda: checked(message, 1, 2, 3, 4), number=n, repeat=5)) / n
    bare = min(timeit.repeat(lambda: make(message, 1, 2, 3, 4), number=n, repeat=5)) / n
    return through * 1e9, direct * 1e9, version * 1e9, bare * 1e9


async def drive(port: int, seconds: float, connections: int) -> float:
    rng = random.Random(1)
    targets = []
    for s in range(200):
        ih = quote_from_bytes(s.to_bytes(20, "big"))
        for p in range(25):
            pid = quote_from_bytes(b"-BM0001-" + rng.randbytes(12))
            targets.append(
                f"GET /announce?info_hash={ih}&peer_id={pid}&port={6000 + p}&left=5&compact=1"
                " HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            )
    deadline = time.monotonic() + seconds
    count = 0

    async def client() -> None:
        nonlocal count
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            writer.write(rng.choice(targets))
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await reader.readexactly(length)
            count += 1
        writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(client() for _ in range(connections)))
    return count / (time.monotonic() - t0)


def serve(mode: str) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-c", SERVER, mode]
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        cmd = ["taskset", "-c", "1", *cmd]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    return proc, int(line.split()[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args()
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})
    through, direct = per_chunk_ns()
    print(f"per data chunk: {through:.0f} ns through the guard, {direct:.0f} ns direct")
    cycle, chunk, version, bare = per_request_ns()
    print(
        f"per request: {cycle:.0f} ns for a chunk + idle/busy bookkeeping ({chunk:.0f} ns the bare"
        f" chunk); {version:.0f} ns the request factory with the version check ({bare:.0f} ns bare)"
    )
    rates: dict[str, list[float]] = {"guarded": [], "plain": []}
    for _ in range(args.rounds):
        for mode in ("plain", "guarded"):
            proc, port = serve(mode)
            try:
                rates[mode].append(asyncio.run(drive(port, args.seconds, args.connections)))
            finally:
                proc.kill()
                proc.wait()
    for mode, values in rates.items():
        print(
            f"{mode:8s} answers/s: median {statistics.median(values):.0f}"
            f" ({', '.join(f'{v:.0f}' for v in values)})"
        )
    g, b = statistics.median(rates["guarded"]), statistics.median(rates["plain"])
    print(f"RESULT guard overhead {100 * (b - g) / b:+.1f}% of answers/s (noise is a few %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
