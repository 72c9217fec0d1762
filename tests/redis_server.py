"""Real ``redis-server`` processes for the tests and benchmarks, on free loopback ports.

    with RedisServer() as server:          # one server in a temporary directory
        server.url                         # "redis://127.0.0.1:PORT/0"
        server.stop(); server.start()      # a real outage and a restart on the same port
        server.cli("CONFIG", "SET", "maxmemory", "1mb")

    with RedisCluster(masters=3) as cluster:  # redis-server --cluster-enabled yes, x3
        cluster.url                        # any node; the client discovers the others

Nothing global is assumed: no service, no fixed port, no config file outside the temporary
directory. ``redis_available()`` says whether the binaries are installed (the tests that need
them are skipped otherwise; ``.ci/run`` installs Debian's ``redis-server``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


def redis_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def free_port() -> int:
    """A TCP port nobody listens on now (and its +10000 cluster bus port is free too)."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port + 10000))
            except OSError:
                continue
        return port


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, no persistence, in its own temporary directory."""

    def __init__(
        self,
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="johnlocke-redis-")
            workdir = self._tmp.name
        self.dir = Path(workdir)
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", str(self.dir / f"redis-{self.port}.log"),
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not for us
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_tail()}")
            try:
                if self.cli("PING").strip() == "PONG":
                    return self
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}: {self.log_tail()}")

    def cli(self, *args: str, timeout: float = 10.0) -> str:
        out = subprocess.run(
            ["redis-cli", "-h", HOST, "-p", str(self.port), *args],
            capture_output=True,
            timeout=timeout,
            check=True,
        )
        return out.stdout.decode("utf-8", "replace")

    def info(self, section: str = "memory") -> dict[str, str]:
        fields = {}
        for line in self.cli("INFO", section).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key] = value.strip()
        return fields

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server for real (SIGKILL: no shutdown save, like a crash)."""
        proc = self.proc
        self.proc = None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout)

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing (a hung Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.dir / f"redis-{self.port}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot die otherwise
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisCluster:
    """``masters`` ``redis-server --cluster-enabled yes`` nodes joined by ``redis-cli --cluster
    create`` (no replicas), each in its own directory under one temporary directory."""

    def __init__(self, masters: int = 3) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="johnlocke-cluster-")
        self.nodes: list[RedisServer] = []
        ports: set[int] = set()
        while len(ports) < masters:
            ports.add(free_port())
        for port in sorted(ports):
            d = Path(self._tmp.name) / str(port)
            d.mkdir()
            self.nodes.append(
                RedisServer(
                    port,
                    d,
                    (
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(d / "nodes.conf"),
                        "--cluster-node-timeout",
                        "5000",
                    ),
                )  # fmt: skip
            )

    @property
    def url(self) -> str:
        return self.nodes[0].url.rsplit("/", 1)[0]  # a cluster has only database 0

    def start(self, timeout: float = 30.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *[f"{HOST}:{n.port}" for n in self.nodes],
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            capture_output=True,
            timeout=timeout,
            check=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [n.info("cluster").get("cluster_enabled") for n in self.nodes]
            ok = all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in self.nodes)
            if ok and all(s == "1" for s in states):
                return self
            time.sleep(0.1)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        self._tmp.cleanup()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
