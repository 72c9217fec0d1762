"""Announce throughput per built-in strategy: what the choice of strategy costs on the hot path.

    python benchmarks/strategies.py [--seconds 3]

Runs the real request path minus the socket (raw query bytes -> ``codec.parse_announce`` ->
``Tracker.announce`` -> bencoded answer) in this process, on the same swarms for every
strategy, alternating strategies round by round, and prints announces/s and the ratio to
``random``. Two shapes: one swarm of 10,000 peers, and 1,000 swarms of 100 peers; 25% seeders,
numwant=50, compact=1, like a libtorrent client. Every answer is checked to carry peers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

import bencodepy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from johnlocke.config import validate  # noqa: E402
from johnlocke.http import codec as protocol  # noqa: E402
from johnlocke.store.memory import MemoryStore  # noqa: E402
from johnlocke.tracker import Tracker  # noqa: E402

STRATEGIES = {
    "random": {},
    "opposite-role": {},
    "locality": {},
    "small-group": {},  # swarms are larger than max_peers: measures the size check + random
    "recent": {},
    "spread": {},
}
UNRESERVED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")


def escape(raw: bytes) -> str:
    """Percent-encode as libtorrent does: unreserved bytes raw, the rest %xx."""
    return "".join(chr(b) if b in UNRESERVED else f"%{b:02x}" for b in raw)


def make_queries(swarms: int, per_swarm: int, rng: random.Random) -> list[tuple[bytes, bytes]]:
    out = []
    for _ in range(swarms):
        ih = rng.randbytes(20)
        for j in range(per_swarm):
            peer_id = b"-qB4520-" + rng.randbytes(12)
            left = 0 if j < per_swarm // 4 else 1000
            query = (
                f"info_hash={escape(ih)}&peer_id={escape(peer_id)}&port={1024 + j}&uploaded=0"
                f"&downloaded=0&left={left}&corrupt=0&key=C8A8CF6D&numwant=50&compact=1"
                f"&no_peer_id=1&supportcrypto=1&redundant=0"
            ).encode()
            # Peers spread over many /24s, a few sharing one, so locality has work to do.
            ip = bytes([10, rng.randrange(4), rng.randrange(256), rng.randrange(1, 255)])
            out.append((query, ip))
    return out


async def measure(name: str, queries, seconds: float) -> float:
    config = validate({"strategy": {"name": name, "options": STRATEGIES[name]}})
    tracker = Tracker(config, MemoryStore())
    tid = tracker.tracker_id
    for query, ip in queries:  # warm-up: every peer joins
        await tracker.announce(protocol.parse_announce(query), ip)
    req = protocol.parse_announce(queries[0][0])
    body = protocol.encode_answer(await tracker.announce(req, queries[0][1]), tid)
    answer = bencodepy.decode(body)
    assert len(answer[b"peers"]) >= 6 * 40, f"{name}: only {len(answer[b'peers']) // 6} peers"
    parse, encode = protocol.parse_announce, protocol.encode_answer
    order = list(range(len(queries)))
    random.Random(7).shuffle(order)
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for i in order[:2000]:
            query, ip = queries[i]
            encode(await tracker.announce(parse(query), ip), tid)
        done += 2000
        order = order[2000:] + order[:2000]
    return done / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per strategy per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    shapes = {
        "1 swarm x 10,000 peers": make_queries(1, 10_000, rng),
        "1,000 swarms x 100 peers": make_queries(1000, 100, rng),
    }
    print(
        f"python {sys.version.split()[0]}, pid {os.getpid()}, {args.rounds} rounds of"
        f" {args.seconds:g} s, in-process (no HTTP)"
    )
    for shape, queries in shapes.items():
        results: dict[str, list[float]] = {name: [] for name in STRATEGIES}
        for _ in range(args.rounds):
            for name in STRATEGIES:
                results[name].append(await measure(name, queries, args.seconds))
        base = statistics.median(results["random"])
        print(f"\n{shape}")
        print(f"  {'strategy':<15}{'announces/s':>14}{'vs random':>11}")
        for name, values in results.items():
            rate = statistics.median(values)
            print(f"  {name:<15}{rate:>14,.0f}{rate / base:>10.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
