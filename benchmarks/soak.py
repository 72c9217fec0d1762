"""Soak: the real daemon under mixed traffic, 5% of it hostile, for a set time.

    python benchmarks/soak.py                  # 60 s
    python benchmarks/soak.py --minutes 10     # the real run
    python benchmarks/soak.py --seconds 30 --workers 16 --loop uvloop
    python benchmarks/soak.py --udp --minutes 10   # the same over UDP (BEP 15)

Starts ``python -m johnlocke`` on 127.0.0.1 (a free port, a temporary directory with its config,
log and snapshot; snapshots every 20 s and sweeps every 10 s, so both run under load), then:

1. warm-up: every peer of ``--swarms`` x ``--peers`` announces once, so the swarms stop growing;
2. the soak: ``--workers`` keep-alive clients send announces (a peer's next announce: none,
   completed, stopped then started again; some IPv6 through ``ip=``) and scrapes (10%), and one
   request in ten is made on a new connection. ``--malformed`` of the requests (5%) are
   hostile instead, on their own raw sockets: bad percent escapes, wrong lengths, huge numbers,
   garbage bytes in the query, oversized queries (over the parser's limit, and over the
   request-line limit), garbage instead of HTTP, header floods, requests cut short; and slow
   clients that hold connections open: slowloris (a byte every half second, never finishing),
   idle connections that send nothing, pipelines of requests whose answers are never read;
3. SIGTERM, and the daemon must exit 0 after its final snapshot.

With ``--udp`` the traffic is UDP: every worker is a client socket that connects, reuses its
connection id (connecting again every 50 s, as clients do) and sends the same announces and
scrapes as datagrams; ``--malformed`` of them are garbage instead: random bytes, datagrams cut
short or too long, connects without the magic number, announces with a forged connection id,
truncated BEP 41 options, bad events and ports, scrapes of a wrong length, unknown actions.
Valid requests must all be answered (no error packets, none lost); garbage must be dropped or
refused with an error packet, never answered as a request.

Reported: answers/s, latency of valid requests, 5xx count (must be 0), failure answers (valid
requests must get none; hostile ones get a bencoded failure or a 4xx), what happened to every
kind of hostile request, how long the server took to close slow and idle clients, error lines
in the daemon's log (must be none), and the daemon's RSS: at start, after warm-up, from 40% of
the soak on (the allocator has settled by then) to the end, and its slope over that part. It
must stay flat: the end may exceed the 40% mark by at most 3 MB or 5%.

Everything runs on 127.0.0.1, is bounded in time and every process and socket it started is
closed at the end (also on Ctrl-C). With two or more cores the daemon is pinned to core 1 and
this client to core 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote_from_bytes

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
REQUEST_TIMEOUT = 5.0  # the daemon's [http] request_timeout during the soak
SLOW_CAP = 300  # most slow/idle hostile connections open at once


# --- the daemon -----------------------------------------------------------------------------


class Daemon:
    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.log_path = workdir / "johnlocke.log"
        config = workdir / "tracker.toml"
        config.write_text(
            f"""
[http]
host = "{HOST}"
port = 0
event_loop = "{args.loop}"
request_timeout = {REQUEST_TIMEOUT}
max_connections = {args.max_connections}
# Every simulated client comes from 127.0.0.1: no per-address limit.
max_connections_per_ip = 0

[announce]
allow_ip_param = true
sweep_interval = 10

[state]
path = "{"johnlocke.snapshot" if args.snapshot_interval else ""}"
snapshot_interval = {args.snapshot_interval or 1}
"""
        )
        cmd = [sys.executable, "-m", "johnlocke", "--config", str(config)]
        if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
            cmd = ["taskset", "-c", "1", *cmd]
            os.sched_setaffinity(0, {0})
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=env
        )
        self.port = 0
        self.udp_port = 0

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log_text())
            if m:
                self.port = int(m.group(1))
                udp = re.search(r"udp://127\.0\.0\.1:(\d+)", self.log_text())
                self.udp_port = int(udp.group(1)) if udp else 0
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"johnlocke did not start:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_mb(self) -> float:
        pid = self.proc.pid
        # Through taskset, the daemon is the same process (taskset execs it).
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                return None
        self.log.close()
        return self.proc.returncode


# --- HTTP over raw asyncio streams -----------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.valid = Counter()  # ok / failure / 4xx / 5xx / conn_error
        self.hostile: dict[str, Counter] = {}
        self.latencies: list[float] = []
        self.statuses = Counter()
        self.five_xx: list[str] = []
        self.close_times: dict[str, list[float]] = {"slowloris": [], "idle": []}
        self.answers = 0
        self.slow_open = 0

    def hostile_outcome(self, kind: str, outcome: str) -> None:
        self.hostile.setdefault(kind, Counter())[outcome] += 1


async def read_answer(reader: asyncio.StreamReader, timeout: float = 10.0) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status = int(head[9:12])
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    body = await asyncio.wait_for(reader.readexactly(int(m.group(1))), timeout) if m else b""
    return status, body


def classify(status: int, body: bytes) -> str:
    if status >= 500:
        return "5xx"
    if status >= 400:
        return "4xx"
    if body.startswith(b"d14:failure reason"):
        return "failure"
    return "ok"


class Client:
    """One keep-alive connection that reconnects when needed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: bytes, close: bool = False) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        conn = b"Connection: close\r\n" if close else b""
        self.writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: tracker\r\n" + conn + b"\r\n")
        try:
            status, body = await read_answer(self.reader)  # type: ignore[arg-type]
        except BaseException:
            self.drop()
            raise
        if close:
            self.drop()
        return status, body

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# --- traffic --------------------------------------------------------------------------------


class Universe:
    """The swarms and peers of the soak, with each peer's state."""

    def __init__(self, swarms: int, peers: int, rng: random.Random) -> None:
        self.hashes = [rng.randbytes(20) for _ in range(swarms)]
        self.peers = []
        for s in range(swarms):
            for p in range(peers):
                pid = b"-SK0001-" + rng.randbytes(12)
                ip = (
                    f"2001:db8::{s:x}:{p:x}" if rng.random() < 0.1 else f"10.{s >> 8}.{s & 255}.{p}"
                )
                port, key = rng.randrange(1024, 65535), rng.getrandbits(32)
                self.peers.append(
                    {
                        "prefix": (
                            b"/announce?info_hash="
                            + quote_from_bytes(self.hashes[s]).encode()
                            + b"&peer_id="
                            + quote_from_bytes(pid).encode()
                            + b"&port=%d&ip=%s&key=%08x&compact=1" % (port, ip.encode(), key)
                        ),
                        "left": rng.choice([0, 0, 1000, 5000, 100000]),
                        "stopped": False,
                        # The same peer over UDP (an IPv6 ip= has no UDP field: left out).
                        "udp": (self.hashes[s], pid, port, key, ip if ":" not in ip else ""),
                    }
                )

    @staticmethod
    def announce_target(peer: dict, rng: random.Random, first: bool = False) -> bytes:
        event = b""
        if first or peer["stopped"]:
            event, peer["stopped"] = b"&event=started", False
        elif peer["left"] and rng.random() < 0.05:
            event, peer["left"] = b"&event=completed", 0
        elif rng.random() < 0.02:
            event, peer["stopped"] = b"&event=stopped", True
        return (
            peer["prefix"]
            + b"&left=%d&numwant=%d" % (peer["left"], rng.choice([0, 30, 50]))
            + event
        )

    def scrape_target(self, rng: random.Random) -> bytes:
        hashes = rng.sample(self.hashes, rng.randint(1, 5))
        return b"/scrape?" + b"&".join(b"info_hash=" + quote_from_bytes(h).encode() for h in hashes)


def bad_queries(u: Universe, rng: random.Random) -> dict[str, bytes]:
    """Announce targets that must be refused with a bencoded failure."""
    peer = rng.choice(u.peers)["prefix"]
    return {
        "bad_escape": peer.replace(b"info_hash=", b"info_hash=%ZZ", 1),
        "bad_escape_tail": peer + b"&key=abc%",
        "wrong_length": b"/announce?info_hash="
        + b"%41" * 19
        + b"&peer_id="
        + b"B" * 20
        + b"&port=1",
        "huge_number": peer + b"&left=" + b"9" * rng.choice([21, 40, 200]),
        "huge_port": peer.replace(b"&port=", b"&port=99999999999", 1),
        "negative": peer + b"&left=-5",
        "garbage_query": b"/announce?"
        + bytes(
            rng.choice(b"abcxyz=&%;:/?@!$'()*+,-._~0123456789") for _ in range(rng.randint(1, 300))
        ),
        "binary_query": b"/announce?"
        + quote_from_bytes(rng.randbytes(rng.randint(1, 200))).encode(),
        "oversized_query": b"/announce?info_hash=" + b"A" * 9000,
    }


async def hostile_quick(
    kind: str, target: bytes | None, raw: bytes | None, port: int, stats: Stats
) -> None:
    """One hostile request on its own connection; record what the server did."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
    except (OSError, TimeoutError):
        stats.hostile_outcome(kind, "connect_failed")
        return
    try:
        writer.write(raw if raw is not None else b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")  # type: ignore[operator]
        if kind == "cut_short":
            writer.close()
            stats.hostile_outcome(kind, "sent")
            return
        try:
            status, body = await read_answer(reader)
            outcome = classify(status, body)
            stats.statuses[status] += 1
            if outcome == "5xx":
                stats.five_xx.append(f"{kind}: {status} {body[:100]!r}")
        except asyncio.IncompleteReadError:
            outcome = "closed"
        except (ConnectionError, TimeoutError) as exc:
            outcome = type(exc).__name__
        stats.hostile_outcome(kind, outcome)
    finally:
        writer.close()


async def hostile_slow(kind: str, port: int, stats: Stats, deadline: float) -> None:
    """Slowloris, idle or unread pipeline: hold a connection and see when the server drops it."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
    except (OSError, TimeoutError):
        stats.hostile_outcome(kind, "connect_failed")
        return
    start = time.monotonic()
    try:
        if kind == "pipeline_unread":
            req = b"GET /scrape?info_hash=" + b"%41" * 20 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
            writer.write(req * 200)
            await asyncio.sleep(min(3.0, max(0.0, deadline - time.monotonic())))
            stats.hostile_outcome(kind, "held")
            return
        request = (
            b"GET /announce?info_hash="
            + b"%41" * 20
            + b"&peer_id="
            + b"S" * 20
            + b"&port=1 HTTP/1.1\r\n"
        )
        i = 0
        while time.monotonic() < deadline:
            if kind == "slowloris":
                try:
                    writer.write(request[i % len(request) : i % len(request) + 1])
                    await writer.drain()
                except ConnectionError:
                    break
                i += 1
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.5)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            if not data:
                break
        else:
            stats.hostile_outcome(kind, "still_open_at_end")
            return
        stats.close_times[kind].append(time.monotonic() - start)
        stats.hostile_outcome(kind, "closed_by_server")
    finally:
        writer.close()


async def worker(
    u: Universe,
    port: int,
    stats: Stats,
    deadline: float,
    rate: float,
    seed: int,
    slow: asyncio.Semaphore,
    tasks: set,
) -> None:
    rng = random.Random(seed)
    client = Client(port)
    while time.monotonic() < deadline:
        if rng.random() < rate:
            roll = rng.random()
            if roll < 0.3 and not slow.locked():
                kind = rng.choice(["slowloris", "idle", "pipeline_unread"])

                async def run(kind: str = kind) -> None:
                    async with slow:
                        stats.slow_open += 1
                        try:
                            await hostile_slow(kind, port, stats, deadline)
                        finally:
                            stats.slow_open -= 1

                t = asyncio.ensure_future(run())
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                continue
            if roll < 0.45:
                kind = rng.choice(
                    ["garbage_request", "header_flood", "huge_request_line", "cut_short"]
                )
                raw = {
                    "garbage_request": rng.randbytes(rng.randint(1, 500)) + b"\r\n\r\n",
                    "header_flood": b"GET /announce HTTP/1.1\r\n" + b"X-A: b\r\n" * 100 + b"\r\n",
                    "huge_request_line": b"GET /announce?" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
                    "cut_short": b"GET /announce?info_hash=%41%41",
                }[kind]
                await hostile_quick(kind, None, raw, port, stats)
                continue
            kind, target = rng.choice(list(bad_queries(u, rng).items()))
            await hostile_quick(kind, target, None, port, stats)
            continue
        if rng.random() < 0.1:
            target = u.scrape_target(rng)
        else:
            target = u.announce_target(rng.choice(u.peers), rng)
        t0 = time.perf_counter()
        try:
            status, body = await client.get(target, close=rng.random() < 0.1)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            stats.valid["conn_error"] += 1
            continue
        stats.latencies.append(time.perf_counter() - t0)
        stats.statuses[status] += 1
        outcome = classify(status, body)
        stats.valid[outcome] += 1
        stats.answers += 1
        if outcome == "5xx":
            stats.five_xx.append(f"valid: {status} {body[:100]!r}")
        elif outcome == "failure" and stats.valid["failure"] <= 5:
            print(f"  unexpected failure for a valid request: {body[:200]!r}", flush=True)
    client.drop()


async def warm_up(u: Universe, port: int, workers: int) -> float:
    t0 = time.monotonic()
    rng = random.Random(0)
    queue = list(range(len(u.peers)))

    async def one() -> None:
        client = Client(port)
        while queue:
            peer = u.peers[queue.pop()]
            status, body = await client.get(u.announce_target(peer, rng, first=True))
            assert classify(status, body) == "ok", (status, body)
        client.drop()

    await asyncio.gather(*(one() for _ in range(workers)))
    return time.monotonic() - t0


# --- UDP (BEP 15) -------------------------------------------------------------------------------

UDP_EVENTS = {b"": 0, b"&event=completed": 1, b"&event=started": 2, b"&event=stopped": 3}
RECONNECT_EVERY = 50.0  # seconds, as clients reuse a connection id for about a minute


def udp_announce(
    cid: bytes, txid: int, peer: dict, rng: random.Random, first: bool = False
) -> bytes:
    """The peer's next announce (the same state machine as over HTTP) as a datagram."""
    target = Universe.announce_target(peer, rng, first)
    event = UDP_EVENTS[target[target.rfind(b"&event=") :] if b"&event=" in target else b""]
    numwant = int(re.search(rb"&numwant=(\d+)", target).group(1))  # type: ignore[union-attr]
    info_hash, pid, port, key, ip = peer["udp"]
    return (
        cid
        + struct.pack(">II", 1, txid)
        + info_hash
        + pid
        + struct.pack(">qqqI", 0, peer["left"], 0, event)
        + (socket.inet_aton(ip) if ip else bytes(4))
        + struct.pack(">IiH", key, numwant, port)
        + b"\x02\x09/announce"
    )


def udp_scrape(cid: bytes, txid: int, u: Universe, rng: random.Random) -> bytes:
    return cid + struct.pack(">II", 2, txid) + b"".join(rng.sample(u.hashes, rng.randint(1, 5)))


def udp_garbage(cid: bytes, txid: int, u: Universe, rng: random.Random) -> tuple[str, bytes]:
    """(kind, datagram): something a tracker must drop or refuse, never serve."""
    valid = udp_announce(cid, txid, rng.choice(u.peers), random.Random(rng.random()))
    kind = rng.choice(
        [
            "random_bytes",
            "too_short",
            "too_long",
            "bad_magic",
            "forged_id",
            "truncated_options",
            "bad_event",
            "bad_port",
            "bad_scrape_length",
            "unknown_action",
            "short_announce",
        ]
    )
    data = {
        "random_bytes": rng.randbytes(rng.randint(16, 300)),
        "too_short": rng.randbytes(rng.randint(0, 15)),
        "too_long": valid + rng.randbytes(3000),
        "bad_magic": rng.randbytes(8) + struct.pack(">II", 0, txid),
        "forged_id": rng.randbytes(8) + valid[8:],
        "truncated_options": valid[:98] + b"\x02\x40/announce",
        "bad_event": valid[:80] + struct.pack(">I", rng.randint(4, 2**32 - 1)) + valid[84:],
        "bad_port": valid[:96] + b"\0\0" + valid[98:],
        "bad_scrape_length": cid + struct.pack(">II", 2, txid) + rng.randbytes(rng.randint(1, 19)),
        "unknown_action": cid + struct.pack(">II", rng.randint(4, 2**32 - 1), txid),
        "short_announce": valid[: rng.randint(16, 97)],
    }[kind]
    return kind, data


class UdpSocket:
    """One client socket on the event loop, with its connection id."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect((HOST, port))
        self.loop = asyncio.get_running_loop()
        self.cid = b""
        self.connected_at = 0.0
        self.txid = 0

    def close(self) -> None:
        self.sock.close()

    def next_txid(self) -> int:
        self.txid = (self.txid + 1) & 0xFFFFFFFF
        return self.txid

    async def exchange(self, data: bytes, timeout: float = 2.0) -> bytes | None:
        """Send and wait for the answer with this transaction id (None: none came)."""
        self.sock.send(data)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                answer = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), left)
            except TimeoutError:
                return None
            if answer[4:8] == data[12:16]:
                return answer

    async def ensure_connected(self) -> None:
        if self.cid and time.monotonic() - self.connected_at < RECONNECT_EVERY:
            return
        magic = (0x41727101980).to_bytes(8, "big")
        for _ in range(5):
            answer = await self.exchange(magic + struct.pack(">II", 0, self.next_txid()))
            if answer is not None and answer[:4] == b"\0\0\0\0" and len(answer) == 16:
                self.cid, self.connected_at = answer[8:16], time.monotonic()
                return
        raise RuntimeError("the tracker does not answer UDP connects")


def udp_outcome(answer: bytes | None, action: int) -> str:
    if answer is None:
        return "no_answer"
    kind = struct.unpack_from(">I", answer)[0]
    if kind == 3:
        return "failure"
    if kind != action:
        return f"wrong_action_{kind}"
    if action == 1 and (len(answer) - 20) % 6:
        return "malformed"
    return "ok"


async def udp_worker(
    u: Universe, port: int, stats: Stats, deadline: float, rate: float, seed: int
) -> None:
    rng = random.Random(seed)
    client = UdpSocket(port)
    try:
        while time.monotonic() < deadline:
            await client.ensure_connected()
            txid = client.next_txid()
            if rng.random() < rate:
                kind, data = udp_garbage(client.cid, txid, u, rng)
                client.sock.send(data)
                # Garbage gets no answer, or an error packet; never an announce or scrape.
                try:
                    answer = await asyncio.wait_for(client.loop.sock_recv(client.sock, 65536), 0.2)
                except TimeoutError:
                    answer = None
                if answer is None:
                    outcome = "dropped"
                elif answer[:4] == b"\0\0\0\x03":
                    outcome = "refused"  # an error packet
                else:
                    outcome = "served"  # answered as a request: must never happen
                stats.hostile_outcome(kind, outcome)
                continue
            if rng.random() < 0.1:
                data, action = udp_scrape(client.cid, txid, u, rng), 2
            else:
                data, action = udp_announce(client.cid, txid, rng.choice(u.peers), rng), 1
            t0 = time.perf_counter()
            answer = await client.exchange(data)
            outcome = udp_outcome(answer, action)
            stats.valid[outcome] += 1
            if outcome == "ok":
                stats.latencies.append(time.perf_counter() - t0)
                stats.answers += 1
            elif stats.valid[outcome] <= 5:
                print(f"  unexpected {outcome} for a valid request: {answer!r:.120}", flush=True)
    finally:
        client.close()


async def udp_warm_up(u: Universe, port: int, workers: int) -> float:
    t0 = time.monotonic()
    rng = random.Random(0)
    queue = list(range(len(u.peers)))

    async def one() -> None:
        client = UdpSocket(port)
        try:
            while queue:
                await client.ensure_connected()
                peer = u.peers[queue.pop()]
                answer = await client.exchange(
                    udp_announce(client.cid, client.next_txid(), peer, rng, True)
                )
                assert udp_outcome(answer, 1) == "ok", answer
        finally:
            client.close()

    await asyncio.gather(*(one() for _ in range(workers)))
    return time.monotonic() - t0


async def soak(args: argparse.Namespace, daemon: Daemon) -> dict:
    rng = random.Random(args.seed)
    u = Universe(args.swarms, args.peers, rng)
    rss_start = daemon.rss_mb()
    if args.udp:
        warm = await udp_warm_up(u, daemon.udp_port, args.workers)
    else:
        warm = await warm_up(u, daemon.port, args.workers)
    rss_warm = daemon.rss_mb()
    print(
        f"warm-up: {len(u.peers)} peers in {args.swarms} swarms announced in {warm:.1f} s;"
        f" RSS {rss_start:.1f} -> {rss_warm:.1f} MB",
        flush=True,
    )
    stats = Stats()
    duration = args.seconds if args.minutes is None else args.minutes * 60
    t0 = time.monotonic()
    deadline = t0 + duration
    samples: list[tuple[float, float]] = [(0.0, rss_warm)]
    snapshot = daemon.workdir / "johnlocke.snapshot"
    snapshot_times: set[float] = set()
    slow = asyncio.Semaphore(SLOW_CAP)
    tasks: set = set()

    async def sample_rss() -> None:
        last = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            t = time.monotonic() - t0
            samples.append((t, daemon.rss_mb()))
            with contextlib.suppress(OSError):
                snapshot_times.add(snapshot.stat().st_mtime)
            if t - last >= 30 or time.monotonic() >= deadline:
                last = t
                rate = stats.answers / max(t, 1e-9)
                print(
                    f"  t={t:5.0f} s  RSS {samples[-1][1]:6.1f} MB  answers {stats.answers}"
                    f" ({rate:.0f}/s)  5xx {len(stats.five_xx)}  slow open {stats.slow_open}",
                    flush=True,
                )

    sampler = asyncio.ensure_future(sample_rss())
    if args.udp:
        workers = [
            udp_worker(u, daemon.udp_port, stats, deadline, args.malformed, args.seed * 1000 + i)
            for i in range(args.workers)
        ]
    else:
        workers = [
            worker(
                u, daemon.port, stats, deadline, args.malformed, args.seed * 1000 + i, slow, tasks
            )
            for i in range(args.workers)
        ]
    await asyncio.gather(*workers)
    await sampler
    elapsed = time.monotonic() - t0
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 10)
    for t in tasks:
        t.cancel()
    # Memory settles once the swarms are full and every kind of traffic has been seen (the
    # allocator's pools, the slow connections' buffers, the snapshot thread's arena): flatness
    # is judged from 40% of the soak (at least 30 s in) to its end.
    steady = [s for s in samples if s[0] >= min(duration, max(30.0, duration * 0.4))]
    steady = steady or samples[-1:]
    slope = 0.0
    if len(steady) >= 3:
        xs = [s[0] / 60 for s in steady]
        ys = [s[1] for s in steady]
        slope = statistics.linear_regression(xs, ys).slope
    lat = sorted(stats.latencies)
    hostile_total = sum(sum(c.values()) for c in stats.hostile.values())
    return {
        "duration_s": round(elapsed, 1),
        "workers": args.workers,
        "peers": len(u.peers),
        "swarms": args.swarms,
        "answers": stats.answers,
        "answers_per_s": round(stats.answers / elapsed),
        "latency_ms": {
            "p50": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
            "p99": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
            "max": round(lat[-1] * 1000, 1) if lat else None,
        },
        "valid": dict(stats.valid),
        "hostile_requests": hostile_total,
        "hostile_share": round(
            hostile_total / max(1, hostile_total + sum(stats.valid.values())), 3
        ),
        "hostile": {k: dict(v) for k, v in sorted(stats.hostile.items())},
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "five_xx": len(stats.five_xx),
        "five_xx_samples": stats.five_xx[:5],
        "slow_closed_after_s": {
            k: (round(statistics.median(v), 2), round(max(v), 2)) if v else None
            for k, v in stats.close_times.items()
        },
        "rss_mb": {
            "start": round(rss_start, 1),
            "after_warm_up": round(rss_warm, 1),
            "steady_from": (round(steady[0][0]), round(steady[0][1], 1)),
            "end": round(samples[-1][1], 1),
            "max": round(max(s[1] for s in samples), 1),
            "slope_mb_per_min": round(slope, 3),
        },
        "snapshots_seen_during_soak": len(snapshot_times),
        "rss_samples": [(round(t), round(r, 1)) for t, r in samples],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="soak duration (default 60)")
    p.add_argument("--minutes", type=float, help="soak duration in minutes (overrides --seconds)")
    p.add_argument("--workers", type=int, default=32, help="keep-alive clients (default 32)")
    p.add_argument("--swarms", type=int, default=1000)
    p.add_argument("--peers", type=int, default=20, help="peers per swarm (default 20)")
    p.add_argument("--malformed", type=float, default=0.05, help="hostile share (default 0.05)")
    p.add_argument("--max-connections", type=int, default=512, help="the daemon's cap (512)")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    p.add_argument(
        "--snapshot-interval", type=int, default=20, help="the daemon's (default 20; 0: off)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--udp", action="store_true", help="UDP traffic (BEP 15) instead of HTTP")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory (config, log)")
    args = p.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="johnlocke-soak-"))
    daemon = Daemon(workdir, args)
    code: int | None = None
    try:
        daemon.wait_listening()
        print(
            f"johnlocke pid {daemon.proc.pid} on {HOST}:{daemon.port}; work dir {workdir}",
            flush=True,
        )
        result = asyncio.run(soak(args, daemon))
    finally:
        code = daemon.stop()
    log = daemon.log_text()
    errors = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    final = re.findall(r"final snapshot: .*", log)
    result["daemon_exit_code"] = code
    result["daemon_error_lines"] = len(errors)
    result["daemon_error_samples"] = errors[:5]
    result["final_snapshot"] = final[-1] if final else None
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    rss = result["rss_mb"]
    base = rss["steady_from"][1]
    flat = rss["end"] - base <= max(3.0, 0.05 * base)
    ok = (
        result["five_xx"] == 0
        and not errors
        and code == 0
        and flat
        and result["valid"].get("failure", 0) == 0
        and (not args.udp or sum(result["valid"].values()) == result["valid"].get("ok", 0))
        and not any("served" in outcomes for outcomes in result["hostile"].values())
    )
    print(
        f"RESULT 5xx={result['five_xx']} failures(valid)={result['valid'].get('failure', 0)}"
        f" daemon errors={len(errors)} exit={code} RSS start {rss['start']}, after warm-up"
        f" {rss['after_warm_up']}, at {rss['steady_from'][0]} s {base}, end {rss['end']} MB"
        f" (slope {rss['slope_mb_per_min']} MB/min) answers/s={result['answers_per_s']}:"
        f" {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
