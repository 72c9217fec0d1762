"""Run the real ``johnlocke`` daemon as a subprocess, exactly as a user would.

    from tests.daemon import run_daemon

    with run_daemon('''
    [announce]
    interval = 2
    min_interval = 1
    ''') as d:
        urllib.request.urlopen(d.url + "/scrape?info_hash=...")
        d.log_lines()          # everything the daemon wrote to stderr so far

The config is written to ``<workdir>/tracker.toml`` and the daemon is started with
``sys.executable -m johnlocke --config PATH`` in ``workdir``. ``[http] host`` and ``port`` are
filled in (127.0.0.1, port 0 by default) unless the config sets them; the port the daemon really
bound is read from its ``listening on 127.0.0.1:PORT`` log line. ``[udp] port`` is filled in too
(0 by default, so a restart on ``port=d.port`` never needs that number free for UDP as well);
the UDP ports bound are read from the ``udp://HOST:PORT`` parts of the same line
(``d.udp_ports``, ``d.udp_port`` for 127.0.0.1). A thread keeps draining stderr so the pipe never
fills, and keeps every line. ``toml_text=None`` runs it with no configuration file at all
(``--host 127.0.0.1 --port N`` are passed as flags instead, unless ``args`` has them; UDP then
follows the HTTP port); ``scheme="https"`` makes ``d.url`` an HTTPS one (the config must set
``[http] tls_cert``).

Leaving the ``with`` block sends SIGTERM and asserts the daemon exits 0 within ``stop_timeout``
seconds, unless the block already called ``d.stop()`` or ``d.kill()`` (and so saw the exit code).
If the block raised, the daemon log is printed (pytest shows it with the failure) and the daemon
is stopped without masking the original error. For restart tests, pass the same ``workdir`` and
``port=d.port`` to a second ``run_daemon``, or call ``d.stop()`` / ``d.kill()`` inside the block.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"
_LISTENING = re.compile(r"listening on .*?\b127\.0\.0\.1:(\d+)")
_UDP = re.compile(r"udp://(?:\[([0-9a-fA-F:]+)\]|([\d.]+)):(\d+)")


class DaemonError(AssertionError):
    """The daemon did not start, or did not stop as expected; the message includes its log."""


class Daemon:
    """A running ``johnlocke`` process. Build it with ``run_daemon``."""

    def __init__(
        self, proc: subprocess.Popen[bytes], config_path: Path, workdir: Path, scheme: str = "http"
    ) -> None:
        self.proc = proc
        self.config_path = config_path
        self.workdir = workdir
        self.scheme = scheme
        self.port: int = 0
        self.udp_ports: dict[str, int] = {}  # UDP address -> port, from the start-up line
        self.stopped = False  # set by stop()/kill(): the caller has seen the exit code
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._drain, name="johnlocke-stderr", daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (or ``https://``; no trailing slash)."""
        return f"{self.scheme}://{HOST}:{self.port}"

    @property
    def announce_url(self) -> str:
        return f"{self.url}/announce"

    @property
    def udp_port(self) -> int:
        """The UDP port on 127.0.0.1."""
        return self.udp_ports[HOST]

    @property
    def udp_url(self) -> str:
        return f"udp://{HOST}:{self.udp_port}/announce"

    @property
    def scrape_url(self) -> str:
        return f"{self.url}/scrape"

    # --- the log ---------------------------------------------------------------------------

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def log_lines(self) -> list[str]:
        """A copy of every stderr line the daemon has written so far."""
        with self._cond:
            return list(self._lines)

    def log_text(self) -> str:
        return "\n".join(self.log_lines())

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 5.0) -> re.Match[str]:
        """Wait until a log line matches ``pattern`` (searched, not anchored); return the match.

        Lines already logged count. Raises ``DaemonError`` on timeout or if the daemon's stderr
        closes (it exited) first.
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self._lines)
                if self._eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        why = "exited" if self._eof else f"still running after {timeout}s"
        raise DaemonError(
            f"johnlocke never logged /{rx.pattern}/ ({why}, returncode={self.proc.poll()});"
            f" its log:\n{self.log_text()}"
        )

    # --- stopping --------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (if still running) and wait up to ``timeout`` s; return the exit code.

        If it does not exit in time it is killed and ``DaemonError`` is raised.
        """
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(2)
            raise DaemonError(
                f"johnlocke did not exit within {timeout}s of signal {sig}; its log:\n"
                f"{self.log_text()}"
            ) from None
        self._reader.join(2)
        return code

    def kill(self) -> int:
        """SIGKILL (a crash, for restart tests); return the exit code (negative signal)."""
        return self.stop(timeout=5.0, sig=signal.SIGKILL)


def _with_listen_address(toml_text: str, port: int, udp_port: int | None = 0) -> str:
    """The config with ``[http] host``/``port`` defaulted to 127.0.0.1 and ``port``, and
    ``[udp] port`` to ``udp_port`` (None: left to follow ``[http] port``, as it does by default)."""
    text = _with_keys(toml_text, "http", {"host": f'"{HOST}"', "port": str(port)})
    if udp_port is None:
        return text
    return _with_keys(text, "udp", {"port": str(udp_port)})


def _with_keys(toml_text: str, table: str, defaults: dict[str, str]) -> str:
    """``toml_text`` with ``defaults`` (key -> TOML value) added to ``[table]`` where unset."""
    data = tomllib.loads(toml_text)  # a syntax error surfaces here, in the test, not the daemon
    section = data.get(table, {})
    add = [f"{key} = {value}" for key, value in defaults.items() if key not in section]
    if not add:
        return toml_text
    if table not in data:
        # Before any other table, so the keys cannot land in another section.
        return f"[{table}]\n" + "\n".join(add) + "\n\n" + toml_text
    header = re.compile(rf"^[ \t]*\[[ \t]*{table}[ \t]*\][ \t]*(#.*)?$", re.MULTILINE)
    m = header.search(toml_text)
    if m is None:  # given as a dotted key or inline table: too clever to edit
        raise ValueError(f"give [{table}] {', '.join(defaults)} explicitly in this config")
    return toml_text[: m.end()] + "\n" + "\n".join(add) + toml_text[m.end() :]


@contextmanager
def run_daemon(
    toml_text: str | None = "",
    *,
    port: int = 0,
    udp_port: int | None = 0,
    workdir: str | os.PathLike[str] | None = None,
    args: Sequence[str] = (),
    start_timeout: float = 10.0,
    stop_timeout: float = 5.0,
    env: dict[str, str] | None = None,
    scheme: str = "http",
) -> Iterator[Daemon]:
    """Start ``python -m johnlocke --config <workdir>/tracker.toml`` and yield a ``Daemon``.

    ``toml_text``: the configuration (``[http] host``/``port`` are added unless present), or None
    for no file at all.
    ``port``: the port to add (0 = any free one; pass an earlier ``d.port`` to restart in place).
    ``udp_port``: the ``[udp] port`` to add (0 = any free one; None: none, so UDP takes the
    number of ``[http] port``).
    ``workdir``: where the config is written and the daemon runs (default: a fresh temp dir,
    removed afterwards); keep one across ``run_daemon`` calls to test restarts.
    ``args``: extra command-line arguments (e.g. ``["-v"]``).
    On leaving the block the daemon gets SIGTERM and must exit 0 within ``stop_timeout``.
    """
    with tempfile.TemporaryDirectory(prefix="johnlocke-") as tmp:
        wd = Path(workdir) if workdir is not None else Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        config_path = wd / "tracker.toml"
        if toml_text is None:
            where = [] if "--host" in args else ["--host", HOST]
            where += [] if "--port" in args else ["--port", str(port)]
        else:
            config_path.write_text(
                _with_listen_address(toml_text, port, udp_port), encoding="utf-8"
            )
            where = ["--config", str(config_path)]
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "johnlocke", *where, *args],
            cwd=wd,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        d = Daemon(proc, config_path, wd, scheme)
        try:
            m = d.wait_for_log(_LISTENING, start_timeout)
            d.port = int(m.group(1))
            line = m.string
            udp = _UDP.findall(line[: line.find(" (strategy")])
            d.udp_ports = {v6 or v4: int(p) for v6, v4, p in udp}
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise
        try:
            yield d
        except BaseException:
            print(f"--- johnlocke log ({config_path}) ---\n{d.log_text()}\n---", file=sys.stderr)
            try:
                d.stop(stop_timeout)
            except DaemonError as exc:
                print(exc, file=sys.stderr)
            raise
        if d.stopped:  # the block stopped or killed it and checked the code itself
            return
        code = d.stop(stop_timeout)
        if code != 0:
            raise DaemonError(f"johnlocke exited with {code}, not 0; its log:\n{d.log_text()}")
