"""What [access] and [limits] cost per announce, measured on Tracker.announce (no HTTP).

    python benchmarks/access_overhead.py [--announces 200000] [--peers 20000] [--swarms 200]

Each configuration replays the same announces against a fresh tracker: a fixed population of
peers, each with its own address and swarm, announcing again and again (the steady state; every
peer joined once before the clock starts). The figure is the mean time of one
``Tracker.announce`` call (numwant=50), best of a few runs. "open" is the default config (no
access checks at all); the others add: a 100k-hash allow list and a 1k-hash deny list in listed
mode; private mode with 10k passkeys and client rules; hybrid torrents (every swarm aliased,
answers filtered by hash version); every abuse limit on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

from johnlocke.access import Access
from johnlocke.config import validate
from johnlocke.http.codec import encode_answer, parse_announce
from johnlocke.store.memory import MemoryStore
from johnlocke.tracker import Tracker


def esc(raw: bytes) -> str:
    return "".join(f"%{b:02x}" for b in raw)


async def setup(
    sections: dict, base: Path, queries: list[tuple[bytes, bytes]]
) -> tuple[Tracker, list]:
    """A tracker for the config, with every peer already announced once with every query
    it will send (a hybrid client has announced both hashes: the steady state)."""
    config = validate(sections, "bench")
    store = MemoryStore()
    access = Access(config, store, base)
    await access.start()
    await access.stop()  # no rescans while measuring
    tracker = Tracker(config, store, access)
    reqs = [(parse_announce(q), ip) for q, ip in queries]
    seen = set()
    for req, ip in reqs:
        if (req.peer_id, req.info_hash) not in seen:
            seen.add((req.peer_id, req.info_hash))
            await tracker.announce(req, ip)
    return tracker, reqs


async def timed(tracker: Tracker, reqs: list) -> float:
    announce = tracker.announce
    tid = tracker.tracker_id
    t0 = time.perf_counter()
    for req, ip in reqs:
        encode_answer(await announce(req, ip), tid)
    return (time.perf_counter() - t0) / len(reqs) * 1e6


def hybrid_torrent(folder: Path, n: int) -> tuple[bytes, bytes]:
    import hashlib

    import bencodepy

    info = {
        b"name": b"t%d" % n,
        b"piece length": 16384,
        b"length": 1,
        b"pieces": os.urandom(20),
        b"meta version": 2,
        b"file tree": {b"f": {b"": {b"length": 1, b"pieces root": os.urandom(32)}}},
    }
    raw = bencodepy.encode(info)
    (folder / f"{n}.torrent").write_bytes(bencodepy.encode({b"info": info}))
    return hashlib.sha1(raw).digest(), hashlib.sha256(raw).digest()[:20]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--announces", type=int, default=200_000)
    ap.add_argument("--swarms", type=int, default=200)
    ap.add_argument("--peers", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        folder = base / "torrents"
        folder.mkdir()
        pairs = [hybrid_torrent(folder, n) for n in range(args.swarms)]
        hashes = [v1 for v1, _ in pairs]
        allow = hashes + [os.urandom(20) for _ in range(100_000 - len(hashes))]
        (base / "allow.txt").write_text("".join(h.hex() + "\n" for h in allow))
        (base / "deny.txt").write_text("".join(os.urandom(20).hex() + "\n" for _ in range(1000)))
        keys = [os.urandom(16).hex() for _ in range(10_000)]
        (base / "keys.txt").write_text("".join(k + "\n" for k in keys))

        peers = [b"-qB4650-" + os.urandom(6).hex().encode()[:12] for _ in range(args.peers)]
        ips = [(0x0A000000 + i).to_bytes(4, "big") for i in range(args.peers)]
        plain, keyed, hybrid = [], [], []
        for i in range(args.announces):
            peer = rng.randrange(args.peers)
            n = peer % args.swarms
            left = 0 if peer % 3 == 0 else 5
            q = f"info_hash={esc(hashes[n])}&peer_id={esc(peers[peer])}&port=6881"
            q += f"&left={left}&compact=1&numwant=50"
            ip = ips[peer]
            plain.append((q.encode(), ip))
            keyed.append(((q + "&passkey=" + keys[peer % len(keys)]).encode(), ip))
            h = pairs[n][i % 2]  # as libtorrent 2 does: both hashes in turn
            hybrid.append((q.replace(esc(hashes[n]), esc(h)).encode(), ip))

        configs = [
            ("open (default)", {}, plain),
            (
                "listed: 100k allow list, 1k deny list",
                {"access": {"mode": "listed", "allow_list": "allow.txt", "deny_list": "deny.txt"}},
                plain,
            ),
            (
                "private: 10k passkeys + client rules",
                {
                    "access": {
                        "mode": "private",
                        "allow_list": "allow.txt",
                        "passkeys": "keys.txt",
                        "client_allow": ["-qB", "-TR", "-lt", "-DE"],
                        "client_deny": ["-XL", "-SD"],
                    }
                },
                keyed,
            ),
            (
                "open + hybrid torrents (both hashes)",
                {"access": {"torrents_dir": "torrents"}},
                hybrid,
            ),
            (
                "open + every abuse limit (all held)",
                {
                    "announce": {"interval": 1800, "min_interval": 900},
                    "limits": {
                        "enforce_min_interval": True,
                        "max_peers_per_ip": 4,
                        "max_new_swarms_per_ip": 30,
                    },
                },
                plain,
            ),
        ]
        print(f"{args.announces} announces, {args.peers} peers in {args.swarms} swarms")
        runs = [(name, *await setup(sections, base, qs)) for name, sections, qs in configs]
        best = {name: float("inf") for name, _, _ in runs}
        for _ in range(args.rounds):  # interleaved, so machine noise hits every config alike
            for name, tracker, reqs in runs:
                best[name] = min(best[name], await timed(tracker, reqs))
        baseline = best[runs[0][0]]
        for name, us in best.items():
            print(f"{name:42s} {us:6.2f} us/announce  ({us - baseline:+.2f})")


if __name__ == "__main__":
    asyncio.run(main())
