"""Where the daemon's time goes under a benchmark load: py-spy on the real daemon.

    python benchmarks/profile.py [--build compiled|pure] [--scenario announce-ka] [--seconds 20]

Runs ``benchmarks/run.py --servers johnlocke --scenarios SCENARIO`` (the daemon as a user runs
it, filled with benchlib's 1,000 swarms of 100 peers, then wrk with 64 connections: keep-alive
for announce-ka and scrape-ka, one per request for announce-close)
and, once wrk is on, samples the daemon with ``py-spy record --native`` (Python and C frames,
compiled modules included). ``--build pure`` runs the daemon with ``JOHNLOCKE_NO_EXTENSIONS=1``.

Written to ``benchmarks/results/``: the raw samples (``profile-<build>-<time>.raw``, one stack
per line, for flamegraph.pl) and a text summary (``.txt``, also printed): the share of the
event loop thread's samples spent in each part of an announce (inclusive), then the functions
with the most samples of their own. On a shared machine the absolute time is noisy; the shares
are what to compare.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib as bl  # noqa: E402

# The parts of an announce, matched against each frame's function name (Python frames, and the
# C functions Cython generates for the compiled modules).
PARTS = [
    ("aiohttp request handling (all of it)", r"^RequestHandler\._handle_request$"),
    # Compiled, the lean path's frames are named by function alone: matched with their file.
    ("lean path (LeanParser.feed_data)", r"LeanParser[._]feed_data$|^feed_data \(lean\.c"),
    ("  lean answer written (LeanParser._reply)", r"LeanParser[._]_reply$|^_reply \(lean\.c"),
    # Compiled, a coroutine's frames are its generator's C function (a Frontend or Tracker
    # coroutine under this load is announce).
    (
        "announce handler (Frontend.announce / announce_body)",
        r"^Frontend\.announce(_body)?$|^__pyx_gb_9johnlocke_4http_6server_8Frontend_\d+gen",
    ),
    ("  parse (codec.parse_announce)", r"parse_announce$"),
    ("  Tracker.announce", r"^Tracker\.announce$|^__pyx_gb_9johnlocke_7tracker_7Tracker_\d+gen"),
    ("    store (MemoryStore.announce)", r"^MemoryStore\._?announce$|^MemoryStore__announce$"),
    ("      upsert (Swarm.upsert)", r"^Swarm[._]upsert$"),
    ("    strategy (select)", r"\.select$"),
    ("    answer peers (view.compact)", r"^MemoryView[._]compact$"),
    ("  encode (codec.encode_answer)", r"encode_answer$"),
    ("  stats counting (count_client, fail)", r"^Stats\.(count_client|fail)$"),
    ("  web.Response()", r"^Response\.__init__$"),
    ("writing the answer (finish_response)", r"^RequestHandler\.finish_response$"),
    ("reading requests (data_received)", r"^_SelectorSocketTransport\._read_ready$"),
    ("accepting connections", r"^BaseSelectorEventLoop\._accept_connection2?$"),
    ("closing connections (connection_lost)", r"connection_lost$"),
]
MAIN_THREAD = "_run_module_as_main"
_LINE = re.compile(r":\d+$")


def summarise(raw: Path, top: int = 30) -> str:
    own: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    total = 0
    compiled = [(label, re.compile(rx)) for label, rx in PARTS]
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any(f.startswith(MAIN_THREAD) for f in frames[:3]):
            continue  # worker threads (snapshots, access reloads) sleep under this load
        n = int(count)
        total += n
        names = [f.rpartition(" (")[0] or f for f in frames]
        where = _LINE.sub("", frames[-1].rpartition(" (")[2].rstrip(")"))
        own[f"{names[-1]}  [{where}]"] += n
        for label, rx in compiled:
            if any(rx.search(name) for name in names) or any(rx.search(f) for f in frames):
                parts[label] += n
    if not total:
        return "no samples of the event loop thread\n"
    lines = [f"{total} samples of the event loop thread", "", "inclusive share, by part:"]
    for label, _ in PARTS:
        lines.append(f"  {100 * parts[label] / total:5.1f}%  {label}")
    lines += ["", f"top {top} functions by own samples:"]
    for name, n in own.most_common(top):
        lines.append(f"  {100 * n / total:5.1f}%  {name}")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", choices=["compiled", "pure"], default="compiled")
    p.add_argument(
        "--scenario", choices=["announce-ka", "announce-close", "scrape-ka"], default="announce-ka"
    )
    p.add_argument("--seconds", type=int, default=20, help="seconds of sampling")
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--summarise", type=Path, help="only summarise an existing .raw file")
    args = p.parse_args()
    if args.summarise:
        print(summarise(args.summarise), end="")
        return 0
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        print("py-spy is missing: pip install py-spy")
        return 1
    env = {k: v for k, v in os.environ.items() if k != "JOHNLOCKE_NO_EXTENSIONS"}
    if args.build == "pure":
        env["JOHNLOCKE_NO_EXTENSIONS"] = "1"
    bl.RESULTS.mkdir(exist_ok=True)
    stem = bl.RESULTS / f"profile-{args.build}-{args.scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    argv = [sys.executable, str(HERE / "run.py"), "--servers", "johnlocke", "--no-udp"]
    argv += ["--scenarios", args.scenario, "--rounds", "1", "--duration", str(args.seconds + 10)]
    with bl.Processes() as procs:
        run = procs.start(argv, stem.with_suffix(".log"), env=env)
        pid = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and run.poll() is None:
            text = stem.with_suffix(".log").read_text()
            pid = pid or next(iter(re.findall(r"started johnlocke +pid (\d+)", text)), None)
            if pid and f"scenario {args.scenario}" in text:
                break
            time.sleep(0.5)
        else:
            print(f"run.py did not get to the measurement; see {stem.with_suffix('.log')}")
            return 1
        time.sleep(4)  # past run.py's discarded warm-up run of wrk
        spy_argv = [spy, "record", "--native", "-p", pid, "-d", str(args.seconds)]
        spy_argv += ["-r", str(args.rate), "-f", "raw", "-o", str(stem.with_suffix(".raw"))]
        subprocess.run(spy_argv, check=True, capture_output=True, timeout=args.seconds + 60)
        run.wait(timeout=300)
    head = f"profile of the daemon ({args.build} build), {args.scenario} load, {args.seconds} s"
    text = head + "\n" + summarise(stem.with_suffix(".raw"))
    stem.with_suffix(".txt").write_text(text)
    print(text, end="")
    print(f"\nraw samples: {stem.with_suffix('.raw')}; run.py's output: {stem.with_suffix('.log')}")
    return 0


if __name__ == "__main__":
    bl.run_main(main)
