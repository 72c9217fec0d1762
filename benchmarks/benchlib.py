"""Shared pieces of the benchmark scripts: workload, processes, installers, HTTP client, checks.

Nothing here talks to anything but 127.0.0.0/8. Every subprocess is started through a
``Processes`` set that kills the whole process group on exit, on an exception and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
HOST = "127.0.0.1"

# Cores: the tracker under test runs alone on TRACKER_CORE, the load generator on LOAD_CORE.
TRACKER_CORE = 1
LOAD_CORE = 0

USER_AGENT = "libtorrent/2.1.1.0"


def log(msg: str) -> None:
    print(msg, flush=True)


# --- libtorrent-style requests -------------------------------------------------------------

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_QUOTE = [chr(c) if c in _UNRESERVED else f"%{c:02x}" for c in range(256)]


def lt_quote(value: bytes) -> str:
    """Percent-encode as libtorrent does: unreserved characters raw, the rest %xx lower case."""
    return "".join([_QUOTE[c] for c in value])


PIECE = 16384
TORRENT_SIZE = 700 * 1024 * 1024


@dataclass
class Peer:
    peer_id: bytes
    port: int
    key: str
    left: int  # 0 for a seeder

    def query(self, info_hash_q: str, event: str | None, numwant: int) -> str:
        # Same parameters, in the same order, as libtorrent 2.1.1 (see shared/fixtures/clients).
        downloaded = TORRENT_SIZE - self.left
        parts = [
            f"/announce?info_hash={info_hash_q}&peer_id={lt_quote(self.peer_id)}",
            f"&port={self.port}&uploaded=0&downloaded={downloaded}&left={self.left}",
            f"&corrupt=0&key={self.key}",
            f"&event={event}" if event else "",
            f"&numwant={numwant}&compact=1&no_peer_id=1&supportcrypto=1&redundant=0",
        ]
        return "".join(parts)


class Workload:
    """``swarms`` torrents of ``peers`` peers each, ``seed_ratio`` of them seeders (left=0).

    Deterministic for a given seed. Peer ``j`` of a swarm uses port ``first_port + j`` so that
    trackers which key peers by ip:port (opentracker, bittorrent-tracker) see distinct peers even
    though every request comes from 127.0.0.1.
    """

    def __init__(
        self,
        swarms: int,
        peers: int,
        seed_ratio: float = 0.25,
        seed: int = 1,
        first_port: int = 10000,
    ) -> None:
        if peers + first_port > 65536:
            raise ValueError("too many peers per swarm for distinct ports on one IP")
        rng = random.Random(seed)
        self.rng = rng
        self.info_hashes = [rng.randbytes(20) for _ in range(swarms)]
        self.hash_q = [lt_quote(h) for h in self.info_hashes]
        seeders = round(peers * seed_ratio)
        self.seeders_per_swarm = seeders
        self.peers_per_swarm = peers
        self.swarm_peers: list[list[Peer]] = []
        for _ in range(swarms):
            members = []
            for j in range(peers):
                left = 0 if j < seeders else rng.randrange(1, TORRENT_SIZE // PIECE) * PIECE
                members.append(
                    Peer(
                        b"-LT2110-" + rng.randbytes(12),
                        first_port + j,
                        f"{rng.getrandbits(32):08X}",
                        left,
                    )
                )
            self.swarm_peers.append(members)

    def started_paths(self, numwant: int = 50) -> list[str]:
        """One event=started announce per peer, interleaved so every swarm grows together."""
        out = []
        for j in range(self.peers_per_swarm):
            for s, members in enumerate(self.swarm_peers):
                out.append(members[j].query(self.hash_q[s], "started", numwant))
        return out

    def reannounce_paths(self, numwant: int = 50, shuffle_seed: int = 2) -> list[str]:
        """One regular re-announce (no event) per known peer, in a shuffled order."""
        out = [
            p.query(self.hash_q[s], None, numwant)
            for s, members in enumerate(self.swarm_peers)
            for p in members
        ]
        random.Random(shuffle_seed).shuffle(out)
        return out

    def scrape_paths(self, shuffle_seed: int = 3) -> list[str]:
        """One single-info_hash scrape per swarm, shuffled."""
        out = [f"/scrape?info_hash={q}" for q in self.hash_q]
        random.Random(shuffle_seed).shuffle(out)
        return out


def info_hash_of(path: str) -> bytes:
    """The info_hash a request path carries (percent-decoded)."""
    from urllib.parse import unquote_to_bytes

    query = path.partition("?")[2]
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        if name == "info_hash":
            return unquote_to_bytes(value)
    raise ValueError(f"no info_hash in {path[:80]}")


# --- answer checks ------------------------------------------------------------------------


def decode(body: bytes) -> object:
    import bencodepy

    return bencodepy.decode(body)


def check_announce(body: bytes, min_peers: int = 40, expect_total: int | None = None) -> str | None:
    """None if ``body`` is a valid compact announce answer with >= min_peers peers, else why."""
    try:
        d = decode(body)
    except Exception as exc:  # bencodepy raises several types
        return f"not bencode ({exc.__class__.__name__}): {body[:60]!r}"
    if not isinstance(d, dict):
        return "not a dictionary"
    if b"failure reason" in d:
        return f"failure reason: {d[b'failure reason'][:80]!r}"
    peers = d.get(b"peers")
    if not isinstance(peers, bytes):
        return f"peers is not a compact string: {type(peers).__name__}"
    if len(peers) % 6:
        return f"compact peers of {len(peers)} bytes (not a multiple of 6)"
    if len(peers) // 6 < min_peers:
        return f"only {len(peers) // 6} peers (want >= {min_peers})"
    if not isinstance(d.get(b"interval"), int):
        return "no interval"
    if expect_total is not None:
        total = d.get(b"complete", 0) + d.get(b"incomplete", 0)
        if abs(total - expect_total) > max(2, expect_total // 20):
            return f"swarm counts {total}, want ~{expect_total}"
    return None


def check_scrape(
    body: bytes, info_hash: bytes, expect: tuple[int, int] | None = None
) -> tuple[str | None, tuple[int, int] | None]:
    """(error or None, (complete, incomplete) of the single file entry or None)."""
    try:
        d = decode(body)
    except Exception as exc:
        return f"not bencode ({exc.__class__.__name__}): {body[:60]!r}", None
    if not isinstance(d, dict):
        return "not a dictionary", None
    if b"failure reason" in d:
        return f"failure reason: {d[b'failure reason'][:80]!r}", None
    files = d.get(b"files")
    if not isinstance(files, dict) or len(files) != 1:
        return f"files should hold one entry, got {files!r:.80}", None
    ((key, entry),) = files.items()
    counts = (entry.get(b"complete"), entry.get(b"incomplete"))
    if key != info_hash:
        return f"entry key {key[:24]!r} ({len(key)} bytes) is not the requested info_hash", counts
    if expect is not None and counts != expect:
        return f"counts {counts}, want {expect}", counts
    return None, counts


# --- processes ----------------------------------------------------------------------------


def pinned(argv: Sequence[str], core: int | None) -> list[str]:
    if core is None or not shutil.which("taskset"):
        return list(argv)
    return ["taskset", "-c", str(core), *argv]


def cores_ok() -> bool:
    return (os.cpu_count() or 1) >= 2


def add_wait_quiet(p: argparse.ArgumentParser) -> None:
    """``--wait-quiet SECONDS``: every benchmark that measures throughput takes it."""
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for other processes to leave the CPUs idle",
    )


def add_run_args(p: argparse.ArgumentParser, *, swarms: int = 1000, duration: float = 7.0) -> None:
    """The options every throughput benchmark takes: rounds and their length, the workload,
    installing, waiting for a quiet machine, keeping the work directory. ``swarms`` and
    ``duration`` are this benchmark's defaults (pass the same ``duration`` to
    :func:`finish_run_args`)."""
    p.add_argument("--quick", action="store_true", help="1 round of 3 s (a smoke test)")
    p.add_argument(
        "--duration", type=float, help=f"seconds per measurement (default {duration:g}, quick 3)"
    )
    p.add_argument("--rounds", type=int, help="rounds per scenario (default 3, quick 1)")
    p.add_argument("--swarms", type=int, default=swarms, help=f"swarms (default {swarms})")
    p.add_argument("--peers", type=int, default=100, help="peers per swarm (default 100)")
    p.add_argument("--numwant", type=int, default=50)
    p.add_argument("--no-install", action="store_true", help="never apt-get / npm install")
    add_wait_quiet(p)
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")


def pick(p: argparse.ArgumentParser, text: str, allowed: Sequence[str], what: str) -> list[str]:
    """A comma-separated option's names, each checked against ``allowed`` (an unknown one is
    an argparse error naming it, before anything starts)."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    for name in names:
        if name not in allowed:
            p.error(f"unknown {what} {name!r} (known: {', '.join(allowed)})")
    return names


def finish_run_args(
    p: argparse.ArgumentParser,
    a: argparse.Namespace,
    servers: Sequence[str] | None = None,
    duration: float = 7.0,
) -> argparse.Namespace:
    """Defaults that depend on --quick, the --servers list checked against ``servers`` (when the
    benchmark has one)."""
    a.duration = a.duration or (3.0 if a.quick else duration)
    a.rounds = a.rounds or (1 if a.quick else 3)
    if servers is not None:
        a.servers = pick(p, a.servers, servers, "server")
    if not 1 <= a.rounds <= 20 or not 1 <= a.duration <= 300:
        p.error("--rounds must be 1..20 and --duration 1..300")
    return a


def cores(load: str = "the load generator and this script") -> tuple[int | None, int | None, str]:
    """(tracker core, load core, a line saying so); nothing is pinned with fewer than 2 cores."""
    if cores_ok():
        return (
            TRACKER_CORE,
            LOAD_CORE,
            f"servers on core {TRACKER_CORE}, {load} on core {LOAD_CORE}",
        )
    return None, None, "NOT pinned: fewer than 2 cores, figures are not comparable to a 2-core run"


def busy_before(seconds: float = 2.0) -> tuple[float, list[tuple[float, int, str]], str]:
    """Other processes' load before a run: (share of a core, the top ones, a warning or "");
    the warning is printed."""
    other, top = other_load(seconds)
    note = ""
    if other > 0.1:
        note = (
            f"other processes used {other:.0%} of a core in a {seconds:g} s check before the run "
            f"({', '.join(f'{name} {share:.0%}' for share, _pid, name in top[:4])}): "
            "figures will be noisy; see the 'other' column"
        )
        log(f"WARNING: {note}")
    return other, top, note


def write_results(prefix: str, stamp: str, doc: dict) -> Path:
    """``results/PREFIX-STAMP.json``; returns its path."""
    import json

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{prefix}-{stamp}.json"
    out.write_text(json.dumps(doc, indent=1, default=str))
    return out


def banner(title: str) -> None:
    """A section of a benchmark's report: its title between two rules."""
    print("\n" + "=" * 100)
    print(title)
    print("=" * 100, flush=True)


def table_head(head: str) -> None:
    """A table's header line and the rule under it."""
    print(head)
    print("-" * len(head))


def run_main(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s code; Ctrl-C says that every process started has been stopped."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every process this script started has been stopped", flush=True)
        sys.exit(130)


def pin_self(core: int | None) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {core})


class Processes:
    """Every child process, each in its own process group; all are killed on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Processes:
        # SIGTERM (and SIGHUP) become SystemExit so that `finally` blocks run; Ctrl-C is
        # KeyboardInterrupt already.
        def _exit(signum: int, _frame: object) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit)
        # Ctrl-C raises KeyboardInterrupt even when SIGINT was inherited as ignored (nohup, &).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, argv: Sequence[str], log_path: Path, **kw: object) -> subprocess.Popen:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **kw,  # type: ignore[arg-type]
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 5.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(grace)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            try:
                self.stop(proc)
            except Exception as exc:  # keep killing the others
                log(f"  could not stop pid {proc.pid}: {exc}")


def proc_status_kib(pid: int, field_name: str) -> int | None:
    """VmRSS / VmHWM (KiB) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLK
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy so far in processes (user, nice, system) or stolen by
    the hypervisor. Interrupt and softirq time is left out: on loopback it is mostly the
    benchmark's own packets, and it is charged to no process."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[7]) / _CLK


def _rusage_seconds(who: int) -> float:
    import resource

    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """The CPU used during one measurement: by the server under test, by the load generator
    (this script's children), and by everything that is neither ours (``our_pids``, this
    script) nor the load generator's: other processes on the machine. ``stop()`` returns them
    in % of one core: ``server_cpu_pct``, ``load_cpu_pct``, ``other_cpu_pct``."""

    def __init__(self, server_pid: int | None, our_pids: Sequence[int] = ()) -> None:
        import resource

        self.server_pid = server_pid
        self.our_pids = list(our_pids)
        self.children0 = _rusage_seconds(resource.RUSAGE_CHILDREN)
        self.self0 = _rusage_seconds(resource.RUSAGE_SELF)
        self.busy0 = machine_busy_seconds()
        self.ours0 = sum(cpu_seconds(p) or 0.0 for p in self.our_pids)
        self.server0 = cpu_seconds(server_pid) if server_pid else None
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, float | None]:
        import resource

        wall = time.perf_counter() - self.t0
        server1 = cpu_seconds(self.server_pid) if self.server_pid else None
        ours = sum(cpu_seconds(p) or 0.0 for p in self.our_pids) - self.ours0
        busy = machine_busy_seconds() - self.busy0
        load = _rusage_seconds(resource.RUSAGE_CHILDREN) - self.children0
        mine = _rusage_seconds(resource.RUSAGE_SELF) - self.self0
        if not wall:
            return {"server_cpu_pct": None, "load_cpu_pct": None, "other_cpu_pct": None}
        server = None
        if self.server0 is not None and server1 is not None:
            server = round(100 * (server1 - self.server0) / wall, 1)
        return {
            "server_cpu_pct": server,
            "load_cpu_pct": round(100 * load / wall, 1),
            "other_cpu_pct": round(max(0.0, 100 * (busy - ours - load - mine) / wall), 1),
        }


def _all_cpu() -> dict[int, tuple[float, str]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    text = f.read()
                name = text[text.index("(") + 1 : text.rindex(")")]
                with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    name = cmd[:70] or name
                fields = text.rpartition(")")[2].split()
                out[int(entry)] = ((int(fields[11]) + int(fields[12])) / _CLK, name)
            except (OSError, ValueError, IndexError):
                continue
    return out


def other_load(seconds: float = 2.0) -> tuple[float, list[tuple[float, int, str]]]:
    """(share of one core that other processes used over ``seconds``, top [(share, pid, name)])."""
    me = os.getpid()
    before, busy0 = _all_cpu(), machine_busy_seconds()
    time.sleep(seconds)
    after, busy1 = _all_cpu(), machine_busy_seconds()
    top = []
    for pid, (cpu, name) in after.items():
        if pid == me:
            continue
        d = cpu - before.get(pid, (cpu, name))[0]
        if d > 0:
            top.append((d / seconds, pid, name))
    top.sort(reverse=True)
    mine = (after.get(me, (0.0, ""))[0] - before.get(me, (0.0, ""))[0]) / seconds
    return max(0.0, (busy1 - busy0) / seconds - mine), top[:5]


def wait_quiet(limit: float, threshold: float = 0.1) -> bool:
    """Wait up to ``limit`` seconds until other processes use < ``threshold`` of a core."""
    deadline = time.monotonic() + limit
    while True:
        other, top = other_load(3.0)
        if other < threshold:
            log(f"machine is quiet (other processes {other:.0%} of a core)")
            return True
        if time.monotonic() >= deadline:
            log(f"still busy after {limit:.0f} s (other processes {other:.0%} of a core); going on")
            return False
        log(
            f"waiting for a quiet machine: other processes use {other:.0%} of a core "
            f"({top[0][2] if top else '?'})"
        )
        time.sleep(min(15.0, max(0.0, deadline - time.monotonic())))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# --- installing the tools -----------------------------------------------------------------

_apt_updated = False


def _run_quiet(argv: Sequence[str], timeout: float, **kw: object) -> bool:
    try:
        r = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            **kw,  # type: ignore[arg-type]
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"  {' '.join(argv[:4])}: {exc}")
        return False
    if r.returncode != 0:
        log(f"  {' '.join(argv[:4])} failed:\n    " + r.stdout.decode(errors="replace")[-600:])
    return r.returncode == 0


def apt_install(*packages: str) -> bool:
    global _apt_updated
    if not shutil.which("apt-get") or os.geteuid() != 0:
        log(f"  cannot install {' '.join(packages)}: needs apt-get as root")
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        log("  apt-get update")
        _run_quiet(["apt-get", "update"], 300, env=env)
        _apt_updated = True
    log(f"  apt-get install -y {' '.join(packages)}")
    return _run_quiet(["apt-get", "install", "-y", *packages], 600, env=env)


def ensure_command(cmd: str, package: str, install: bool = True) -> str | None:
    """Path of ``cmd``, installing Debian ``package`` if it is missing (and allowed)."""
    path = shutil.which(cmd)
    if path is None and install:
        apt_install(package)
        path = shutil.which(cmd)
        if path is None and Path(f"/usr/sbin/{cmd}").exists():
            path = f"/usr/sbin/{cmd}"
    return path


NPM_DIR = CACHE / "npm"


def ensure_bittorrent_tracker(install: bool = True) -> tuple[Path | None, str]:
    """(directory holding node_modules/bittorrent-tracker, note)."""
    server_js = NPM_DIR / "node_modules" / "bittorrent-tracker" / "server.js"
    if not shutil.which("node") or not shutil.which("npm"):
        if install:
            apt_install("nodejs", "npm")
        if not shutil.which("node") or not shutil.which("npm"):
            return None, "node/npm not available"
    if not server_js.exists():
        if not install:
            return None, "bittorrent-tracker not in the cache and --no-install given"
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        log(f"  npm install bittorrent-tracker --ignore-scripts (into {NPM_DIR})")
        ok = _run_quiet(
            [
                "npm",
                "install",
                "bittorrent-tracker",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(NPM_DIR),
            ],
            600,
        )
        if not ok or not server_js.exists():
            return None, "npm install bittorrent-tracker failed"
    version = "?"
    with contextlib.suppress(Exception):
        import json

        pkg = server_js.parent / "package.json"
        version = json.loads(pkg.read_text())["version"]
    # The launcher must sit next to node_modules for `import 'bittorrent-tracker/server'`.
    shutil.copy(HERE / "bittorrent_tracker_server.mjs", NPM_DIR / "server.mjs")
    return NPM_DIR, f"bittorrent-tracker {version}, node {_version(['node', '--version'])}"


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, timeout=10).stdout.decode()
        return out.strip().splitlines()[0] if out.strip() else "?"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def deb_version(package: str) -> str:
    out = _version(["dpkg-query", "-W", "-f=${Version}", package])
    return out


# --- the servers under test ---------------------------------------------------------------


@dataclass
class Server:
    """One HTTP server under test, started pinned to the tracker core."""

    name: str
    kind: str  # johnlocke | bare | opentracker | bittorrent-tracker
    argv: list[str]
    port: int
    workdir: Path
    keepalive: bool = True
    note: str = ""
    env: dict[str, str] | None = None
    proc: subprocess.Popen | None = None
    log_path: Path = field(default=Path("/dev/null"))

    @property
    def is_tracker(self) -> bool:
        return self.kind != "bare"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, procs: Processes, timeout: float = 20.0) -> str | None:
        """Start and wait until it accepts connections; None on success, else why not."""
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc = procs.start(self.argv, self.log_path, cwd=self.workdir, env=self.env)
        if not wait_listening(self.port, self.proc, timeout):
            why = f"did not start listening on {HOST}:{self.port}"
            if self.proc.poll() is not None:
                why = f"exited with {self.proc.returncode}"
            procs.stop(self.proc)
            return f"{why}; log:\n{tail(self.log_path)}"
        return None

    def rss_kib(self) -> int | None:
        return proc_status_kib(self.pid, "VmRSS")

    def hwm_kib(self) -> int | None:
        return proc_status_kib(self.pid, "VmHWM")


def python_env() -> dict[str, str]:
    """The environment for Python children: this checkout's johnlocke comes first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("PYTHONASYNCIODEBUG", None)
    return env


def johnlocke_server(
    name: str,
    workdir: Path,
    event_loop: str = "asyncio",
    core: int | None = TRACKER_CORE,
    extra_toml: str = "",
    udp_port: int | None = None,
    pure: bool = False,
    http_toml: str = "",
    snapshot: bool = True,
) -> Server:
    """JohnLocke on a free HTTP port; its UDP tracker on ``udp_port``, or off when None (so that
    HTTP benchmarks measure the same daemon as before it had one). ``pure``: the pure-Python
    build (``JOHNLOCKE_NO_EXTENSIONS=1``), else the build the environment chooses (compiled
    if the checkout has its binaries and JOHNLOCKE_NO_EXTENSIONS is not set). ``http_toml``:
    more ``[http]`` keys (lines); ``snapshot=False``: no snapshot carried from one start to the
    next; ``extra_toml``: more tables, written last."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"{name}.toml"
    udp = "enabled = false" if udp_port is None else f"port = {udp_port}"
    # Each server its own snapshot file: two daemons may not share one (the lock).
    state = f"{name}.snapshot" if snapshot else ""
    config.write_text(
        "# Written by benchmarks/: JohnLocke as a user would run it, defaults otherwise.\n"
        f'[http]\nhost = "{HOST}"\nport = {port}\nevent_loop = "{event_loop}"\n{http_toml}'
        f"[udp]\n{udp}\n"
        f'[state]\npath = "{state}"\n{extra_toml}'
    )
    argv = pinned([sys.executable, "-m", "johnlocke", "--config", str(config)], core)
    env = python_env()
    if pure:
        env["JOHNLOCKE_NO_EXTENSIONS"] = "1"
    note = f"event_loop={event_loop}, {'pure Python' if pure else 'as built'}"
    return Server(name, "johnlocke", argv, port, workdir, note=note, env=env)


def bare_server(
    name: str, workdir: Path, event_loop: str, scrape_hash: bytes, core: int | None = TRACKER_CORE
) -> Server:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = pinned(
        [
            sys.executable,
            str(HERE / "bare_server.py"),
            "--port",
            str(port),
            "--loop",
            event_loop,
            "--scrape-hash",
            scrape_hash.hex(),
        ],
        core,
    )
    return Server(
        name,
        "bare",
        argv,
        port,
        workdir,
        note=f"fixed body, event_loop={event_loop}",
        env=python_env(),
    )


def opentracker_server(
    workdir: Path,
    info_hashes: Sequence[bytes],
    core: int | None = TRACKER_CORE,
    udp_port: int | None = None,
) -> Server:
    """Debian's opentracker: whitelist-only, chroots to its rootdir, refuses to run as root.
    With ``udp_port`` it serves UDP there too."""
    port = free_port()
    root = workdir / "opentracker-root"
    root.mkdir(parents=True, exist_ok=True)
    (root / "whitelist.txt").write_text("".join(h.hex() + "\n" for h in info_hashes))
    lines = [
        f"listen.tcp {HOST}:{port}",
        *([f"listen.udp {HOST}:{udp_port}"] if udp_port is not None else []),
        # The whitelist is read after the chroot, so its path is relative to tracker.rootdir.
        "access.whitelist /whitelist.txt",
        f"tracker.rootdir {root}",
    ]
    if os.geteuid() == 0:
        lines.append("tracker.user nobody")  # it drops root for this user after the chroot
    conf = root / "opentracker.conf"
    conf.write_text("\n".join(lines) + "\n")
    for p in (root, root / "whitelist.txt", conf):
        p.chmod(0o755 if p.is_dir() else 0o644)
    # Make the path down to the rootdir traversable for the unprivileged user.
    for parent in root.parents:
        if parent == Path("/"):
            break
        with contextlib.suppress(OSError):
            parent.chmod(parent.stat().st_mode | 0o011)
    argv = pinned(["opentracker", "-f", str(conf)], core)
    return Server(
        "opentracker",
        "opentracker",
        argv,
        port,
        workdir,
        keepalive=False,
        note=f"Debian {deb_version('opentracker')}; closes the connection after every answer",
    )


def bittorrent_tracker_server(
    npm_dir: Path,
    workdir: Path,
    note: str,
    peers_cache: int = 1000,
    core: int | None = TRACKER_CORE,
    udp: bool = False,
) -> Server:
    """The npm bittorrent-tracker over HTTP, or with ``udp`` over UDP only (on a free UDP port,
    given as the server's ``port``)."""
    port = free_port(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    argv = pinned(
        [
            "node",
            str(npm_dir / "server.mjs"),
            "--udp" if udp else "--port",
            str(port),
            "--host",
            HOST,
            "--peers-cache",
            str(peers_cache),
        ],
        core,
    )
    srv = Server("bittorrent-tracker", "bittorrent-tracker", argv, port, workdir, note=note)
    return srv


# --- a small HTTP/1.1 client for fills and checks -----------------------------------------


class HttpError(Exception):
    pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, server will close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    first = lines[0].split(None, 2)
    if len(first) < 2 or not first[0].startswith(b"HTTP/"):
        raise HttpError(f"bad status line {lines[0][:60]!r}")
    status = int(first[1])
    close = first[0] == b"HTTP/1.0"
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            v = value.strip().lower()
            close = v == b"close" or (close and v != b"keep-alive")
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            raise HttpError("chunked answers are not supported by this client")
    if length is None:
        return status, await reader.read(), True
    return status, await reader.readexactly(length), close


@dataclass
class FetchStats:
    answered: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    timed_out: bool = False


async def fetch_all(
    port: int,
    paths: Sequence[str],
    on_answer: Callable[[int, int, bytes], None],
    *,
    connections: int = 64,
    depth: int = 8,
    keepalive: bool = True,
    source_ip: str | None = None,
    timeout: float = 600.0,
    tls: ssl.SSLContext | None = None,
) -> FetchStats:
    """GET every path once, ``connections`` at a time; ``on_answer(index, status, body)``.

    Keep-alive connections pipeline up to ``depth`` requests; without keep-alive every request
    gets its own connection (``Connection: close``). An answer that never comes is sent again
    on a new connection (at most a few times), and the whole call is bounded by ``timeout``
    (``timed_out`` is then set in the stats returned). With ``tls``, over HTTPS.
    """
    host_hdr = f"Host: {HOST}:{port}\r\nUser-Agent: {USER_AGENT}\r\nAccept-Encoding: gzip\r\n"
    tail_hdr = "\r\n" if keepalive else "Connection: close\r\n\r\n"
    if not keepalive:
        depth = 1
    stats = FetchStats()
    state = {"next": 0}
    n = len(paths)
    max_retries = 20 + n // 100

    def build(i: int) -> bytes:
        return f"GET {paths[i]} HTTP/1.1\r\n{host_hdr}{tail_hdr}".encode()

    async def worker() -> None:
        pending: deque[int] = deque()
        reader = writer = None
        try:
            while True:
                if writer is None:
                    if not pending and state["next"] >= n:
                        return
                    local = (source_ip, 0) if source_ip else None
                    reader, writer = await asyncio.open_connection(
                        HOST,
                        port,
                        local_addr=local,
                        limit=1 << 20,
                        ssl=tls,
                        server_hostname=HOST if tls else None,
                    )
                    if pending:
                        writer.write(b"".join(build(i) for i in pending))
                while len(pending) < depth and state["next"] < n:
                    i = state["next"]
                    state["next"] = i + 1
                    pending.append(i)
                    writer.write(build(i))
                if not pending:
                    return
                try:
                    await writer.drain()
                    status, body, close = await asyncio.wait_for(_read_response(reader), 30)
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                    writer.close()
                    reader = writer = None
                    stats.reconnects += 1
                    if stats.reconnects > max_retries:
                        raise HttpError(f"too many broken connections ({exc!r})") from exc
                    continue
                on_answer(pending.popleft(), status, body)
                stats.answered += 1
                if close or not keepalive:
                    writer.close()
                    reader = writer = None
                    if pending:
                        stats.reconnects += 1
        finally:
            if writer is not None:
                writer.close()

    t0 = time.perf_counter()
    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(connections, n)))]
    try:
        await asyncio.wait_for(asyncio.gather(*workers), timeout)
    except TimeoutError:
        stats.timed_out = True
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    stats.seconds = time.perf_counter() - t0
    return stats


def run_async(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine on uvloop when available (the client is then less of a bottleneck)."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def fmt_bytes_kib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"
