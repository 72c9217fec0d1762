"""``--daemon``, ``--pidfile`` and ``--logfile`` with the real process: it detaches, the pid file
names the process that serves announces, SIGHUP reopens the log, SIGTERM stops it and removes
the pid file, and start-up errors still reach the terminal."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import bencodepy

from .access_files import Torrent
from .daemon import run_daemon


def johnlocke(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "johnlocke", "--host", "127.0.0.1", "--port", "0", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def wait_for(what: str, cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.05)


def announce(port: int, info_hash: bytes) -> dict:
    query = urllib.parse.urlencode(
        {"info_hash": info_hash, "peer_id": b"-JL0001-abcdefghijkl", "port": "6881"},
        quote_via=urllib.parse.quote,
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/announce?{query}", timeout=5) as r:
        return bencodepy.decode(r.read())


def test_daemon_detaches_serves_announces_and_stops_on_sigterm(tmp_path):
    torrent = Torrent("shared")
    torrent.write(tmp_path / "torrents")
    pidfile, logfile = tmp_path / "run" / "johnlocke.pid", tmp_path / "johnlocke.log"
    pidfile.parent.mkdir()
    started = johnlocke(
        "--daemon", "--pidfile", "run/johnlocke.pid", "--logfile", "johnlocke.log",
        "--dir", "torrents", cwd=tmp_path,
    )  # fmt: skip
    # The command returns once the daemon listens: the pid file and the log are there.
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        assert not gone(pid)
        assert os.getsid(pid) != os.getsid(0)  # its own session, away from our terminal
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
        assert os.readlink(f"/proc/{pid}/fd/2") == str(logfile)
        # The start-up lines went to the terminal and to the log file.
        assert "listening on 127.0.0.1:" in started.stderr
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", logfile.read_text())[1])

        # The process the pid file names serves announces, relative paths and all.
        assert b"failure reason" not in announce(port, torrent.info_hash)
        assert announce(port, b"\x01" * 20)[b"failure reason"].startswith(b"unregistered")

        # SIGHUP reopens the log file, so it can be rotated by renaming it.
        logfile.rename(tmp_path / "johnlocke.log.1")
        os.kill(pid, signal.SIGHUP)
        wait_for("the reload in a new log file", lambda: "reloaded" in _text(logfile))

        os.kill(pid, signal.SIGTERM)
        wait_for("the daemon to exit", lambda: gone(pid))
        assert not pidfile.exists()
        assert _text(logfile).rstrip().endswith("INFO johnlocke: stopped")
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_daemon_start_up_errors_reach_the_terminal(tmp_path):
    result = johnlocke(
        "--daemon", "--pidfile", "j.pid", "--logfile", "j.log", "--dir", "nope", cwd=tmp_path
    )
    assert result.returncode == 1
    message = (
        f"johnlocke: --dir nope: [access] torrents_dir: {tmp_path / 'nope'}: no such directory"
    )
    assert result.stderr.strip().splitlines()[-1] == message
    assert message in (tmp_path / "j.log").read_text()
    assert not (tmp_path / "j.pid").exists()


def test_a_pidfile_naming_a_running_process_stops_start_up(tmp_path):
    pidfile = tmp_path / "j.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # this test is alive
    for args in (["--daemon"], []):
        result = johnlocke(*args, "--pidfile", str(pidfile), cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"johnlocke: --pidfile {pidfile}: JohnLocke is already running as pid {os.getpid()}"
        )
        assert pidfile.read_text() == f"{os.getpid()}\n"


def test_a_stale_pidfile_is_replaced_and_removed_at_exit(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = tmp_path / "j.pid"
    pidfile.write_text(f"{dead.pid}\n")
    with run_daemon("", workdir=tmp_path, args=["--pidfile", str(pidfile)]) as d:
        assert pidfile.read_text() == f"{d.proc.pid}\n"
        assert d.stop() == 0
    assert not pidfile.exists()


def test_logfile_in_the_foreground(tmp_path):
    logfile = tmp_path / "j.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "johnlocke", "--port", "0", "--host", "127.0.0.1"]
        + ["--logfile", str(logfile)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for("the listening line", lambda: "listening on" in _text(logfile))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert (out, err) == (b"", b"")  # everything went to the file
        assert _text(logfile).rstrip().endswith("stopped")
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
