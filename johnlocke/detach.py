"""``--daemon``, ``--pidfile`` and ``--logfile``: running in the background without systemd.

Theory of operation
-------------------
``detach()`` forks, the child calls ``setsid()`` (a new session, no controlling terminal) and
forks again, so the daemon is not a session leader and can never get a terminal back; it moves
to ``/`` so it holds no directory busy (every path it uses was made absolute before).

Start-up errors must still reach the operator who typed the command, and the start-up lines the
log file. So until the daemon is ready (it listens: ``ready()``), its stdout and stderr are a
pipe to the original process, which copies what comes to its own stderr and to ``--logfile``;
a second pipe carries one word, "ready". Once ready, the daemon points stdin at /dev/null and
stdout/stderr at the log file (or /dev/null), which closes the first pipe; the original process
then exits 0. If the pipes close without "ready", the daemon failed (its error was copied to
the terminal) and the original process exits 1.

The pid file is created exclusively; one that names a live process stops start-up, a stale one
(its process is gone) is replaced. It is removed at exit if it still names this process.
``reopen_log()`` (on SIGHUP) reopens the log file, so it can be rotated by renaming.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys

_log_path: str | None = None
_status_fd: int | None = None
_pidfile: str | None = None


class DetachError(Exception):
    """The pid file or log file cannot be used; the message is meant for the operator."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().strip() or "0") or None
    except (OSError, ValueError):
        return None


def check_pidfile(path: str) -> None:
    """DetachError if ``path`` names a running process."""
    pid = _read_pid(path)
    if pid is not None and pid != os.getpid() and _alive(pid):
        raise DetachError(f"--pidfile {path}: JohnLocke is already running as pid {pid}")


def write_pidfile(path: str) -> None:
    """Write this process's pid to ``path`` (exclusively, and absolute: the daemon is in "/");
    removed again by ``cleanup()``."""
    global _pidfile
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            check_pidfile(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # stale: its process is gone
            continue
        except OSError as exc:
            raise DetachError(f"--pidfile {path}: cannot write: {exc.strerror}") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        _pidfile = path
        return
    raise DetachError(f"--pidfile {path}: another process keeps creating it")


def cleanup() -> None:
    """Remove the pid file if it still names this process."""
    if _pidfile is not None and _read_pid(_pidfile) == os.getpid():
        with contextlib.suppress(OSError):
            os.unlink(_pidfile)


def _open_log(path: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except OSError as exc:
        raise DetachError(f"--logfile {path}: cannot open: {exc.strerror}") from None


def _point_output_at(fd: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def use_logfile(path: str) -> None:
    """In the foreground: stdout and stderr (so the log) go to ``path`` from now on."""
    global _log_path
    _log_path = os.path.abspath(path)
    fd = _open_log(_log_path)
    _point_output_at(fd)
    os.close(fd)


def reopen_log() -> None:
    """SIGHUP: reopen the log file (after logrotate renamed it); errors keep the old one."""
    if _log_path is None or _status_fd is not None:
        return
    try:
        fd = _open_log(_log_path)
    except DetachError as exc:
        print(f"johnlocke: {exc}; still writing to the previous file", file=sys.stderr)
        return
    _point_output_at(fd)
    os.close(fd)


def _relay(out_r: int, status_r: int, log_fd: int | None) -> int:
    """In the original process: copy the daemon's start-up output; its exit code."""
    while chunk := os.read(out_r, 65536):
        with contextlib.suppress(OSError):
            os.write(2, chunk)
        if log_fd is not None:
            os.write(log_fd, chunk)
    status = os.read(status_r, 64)
    return 0 if status.startswith(b"ready") else 1


def detach(logfile: str | None) -> None:
    """Become a daemon. Returns in the daemon; the original process exits in here."""
    global _log_path, _status_fd
    _log_path = os.path.abspath(logfile) if logfile else None
    log_fd = _open_log(_log_path) if _log_path else None  # a bad path fails in the foreground
    sys.stdout.flush()
    sys.stderr.flush()
    out_r, out_w = os.pipe()
    status_r, status_w = os.pipe()
    if os.fork():
        os.close(out_w)
        os.close(status_w)
        try:
            with contextlib.suppress(ChildProcessError):
                os.wait()  # the first child exits as soon as it has forked the daemon
            code = _relay(out_r, status_r, log_fd)
        except KeyboardInterrupt:
            code = 130  # Ctrl-C while waiting: the daemon goes on starting
        os._exit(code)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.close(out_r)
    os.close(status_r)
    if log_fd is not None:
        os.close(log_fd)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    _point_output_at(out_w)
    os.close(out_w)
    _status_fd = status_w


def ready() -> None:
    """The daemon listens: detach its output from the terminal and let the original exit 0."""
    global _status_fd
    if _status_fd is None:
        return
    fd = None
    if _log_path:
        try:
            fd = _open_log(_log_path)
        except DetachError as exc:
            print(f"johnlocke: {exc}; the log is discarded", file=sys.stderr)
    if fd is None:
        fd = os.open(os.devnull, os.O_WRONLY)
    _point_output_at(fd)
    os.close(fd)
    try:
        os.write(_status_fd, b"ready")
    except OSError as exc:  # the original process was killed meanwhile: nothing to tell
        if exc.errno != errno.EPIPE:
            raise
    os.close(_status_fd)
    _status_fd = None
