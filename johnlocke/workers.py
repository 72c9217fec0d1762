"""Several tracker processes on the same ports: the supervisor, and what a worker needs to know.

Theory of operation
-------------------
``johnlocke --workers N`` (or ``[workers] count = N``) makes the process a supervisor: it opens
no socket and no store connection, and starts N workers, each the ordinary daemon
(``python -m johnlocke --config PATH``) with a ``JOHNLOCKE_WORKER`` environment telling it which
worker it is. Every worker binds the configured ports itself with ``SO_REUSEPORT``, so the
kernel spreads connections (and UDP datagrams) over them, and keeps its own store connection;
the swarms are shared because the store is Redis (``workers > 1`` with the memory store is
refused at start-up: every process would have swarms of its own).

The supervisor forwards SIGTERM/SIGINT (every worker stops cleanly, then it exits) and SIGHUP
(every worker re-reads the configuration). A worker that dies is logged and started again, after
a delay that doubles from 0.5 s to 30 s while it keeps dying within 10 s of its start. A worker
that fails before it ever listened, at the first start, stops the whole tracker with its exit
code (a port in use or a bad file would fail every time). Each worker watches a pipe from the
supervisor and stops by itself if the supervisor disappears (``kill -9``), so no worker outlives
it.

What a worker is told (``WorkerContext``, from the environment): its number and the count; the
port (the supervisor picks one when the configuration says 0, so all workers share it); file
descriptors to signal "listening" and to watch the supervisor; and a random secret shared by all
workers of this start, ``udp_secret``, for the UDP frontend's connection ids (BEP 15): a client
may send its announce to another worker than the one that gave it the id, so every worker must
be able to check every id. The UDP frontend binds with ``reuse_port=context.reuse_port`` and
takes its secret from ``context.udp_secret`` (None when there is a single process).

Per-worker figures: each worker's request counters stay its own; ``WorkerBoard`` publishes them
to Redis every ``interval`` seconds and reads every worker's, so ``/stats`` and ``/metrics`` of
any worker list all of them (``johnlocke_worker_*{worker="host:port/N"}``), including those of
other trackers sharing the same Redis and prefix. Swarm counts come from the store, which already
sees the whole tracker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from johnlocke import detach
from johnlocke.config import Config, ConfigError
from johnlocke.flags import Settings
from johnlocke.service import cancel_task

log = logging.getLogger("johnlocke.workers")

ENV = "JOHNLOCKE_WORKER"  # "index/count"
ENV_PORT = "JOHNLOCKE_WORKER_PORT"
ENV_FDS = "JOHNLOCKE_WORKER_FDS"  # "ready_fd,parent_fd"
ENV_UDP_SECRET = "JOHNLOCKE_UDP_SECRET"  # hex

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_QUICK_DEATH = 10.0  # a worker that dies sooner than this after its start backs off further
_POLL = 0.1


@dataclass
class WorkerContext:
    """What a worker process knows about its place among the others."""

    index: int
    count: int
    port: int | None  # overrides [http] port (the supervisor chose one for port = 0)
    udp_secret: bytes | None  # shared by every worker: UDP connection ids (BEP 15)
    ready_fd: int | None
    parent_fd: int | None

    @property
    def reuse_port(self) -> bool:
        return self.count > 1

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WorkerContext | None:
        env = dict(os.environ) if env is None else env
        spec = env.get(ENV)
        if not spec:
            return None
        index, _, count = spec.partition("/")
        fds = [int(f) for f in env.get(ENV_FDS, "").split(",") if f]
        secret = env.get(ENV_UDP_SECRET)
        port = env.get(ENV_PORT)
        return cls(
            int(index),
            int(count or 1),
            int(port) if port else None,
            bytes.fromhex(secret) if secret else None,
            fds[0] if fds else None,
            fds[1] if len(fds) > 1 else None,
        )

    def signal_ready(self) -> None:
        """Tell the supervisor this worker listens (once)."""
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, b"1")
                os.close(self.ready_fd)
            self.ready_fd = None

    def watch_parent(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        """Stop this worker when the supervisor's end of the pipe closes (it died)."""
        fd = self.parent_fd
        if fd is None:
            return

        def readable() -> None:
            try:
                data = os.read(fd, 64)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                log.error("the supervisor is gone: worker %d stops", self.index)
                stop.set()

        loop.add_reader(fd, readable)


def tag_logs(index: int) -> None:
    """Mark this worker's log lines: ``johnlocke.http[w1]`` in text, ``"worker": 1`` in JSON."""

    class _Tag(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if not hasattr(record, "worker"):
                record.worker = index
                record.name = f"{record.name}[w{index}]"
            return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(_Tag())


# --- the supervisor -------------------------------------------------------------------------


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_r: int | None = None
        self.parent_w: int | None = None
        self.started = 0.0
        self.ready = False
        self.delay = _BACKOFF_FIRST
        self.restart_at: float | None = None

    def close_fds(self) -> None:
        for fd in (self.ready_r, self.parent_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.ready_r = self.parent_w = None


def _free_port(hosts: Sequence[str]) -> int:
    """A TCP and UDP port free on every configured address (for port = 0 with workers)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        try:
            for host in hosts:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
                    with socket.socket(fam, kind) as t:
                        t.bind((host, port))
        except OSError:
            continue
        return port
    raise OSError("no free port found for the workers")


class Supervisor:
    def __init__(
        self, settings: Settings, config: Config, count: int, argv: Sequence[str], cwd: str
    ) -> None:
        self.settings = settings
        self.config = config
        self.count = count
        self.argv = list(argv)  # the supervisor's own command line, less its process options
        self.cwd = cwd
        self.workers = [_Worker(i) for i in range(1, count + 1)]
        self.secret = os.urandom(32)
        self.port = 0
        self._signals: list[int] = []

    def _spawn(self, w: _Worker) -> None:
        ready_r, ready_w = os.pipe()
        parent_r, parent_w = os.pipe()
        env = dict(os.environ)
        env[ENV] = f"{w.index}/{self.count}"
        env[ENV_PORT] = str(self.port)
        env[ENV_FDS] = f"{ready_w},{parent_r}"
        env[ENV_UDP_SECRET] = self.secret.hex()
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            w.proc = subprocess.Popen(
                [sys.executable, "-m", "johnlocke", *self.argv],
                env=env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                pass_fds=(ready_w, parent_r),
            )
        finally:
            os.close(ready_w)
            os.close(parent_r)
        os.set_blocking(ready_r, False)
        w.ready_r, w.parent_w = ready_r, parent_w
        w.started = time.monotonic()
        w.ready = False
        w.restart_at = None
        log.info("worker %d started (pid %d)", w.index, w.proc.pid)

    def _poll_ready(self, w: _Worker) -> None:
        if w.ready or w.ready_r is None:
            return
        try:
            data = os.read(w.ready_r, 1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            w.ready = True

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _forward(self, signum: int) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signum)

    def _reload(self) -> None:
        try:
            new = self.settings.load()
        except ConfigError as exc:
            log.error("reload: %s (every worker keeps its running configuration)", exc)
        else:
            if new.workers.count != self.config.workers.count:
                log.warning("[workers] count changes take effect only after a restart")
            self.config = new
        self._forward(signal.SIGHUP)

    def _stop_all(self) -> int:
        log.info("stopping %d workers", self.count)
        self._forward(signal.SIGTERM)
        deadline = time.monotonic() + self.config.http.shutdown_timeout + 10
        code = 0
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                rc = w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop in time: killed", w.index, w.proc.pid)
                w.proc.kill()
                rc = w.proc.wait()
            if rc not in (0, -signal.SIGTERM):  # one still starting dies of the signal: fine
                code = 1
            w.close_fds()
        return code

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        http = self.config.http
        self.port = http.port or _free_port(http.host)
        for w in self.workers:
            self._spawn(w)
        first_start = True
        while True:
            while self._signals:
                signum = self._signals.pop(0)
                if signum in (signal.SIGTERM, signal.SIGINT):
                    return self._stop_all()
                self._reload()
            now = time.monotonic()
            for w in self.workers:
                self._poll_ready(w)
                if w.proc is None:
                    if w.restart_at is not None and now >= w.restart_at:
                        self._spawn(w)
                    continue
                rc = w.proc.poll()
                if rc is None:
                    continue
                w.close_fds()
                if first_start and not w.ready:
                    log.error(
                        "worker %d exited with code %s before it listened: stopping", w.index, rc
                    )
                    self._stop_all()
                    return rc if rc and rc > 0 else 1
                how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
                lived = now - w.started
                w.delay = min(w.delay * 2, _BACKOFF_MAX) if lived < _QUICK_DEATH else _BACKOFF_FIRST
                log.error(
                    "worker %d (pid %d) %s after %.1f s; restarting it in %.1f s",
                    w.index,
                    w.proc.pid,
                    how,
                    lived,
                    w.delay,
                )
                w.proc = None
                w.restart_at = now + w.delay
            if first_start and all(w.ready for w in self.workers):
                first_start = False
                log.info("%d workers listening on port %d", self.count, self.port)
                detach.ready()
            time.sleep(_POLL)


def supervise(settings: Settings, config: Config, count: int, argv: Sequence[str], cwd: str) -> int:
    """Run ``count`` workers, each started with ``argv`` in ``cwd``, until SIGTERM/SIGINT; the
    exit code."""
    return Supervisor(settings, config, count, argv, cwd).run()


# --- per-worker figures through Redis --------------------------------------------------------


class WorkerBoard:
    """Publishes this worker's request counters to Redis and reads every worker's (a
    ``johnlocke.service`` part, and a source of figures for ``StatsService``)."""

    name = "workers"

    def __init__(self, store: Any, stats: Any, worker_id: str, interval: float = 2.0) -> None:
        self.store = store
        self.stats = stats
        self.worker_id = worker_id
        self.interval = interval
        self.key = store.prefix + b"#w"
        self.board: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def _mine(self) -> dict[str, Any]:
        st = self.stats
        return {
            "time": time.time(),
            "pid": os.getpid(),
            "announces": st.announces,
            "scrapes": st.scrapes,
            "failures": sum(st.failures.values()),
        }

    async def publish(self) -> None:
        """Write this worker's counters and read everyone's (raises StoreUnavailable)."""
        mine = json.dumps(self._mine()).encode()
        ttl = b"%d" % int(self.interval * 3 + 1)
        _, _, entries = await self.store._many(
            [
                (b"HSET", self.key, self.worker_id.encode(), mine),
                (b"EXPIRE", self.key, ttl),
                (b"HGETALL", self.key),
            ]
        )
        if not isinstance(entries, dict):  # a flat list, unless redis-py parsed it (Cluster)
            entries = dict(zip(entries[::2], entries[1::2], strict=True))
        board = {}
        now = time.time()
        stale = []
        for raw, value in entries.items():
            try:
                doc = json.loads(value)
            except ValueError:
                continue
            if now - doc.get("time", 0) > self.interval * 3:
                stale.append(raw)  # a worker that stopped publishing: gone
                continue
            board[raw.decode("utf-8", "replace")] = doc
        if stale:
            await self.store._many([(b"HDEL", self.key, *stale)])
        board[self.worker_id] = self._mine()
        self.board = dict(sorted(board.items()))

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # the store logs and counts its own errors
                await self.publish()
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None
        with contextlib.suppress(Exception):
            await self.store._many([(b"HDEL", self.key, self.worker_id.encode())])

    def reload(self, config: Config) -> None:
        pass

    def _entries(self) -> dict[str, dict[str, Any]]:
        board = dict(self.board)
        board[self.worker_id] = self._mine()  # our own figures are always current
        return board

    def metrics(self) -> Iterator[Metric]:
        board = self._entries()
        yield GaugeMetricFamily(
            "johnlocke_workers", "Tracker processes publishing to this Redis.", len(board)
        )
        for field, text in (
            ("announces", "Announce requests answered"),
            ("scrapes", "Scrape requests answered"),
            ("failures", "Requests answered with a failure reason"),
        ):
            family = CounterMetricFamily(
                f"johnlocke_worker_{field}", f"{text}, per worker.", labels=["worker"]
            )
            for name, doc in board.items():
                family.add_metric([name], doc.get(field, 0))
            yield family

    def report(self) -> dict[str, Any]:
        now = time.time()
        return {
            "workers": [
                {
                    "worker": name,
                    "pid": doc.get("pid"),
                    "announces": doc.get("announces", 0),
                    "scrapes": doc.get("scrapes", 0),
                    "failures": doc.get("failures", 0),
                    "age_seconds": round(max(0.0, now - doc.get("time", now)), 1),
                }
                for name, doc in self._entries().items()
            ]
        }
