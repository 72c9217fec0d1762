"""CPU per announce in-process, compiled build against pure Python, side by side in one run.

    python benchmarks/inprocess.py [--rounds 7] [--announces 50000] [--baseline DIR]

The request path minus the socket: raw query bytes -> ``codec.parse_announce`` ->
``Tracker.announce`` (memory store, ``random`` strategy) -> ``codec.encode_answer``, on
benchlib's workload (1,000 swarms of 100 peers, 25% seeders, libtorrent-style queries with
numwant=50 and compact=1, all from 127.0.0.1). Each build runs in its own process (the pure one
with ``JOHNLOCKE_NO_EXTENSIONS=1``), both pinned to the same core; after the warm-up (every peer
announces once) they take turns, round by round, so both see the same machine. A round is
``--announces`` re-announces in a shuffled order, timed with the process's own CPU clock, and
every answer of the round is checked to carry peers. Printed: the median CPU per announce, every
round, and the ratio to pure Python.

``--baseline DIR`` adds a process running the checkout in DIR as pure Python (for example
``git worktree add /tmp/jl-main main``): the pure build before and after a change; ``--compare
DIR`` one running DIR as it is built (compiled if it has its binaries). Figures go to
``benchmarks/results/inprocess-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib as bl  # noqa: E402

TARGET_US = 5.0
PACKED_LOCALHOST = bytes([127, 0, 0, 1])


def queries(swarms: int, peers: int) -> tuple[list[bytes], list[bytes]]:
    """(started, re-announces): the raw query bytes of benchlib's workload."""
    wl = bl.Workload(swarms, peers)

    def raw(paths: list[str]) -> list[bytes]:
        return [p.partition("?")[2].encode() for p in paths]

    return raw(wl.started_paths()), raw(wl.reannounce_paths())


async def child(tree: Path, swarms: int, peers: int, announces: int) -> None:
    """One build: warm up, then measure a round each time the parent writes a line."""
    sys.path.insert(0, str(tree))
    import johnlocke
    from johnlocke.config import validate
    from johnlocke.http import codec
    from johnlocke.store.memory import MemoryStore
    from johnlocke.tracker import Tracker

    compiled = getattr(johnlocke, "compiled", None)  # absent before the compiled build existed
    build = compiled.describe() if compiled else "pure Python (before the compiled build)"
    started, again = queries(swarms, peers)
    tracker = Tracker(validate({}), MemoryStore())
    tid = tracker.tracker_id
    parse, encode, announce = codec.parse_announce, codec.encode_answer, tracker.announce
    ip = PACKED_LOCALHOST
    for q in started:
        await announce(parse(q), ip)
    print(json.dumps({"ready": build, "file": codec.__file__}), flush=True)
    start = 0
    for _ in sys.stdin:
        batch = (again[start:] + again[:start])[:announces]
        start = (start + announces) % len(again)
        bodies = []
        t0 = time.process_time()
        for q in batch:
            bodies.append(encode(await announce(parse(q), ip), tid))
        cpu = time.process_time() - t0
        short = sum(1 for b in bodies if b.find(b"5:peers300:") < 0)  # 50 peers of 6 bytes
        print(json.dumps({"us": cpu / len(batch) * 1e6, "short": short}), flush=True)


class Runner:
    """A child process for one build, driven a round at a time over its stdin and stdout."""

    def __init__(self, label: str, tree: Path, env: dict[str, str], args: argparse.Namespace):
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(tree),
            "--swarms",
            str(args.swarms),
            "--peers",
            str(args.peers),
            "--announces",
            str(args.announces),
        ]
        core = bl.TRACKER_CORE if bl.cores_ok() else None
        self.label = label
        self.proc = subprocess.Popen(
            bl.pinned(argv, core),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tree,
        )
        self.rounds: list[float] = []
        self.short = 0

    def ready(self) -> dict:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"{self.label}: the child process failed")
        return json.loads(line)

    def round(self) -> None:
        self.proc.stdin.write("go\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        result = json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]
        self.rounds.append(result["us"])
        self.short += result["short"]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--announces", type=int, default=50_000, help="re-announces per round")
    p.add_argument("--swarms", type=int, default=1000)
    p.add_argument("--peers", type=int, default=100)
    p.add_argument("--baseline", type=Path, help="another checkout, run as pure Python too")
    p.add_argument("--compare", type=Path, help="another checkout, run as it is built")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.swarms, args.peers, args.announces))
        return 0

    base = {k: v for k, v in os.environ.items() if k not in ("JOHNLOCKE_NO_EXTENSIONS",)}
    pure = base | {"JOHNLOCKE_NO_EXTENSIONS": "1"}
    busy, top = bl.other_load()  # before our own children start
    runners = [Runner("compiled", bl.REPO, base, args), Runner("pure", bl.REPO, pure, args)]
    if args.baseline:
        runners.append(Runner("baseline", args.baseline.resolve(), pure, args))
    if args.compare:
        runners.append(Runner("compare", args.compare.resolve(), base, args))
    print(
        f"in-process announce: parse + Tracker.announce + encode, {args.swarms:,} swarms x"
        f" {args.peers} peers, numwant=50; {args.rounds} rounds of {args.announces:,}"
        f" announces per build, turn by turn, pinned to one core"
    )
    if busy > 0.25:
        print(f"WARNING: other processes use {busy:.0%} of a core: {top[:3]}")
    try:
        builds = {}
        for r in runners:
            info = r.ready()
            builds[r.label] = info
            print(f"  {r.label:<9} {info['ready']}  ({Path(info['file']).name})")
        if not builds["compiled"]["ready"].startswith("compiled"):
            print("  NOTE: the compiled build is not available, both columns are pure Python")
        for i in range(args.rounds):
            # Rotate who goes first, so neither build always follows the other.
            for r in runners[i % len(runners) :] + runners[: i % len(runners)]:
                r.round()
    finally:
        for r in runners:
            r.close()
    pure_us = statistics.median(runners[1].rounds)
    print(f"\n  {'build':<10}{'CPU/announce':>14}{'announces/s':>13}{'vs pure':>9}   rounds (us)")
    rows = []
    for r in runners:
        med = statistics.median(r.rounds)
        rounds = " ".join(f"{x:.1f}" for x in r.rounds)
        print(f"  {r.label:<10}{med:>11.2f} us{1e6 / med:>13,.0f}{pure_us / med:>8.2f}x   {rounds}")
        rows.append({"build": r.label, "describe": builds[r.label]["ready"], "median_us": med,
                     "rounds_us": r.rounds, "short_answers": r.short})  # fmt: skip
    spread = max((max(r.rounds) - min(r.rounds)) / statistics.median(r.rounds) for r in runners)
    print(f"  noise: rounds of one build differ by up to {spread:.0%}")
    compiled_us = statistics.median(runners[0].rounds)
    met = "MET" if compiled_us <= TARGET_US else "NOT MET"
    print(f"\n  target: compiled <= {TARGET_US:g} us per announce: {compiled_us:.2f} us, {met}")
    if args.baseline:
        before = statistics.median(next(r for r in runners if r.label == "baseline").rounds)
        verdict = "MET" if pure_us <= before * 1.03 else "NOT MET"
        print(
            f"  target: pure no slower than before: {pure_us:.2f} us against {before:.2f} us"
            f" ({pure_us / before:.2f}x), {verdict} (3% allowed for noise)"
        )
    bad = sum(r.short for r in runners)
    if bad:
        print(f"  INVALID: {bad} answers carried fewer than 50 peers")
    out = bl.write_results(
        "inprocess",
        time.strftime("%Y%m%d-%H%M%S"),
        {"args": vars(args), "other_load": busy, "results": rows},
    )
    print(f"  figures: {out.relative_to(bl.REPO)}")
    return 1 if bad else 0


if __name__ == "__main__":
    random.seed(0)
    bl.run_main(main)
